/*
 * budget.c - budget reservations for the request path.
 *
 * The store blocks, so one thread of its own (with its own connection)
 * runs the operations. A worker submits a reservation with a callback; the
 * answer comes back to that worker's loop through a uv_async and a
 * completion list, never on the store thread. Settling and releasing are
 * fire and forget. A key without any budget is not reserved for at all:
 * its ledger record books its spend (gw_spend_rec.charge). The thread takes
 * whatever is queued (up to BATCH_MAX) and runs it in two transactions,
 * the settles first, then the reservations in order: under load one commit
 * serves dozens of requests. In PostgreSQL the reservation is atomic across
 * every replica sharing the database, so N gateways enforce one budget,
 * with an overspend bounded by what one request costs beyond its
 * reservation.
 */
#include <stdlib.h>
#include <string.h>

#include "hybridgw/log.h"
#include "gateway/budget.h"
#include "gateway/gateway.h"

enum op_kind { OP_RESERVE = 0, OP_SETTLE = 1, OP_RELEASE = 2 };

/* Ops taken off the queue at once and run in one transaction per kind. */
#define BATCH_MAX 128

struct op {
    struct op *next;
    enum op_kind kind;
    struct gw_vkey key;         /* RESERVE */
    double usd;
    char rid[48];
    struct gw_worker *w;
    gw_budget_cb cb;
    void *ctx;
    int rc;                     /* result */
    char why[160];
    unsigned tries;             /* settle/release retries */
};

struct port {                   /* one per worker */
    uv_async_t async;
    uv_mutex_t lock;
    struct op *done, *done_tail;
    struct gw_worker *w;
    bool attached;
    bool closing;               /* detach asked; close once nothing is pending */
    size_t outstanding;         /* reservations not answered yet (worker thread only) */
};

struct gw_budget {
    struct gw_store *store;
    uv_thread_t thread;
    uv_mutex_t lock;
    uv_cond_t wake;
    struct op *head, *tail;
    bool stopping;
    struct port ports[GW_MAX_WORKERS];
};

static struct port *port_of(struct gw_budget *b, struct gw_worker *w)
{
    return &b->ports[w->id % GW_MAX_WORKERS];
}

static void deliver(struct gw_budget *b, struct op *o)
{
    struct port *pt = port_of(b, o->w);
    uv_mutex_lock(&pt->lock);
    o->next = NULL;
    if (pt->done_tail)
        pt->done_tail->next = o;
    else
        pt->done = o;
    pt->done_tail = o;
    uv_mutex_unlock(&pt->lock);
    uv_async_send(&pt->async);
}

static void submit(struct gw_budget *b, struct op *o);

/* Why a reservation did not fit, for the client. */
static void explain_over(struct op *o, const struct gw_spend_state *st)
{
    const struct gw_vkey *k = &o->key;
    if (k->budget_day > 0 && st->key_day + o->usd > k->budget_day)
        snprintf(o->why, sizeof(o->why), "the key's daily budget (%.6g of %.6g USD used)",
                 st->key_day, k->budget_day);
    else if (k->budget_month > 0 && st->key_month + o->usd > k->budget_month)
        snprintf(o->why, sizeof(o->why), "the key's monthly budget (%.6g of %.6g USD used)",
                 st->key_month, k->budget_month);
    else if (k->budget_total > 0 && st->key_total + o->usd > k->budget_total)
        snprintf(o->why, sizeof(o->why), "the key's total budget (%.6g of %.6g USD used)",
                 st->key_total, k->budget_total);
    else
        snprintf(o->why, sizeof(o->why), "the budget of team %s", k->team);
}

/* Reservations: one transaction for the lot; when it fails, one at a time,
 * so one bad request does not fail the others. Answers go to the workers. */
