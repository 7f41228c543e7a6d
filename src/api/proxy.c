/*
 * proxy.c - the model endpoints: POST /v1/chat/completions (OpenAI
 * dialect), POST /v1/messages and /v1/messages/count_tokens (Anthropic
 * dialect). Validate, route, build the upstream request in the backend's
 * dialect (translating when the dialects differ), relay the response whole
 * or event by event, retry and fall back while nothing has reached the
 * client, and finalize in one place (metrics, access log, health, cleanup).
 *
 * Attempts. The router picks a backend; router.fallback adds what to try
 * after it (for auto and tier aliases, not for a pinned model). A failure
 * before the first byte went to the client (connect error, timeout, 408,
 * 429, 5xx, 529, a malformed first event) is retried on the same backend
 * (backend.retry: exponential backoff with jitter, retry-after honoured up
 * to max_backoff), then the next candidate is tried, all within
 * router.deadline. A client error (other 4xx) is answered at once. Once the
 * client has a byte, an upstream failure ends the stream with an error
 * event in the client's dialect. One more thing counts as part of an
 * attempt: when a pooled keep-alive connection turns out to be closed
 * before any response byte, libcurl itself sends the request again once on
 * a new connection (the stale keep-alive race; there is no option to turn
 * it off), so an attempt reaches the upstream at most twice.
 *
 * Streams are relayed as they arrive, never buffered whole. The client's
 * response head is sent with the first upstream event, so a stream that
 * dies before its first event can still be retried. When the client reads
 * slowly its queue passes the high-water mark and the upstream transfer is
 * paused until the queue drains.
 *
 * Usage is always captured: OpenAI-dialect streams ask the upstream for
 * stream_options.include_usage and the usage-only chunk (and the
 * "usage":null members) are dropped again when the client did not ask.
 *
 * Lifetime: struct proxy lives from gw_proxy_handle() to finalize(). The
 * HTTP request may die first (client gone: on_client_abort), after which
 * p->req is NULL and nothing is written.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <jansson.h>

#include "hybridgw/cost.h"
#include "hybridgw/json_check.h"
#include "hybridgw/log.h"
#include "hybridgw/sse.h"
#include "gateway/gateway.h"
#include "provider/provider.h"
#include "router/router.h"
#include "telemetry/trace.h"
#include "gateway/ledger_writer.h"
#include "gateway/budget.h"
#include "translate/translate.h"

#define MAX_CANDIDATES 8
#define MAX_TRACED_ATTEMPTS 8

/* One upstream attempt, for its trace span. */
struct attempt_rec {
    const struct gw_backend_conf *b;
    const char *url;                /* the target's (lives with the config) */
    uint64_t start_unix_ns, end_unix_ns;
    uint8_t span_id[8];
    int status;                     /* upstream HTTP status, 0 none */
    char outcome[24];
};

struct proxy {
    struct gw_worker *w;
    struct gw_http_req *req;        /* NULL once the client is gone */
    struct gw_config *cfg;          /* reference held until finalize */
    enum gw_endpoint ep;
    enum gw_dialect ingress;        /* the client's dialect */
    struct gw_route route;
    const struct gw_backend_conf *cands[MAX_CANDIDATES];
    size_t ncands, cand;            /* candidates, and the one being tried */
    const struct gw_backend_conf *b;   /* current backend */
    struct gw_target *t;            /* current target */
    unsigned tries_on_b;            /* attempts on the current backend */
    unsigned attempts;              /* attempts in all */
    struct gw_up *up;
    uv_timer_t *retry_timer;        /* pending backoff, closed in finalize */
    json_t *json;                   /* the client's request */
    char *up_body;                  /* what we send upstream */
    size_t up_body_len;
    struct gw_sse sse;
    struct gw_xstream *xs;          /* stream translation, when dialects differ */
    struct gw_buf body;             /* non-streamed response / error body */
    struct gw_buf scratch;          /* one rewritten stream event */
    struct gw_buf attempts_log;     /* "backend:outcome,..." for log and headers */
    struct gw_usage usage;
    char *beta;                     /* client's anthropic-beta (copied) */
    char *version;                  /* client's anthropic-version (copied) */
    char reqid[68];
    char client_model[96];
    char key_name[64];
    char key_id[32];                /* a virtual key's id, "" for static keys */
    char team[65];
    char rid[48];                   /* budget reservation, "" none */
    double reserved_usd;            /* what the reservation holds */
    double out_price;               /* USD per output token of the answering backend */
    bool over_budget;               /* the stream's metered spend passed its reservation */
    double reserve_ask;             /* what was asked to be reserved */
    double reserve_in;              /* its input (prompt) part */
    bool reserving;                 /* waiting for the budget thread */
    bool charge;                    /* a virtual key without budgets: its ledger record books
                                     * its cost to the spend totals */
    struct gw_limit_ticket lim;     /* the rate limits' hold, given back in finalize */
    struct gw_limit_view lim_view;  /* for the rate-limit headers */
    bool lim_final;                 /* refused for good (too large): waiting won't help */
    int64_t lim_tokens;             /* tokens charged at admission */
    int64_t lim_now_ms;             /* wall clock of the admission */
    bool finalize_pending;          /* finalize asked while reserving */
    char fallback_from[64];         /* first backend, when another one answered */
    const char *error_kind;         /* for the log; NULL when fine */
    char error_msg[256];
    struct gw_error err;            /* the client's error if no attempt succeeds */
    char retry_after[32];           /* from the upstream that produced err */
    char retry_after_ms[24];        /* our own limiter's, to the millisecond ("": not ours) */
    uint64_t t0_ns;
    uint64_t deadline_ns;
    uint64_t ttft_ns;               /* first event relayed */
    uint64_t bytes_in, bytes_out;
    uint64_t events;
    int status;                     /* status given to the client */
    int up_status;
    bool stream;
    bool client_usage;              /* OpenAI client asked for include_usage */
    bool translate;                 /* upstream dialect differs from the client's */
    bool pinned;                    /* the client named a model: no fallback */
    bool streaming;                 /* client stream head sent */
    bool client_full;               /* client queue over high water: pause upstream */
    bool client_gone;               /* a write to the client failed */
    bool upstream_malformed;        /* an upstream event was not JSON */
    bool have_err;
    bool estimated;                 /* count_tokens answered by estimate */
    bool cost_done;                 /* cost computed (before a non-streamed answer) */
    struct gw_cost_record cost;
    size_t prompt_chars;            /* for usage estimates */
    uint64_t last_event_ns;         /* for the inter-token gap */
    struct gw_series *itl;          /* looked up once per stream */
    /* tracing */
    struct gw_trace_ctx trace;      /* trace id, the client's parent span */
    uint8_t span_id[8];             /* this request's span */
    bool traced;                    /* spans are recorded and exported */
    bool has_parent;
    char *tracestate;               /* forwarded as is */
    uint64_t start_unix_ns;
    int64_t req_max_tokens;         /* request parameters for the span, -1 none */
    double req_temperature;         /* NAN none */
    struct attempt_rec att[MAX_TRACED_ATTEMPTS];
    size_t natt;
};

static void finalize(struct proxy *p);
static void next_attempt(struct proxy *p);
static void log_attempt(struct proxy *p, const char *outcome);
static void add_cost_header(struct proxy *p);
static size_t text_chars(json_t *v);

static const char *ep_route(enum gw_endpoint ep)
{
    switch (ep) {
    case GW_EP_CHAT: return "chat_completions";
    case GW_EP_MESSAGES: return "messages";
    case GW_EP_COUNT_TOKENS: return "count_tokens";
    default: return "unknown";
    }
}

static const char *ep_path(enum gw_endpoint ep)
{
    switch (ep) {
    case GW_EP_MESSAGES: return "/v1/messages";
    case GW_EP_COUNT_TOKENS: return "/v1/messages/count_tokens";
    default: return "/v1/chat/completions";
    }
}

/* ---- responses to the client ---- */

/* A time to wait as OpenAI writes it: "750ms", "59.25s", "1m0s". */
static void go_duration(char *out, size_t size, int64_t ms)
{
    if (ms < 1000)
        snprintf(out, size, "%lldms", (long long)GW_MAX(ms, 0));
    else if (ms < 60000)
        snprintf(out, size, "%gs", (double)ms / 1000.0);
    else
        snprintf(out, size, "%lldm%gs", (long long)(ms / 60000), (double)(ms % 60000) / 1000.0);
}

