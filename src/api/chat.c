/*
 * chat.c - POST /v1/chat/completions: validate, route, proxy to the chosen
 * backend, relay the response (whole, or as a stream event by event), and
 * finalize in one place (metrics, access log, passive health, cleanup).
 *
 * Streams are relayed as they arrive, never buffered whole. When the client
 * reads slowly, the client connection's queue passes its high-water mark,
 * the upstream transfer is paused, and it resumes when the queue drains, so
 * a slow client costs at most about one high-water mark plus one curl
 * buffer of memory.
 *
 * Usage is always captured: streams ask the upstream for
 * stream_options.include_usage, and the usage-only chunk is dropped again
 * when the client did not ask for it (PROTOCOLS.md 1.4, 1.5).
 *
 * Lifetime: struct chat lives from gw_chat_handle() to chat_finalize().
 * The HTTP request may die first (client gone: on_client_abort), after
 * which c->req is NULL and nothing is written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <jansson.h>

#include "hybridgw/json_check.h"
#include "hybridgw/log.h"
#include "hybridgw/sse.h"
#include "gateway/gateway.h"
#include "provider/provider.h"
#include "router/router.h"

struct chat {
    struct gw_worker *w;
    struct gw_http_req *req;        /* NULL once the client is gone */
    struct gw_config *cfg;          /* reference held until finalize */
    struct gw_route route;
    const struct gw_backend_conf *b;
    struct gw_target *t;
    struct gw_up *up;
    json_t *json;                   /* the client's request */
    char *up_body;                  /* what we send upstream */
    size_t up_body_len;
    struct gw_sse sse;
    struct gw_buf body;             /* non-streamed response / error body */
    struct gw_buf scratch;          /* one rewritten stream event */
    struct gw_usage usage;
    char reqid[68];
    char client_model[96];
    char key_name[64];              /* the client key's name (never the key) */
    const char *error_kind;         /* for the log; NULL when fine */
    char error_msg[256];
    uint64_t t0_ns;
    uint64_t ttft_ns;               /* first event relayed */
    uint64_t bytes_in, bytes_out;
    uint64_t events;
    int status;                     /* status given to the client */
    int up_status;
    bool stream;
    bool client_usage;              /* client asked for include_usage */
    bool streaming;                 /* client stream head sent */
    bool saw_done;
    bool client_full;               /* client queue over high water: pause upstream */
    bool client_gone;               /* a write to the client failed */
    bool upstream_malformed;        /* an upstream event was not JSON */
    bool counted_inflight;
};

static void chat_finalize(struct chat *c);

/* ---- responses ---- */

static void add_route_headers(struct chat *c)
{
    struct gw_http_req *r = c->req;
    if (c->b) {
        gw_http_resp_header(r, "x-hybridgw-route", gw_tier_str(c->route.tier));
        gw_http_resp_header(r, "x-hybridgw-backend", c->b->name);
    }
    if (c->route.reason[0])
        gw_http_resp_header(r, "x-hybridgw-reason", c->route.reason);
}

/* Answer with an error (before any byte of the response was sent) and
 * finish the request. */
static void chat_fail(struct chat *c, int status, const char *type, const char *code,
                      const char *param, const char *msg)
{
    c->status = status;
    if (!c->error_kind)
        c->error_kind = code ? code : type;
    snprintf(c->error_msg, sizeof(c->error_msg), "%s", msg);
    if (c->req) {
        add_route_headers(c);
        if (status >= 500 || status == 429)
            /* the gateway already retried what it could; a client retry
             * storm helps nobody (OpenAI SDKs honour this header) */
            gw_http_resp_header(c->req, "x-should-retry", status == 503 ? "true" : "false");
        gw_api_send_error(c->req, status, type, code, param, msg);
        c->bytes_out += strlen(msg) + 80;
        c->req = NULL;
    }
    chat_finalize(c);
}

