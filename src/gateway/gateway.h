/*
 * gateway.h - the gateway process: worker threads, the main thread's
 * control loop, backend targets and their health, and what every request
 * handler shares (auth, access log, metrics families, request finalization).
 *
 * Threads: N workers, each with its own libuv loop, HTTP server (the same
 * port through SO_REUSEPORT), upstream client (curl multi), metrics registry
 * and access-log buffer; and the main thread, whose loop handles signals,
 * config reload, active health checks and the admin listener. Workers share
 * only the config snapshot (refcounted, immutable) and the targets' health
 * flags (atomics written on failure and by the health checker).
 */
#ifndef HYBRIDGW_GATEWAY_H
#define HYBRIDGW_GATEWAY_H

#include <stdatomic.h>
#include <uv.h>
#include "hybridgw/buf.h"
#include "hybridgw/config.h"
#include "hybridgw/http.h"
#include "hybridgw/metrics.h"
#include "hybridgw/upstream.h"
#include "gateway/limits.h"

#define GW_MAX_WORKERS 64

/* Runtime state of one upstream URL of one backend. Lives across config
 * reloads (matched by backend name and URL) so health is not forgotten. */
struct gw_target {
    atomic_int refs;
    char *backend;                  /* backend name */
    char *url;                      /* base URL */
    atomic_bool healthy;
    atomic_uint consecutive_failures;
    atomic_uint probe_failures;     /* active checks failed in a row */
    atomic_bool probing;            /* an active check is in flight */
    uint64_t last_probe_ns;         /* main thread only */
    _Atomic uint64_t ejected_ns;    /* when passive health last ejected it */
    /* circuit breaker (passive, windowed): closed -> open after
     * circuit_failures failures within circuit_window; open -> half-open
     * after circuit_cooldown, when one probe request may pass; its success
     * closes the circuit, its failure opens it again */
    atomic_int circuit;             /* enum gw_circuit */
    atomic_uint window_failures;
    _Atomic uint64_t window_start_ns;
    _Atomic uint64_t opened_ns;
    /* load read from the target's vLLM /metrics by the main thread */
    _Atomic double load_waiting;
    _Atomic double load_running;
    _Atomic double load_kv;
    _Atomic uint64_t load_ns;       /* when last read; 0 never */
    atomic_bool spilling;           /* over the spill thresholds (with hysteresis) */
    atomic_int spill_cause;         /* 1 queue, 2 KV cache */
    atomic_bool scraping;           /* a /metrics read is in flight */
    /* weighted tokens served per minute over the last hour (cost.c) */
    struct {
        _Atomic uint64_t minute;    /* unix minute the bucket holds */
        _Atomic double tokens;
    } served[60];
    uint64_t last_scrape_ns;        /* main thread only */
    struct {
        int64_t inflight;           /* written only by worker i */
        char pad[56];
    } wk[GW_MAX_WORKERS];
    struct gw_target *next;         /* registry list */
};

enum gw_circuit {
    GW_CIRCUIT_CLOSED = 0,
    GW_CIRCUIT_OPEN = 1,
    GW_CIRCUIT_HALF_OPEN = 2,
    GW_CIRCUIT_COUNT
};
const char *gw_circuit_str(int state);

/* Attach targets to every backend of cfg, reusing those of old (may be NULL). */
void gw_backends_attach(struct gw_config *cfg, const struct gw_config *old);
void gw_target_unref(struct gw_target *t);
/* Pick the target of b with the fewest requests in flight on this worker
 * among healthy ones whose circuit lets a request through (taking the
 * half-open probe slot if it gets one); NULL when there is none. */
struct gw_target *gw_backend_pick(const struct gw_backend_conf *b, unsigned worker);
bool gw_backend_healthy(const struct gw_backend_conf *b);
/* Passive health: a request's outcome. Ejects after fail_threshold
 * consecutive failures (an active check brings it back) and drives the
 * circuit breaker; returns true when this call ejected it. */
bool gw_target_report(struct gw_target *t, const struct gw_backend_conf *b, bool ok);

