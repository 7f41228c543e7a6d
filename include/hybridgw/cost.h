/*
 * cost.h - what a request cost, in USD, and what it would have cost on the
 * reference frontier model: one record for vendor and self-hosted tokens.
 *
 * Vendor models are priced per million tokens by kind (input, output,
 * cache read, cache write): from the backend's `price.per_mtok`, else from
 * a built-in table of common Claude and GPT models (list prices as of
 * 2025-10, see cost.c; override them in config).
 *
 * Self-hosted models cost GPU time whether or not it is used. With
 * `price: { gpu_hourly_usd: H, replicas: R }` each URL of the backend
 * accrues H*R/nurls per hour, and that cost is shared among the tokens the
 * URL served in the trailing hour, output tokens weighted `output_weight`
 * times input tokens (decode costs more than prefill): a request's cost is
 * its weighted tokens * hourly cost / max(weighted tokens in the last hour,
 * min_tokens_per_hour). Idle GPUs make tokens dear: that is the honest
 * answer. A fixed `per_mtok` price works for self-hosted backends too.
 */
#ifndef HYBRIDGW_COST_H
#define HYBRIDGW_COST_H

#include "hybridgw/config.h"

struct gw_usage;
struct gw_target;

struct gw_price {
    double input, output, cache_read, cache_write;  /* USD per million tokens */
    const char *source;   /* "config", "builtin:<model>", or NULL (unknown) */
};

/* The per-token price of backend b: config, the built-in table by model
 * name, or false when there is none (self-hosted by GPU hour, or unknown). */
bool gw_cost_price(const struct gw_backend_conf *b, struct gw_price *out);
/* USD for usage at price p. Input tokens not read from or written to the
 * cache are prompt_tokens - cached_tokens - cache_write_tokens. */
double gw_cost_of(const struct gw_price *p, const struct gw_usage *u);

/* Self-hosted: record the request's tokens on target t and return its
 * share of the GPU hour (0 when the backend has no gpu_hourly_usd). */
double gw_cost_gpu_share(const struct gw_backend_conf *b, struct gw_target *t,
                         const struct gw_usage *u, uint64_t now_ns);

struct gw_cost_record {
    double usd;               /* what it cost */
    double counterfactual_usd;/* on the reference frontier model */
    bool known;               /* a price applied */
    bool estimated_usage;     /* the upstream reported no usage: tokens estimated */
};

/* The whole record for a finished request. */
void gw_cost_compute(const struct gw_config *cfg, const struct gw_backend_conf *b,
                     struct gw_target *t, const struct gw_usage *u, bool estimated,
                     struct gw_cost_record *out);

#endif