/* The upstream failed after the client's stream began: end the stream with
 * an error event in the OpenAI shape (the SDKs raise APIError on it). */
static void stream_fail(struct chat *c, const char *code, const char *msg)
{
    if (!c->req)
        return;
    struct gw_buf b;
    gw_buf_init(&b, 0);
    gw_buf_puts(&b, "data: {\"error\":{\"message\":");
    gw_buf_json_str(&b, msg, strlen(msg));
    gw_buf_printf(&b, ",\"type\":\"upstream_error\",\"param\":null,\"code\":\"%s\"}}\n\n", code);
    gw_http_resp_write(c->req, b.data, b.len);
    c->bytes_out += b.len;
    gw_buf_free(&b);
    gw_http_resp_end(c->req);
    c->req = NULL;
}

/* ---- validation ---- */

static const char *const roles[] = {"system", "developer", "user", "assistant", "tool",
                                    "function"};

/* Check the fields the gateway relies on; the upstream validates the rest.
 * Returns NULL when fine, else a message, with *param set. */
static const char *validate(json_t *j, const char **param, char *buf, size_t buflen)
{
    if (!json_is_object(j)) {
        *param = NULL;
        return "The request body must be a JSON object.";
    }
    json_t *model = json_object_get(j, "model");
    *param = "model";
    if (!model)
        return "Missing required parameter: 'model'.";
    if (!json_is_string(model) || json_string_length(model) == 0)
        return "Invalid type for 'model': expected a non-empty string.";
    json_t *msgs = json_object_get(j, "messages");
    *param = "messages";
    if (!msgs)
        return "Missing required parameter: 'messages'.";
    if (!json_is_array(msgs))
        return "Invalid type for 'messages': expected an array.";
    if (json_array_size(msgs) == 0)
        return "Invalid 'messages': empty array. Expected an array with minimum length 1.";
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        json_t *role = json_object_get(m, "role");
        const char *rs = json_string_value(role);
        bool ok = false;
        for (size_t k = 0; rs && k < GW_ARRAY_LEN(roles); k++)
            ok = ok || strcmp(rs, roles[k]) == 0;
        if (!json_is_object(m) || !ok) {
            snprintf(buf, buflen,
                     "Invalid 'messages[%zu]': expected an object with a 'role' of system, "
                     "developer, user, assistant or tool.",
                     i);
            snprintf(buf + strlen(buf), buflen - strlen(buf), "%s", "");
            *param = "messages";
            return buf;
        }
    }
    json_t *stream = json_object_get(j, "stream");
    *param = "stream";
    if (stream && !json_is_boolean(stream) && !json_is_null(stream))
        return "Invalid type for 'stream': expected a boolean.";
    json_t *so = json_object_get(j, "stream_options");
    *param = "stream_options";
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return "Invalid type for 'stream_options': expected an object.";
        if (!json_is_true(stream))
            return "The 'stream_options' parameter is only allowed when 'stream' is enabled.";
        json_t *iu = json_object_get(so, "include_usage");
        if (iu && !json_is_boolean(iu))
            return "Invalid type for 'stream_options.include_usage': expected a boolean.";
    }
    *param = NULL;
    return NULL;
}

/* ---- upstream callbacks ---- */

/* Where the value of the last `"key":` in p starts (after white space), or
 * NULL. A raw quote can't occur inside a JSON string (it is escaped there),
 * so a match is a real key; upstreams put usage last. */
static const char *find_key_value(const char *p, size_t n, const char *key)
{
    char pat[32];
    int pl = snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *hit = NULL;
    for (const char *q = p; (q = memmem(q, n - (size_t)(q - p), pat, (size_t)pl)); q += pl)
        hit = q;
    if (!hit)
        return NULL;
    const char *v = hit + pl;
    while (v < p + n && (*v == ' ' || *v == '\n' || *v == '\t' || *v == '\r'))
        v++;
    if (v >= p + n || *v != ':')
        return NULL;
    v++;
    while (v < p + n && (*v == ' ' || *v == '\n' || *v == '\t' || *v == '\r'))
        v++;
    return v < p + n ? v : NULL;
}