/* RFC 3339 UTC time ms from the admission, as Anthropic's reset headers. */
static void rfc3339_after(char *out, size_t size, int64_t now_ms, int64_t ms)
{
    time_t t = (time_t)((now_ms + ms + 999) / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* x-ratelimit-* (both dialects) and anthropic-ratelimit-* (Anthropic
 * clients) for a key or team with limits. */
static void add_limit_headers(struct proxy *p)
{
    const struct gw_limit_view *v = &p->lim_view;
    static const char *const what[2] = {"requests", "tokens"};
    static const char *const part[3] = {"limit", "remaining", "reset"};
    int64_t lim[2] = {v->req_limit, v->tok_limit};
    int64_t rem[2] = {v->req_remaining, v->tok_remaining};
    int64_t reset[2] = {v->req_reset_ms, v->tok_reset_ms};
    char name[48], val[3][40];
    for (int i = 0; i < 2; i++) {
        if (lim[i] <= 0)
            continue;
        snprintf(val[0], sizeof(val[0]), "%lld", (long long)lim[i]);
        snprintf(val[1], sizeof(val[1]), "%lld", (long long)rem[i]);
        go_duration(val[2], sizeof(val[2]), reset[i]);
        for (int j = 0; j < 3; j++) {
            snprintf(name, sizeof(name), "x-ratelimit-%s-%s", part[j], what[i]);
            gw_http_resp_header(p->req, name, val[j]);
        }
        if (p->ingress != GW_DIALECT_ANTHROPIC)
            continue;
        rfc3339_after(val[2], sizeof(val[2]), p->lim_now_ms, reset[i]);
        for (int j = 0; j < 3; j++) {
            snprintf(name, sizeof(name), "anthropic-ratelimit-%s-%s", what[i], part[j]);
            gw_http_resp_header(p->req, name, val[j]);
        }
    }
}

static void add_route_headers(struct proxy *p)
{
    struct gw_http_req *r = p->req;
    add_limit_headers(p); /* nothing without a key or team limit */
    if (p->b) {
        gw_http_resp_header(r, "x-hybridgw-route", gw_tier_str(p->b->tier));
        gw_http_resp_header(r, "x-hybridgw-backend", p->b->name);
    }
    if (p->route.reason[0])
        gw_http_resp_header(r, "x-hybridgw-reason", p->route.reason);
    if (p->fallback_from[0])
        gw_http_resp_header(r, "x-hybridgw-fallback-from", p->fallback_from);
    if (p->attempts > 1 && p->attempts_log.len)
        gw_http_resp_header_n(r, "x-hybridgw-attempts", p->attempts_log.data,
                              p->attempts_log.len);
}

static void compute_cost(struct proxy *p);

/* End what the request holds against its key and team, corrected to what
 * it used: its rate-limit counts and its budget reservation (settled to the
 * cost, or released). Called right before the last byte of the response
 * goes out, so a client that sends its next request the moment this one
 * ends (it may land on another worker) finds it ended, not still running
 * or still holding its maximum; finalize calls it too (no response went
 * out, or it already ran: then it does nothing). */
static void end_holds(struct proxy *p)
{
    struct gw_gateway *gw = p->w->gw;
    if (p->xs)
        gw_xstream_usage(p->xs, &p->usage);
    /* every answered request gets a cost record; failures cost nothing
     * billable that we can know of */
    if (p->b && !p->estimated && (p->status == 200 || p->streaming))
        compute_cost(p);
    if (p->lim.e[0] || p->lim.e[1]) {
        /* what never reached an upstream's answer used nothing */
        int64_t used = 0;
        if (p->usage.reported && !p->estimated)
            used = GW_MAX(p->usage.prompt_tokens, 0) + GW_MAX(p->usage.completion_tokens, 0);
        else if (p->status == 200 || p->streaming)
            used = p->lim_tokens;
        gw_limits_finish(gw->limits, &p->lim, used);
    }
    if (p->rid[0] && gw->budget) {
        if (p->cost_done && p->cost.known)
            gw_budget_settle(gw->budget, p->rid, p->cost.usd);
        else
            gw_budget_release(gw->budget, p->rid);
        p->rid[0] = '\0';
    }
}

/* Send an error in the client's dialect (before any byte of the response
 * was sent) and finish the request. */
static void fail(struct proxy *p, int status, const char *type, const char *code,
                 const char *param, const char *msg)
{
    p->status = status;
    if (!p->error_kind)
        p->error_kind = code ? code : type;
    snprintf(p->error_msg, sizeof(p->error_msg), "%s", msg);
    gw_utf8_trim(p->error_msg);
    if (p->req) {
        add_route_headers(p);
        if (p->retry_after[0] && (status == 429 || status == 503))
            gw_http_resp_header(p->req, "retry-after", p->retry_after);
        if (p->retry_after_ms[0] && status == 429)
            gw_http_resp_header(p->req, "retry-after-ms", p->retry_after_ms);
        if (p->lim_final)
            /* waiting won't make it fit: SDKs must not retry */
            gw_http_resp_header(p->req, "x-should-retry", "false");
        end_holds(p);
        if (p->ingress == GW_DIALECT_ANTHROPIC) {
            char *body = gw_xlate_anthropic_error_body(status, msg);
            gw_http_resp_send(p->req, status, "application/json", body, strlen(body));
            p->bytes_out += strlen(body);
            free(body);
        } else {
            if ((status >= 500 || status == 429) && !p->lim_final)
                /* the gateway already retried what it could; a client
                 * retry storm helps nobody (OpenAI SDKs honour this). Our
                 * own rate limit is different: it says when to come back */
                gw_http_resp_header(p->req, "x-should-retry",
                                    status == 503 || p->retry_after_ms[0] ? "true" : "false");
            gw_api_send_error(p->req, status, type, code, param, msg);
            p->bytes_out += strlen(msg) + 80;
        }
        p->req = NULL;
    }
    finalize(p);
}

static void fail_with(struct proxy *p, const struct gw_error *e)
{
    fail(p, e->status, e->type ? e->type : "upstream_error", e->code, e->param, e->message);
}

/* Write one client event. Returns 0, or -1 when the client is gone. A full
 * client queue only sets client_full: the rest of the upstream piece is
 * still relayed (at most one curl buffer), then the upstream pauses. */
static int write_client_event(struct proxy *p, const char *event, gw_str data)
{
    gw_str parts[5];
    size_t n = 0;
    if (event) {
        parts[n++] = GW_STR("event: ");
        parts[n++] = gw_str_c(event);
        parts[n++] = GW_STR("\ndata: ");
    } else {
        parts[n++] = GW_STR("data: ");
    }
    parts[n++] = data;
    parts[n++] = GW_STR("\n\n");
    for (size_t i = 0; i < n; i++)
        p->bytes_out += parts[i].len;
    int rc = gw_http_resp_writev(p->req, parts, n);
    if (rc < 0) {
        p->client_gone = true;
        return -1;
    }
    if (rc > 0)
        p->client_full = true;
    return 0;
}

static void start_client_stream(struct proxy *p)
{
    if (p->streaming || !p->req)
        return;
    p->streaming = true;
    /* this attempt answers: log it before its head goes out, and forget
     * the failures of earlier attempts (they are in attempt_log) */
    log_attempt(p, "ok");
    p->error_kind = NULL;
    p->error_msg[0] = '\0';
    /* no retry or fallback from here on: what they needed can go, so a
     * long stream holds only what relaying takes */
    json_decref(p->json);
    p->json = NULL;
    gw_buf_free(&p->body); /* (up_body stays: curl may still hold it) */
    p->status = 200;
    add_route_headers(p);
    gw_http_resp_header(p->req, "Cache-Control", "no-cache");
    gw_http_resp_header(p->req, "X-Accel-Buffering", "no");
    gw_http_resp_start(p->req, 200, "text/event-stream; charset=utf-8");
}

/* The upstream failed after the client's stream began: end it with an
 * error event of the client's dialect (the SDKs raise on it). */
static void stream_fail(struct proxy *p, const char *code, const char *msg)
{
    if (!p->req)
        return;
    if (p->xs) {
        gw_xstream_finish(p->xs, msg, NULL, NULL); /* state only; we write below */
    }
    struct gw_buf b;
    gw_buf_init(&b, 0);
    if (p->ingress == GW_DIALECT_ANTHROPIC) {
        gw_buf_puts(&b, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":");
        gw_buf_json_str(&b, msg, strlen(msg));
        gw_buf_puts(&b, "}}");
        write_client_event(p, "error", (gw_str){b.data, b.len});
    } else {
        gw_buf_puts(&b, "{\"error\":{\"message\":");
        gw_buf_json_str(&b, msg, strlen(msg));
        gw_buf_printf(&b, ",\"type\":\"upstream_error\",\"param\":null,\"code\":\"%s\"}}", code);
        write_client_event(p, NULL, (gw_str){b.data, b.len});
    }
    gw_buf_free(&b);
    end_holds(p);
    gw_http_resp_end(p->req);
    p->req = NULL;
}

/* ---- validation ---- */

static const char *const oai_roles[] = {"system", "developer", "user", "assistant", "tool",
                                        "function"};

/* The fields the gateway relies on; the upstream validates the rest.
 * NULL when fine, else a message with *param set. */
static const char *validate_openai(json_t *j, const char **param, char *buf, size_t buflen)
{
    *param = NULL;
    if (!json_is_object(j))
        return "The request body must be a JSON object.";
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
        const char *rs = json_string_value(json_object_get(m, "role"));
        bool ok = false;
        for (size_t k = 0; rs && k < GW_ARRAY_LEN(oai_roles); k++)
            ok = ok || strcmp(rs, oai_roles[k]) == 0;
        if (!json_is_object(m) || !ok) {
            snprintf(buf, buflen,
                     "Invalid 'messages[%zu]': expected an object with a 'role' of system, "
                     "developer, user, assistant or tool.",
                     i);
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

static const char *validate_anthropic(json_t *j, bool count_tokens, const char **param,
                                      char *buf, size_t buflen)
{
    *param = NULL;
    if (!json_is_object(j))
        return "The request body must be a JSON object.";
    json_t *model = json_object_get(j, "model");
    *param = "model";
    if (!json_is_string(model) || json_string_length(model) == 0)
        return "model: Field required (a non-empty string)";
    json_t *mt = json_object_get(j, "max_tokens");
    *param = "max_tokens";
    if (!count_tokens && !mt)
        return "max_tokens: Field required";
    if (mt && (!json_is_integer(mt) || json_integer_value(mt) < 0))
        return "max_tokens: Input should be a non-negative integer";
    json_t *msgs = json_object_get(j, "messages");
    *param = "messages";
    if (!json_is_array(msgs))
        return "messages: Field required (an array)";
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *rs = json_string_value(json_object_get(m, "role"));
        if (!json_is_object(m) || !rs || (strcmp(rs, "user") && strcmp(rs, "assistant"))) {
            snprintf(buf, buflen,
                     "messages.%zu.role: Input should be 'user' or 'assistant'", i);
            return buf;
        }
    }
    json_t *stream = json_object_get(j, "stream");
    *param = "stream";
    if (stream && !json_is_boolean(stream))
        return "stream: Input should be a valid boolean";
    *param = NULL;
    return NULL;
}

/* ---- usage in relayed bytes ---- */

/* Where the value of the last `"key":` in p starts (after white space), or
 * NULL. A raw quote can't occur inside a JSON string (it is escaped there),
 * so a match is a real key; upstreams put usage last. */
static const char *find_key_value(const char *s, size_t n, const char *key)
{
    char pat[32];
    int pl = snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *hit = NULL;
    for (const char *q = s; (q = memmem(q, n - (size_t)(q - s), pat, (size_t)pl)); q += pl)
        hit = q;
    if (!hit)
        return NULL;
    const char *v = hit + pl;
    while (v < s + n && (*v == ' ' || *v == '\n' || *v == '\t' || *v == '\r'))
        v++;
    if (v >= s + n || *v != ':')
        return NULL;
    v++;
    while (v < s + n && (*v == ' ' || *v == '\n' || *v == '\t' || *v == '\r'))
        v++;
    return v < s + n ? v : NULL;
}

/* Parse just the "usage" object found at v, not the whole body. */
static void scan_usage_at(struct proxy *p, const char *v, const char *end)
{
    if (!v || *v != '{')
        return;
    json_t *u = json_loadb(v, (size_t)(end - v), JSON_DISABLE_EOF_CHECK, NULL);
    if (u) {
        p->b->provider->read_usage(u, &p->usage);
        json_decref(u);
    }
}

static void scan_usage(struct proxy *p, const char *s, size_t n)
{
    scan_usage_at(p, find_key_value(s, n, "usage"), s + n);
}

/* ---- relaying stream events ---- */

static int emit_to_client(void *ud, const char *event, const char *data, size_t len)
{
    struct proxy *p = ud;
    if (!p->req)
        return -1;
    return write_client_event(p, event, (gw_str){data, len});
}

/* OpenAI upstream -> OpenAI client: as is, but usage the client did not
 * ask for is taken out. */
static int relay_openai(struct proxy *p, gw_str d)
{
    const char *uv = find_key_value(d.p, d.len, "usage");
    if (uv && !p->client_usage && d.len - (size_t)(uv - d.p) >= 4 && memcmp(uv, "null", 4) == 0) {
        /* "usage":null is on every chunk once include_usage is on */
        const char *key = uv;
        while (key > d.p && *key != '"')
            key--;                      /* the key's closing quote */
        key = key > d.p ? key - 1 : key;
        while (key > d.p && *key != '"')
            key--;                      /* its opening quote */
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
        gw_buf_reset(&p->scratch);
        gw_buf_append(&p->scratch, d.p, (size_t)(from - d.p));
        gw_buf_append(&p->scratch, to, (size_t)(d.p + d.len - to));
        if (!p->scratch.err)
            d = (gw_str){p->scratch.data, p->scratch.len};
    } else if (uv && *uv == '{') {
        scan_usage_at(p, uv, d.p + d.len);
        /* the usage-only chunk: choices is an empty array */
        const char *cv = find_key_value(d.p, d.len, "choices");
        if (!p->client_usage && cv && *cv == '[') {
            cv++;
            while (cv < d.p + d.len && (*cv == ' ' || *cv == '\n' || *cv == '\t' || *cv == '\r'))
                cv++;
            if (cv < d.p + d.len && *cv == ']')
                return 0;
        }
    }
    return write_client_event(p, NULL, d);
}

/* Anthropic upstream -> Anthropic client: as is; usage read from the two
 * events that carry it. */
static int relay_anthropic(struct proxy *p, gw_str event, gw_str d)
{
    char name[48];
    if (!event.p || event.len == 0 || event.len >= sizeof(name)) {
        /* an unnamed event: take the name from its JSON type */
        json_t *j = json_loadb(d.p, d.len, 0, NULL);
        const char *t = json_string_value(json_object_get(j, "type"));
        snprintf(name, sizeof(name), "%s", t ? t : "message");
        json_decref(j);
    } else {
        memcpy(name, event.p, event.len);
        name[event.len] = '\0';
    }
    if (strcmp(name, "message_start") == 0 || strcmp(name, "message_delta") == 0) {
        json_t *j = json_loadb(d.p, d.len, 0, NULL);
        if (j)
            p->b->provider->read_usage(j, &p->usage);
        json_decref(j);
    }
    return write_client_event(p, name, d);
}

static int on_sse_event(const struct gw_sse_event *ev, void *ud)
{
    struct proxy *p = ud;
    gw_str d = ev->data;
    p->events++;
    /* about one event a token; a few events (role, finish, usage, [DONE])
     * carry none, hence the slack */
    if (p->rid[0] && p->out_price > 0 && p->streaming && p->events > 8 &&
        p->reserve_in + (double)(p->events - 8) * p->out_price > p->reserved_usd) {
        /* metered spend (an event is about a token) passed what the budget
         * reserved: upstreams without max_tokens can run long */
        p->over_budget = true;
        return -1;
    }
    bool done = gw_str_eq_c(d, "[DONE]");
    if (!done && !gw_json_valid(d.p, d.len)) {
        /* relaying it would make the client's SDK fail on a parse error:
         * end the stream (or retry, if nothing was sent) instead */
        p->upstream_malformed = true;
        return -1;
    }
    if (!p->streaming)
        start_client_stream(p);
    if (!p->req)
        return -1;
    if (!done) {
        uint64_t now = gw_now_ns();
        if (!p->ttft_ns) {
            p->ttft_ns = now;
        } else {
            if (!p->itl)
                p->itl = gw_metrics_getv(p->w->metrics, &gw_m_itl, gw_tier_str(p->b->tier),
                                         p->b->name);
            gw_series_observe(p->itl, (double)(now - p->last_event_ns) / 1e9);
        }
        p->last_event_ns = now;
    }
    if (p->xs) {
        int rc = gw_xstream_feed(p->xs, ev->event, d, emit_to_client, p);
        if (rc == GW_EPARSE) {
            p->upstream_malformed = true;
            return -1;
        }
        return rc ? -1 : 0;
    }
    if (p->ingress == GW_DIALECT_ANTHROPIC)
        return relay_anthropic(p, ev->event, d);
    return relay_openai(p, d);
}

/* ---- upstream callbacks ---- */

static void on_up_head(struct gw_up *u, int status, void *ud)
{
    struct proxy *p = ud;
    p->up_status = status;
}

static bool up_is_stream(struct proxy *p, struct gw_up *u)
{
    if (!p->stream || p->up_status != 200)
        return false;
    gw_str ct = gw_up_header(u, "content-type");
    return !ct.p || memmem(ct.p, ct.len, "text/event-stream", 17);
}

static int on_up_data(struct gw_up *u, const char *s, size_t n, void *ud)
{
    struct proxy *p = ud;
    if (!p->req)
        return -1;
    if (up_is_stream(p, u)) {
        p->client_full = false;
        int rc = gw_sse_feed(&p->sse, s, n, on_sse_event, p);
        if (rc == GW_ETOOBIG) {
            p->error_kind = "event_too_big";
            return -1;
        }
        if (rc < 0 || p->client_gone)
            return -1;
        return p->client_full ? 1 : 0;
    }
    if (gw_buf_append(&p->body, s, n))
        return -1;
    return 0;
}

static void count_error(struct proxy *p, const char *kind)
{
    gw_series_inc(gw_metrics_getv(p->w->metrics, &gw_m_upstream_errors, p->b->name, kind), 1);
}

static void log_attempt(struct proxy *p, const char *outcome)
{
    if (p->natt > 0 && p->att[p->natt - 1].end_unix_ns == 0) {
        struct attempt_rec *a = &p->att[p->natt - 1];
        a->end_unix_ns = gw_wall_ns();
        a->status = p->up_status;
        snprintf(a->outcome, sizeof(a->outcome), "%s", outcome);
    }
    if (p->attempts_log.len)
        gw_buf_append(&p->attempts_log, ",", 1);
    gw_buf_printf(&p->attempts_log, "%s:%s", p->b->name, outcome);
}

static void on_retry_timer(uv_timer_t *t)
{
    struct proxy *p = t->data;
    next_attempt(p);
}

static void retry_timer_closed(uv_handle_t *h)
{
    free(h);
}

/* An attempt failed before anything reached the client. e is the error
 * the client gets if nothing else works; retryable says whether trying
 * again (here or elsewhere) can help. */
static void attempt_failed(struct proxy *p, const char *kind, bool retryable,
                           const struct gw_error *e, const char *retry_after)
{
    log_attempt(p, kind);
    p->err = *e;
    p->have_err = true;
    snprintf(p->retry_after, sizeof(p->retry_after), "%s", retry_after ? retry_after : "");
    p->error_kind = e->code ? e->code : kind;
    if (!p->req) {
        finalize(p);
        return;
    }
    uint64_t now = gw_now_ns();
    if (!retryable || now >= p->deadline_ns) {
        fail_with(p, e);
        return;
    }
    const struct gw_backend_conf *b = p->b;
    uint64_t delay_ms = 0;
    bool same = p->tries_on_b <= b->retry_attempts;
    if (same) {
        /* exponential backoff with jitter in [50%, 100%] */
        double base = (double)b->retry_backoff_ms * pow(2.0, (double)(p->tries_on_b - 1));
        if (base > (double)b->retry_max_backoff_ms)
            base = (double)b->retry_max_backoff_ms;
        uint64_t r;
        gw_random_bytes(&r, sizeof(r));
        delay_ms = (uint64_t)(base * (0.5 + 0.5 * (double)(r >> 11) / 9007199254740992.0));
        if (retry_after && retry_after[0]) {
            char *end;
            double ra = strtod(retry_after, &end);
            if (end != retry_after && ra >= 0) {
                uint64_t ra_ms = (uint64_t)(ra * 1000);
                if (ra_ms > b->retry_max_backoff_ms)
                    same = false; /* it wants a longer rest than we wait: move on */
                else if (ra_ms > delay_ms)
                    delay_ms = ra_ms;
            }
        }
        if (now + delay_ms * 1000000ull >= p->deadline_ns)
            same = false;
    }
    if (!same) {
        p->cand++;
        p->tries_on_b = 0;
        delay_ms = 0;
        if (p->cand >= p->ncands) {
            fail_with(p, e);
            return;
        }
        if (!p->fallback_from[0])
            snprintf(p->fallback_from, sizeof(p->fallback_from), "%s", p->cands[0]->name);
        gw_series_inc(gw_metrics_getv(p->w->metrics, &gw_m_fallbacks, b->name,
                                      p->cands[p->cand]->name, kind),
                      1);
        gw_log_info("%s: %s failed (%s); falling back to %s", p->reqid, b->name, kind,
                    p->cands[p->cand]->name);
    } else {
        gw_series_inc(gw_metrics_getv(p->w->metrics, &gw_m_retries, b->name, kind), 1);
    }
    if (delay_ms == 0) {
        next_attempt(p);
        return;
    }
    if (!p->retry_timer) {
        p->retry_timer = gw_malloc(sizeof(*p->retry_timer));
        uv_timer_init(&p->w->loop, p->retry_timer);
        p->retry_timer->data = p;
    }
    uv_timer_start(p->retry_timer, on_retry_timer, delay_ms, 0);
}

static bool status_retryable(int st)
{
    return st == 408 || st == 429 || st >= 500 || st == 0;
}

/* Usage for the cost record: what the upstream reported, else an estimate
 * (marked) from the prompt's characters and what was relayed. */
static void compute_cost(struct proxy *p)
{
    if (p->cost_done || !p->b)
        return;
    p->cost_done = true;
    bool estimated = false;
    if (!p->usage.reported) {
        double cpt = p->b->chars_per_token > 0 ? p->b->chars_per_token : 3.0;
        p->usage.prompt_tokens = (int64_t)ceil((double)p->prompt_chars / cpt);
        /* a stream event is about one token; a body about 4 bytes a token */
        p->usage.completion_tokens = p->stream ? (int64_t)p->events
                                               : (int64_t)(p->body.len / 4);
        p->usage.cached_tokens = p->usage.cache_write_tokens = p->usage.reasoning_tokens = 0;
        estimated = true;
    }
    gw_cost_compute(p->cfg, p->b, p->t, &p->usage, estimated, &p->cost);
}

/* Deliver a whole (non-streamed) 2xx upstream response. */
static void deliver_body(struct proxy *p)
{
    const char *s = p->body.data ? p->body.data : "";
    size_t n = p->body.len;
    p->status = 200;
    if (!p->translate) {
        scan_usage(p, s, n);
        compute_cost(p);
        add_cost_header(p);
        add_route_headers(p);
        end_holds(p);
        gw_http_resp_send(p->req, 200, "application/json", s, n);
        p->bytes_out += n;
        p->req = NULL;
        finalize(p);
        return;
    }
    json_t *j = json_loadb(s, n, 0, NULL);
    struct gw_xlate_err xe;
    memset(&xe, 0, sizeof(xe));
    json_t *out = NULL;
    if (j)
        out = p->ingress == GW_DIALECT_OPENAI
                  ? gw_xlate_resp_anthropic_to_openai(j, p->b->model, &p->usage, &xe)
                  : gw_xlate_resp_openai_to_anthropic(j, p->b->model, &p->usage, &xe);
    json_decref(j);
    char *dump = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    if (!dump) {
        struct gw_error e = {.status = 502, .type = "upstream_error", .code = "upstream_invalid"};
        snprintf(e.message, sizeof(e.message), "backend %s returned a response that could not "
                 "be translated: %s", p->b->name, xe.message[0] ? xe.message : "not JSON");
        gw_target_report(p->t, p->b, false);
        count_error(p, "invalid_response");
        attempt_failed(p, "invalid_response", true, &e, NULL);
        return;
    }
    compute_cost(p);
    add_cost_header(p);
    add_route_headers(p);
    end_holds(p);
    gw_http_resp_send(p->req, 200, "application/json", dump, strlen(dump));
    p->bytes_out += strlen(dump);
    free(dump);
    p->req = NULL;
    finalize(p);
}

static void add_cost_header(struct proxy *p)
{
    if (!p->cost.known || !p->req)
        return;
    char v[48];
    snprintf(v, sizeof(v), "%.8f", p->cost.usd);
    gw_http_resp_header(p->req, "x-hybridgw-cost-usd", v);
}

static void upstream_error_status(struct proxy *p, struct gw_up *u, int st)
{
    struct gw_error e;
    memset(&e, 0, sizeof(e));
    p->b->provider->map_error(p->b, st, p->body.data, p->body.len, &e);
    if (p->ingress == GW_DIALECT_ANTHROPIC && st < 500 && st != 429 && st != 401 &&
        st != 403 && st != 404) {
        /* a client error from the upstream: keep the upstream's status */
        e.status = st;
    }
    char ra[32] = "";
    gw_str h = gw_up_header(u, "retry-after");
    if (h.p && h.len < sizeof(ra)) {
        memcpy(ra, h.p, h.len);
        ra[h.len] = '\0';
    }
    char kind[24];
    snprintf(kind, sizeof(kind), "status_%d", st);
    bool retryable = status_retryable(st);
    if (retryable)
        count_error(p, st == 429 ? "status_429" : "status_5xx");
    /* a 4xx (429 included: busy, not broken) says the upstream works */
    gw_target_report(p->t, p->b, st < 500);
    attempt_failed(p, kind, retryable, &e, ra);
}

static void on_up_done(struct gw_up *u, const char *err, void *ud)
{
    struct proxy *p = ud;
    p->up = NULL;
    if (p->t) {
        p->t->wk[p->w->id].inflight--; /* p->t stays: the reports below name it */
    }
    if (!p->req) {
        finalize(p);
        return;
    }
    if (p->client_gone) {
        /* we stopped the transfer because the client went away */
        if (!p->streaming)
            p->status = 499;
        p->error_kind = "client_closed";
        snprintf(p->error_msg, sizeof(p->error_msg), "client closed the connection");
        finalize(p); /* resets the dead connection */
        return;
    }
    if (p->over_budget) {
        p->error_kind = "budget_exceeded";
        snprintf(p->error_msg, sizeof(p->error_msg),
                 "the stream reached the budget reserved for it (%.6g USD)", p->reserved_usd);
        gw_series_inc(gw_metrics_getv(p->w->metrics, &gw_m_budget, "stream_cut"), 1);
        stream_fail(p, "budget_exceeded", p->error_msg);
        finalize(p);
        return;
    }
    if (p->upstream_malformed) {
        count_error(p, "malformed");
        gw_target_report(p->t, p->b, false);
        char msg[200];
        snprintf(msg, sizeof(msg), "backend %s sent a stream event that is not valid JSON",
                 p->b->name);
        if (p->streaming) {
            p->error_kind = "upstream_malformed";
            snprintf(p->error_msg, sizeof(p->error_msg), "%s", msg);
            stream_fail(p, "upstream_malformed", msg);
            finalize(p);
            return;
        }
        struct gw_error e = {.status = 502, .type = "upstream_error", .code = "upstream_malformed"};
        snprintf(e.message, sizeof(e.message), "%s", msg);
        p->upstream_malformed = false;
        attempt_failed(p, "malformed", true, &e, NULL);
        return;
    }
    if (err) {
        const char *kind = gw_up_err_kind(err);
        if (err == gw_up_err_too_big && p->error_kind && strcmp(p->error_kind, "event_too_big") == 0)
            kind = "event_too_big";
        count_error(p, kind);
        if (err != gw_up_err_too_big)
            gw_target_report(p->t, p->b, false);
        char msg[200];
        snprintf(msg, sizeof(msg), "backend %s: %s", p->b->name, err);
        if (p->streaming) {
            p->error_kind = kind;
            snprintf(p->error_msg, sizeof(p->error_msg), "%s", msg);
            stream_fail(p, strcmp(kind, "stalled") == 0 ? "upstream_stalled" : "upstream_error",
                        msg);
            finalize(p);
            return;
        }
        bool timeout = strcmp(kind, "timeout") == 0;
        struct gw_error e = {.status = timeout ? 504 : 502, .type = "upstream_error",
                             .code = timeout ? "upstream_timeout" : "upstream_error"};
        snprintf(e.message, sizeof(e.message), "%s", msg);
        attempt_failed(p, kind, err != gw_up_err_too_big, &e, NULL);
        return;
    }
    int st = p->up_status;
    if (up_is_stream(p, u)) {
        gw_target_report(p->t, p->b, true);
        if (!p->streaming)
            start_client_stream(p); /* an empty stream: still a proper one */
        if (gw_sse_finish(&p->sse))
            gw_log_debug("%s: upstream stream ended inside an event; dropped it", p->reqid);
        if (p->xs && p->req)
            gw_xstream_finish(p->xs, NULL, emit_to_client, p);
        if (p->req) {
            end_holds(p);
            gw_http_resp_end(p->req);
            p->req = NULL;
        }
        finalize(p);
        return;
    }
    if (st >= 200 && st < 300) {
        gw_target_report(p->t, p->b, true);
        log_attempt(p, "ok");
        p->error_kind = NULL;
        p->error_msg[0] = '\0';
        deliver_body(p);
        return;
    }
    upstream_error_status(p, u, st);
}

static void on_client_abort(struct gw_http_req *req, void *ud)
{
    struct proxy *p = ud;
    p->req = NULL;
    if (!p->streaming)
        p->status = 499;
    p->error_kind = "client_closed";
    snprintf(p->error_msg, sizeof(p->error_msg), "client closed the connection");
    if (p->up) {
        /* cancelling closes the upstream connection: vLLM aborts the
         * generation when its client goes away */
        gw_up_cancel(p->up);
        p->up = NULL;
        if (p->t)
            p->t->wk[p->w->id].inflight--;
    }
    finalize(p);
}

static void on_client_drain(struct gw_http_req *req, void *ud)
{
    struct proxy *p = ud;
    if (p->up)
        gw_up_resume(p->up);
}

static const struct gw_up_callbacks up_cbs = {on_up_head, on_up_data, on_up_done};

/* ---- attempts ---- */

/* The request body for backend b, in its dialect. */
static char *build_body(struct proxy *p, const struct gw_backend_conf *b, struct gw_error *e)
{
    json_t *j;
    bool translate = b->provider->dialect != p->ingress && p->ep != GW_EP_COUNT_TOKENS;
    if (!translate) {
        /* in place: what prepare_request changes (model, usage in streams)
         * is set again for every attempt, and the translators ignore it */
        j = json_incref(p->json);
    } else {
        struct gw_xlate_opts o = {b->model, (int64_t)b->default_max_tokens, p->stream};
        struct gw_xlate_err xe;
        memset(&xe, 0, sizeof(xe));
        j = p->ingress == GW_DIALECT_OPENAI ? gw_xlate_req_openai_to_anthropic(p->json, &o, &xe)
                                            : gw_xlate_req_anthropic_to_openai(p->json, &o, &xe);
        if (!j) {
            e->status = xe.status ? xe.status : 400;
            e->type = xe.type ? xe.type : "invalid_request_error";
            e->param = xe.param;
            e->code = NULL;
            snprintf(e->message, sizeof(e->message), "%s", xe.message);
            return NULL;
        }
    }
    if (p->ep != GW_EP_COUNT_TOKENS)
        b->provider->prepare_request(b, j, p->stream);
    if (p->rid[0] && p->req_max_tokens < 0 && b->provider->dialect == GW_DIALECT_OPENAI &&
        p->ep != GW_EP_COUNT_TOKENS) {
        /* the reservation assumed default_max_tokens: hold the upstream to it
         * (Anthropic requests always carry max_tokens) */
        json_object_set_new(j, strcmp(b->provider->name, "openai") == 0 ? "max_completion_tokens"
                                                                       : "max_tokens",
                            json_integer((json_int_t)b->default_max_tokens));
    }
    else
        json_object_set_new(j, "model", json_string(b->model));
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s) {
        e->status = 500;
        e->type = "server_error";
        snprintf(e->message, sizeof(e->message), "could not serialize the upstream request");
    }
    return s;
}

static void next_attempt(struct proxy *p)
{
    struct gw_worker *w = p->w;
    while (p->cand < p->ncands) {
        const struct gw_backend_conf *b = p->cands[p->cand];
        struct gw_target *t = gw_backend_pick(b, w->id);
        if (!t) {
            /* nothing healthy there (or its circuit is open): next one */
            p->b = b;
            log_attempt(p, "unavailable");
            struct gw_error e = {.status = 503, .type = "server_error",
                                 .code = "no_healthy_backend"};
            snprintf(e.message, sizeof(e.message),
                     "backend %s has no healthy upstream (down or circuit open)", b->name);
            if (!p->have_err) {
                /* an upstream's own error says more; keep that one */
                p->err = e;
                p->have_err = true;
            }
            p->cand++;
            p->tries_on_b = 0;
            if (p->cand < p->ncands && !p->fallback_from[0])
                snprintf(p->fallback_from, sizeof(p->fallback_from), "%s", b->name);
            continue;
        }
        p->b = b;
        p->t = t;
        p->tries_on_b++;
        p->attempts++;
        p->translate = b->provider->dialect != p->ingress && p->ep != GW_EP_COUNT_TOKENS;
        struct gw_error e;
        memset(&e, 0, sizeof(e));
        free(p->up_body);
        p->up_body = build_body(p, b, &e);
        if (!p->up_body) {
            fail_with(p, &e); /* the request can't be expressed for it */
            return;
        }
        p->up_body_len = strlen(p->up_body);
        /* fresh per-attempt state */
        gw_buf_reset(&p->body);
        gw_sse_free(&p->sse);
        gw_sse_init(&p->sse, 1 << 20);
        if (p->xs) {
            gw_xstream_free(p->xs);
            p->xs = NULL;
        }
        if (p->translate && p->stream)
            p->xs = gw_xstream_new(p->ingress == GW_DIALECT_OPENAI
                                       ? GW_XSTREAM_ANTHROPIC_TO_OPENAI
                                       : GW_XSTREAM_OPENAI_TO_ANTHROPIC,
                                   b->model, p->client_usage);
        p->up_status = 0;
        gw_usage_init(&p->usage);

        char url[1200];
        const char *path = p->ep == GW_EP_COUNT_TOKENS ? "/v1/messages/count_tokens"
                                                       : b->provider->chat_path(b);
        /* a base URL given with its /v1 (as the vendor SDKs take it) */
        size_t ul = strlen(t->url);
        if (ul >= 3 && strcmp(t->url + ul - 3, "/v1") == 0 && strncmp(path, "/v1/", 4) == 0)
            path += 3;
        snprintf(url, sizeof(url), "%s%s", t->url, path);
        struct gw_up_hints hints = {gw_str_c(p->beta), gw_str_c(p->version)};
        struct curl_slist *h = b->provider->add_headers(b, NULL, &hints);
        char idh[96];
        snprintf(idh, sizeof(idh), "x-request-id: %s", p->reqid);
        h = curl_slist_append(h, idh);
        /* W3C trace context to the upstream: our attempt span is its parent
         * (vLLM joins the trace when started with --otlp-traces-endpoint) */
        if (p->traced || p->has_parent) {
            uint8_t sid[8];
            if (p->traced && p->natt < MAX_TRACED_ATTEMPTS) {
                struct attempt_rec *a = &p->att[p->natt++];
                memset(a, 0, sizeof(*a));
                a->b = b;
                a->url = t->url;
                a->start_unix_ns = gw_wall_ns();
                gw_trace_new_id(a->span_id, 8);
                memcpy(sid, a->span_id, 8);
            } else if (p->traced) {
                gw_trace_new_id(sid, 8);
            } else {
                memcpy(sid, p->trace.span_id, 8); /* not ours to record: pass through */
            }
            char tp[80];
            memcpy(tp, "traceparent: ", 13);
            gw_traceparent_format(p->trace.trace_id, sid, p->traced ? 1 : p->trace.flags,
                                  tp + 13);
            h = curl_slist_append(h, tp);
            if (p->tracestate) {
                char ts[600];
                snprintf(ts, sizeof(ts), "tracestate: %s", p->tracestate);
                h = curl_slist_append(h, ts);
            }
        }
        uint64_t left_ms = (p->deadline_ns - gw_now_ns()) / 1000000ull;
        struct gw_up_opts o = {
            .url = url,
            .method = "POST",
            .headers = h,
            .body = p->up_body,
            .body_len = p->up_body_len,
            .connect_timeout_ms = GW_MIN(b->connect_timeout_ms, GW_MAX(left_ms, 1)),
            .first_byte_timeout_ms = GW_MIN(b->first_byte_timeout_ms, GW_MAX(left_ms, 1)),
            .idle_timeout_ms = p->stream ? b->stream_idle_timeout_ms : 0,
            .total_timeout_ms = b->request_timeout_ms,
            .buffer_size = p->stream ? 2048 : 16384,
        };
        uint64_t cap = b->max_response_bytes ? b->max_response_bytes : 32u << 20;
        p->body.cap = cap;
        t->wk[w->id].inflight++;
        p->up = gw_up_start(w->upstream, &o, &up_cbs, p);
        if (!p->up) {
            t->wk[w->id].inflight--;
            fail(p, 500, "server_error", NULL, NULL, "could not start the upstream request");
        }
        return;
    }
    if (p->have_err)
        fail_with(p, &p->err);
    else
        fail(p, 503, "server_error", "no_healthy_backend", NULL, "no backend to try");
}

/* The route's backend first, then router.fallback for its tier (tier
 * names resolve to that tier's first healthy backend). */
static void build_candidates(struct proxy *p)
{
    const struct gw_config *cfg = p->cfg;
    p->cands[p->ncands++] = p->route.backend;
    if (p->pinned)
        return;
    enum gw_tier t = p->route.tier;
    for (size_t i = 0; i < cfg->nfallback[t] && p->ncands < MAX_CANDIDATES; i++) {
        const char *n = cfg->fallback[t][i];
        const struct gw_backend_conf *b = NULL;
        int tier = gw_tier_parse(n);
        if (tier >= 0) {
            /* every backend of that tier, in config order */
            for (size_t k = 0; k < cfg->nbackends && p->ncands < MAX_CANDIDATES; k++) {
                const struct gw_backend_conf *x = &cfg->backends[k];
                bool dup = false;
                for (size_t j = 0; j < p->ncands; j++)
                    dup = dup || p->cands[j] == x;
                if (x->tier == (enum gw_tier)tier && !dup)
                    p->cands[p->ncands++] = x;
            }
            continue;
        }
        b = gw_config_backend(cfg, n);
        bool dup = false;
        for (size_t j = 0; b && j < p->ncands; j++)
            dup = dup || p->cands[j] == b;
        if (b && !dup)
            p->cands[p->ncands++] = b;
    }
}

/* ---- finalize: the one place a request ends ---- */

static void alog_write(struct proxy *p, uint64_t end_ns)
{
    struct gw_worker *w = p->w;
    if (w->gw->access_fd < 0)
        return;
    struct gw_buf *b = &w->alog;
    char ts[64];
    gw_utc_now(ts);
    gw_buf_printf(b, "{\"ts\":\"%s\",\"request_id\":", ts);
    gw_buf_json_str(b, p->reqid, strlen(p->reqid));
    gw_buf_printf(b, ",\"method\":\"POST\",\"path\":\"%s\",\"dialect\":\"%s\",\"model\":",
                  ep_path(p->ep), p->ingress == GW_DIALECT_ANTHROPIC ? "anthropic" : "openai");
    gw_buf_json_str(b, p->client_model, strlen(p->client_model));
    gw_buf_printf(b, ",\"status\":%d,\"stream\":%s", p->status, p->stream ? "true" : "false");
    if (p->b) {
        gw_buf_printf(b, ",\"route\":\"%s\",\"backend\":", gw_tier_str(p->b->tier));
        gw_buf_json_str(b, p->b->name, strlen(p->b->name));
        gw_buf_puts(b, ",\"upstream_model\":");
        gw_buf_json_str(b, p->b->model, strlen(p->b->model));
        gw_buf_printf(b, ",\"provider\":\"%s\"", p->b->provider->name);
        if (p->t) {
            gw_buf_puts(b, ",\"upstream\":");
            gw_buf_json_str(b, p->t->url, strlen(p->t->url));
        }
        if (p->translate)
            gw_buf_puts(b, ",\"translated\":true");
    }
    if (p->route.stage) {
        gw_buf_printf(b, ",\"stage\":\"%s\"", p->route.stage);
    }
    if (p->route.reason[0]) {
        gw_buf_puts(b, ",\"reason\":");
        gw_buf_json_str(b, p->route.reason, strlen(p->route.reason));
    }
    gw_buf_puts(b, ",\"key\":");
    gw_buf_json_str(b, p->key_name, strlen(p->key_name));
    if (p->up_status)
        gw_buf_printf(b, ",\"upstream_status\":%d", p->up_status);
    if (p->attempts) {
        gw_buf_printf(b, ",\"attempts\":%u,\"attempt_log\":", p->attempts);
        gw_buf_json_str(b, p->attempts_log.data ? p->attempts_log.data : "",
                        p->attempts_log.len);
    }
    if (p->fallback_from[0]) {
        gw_buf_puts(b, ",\"fallback_from\":");
        gw_buf_json_str(b, p->fallback_from, strlen(p->fallback_from));
    }
    if (p->usage.reported)
        gw_buf_printf(b, ",\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
                      "\"cached_tokens\":%lld,\"cache_write_tokens\":%lld,\"reasoning_tokens\":%lld",
                      (long long)p->usage.prompt_tokens, (long long)p->usage.completion_tokens,
                      (long long)p->usage.cached_tokens, (long long)p->usage.cache_write_tokens,
                      (long long)p->usage.reasoning_tokens);
    if (p->estimated)
        gw_buf_puts(b, ",\"estimated\":true");
    if (p->cost_done) {
        if (p->cost.known)
            gw_buf_printf(b, ",\"cost_usd\":%.8f", p->cost.usd);
        gw_buf_printf(b, ",\"counterfactual_cost_usd\":%.8f", p->cost.counterfactual_usd);
        if (p->cost.estimated_usage)
            gw_buf_puts(b, ",\"usage_estimated\":true");
    }
    gw_buf_printf(b, ",\"latency_ms\":%.3f", (double)(end_ns - p->t0_ns) / 1e6);
    if (p->ttft_ns)
        gw_buf_printf(b, ",\"ttft_ms\":%.3f", (double)(p->ttft_ns - p->t0_ns) / 1e6);
    gw_buf_printf(b, ",\"bytes_in\":%llu,\"bytes_out\":%llu",
                  (unsigned long long)p->bytes_in, (unsigned long long)p->bytes_out);
    if (p->stream)
        gw_buf_printf(b, ",\"events\":%llu", (unsigned long long)p->events);
    if (p->error_kind) {
        gw_buf_puts(b, ",\"error\":");
        gw_buf_json_str(b, p->error_kind, strlen(p->error_kind));
        if (p->error_msg[0]) {
            gw_buf_puts(b, ",\"error_message\":");
            gw_buf_json_str(b, p->error_msg, strlen(p->error_msg));
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

/* ---- trace spans (PROTOCOLS.md 5): one for the request, one per attempt ---- */

static void iso8601(uint64_t unix_ns, char *out, size_t n)
{
    time_t s = (time_t)(unix_ns / 1000000000ull);
    struct tm tm;
    gmtime_r(&s, &tm);
    snprintf(out, n, "%04d-%02d-%02dT%02d:%02d:%02d.%06luZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned long)(unix_ns % 1000000000ull / 1000));
}

static void host_port(const char *url, char *host, size_t hn, int64_t *port)
{
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    size_t len = strcspn(h, "/");
    const char *colon = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', len);
        colon = rb && rb + 1 < h + len && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(h, ':', len);
    }
    size_t hl = colon ? (size_t)(colon - h) : len;
    snprintf(host, hn, "%.*s", (int)hl, h);
    *port = colon ? strtol(colon + 1, NULL, 10) : (strncmp(url, "https", 5) == 0 ? 443 : 80);
}

static void emit_spans(struct proxy *p, uint64_t end_unix_ns)
{
    struct gw_tracer *tr = p->w->gw->tracer;
    if (!tr || !p->traced)
        return;
    struct gw_span *spans[1 + MAX_TRACED_ATTEMPTS];
    size_t n = 0;
    const char *op = p->ep == GW_EP_COUNT_TOKENS ? "count_tokens" : "chat";
    char name[160];
    snprintf(name, sizeof(name), "%s %s", op, p->client_model);
    struct gw_span *s = gw_span_new(name, 2, p->trace.trace_id, p->span_id,
                                    p->has_parent ? p->trace.span_id : NULL, p->start_unix_ns);
    const struct gw_backend_conf *b = p->b;
    gw_span_str(s, "gen_ai.operation.name", op);
    if (b) {
        gw_span_str(s, "gen_ai.provider.name", b->provider->name);
        gw_span_str(s, "gen_ai.system", b->provider->name);
        gw_span_str(s, "gen_ai.response.model", b->model);
        gw_span_str(s, "langfuse.observation.model.name", b->model);
    }
    gw_span_str(s, "gen_ai.request.model", p->client_model);
    if (p->stream)
        gw_span_bool(s, "gen_ai.request.stream", true);
    if (p->req_max_tokens >= 0)
        gw_span_int(s, "gen_ai.request.max_tokens", p->req_max_tokens);
    if (!isnan(p->req_temperature))
        gw_span_double(s, "gen_ai.request.temperature", p->req_temperature);
    gw_span_str(s, "langfuse.observation.type", "generation");
    if (p->usage.reported || p->cost.estimated_usage) {
        const struct gw_usage *u = &p->usage;
        int64_t in = u->prompt_tokens > 0 ? u->prompt_tokens : 0;
        int64_t out = u->completion_tokens > 0 ? u->completion_tokens : 0;
        gw_span_int(s, "gen_ai.usage.input_tokens", in); /* cached included */
        gw_span_int(s, "gen_ai.usage.output_tokens", out);
        if (u->cached_tokens > 0)
            gw_span_int(s, "gen_ai.usage.cache_read.input_tokens", u->cached_tokens);
        if (u->cache_write_tokens > 0)
            gw_span_int(s, "gen_ai.usage.cache_creation.input_tokens", u->cache_write_tokens);
        if (u->reasoning_tokens > 0)
            gw_span_int(s, "gen_ai.usage.reasoning.output_tokens", u->reasoning_tokens);
        /* Langfuse: explicit usage with input = the non-cached part, so
         * no version of it double counts the cache */
        char ud[256];
        int64_t plain = in - (u->cached_tokens > 0 ? u->cached_tokens : 0) -
                        (u->cache_write_tokens > 0 ? u->cache_write_tokens : 0);
        snprintf(ud, sizeof(ud),
                 "{\"input\":%lld,\"input_cached_tokens\":%lld,\"input_cache_creation\":%lld,"
                 "\"output\":%lld}",
                 (long long)(plain > 0 ? plain : 0), (long long)GW_MAX(u->cached_tokens, 0),
                 (long long)GW_MAX(u->cache_write_tokens, 0), (long long)out);
        gw_span_str(s, "langfuse.observation.usage_details", ud);
    }
    if (p->cost_done && p->cost.known) {
        char cd[96];
        snprintf(cd, sizeof(cd), "{\"total\":%.8f}", p->cost.usd);
        gw_span_str(s, "langfuse.observation.cost_details", cd);
        gw_span_double(s, "gen_ai.usage.cost", p->cost.usd);
        gw_span_double(s, "hybridgw.cost_usd", p->cost.usd);
        gw_span_double(s, "hybridgw.counterfactual_cost_usd", p->cost.counterfactual_usd);
        if (p->cost.estimated_usage)
            gw_span_bool(s, "hybridgw.usage_estimated", true);
    }
    if (p->ttft_ns) {
        char ts[48];
        uint64_t first_unix = p->start_unix_ns + (p->ttft_ns - p->t0_ns);
        gw_span_double(s, "gen_ai.response.time_to_first_chunk",
                       (double)(p->ttft_ns - p->t0_ns) / 1e9);
        iso8601(first_unix, ts, sizeof(ts));
        gw_span_str(s, "langfuse.observation.completion_start_time", ts);
    }
    gw_span_int(s, "http.response.status_code", p->status ? p->status : 500);
    gw_span_str(s, "hybridgw.request_id", p->reqid);
    gw_span_str(s, "hybridgw.key", p->key_name);
    if (b) {
        gw_span_str(s, "hybridgw.tier", gw_tier_str(b->tier));
        gw_span_str(s, "hybridgw.backend", b->name);
    }
    if (p->route.stage)
        gw_span_str(s, "hybridgw.stage", p->route.stage);
    if (p->route.label) {
        gw_span_str(s, "hybridgw.label", p->route.label);
        gw_span_double(s, "hybridgw.confidence", p->route.confidence);
    }
    if (p->route.reason[0])
        gw_span_str(s, "hybridgw.reason", p->route.reason);
    gw_span_int(s, "hybridgw.attempts", (int64_t)p->attempts);
    if (p->fallback_from[0])
        gw_span_str(s, "hybridgw.fallback_from", p->fallback_from);
    char tname[64];
    snprintf(tname, sizeof(tname), "hybridgw %s", ep_route(p->ep));
    gw_span_str(s, "langfuse.trace.name", tname);
    if (p->cfg->environment)
        gw_span_str(s, "langfuse.environment", p->cfg->environment);
    bool failed = p->status >= 400 || (p->streaming && p->error_kind);
    if (failed) {
        gw_span_str(s, "error.type", p->error_kind ? p->error_kind : "error");
        gw_span_str(s, "langfuse.observation.level", "ERROR");
        gw_span_status(s, 2, p->error_msg[0] ? p->error_msg : p->error_kind);
    }
    gw_span_end(s, end_unix_ns);
    spans[n++] = s;
    for (size_t i = 0; i < p->natt; i++) {
        const struct attempt_rec *a = &p->att[i];
        snprintf(name, sizeof(name), "%s %s", op, a->b->model);
        struct gw_span *c = gw_span_new(name, 3, p->trace.trace_id, a->span_id, p->span_id,
                                        a->start_unix_ns);
        gw_span_str(c, "gen_ai.operation.name", op);
        gw_span_str(c, "gen_ai.provider.name", a->b->provider->name);
        gw_span_str(c, "gen_ai.request.model", a->b->model);
        gw_span_str(c, "langfuse.observation.type", "span"); /* usage is on the parent */
        char host[256];
        int64_t port;
        host_port(a->url, host, sizeof(host), &port);
        gw_span_str(c, "server.address", host);
        gw_span_int(c, "server.port", port);
        gw_span_str(c, "hybridgw.backend", a->b->name);
        gw_span_int(c, "hybridgw.attempt", (int64_t)i + 1);
        const char *outcome = a->outcome[0] ? a->outcome : (p->error_kind ? p->error_kind : "ok");
        gw_span_str(c, "hybridgw.outcome", outcome);
        if (a->status)
            gw_span_int(c, "http.response.status_code", a->status);
        if (strcmp(outcome, "ok") != 0) {
            gw_span_str(c, "error.type", outcome);
            gw_span_status(c, 2, outcome);
        }
        gw_span_end(c, a->end_unix_ns ? a->end_unix_ns : end_unix_ns);
        spans[n++] = c;
    }
    gw_tracer_submit(tr, spans, n);
}

/* The request's cost record, for the spend ledger (answered requests only:
 * a refused one cost nothing billable). */
static void ledger_write(struct proxy *p, uint64_t end_unix_ns)
{
    struct gw_ledger *l = p->w->gw->ledger;
    if (!l || !p->b || !p->cost_done)
        return;
    struct gw_spend_rec r;
    memset(&r, 0, sizeof(r));
    snprintf(r.request_id, sizeof(r.request_id), "%s", p->reqid);
    r.ts_ms = (int64_t)(end_unix_ns / 1000000ull);
    snprintf(r.key_name, sizeof(r.key_name), "%s", p->key_name);
    snprintf(r.key_id, sizeof(r.key_id), "%.24s", p->key_id);
    snprintf(r.team, sizeof(r.team), "%s", p->team);
    snprintf(r.tier, sizeof(r.tier), "%s", gw_tier_str(p->b->tier));
    snprintf(r.backend, sizeof(r.backend), "%s", p->b->name);
    snprintf(r.model, sizeof(r.model), "%s", p->b->model);
    if (p->route.label)
        snprintf(r.label, sizeof(r.label), "%s", p->route.label);
    r.status = p->status;
    r.input_tokens = GW_MAX(p->usage.prompt_tokens, 0);
    r.output_tokens = GW_MAX(p->usage.completion_tokens, 0);
    r.cached_tokens = GW_MAX(p->usage.cached_tokens, 0);
    r.cache_write_tokens = GW_MAX(p->usage.cache_write_tokens, 0);
    r.reasoning_tokens = GW_MAX(p->usage.reasoning_tokens, 0);
    r.cost_usd = p->cost.usd;
    r.counterfactual_usd = p->cost.counterfactual_usd;
    r.estimated = p->cost.estimated_usage;
    r.charge = p->charge && p->cost.known;
    gw_ledger_submit(l, &r);
}

static void finalize(struct proxy *p)
{
    struct gw_worker *w = p->w;
    if (p->reserving) {
        /* the budget thread still has our reservation request: finish
         * when it answers (on_reserved), so the reservation is released */
        p->finalize_pending = true;
        return;
    }
    uint64_t end = gw_now_ns();
    if (p->up) {
        gw_up_cancel(p->up);
        p->up = NULL;
        if (p->t)
            p->t->wk[w->id].inflight--;
    }
    if (p->retry_timer) {
        uv_timer_stop(p->retry_timer);
        uv_close((uv_handle_t *)p->retry_timer, retry_timer_closed);
        p->retry_timer = NULL;
    }
    end_holds(p); /* when no response went out (the client left, or an error) */
    char status[8];
    snprintf(status, sizeof(status), "%d", p->status ? p->status : 500);
    const char *tier = p->b ? gw_tier_str(p->b->tier) : "none";
    const char *backend = p->b ? p->b->name : "none";
    const char *route = ep_route(p->ep);
    gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_requests, route, tier, backend, status), 1);
    gw_series_observe(gw_metrics_getv(w->metrics, &gw_m_duration, route, tier),
                      (double)(end - p->t0_ns) / 1e9);
    gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_inflight), -1);
    if (p->ttft_ns && p->b)
        gw_series_observe(gw_metrics_getv(w->metrics, &gw_m_ttft, tier, backend),
                          (double)(p->ttft_ns - p->t0_ns) / 1e9);
    if (p->cost_done && p->cost.known) {
        gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_cost, tier, backend), p->cost.usd);
        gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_counterfactual, tier, backend),
                      p->cost.counterfactual_usd);
    }
    if (p->usage.reported && p->b && !p->estimated) {
        static const char *const kinds[] = {"input", "output", "cached_input", "cache_write_input",
                                            "reasoning"};
        int64_t v[] = {p->usage.prompt_tokens, p->usage.completion_tokens,
                       p->usage.cached_tokens, p->usage.cache_write_tokens,
                       p->usage.reasoning_tokens};
        for (size_t i = 0; i < GW_ARRAY_LEN(kinds); i++)
            if (v[i] > 0)
                gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_tokens, tier, backend, kinds[i]),
                              (double)v[i]);
    }
    alog_write(p, end);
    emit_spans(p, p->start_unix_ns + (end - p->t0_ns));
    ledger_write(p, p->start_unix_ns + (end - p->t0_ns));
    if (p->req) {
        /* not expected: every path answers first; don't leave it hanging */
        gw_http_req_set_abort(p->req, NULL, NULL);
        gw_http_req_reset(p->req);
    }
    json_decref(p->json);
    free(p->up_body);
    free(p->beta);
    free(p->version);
    free(p->tracestate);
    gw_xstream_free(p->xs);
    gw_sse_free(&p->sse);
    gw_buf_free(&p->body);
    gw_buf_free(&p->scratch);
    gw_buf_free(&p->attempts_log);
    gw_config_unref(p->cfg);
    free(p);
}

