/*
 * api.c - endpoint dispatch and the small endpoints: models, health,
 * readiness, metrics; plus the OpenAI error shape every endpoint uses.
 *
 *   POST /v1/chat/completions   chat.c
 *   GET  /v1/models             configured models plus auto, local, frontier
 *   GET  /v1/models/{id}        one of them
 *   GET  /healthz               alive (open)
 *   GET  /readyz                config loaded and a healthy backend (open)
 *   GET  /metrics               Prometheus text (open; also on the admin listener)
 *
 * Authentication runs in the head phase, before the body is read, so an
 * unauthenticated client can't make the gateway buffer a large body.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "hybridgw/log.h"
#include "gateway/gateway.h"
#include "provider/provider.h"
#include "router/router.h"
#include "telemetry/trace.h"
#include "gateway/keys.h"
#include "gateway/ledger_writer.h"
#include "translate/translate.h"

/* ---- metrics families ---- */

static const double duration_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                          2.5, 5, 10, 20, 40, 80, 160, 320};
static const double ttft_buckets[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                      0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40};

const struct gw_metric_family gw_m_requests = {
    "hybridgw_requests_total", "Requests handled, by endpoint, tier, backend and status.",
    GW_METRIC_COUNTER, {"route", "tier", "backend", "status", NULL}, NULL, 0};
const struct gw_metric_family gw_m_duration = {
    "hybridgw_request_duration_seconds", "Time from the request's first byte to its last response byte.",
    GW_METRIC_HISTOGRAM, {"route", "tier", NULL}, duration_buckets,
    GW_ARRAY_LEN(duration_buckets)};
const struct gw_metric_family gw_m_ttft = {
    "hybridgw_time_to_first_token_seconds",
    "Time from the request's first byte to the first streamed event relayed to the client.",
    GW_METRIC_HISTOGRAM, {"tier", "backend", NULL}, ttft_buckets, GW_ARRAY_LEN(ttft_buckets)};
const struct gw_metric_family gw_m_inflight = {
    "hybridgw_requests_in_flight", "Chat requests being handled now.", GW_METRIC_GAUGE,
    {NULL}, NULL, 0};
const struct gw_metric_family gw_m_upstream_errors = {
    "hybridgw_upstream_errors_total",
    "Upstream failures by backend and kind (connect, timeout, stalled, io, too_big, status_5xx, status_429).",
    GW_METRIC_COUNTER, {"backend", "kind", NULL}, NULL, 0};
const struct gw_metric_family gw_m_tokens = {
    "hybridgw_tokens_total", "Tokens reported by upstreams, by tier, backend and kind (input, output, cached_input, reasoning).",
    GW_METRIC_COUNTER, {"tier", "backend", "kind", NULL}, NULL, 0};
const struct gw_metric_family gw_m_backend_up = {
    "hybridgw_backend_up", "1 when the upstream URL is healthy, 0 when ejected.",
    GW_METRIC_GAUGE, {"backend", "url", NULL}, NULL, 0};
const struct gw_metric_family gw_m_reloads = {
    "hybridgw_config_reloads_total", "Configuration reloads by result.", GW_METRIC_COUNTER,
    {"result", NULL}, NULL, 0};
const struct gw_metric_family gw_m_build = {
    "hybridgw_build_info", "Build information; the value is always 1.", GW_METRIC_GAUGE,
    {"version", NULL}, NULL, 0};
const struct gw_metric_family gw_m_decisions = {
    "hybridgw_route_decisions_total",
    "Routing decisions by deciding stage, task label (none when the classifier did not run) and tier.",
    GW_METRIC_COUNTER, {"stage", "label", "tier", NULL}, NULL, 0};

const struct gw_metric_family gw_m_retries = {
    "hybridgw_retries_total", "Upstream attempts retried on the same backend, by reason.",
    GW_METRIC_COUNTER, {"backend", "reason", NULL}, NULL, 0};
