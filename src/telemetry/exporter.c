/*
 * exporter.c - the OTLP/HTTP JSON trace exporter (trace.h): a bounded queue
 * of finished spans and one thread that batches them and POSTs them.
 *
 * Workers only take the queue mutex for a moment to push span pointers; they
 * never wait for the network and never wait for room (a full queue drops the
 * new spans and counts them). The exporter thread wakes when `batch` spans
 * are queued or `interval` has passed, encodes up to `batch` spans with
 * gw_otlp_encode and POSTs them with one reused libcurl easy handle.
 *
 * The transfer runs through a private curl multi handle only so that
 * gw_tracer_stop can interrupt it (curl_multi_wakeup) when its deadline
 * passes; otherwise it is one blocking POST at a time.
 *
 * Results: 2xx counts the spans as exported; anything else as failed. 429,
 * 5xx and connection errors are retried once after a short backoff first;
 * other 4xx and timeouts are not. Failures are logged at most once per
 * 10 s, with the HTTP status or curl error and never the endpoint URL or
 * the headers (they carry credentials).
 *
 * This module does not: compress bodies, follow Retry-After, persist spans,
 * or export metrics/logs.
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <uv.h>

#include "hybridgw/core.h"
#include "hybridgw/log.h"
#include "telemetry/trace.h"

#define RETRY_BACKOFF_MS 300
#define WARN_EVERY_NS (10ull * 1000000000ull)
#define MIN_INTERVAL_MS 10
/* A batch whose body is larger than this is split in halves (collectors
 * commonly refuse bodies above a few MiB with 413). */
#define MAX_BODY_BYTES (4u << 20)
/* How long one curl_multi_poll may sleep: bounds how late a stop deadline
 * is noticed if a wakeup were ever lost. */
#define POLL_SLICE_MS 200

/*
 * The tracer. Settings are copied at start and never change. The queue (a
 * ring of span pointers) and the stop request are guarded by mu; the
 * counters are atomics so gw_tracer_stats needs no lock. The curl handles
 * belong to the exporter thread, except that stop() may call
 * curl_multi_wakeup, which libcurl allows from any thread.
 */
struct gw_tracer {
    /* settings */
    char *endpoint;
    struct curl_slist *headers;  /* Content-Type + configured headers (secrets) */
    char *service_name;
    char *environment;           /* NULL: none */
    double sample;
    size_t cap;                  /* queue capacity, >= 1 */
    size_t batch;                /* spans per POST, >= 1 */
    uint64_t interval_ms;
    uint64_t timeout_ms;

    /* queue, guarded by mu */
    uv_mutex_t mu;
    uv_cond_t cv;                /* signalled on batch full and on stop */
    struct gw_span **ring;
    size_t head, count;
    bool stopping;
    uint64_t deadline_ns;        /* gw_now_ns() clock; valid when stopping */

    /* read without the lock by the thread's transfer loop */
    atomic_bool abort_now;       /* the stop deadline has been set */
    _Atomic uint64_t abort_at_ns;

    _Atomic uint64_t exported, dropped, failed, queued;

    /* exporter thread only */
    uv_thread_t thread;
    CURL *easy;
    CURLM *multi;
    uint64_t last_warn_ns;
    uint64_t warn_suppressed;
};

static bool curl_inited;
static uv_once_t curl_once = UV_ONCE_INIT;

static void init_curl(void)
{
    curl_inited = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return sz * n; /* the response ({} or partialSuccess) is not used */
}

/* ---- sending ------------------------------------------------------------- */

enum post_result {
    POST_OK = 0,
    POST_RETRY = 1,   /* 429, 5xx, connection error: worth one more try */
    POST_FAIL = 2,    /* other 4xx, 3xx, timeout, aborted at stop */
};

/* True once the stop deadline has passed. */
static bool past_deadline(struct gw_tracer *t)
{
    return atomic_load(&t->abort_now) && gw_now_ns() >= atomic_load(&t->abort_at_ns);
}

/* Log a failed export, at most once per WARN_EVERY_NS. why is a curl error
 * text or NULL for an HTTP status; neither ever contains the headers. */
