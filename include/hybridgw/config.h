/*
 * config.h - the gateway's configuration: loaded from YAML (with ${ENV}
 * interpolation), validated, and frozen into an immutable, refcounted
 * snapshot. Requests take a reference on the snapshot they started with, so
 * SIGHUP can swap in a new one while old requests finish on the old one.
 *
 * Errors name the file, the line and the field:
 *   config/hybridgw.yaml:12: backends.qwen.urls[0]: not an http(s) URL
 */
#ifndef HYBRIDGW_CONFIG_H
#define HYBRIDGW_CONFIG_H

#include <stdatomic.h>
#include "hybridgw/core.h"

enum gw_tier {
    GW_TIER_LOCAL = 0,
    GW_TIER_FRONTIER = 1,
    GW_TIER_COUNT
};
const char *gw_tier_str(enum gw_tier t);
int gw_tier_parse(const char *s); /* -1 if unknown */

struct gw_provider;  /* provider/provider.h */
struct gw_classifier; /* router/classifier.h */
struct gw_target;    /* gateway/backend.h: runtime state of one URL */

struct gw_backend_conf {
    char *name;                      /* key under backends: */
    enum gw_tier tier;
    char *provider_name;             /* "vllm", "openai", ... */
    const struct gw_provider *provider; /* resolved by name at load */
    char **urls;                     /* base URLs without trailing slash */
    size_t nurls;
    struct gw_target **targets;      /* one per URL; set by gw_backends_attach() */
    char *model;                     /* model name sent upstream */
    char *api_key;                   /* NULL when none; never logged */
    uint64_t context_window;         /* tokens; 0 = unknown */
    uint64_t connect_timeout_ms;     /* default 2 s */
    uint64_t first_byte_timeout_ms;  /* default 60 s: until response headers */
    uint64_t stream_idle_timeout_ms; /* default 30 s: max gap between chunks */
    uint64_t request_timeout_ms;     /* default 600 s: whole request */
    uint64_t max_response_bytes;     /* non-streaming body cap, default 32 MiB */
    char *health_path;               /* default "/health" */
    uint64_t health_interval_ms;     /* active checks; default 5 s; 0 = off */
    unsigned fail_threshold;         /* eject after N consecutive failures; default 3 */
    uint64_t default_max_tokens;     /* when a request to an Anthropic upstream has none; 4096 */
    unsigned retry_attempts;         /* retries on this backend after the first try; default 1 */
    uint64_t retry_backoff_ms;       /* first backoff, doubled per retry, with jitter; 100 ms */
    uint64_t retry_max_backoff_ms;   /* cap on one backoff (and on honoured retry-after); 2 s */
    unsigned circuit_failures;       /* open the circuit after N failures in the window; 5 */
    uint64_t circuit_window_ms;      /* default 10 s */
    uint64_t circuit_cooldown_ms;    /* open -> half-open after this; default 15 s */
    bool images;                     /* features: the model takes image input */
    bool tools;                      /* features: the server parses tool calls */
    double chars_per_token;          /* prompt size estimate; default 3.0 (conservative) */
    /* price: per_mtok (USD per million tokens, < 0 when not given) or the
     * GPU-hour model for self-hosted backends (see cost.h) */
    double price_input, price_output, price_cache_read, price_cache_write;
    double gpu_hourly_usd;           /* 0: none */
    unsigned replicas;               /* GPUs (pods) behind the backend; default: nurls */
    double output_weight;            /* an output token = N input tokens of GPU time; 4 */
    uint64_t min_tokens_per_hour;    /* floor of the hourly share; 1,000,000 */
    unsigned line;                   /* where it was defined */
};

struct gw_model_conf {
    char *name;                      /* what clients put in "model" */
    char *backend_name;
    struct gw_backend_conf *backend; /* resolved at load */
};

struct gw_key_conf {
    char *name;                      /* shown in logs instead of the key */
    unsigned char sha256[32];        /* of the key; plain keys are hashed at load */
    bool may_force_tier;             /* may send x-hybridgw-tier; default false */
};

/* router.rules: the first matching rule decides the tier (or backend). */
enum gw_rule_kind {
    GW_RULE_HEADER = 0,   /* request header `header` equals `equals` */
    GW_RULE_METADATA = 1, /* the request's metadata[`metadata`] equals `equals` */
    GW_RULE_REGEX = 2,    /* PCRE2 `regex` matches the last user message */
    GW_RULE_MIN_CHARS = 3,/* the conversation has at least `min_chars` characters */
    GW_RULE_IMAGES = 4,   /* the request carries images (`has_images: true`) */
    GW_RULE_KIND_COUNT
};

struct gw_rule {
    char *name;
    enum gw_rule_kind kind;
    char *key;                       /* header name or metadata key */
    char *equals;                    /* value to compare (header, metadata) */
    char *regex;                     /* pattern source */
    void *code;                      /* compiled pcre2_code (JIT when available) */
    uint64_t min_chars;
    enum gw_tier tier;               /* where matching requests go */
    char *backend;                   /* or a backend by name (NULL: the tier's) */
    unsigned line;
};

struct gw_config {
    atomic_int refs;
    char *path;                      /* file it was loaded from */
    uint64_t generation;             /* increases with every successful load */

    char *listen;                    /* "0.0.0.0:8080" */
    char *admin_listen;              /* NULL: admin endpoints on listen */
    unsigned workers;                /* resolved: "auto" = number of cores */