const struct gw_metric_family gw_m_fallbacks = {
    "hybridgw_fallbacks_total", "Requests moved to the next backend of the fallback chain.",
    GW_METRIC_COUNTER, {"from", "to", "reason", NULL}, NULL, 0};

static const double itl_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04,
                                     0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5};
const struct gw_metric_family gw_m_itl = {
    "hybridgw_inter_token_seconds",
    "Gap between consecutive stream events relayed to the client.",
    GW_METRIC_HISTOGRAM, {"tier", "backend", NULL}, itl_buckets, GW_ARRAY_LEN(itl_buckets)};
const struct gw_metric_family gw_m_cost = {
    "hybridgw_cost_usd_total",
    "What requests cost in USD: vendor list prices, or the GPU hour shared by the tokens served.",
    GW_METRIC_COUNTER, {"tier", "backend", NULL}, NULL, 0};
const struct gw_metric_family gw_m_counterfactual = {
    "hybridgw_counterfactual_cost_usd_total",
    "What the same requests would have cost on the reference frontier model "
    "(saved = counterfactual - cost).",
    GW_METRIC_COUNTER, {"tier", "backend", NULL}, NULL, 0};

const struct gw_metric_family gw_m_budget = {
    "hybridgw_budget_decisions_total",
    "Requests a budget stopped: reject (402), downgrade (sent local), stream_cut (a stream passed its reservation), error (database down).",
    GW_METRIC_COUNTER, {"action", NULL}, NULL, 0};

const struct gw_metric_family gw_m_limited = {
    "hybridgw_rate_limited_total",
    "Requests refused with 429 by a virtual key's or team's limit: limit is requests (per minute), tokens (per minute), concurrent or too_large (more tokens than the per-minute limit).",
    GW_METRIC_COUNTER, {"scope", "limit", NULL}, NULL, 0};

static const struct gw_metric_family *const families[] = {
    &gw_m_budget, &gw_m_limited,
    &gw_m_itl, &gw_m_cost, &gw_m_counterfactual,
    &gw_m_build, &gw_m_requests, &gw_m_duration, &gw_m_ttft, &gw_m_inflight,
    &gw_m_upstream_errors, &gw_m_retries, &gw_m_fallbacks, &gw_m_tokens, &gw_m_decisions,
    &gw_m_reloads,
};