static void run_reserves(struct gw_budget *b, struct op **ops, size_t n, int64_t now)
{
    struct gw_reserve_req *rq = gw_calloc(n, sizeof(*rq));
    for (size_t i = 0; i < n; i++) {
        rq[i].key = &ops[i]->key;
        rq[i].max_usd = ops[i]->usd;
    }
    bool batched = n > 1 && gw_store_reserve_batch(b->store, rq, n, now) == GW_STORE_OK;
    for (size_t i = 0; i < n; i++) {
        struct op *o = ops[i];
        struct gw_spend_state st;
        if (batched) {
            o->rc = rq[i].rc;
            snprintf(o->rid, sizeof(o->rid), "%s", rq[i].rid);
            st = rq[i].state;
        } else {
            o->rc = gw_store_reserve(b->store, &o->key, o->usd, now, o->rid, sizeof(o->rid), &st);
        }
        if (o->rc == GW_STORE_OVER_BUDGET)
            explain_over(o, &st);
        else if (o->rc != GW_STORE_OK)
            snprintf(o->why, sizeof(o->why), "%s", gw_store_error(b->store));
        deliver(b, o);
    }
    free(rq);
}

/* Settles and releases: one transaction. When the database refuses
 * it they go back in the queue and are tried again a second later (a lost
 * settle would leave the whole reservation held until it expires, and the
 * real cost never charged), for about five minutes. Returns true when it
 * put something back. */
static bool run_settles(struct gw_budget *b, struct op **ops, size_t n, int64_t now,
                        bool stopping)
{
    struct gw_settle_req *sr = gw_calloc(n, sizeof(*sr));
    for (size_t i = 0; i < n; i++) {
        struct op *o = ops[i];
        snprintf(sr[i].rid, sizeof(sr[i].rid), "%.39s", o->rid);
        sr[i].usd = o->usd;
        sr[i].release = o->kind == OP_RELEASE;
    }
    int rc = gw_store_settle_batch(b->store, sr, n, now);
    free(sr);
    bool requeued = false;
    for (size_t i = 0; i < n; i++) {
        struct op *o = ops[i];
        if (rc == GW_STORE_OK) {
            free(o);
            continue;
        }
        if (stopping || ++o->tries > 300) {
            gw_log_error("budget: giving up on booking %.6g USD (%s): %s", o->usd,
                         stopping ? "shutting down" : "300 tries",
                         gw_store_error(b->store));
            free(o);
            continue;
        }
        if (o->tries == 1 && i == 0)
            gw_log_error("budget: could not book %zu settles/releases (%s); retrying every "
                         "second", n, gw_store_error(b->store));
        submit(b, o);
        requeued = true;
    }
    return requeued;
}

/* Take up to BATCH_MAX ops, run the settles first (they free budget for the
 * reservations queued behind them), then the reservations. */
static void thread_main(void *arg)
{
    struct gw_budget *b = arg;
    struct op *res[BATCH_MAX], *set[BATCH_MAX];
    for (;;) {
        uv_mutex_lock(&b->lock);
        while (!b->head && !b->stopping)
            uv_cond_wait(&b->wake, &b->lock);
        if (!b->head) {
            uv_mutex_unlock(&b->lock);
            break;
        }
        size_t nres = 0, nset = 0;
        while (b->head && nres + nset < BATCH_MAX) {
            struct op *o = b->head;
            b->head = o->next;
            if (o->kind == OP_RESERVE)
                res[nres++] = o;
            else
                set[nset++] = o;
        }
        if (!b->head)
            b->tail = NULL;
        bool stopping = b->stopping;
        uv_mutex_unlock(&b->lock);
        int64_t now = (int64_t)(gw_wall_ns() / 1000000000ull);
        bool again = nset > 0 && run_settles(b, set, nset, now, stopping);
        if (nres > 0)
            run_reserves(b, res, nres, now);
        if (again && !stopping)
            uv_sleep(1000);
    }
}

