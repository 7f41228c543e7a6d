/*
 * backend.c - runtime state of backends: targets (one per URL), balancing
 * by least requests in flight, passive health (eject after consecutive
 * failures). Active checks are in health.c.
 */
#include <stdlib.h>

#include "hybridgw/log.h"
#include "gateway/gateway.h"

static struct gw_target *target_new(const char *backend, const char *url)
{
    struct gw_target *t = gw_calloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    t->backend = gw_strdup(backend);
    t->url = gw_strdup(url);
    atomic_init(&t->healthy, true);
    return t;
}

void gw_target_unref(struct gw_target *t)
{
    if (t && atomic_fetch_sub(&t->refs, 1) == 1) {
        free(t->backend);
        free(t->url);
        free(t);
    }
}

static void release_targets(struct gw_config *cfg)
{
    for (size_t i = 0; i < cfg->nbackends; i++) {
        struct gw_backend_conf *b = &cfg->backends[i];
        if (!b->targets)
            continue;
        for (size_t j = 0; j < b->nurls; j++)
            gw_target_unref(b->targets[j]);
        free(b->targets);
        b->targets = NULL;
    }
}

static struct gw_target *find_old(const struct gw_config *old, const char *backend,
                                  const char *url)
{
    if (!old)
        return NULL;
    for (size_t i = 0; i < old->nbackends; i++) {
        const struct gw_backend_conf *b = &old->backends[i];
        if (strcmp(b->name, backend) != 0 || !b->targets)
            continue;
        for (size_t j = 0; j < b->nurls; j++)
            if (strcmp(b->urls[j], url) == 0)
                return b->targets[j];
    }
    return NULL;
}

void gw_backends_attach(struct gw_config *cfg, const struct gw_config *old)
{
    for (size_t i = 0; i < cfg->nbackends; i++) {
        struct gw_backend_conf *b = &cfg->backends[i];
        b->targets = gw_calloc(b->nurls, sizeof(*b->targets));
        for (size_t j = 0; j < b->nurls; j++) {
            struct gw_target *t = find_old(old, b->name, b->urls[j]);
            if (t)
                atomic_fetch_add(&t->refs, 1);
            else
                t = target_new(b->name, b->urls[j]);
            b->targets[j] = t;
        }
    }
    cfg->release_runtime = release_targets;
}

const char *gw_circuit_str(int state)
{
    static const char *const names[] = {"closed", "open", "half_open"};
    _Static_assert(GW_ARRAY_LEN(names) == GW_CIRCUIT_COUNT, "circuit names");
    return (unsigned)state < GW_CIRCUIT_COUNT ? names[state] : "?";
}

/* May a request go to t now? Open circuits turn half-open after the
 * cooldown, and exactly one caller wins the probe. */
static bool circuit_allows(struct gw_target *t, const struct gw_backend_conf *b, uint64_t now)
{
    int st = atomic_load_explicit(&t->circuit, memory_order_relaxed);
    if (st == GW_CIRCUIT_CLOSED)
        return true;
    uint64_t opened = atomic_load(&t->opened_ns);
    if (now - opened < b->circuit_cooldown_ms * 1000000ull)
        return false; /* open and cooling down, or the probe is out */
    if (st == GW_CIRCUIT_HALF_OPEN) {
        /* the probe never reported (its client went away): another one */
        uint64_t expect_ns = opened;
        return atomic_compare_exchange_strong(&t->opened_ns, &expect_ns, now);
    }
    int expect = GW_CIRCUIT_OPEN;
    if (atomic_compare_exchange_strong(&t->circuit, &expect, GW_CIRCUIT_HALF_OPEN)) {
        atomic_store(&t->opened_ns, now);
        gw_log_info("backend %s: %s circuit half-open: letting one request through",
                    t->backend, t->url);
        return true;
    }
    return false;
}