void gw_gateway_render_metrics(struct gw_gateway *gw, const struct gw_config *cfg,
                               struct gw_buf *out)
{
    struct gw_metrics *regs[GW_MAX_WORKERS + 1];
    size_t n = 0;
    regs[n++] = gw->metrics;
    for (unsigned i = 0; i < gw->nworkers; i++)
        if (gw->workers[i].metrics)
            regs[n++] = gw->workers[i].metrics;
    gw_metrics_render(regs, n, families, GW_ARRAY_LEN(families), out);
    /* target health is read straight from the shared atomics */
    const struct gw_metric_family *f = &gw_m_backend_up;
    gw_buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", f->name, f->help, f->name);
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const struct gw_backend_conf *b = &cfg->backends[i];
        for (size_t j = 0; b->targets && j < b->nurls; j++)
            gw_buf_printf(out, "%s{backend=\"%s\",url=\"%s\"} %d\n", f->name, b->name,
                          b->urls[j], atomic_load(&b->targets[j]->healthy) ? 1 : 0);
    }
    static const struct {
        const char *name, *help;
        int which;
    } load[] = {
        {"hybridgw_vllm_requests_waiting", "vllm:num_requests_waiting as last read from the backend.", 0},
        {"hybridgw_vllm_requests_running", "vllm:num_requests_running as last read from the backend.", 1},
        {"hybridgw_vllm_kv_cache_usage_ratio", "vllm:kv_cache_usage_perc (0-1) as last read from the backend.", 2},
        {"hybridgw_spill_active", "1 while the router sends the backend's work to the frontier (load over the spill thresholds).", 3},
    };
    for (size_t k = 0; k < GW_ARRAY_LEN(load); k++) {
        gw_buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", load[k].name, load[k].help,
                      load[k].name);
        for (size_t i = 0; i < cfg->nbackends; i++) {
            const struct gw_backend_conf *b = &cfg->backends[i];
            if (!b->provider->scrape_load)
                continue;
            for (size_t j = 0; b->targets && j < b->nurls; j++) {
                struct gw_target *t = b->targets[j];
                if (!atomic_load(&t->load_ns))
                    continue;
                double v = load[k].which == 0   ? atomic_load(&t->load_waiting)
                           : load[k].which == 1 ? atomic_load(&t->load_running)
                           : load[k].which == 2 ? atomic_load(&t->load_kv)
                                                : (atomic_load(&t->spilling) ? 1 : 0);
                gw_buf_printf(out, "%s{backend=\"%s\",url=\"%s\"} %g\n", load[k].name, b->name,
                              b->urls[j], v);
            }
        }
    }
    gw_buf_puts(out, "# HELP hybridgw_trace_spans_total Spans by export result (exported, "
                     "dropped: queue full, failed: refused or timed out).\n"
                     "# TYPE hybridgw_trace_spans_total counter\n");
    /* one snapshot each, for the counters and the queue gauges below */
    struct gw_tracer_stats ts = {0};
    struct gw_ledger_stats ls = {0};
    if (gw->tracer)
        gw_tracer_stats(gw->tracer, &ts);
    if (gw->ledger)
        gw_ledger_stats(gw->ledger, &ls);
    if (gw->tracer) {
        gw_buf_printf(out, "hybridgw_trace_spans_total{result=\"exported\"} %llu\n"
                           "hybridgw_trace_spans_total{result=\"dropped\"} %llu\n"
                           "hybridgw_trace_spans_total{result=\"failed\"} %llu\n",
                      (unsigned long long)ts.exported, (unsigned long long)ts.dropped,
                      (unsigned long long)ts.failed);
    }
    gw_buf_puts(out, "# HELP hybridgw_ledger_records_total Spend ledger records by result "
                     "(written, dropped: queue full, failed: not written by shutdown).\n"
                     "# TYPE hybridgw_ledger_records_total counter\n");
    if (gw->ledger) {
        gw_buf_printf(out, "hybridgw_ledger_records_total{result=\"written\"} %llu\n"
                           "hybridgw_ledger_records_total{result=\"dropped\"} %llu\n"
                           "hybridgw_ledger_records_total{result=\"failed\"} %llu\n",
                      (unsigned long long)ls.written, (unsigned long long)ls.dropped,
                      (unsigned long long)ls.failed);
    }
    gw_buf_puts(out, "# HELP hybridgw_ledger_queue_records Ledger records waiting to be "
                     "written.\n# TYPE hybridgw_ledger_queue_records gauge\n");
    if (gw->ledger) {
        gw_buf_printf(out, "hybridgw_ledger_queue_records %llu\n", (unsigned long long)ls.queued);
    }
    gw_buf_puts(out, "# HELP hybridgw_rate_limit_subjects Virtual keys and teams whose rate "
                     "limits are being counted.\n# TYPE hybridgw_rate_limit_subjects gauge\n");
    if (gw->limits)
        gw_buf_printf(out, "hybridgw_rate_limit_subjects %zu\n", gw_limits_subjects(gw->limits));
    gw_buf_puts(out, "# HELP hybridgw_rate_limit_syncs_total Exchanges of rate-limit counts with "
                     "other replicas through the database, by result.\n"
                     "# TYPE hybridgw_rate_limit_syncs_total counter\n");
    if (gw->limits) {
        struct gw_limits_sync_stats rs;
        gw_limits_sync_stats(gw->limits, &rs);
        gw_buf_printf(out,
                      "hybridgw_rate_limit_syncs_total{result=\"ok\"} %llu\n"
                      "hybridgw_rate_limit_syncs_total{result=\"error\"} %llu\n",
                      (unsigned long long)(rs.syncs - rs.errors), (unsigned long long)rs.errors);
    }
    gw_buf_puts(out, "# HELP hybridgw_trace_queue_spans Spans waiting for export now.\n"
                     "# TYPE hybridgw_trace_queue_spans gauge\n");
    if (gw->tracer) {
        gw_buf_printf(out, "hybridgw_trace_queue_spans %llu\n", (unsigned long long)ts.queued);
    }
    gw_buf_printf(out,
                  "# HELP hybridgw_config_last_reload_success 1 when the last config load "
                  "(start or SIGHUP) worked, 0 when it was rejected (the old one serves).\n"
                  "# TYPE hybridgw_config_last_reload_success gauge\n"
                  "hybridgw_config_last_reload_success %d\n"
                  "# HELP hybridgw_config_last_reload_timestamp_seconds When the last config "
                  "load was tried.\n"
                  "# TYPE hybridgw_config_last_reload_timestamp_seconds gauge\n"
                  "hybridgw_config_last_reload_timestamp_seconds %.3f\n",
                  atomic_load(&gw->last_reload_ok) ? 1 : 0, atomic_load(&gw->last_reload_ts));
    gw_buf_puts(out, "# HELP hybridgw_circuit_state Circuit breaker per upstream URL: "
                     "0 closed, 1 open, 2 half-open.\n# TYPE hybridgw_circuit_state gauge\n");
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const struct gw_backend_conf *b = &cfg->backends[i];
        for (size_t j = 0; b->targets && j < b->nurls; j++)
            gw_buf_printf(out, "hybridgw_circuit_state{backend=\"%s\",url=\"%s\"} %d\n",
                          b->name, b->urls[j], atomic_load(&b->targets[j]->circuit));
    }
}

