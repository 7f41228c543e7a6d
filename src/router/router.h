/*
 * router.h - per request: which tier, which backend, and why.
 *
 * Stages, first decisive one wins, each leaving its verdict in the trace:
 *   explicit    a pinned model, a tier alias (local/frontier), or the
 *               x-hybridgw-tier header when the key may force a tier
 *   rules       router.rules: header, metadata, regex, size, images
 *   classifier  the task label and its probability; below min_confidence
 *               the request is ambiguous and goes frontier; else the
 *               router.routes table maps the label to a tier
 *   default     router.default_tier (when the classifier is off)
 * then constraints that may move the decision (not for explicit or rules,
 * which are hard): the prompt does not fit the local context window, a
 * feature the local model lacks (images, tools), the local tier down or
 * saturated (vLLM queue or KV cache over the spill thresholds, with
 * hysteresis), the frontier down.
 *
 * The reason string (x-hybridgw-reason) names the deciding stage and what
 * moved it, e.g. "classifier:code p=0.91" or
 * "classifier:code p=0.91; spill:local-queue 14>8".
 */
#ifndef HYBRIDGW_ROUTER_H
#define HYBRIDGW_ROUTER_H

#include <jansson.h>
#include "hybridgw/buf.h"
#include "hybridgw/config.h"
#include "router/classifier.h"

struct gw_route {
    enum gw_tier tier;
    const struct gw_backend_conf *backend;
    const char *stage;          /* the stage that decided (last to move it) */
    const char *first_stage;    /* the stage that decided before constraints */
    const char *label;          /* task label when the classifier ran, else NULL */
    double confidence;          /* of the label, 0 when none */
    float probs[GW_CLS_MAX_LABELS];
    size_t nprobs;
    char reason[192];           /* e.g. "classifier:code p=0.91" */
    int err_status;             /* 0, or 404 (unknown model) / 503 (nothing healthy) */
    const char *err_code;       /* OpenAI error code for the client */
    char err[256];
    uint64_t classify_ns;       /* time spent in the classifier */
};

struct gw_route_input {
    const struct gw_config *cfg;
    gw_str model;               /* the request's "model" */
    json_t *body;               /* the parsed request, or NULL (plain text below) */
    bool anthropic;             /* body is in the Anthropic dialect */
    gw_str text;                /* plain text when there is no body (route CLI) */
    gw_str tier_header;         /* x-hybridgw-tier, {NULL,0} when absent */
    bool may_force_tier;        /* the key may use it */
    /* header lookup for rules; NULL when there are no headers */
    gw_str (*header)(void *ud, const char *name);
    void *header_ud;
    bool offline;               /* route CLI: ignore health and load */
    struct gw_buf *trace;       /* when not NULL, one line per stage */
};

/* Decide. Returns 0, or -1 with out->err_status/err set. */
int gw_route_decide(const struct gw_route_input *in, struct gw_route *out);

/* The healthy backend of a tier to use (config order is priority); NULL
 * when the tier has none healthy. */
const struct gw_backend_conf *gw_route_tier_backend(const struct gw_config *cfg, enum gw_tier t);

/* The classifier the config asks for: its model file, the builtin, or
 * NULL when router.classifier is off. */
const struct gw_classifier *gw_route_classifier(const struct gw_config *cfg);

/* ---- vLLM load (router/load.c) ---- */

/* What a vLLM /metrics page says about one served model. */
struct gw_vllm_load {
    double waiting;             /* vllm:num_requests_waiting (summed over engines) */
    double running;             /* vllm:num_requests_running */
    double kv_cache;            /* vllm:kv_cache_usage_perc (max over engines), 0..1 */
    bool have_waiting, have_running, have_kv;
};

/* Parse Prometheus text for model (label model_name; a series without the
 * label counts for any model). Returns 0, or GW_EPARSE when the page has
 * none of the three metrics. Never reads past len. */
int gw_vllm_load_parse(const char *text, size_t len, const char *model, struct gw_vllm_load *out);

#endif