    /* limits */
    uint64_t max_body_bytes;         /* default 8 MiB */
    uint64_t max_header_bytes;       /* default 32 KiB */
    unsigned max_headers;            /* default 100 */
    uint64_t header_timeout_ms;      /* default 10 s */
    uint64_t body_timeout_ms;        /* default 30 s */
    uint64_t idle_timeout_ms;        /* default 75 s */
    uint64_t shutdown_timeout_ms;    /* default 30 s: SIGTERM drain deadline */
    uint64_t write_high_water;       /* client backpressure mark, default 64 KiB */

    /* auth */
    struct gw_key_conf *keys;
    size_t nkeys;                    /* 0: no auth (a warning is logged) */
    /* auth.admin_key / admin_sha256: the admin HTTP API's key (keys,
     * spend) on admin_listen; without it the admin API is off */
    unsigned char admin_sha256[32];
    bool has_admin_key;

    struct gw_backend_conf *backends;
    size_t nbackends;
    struct gw_model_conf *models;
    size_t nmodels;

    /* router */
    enum gw_tier default_tier;       /* router.default_tier for "auto" */
    /* router.fallback: per tier, what to try when that tier's backend fails
     * before the response started; each entry a tier name or backend name.
     * Default: local -> [frontier], frontier -> [local]. */
    char **fallback[GW_TIER_COUNT];
    size_t nfallback[GW_TIER_COUNT];
    uint64_t retry_deadline_ms;      /* router.deadline: retries + fallback budget; 30 s */
    struct gw_rule *rules;
    size_t nrules;
    char *classifier;                /* "builtin" (default), "off", or a model file */
    struct gw_classifier *classifier_model; /* loaded file; NULL for builtin/off */
    double min_confidence;           /* below: ambiguous -> frontier; default 0.55 */
    double frontier_threshold;       /* frontier when the frontier labels' probabilities
                                      * add up to this, even if the top label is local;
                                      * default 0.3 (0 = off) */
    char **route_labels;             /* router.routes: label -> tier */
    enum gw_tier *route_tiers;
    size_t nroutes;
    bool spill;                      /* router.spill present */
    uint64_t spill_waiting_above;    /* vllm:num_requests_waiting above this: spill; 8 */
    double spill_kv_above;           /* vllm:kv_cache_usage_perc above this: spill; 0.9 */
    uint64_t spill_back_below;       /* waiting at or below this (and kv below) to come back; 4 */
    uint64_t scrape_interval_ms;     /* how often /metrics is read; 1 s */

    /* telemetry.otlp: traces to an OTLP/HTTP JSON endpoint (NULL: off) */
    char *otlp_endpoint;             /* full URL, e.g. http://collector:4318/v1/traces */
    char **otlp_header_names;        /* extra headers (e.g. Langfuse's Basic auth); */
    char **otlp_header_values;       /* values may be secrets: never logged */
    size_t notlp_headers;
    double otlp_sample;              /* fraction of requests traced; default 1.0 */
    uint64_t otlp_queue;             /* spans held for export at most; 4096 */
    uint64_t otlp_batch;             /* spans per POST at most; 256 */
    uint64_t otlp_interval_ms;       /* export at least this often; 1 s */
    uint64_t otlp_timeout_ms;        /* one POST; 5 s */
    char *service_name;              /* resource service.name; "hybridgw" */
    char *environment;               /* deployment.environment.name; NULL none */

    /* logging */
    char *access_log;                /* "stdout", "stderr", "off" or a path */
    char *log_level;                 /* "info" default */

    /* ledger: the spend ledger (and, later, keys and budgets) */
    char *ledger_url;                /* "sqlite://..." or "postgres://..."; NULL: off */
    uint64_t ledger_queue;           /* records held in memory at most; 10000 */
    bool ledger_fail_open;           /* database down: serve without budget checks
                                      * (logged, counted) instead of 503; default false */
    uint64_t limits_sync_ms;         /* replicas swap rate-limit counts this often
                                      * through the database; 0: each on its own; 500 */

    /* cost.reference: the backend whose prices give the counterfactual
     * ("had it gone to the frontier"); default the first frontier backend
     * with a per-token price */
    char *cost_reference;

    /* Set by the gateway after load; gw_config_unref calls it (when not
     * NULL) before freeing, to drop the runtime state attached to backends
     * (their targets). The config module never touches targets itself. */
    void (*release_runtime)(struct gw_config *c);
};

/* Load and validate path. On failure returns NULL and writes a message
 * (file:line: field: problem) into err. The result has refs == 1. */
struct gw_config *gw_config_load(const char *path, char *err, size_t errlen);
/* Same from a string (name is used in messages); for tests and fuzzing. */
struct gw_config *gw_config_load_string(const char *yaml, size_t len, const char *name,
                                        char *err, size_t errlen);
struct gw_config *gw_config_ref(struct gw_config *c);
void gw_config_unref(struct gw_config *c);

const struct gw_backend_conf *gw_config_backend(const struct gw_config *c, const char *name);
/* Look up a client-visible model name: models: entries first, then backend
 * names. NULL when unknown. */
const struct gw_backend_conf *gw_config_resolve_model(const struct gw_config *c,
                                                      const char *name, size_t len);

/* Interpolate ${VAR} and ${VAR:-default} in s. Returns a malloc'd string, or
 * NULL with a message in err when a required variable is unset or the
 * syntax is broken. "$$" is a literal "$". */
char *gw_config_interpolate(const char *s, char *err, size_t errlen);

#endif