/* ---- errors ---- */

void gw_api_send_error(struct gw_http_req *req, int status, const char *type, const char *code,
                       const char *param, const char *message)
{
    struct gw_buf b;
    gw_buf_init(&b, 0);
    gw_buf_puts(&b, "{\"error\":{\"message\":");
    gw_buf_json_str(&b, message, strlen(message));
    gw_buf_puts(&b, ",\"type\":");
    gw_buf_json_str(&b, type, strlen(type));
    gw_buf_puts(&b, ",\"param\":");
    if (param)
        gw_buf_json_str(&b, param, strlen(param));
    else
        gw_buf_puts(&b, "null");
    gw_buf_puts(&b, ",\"code\":");
    if (code)
        gw_buf_json_str(&b, code, strlen(code));
    else
        gw_buf_puts(&b, "null");
    gw_buf_puts(&b, "}}");
    gw_http_resp_send(req, status, "application/json", b.data, b.len);
    gw_buf_free(&b);
}

static void send_anthropic_error(struct gw_http_req *req, int status, const char *msg)
{
    char *body = gw_xlate_anthropic_error_body(status, msg);
    gw_http_resp_send(req, status, "application/json", body, strlen(body));
    free(body);
}

static const char *type_for_status(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 408: return "timeout_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

void gw_api_on_error(struct gw_http_req *req, int status, const char *msg)
{
    gw_str p = gw_http_req_path(req);
    if (p.len >= 12 && memcmp(p.p, "/v1/messages", 12) == 0) {
        send_anthropic_error(req, status, msg);
        return;
    }
    gw_api_send_error(req, status, type_for_status(status), NULL, NULL, msg);
}

/* ---- access log and metrics for everything but chat ---- */

struct gw_req_meta *gw_req_meta(struct gw_worker *w, struct gw_http_req *req)
{
    struct gw_req_meta *m = gw_http_req_data(req);
    if (m)
        return m;
    m = gw_arena_alloc(gw_http_req_arena(req), sizeof(*m));
    memset(m, 0, sizeof(*m));
    gw_request_id(w, req, m->id);
    gw_http_req_set_data(req, m);
    return m;
}

static const char *route_name(gw_str p)
{
    static const char *const known[] = {"/v1/chat/completions", "/v1/messages",
                                        "/v1/messages/count_tokens", "/v1/models", "/healthz",
                                        "/readyz", "/metrics"};
    static const char *const names[] = {"chat_completions", "messages", "count_tokens",
                                        "models", "healthz", "readyz", "metrics"};
    for (size_t i = 0; i < GW_ARRAY_LEN(known); i++)
        if (gw_str_eq_c(p, known[i]))
            return names[i];
    if (p.len > 11 && memcmp(p.p, "/v1/models/", 11) == 0)
        return "models";
    return "unknown";
}

/* Runs for every answered request on the client listener; chat requests
 * that reached the handler log themselves (with much more to say). */
void gw_api_on_complete(struct gw_http_req *req)
{
    struct gw_worker *w = gw_http_server_ud(gw_http_req_server(req));
    struct gw_req_meta *meta = gw_req_meta(w, req);
    if (meta->self_logged)
        return;
    int status = gw_http_resp_status(req);
    char st[8];
    snprintf(st, sizeof(st), "%d", status);
    gw_str path = gw_http_req_path(req);
    const char *route = route_name(path);
    gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_requests, route, "none", "none", st), 1);
    if (w->gw->access_fd < 0)
        return;
    const char *id = meta->id;
    struct gw_buf *b = &w->alog;
    char ts[64];
    gw_utc_now(ts);
    gw_str m = gw_http_req_method(req);
    gw_buf_printf(b, "{\"ts\":\"%s\",\"request_id\":", ts);
    gw_buf_json_str(b, id, strlen(id));
    gw_buf_puts(b, ",\"method\":");
    gw_buf_json_str(b, m.p ? m.p : "-", m.p ? GW_MIN(m.len, 16) : 1);
    gw_buf_puts(b, ",\"path\":");
    gw_buf_json_str(b, path.p ? path.p : "-", path.p ? GW_MIN(path.len, 256) : 1);
    gw_buf_printf(b, ",\"route\":\"%s\",\"status\":%d", route, status);
    if (meta->authed) {
        gw_buf_puts(b, ",\"key\":");
        gw_buf_json_str(b, meta->key, strlen(meta->key));
    }
    gw_buf_printf(b, ",\"latency_ms\":%.3f,\"bytes_in\":%zu,\"bytes_out\":%llu}\n",
                  (double)(gw_now_ns() - gw_http_req_start_ns(req)) / 1e6,
                  gw_http_req_body(req).len, (unsigned long long)gw_http_resp_bytes(req));
    if (b->err)
        gw_buf_reset(b);
    else if (b->len > 64 * 1024)
        gw_alog_flush(w);
}