struct gw_budget *gw_budget_start(const char *url, char *err, size_t errlen)
{
    struct gw_store *s = gw_store_open(url, err, errlen);
    if (!s)
        return NULL;
    struct gw_budget *b = gw_calloc(1, sizeof(*b));
    b->store = s;
    uv_mutex_init(&b->lock);
    uv_cond_init(&b->wake);
    if (uv_thread_create(&b->thread, thread_main, b) != 0) {
        snprintf(err, errlen, "budget: cannot start its thread");
        gw_store_close(s);
        free(b);
        return NULL;
    }
    return b;
}

static void on_async(uv_async_t *a)
{
    struct port *pt = a->data;
    uv_mutex_lock(&pt->lock);
    struct op *o = pt->done;
    pt->done = pt->done_tail = NULL;
    uv_mutex_unlock(&pt->lock);
    while (o) {
        struct op *next = o->next;
        pt->outstanding--;
        o->cb(o->ctx, o->rc, o->rid, o->why);
        free(o);
        o = next;
    }
    if (pt->closing && pt->outstanding == 0 && pt->attached) {
        pt->attached = false;
        uv_close((uv_handle_t *)&pt->async, NULL);
    }
}

int gw_budget_attach(struct gw_budget *b, struct gw_worker *w, uv_loop_t *loop)
{
    struct port *pt = port_of(b, w);
    uv_mutex_init(&pt->lock);
    pt->w = w;
    pt->async.data = pt;
    int rc = uv_async_init(loop, &pt->async, on_async);
    pt->attached = rc == 0;
    return rc;
}

/* Close the worker's port once every reservation it asked for has been
 * answered (their requests wait for the answer to release them). */
void gw_budget_detach(struct gw_budget *b, struct gw_worker *w)
{
    struct port *pt = port_of(b, w);
    pt->closing = true;
    if (pt->attached && pt->outstanding == 0) {
        pt->attached = false;
        uv_close((uv_handle_t *)&pt->async, NULL);
    }
}

static void submit(struct gw_budget *b, struct op *o)
{
    /* (also called from the budget thread itself to requeue a retry) */
    uv_mutex_lock(&b->lock);
    o->next = NULL;
    if (b->tail)
        b->tail->next = o;
    else
        b->head = o;
    b->tail = o;
    uv_mutex_unlock(&b->lock);
    uv_cond_signal(&b->wake);
}

void gw_budget_reserve(struct gw_budget *b, struct gw_worker *w, const struct gw_vkey *k,
                       double max_usd, gw_budget_cb cb, void *ctx)
{
    port_of(b, w)->outstanding++;
    struct op *o = gw_calloc(1, sizeof(*o));
    o->kind = OP_RESERVE;
    o->key = *k;
    o->usd = max_usd;
    o->w = w;
    o->cb = cb;
    o->ctx = ctx;
    submit(b, o);
}

void gw_budget_settle(struct gw_budget *b, const char *rid, double usd)
{
    struct op *o = gw_calloc(1, sizeof(*o));
    o->kind = OP_SETTLE;
    snprintf(o->rid, sizeof(o->rid), "%s", rid);
    o->usd = usd;
    submit(b, o);
}

void gw_budget_release(struct gw_budget *b, const char *rid)
{
    struct op *o = gw_calloc(1, sizeof(*o));
    o->kind = OP_RELEASE;
    snprintf(o->rid, sizeof(o->rid), "%s", rid);
    submit(b, o);
}

void gw_budget_stop(struct gw_budget *b)
{
    if (!b)
        return;
    uv_mutex_lock(&b->lock);
    b->stopping = true;
    uv_mutex_unlock(&b->lock);
    uv_cond_signal(&b->wake);
    uv_thread_join(&b->thread);
    /* reservations answered after their worker left are dropped with it */
    for (size_t i = 0; i < GW_MAX_WORKERS; i++) {
        struct op *o = b->ports[i].done;
        while (o) {
            struct op *next = o->next;
            free(o);
            o = next;
        }
        if (b->ports[i].w)
            uv_mutex_destroy(&b->ports[i].lock);
    }
    gw_store_close(b->store);
    uv_mutex_destroy(&b->lock);
    uv_cond_destroy(&b->wake);
    free(b);
}