/* Control commands from the main thread to a worker. */
enum {
    GW_CMD_RELOAD = 1 << 0,
    GW_CMD_DRAIN = 1 << 1,
    GW_CMD_STOP = 1 << 2,   /* abort what is left and exit the loop */
    GW_CMD_KEYS = 1 << 3,   /* pick up the new virtual key set */
};

struct gw_worker {
    unsigned id;
    struct gw_gateway *gw;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_async_t async;
    atomic_int cmd;
    struct gw_http_server *server;
    struct gw_upstream *upstream;
    struct gw_config *cfg;          /* this worker's current snapshot (one ref) */
    struct gw_keyset *keyset;       /* this worker's virtual keys (one ref), or NULL */
    struct gw_metrics *metrics;
    struct gw_buf alog;             /* access-log lines waiting for a write */
    uv_prepare_t flush;             /* before sleep: write the access log */
    uv_timer_t drain_timer;
    uv_timer_t trim_timer;          /* malloc_trim after busy periods */
    bool trim_pending;
    uint64_t rng;                   /* xorshift state for request ids */
    bool draining;
    bool thread_started;            /* to be joined */
    bool started;                   /* listening: takes commands */
    int start_error;                /* listen error, for the main thread */
};

struct gw_tracer;
struct gw_ledger;

struct gw_gateway {
    char *config_path;
    struct gw_config *cfg;          /* latest snapshot; main thread only */
    uv_mutex_t cfg_lock;            /* guards cfg for workers picking it up */
    struct gw_worker *workers;
    unsigned nworkers;
    uv_loop_t *loop;                /* main thread's loop */
    struct gw_http_server *admin;   /* NULL: admin routes on the workers */
    struct gw_upstream *health_up;  /* main thread's client for checks */
    uv_timer_t health_timer;
    struct gw_metrics *metrics;     /* main thread's registry */
    struct gw_tracer *tracer;       /* NULL when telemetry.otlp is off */
    struct gw_ledger *ledger;       /* NULL when ledger.database is not set */
    struct gw_store *store;         /* main thread's own connection (keys) */
    struct gw_budget *budget;       /* reservations (own thread and connection) */
    struct gw_limits *limits;       /* rate limits of virtual keys and teams */
    struct gw_keyset *keyset;       /* latest; guarded by cfg_lock */
    uv_timer_t keys_timer;
    atomic_bool last_reload_ok;     /* the last load (start or SIGHUP) worked */
    _Atomic double last_reload_ts;  /* unix seconds of that load */
    int access_fd;                  /* -1 when off */
    atomic_bool draining;
    int listen_port;                /* actual ports, after binding */
    int admin_port;
};

/* The config snapshot that new work should use, with a reference taken. */
struct gw_config *gw_gateway_config(struct gw_gateway *gw);

/* ---- metrics families shared by handlers ---- */
extern const struct gw_metric_family gw_m_requests;
extern const struct gw_metric_family gw_m_duration;
extern const struct gw_metric_family gw_m_ttft;
extern const struct gw_metric_family gw_m_inflight;
extern const struct gw_metric_family gw_m_upstream_errors;
extern const struct gw_metric_family gw_m_tokens;
extern const struct gw_metric_family gw_m_backend_up;
extern const struct gw_metric_family gw_m_reloads;
extern const struct gw_metric_family gw_m_build;
extern const struct gw_metric_family gw_m_decisions;
extern const struct gw_metric_family gw_m_retries;
extern const struct gw_metric_family gw_m_itl;
extern const struct gw_metric_family gw_m_budget;
extern const struct gw_metric_family gw_m_limited;
extern const struct gw_metric_family gw_m_cost;
extern const struct gw_metric_family gw_m_counterfactual;
extern const struct gw_metric_family gw_m_fallbacks;
/* Render every registry of the process, and the health of cfg's targets. */
void gw_gateway_render_metrics(struct gw_gateway *gw, const struct gw_config *cfg,
                               struct gw_buf *out);

/* ---- auth ---- */
/* Check the request's Authorization: Bearer / x-api-key against the keys.
 * Returns the key's name, "" when auth is off, or NULL when rejected.
 * Compares SHA-256 digests in constant time against every key. */