static void warn_failure(struct gw_tracer *t, size_t nspans, const char *why, long status)
{
    uint64_t now = gw_now_ns();
    if (t->last_warn_ns && now - t->last_warn_ns < WARN_EVERY_NS) {
        t->warn_suppressed++;
        return;
    }
    t->last_warn_ns = now;
    char more[64] = "";
    if (t->warn_suppressed)
        snprintf(more, sizeof(more), " (and %" PRIu64 " unlogged failures before)", t->warn_suppressed);
    if (why)
        gw_log_warn("otlp: export of %zu spans failed: %s%s", nspans, why, more);
    else
        gw_log_warn("otlp: export of %zu spans failed: HTTP %ld%s", nspans, status, more);
    t->warn_suppressed = 0;
}

/* One POST of body; blocks this thread until it completes, times out or the
 * stop deadline passes. When it fails, *why is a static text (curl's error)
 * or NULL with the HTTP status in *status. */
static enum post_result post(struct gw_tracer *t, const char *body, size_t len, const char **why,
                             long *status)
{
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    *why = NULL;
    *status = 0;
    if (curl_multi_add_handle(t->multi, e) != CURLM_OK) {
        *why = "curl_multi_add_handle failed";
        return POST_FAIL;
    }
    CURLcode cc = CURLE_OK;
    bool done = false, aborted = false;
    while (!done) {
        int running = 0;
        if (curl_multi_perform(t->multi, &running) != CURLM_OK) {
            cc = CURLE_FAILED_INIT;
            break;
        }
        int left;
        CURLMsg *m;
        while ((m = curl_multi_info_read(t->multi, &left))) {
            if (m->msg == CURLMSG_DONE && m->easy_handle == e) {
                cc = m->data.result;
                done = true;
            }
        }
        if (done)
            break;
        if (past_deadline(t)) {
            aborted = true;
            break;
        }
        int wait_ms = POLL_SLICE_MS;
        if (atomic_load(&t->abort_now)) {
            uint64_t now = gw_now_ns(), at = atomic_load(&t->abort_at_ns);
            uint64_t left_ms = at > now ? (at - now + 999999) / 1000000 : 0;
            wait_ms = (int)GW_MIN((uint64_t)wait_ms, left_ms);
        }
        curl_multi_poll(t->multi, NULL, 0, wait_ms, NULL);
    }
    if (done && cc == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    curl_multi_remove_handle(t->multi, e);

    if (aborted) {
        *why = "stopped at the shutdown deadline";
        return POST_FAIL;
    }
    if (cc != CURLE_OK) {
        *why = curl_easy_strerror(cc);
        return cc == CURLE_OPERATION_TIMEDOUT ? POST_FAIL : POST_RETRY;
    }
    if (*status >= 200 && *status < 300)
        return POST_OK;
    return *status == 429 || *status >= 500 ? POST_RETRY : POST_FAIL;
}

/* Sleep ms unless stop() is called meanwhile. False when stopping has begun
 * and the deadline is already past (no point in retrying). */
static bool backoff(struct gw_tracer *t, uint64_t ms)
{
    uint64_t until = gw_now_ns() + ms * 1000000ull;
    uv_mutex_lock(&t->mu);
    for (;;) {
        uint64_t now = gw_now_ns();
        if (t->stopping || now >= until)
            break;
        uv_cond_timedwait(&t->cv, &t->mu, until - now);
    }
    uv_mutex_unlock(&t->mu);
    return !past_deadline(t);
}

/* Export n spans (n >= 1) and free them. Bodies above MAX_BODY_BYTES are
 * sent in halves. */
static void send_spans(struct gw_tracer *t, struct gw_span **spans, size_t n)
{
    char *body = gw_otlp_encode(spans, n, t->service_name, t->environment);
    size_t len = body ? strlen(body) : 0;
    if (body && len > MAX_BODY_BYTES && n > 1) {
        free(body);
        send_spans(t, spans, n / 2);
        send_spans(t, spans + n / 2, n - n / 2);
        return;
    }
    enum post_result r = POST_FAIL;
    const char *why = body ? "the shutdown deadline passed" : "could not encode the spans";
    long status = 0;
    if (body && !past_deadline(t)) {
        r = post(t, body, len, &why, &status);
        if (r == POST_RETRY && backoff(t, RETRY_BACKOFF_MS))
            r = post(t, body, len, &why, &status);
    }
    free(body);
    if (r != POST_OK)
        warn_failure(t, n, why, status);
    atomic_fetch_add(r == POST_OK ? &t->exported : &t->failed, (uint64_t)n);
    for (size_t i = 0; i < n; i++)
        gw_span_free(spans[i]);
}

/* ---- the thread ---------------------------------------------------------- */

/* Move up to max spans out of the ring into out. Call with mu held. */
static size_t take(struct gw_tracer *t, struct gw_span **out, size_t max)
{
    size_t n = GW_MIN(t->count, max);
    for (size_t i = 0; i < n; i++) {
        out[i] = t->ring[t->head];
        t->ring[t->head] = NULL;
        t->head = (t->head + 1) % t->cap;
    }
    t->count -= n;
    atomic_store(&t->queued, (uint64_t)t->count);
    return n;
}

static void exporter_main(void *arg)
{
    struct gw_tracer *t = arg;
    /* Signals belong to the loop threads; a SIGPIPE raised by a write on a
     * dead connection stays pending here instead of killing the process. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);

    struct gw_span **batch = gw_calloc(t->batch, sizeof(*batch));
    uint64_t next_flush = gw_now_ns() + t->interval_ms * 1000000ull;
    uv_mutex_lock(&t->mu);
    for (;;) {
        while (!t->stopping && t->count < t->batch) {
            uint64_t now = gw_now_ns();
            if (now >= next_flush)
                break;
            uv_cond_timedwait(&t->cv, &t->mu, next_flush - now);
        }
        if (t->stopping && (t->count == 0 || gw_now_ns() >= t->deadline_ns))
            break; /* stop() frees and counts whatever is left */
        if (t->count == 0) {
            next_flush = gw_now_ns() + t->interval_ms * 1000000ull;
            continue;
        }
        size_t n = take(t, batch, t->batch);
        uv_mutex_unlock(&t->mu);
        send_spans(t, batch, n);
        uv_mutex_lock(&t->mu);
        next_flush = gw_now_ns() + t->interval_ms * 1000000ull;
    }
    uv_mutex_unlock(&t->mu);
    free(batch);
}