/* ---- count_tokens without an Anthropic upstream ---- */

static size_t text_chars(json_t *v)
{
    if (json_is_string(v))
        return json_string_length(v);
    size_t n = 0;
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) n += text_chars(x);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            if (strcmp(k, "type") != 0 && strcmp(k, "role") != 0)
                n += text_chars(x);
        }
    }
    return n;
}

/* A conservative estimate: about 3.5 characters per token for English and
 * code, plus a few tokens per message for the chat template. */
static void count_tokens_estimate(struct proxy *p)
{
    json_t *msgs = json_object_get(p->json, "messages");
    size_t chars = text_chars(msgs) + text_chars(json_object_get(p->json, "system")) +
                   text_chars(json_object_get(p->json, "tools"));
    size_t tokens = (size_t)ceil((double)chars / 3.5) + 4 * json_array_size(msgs) + 3;
    char body[64];
    snprintf(body, sizeof(body), "{\"input_tokens\":%zu}", tokens);
    p->estimated = true;
    p->status = 200;
    p->usage.prompt_tokens = (int64_t)tokens;
    p->usage.reported = true;
    gw_http_resp_header(p->req, "x-hybridgw-token-count", "estimated");
    add_route_headers(p);
    gw_http_resp_send(p->req, 200, "application/json", body, strlen(body));
    p->bytes_out += strlen(body);
    p->req = NULL;
    finalize(p);
}