/* ---- small endpoints ---- */

static struct gw_worker *worker_of(struct gw_http_req *req)
{
    return gw_http_server_ud(gw_http_req_server(req));
}

static void send_json(struct gw_http_req *req, int status, struct gw_buf *b)
{
    gw_http_resp_send(req, status, "application/json", b->data, b->len);
}

static void model_card(struct gw_buf *b, const char *id, const char *owner, time_t created,
                       bool comma)
{
    if (comma)
        gw_buf_puts(b, ",");
    gw_buf_puts(b, "{\"id\":");
    gw_buf_json_str(b, id, strlen(id));
    gw_buf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":",
                  (long long)created);
    gw_buf_json_str(b, owner, strlen(owner));
    gw_buf_puts(b, "}");
}

static time_t start_time;

/* May the request's key see this model? A virtual key sees what its
 * allowed_models lists, and "frontier" only when it may force the tier. */
static bool model_visible(const struct gw_req_meta *meta, const char *id)
{
    if (!meta || !meta->vk)
        return true;
    if (strcmp(id, "frontier") == 0 && !meta->may_force_tier)
        return false;
    return gw_models_allow(meta->vk->allowed_models, id);
}

static void handle_models(struct gw_http_req *req, const struct gw_config *cfg,
                          const struct gw_req_meta *meta, gw_str one)
{
    struct gw_buf b;
    gw_buf_init(&b, 0);
    if (!start_time)
        start_time = time(NULL);
    static const char *const aliases[] = {"auto", "local", "frontier"};
    if (one.p) {
        /* GET /v1/models/{id} */
        const char *owner = NULL;
        for (size_t i = 0; i < GW_ARRAY_LEN(aliases); i++)
            if (gw_str_eq_c(one, aliases[i]))
                owner = "hybridgw";
        if (!owner) {
            const struct gw_backend_conf *be = gw_config_resolve_model(cfg, one.p, one.len);
            if (be)
                owner = be->name;
        }
        char *id = gw_strndup(one.p, one.len);
        if (owner && !model_visible(meta, id))
            owner = NULL; /* as if it did not exist, the way vendors answer */
        if (!owner) {
            free(id);
            char msg[200];
            snprintf(msg, sizeof(msg), "The model `%.*s` does not exist.",
                     (int)GW_MIN(one.len, 100), one.p);
            gw_api_send_error(req, 404, "invalid_request_error", "model_not_found", "model", msg);
            gw_buf_free(&b);
            return;
        }
        model_card(&b, id, owner, start_time, false);
        free(id);
        send_json(req, 200, &b);
        gw_buf_free(&b);
        return;
    }
    gw_buf_puts(&b, "{\"object\":\"list\",\"data\":[");
    bool comma = false;
    for (size_t i = 0; i < GW_ARRAY_LEN(aliases); i++) {
        if (!model_visible(meta, aliases[i]))
            continue;
        model_card(&b, aliases[i], "hybridgw", start_time, comma);
        comma = true;
    }
    for (size_t i = 0; i < cfg->nmodels; i++) {
        if (!model_visible(meta, cfg->models[i].name))
            continue;
        model_card(&b, cfg->models[i].name, cfg->models[i].backend_name, start_time, comma);
        comma = true;
    }
    for (size_t i = 0; i < cfg->nbackends; i++) {
        if (!model_visible(meta, cfg->backends[i].name))
            continue;
        model_card(&b, cfg->backends[i].name, cfg->backends[i].name, start_time, comma);
        comma = true;
    }
    gw_buf_puts(&b, "]}");
    send_json(req, 200, &b);
    gw_buf_free(&b);
}