/* Usage lives in a top-level "usage" object: parse just that object
 * instead of the whole response. */
static void scan_usage(struct chat *c, const char *p, size_t n)
{
    const char *v = find_key_value(p, n, "usage");
    if (!v || *v != '{')
        return;
    json_error_t err;
    json_t *u = json_loadb(v, (size_t)(p + n - v), JSON_DISABLE_EOF_CHECK, &err);
    if (u) {
        c->b->provider->read_usage(u, &c->usage);
        json_decref(u);
    }
}

/* Relay one event. Returns 0, or -1 when the client is gone. A full client
 * queue only sets client_full: the rest of the upstream piece is still
 * parsed and queued (at most one curl buffer), then the upstream pauses. */
static int write_event(struct chat *c, gw_str data)
{
    gw_str parts[3] = {GW_STR("data: "), data, GW_STR("\n\n")};
    c->bytes_out += data.len + 8;
    int rc = gw_http_resp_writev(c->req, parts, 3);
    if (rc < 0) {
        c->client_gone = true;
        return -1;
    }
    if (rc > 0)
        c->client_full = true;
    return 0;
}

static int on_sse_event(const struct gw_sse_event *ev, void *ud)
{
    struct chat *c = ud;
    gw_str d = ev->data;
    if (!c->req)
        return -1;
    c->events++;
    if (gw_str_eq_c(d, "[DONE]")) {
        c->saw_done = true;
        return write_event(c, d);
    }
    if (!gw_json_valid(d.p, d.len)) {
        /* relaying it would make the client's SDK fail on a parse error;
         * end the stream with a proper error event instead */
        c->upstream_malformed = true;
        return -1;
    }
    if (!c->ttft_ns)
        c->ttft_ns = gw_now_ns();
    const char *uv = find_key_value(d.p, d.len, "usage");
    if (uv && !c->client_usage && d.len - (size_t)(uv - d.p) >= 4 && memcmp(uv, "null", 4) == 0) {
        /* "usage":null is on every chunk once include_usage is on; the
         * client did not ask for it, so it gets chunks without it */
        const char *key = uv;
        while (key > d.p && *key != '"')
            key--;                      /* the colon, then the key's closing quote */
        key = key > d.p ? key - 1 : key;
        while (key > d.p && *key != '"')
            key--;                      /* the key's opening quote */
        const char *from = key, *to = uv + 4;
        const char *q = from;
        while (q > d.p && (q[-1] == ' ' || q[-1] == '\n'))
            q--;
        if (q > d.p && q[-1] == ',') {
            from = q - 1;               /* drop the comma before it */
        } else {
            while (to < d.p + d.len && (*to == ' ' || *to == '\n'))
                to++;
            if (to < d.p + d.len && *to == ',')
                to++;                   /* first member: drop the comma after */
        }
        gw_buf_reset(&c->scratch);
        gw_buf_append(&c->scratch, d.p, (size_t)(from - d.p));
        gw_buf_append(&c->scratch, to, (size_t)(d.p + d.len - to));
        if (!c->scratch.err)
            d = (gw_str){c->scratch.data, c->scratch.len};
    } else if (uv && *uv == '{') {
        scan_usage(c, d.p, d.len);
        /* the usage-only chunk: choices is an empty array */
        const char *cv = find_key_value(d.p, d.len, "choices");
        if (!c->client_usage && cv && *cv == '[') {
            cv++;
            while (cv < d.p + d.len && (*cv == ' ' || *cv == '\n' || *cv == '\t' || *cv == '\r'))
                cv++;
            if (cv < d.p + d.len && *cv == ']')
                return 0;
        }
    }
    return write_event(c, d);
}