/* ---- rate limits ---- */

/* What a request may use on backend b, as the vendors count it: the prompt
 * estimate (characters / chars_per_token + 16) and max_tokens, or the
 * backend's default. Rate limits and budget reservations both hold this. */
static void token_bound(const struct proxy *p, const struct gw_backend_conf *b, double *in,
                        double *out)
{
    double cpt = b->chars_per_token > 0 ? b->chars_per_token : 3.0;
    *in = ceil((double)p->prompt_chars / cpt) + 16;
    *out = p->req_max_tokens > 0 ? (double)p->req_max_tokens : (double)b->default_max_tokens;
}

/* The most tokens this request can use on any of its candidates. */
static int64_t max_tokens_any(const struct proxy *p)
{
    double worst = 0, in, out;
    for (size_t i = 0; i < p->ncands; i++) {
        token_bound(p, p->cands[i], &in, &out);
        if (in + out > worst)
            worst = in + out;
    }
    return (int64_t)worst;
}

/* Count the request against its key's and team's limits. false: it was
 * refused with a 429 (and finished). */
static bool admit_limits(struct proxy *p, const struct gw_vkey_info *vk)
{
    struct gw_worker *w = p->w;
    if (!w->gw->limits ||
        (!gw_limit_spec_any(&vk->limits) && !gw_limit_spec_any(&vk->team_limits)))
        return true;
    struct gw_limit_verdict v;
    p->lim_tokens = max_tokens_any(p);
    p->lim_now_ms = (int64_t)(gw_wall_ns() / 1000000);
    enum gw_limit_kind kind = gw_limits_admit(w->gw->limits, vk->id, &vk->limits, vk->team,
                                              &vk->team_limits, p->lim_tokens, p->lim_now_ms,
                                              &p->lim, &v);
    p->lim_view = v.view;
    if (kind == GW_LIMIT_OK)
        return true;
    static const char *const kinds[] = {"ok", "requests", "tokens", "concurrent", "too_large"};
    gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_limited, v.scope, kinds[kind]), 1);
    char who[100], msg[300];
    if (strcmp(v.scope, "team") == 0)
        snprintf(who, sizeof(who), "team `%.64s`", vk->team);
    else
        snprintf(who, sizeof(who), "this API key");
    double secs = (double)v.retry_after_ms / 1000.0;
    switch (kind) {
    case GW_LIMIT_REQUESTS:
        snprintf(msg, sizeof(msg),
                 "Rate limit reached for %s on requests per minute: limit %lld, used %lld. "
                 "Try again in %.1fs.",
                 who, (long long)v.limit, (long long)v.used, secs);
        break;
    case GW_LIMIT_TOKENS:
        snprintf(msg, sizeof(msg),
                 "Rate limit reached for %s on tokens per minute: limit %lld, used %lld, "
                 "requested %lld (prompt estimate + max_tokens). Try again in %.1fs.",
                 who, (long long)v.limit, (long long)v.used, (long long)p->lim_tokens, secs);
        break;
    case GW_LIMIT_CONCURRENT:
        snprintf(msg, sizeof(msg),
                 "Too many concurrent requests for %s: limit %lld running at once. "
                 "Try again when one has finished.",
                 who, (long long)v.limit);
        break;
    default:
        snprintf(msg, sizeof(msg),
                 "Request too large for %s's tokens per minute: limit %lld, this request may "
                 "use %lld (prompt estimate + max_tokens). Lower max_tokens or shorten the "
                 "prompt.",
                 who, (long long)v.limit, (long long)p->lim_tokens);
        break;
    }
    gw_utf8_trim(msg);
    if (v.retry_after_ms > 0) {
        snprintf(p->retry_after, sizeof(p->retry_after), "%lld",
                 (long long)((v.retry_after_ms + 999) / 1000));
        snprintf(p->retry_after_ms, sizeof(p->retry_after_ms), "%lld",
                 (long long)v.retry_after_ms);
    } else {
        p->lim_final = true;
    }
    fail(p, 429, kind == GW_LIMIT_TOKENS || kind == GW_LIMIT_TOO_LARGE ? "tokens" : "requests",
         "rate_limit_exceeded", NULL, msg);
    return false;
}

