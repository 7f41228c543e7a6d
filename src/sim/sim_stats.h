/*
 * sim_stats.h - the simulator's counters, shared by every worker thread
 * (C11 atomics, no locks), and their two renderings: vLLM-style Prometheus
 * text for GET /metrics and JSON for GET /sim/stats.
 *
 * Two sets are kept. The Prometheus metrics (per served model) only grow,
 * like a real vLLM's. The test counters (/sim/stats) can be zeroed with
 * POST /sim/reset; the gauges (running, waiting) are live state and are
 * never reset.
 */
#ifndef HYBRIDGW_SIM_STATS_H
#define HYBRIDGW_SIM_STATS_H

#include <stdatomic.h>

#include "sim.h"
#include "sim_out.h"

enum sim_endpoint {
    SIM_EP_CHAT = 0,        /* POST /v1/chat/completions */
    SIM_EP_MESSAGES,        /* POST /v1/messages */
    SIM_EP_COUNT_TOKENS,    /* POST /v1/messages/count_tokens */
    SIM_EP_MODELS,          /* GET /v1/models[/id] */
    SIM_EP_HEALTH,          /* GET /health */
    SIM_EP_METRICS,         /* GET /metrics */
    SIM_EP_SIM,             /* /sim/... (not in requests_total) */
    SIM_EP_OTHER,           /* anything else (404/405) */
    SIM_EP_COUNT
};
const char *sim_endpoint_str(enum sim_endpoint e);

/* vLLM finished_reason label values. */
enum sim_finish {
    SIM_FIN_STOP = 0,
    SIM_FIN_LENGTH,
    SIM_FIN_ABORT,
    SIM_FIN_COUNT
};
const char *sim_finish_str(enum sim_finish f);

#define SIM_TTFT_BUCKETS 22   /* vLLM's time_to_first_token buckets */

struct sim_model_metrics {
    atomic_llong running;                 /* admitted, not finished */
    atomic_llong waiting;                 /* queued for a slot */
    atomic_ullong prompt_tokens;
    atomic_ullong generation_tokens;
    atomic_ullong success[SIM_FIN_COUNT];
    atomic_ullong ttft_bucket[SIM_TTFT_BUCKETS]; /* not cumulative */
    atomic_ullong ttft_count;
    atomic_ullong ttft_sum_us;            /* microseconds */
};

/* Test-facing counters (reset by POST /sim/reset). */
struct sim_counters {
    atomic_ullong requests[SIM_EP_COUNT];
    atomic_ullong streams;       /* streaming generation requests */
    atomic_ullong completed;     /* generation responses fully sent */
    atomic_ullong cancelled;     /* client gone before the response ended */
    atomic_ullong faults;        /* faults injected */
    atomic_ullong rejected;      /* 4xx answers to generation requests */
};

struct sim_stats {
    const char *const *models;   /* served names, borrowed */
    unsigned n_models;
    struct sim_model_metrics m[SIM_MAX_MODELS];
    struct sim_counters c;
};

void sim_stats_init(struct sim_stats *s, const char *const *models, unsigned n_models);
/* Zero the test counters (not the Prometheus metrics, not the gauges). */
void sim_stats_reset(struct sim_stats *s);
/* Index of model in the served list, or 0 (the first) for an unknown name,
 * so that labels stay bounded. */
unsigned sim_stats_model_index(const struct sim_stats *s, const char *model);
void sim_stats_observe_ttft(struct sim_stats *s, unsigned model, double seconds);
/* Upper bound (le) of bucket i. */
double sim_stats_ttft_le(unsigned i);

/* Render GET /metrics. max_concurrency (0 = unlimited) scales
 * vllm:kv_cache_usage_perc = running / max_concurrency (unlimited counts
 * as 256 slots), clamped to 1. */
void sim_stats_render_prom(struct sim_stats *s, uint32_t max_concurrency, struct sim_out *o);
/* Render GET /sim/stats. */
void sim_stats_render_json(struct sim_stats *s, struct sim_out *o);

#endif
