/*
 * sim_server.c - hybridgw-sim's HTTP side (see sim_server.h).
 *
 * Threads. Each worker owns a loop and a server on the shared port and never
 * touches another worker's handles. What they share is in struct sim_shared:
 * the stats (atomics) and, under one mutex, the runtime knobs, the number of
 * concurrency slots in use and the FIFO of requests waiting for a slot.
 *
 * A generation request becomes a struct sim_stream (about 2 KiB, no other
 * per-stream buffers: each event is built in a stack buffer and written).
 * Its life:
 *
 *   on_request -- slot free --> TTFT --timer--> STREAMING --end--> DONE
 *        |                        ^              |   ^  \
 *        +-- no slot --> QUEUED --+-- INBOX -----+   |   +--> STALLED
 *                        (FIFO)    (other worker) BLOCKED (drain)
 *
 * A slot freed on any worker admits the head of the FIFO: the stream moves
 * to its owner's inbox and the owner is woken with uv_async_send. Only the
 * owner starts, paces, writes and frees a stream. The client going away
 * (abort callback) or a failed write frees it from any state; a stream is
 * freed only from its timer's close callback.
 */
#include "sim_server.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "hybridgw/core.h"
#include "hybridgw/http.h"
#include "hybridgw/log.h"

#include "sim_gen.h"
#include "sim_opts.h"
#include "sim_out.h"
#include "sim_req.h"
#include "sim_rng.h"
#include "sim_stats.h"

#define BURST_MAX 256          /* events written per callback before yielding */
#define SIM_BATCH (4 * SIM_EVENT_MAX) /* events due together go out in one write */
#define SMALL_BODY 16384       /* stack buffer for small JSON answers */

enum sim_st {
    ST_QUEUED = 0,   /* waiting for a slot, in the shared FIFO */
    ST_INBOX,        /* admitted by some worker, in the owner's inbox */
    ST_TTFT,         /* admitted; the timer runs until the head + first token */
    ST_STREAMING,    /* writing events, paced by the timer */
    ST_BLOCKED,      /* the client is slow: waiting for the drain callback */
    ST_STALLED,      /* stall fault: nothing more is ever written */
    ST_DONE,         /* ended or aborted; the timer handle is closing */
    ST_COUNT
};

static const char *const st_names[] = {
    "queued", "inbox", "ttft", "streaming", "blocked", "stalled", "done",
};
_Static_assert(sizeof(st_names) / sizeof(st_names[0]) == ST_COUNT, "st_names out of sync");

struct sim_worker;

struct sim_stream {
    struct sim_worker *w;         /* owner */
    struct gw_http_req *req;      /* NULL once the server has taken it back */
    uv_timer_t timer;             /* TTFT and pacing; data = this stream */
    struct sim_stream *prev, *next;  /* FIFO or inbox links (under mu) */
    enum sim_st st;               /* QUEUED/INBOX change under mu only */
    bool holds_slot;              /* counts in slots_used */
    bool waited;                  /* non-streaming: generation time passed */
    bool fault_fired;
    struct sim_fault fault;       /* effective fault for this request */
    double tps;                   /* effective tokens_per_sec */
    uint32_t ttft_ms;             /* effective TTFT */
    unsigned model;               /* metrics label index */
    uint32_t events;              /* stream events written */
    uint64_t t_arrive;            /* uv_hrtime() at on_request */
    uint64_t t_first;             /* uv_hrtime() when the head went out */
    uint64_t seq;                 /* process-wide request number */
    struct sim_gen g;
    struct sim_req rq;
};

struct sim_shared;

struct sim_worker {
    struct sim_shared *sh;
    unsigned idx;
    uv_loop_t loop;
    struct gw_http_server *srv;
    uv_async_t wake;              /* inbox has streams, or stop */
    uv_signal_t sigint, sigterm;  /* worker 0 only */
    uv_thread_t thread;
    bool closing;                 /* under mu: no more uv_async_send */
    struct sim_stream *inbox;     /* under mu: admitted streams to start */
};

struct sim_shared {
    const struct sim_opts *o;
    struct sim_stats stats;
    uv_mutex_t mu;
    struct sim_knobs knobs;       /* under mu */
    uint32_t slots_used;          /* under mu */
    struct sim_stream *qh, *qt;   /* under mu: FIFO of waiting streams */
    atomic_ullong seq;
    atomic_ullong fault_seq;
    atomic_bool stopping;
    struct sim_worker *workers;
    unsigned n_workers;
};

static void stream_pump(struct sim_stream *s);
static void stream_free(struct sim_stream *s);

static struct sim_worker *req_worker(struct gw_http_req *r)
{
    return gw_http_server_ud(gw_http_req_server(r));
}