/* ---- budgets ---- */

/* The most this request can cost on any of its candidates: the prompt at
 * the input price and max_tokens (or the backend's default) at the output
 * price; GPU-hour backends at their floor price. */
static double max_cost(struct proxy *p)
{
    double worst = 0;
    p->reserve_in = 0;
    for (size_t i = 0; i < p->ncands; i++) {
        const struct gw_backend_conf *b = p->cands[i];
        double in, out;
        token_bound(p, b, &in, &out);
        struct gw_price pr;
        double c = 0;
        if (gw_cost_price(b, &pr)) {
            c = (in * pr.input + out * pr.output) / 1e6;
            if (in * pr.input / 1e6 > p->reserve_in)
                p->reserve_in = in * pr.input / 1e6;
        } else if (b->gpu_hourly_usd > 0) {
            unsigned replicas = b->replicas ? b->replicas : (unsigned)b->nurls;
            double hourly = b->gpu_hourly_usd * replicas / (double)(b->nurls ? b->nurls : 1);
            c = (in + b->output_weight * out) * hourly / (double)b->min_tokens_per_hour;
        }
        if (c > worst)
            worst = c;
    }
    return worst;
}

static void on_reserved(void *ctx, int rc, const char *rid, const char *why)
{
    struct proxy *p = ctx;
    struct gw_worker *w = p->w;
    p->reserving = false;
    if (p->finalize_pending) {
        if (rc == GW_STORE_OK)
            gw_budget_release(w->gw->budget, rid);
        finalize(p);
        return;
    }
    if (rc == GW_STORE_OK) {
        snprintf(p->rid, sizeof(p->rid), "%s", rid);
        p->reserved_usd = p->reserve_ask;
        struct gw_price pr;
        for (size_t i = 0; i < p->ncands; i++)
            if (gw_cost_price(p->cands[i], &pr) && pr.output / 1e6 > p->out_price)
                p->out_price = pr.output / 1e6;
        next_attempt(p);
        return;
    }
    struct gw_req_meta *meta = p->req ? gw_req_meta(w, p->req) : NULL;
    if (rc == GW_STORE_OVER_BUDGET && meta && meta->vk && meta->vk->downgrade) {
        /* over budget, but allowed to go on locally */
        size_t n = 0;
        for (size_t i = 0; i < p->cfg->nbackends && n < MAX_CANDIDATES; i++)
            if (p->cfg->backends[i].tier == GW_TIER_LOCAL)
                p->cands[n++] = &p->cfg->backends[i];
        if (n > 0) {
            p->ncands = n;
            p->cand = 0;
            size_t l = strlen(p->route.reason);
            snprintf(p->route.reason + l, sizeof(p->route.reason) - l, "; budget:downgrade");
            gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_budget, "downgrade"), 1);
            next_attempt(p);
            return;
        }
    }
    char msg[240];
    if (rc == GW_STORE_OVER_BUDGET) {
        gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_budget, "reject"), 1);
        snprintf(msg, sizeof(msg), "This request would exceed %s.", why);
        fail(p, 402, "insufficient_quota", "budget_exceeded", NULL, msg);
        return;
    }
    /* the database did not answer: budgets can't be checked */
    gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_budget, "error"), 1);
    if (p->cfg->ledger_fail_open) {
        gw_log_warn("%s: budget check failed (%s); serving without it (ledger.on_error: open)",
                    p->reqid, why);
        next_attempt(p);
        return;
    }
    gw_log_error("%s: budget check failed: %s; refused (ledger.on_error: closed)", p->reqid,
                 why);
    fail(p, 503, "server_error", "budget_unavailable", NULL,
         "Budgets cannot be checked right now; try again shortly.");
}