static void on_up_head(struct gw_up *u, int status, void *ud)
{
    struct chat *c = ud;
    c->up_status = status;
    if (!c->req || !c->stream || status != 200)
        return;
    gw_str ct = gw_up_header(u, "content-type");
    if (ct.p && !memmem(ct.p, ct.len, "text/event-stream", 17))
        return; /* not a stream after all: handled as a whole body */
    c->streaming = true;
    c->status = 200;
    add_route_headers(c);
    gw_http_resp_header(c->req, "Cache-Control", "no-cache");
    gw_http_resp_header(c->req, "X-Accel-Buffering", "no");
    gw_http_resp_start(c->req, 200, "text/event-stream; charset=utf-8");
}

static int on_up_data(struct gw_up *u, const char *p, size_t n, void *ud)
{
    struct chat *c = ud;
    if (!c->req)
        return -1;
    if (c->streaming) {
        c->client_full = false;
        int rc = gw_sse_feed(&c->sse, p, n, on_sse_event, c);
        if (rc == GW_ETOOBIG) {
            c->error_kind = "event_too_big";
            return -1;
        }
        if (rc < 0)
            return -1;
        return c->client_full ? 1 : 0;
    }
    if (gw_buf_append(&c->body, p, n))
        return -1;
    return 0;
}

static void count_error(struct chat *c, const char *kind)
{
    gw_series_inc(gw_metrics_getv(c->w->metrics, &gw_m_upstream_errors, c->b->name, kind), 1);
}

static void on_up_done(struct gw_up *u, const char *err, void *ud)
{
    struct chat *c = ud;
    c->up = NULL;
    if (!c->req) {
        chat_finalize(c);
        return;
    }
    if (c->client_gone) {
        /* we stopped the transfer because the client went away */
        if (!c->streaming)
            c->status = 499;
        c->error_kind = "client_closed";
        snprintf(c->error_msg, sizeof(c->error_msg), "client closed the connection");
        chat_finalize(c);  /* resets the dead connection */
        return;
    }
    if (c->upstream_malformed) {
        count_error(c, "malformed");
        gw_target_report(c->t, c->b, false);
        c->error_kind = "upstream_malformed";
        snprintf(c->error_msg, sizeof(c->error_msg),
                 "backend %s sent a stream event that is not valid JSON", c->b->name);
        stream_fail(c, "upstream_malformed", c->error_msg);
        chat_finalize(c);
        return;
    }
    if (err) {
        const char *kind = gw_up_err_kind(err);
        if (err == gw_up_err_too_big && c->error_kind && strcmp(c->error_kind, "event_too_big") == 0)
            kind = "event_too_big";
        count_error(c, kind);
        if (err != gw_up_err_too_big)
            gw_target_report(c->t, c->b, false);
        char msg[200];
        snprintf(msg, sizeof(msg), "backend %s: %s", c->b->name, err);
        c->error_kind = kind;
        if (c->streaming) {
            snprintf(c->error_msg, sizeof(c->error_msg), "%s", msg);
            stream_fail(c, strcmp(kind, "stalled") == 0 ? "upstream_stalled" : "upstream_error", msg);
            chat_finalize(c);
            return;
        }
        bool timeout = strcmp(kind, "timeout") == 0;
        chat_fail(c, timeout ? 504 : 502, "upstream_error",
                  timeout ? "upstream_timeout" : "upstream_error", NULL, msg);
        return;
    }
    if (c->streaming) {
        gw_target_report(c->t, c->b, true);
        if (gw_sse_finish(&c->sse))
            gw_log_debug("%s: upstream stream ended inside an event; dropped it", c->reqid);
        gw_http_resp_end(c->req);
        c->req = NULL;
        chat_finalize(c);
        return;
    }
    int st = c->up_status;
    if (st >= 200 && st < 300) {
        gw_target_report(c->t, c->b, true);
        scan_usage(c, c->body.data ? c->body.data : "", c->body.len);
        c->status = 200;
        add_route_headers(c);
        gw_http_resp_send(c->req, 200, "application/json", c->body.data, c->body.len);
        c->bytes_out += c->body.len;
        c->req = NULL;
        chat_finalize(c);
        return;
    }
    /* an error status from the upstream */
    gw_target_report(c->t, c->b, st < 500 && st != 0);
    char kind[24];
    snprintf(kind, sizeof(kind), "status_%d", st);
    if (st >= 500 || st == 429)
        count_error(c, st == 429 ? "status_429" : "status_5xx");
    struct gw_error e;
    memset(&e, 0, sizeof(e));
    c->b->provider->map_error(c->b, st, c->body.data, c->body.len, &e);
    gw_str ra = gw_up_header(u, "retry-after");
    if (ra.p && ra.len < 32 && c->req)
        gw_http_resp_header_n(c->req, "retry-after", ra.p, ra.len);
    gw_str ram = gw_up_header(u, "retry-after-ms");
    if (ram.p && ram.len < 32 && c->req)
        gw_http_resp_header_n(c->req, "retry-after-ms", ram.p, ram.len);
    c->error_kind = e.code ? e.code : e.type;
    chat_fail(c, e.status, e.type, e.code, e.param, e.message);
}