struct gw_keyset;
struct gw_vkey;
struct gw_auth {
    const char *name;             /* the key's name; "" when the gateway is open */
    bool may_force_tier;
    const struct gw_vkey *vkey;   /* a virtual key (in the keyset), NULL for static ones */
    const char *why;              /* the client's message when rejected */
};
/* Returns 0 (accepted, *out filled) or 401 (out->why says why: missing,
 * incorrect, revoked, expired). Static keys from config first (constant-
 * time compare with each), then virtual keys by the secret's SHA-256. */
int gw_auth_check(const struct gw_config *cfg, const struct gw_keyset *ks,
                  struct gw_http_req *req, struct gw_auth *out);

/* ---- request ids ---- */
/* Use the client's x-request-id when it is sane, else make one; out must
 * hold 65 bytes. */
void gw_request_id(struct gw_worker *w, struct gw_http_req *req, char *out);

/* ---- HTTP handlers (src/api) ---- */
void gw_api_on_head(struct gw_http_req *req);
void gw_api_on_request(struct gw_http_req *req);
void gw_api_on_error(struct gw_http_req *req, int status, const char *msg);
void gw_api_on_complete(struct gw_http_req *req);

/* What a request needs of its virtual key after the head (copied: the
 * keyset may be replaced while the request runs). */
struct gw_vkey_info {
    char id[32];
    char team[65];
    char allowed_models[512];   /* "" = any */
    char name[65];
    double budget_day, budget_month, budget_total; /* 0 = none */
    bool downgrade;             /* over budget: local tier instead of 402 */
    struct gw_limit_spec limits;      /* the key's rpm/tpm/concurrent */
    struct gw_limit_spec team_limits; /* its team's (from the team's row) */
    bool team_budget;                 /* its team has a budget */
};

/* What the API layer knows of a request from its head on; lives in the
 * request arena and is the request's data pointer. */
struct gw_req_meta {
    char id[68];          /* x-request-id: the client's when sane, else made */
    char key[64];         /* the key's name ("" when auth is off) */
    bool authed;          /* the key was accepted */
    bool may_force_tier;  /* the key may send x-hybridgw-tier */
    struct gw_vkey_info *vk; /* a virtual key's details, NULL for static keys */
    bool self_logged;     /* the handler writes its own access-log line */
};
/* The request's meta, made on first use (also for requests that never went
 * through on_head, such as server-side 400s). */
struct gw_req_meta *gw_req_meta(struct gw_worker *w, struct gw_http_req *req);
void gw_api_admin_on_request(struct gw_http_req *req);
/* /admin/keys and /admin/spend (src/api/admin.c), admin listener only. */
void gw_admin_keys_handle(struct gw_http_req *req, struct gw_gateway *gw);
/* An admin API body as the handlers read it: a key to create (create: a
 * name is required) or the fields of one to change (only the fields the
 * body names are set in *k), or a team's limits and budgets. 0, or -1 with
 * the client's message in err. (Exposed for the fuzz target.) */
struct gw_team;
int gw_admin_key_body(const char *body, size_t len, bool create, struct gw_vkey *k, char *err,
                      size_t errlen);
int gw_admin_team_body(const char *body, size_t len, struct gw_team *t, char *err,
                       size_t errlen);
/* Re-read the virtual keys now (main thread). */
void gw_keys_refresh_now(void);
/* OpenAI-shaped error body. */
void gw_api_send_error(struct gw_http_req *req, int status, const char *type,
                       const char *code, const char *param, const char *message);
/* The model endpoints (src/api/proxy.c). */
enum gw_endpoint {
    GW_EP_CHAT = 0,         /* POST /v1/chat/completions (OpenAI dialect) */
    GW_EP_MESSAGES = 1,     /* POST /v1/messages (Anthropic dialect) */
    GW_EP_COUNT_TOKENS = 2, /* POST /v1/messages/count_tokens */
    GW_EP_COUNT
};
void gw_proxy_handle(struct gw_worker *w, struct gw_http_req *req, enum gw_endpoint ep);

/* ---- access log ---- */
void gw_alog_flush(struct gw_worker *w);

#endif