/* ---- entry ---- */

static gw_str route_header(void *ud, const char *name)
{
    return gw_http_req_header(ud, name);
}

static char *header_copy(struct gw_http_req *req, const char *name)
{
    gw_str v = gw_http_req_header(req, name);
    return v.p ? gw_strndup(v.p, v.len) : NULL;
}

void gw_proxy_handle(struct gw_worker *w, struct gw_http_req *req, enum gw_endpoint ep)
{
    struct proxy *p = gw_calloc(1, sizeof(*p));
    p->w = w;
    p->req = req;
    p->ep = ep;
    p->ingress = ep == GW_EP_CHAT ? GW_DIALECT_OPENAI : GW_DIALECT_ANTHROPIC;
    p->cfg = gw_config_ref(w->cfg);
    p->t0_ns = gw_http_req_start_ns(req);
    p->deadline_ns = p->t0_ns + p->cfg->retry_deadline_ms * 1000000ull;
    struct gw_req_meta *meta = gw_req_meta(w, req);
    snprintf(p->key_name, sizeof(p->key_name), "%s", meta->key);
    if (meta->vk) {
        snprintf(p->key_id, sizeof(p->key_id), "%s", meta->vk->id);
        snprintf(p->team, sizeof(p->team), "%s", meta->vk->team);
    }
    snprintf(p->reqid, sizeof(p->reqid), "%s", meta->id);
    meta->self_logged = true;
    gw_usage_init(&p->usage);
    gw_sse_init(&p->sse, 1 << 20);
    gw_buf_init(&p->body, 0);
    gw_buf_init(&p->scratch, 1 << 20);
    gw_buf_init(&p->attempts_log, 1024);
    gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_inflight), 1);
    gw_http_req_set_abort(req, on_client_abort, p);
    gw_http_req_set_drain(req, on_client_drain, p);
    /* trace context: the client's traceparent makes us a child span;
     * without one a new trace starts (when tracing is on) */
    p->start_unix_ns = gw_wall_ns() - (gw_now_ns() - p->t0_ns);
    p->req_max_tokens = -1;
    p->req_temperature = NAN;
    p->has_parent = gw_traceparent_parse(gw_http_req_header(req, "traceparent"), &p->trace);
    if (p->has_parent)
        p->tracestate = header_copy(req, "tracestate");
    if (w->gw->tracer) {
        p->traced = gw_tracer_sample(w->gw->tracer, p->has_parent ? &p->trace : NULL);
        if (!p->has_parent)
            gw_trace_new_id(p->trace.trace_id, 16);
        gw_trace_new_id(p->span_id, 8);
    }
    if (p->ingress == GW_DIALECT_ANTHROPIC) {
        p->beta = header_copy(req, "anthropic-beta");
        p->version = header_copy(req, "anthropic-version");
    }

    gw_str body = gw_http_req_body(req);
    p->bytes_in = body.len;
    json_error_t jerr;
    p->json = json_loadb(body.p, body.len, 0, &jerr);
    if (p->json)
        gw_http_req_drop_body(req);
    if (!p->json) {
        char msg[300];
        snprintf(msg, sizeof(msg),
                 "We could not parse the JSON body of your request: %s (line %d, column %d).",
                 jerr.text, jerr.line, jerr.column);
        fail(p, 400, "invalid_request_error", "invalid_json", NULL, msg);
        return;
    }
    const char *param;
    char vbuf[200];
    const char *bad = p->ingress == GW_DIALECT_OPENAI
                          ? validate_openai(p->json, &param, vbuf, sizeof(vbuf))
                          : validate_anthropic(p->json, ep == GW_EP_COUNT_TOKENS, &param, vbuf,
                                               sizeof(vbuf));
    if (bad) {
        fail(p, 400, "invalid_request_error", NULL, param, bad);
        return;
    }
    const char *model = json_string_value(json_object_get(p->json, "model"));
    snprintf(p->client_model, sizeof(p->client_model), "%s", model);
    if (meta->vk) {
        /* a virtual key's allowed models, and "frontier" only for keys that
         * may force the tier */
        if (!gw_models_allow(meta->vk->allowed_models, model)) {
            char msg[200];
            snprintf(msg, sizeof(msg), "This API key may not use the model `%.100s`.", model);
            gw_utf8_trim(msg);
            fail(p, 403, "permission_error", "model_not_allowed", "model", msg);
            return;
        }
        if (strcmp(model, "frontier") == 0 && !meta->may_force_tier) {
            fail(p, 403, "permission_error", "tier_not_allowed", "model",
                 "This API key may not force the frontier tier; use model auto.");
            return;
        }
    }
    p->prompt_chars = text_chars(json_object_get(p->json, "messages")) +
                      text_chars(json_object_get(p->json, "system"));
    json_t *mt = json_object_get(p->json, "max_completion_tokens");
    if (!json_is_integer(mt))
        mt = json_object_get(p->json, "max_tokens");
    if (json_is_integer(mt))
        p->req_max_tokens = (int64_t)json_integer_value(mt);
    json_t *temp = json_object_get(p->json, "temperature");
    if (json_is_number(temp))
        p->req_temperature = json_number_value(temp);
    p->stream = ep != GW_EP_COUNT_TOKENS && json_is_true(json_object_get(p->json, "stream"));
    p->client_usage =
        p->stream && p->ingress == GW_DIALECT_OPENAI &&
        json_is_true(json_object_get(json_object_get(p->json, "stream_options"), "include_usage"));

    struct gw_route_input in;
    memset(&in, 0, sizeof(in));
    in.cfg = p->cfg;
    in.model = gw_str_c(model);
    in.body = p->json;
    in.anthropic = p->ingress == GW_DIALECT_ANTHROPIC;
    in.tier_header = gw_http_req_header(req, "x-hybridgw-tier");
    in.may_force_tier = meta->may_force_tier;
    in.header = route_header;
    in.header_ud = req;
    if (gw_route_decide(&in, &p->route) < 0 && !p->route.backend) {
        int st = p->route.err_status ? p->route.err_status : 503;
        if (st == 503 && !p->route.backend) {
            /* the chosen tier has nothing healthy: the fallback list may */
            const struct gw_config *cfg = p->cfg;
            for (size_t i = 0; i < cfg->nbackends && !p->route.backend; i++)
                if (cfg->backends[i].tier == p->route.tier)
                    p->route.backend = &cfg->backends[i];
        }
        if (!p->route.backend) {
            fail(p, st, st == 404 ? "invalid_request_error" : "server_error",
                 p->route.err_code, st == 404 ? "model" : NULL, p->route.err);
            return;
        }
    }
    /* a pinned model, and what a rule decided (it may be data that must
     * stay where the rule sends it), get retries but no fallback */
    p->pinned = p->route.first_stage &&
                ((strcmp(p->route.first_stage, "explicit") == 0 &&
                  strncmp(p->route.reason, "explicit:model=", 15) == 0) ||
                 strcmp(p->route.first_stage, "rules") == 0);
    gw_series_inc(gw_metrics_getv(w->metrics, &gw_m_decisions, p->route.stage,
                                  p->route.label ? p->route.label : "none",
                                  gw_tier_str(p->route.tier)),
                  1);
    build_candidates(p);
    if (ep == GW_EP_COUNT_TOKENS) {
        /* forwarded only to an Anthropic backend; otherwise estimated */
        const struct gw_backend_conf *b = p->cands[0];
        if (b->provider->dialect != GW_DIALECT_ANTHROPIC || !gw_backend_healthy(b)) {
            p->b = b;
            count_tokens_estimate(p);
            return;
        }
        p->ncands = 1;
        gw_http_resp_header(req, "x-hybridgw-token-count", "upstream");
    }
    if (meta->vk && ep != GW_EP_COUNT_TOKENS && !admit_limits(p, meta->vk))
        return;
    const struct gw_vkey_info *vk = meta->vk;
    bool budgeted = vk && (vk->budget_day > 0 || vk->budget_month > 0 ||
                           vk->budget_total > 0 || vk->team_budget);
    /* a virtual key without any budget has nothing to hold: no wait for the
     * database, its ledger record books the cost when it is known */
    p->charge = vk && w->gw->budget && ep != GW_EP_COUNT_TOKENS && !budgeted;
    if (budgeted && w->gw->budget && ep != GW_EP_COUNT_TOKENS) {
        /* reserve the most it can cost before anything goes upstream */
        struct gw_vkey k;
        memset(&k, 0, sizeof(k));
        snprintf(k.id, sizeof(k.id), "%.24s", meta->vk->id);
        snprintf(k.name, sizeof(k.name), "%s", meta->vk->name);
        snprintf(k.team, sizeof(k.team), "%s", meta->vk->team);
        k.budget_day = meta->vk->budget_day;
        k.budget_month = meta->vk->budget_month;
        k.budget_total = meta->vk->budget_total;
        p->reserving = true;
        p->reserve_ask = max_cost(p);
        gw_budget_reserve(w->gw->budget, w, &k, p->reserve_ask, on_reserved, p);
        return;
    }
    next_attempt(p);
}