static void on_client_abort(struct gw_http_req *req, void *ud)
{
    struct chat *c = ud;
    c->req = NULL;
    if (!c->status || c->streaming)
        c->status = c->streaming ? c->status : 499;
    c->error_kind = "client_closed";
    snprintf(c->error_msg, sizeof(c->error_msg), "client closed the connection");
    if (c->up) {
        /* cancelling closes the upstream connection: vLLM aborts the
         * generation when its client goes away */
        gw_up_cancel(c->up);
        c->up = NULL;
    }
    chat_finalize(c);
}

static void on_client_drain(struct gw_http_req *req, void *ud)
{
    struct chat *c = ud;
    if (c->up)
        gw_up_resume(c->up);
}

static const struct gw_up_callbacks up_cbs = {on_up_head, on_up_data, on_up_done};

/* ---- finalize: the one place a chat request ends ---- */

static void alog_write(struct chat *c, uint64_t end_ns)
{
    struct gw_worker *w = c->w;
    if (w->gw->access_fd < 0)
        return;
    struct gw_buf *b = &w->alog;
    char ts[64];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             now.tv_nsec / 1000000);
    gw_buf_printf(b, "{\"ts\":\"%s\",\"request_id\":", ts);
    gw_buf_json_str(b, c->reqid, strlen(c->reqid));
    gw_buf_puts(b, ",\"method\":\"POST\",\"path\":\"/v1/chat/completions\",\"model\":");
    gw_buf_json_str(b, c->client_model, strlen(c->client_model));
    gw_buf_printf(b, ",\"status\":%d,\"stream\":%s", c->status, c->stream ? "true" : "false");
    if (c->b) {
        gw_buf_printf(b, ",\"route\":\"%s\",\"backend\":", gw_tier_str(c->route.tier));
        gw_buf_json_str(b, c->b->name, strlen(c->b->name));
        gw_buf_puts(b, ",\"upstream_model\":");
        gw_buf_json_str(b, c->b->model, strlen(c->b->model));
        if (c->t) {
            gw_buf_puts(b, ",\"upstream\":");
            gw_buf_json_str(b, c->t->url, strlen(c->t->url));
        }
    }
    if (c->route.reason[0]) {
        gw_buf_puts(b, ",\"reason\":");
        gw_buf_json_str(b, c->route.reason, strlen(c->route.reason));
    }
    gw_buf_puts(b, ",\"key\":");
    gw_buf_json_str(b, c->key_name, strlen(c->key_name));
    if (c->up_status)
        gw_buf_printf(b, ",\"upstream_status\":%d", c->up_status);
    if (c->usage.reported)
        gw_buf_printf(b, ",\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"cached_tokens\":%lld",
                      (long long)c->usage.prompt_tokens, (long long)c->usage.completion_tokens,
                      (long long)c->usage.cached_tokens);
    gw_buf_printf(b, ",\"latency_ms\":%.3f", (double)(end_ns - c->t0_ns) / 1e6);
    if (c->ttft_ns)
        gw_buf_printf(b, ",\"ttft_ms\":%.3f", (double)(c->ttft_ns - c->t0_ns) / 1e6);
    gw_buf_printf(b, ",\"bytes_in\":%llu,\"bytes_out\":%llu",
                  (unsigned long long)c->bytes_in, (unsigned long long)c->bytes_out);
    if (c->stream)
        gw_buf_printf(b, ",\"events\":%llu", (unsigned long long)c->events);
    if (c->error_kind) {
        gw_buf_puts(b, ",\"error\":");
        gw_buf_json_str(b, c->error_kind, strlen(c->error_kind));
        if (c->error_msg[0]) {
            gw_buf_puts(b, ",\"error_message\":");
            gw_buf_json_str(b, c->error_msg, strlen(c->error_msg));
        }
    }
    gw_buf_puts(b, "}\n");
    if (b->err) {
        gw_buf_reset(b);
        return;
    }
    if (b->len > 64 * 1024)
        gw_alog_flush(w);
}