struct gw_target *gw_backend_pick(const struct gw_backend_conf *b, unsigned worker)
{
    struct gw_target *best = NULL;
    int64_t best_n = 0;
    if (!b->targets)
        return NULL;
    /* start the scan at a rotating offset so ties spread evenly */
    static _Thread_local unsigned rr;
    size_t n = b->nurls;
    size_t start = n ? rr++ % n : 0;
    for (size_t k = 0; k < n; k++) {
        struct gw_target *t = b->targets[(start + k) % n];
        if (!atomic_load_explicit(&t->healthy, memory_order_relaxed))
            continue;
        int64_t inflight = t->wk[worker].inflight;
        if (atomic_load_explicit(&t->circuit, memory_order_relaxed) != GW_CIRCUIT_CLOSED)
            continue; /* considered below, only when nothing closed is left */
        if (!best || inflight < best_n) {
            best = t;
            best_n = inflight;
        }
    }
    if (best)
        return best;
    uint64_t now = gw_now_ns();
    for (size_t k = 0; k < n; k++) {
        struct gw_target *t = b->targets[(start + k) % n];
        if (atomic_load_explicit(&t->healthy, memory_order_relaxed) && circuit_allows(t, b, now))
            return t;
    }
    return NULL;
}

bool gw_backend_healthy(const struct gw_backend_conf *b)
{
    if (!b->targets)
        return false;
    for (size_t j = 0; j < b->nurls; j++)
        if (atomic_load_explicit(&b->targets[j]->healthy, memory_order_relaxed))
            return true;
    return false;
}

static void circuit_report(struct gw_target *t, const struct gw_backend_conf *b, bool ok)
{
    uint64_t now = gw_now_ns();
    int st = atomic_load(&t->circuit);
    if (ok) {
        if (st != GW_CIRCUIT_CLOSED) {
            atomic_store(&t->circuit, GW_CIRCUIT_CLOSED);
            atomic_store(&t->window_failures, 0);
            gw_log_info("backend %s: %s circuit closed", t->backend, t->url);
        }
        return;
    }
    if (st == GW_CIRCUIT_HALF_OPEN) {
        atomic_store(&t->opened_ns, now);
        atomic_store(&t->circuit, GW_CIRCUIT_OPEN);
        gw_log_warn("backend %s: %s probe failed; circuit open again for %llu ms", t->backend,
                    t->url, (unsigned long long)b->circuit_cooldown_ms);
        return;
    }
    if (st == GW_CIRCUIT_OPEN)
        return;
    uint64_t ws = atomic_load(&t->window_start_ns);
    if (now - ws > b->circuit_window_ms * 1000000ull) {
        /* a new window; racing workers may each reset it: harmless */
        atomic_store(&t->window_start_ns, now);
        atomic_store(&t->window_failures, 0);
    }
    unsigned n = atomic_fetch_add(&t->window_failures, 1) + 1;
    int expect = GW_CIRCUIT_CLOSED;
    if (n >= b->circuit_failures &&
        atomic_compare_exchange_strong(&t->circuit, &expect, GW_CIRCUIT_OPEN)) {
        atomic_store(&t->opened_ns, now);
        gw_log_warn("backend %s: %s circuit open after %u failures in %llu ms; retrying it "
                    "in %llu ms",
                    t->backend, t->url, n, (unsigned long long)b->circuit_window_ms,
                    (unsigned long long)b->circuit_cooldown_ms);
    }
}

bool gw_target_report(struct gw_target *t, const struct gw_backend_conf *b, bool ok)
{
    if (b->circuit_failures)
        circuit_report(t, b, ok);
    if (ok) {
        if (atomic_load_explicit(&t->consecutive_failures, memory_order_relaxed))
            atomic_store_explicit(&t->consecutive_failures, 0, memory_order_relaxed);
        return false;
    }
    unsigned n = atomic_fetch_add(&t->consecutive_failures, 1) + 1;
    unsigned threshold = b->fail_threshold ? b->fail_threshold : 3;
    if (n >= threshold && atomic_exchange(&t->healthy, false)) {
        atomic_store(&t->ejected_ns, gw_now_ns());
        gw_log_warn("backend %s: %s ejected after %u consecutive failures; "
                    "health checks will bring it back",
                    t->backend, t->url, n);
        return true;
    }
    return false;
}