/* ---- API ----------------------------------------------------------------- */

static bool header_ok(const char *s)
{
    return s && !strpbrk(s, "\r\n");
}

struct gw_tracer *gw_tracer_start(const struct gw_config *cfg)
{
    if (!cfg || !cfg->otlp_endpoint || !cfg->otlp_endpoint[0])
        return NULL;
    uv_once(&curl_once, init_curl);
    if (!curl_inited) {
        gw_log_error("otlp: curl_global_init failed; traces are off");
        return NULL;
    }
    struct gw_tracer *t = gw_calloc(1, sizeof(*t));
    t->endpoint = gw_strdup(cfg->otlp_endpoint);
    t->service_name = gw_strdup(cfg->service_name ? cfg->service_name : "hybridgw");
    t->environment = cfg->environment ? gw_strdup(cfg->environment) : NULL;
    t->sample = cfg->otlp_sample;
    t->cap = cfg->otlp_queue ? (size_t)cfg->otlp_queue : 4096;
    t->batch = cfg->otlp_batch ? (size_t)cfg->otlp_batch : 256;
    t->batch = GW_MIN(t->batch, t->cap); /* else a full queue would never wake the thread */
    t->interval_ms = GW_MAX(cfg->otlp_interval_ms, (uint64_t)MIN_INTERVAL_MS);
    t->timeout_ms = cfg->otlp_timeout_ms ? cfg->otlp_timeout_ms : 5000;
    t->ring = gw_calloc(t->cap, sizeof(*t->ring));
    atomic_init(&t->abort_now, false);
    atomic_init(&t->abort_at_ns, 0);
    atomic_init(&t->exported, 0);
    atomic_init(&t->dropped, 0);
    atomic_init(&t->failed, 0);
    atomic_init(&t->queued, 0);

    struct curl_slist *nh;
    /* "Expect:" stops curl from waiting for a 100 Continue on large bodies */
    static const char *const fixed[] = {"Content-Type: application/json", "Expect:"};
    for (size_t i = 0; i < GW_ARRAY_LEN(fixed); i++) {
        if (!(nh = curl_slist_append(t->headers, fixed[i])))
            goto fail;
        t->headers = nh;
    }
    for (size_t i = 0; i < cfg->notlp_headers; i++) {
        const char *name = cfg->otlp_header_names[i], *val = cfg->otlp_header_values[i];
        if (!header_ok(name) || !name[0] || strchr(name, ':') || !header_ok(val)) {
            gw_log_warn("otlp: header %zu is not a valid header line; not sent", i);
            continue;
        }
        if (gw_str_ieq_c(gw_str_c(name), "content-type"))
            continue; /* the body is always JSON */
        size_t n = strlen(name) + strlen(val) + 3;
        char *line = gw_malloc(n);
        snprintf(line, n, "%s: %s", name, val);
        nh = curl_slist_append(t->headers, line);
        explicit_bzero(line, n);
        free(line);
        if (!nh)
            goto fail;
        t->headers = nh;
    }