static void chat_finalize(struct chat *c)
{
    struct gw_worker *w = c->w;
    uint64_t end = gw_now_ns();
    if (c->up) {
        gw_up_cancel(c->up);
        c->up = NULL;
    }
    if (c->t && c->counted_inflight)
        c->t->wk[w->id].inflight--;
    char status[8];
    snprintf(status, sizeof(status), "%d", c->status ? c->status : 500);
    const char *tier = c->b ? gw_tier_str(c->route.tier) : "none";
    const char *backend = c->b ? c->b->name : "none";
    gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_requests, "chat_completions", tier, backend,
                                  status),
                  1);
    gw_series_observe(gw_metrics_getv(w->metrics, &gw_m_duration, "chat_completions", tier),
                      (double)(end - c->t0_ns) / 1e9);
    gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_inflight), -1);
    if (c->ttft_ns && c->b)
        gw_series_observe(gw_metrics_getv(w->metrics, &gw_m_ttft, tier, backend),
                          (double)(c->ttft_ns - c->t0_ns) / 1e9);
    if (c->usage.reported && c->b) {
        if (c->usage.prompt_tokens > 0)
            gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_tokens, tier, backend, "input"),
                          (double)c->usage.prompt_tokens);
        if (c->usage.completion_tokens > 0)
            gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_tokens, tier, backend, "output"),
                          (double)c->usage.completion_tokens);
        if (c->usage.cached_tokens > 0)
            gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_tokens, tier, backend, "cached_input"),
                          (double)c->usage.cached_tokens);
        if (c->usage.reasoning_tokens > 0)
            gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_tokens, tier, backend, "reasoning"),
                          (double)c->usage.reasoning_tokens);
    }
    alog_write(c, end);
    if (c->req) {
        /* not expected: every path answers first; don't leave it hanging */
        gw_http_req_set_abort(c->req, NULL, NULL);
        gw_http_req_reset(c->req);
    }
    json_decref(c->json);
    free(c->up_body);
    gw_sse_free(&c->sse);
    gw_buf_free(&c->body);
    gw_buf_free(&c->scratch);
    gw_config_unref(c->cfg);
    free(c);
}

/* ---- entry ---- */