static void vlog(const struct sim_shared *sh, const char *method, const char *path, int status,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* One line per request with --verbose. */
static void vlog(const struct sim_shared *sh, const char *method, const char *path, int status,
                 const char *fmt, ...)
{
    char extra[256] = "";
    va_list ap;
    if (!sh->o->verbose)
        return;
    if (fmt) {
        va_start(ap, fmt);
        vsnprintf(extra, sizeof(extra), fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "hybridgw-sim: %s %s %d%s%s\n", method, path, status, extra[0] ? " " : "",
            extra);
}

static const char *stream_path(const struct sim_stream *s)
{
    return s->rq.dialect == SIM_DIALECT_OPENAI ? "/v1/chat/completions" : "/v1/messages";
}

/* ------------------------------------------------------------ responses */

static void set_request_id(struct gw_http_req *r, enum sim_dialect d, uint64_t seq, char *out,
                           size_t outlen)
{
    snprintf(out, outlen, "req_sim%016llx", (unsigned long long)seq);
    gw_http_resp_header(r, d == SIM_DIALECT_ANTHROPIC ? "request-id" : "x-request-id", out);
}

/* Send a complete error response in dialect d. */
static void send_error(struct sim_shared *sh, struct gw_http_req *r, enum sim_dialect d, int status,
                       const char *msg, const char *param, int retry_after)
{
    char body[2048], rid[32];
    struct sim_out o;
    set_request_id(r, d, atomic_load(&sh->seq), rid, sizeof(rid));
    if (retry_after >= 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", retry_after);
        gw_http_resp_header(r, "retry-after", ra);
    }
    sim_out_fixed(&o, body, sizeof(body));
    sim_gen_error_body(&o, d, sh->o->error_shape, status, msg, param, rid);
    if (o.err) {   /* only a pathological message gets here */
        sim_out_reset(&o);
        sim_gen_error_body(&o, d, sh->o->error_shape, status, NULL, NULL, rid);
    }
    gw_http_resp_send(r, status, "application/json", o.p, o.len);
}

static void send_json(struct gw_http_req *r, int status, const struct sim_out *o)
{
    if (o->err) {
        static const char e[] = "{\"error\":{\"message\":\"response too large\","
                                "\"type\":\"InternalServerError\",\"param\":null,\"code\":500}}";
        gw_http_resp_send(r, 500, "application/json", e, sizeof(e) - 1);
        return;
    }
    gw_http_resp_send(r, status, "application/json", o->p, o->len);
}

/* --------------------------------------------------- admission (FIFO) */

static void q_push_locked(struct sim_shared *sh, struct sim_stream *s)
{
    s->next = NULL;
    s->prev = sh->qt;
    if (sh->qt)
        sh->qt->next = s;
    else
        sh->qh = s;
    sh->qt = s;
}

static void q_unlink_locked(struct sim_shared *sh, struct sim_stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        sh->qh = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        sh->qt = s->prev;
    s->prev = s->next = NULL;
}

static void inbox_unlink_locked(struct sim_worker *w, struct sim_stream *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        w->inbox = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

/* Give free slots to the head of the FIFO, in order. Each admitted stream
 * goes to its owner's inbox; the owner starts it when woken. */
static void admit_locked(struct sim_shared *sh)
{
    uint32_t max = sh->knobs.max_concurrency;
    while (sh->qh && (max == 0 || sh->slots_used < max)) {
        struct sim_stream *s = sh->qh;
        struct sim_worker *w = s->w;
        q_unlink_locked(sh, s);
        sh->slots_used++;
        s->holds_slot = true;
        s->st = ST_INBOX;
        atomic_fetch_sub(&sh->stats.m[s->model].waiting, 1);
        atomic_fetch_add(&sh->stats.m[s->model].running, 1);
        s->next = w->inbox;
        if (w->inbox)
            w->inbox->prev = s;
        w->inbox = s;
        if (!w->closing)
            uv_async_send(&w->wake);
        /* a closing owner aborts the stream, which takes it off the inbox */
    }
}

static void release_slot(struct sim_stream *s)
{
    struct sim_shared *sh = s->w->sh;
    if (!s->holds_slot)
        return;
    s->holds_slot = false;
    atomic_fetch_sub(&sh->stats.m[s->model].running, 1);
    uv_mutex_lock(&sh->mu);
    sh->slots_used--;
    admit_locked(sh);
    uv_mutex_unlock(&sh->mu);
}

/* ------------------------------------------------------ stream lifecycle */

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

/* Forget the stream: free its slot and close its timer (which frees it).
 * The request must already be ended or gone (s->req == NULL). */
static void stream_free(struct sim_stream *s)
{
    s->st = ST_DONE;
    release_slot(s);
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

static void arm(struct sim_stream *s, uint64_t ms);

static void on_timer(uv_timer_t *t)
{
    struct sim_stream *s = t->data;
    stream_pump(s);
}

static void arm(struct sim_stream *s, uint64_t ms)
{
    uv_timer_start(&s->timer, on_timer, ms, 0);
}

/* The stream ended normally: the whole response went out. */
static void stream_done(struct sim_stream *s)
{
    struct sim_shared *sh = s->w->sh;
    enum sim_finish f = s->g.cut ? SIM_FIN_LENGTH : SIM_FIN_STOP;
    atomic_fetch_add(&sh->stats.m[s->model].success[f], 1);
    atomic_fetch_add(&sh->stats.c.completed, 1);
    vlog(sh, "POST", stream_path(s), 200, "model=%s prompt=%u completion=%u %s%s", s->rq.model,
         s->rq.prompt_tokens, s->g.n_tokens, sim_gen_finish_reason(&s->g),
         s->fault.kind != SIM_FAULT_NONE ? " (fault)" : "");
    s->req = NULL;
    stream_free(s);
}

/* Drop the connection: a disconnect fault, a failed write, or an event that
 * did not fit the scratch buffer. */
static void stream_reset(struct sim_stream *s, bool cancelled, const char *why)
{
    struct sim_shared *sh = s->w->sh;
    atomic_fetch_add(&sh->stats.m[s->model].success[SIM_FIN_ABORT], 1);
    if (cancelled)
        atomic_fetch_add(&sh->stats.c.cancelled, 1);
    vlog(sh, "POST", stream_path(s), 0, "model=%s reset: %s", s->rq.model, why);
    if (s->req)
        gw_http_req_reset(s->req);
    s->req = NULL;
    stream_free(s);
}

/* The server's abort callback: the client went away (or the server is
 * closing) before the response ended. The request is gone after we return. */
static void on_abort(struct gw_http_req *r, void *ud)
{
    struct sim_stream *s = ud;
    struct sim_shared *sh = s->w->sh;
    GW_UNUSED(r);
    s->req = NULL;
    atomic_fetch_add(&sh->stats.c.cancelled, 1);
    atomic_fetch_add(&sh->stats.m[s->model].success[SIM_FIN_ABORT], 1);
    vlog(sh, "POST", stream_path(s), 499, "model=%s cancelled in state %s after %u events",
         s->rq.model, st_names[s->st], s->events);
    uv_mutex_lock(&sh->mu);
    if (s->st == ST_QUEUED) {
        q_unlink_locked(sh, s);
        atomic_fetch_sub(&sh->stats.m[s->model].waiting, 1);
    } else if (s->st == ST_INBOX) {
        inbox_unlink_locked(s->w, s);
    }
    uv_mutex_unlock(&sh->mu);
    stream_free(s);
}

static void on_drain(struct gw_http_req *r, void *ud)
{
    struct sim_stream *s = ud;
    GW_UNUSED(r);
    if (s->st == ST_BLOCKED) {
        s->st = ST_STREAMING;
        stream_pump(s);
    }
}

/* Admitted: count the prompt and wait for the TTFT. Never writes, so it is
 * safe from any callback. */
static void stream_start(struct sim_stream *s)
{
    struct sim_shared *sh = s->w->sh;
    atomic_fetch_add(&sh->stats.m[s->model].prompt_tokens, s->rq.prompt_tokens);
    if (s->fault.kind == SIM_FAULT_STALL && s->fault.at == 0) {
        s->st = ST_STALLED;   /* accept, never answer */
        return;
    }
    s->st = ST_TTFT;
    arm(s, s->ttft_ms);
}

/* Write one event; false when the stream must stop (it was freed, or is
 * blocked until the drain callback). */
static bool put_event(struct sim_stream *s, const struct sim_out *o)
{
    int rc;
    if (o->err) {
        stream_reset(s, false, "event larger than the scratch buffer");
        return false;
    }
    s->events++;
    rc = gw_http_resp_write(s->req, o->p, o->len);
    if (rc < 0) {
        stream_reset(s, true, "write failed");
        return false;
    }
    if (rc == 1) {
        s->st = ST_BLOCKED;
        return false;
    }
    return true;
}

/* Non-streaming: answer with the whole body (or its fault variant). */
static void respond_whole(struct sim_stream *s)
{
    struct sim_shared *sh = s->w->sh;
    struct sim_out o;
    char rid[32];
    size_t max = 8192 + (size_t)s->g.n_tokens * 24;
    enum sim_fault_kind k = s->fault.kind;

    if (k == SIM_FAULT_DISCONNECT && s->fault.at == 0) {
        stream_reset(s, false, "disconnect fault");
        return;
    }
    if (k == SIM_FAULT_ERROR) {
        int status = s->fault.status ? s->fault.status
                     : s->rq.dialect == SIM_DIALECT_ANTHROPIC ? 529 : 500;
        send_error(sh, s->req, s->rq.dialect, status, NULL, NULL, -1);
        atomic_fetch_add(&sh->stats.m[s->model].success[SIM_FIN_ABORT], 1);
        vlog(sh, "POST", stream_path(s), status, "model=%s error fault", s->rq.model);
        s->req = NULL;
        stream_free(s);
        return;
    }
    sim_out_heap(&o, max);
    sim_gen_body(&s->g, &o);
    if (o.err) {
        sim_out_free(&o);
        stream_reset(s, false, "body too large");
        return;
    }
    atomic_fetch_add(&sh->stats.m[s->model].generation_tokens, s->g.n_tokens);
    if (s->g.n_tokens)
        sim_stats_observe_ttft(&sh->stats, s->model,
                               (double)(uv_hrtime() - s->t_arrive) / 1e9);
    set_request_id(s->req, s->rq.dialect, s->seq, rid, sizeof(rid));
    if (k == SIM_FAULT_MALFORMED) {
        gw_http_resp_send(s->req, 200, "application/json", o.p, o.len / 2);
        sim_out_free(&o);
        stream_done(s);
        return;
    }
    if (k == SIM_FAULT_STALL || k == SIM_FAULT_DISCONNECT) {
        gw_http_resp_start(s->req, 200, "application/json");
        int rc = gw_http_resp_write(s->req, o.p, o.len / 2);
        sim_out_free(&o);
        if (rc < 0 || k == SIM_FAULT_DISCONNECT) {
            stream_reset(s, rc < 0, "disconnect fault");
            return;
        }
        s->st = ST_STALLED;
        return;
    }
    gw_http_resp_send(s->req, 200, "application/json", o.p, o.len);
    sim_out_free(&o);
    stream_done(s);
}

/* Send the stream head and set the pacing origin. */
static void start_stream_head(struct sim_stream *s)
{
    char rid[32];
    set_request_id(s->req, s->rq.dialect, s->seq, rid, sizeof(rid));
    gw_http_resp_header(s->req, "cache-control", "no-cache");
    gw_http_resp_header(s->req, "x-accel-buffering", "no");
    gw_http_resp_start(s->req, 200, "text/event-stream; charset=utf-8");
    s->t_first = uv_hrtime();
    s->st = ST_STREAMING;
}

/* Handle a fault that strikes now (events == at). Returns true when the
 * pump should go on writing. */
static bool fire_fault(struct sim_stream *s)
{
    struct sim_shared *sh = s->w->sh;
    char buf[SIM_EVENT_MAX];
    struct sim_out o;
    s->fault_fired = true;
    switch (s->fault.kind) {
    case SIM_FAULT_STALL:
        s->st = ST_STALLED;
        return false;
    case SIM_FAULT_DISCONNECT:
        stream_reset(s, false, "disconnect fault");
        return false;
    case SIM_FAULT_MALFORMED:
        sim_out_fixed(&o, buf, sizeof(buf));
        sim_gen_malformed_event(&s->g, &o);
        return put_event(s, &o);
    case SIM_FAULT_ERROR:
        sim_out_fixed(&o, buf, sizeof(buf));
        sim_gen_error_event(&s->g, s->fault.status, sh->o->error_shape, &o);
        if (gw_http_resp_write(s->req, o.p, o.len) < 0) {
            stream_reset(s, true, "write failed");
            return false;
        }
        gw_http_resp_end(s->req);
        atomic_fetch_add(&sh->stats.m[s->model].success[SIM_FIN_ABORT], 1);
        vlog(sh, "POST", stream_path(s), 200, "model=%s error event after %u events",
             s->rq.model, s->events);
        s->req = NULL;
        stream_free(s);
        return false;
    default:
        return true;
    }
}

/* Write the batched events; false when the stream must stop (freed, or
 * blocked until the drain callback). */
static bool flush(struct sim_stream *s, const char *buf, size_t *blen)
{
    int rc;
    if (*blen == 0)
        return true;
    rc = gw_http_resp_write(s->req, buf, *blen);
    *blen = 0;
    if (rc < 0) {
        stream_reset(s, true, "write failed");
        return false;
    }
    if (rc == 1) {
        s->st = ST_BLOCKED;
        return false;
    }
    return true;
}

/* Move the stream forward as far as pacing and the client allow. Runs on
 * the owner's loop from the timer, the drain callback or a start. Events
 * that are due together (no pacing, or several tokens due in one tick) are
 * batched into one write of up to SIM_BATCH bytes; a paced stream writes
 * each token as it comes due. */
static void stream_pump(struct sim_stream *s)
{
    struct sim_shared *sh = s->w->sh;
    char buf[SIM_BATCH];
    size_t blen = 0;
    struct sim_out o;

    if (s->st == ST_TTFT) {
        if (!s->rq.stream) {
            if (!s->waited && s->tps > 0 && s->g.n_tokens > 1) {
                s->waited = true;
                arm(s, (uint64_t)ceil((s->g.n_tokens - 1) * 1000.0 / s->tps));
                return;
            }
            respond_whole(s);
            return;
        }
        if (s->fault.kind == SIM_FAULT_DISCONNECT && s->fault.at == 0) {
            stream_reset(s, false, "disconnect fault");
            return;
        }
        start_stream_head(s);
    }
    if (s->st != ST_STREAMING)
        return;
    for (unsigned n = 0;; n++) {
        if (s->fault.kind >= SIM_FAULT_STALL && !s->fault_fired && s->events == s->fault.at) {
            if (!flush(s, buf, &blen) || !fire_fault(s))
                return;
            continue;
        }
        bool tok = sim_gen_next_is_token(&s->g);
        if (tok && s->tps > 0) {
            uint64_t due = s->t_first + (uint64_t)((double)s->g.tok * 1e9 / s->tps);
            uint64_t now = uv_hrtime();
            if (now < due) {
                if (flush(s, buf, &blen))
                    arm(s, (due - now + 999999) / 1000000);
                return;
            }
        }
        if (n >= BURST_MAX) {   /* let other streams and I/O run */
            if (flush(s, buf, &blen))
                arm(s, 0);
            return;
        }
        if (sizeof(buf) - blen < SIM_EVENT_MAX && !flush(s, buf, &blen))
            return;
        sim_out_fixed(&o, buf + blen, sizeof(buf) - blen);
        if (sim_gen_next(&s->g, &o) == SIM_EV_END) {
            if (!flush(s, buf, &blen))
                return;   /* blocked: the drain callback comes back here */
            gw_http_resp_end(s->req);
            stream_done(s);
            return;
        }
        if (o.err) {
            stream_reset(s, false, "event larger than the scratch buffer");
            return;
        }
        if (tok) {
            atomic_fetch_add(&sh->stats.m[s->model].generation_tokens, 1);
            if (s->g.tok == 1)
                sim_stats_observe_ttft(&sh->stats, s->model,
                                       (double)(uv_hrtime() - s->t_arrive) / 1e9);
        }
        s->events++;
        blen += o.len;
    }
}

/* ------------------------------------------------------------ handlers */

/* Decide the fault for a request: the x-sim-fault header, then an in-prompt
 * directive, then the configured fault with probability fault_rate. */
static int pick_fault(struct sim_shared *sh, struct gw_http_req *r, const struct sim_req *rq,
                      const struct sim_knobs *k, struct sim_fault *f, struct sim_err *e)
{
    gw_str h = gw_http_req_header(r, "x-sim-fault");
    *f = (struct sim_fault){SIM_FAULT_NONE, 0, -1, 0, 0};
    if (h.p) {
        char err[224];
        if (sim_fault_parse(h.p, h.len, f, err, sizeof(err)) != 0) {
            e->status = 400;
            snprintf(e->param, sizeof(e->param), "x-sim-fault");
            snprintf(e->msg, sizeof(e->msg), "x-sim-fault: %s", err);
            return -1;
        }
        return 0;
    }
    if (rq->dir.has_fault) {
        *f = rq->dir.fault;
        return 0;
    }
    if (!sim_fault_active(&k->fault) || k->fault_rate <= 0)
        return 0;
    if (k->fault_rate < 1) {
        uint64_t st = sim_mix(sh->o->seed ^ 0xfa17u, atomic_fetch_add(&sh->fault_seq, 1));
        if (sim_rng_unit(&st) >= k->fault_rate)
            return 0;
    }
    *f = k->fault;
    return 0;
}

static bool model_served(const struct sim_opts *o, const char *m)
{
    for (unsigned i = 0; i < o->n_models; i++)
        if (strcmp(o->models[i], m) == 0)
            return true;
    return false;
}

static void handle_generate(struct sim_worker *w, struct gw_http_req *r, enum sim_dialect d,
                            bool count_only)
{
    struct sim_shared *sh = w->sh;
    const struct sim_opts *o = sh->o;
    const char *path = d == SIM_DIALECT_OPENAI ? "/v1/chat/completions"
                       : count_only ? "/v1/messages/count_tokens" : "/v1/messages";
    gw_str body = gw_http_req_body(r);
    struct sim_err e;
    struct sim_knobs k;
    struct sim_fault f;
    struct sim_stream *s = gw_calloc(1, sizeof(*s));

    if (sim_req_parse(&s->rq, d, body.p ? body.p : "", body.len, count_only, o->seed, &e) != 0)
        goto reject;
    if (o->strict_models && !model_served(o, s->rq.model)) {
        e.status = 404;
        snprintf(e.param, sizeof(e.param), "model");
        if (d == SIM_DIALECT_OPENAI)
            snprintf(e.msg, sizeof(e.msg), "The model `%.200s` does not exist.", s->rq.model);
        else
            snprintf(e.msg, sizeof(e.msg), "model: %.200s", s->rq.model);
        goto reject;
    }
    if (sim_req_check_len(&s->rq, o->max_model_len, &e) != 0)
        goto reject;
    if (count_only) {
        char out[64];
        int n = snprintf(out, sizeof(out), "{\"input_tokens\":%u}", s->rq.prompt_tokens);
        gw_http_resp_send(r, 200, "application/json", out, (size_t)n);
        vlog(sh, "POST", path, 200, "model=%s input_tokens=%u", s->rq.model, s->rq.prompt_tokens);
        free(s);
        return;
    }
    uv_mutex_lock(&sh->mu);
    k = sh->knobs;
    uv_mutex_unlock(&sh->mu);
    if (pick_fault(sh, r, &s->rq, &k, &f, &e) != 0)
        goto reject;

    s->w = w;
    s->req = r;
    s->fault = f;
    s->seq = atomic_fetch_add(&sh->seq, 1) + 1;
    s->model = sim_stats_model_index(&sh->stats, s->rq.model);
    s->t_arrive = uv_hrtime();
    s->ttft_ms = s->rq.dir.ttft_ms >= 0 ? (uint32_t)s->rq.dir.ttft_ms : k.ttft_ms;
    s->tps = s->rq.dir.tokens_per_sec >= 0 ? s->rq.dir.tokens_per_sec : k.tokens_per_sec;
    if (f.slow_tps > 0)
        s->tps = f.slow_tps;
    sim_gen_init(&s->g, &s->rq, k.output_tokens, o->seed, s->seq, (uint64_t)time(NULL));
    if (s->rq.stream)
        atomic_fetch_add(&sh->stats.c.streams, 1);
    if (sim_fault_active(&f))
        atomic_fetch_add(&sh->stats.c.faults, 1);

    if (f.kind == SIM_FAULT_STATUS) {
        send_error(sh, r, d, f.status, NULL, NULL, f.retry_after);
        vlog(sh, "POST", path, f.status, "model=%s status fault", s->rq.model);
        free(s);
        return;
    }

    uv_timer_init(&w->loop, &s->timer);
    s->timer.data = s;
    gw_http_req_set_data(r, s);
    gw_http_req_set_abort(r, on_abort, s);
    gw_http_req_set_drain(r, on_drain, s);

    uv_mutex_lock(&sh->mu);
    s->st = ST_TTFT;
    if (!sh->qh && (sh->knobs.max_concurrency == 0 ||
                    sh->slots_used < sh->knobs.max_concurrency)) {
        sh->slots_used++;
        s->holds_slot = true;
        atomic_fetch_add(&sh->stats.m[s->model].running, 1);
    } else {
        s->st = ST_QUEUED;
        q_push_locked(sh, s);
        atomic_fetch_add(&sh->stats.m[s->model].waiting, 1);
    }
    uv_mutex_unlock(&sh->mu);
    if (s->holds_slot)
        stream_start(s);
    return;

reject:
    atomic_fetch_add(&sh->stats.c.rejected, 1);
    vlog(sh, "POST", path, e.status, "%s", e.msg);
    send_error(sh, r, d, e.status, e.msg, e.param, -1);
    free(s);
}

static void handle_models(struct sim_worker *w, struct gw_http_req *r, gw_str path)
{
    struct sim_shared *sh = w->sh;
    const struct sim_opts *o = sh->o;
    struct sim_out out;
    gw_str id = {path.p + 11, path.len - 11};   /* after "/v1/models/" */
    bool anthropic = gw_http_req_header(r, "anthropic-version").p != NULL;

    sim_out_heap(&out, 1 << 20);
    if (path.len <= 11) {
        sim_gen_models(&out, o->models, o->n_models, o->max_model_len, 1700000000, anthropic);
        send_json(r, 200, &out);
        sim_out_free(&out);
        return;
    }
    for (unsigned i = 0; i < o->n_models; i++) {
        if (gw_str_eq_c(id, o->models[i])) {
            sim_gen_model_card(&out, o->models[i], o->max_model_len, 1700000000);
            send_json(r, 200, &out);
            sim_out_free(&out);
            return;
        }
    }
    sim_out_free(&out);
    char msg[300];
    snprintf(msg, sizeof(msg), "The model `%.*s` does not exist.", (int)GW_MIN(id.len, 200), id.p);
    send_error(sh, r, anthropic ? SIM_DIALECT_ANTHROPIC : SIM_DIALECT_OPENAI, 404, msg, "model", -1);
}

static void handle_sim(struct sim_worker *w, struct gw_http_req *r, gw_str path, bool post)
{
    struct sim_shared *sh = w->sh;
    char buf[SMALL_BODY];
    struct sim_out o;
    sim_out_fixed(&o, buf, sizeof(buf));

    if (gw_str_eq_c(path, "/sim/stats") && !post) {
        sim_stats_render_json(&sh->stats, &o);
        send_json(r, 200, &o);
    } else if (gw_str_eq_c(path, "/sim/reset") && post) {
        sim_stats_reset(&sh->stats);
        sim_stats_render_json(&sh->stats, &o);
        send_json(r, 200, &o);
    } else if (gw_str_eq_c(path, "/sim/config")) {
        char err[256];
        struct sim_knobs k;
        if (post) {
            gw_str body = gw_http_req_body(r);
            uv_mutex_lock(&sh->mu);
            k = sh->knobs;
            int rc = sim_knobs_apply_json(&k, body.p ? body.p : "", body.len, err, sizeof(err));
            if (rc == 0) {
                sh->knobs = k;
                admit_locked(sh);   /* a larger limit lets waiting requests in */
            }
            uv_mutex_unlock(&sh->mu);
            if (rc != 0) {
                send_error(sh, r, SIM_DIALECT_OPENAI, 400, err, NULL, -1);
                return;
            }
        } else {
            uv_mutex_lock(&sh->mu);
            k = sh->knobs;
            uv_mutex_unlock(&sh->mu);
        }
        sim_knobs_to_json(&k, &o);
        send_json(r, 200, &o);
    } else {
        send_error(sh, r, SIM_DIALECT_OPENAI, 405, "Method Not Allowed", NULL, -1);
    }
}

static void on_request(struct gw_http_req *r)
{
    struct sim_worker *w = req_worker(r);
    struct sim_shared *sh = w->sh;
    gw_str m = gw_http_req_method(r), p = gw_http_req_path(r);
    bool get = gw_str_eq_c(m, "GET"), post = gw_str_eq_c(m, "POST");
    enum sim_endpoint ep = SIM_EP_OTHER;
    char mb[16], pb[128];

    snprintf(mb, sizeof(mb), "%.*s", (int)GW_MIN(m.len, 15), m.p);
    snprintf(pb, sizeof(pb), "%.*s", (int)GW_MIN(p.len, 127), p.p);
    if (gw_str_eq_c(p, "/v1/chat/completions"))
        ep = SIM_EP_CHAT;
    else if (gw_str_eq_c(p, "/v1/messages"))
        ep = SIM_EP_MESSAGES;
    else if (gw_str_eq_c(p, "/v1/messages/count_tokens"))
        ep = SIM_EP_COUNT_TOKENS;
    else if (gw_str_eq_c(p, "/v1/models") || (p.len > 11 && memcmp(p.p, "/v1/models/", 11) == 0))
        ep = SIM_EP_MODELS;
    else if (gw_str_eq_c(p, "/health"))
        ep = SIM_EP_HEALTH;
    else if (gw_str_eq_c(p, "/metrics"))
        ep = SIM_EP_METRICS;
    else if (p.len > 5 && memcmp(p.p, "/sim/", 5) == 0)
        ep = SIM_EP_SIM;
    atomic_fetch_add(&sh->stats.c.requests[ep], 1);

    bool want_post = ep == SIM_EP_CHAT || ep == SIM_EP_MESSAGES || ep == SIM_EP_COUNT_TOKENS;
    if (ep == SIM_EP_OTHER) {
        static const char nf[] = "{\"detail\":\"Not Found\"}";
        gw_http_resp_send(r, 404, "application/json", nf, sizeof(nf) - 1);
        vlog(sh, mb, pb, 404, NULL);
        return;
    }
    if (ep != SIM_EP_SIM && !(want_post ? post : get)) {
        static const char na[] = "{\"detail\":\"Method Not Allowed\"}";
        gw_http_resp_header(r, "allow", want_post ? "POST" : "GET");
        gw_http_resp_send(r, 405, "application/json", na, sizeof(na) - 1);
        vlog(sh, mb, pb, 405, NULL);
        return;
    }
    switch (ep) {
    case SIM_EP_CHAT:
        handle_generate(w, r, SIM_DIALECT_OPENAI, false);
        return;
    case SIM_EP_MESSAGES:
        handle_generate(w, r, SIM_DIALECT_ANTHROPIC, false);
        return;
    case SIM_EP_COUNT_TOKENS:
        handle_generate(w, r, SIM_DIALECT_ANTHROPIC, true);
        return;
    case SIM_EP_MODELS:
        handle_models(w, r, p);
        break;
    case SIM_EP_HEALTH:
        gw_http_resp_send(r, 200, "text/plain", "", 0);
        break;
    case SIM_EP_METRICS: {
        struct sim_out o;
        uint32_t maxc;
        uv_mutex_lock(&sh->mu);
        maxc = sh->knobs.max_concurrency;
        uv_mutex_unlock(&sh->mu);
        sim_out_heap(&o, 1 << 22);
        sim_stats_render_prom(&sh->stats, maxc, &o);
        gw_http_resp_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", o.p, o.len);
        sim_out_free(&o);
        break;
    }
    case SIM_EP_SIM:
        handle_sim(w, r, p, post);
        break;
    default:
        break;
    }
    vlog(sh, mb, pb, 200, NULL);
}

/* The server's own errors (400 malformed, 413, 431, 408) in the dialect
 * the path suggests. */
static void on_error(struct gw_http_req *r, int status, const char *msg)
{
    struct sim_worker *w = req_worker(r);
    gw_str p = gw_http_req_path(r);
    enum sim_dialect d = p.len >= 12 && memcmp(p.p, "/v1/messages", 12) == 0
                         ? SIM_DIALECT_ANTHROPIC : SIM_DIALECT_OPENAI;
    send_error(w->sh, r, d, status, msg, NULL, -1);
}

/* -------------------------------------------------------------- workers */

static void on_wake(uv_async_t *a)
{
    struct sim_worker *w = a->data;
    struct sim_shared *sh = w->sh;
    struct sim_stream *list;

    if (atomic_load(&sh->stopping)) {
        uv_mutex_lock(&sh->mu);
        w->closing = true;
        uv_mutex_unlock(&sh->mu);
        /* aborts every request, queued and admitted ones included */
        gw_http_server_close(w->srv, NULL, NULL);
        uv_close((uv_handle_t *)&w->wake, NULL);
        if (w->idx == 0) {
            uv_close((uv_handle_t *)&w->sigint, NULL);
            uv_close((uv_handle_t *)&w->sigterm, NULL);
        }
        return;
    }
    uv_mutex_lock(&sh->mu);
    list = w->inbox;
    w->inbox = NULL;
    for (struct sim_stream *s = list; s; s = s->next)
        s->st = ST_TTFT;   /* out of the inbox: only this thread sees it now */
    uv_mutex_unlock(&sh->mu);
    while (list) {
        struct sim_stream *s = list;
        list = s->next;
        s->prev = s->next = NULL;
        stream_start(s);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct sim_worker *w = h->data;
    struct sim_shared *sh = w->sh;
    GW_UNUSED(signum);
    if (atomic_exchange(&sh->stopping, true))
        return;
    uv_mutex_lock(&sh->mu);
    for (unsigned i = 0; i < sh->n_workers; i++)
        if (!sh->workers[i].closing)
            uv_async_send(&sh->workers[i].wake);
    uv_mutex_unlock(&sh->mu);
}

static void worker_main(void *arg)
{
    struct sim_worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* Print host part of "HOST:PORT" as a URL host. */
static void listen_host(const char *listen, char *out, size_t outlen)
{
    const char *colon = strrchr(listen, ':');
    size_t n = colon ? (size_t)(colon - listen) : strlen(listen);
    if (n == 0)
        snprintf(out, outlen, "0.0.0.0");
    else
        snprintf(out, outlen, "%.*s", (int)n, listen);
}

int sim_server_run(const struct sim_opts *o)
{
    struct sim_shared *sh = gw_calloc(1, sizeof(*sh));
    struct sockaddr_storage addr;
    struct gw_http_server_opts so;
    char host[256];
    int rc, port = 0;
    unsigned started = 0;

    gw_log_level = o->quiet ? GW_LOG_ERROR : o->verbose ? GW_LOG_INFO : GW_LOG_WARN;
    sh->o = o;
    sh->knobs = o->knobs;
    sim_stats_init(&sh->stats, o->models, o->n_models);
    uv_mutex_init(&sh->mu);
    sh->n_workers = o->threads;
    sh->workers = gw_calloc(o->threads, sizeof(*sh->workers));

    if (gw_http_parse_addr(o->listen, &addr) != 0) {
        fprintf(stderr, "hybridgw-sim: --listen: cannot parse address '%s'\n", o->listen);
        return 2;
    }
    gw_http_server_opts_default(&so);
    so.on_request = on_request;
    so.on_error = on_error;
    so.idle_timeout_ms = 300000;

    for (unsigned i = 0; i < o->threads; i++) {
        struct sim_worker *w = &sh->workers[i];
        w->sh = sh;
        w->idx = i;
        uv_loop_init(&w->loop);
        uv_async_init(&w->loop, &w->wake, on_wake);
        w->wake.data = w;
        so.ud = w;
        if (i > 0) {
            if (addr.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&addr)->sin6_port = htons((uint16_t)port);
            else
                ((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)port);
        }
        rc = gw_http_server_start(&w->loop, (const struct sockaddr *)&addr, &so, &w->srv);
        if (rc != 0) {
            fprintf(stderr, "hybridgw-sim: cannot listen on %s: %s\n", o->listen, uv_strerror(rc));
            return 1;
        }
        if (i == 0)
            port = gw_http_server_port(w->srv);
    }
    uv_signal_init(&sh->workers[0].loop, &sh->workers[0].sigint);
    uv_signal_init(&sh->workers[0].loop, &sh->workers[0].sigterm);
    sh->workers[0].sigint.data = sh->workers[0].sigterm.data = &sh->workers[0];
    uv_signal_start(&sh->workers[0].sigint, on_signal, SIGINT);
    uv_signal_start(&sh->workers[0].sigterm, on_signal, SIGTERM);

    listen_host(o->listen, host, sizeof(host));
    fprintf(stderr, "hybridgw-sim listening on http://%s:%d\n", host, port);
    fflush(stderr);

    for (unsigned i = 1; i < o->threads; i++) {
        if (uv_thread_create(&sh->workers[i].thread, worker_main, &sh->workers[i]) != 0) {
            fprintf(stderr, "hybridgw-sim: cannot start worker thread %u\n", i);
            exit(1);
        }
        started++;
    }
    worker_main(&sh->workers[0]);
    for (unsigned i = 1; i <= started; i++)
        uv_thread_join(&sh->workers[i].thread);
    for (unsigned i = 0; i < o->threads; i++)
        uv_loop_close(&sh->workers[i].loop);
    uv_mutex_destroy(&sh->mu);
    free(sh->workers);
    free(sh);
    return 0;
}