    if (!(t->easy = curl_easy_init()) || !(t->multi = curl_multi_init()))
        goto fail;
    CURL *e = t->easy;
    curl_easy_setopt(e, CURLOPT_URL, t->endpoint);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)GW_MIN(t->timeout_ms, (uint64_t)LONG_MAX));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)GW_MIN(t->timeout_ms, (uint64_t)LONG_MAX));

    uv_mutex_init(&t->mu);
    uv_cond_init(&t->cv);
    if (uv_thread_create(&t->thread, exporter_main, t) != 0) {
        uv_cond_destroy(&t->cv);
        uv_mutex_destroy(&t->mu);
        goto fail;
    }
    return t;

fail:
    gw_log_error("otlp: could not start the trace exporter; traces are off");
    if (t->multi)
        curl_multi_cleanup(t->multi);
    if (t->easy)
        curl_easy_cleanup(t->easy);
    for (struct curl_slist *l = t->headers; l; l = l->next)
        explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(t->headers);
    free(t->ring);
    free(t->endpoint);
    free(t->service_name);
    free(t->environment);
    free(t);
    return NULL;
}

bool gw_tracer_sample(struct gw_tracer *t, const struct gw_trace_ctx *parent)
{
    if (!t)
        return false;
    if (parent && parent->valid)
        return (parent->flags & 1) != 0;
    if (t->sample >= 1.0)
        return true;
    if (!(t->sample > 0.0))
        return false;
    return gw_trace_random01() < t->sample;
}

void gw_tracer_submit(struct gw_tracer *t, struct gw_span **spans, size_t n)
{
    if (!spans)
        return;
    size_t taken = 0;
    if (t) {
        uv_mutex_lock(&t->mu);
        for (; taken < n && t->count < t->cap; taken++) {
            if (!spans[taken])
                continue;
            t->ring[(t->head + t->count) % t->cap] = spans[taken];
            t->count++;
            spans[taken] = NULL;
        }
        atomic_store(&t->queued, (uint64_t)t->count);
        if (t->count >= t->batch)
            uv_cond_signal(&t->cv);
        uv_mutex_unlock(&t->mu);
    }
    /* what did not fit is dropped; freeing happens outside the lock */
    uint64_t dropped = 0;
    for (size_t i = taken; i < n; i++) {
        if (spans[i]) {
            gw_span_free(spans[i]);
            spans[i] = NULL;
            dropped++;
        }
    }
    if (t && dropped)
        atomic_fetch_add(&t->dropped, dropped);
}

void gw_tracer_stats(struct gw_tracer *t, struct gw_tracer_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof(*out));
    if (!t)
        return;
    out->exported = atomic_load(&t->exported);
    out->dropped = atomic_load(&t->dropped);
    out->failed = atomic_load(&t->failed);
    out->queued = atomic_load(&t->queued);
}

void gw_tracer_stop(struct gw_tracer *t, uint64_t deadline_ms)
{
    if (!t)
        return;
    uint64_t at = gw_now_ns() + GW_MIN(deadline_ms, (uint64_t)86400000) * 1000000ull;
    uv_mutex_lock(&t->mu);
    t->stopping = true;
    t->deadline_ns = at;
    atomic_store(&t->abort_at_ns, at);
    atomic_store(&t->abort_now, true);
    uv_cond_signal(&t->cv);
    uv_mutex_unlock(&t->mu);
    curl_multi_wakeup(t->multi); /* cut a POST short at the deadline */
    uv_thread_join(&t->thread);

    /* the deadline passed before these could be sent */
    uint64_t left = 0;
    while (t->count > 0) {
        gw_span_free(t->ring[t->head]);
        t->ring[t->head] = NULL;
        t->head = (t->head + 1) % t->cap;
        t->count--;
        left++;
    }
    atomic_fetch_add(&t->dropped, left);
    atomic_store(&t->queued, 0);

    curl_multi_cleanup(t->multi);
    curl_easy_cleanup(t->easy);
    for (struct curl_slist *l = t->headers; l; l = l->next)
        explicit_bzero(l->data, strlen(l->data));
    curl_slist_free_all(t->headers);
    uv_cond_destroy(&t->cv);
    uv_mutex_destroy(&t->mu);
    free(t->ring);
    free(t->endpoint);
    free(t->service_name);
    free(t->environment);
    free(t);
}