void gw_chat_handle(struct gw_worker *w, struct gw_http_req *req)
{
    struct chat *c = gw_calloc(1, sizeof(*c));
    c->w = w;
    c->req = req;
    c->cfg = gw_config_ref(w->cfg);
    c->t0_ns = gw_http_req_start_ns(req);
    struct gw_req_meta *meta = gw_req_meta(w, req);
    snprintf(c->key_name, sizeof(c->key_name), "%s", meta->key);
    snprintf(c->reqid, sizeof(c->reqid), "%s", meta->id);
    meta->self_logged = true;
    gw_usage_init(&c->usage);
    gw_sse_init(&c->sse, 1 << 20);
    gw_buf_init(&c->body, 0);
    gw_buf_init(&c->scratch, 1 << 20);
    gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_inflight), 1);
    gw_http_req_set_abort(req, on_client_abort, c);
    gw_http_req_set_drain(req, on_client_drain, c);

    gw_str body = gw_http_req_body(req);
    c->bytes_in = body.len;
    json_error_t jerr;
    c->json = json_loadb(body.p, body.len, 0, &jerr);
    if (!c->json) {
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "We could not parse the JSON body of your request: %s (line %d, column %d).",
                 jerr.text, jerr.line, jerr.column);
        chat_fail(c, 400, "invalid_request_error", "invalid_json", NULL, msg);
        return;
    }
    const char *param;
    char vbuf[200];
    const char *bad = validate(c->json, &param, vbuf, sizeof(vbuf));
    if (bad) {
        chat_fail(c, 400, "invalid_request_error", NULL, param, bad);
        return;
    }
    const char *model = json_string_value(json_object_get(c->json, "model"));
    snprintf(c->client_model, sizeof(c->client_model), "%s", model);
    c->stream = json_is_true(json_object_get(c->json, "stream"));
    c->client_usage =
        c->stream && json_is_true(json_object_get(json_object_get(c->json, "stream_options"),
                                                  "include_usage"));

    struct gw_route_input in = {c->cfg, gw_str_c(model)};
    if (gw_route_decide(&in, &c->route) < 0) {
        int st = c->route.err_status ? c->route.err_status : 503;
        chat_fail(c, st, st == 404 ? "invalid_request_error" : "server_error",
                  c->route.err_code, st == 404 ? "model" : NULL, c->route.err);
        return;
    }
    c->b = c->route.backend;
    gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_decisions, c->route.stage,
                                  gw_tier_str(c->route.tier)),
                  1);
    c->t = gw_backend_pick(c->b, w->id);
    if (!c->t) {
        char msg[200];
        snprintf(msg, sizeof(msg), "backend %s has no healthy upstream", c->b->name);
        chat_fail(c, 503, "server_error", "no_healthy_backend", NULL, msg);
        return;
    }
    c->b->provider->prepare_request(c->b, c->json, c->stream);
    c->up_body = json_dumps(c->json, JSON_COMPACT);
    if (!c->up_body) {
        chat_fail(c, 500, "server_error", NULL, NULL, "could not serialize the upstream request");
        return;
    }
    c->up_body_len = strlen(c->up_body);

    struct gw_arena *a = gw_http_req_arena(req);
    const char *url = gw_arena_sprintf(a, "%s%s", c->t->url, c->b->provider->chat_path(c->b));
    struct curl_slist *h = c->b->provider->add_headers(c->b, NULL);
    h = curl_slist_append(h, gw_arena_sprintf(a, "x-request-id: %s", c->reqid));
    struct gw_up_opts o = {
        .url = url,
        .method = "POST",
        .headers = h,
        .body = c->up_body,
        .body_len = c->up_body_len,
        .connect_timeout_ms = c->b->connect_timeout_ms,
        .first_byte_timeout_ms = c->b->first_byte_timeout_ms,
        .idle_timeout_ms = c->stream ? c->b->stream_idle_timeout_ms : 0,
        .total_timeout_ms = c->b->request_timeout_ms,
    };
    gw_buf_init(&c->body, c->b->max_response_bytes ? c->b->max_response_bytes : 32u << 20);
    c->t->wk[w->id].inflight++;
    c->counted_inflight = true;
    c->up = gw_up_start(w->upstream, &o, &up_cbs, c);
    if (!c->up)
        chat_fail(c, 500, "server_error", NULL, NULL, "could not start the upstream request");
}