static void handle_ready(struct gw_http_req *req, struct gw_gateway *gw,
                         const struct gw_config *cfg)
{
    char body[256];
    int status = 200;
    const char *why = "ready";
    if (atomic_load(&gw->draining)) {
        status = 503;
        why = "draining";
    } else {
        bool any = false;
        for (size_t i = 0; i < cfg->nbackends && !any; i++)
            any = gw_backend_healthy(&cfg->backends[i]);
        if (!any) {
            status = 503;
            why = "no healthy backend";
        }
    }
    snprintf(body, sizeof(body), "{\"status\":\"%s\",\"config_generation\":%llu}",
             why, (unsigned long long)cfg->generation);
    gw_http_resp_send(req, status, "application/json", body, strlen(body));
}

static void handle_metrics(struct gw_http_req *req, struct gw_gateway *gw,
                           const struct gw_config *cfg)
{
    struct gw_buf b;
    gw_buf_init(&b, 0);
    gw_gateway_render_metrics(gw, cfg, &b);
    gw_http_resp_send(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    gw_buf_free(&b);
}

/* Routes shared by the client listener (when there is no admin listener)
 * and the admin listener. Returns true when it handled the request. */
static bool admin_route(struct gw_http_req *req, struct gw_gateway *gw,
                        const struct gw_config *cfg)
{
    gw_str path = gw_http_req_path(req);
    bool get = gw_str_eq_c(gw_http_req_method(req), "GET") ||
               gw_str_eq_c(gw_http_req_method(req), "HEAD");
    if (gw_str_eq_c(path, "/healthz")) {
        if (!get)
            goto not_allowed;
        gw_http_resp_send(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
        return true;
    }
    if (gw_str_eq_c(path, "/readyz")) {
        if (!get)
            goto not_allowed;
        handle_ready(req, gw, cfg);
        return true;
    }
    if (gw_str_eq_c(path, "/metrics")) {
        if (!get)
            goto not_allowed;
        handle_metrics(req, gw, cfg);
        return true;
    }
    return false;
not_allowed:
    gw_http_resp_header(req, "Allow", "GET, HEAD");
    gw_api_send_error(req, 405, "invalid_request_error", "method_not_allowed", NULL,
                      "Method not allowed; use GET.");
    return true;
}

void gw_api_admin_on_request(struct gw_http_req *req)
{
    struct gw_gateway *gw = gw_http_server_ud(gw_http_req_server(req));
    struct gw_config *cfg = gw->cfg;
    gw_str p = gw_http_req_path(req);
    if (p.len >= 7 && memcmp(p.p, "/admin/", 7) == 0) {
        gw_admin_keys_handle(req, gw);
        return;
    }
    if (!admin_route(req, gw, cfg))
        gw_api_send_error(req, 404, "invalid_request_error", "not_found", NULL,
                          "Not found. The admin listener serves /healthz, /readyz and /metrics.");
}

enum endpoint {
    EP_NONE = 0,
    EP_CHAT,
    EP_MESSAGES,
    EP_COUNT_TOKENS,
    EP_MODELS,
    EP_MODEL,
    EP_ADMIN,
};

static enum endpoint classify(struct gw_http_req *req, struct gw_gateway *gw)
{
    gw_str p = gw_http_req_path(req);
    if (gw_str_eq_c(p, "/v1/chat/completions"))
        return EP_CHAT;
    if (gw_str_eq_c(p, "/v1/messages"))
        return EP_MESSAGES;
    if (gw_str_eq_c(p, "/v1/messages/count_tokens"))
        return EP_COUNT_TOKENS;
    if (gw_str_eq_c(p, "/v1/models"))
        return EP_MODELS;
    if (p.len > 11 && memcmp(p.p, "/v1/models/", 11) == 0)
        return EP_MODEL;
    if (!gw->admin && (gw_str_eq_c(p, "/metrics") || gw_str_eq_c(p, "/healthz") ||
                       gw_str_eq_c(p, "/readyz")))
        return EP_ADMIN;
    if (gw->admin && (gw_str_eq_c(p, "/healthz") || gw_str_eq_c(p, "/readyz")))
        return EP_ADMIN; /* probes may hit either listener */
    return EP_NONE;
}

/* Head phase: reject what can be rejected before reading the body. The
 * key's name is kept in the request arena for the handler and the log. */
void gw_api_on_head(struct gw_http_req *req)
{
    struct gw_worker *w = worker_of(req);
    gw_http_resp_header(req, "x-request-id", gw_req_meta(w, req)->id);
    enum endpoint ep = classify(req, w->gw);
    gw_str method = gw_http_req_method(req);
    if (ep == EP_NONE) {
        char msg[200];
        gw_str p = gw_http_req_path(req);
        snprintf(msg, sizeof(msg), "Unknown endpoint %.*s %.*s", (int)GW_MIN(method.len, 16),
                 method.p, (int)GW_MIN(p.len, 100), p.p);
        gw_api_send_error(req, 404, "invalid_request_error", "unknown_url", NULL, msg);
        return;
    }
    if (ep == EP_ADMIN)
        return;
    if (ep == EP_MESSAGES || ep == EP_COUNT_TOKENS)
        /* the Anthropic SDKs read the request id from this header */
        gw_http_resp_header(req, "request-id", gw_req_meta(w, req)->id);
    if ((ep == EP_CHAT || ep == EP_MESSAGES || ep == EP_COUNT_TOKENS) &&
        !gw_str_eq_c(method, "POST")) {
        gw_http_resp_header(req, "Allow", "POST");
        if (ep == EP_CHAT)
            gw_api_send_error(req, 405, "invalid_request_error", "method_not_allowed", NULL,
                              "Method not allowed; use POST /v1/chat/completions.");
        else
            send_anthropic_error(req, 405, "Method not allowed; use POST.");
        return;
    }
    if ((ep == EP_MODELS || ep == EP_MODEL) && !gw_str_eq_c(method, "GET")) {
        gw_http_resp_header(req, "Allow", "GET");
        gw_api_send_error(req, 405, "invalid_request_error", "method_not_allowed", NULL,
                          "Method not allowed; use GET.");
        return;
    }
    struct gw_auth au;
    if (gw_auth_check(w->cfg, w->keyset, req, &au) != 0) {
        if (ep == EP_MESSAGES || ep == EP_COUNT_TOKENS)
            send_anthropic_error(req, 401, au.why);
        else
            gw_api_send_error(req, 401, "invalid_request_error", "invalid_api_key", NULL, au.why);
        return;
    }
    const char *key = au.name;
    bool may_force = au.may_force_tier;
    struct gw_req_meta *meta = gw_req_meta(w, req);
    if (au.vkey) {
        meta->vk = gw_arena_alloc(gw_http_req_arena(req), sizeof(*meta->vk));
        memset(meta->vk, 0, sizeof(*meta->vk)); /* no team row: no team limits, no budget */
        snprintf(meta->vk->id, sizeof(meta->vk->id), "%s", au.vkey->id);
        snprintf(meta->vk->team, sizeof(meta->vk->team), "%s", au.vkey->team);
        snprintf(meta->vk->allowed_models, sizeof(meta->vk->allowed_models), "%s",
                 au.vkey->allowed_models);
        snprintf(meta->vk->name, sizeof(meta->vk->name), "%s", au.vkey->name);
        meta->vk->budget_day = au.vkey->budget_day;
        meta->vk->budget_month = au.vkey->budget_month;
        meta->vk->budget_total = au.vkey->budget_total;
        meta->vk->downgrade = au.vkey->downgrade;
        meta->vk->limits = (struct gw_limit_spec){au.vkey->rpm, au.vkey->tpm,
                                                  au.vkey->max_concurrent};
        const struct gw_team *team = gw_keyset_team(w->keyset, au.vkey->team);
        if (team) {
            meta->vk->team_limits = (struct gw_limit_spec){team->rpm, team->tpm,
                                                           team->max_concurrent};
            meta->vk->team_budget =
                team->budget_day > 0 || team->budget_month > 0 || team->budget_total > 0;
        }
    }
    snprintf(meta->key, sizeof(meta->key), "%s", key);
    meta->authed = true;
    meta->may_force_tier = may_force;
}

void gw_api_on_request(struct gw_http_req *req)
{
    struct gw_worker *w = worker_of(req);
    switch (classify(req, w->gw)) {
    case EP_CHAT:
        gw_proxy_handle(w, req, GW_EP_CHAT);
        return;
    case EP_MESSAGES:
        gw_proxy_handle(w, req, GW_EP_MESSAGES);
        return;
    case EP_COUNT_TOKENS:
        gw_proxy_handle(w, req, GW_EP_COUNT_TOKENS);
        return;
    case EP_MODELS:
        handle_models(req, w->cfg, gw_req_meta(w, req), GW_STR_NULL);
        return;
    case EP_MODEL: {
        gw_str p = gw_http_req_path(req);
        handle_models(req, w->cfg, gw_req_meta(w, req), (gw_str){p.p + 11, p.len - 11});
        return;
    }
    case EP_ADMIN:
        if (admin_route(req, w->gw, w->cfg))
            return;
        break;
    default:
        break;
    }
    gw_api_send_error(req, 404, "invalid_request_error", "unknown_url", NULL, "Not found");
}
