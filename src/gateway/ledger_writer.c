/*
 * ledger_writer.c - appends every request's cost record to the spend
 * ledger (src/ledger/store.h) from a thread of its own, so no request waits
 * for the database.
 *
 * Workers hand records over with gw_ledger_submit(), which copies them into
 * a bounded ring and never blocks on the database. The writer takes what
 * is there, up to a batch, and appends it in one transaction (with the
 * spend of keys that have no budget, booked to their totals). When the
 * database is slow or down the ring fills up; past its capacity new
 * records are dropped, counted and logged (at most once per 10 s) - the
 * gateway never stalls or grows without bound for its ledger. A failed
 * batch is retried (after a second) while the ring has room for it.
 * gw_ledger_stop() writes what is queued, within a deadline: records are
 * not lost on SIGTERM unless the database does not answer.
 */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "hybridgw/log.h"
#include "gateway/ledger_writer.h"

struct gw_ledger {
    struct gw_store *store;
    char kind[16];
    uv_thread_t thread;
    uv_mutex_t lock;
    uv_cond_t wake;
    struct gw_spend_rec *ring;
    size_t cap, head, count;        /* head: oldest */
    bool stopping;
    uint64_t deadline_ns;           /* when stopping: give up after this */
    atomic_ullong written, dropped, failed;
    uint64_t last_drop_log_ns;
};

#define BATCH 256

static void writer_main(void *arg)
{
    struct gw_ledger *l = arg;
    struct gw_spend_rec *batch = gw_malloc(sizeof(*batch) * BATCH);
    uint64_t last_err_log = 0;
    for (;;) {
        uv_mutex_lock(&l->lock);
        while (l->count == 0 && !l->stopping)
            uv_cond_timedwait(&l->wake, &l->lock, 1000000000ull);
        if (l->count == 0 && l->stopping) {
            uv_mutex_unlock(&l->lock);
            break;
        }
        size_t n = GW_MIN(l->count, (size_t)BATCH);
        for (size_t i = 0; i < n; i++)
            batch[i] = l->ring[(l->head + i) % l->cap];
        uv_mutex_unlock(&l->lock);

        int rc = gw_store_append(l->store, batch, n);
        uv_mutex_lock(&l->lock);
        if (rc == GW_STORE_OK) {
            l->head = (l->head + n) % l->cap;
            l->count -= n;
            atomic_fetch_add(&l->written, n);
            uv_mutex_unlock(&l->lock);
            continue;
        }
        bool give_up = l->stopping && gw_now_ns() >= l->deadline_ns;
        if (give_up) {
            atomic_fetch_add(&l->failed, l->count);
            l->count = 0;
        }
        uv_mutex_unlock(&l->lock);
        uint64_t now = gw_now_ns();
        if (now - last_err_log > 10000000000ull) {
            gw_log_error("ledger: cannot write to the %s database (%s); %zu records wait, "
                         "retrying every second",
                         l->kind, gw_store_error(l->store), n);
            last_err_log = now;
        }
        if (give_up)
            break;
        uv_sleep(1000);
    }
    free(batch);
}

struct gw_ledger *gw_ledger_start(const char *url, size_t queue_cap, char *err, size_t errlen)
{
    struct gw_store *s = gw_store_open(url, err, errlen);
    if (!s)
        return NULL;
    struct gw_ledger *l = gw_calloc(1, sizeof(*l));
    l->store = s;
    snprintf(l->kind, sizeof(l->kind), "%s", gw_store_kind(s));
    l->cap = queue_cap ? queue_cap : 10000;
    l->ring = gw_malloc(sizeof(*l->ring) * l->cap);
    uv_mutex_init(&l->lock);
    uv_cond_init(&l->wake);
    if (uv_thread_create(&l->thread, writer_main, l) != 0) {
        snprintf(err, errlen, "ledger: cannot start the writer thread");
        gw_store_close(s);
        uv_mutex_destroy(&l->lock);
        uv_cond_destroy(&l->wake);
        free(l->ring);
        free(l);
        return NULL;
    }
    return l;
}

const char *gw_ledger_kind(const struct gw_ledger *l)
{
    return l->kind;
}

void gw_ledger_submit(struct gw_ledger *l, const struct gw_spend_rec *rec)
{
    if (!l)
        return;
    uv_mutex_lock(&l->lock);
    if (l->count == l->cap || l->stopping) {
        uint64_t now = gw_now_ns();
        bool log = now - l->last_drop_log_ns > 10000000000ull;
        if (log)
            l->last_drop_log_ns = now;
        uv_mutex_unlock(&l->lock);
        atomic_fetch_add(&l->dropped, 1);
        if (log)
            gw_log_warn("ledger: queue full (%zu records; the database is slow or down): "
                        "dropping records, see hybridgw_ledger_records_total{result=\"dropped\"}",
                        l->cap);
        return;
    }
    l->ring[(l->head + l->count) % l->cap] = *rec;
    l->count++;
    bool wake = l->count >= BATCH;
    uv_mutex_unlock(&l->lock);
    if (wake)
        uv_cond_signal(&l->wake);
}

void gw_ledger_stats(struct gw_ledger *l, struct gw_ledger_stats *out)
{
    out->written = atomic_load(&l->written);
    out->dropped = atomic_load(&l->dropped);
    out->failed = atomic_load(&l->failed);
    uv_mutex_lock(&l->lock);
    out->queued = l->count;
    uv_mutex_unlock(&l->lock);
}

void gw_ledger_stop(struct gw_ledger *l, uint64_t deadline_ms)
{
    if (!l)
        return;
    uv_mutex_lock(&l->lock);
    l->stopping = true;
    l->deadline_ns = gw_now_ns() + deadline_ms * 1000000ull;
    size_t left = l->count;
    uv_mutex_unlock(&l->lock);
    uv_cond_signal(&l->wake);
    uv_thread_join(&l->thread);
    struct gw_ledger_stats st;
    gw_ledger_stats(l, &st);
    gw_log_info("ledger: %llu records written, %llu dropped, %llu failed (%zu were queued at "
                "shutdown)",
                (unsigned long long)st.written, (unsigned long long)st.dropped,
                (unsigned long long)st.failed, left);
    gw_store_close(l->store);
    uv_mutex_destroy(&l->lock);
    uv_cond_destroy(&l->wake);
    free(l->ring);
    free(l);
}
