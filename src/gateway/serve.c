/*
 * serve.c - `hybridgw serve`: start the workers, run the main thread's
 * control loop (signals, reload, health checks, admin listener), drain on
 * SIGTERM.
 *
 * Shutdown: SIGTERM (or SIGINT) marks the gateway draining (/readyz turns
 * 503), every worker stops accepting and closes idle connections, and each
 * worker leaves its loop once its in-flight requests are done. At the
 * shutdown deadline whatever is left is aborted. A second signal aborts at
 * once. The process exits 0 after a drain.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <malloc.h>
#include <curl/curl.h>

#include "hybridgw/log.h"
#include "gateway/gateway.h"
#include "gateway/serve.h"
#include "provider/provider.h"
#include "router/router.h"
#include "telemetry/trace.h"
#include "gateway/ledger_writer.h"
#include "gateway/keys.h"
#include "gateway/budget.h"

static struct gw_gateway G;
static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t deadline_timer;
static uv_async_t exited_async;
static atomic_uint workers_exited;
static bool shutting_down;
static int signals_seen;

struct gw_config *gw_gateway_config(struct gw_gateway *gw)
{
    uv_mutex_lock(&gw->cfg_lock);
    struct gw_config *c = gw_config_ref(gw->cfg);
    uv_mutex_unlock(&gw->cfg_lock);
    return c;
}

static void server_opts(const struct gw_config *cfg, struct gw_http_server_opts *o)
{
    gw_http_server_opts_default(o);
    o->max_header_bytes = cfg->max_header_bytes;
    o->max_headers = cfg->max_headers;
    o->max_body_bytes = cfg->max_body_bytes;
    o->header_timeout_ms = cfg->header_timeout_ms;
    o->body_timeout_ms = cfg->body_timeout_ms;
    o->idle_timeout_ms = cfg->idle_timeout_ms;
    o->write_high_water = cfg->write_high_water;
}

/* ---- access log ---- */

void gw_alog_flush(struct gw_worker *w)
{
    struct gw_buf *b = &w->alog;
    size_t off = 0;
    while (off < b->len && w->gw->access_fd >= 0) {
        ssize_t n = write(w->gw->access_fd, b->data + off, b->len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break; /* a broken log sink must not stop traffic */
        }
        off += (size_t)n;
    }
    gw_buf_reset(b);
}

static void on_flush(uv_prepare_t *p)
{
    struct gw_worker *w = p->data;
    if (w->alog.len)
        gw_alog_flush(w);
}

/* After a burst of streams, give the freed memory back to the system once
 * the worker is idle: glibc keeps it in the thread's arena otherwise. */
static void on_trim(uv_timer_t *t)
{
    struct gw_worker *w = t->data;
    if (w->server && gw_http_server_inflight(w->server) == 0 && w->trim_pending) {
        malloc_trim(0);
        w->trim_pending = false;
    } else if (w->server && gw_http_server_inflight(w->server) > 0) {
        w->trim_pending = true;
    }
}

/* ---- workers ---- */

static void worker_close_rest(struct gw_worker *w)
{
    if (w->gw->budget)
        gw_budget_detach(w->gw->budget, w);
    if (w->upstream) {
        gw_upstream_free(w->upstream);
        w->upstream = NULL;
    }
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_prepare_stop(&w->flush);
    uv_close((uv_handle_t *)&w->flush, NULL);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_close((uv_handle_t *)&w->trim_timer, NULL);
}

static void on_server_closed(void *arg)
{
    struct gw_worker *w = arg;
    w->server = NULL;
    worker_close_rest(w);
}

static void on_drain_tick(uv_timer_t *t)
{
    struct gw_worker *w = t->data;
    if (w->server && gw_http_server_inflight(w->server) == 0) {
        uv_timer_stop(t);
        gw_http_server_close(w->server, on_server_closed, w);
    }
}

static void on_worker_cmd(uv_async_t *a)
{
    struct gw_worker *w = a->data;
    int cmd = atomic_exchange(&w->cmd, 0);
    if (cmd & GW_CMD_KEYS) {
        uv_mutex_lock(&w->gw->cfg_lock);
        struct gw_keyset *ks = gw_keyset_ref(w->gw->keyset);
        uv_mutex_unlock(&w->gw->cfg_lock);
        gw_keyset_unref(w->keyset);
        w->keyset = ks;
    }
    if (cmd & GW_CMD_RELOAD) {
        struct gw_config *c = gw_gateway_config(w->gw);
        gw_config_unref(w->cfg);
        w->cfg = c;
        if (w->server) {
            struct gw_http_server_opts o;
            server_opts(c, &o);
            gw_http_server_set_limits(w->server, &o);
        }
    }
    if ((cmd & GW_CMD_STOP) && w->server) {
        uv_timer_stop(&w->drain_timer);
        gw_http_server_close(w->server, on_server_closed, w);
        return;
    }
    if ((cmd & GW_CMD_DRAIN) && !w->draining && w->server) {
        w->draining = true;
        gw_http_server_stop_accepting(w->server);
        uv_timer_start(&w->drain_timer, on_drain_tick, 0, 50);
    }
}

struct worker_start {
    struct gw_worker *w;
    struct sockaddr_storage addr;
    uv_sem_t ready;
};

static void worker_main(void *arg)
{
    struct worker_start *ws = arg;
    struct gw_worker *w = ws->w;
    char prefix[16];
    snprintf(prefix, sizeof(prefix), "w%u", w->id);
    gw_log_set_prefix(prefix);
    struct gw_http_server_opts o;
    server_opts(w->cfg, &o);
    o.on_head = gw_api_on_head;
    o.on_request = gw_api_on_request;
    o.on_error = gw_api_on_error;
    o.on_complete = gw_api_on_complete;
    o.ud = w;
    w->upstream = gw_upstream_new(&w->loop);
    if (w->gw->budget)
        gw_budget_attach(w->gw->budget, w, &w->loop);
    int rc = gw_http_server_start(&w->loop, (struct sockaddr *)&ws->addr, &o, &w->server);
    w->start_error = rc;
    uv_prepare_init(&w->loop, &w->flush);
    w->flush.data = w;
    uv_prepare_start(&w->flush, on_flush);
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    uv_timer_init(&w->loop, &w->trim_timer);
    w->trim_timer.data = w;
    uv_timer_start(&w->trim_timer, on_trim, 5000, 5000);
    uv_unref((uv_handle_t *)&w->trim_timer);
    if (rc < 0 || !w->upstream) {
        if (rc == 0)
            w->start_error = UV_ENOMEM;
        w->server = NULL;
        worker_close_rest(w);
    }
    uv_sem_post(&ws->ready);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    gw_alog_flush(w);
    uv_loop_close(&w->loop);
    atomic_fetch_add(&workers_exited, 1);
    uv_async_send(&exited_async);
}

static int start_worker(struct gw_worker *w, const struct sockaddr_storage *addr)
{
    struct worker_start ws;
    ws.w = w;
    ws.addr = *addr;
    uv_sem_init(&ws.ready, 0);
    if (uv_thread_create(&w->thread, worker_main, &ws) != 0) {
        uv_sem_destroy(&ws.ready);
        return UV_EAGAIN;
    }
    uv_sem_wait(&ws.ready);
    uv_sem_destroy(&ws.ready);
    w->thread_started = true;
    w->started = w->start_error == 0;
    return w->start_error;
}

static void broadcast(int cmd)
{
    for (unsigned i = 0; i < G.nworkers; i++) {
        struct gw_worker *w = &G.workers[i];
        if (!w->started)
            continue;
        atomic_fetch_or(&w->cmd, cmd);
        uv_async_send(&w->async);
    }
}

/* ---- health checks (main thread) ---- */

struct probe {
    struct gw_target *t;
    unsigned threshold;
    bool strict;  /* only 2xx counts as healthy (self-hosted servers) */
};

static void probe_done(struct gw_up *u, const char *err, void *ud)
{
    struct probe *p = ud;
    struct gw_target *t = p->t;
    if (err == gw_up_err_cancelled) {
        atomic_store(&t->probing, false);
        gw_target_unref(t);
        free(p);
        return;
    }
    int st = gw_up_status(u);
    bool ok = !err && (p->strict ? (st >= 200 && st < 300) : (st > 0 && st < 500));
    if (ok) {
        atomic_store(&t->probe_failures, 0);
        if (!atomic_load(&t->healthy)) {
            atomic_store(&t->consecutive_failures, 0);
            atomic_store(&t->healthy, true);
            gw_log_info("backend %s: %s is healthy again", t->backend, t->url);
        }
    } else {
        unsigned n = atomic_fetch_add(&t->probe_failures, 1) + 1;
        if (n >= p->threshold && atomic_exchange(&t->healthy, false)) {
            char why[64];
            if (err)
                snprintf(why, sizeof(why), "%s", err);
            else
                snprintf(why, sizeof(why), "status %d", st);
            gw_log_warn("backend %s: %s failed %u health checks (%s); ejected", t->backend,
                        t->url, n, why);
        }
    }
    atomic_store(&t->probing, false);
    gw_target_unref(t);
    free(p);
}

static const struct gw_up_callbacks probe_cbs = {NULL, NULL, probe_done};

/* ---- vLLM load (main thread): read /metrics, decide spill ---- */

struct scrape {
    struct gw_target *t;
    char *model;
    struct gw_buf body;
    uint64_t waiting_above, back_below;
    double kv_above;
    bool spill;                     /* router.spill configured */
};

static int scrape_data(struct gw_up *u, const char *p, size_t n, void *ud)
{
    struct scrape *sc = ud;
    return gw_buf_append(&sc->body, p, n) ? -1 : 0;
}

static void scrape_done(struct gw_up *u, const char *err, void *ud)
{
    struct scrape *sc = ud;
    struct gw_target *t = sc->t;
    struct gw_vllm_load l;
    if (err == gw_up_err_cancelled) {
        /* shutting down: nothing to record */
    } else if (!err && gw_up_status(u) == 200 &&
        gw_vllm_load_parse(sc->body.data ? sc->body.data : "", sc->body.len, sc->model, &l) == 0) {
        atomic_store(&t->load_waiting, l.waiting);
        atomic_store(&t->load_running, l.running);
        atomic_store(&t->load_kv, l.kv_cache);
        atomic_store(&t->load_ns, gw_now_ns());
        /* hysteresis: spill above the high marks, come back only when the
         * queue is down to back_below and the cache under its mark */
        bool was = atomic_load(&t->spilling) && sc->spill;
        bool queue = l.have_waiting && l.waiting > (double)sc->waiting_above;
        bool kv = l.have_kv && l.kv_cache > sc->kv_above;
        bool now = !sc->spill ? false
                   : was      ? !(l.waiting <= (double)sc->back_below && !kv)
                              : (queue || kv);
        if (now != was) {
            atomic_store(&t->spill_cause, queue || !kv ? 1 : 2);
            atomic_store(&t->spilling, now);
            gw_log_info("backend %s: %s %s spilling (waiting %.0f, running %.0f, kv cache %.2f)",
                        t->backend, t->url, now ? "starts" : "stops", l.waiting, l.running,
                        l.kv_cache);
        } else if (now) {
            atomic_store(&t->spill_cause, queue || !kv ? 1 : 2);
        }
    } else if (atomic_load(&t->spilling) &&
               gw_now_ns() - atomic_load(&t->load_ns) > 10 * 1000000000ull) {
        /* no fresh numbers for a while: stop acting on old ones */
        atomic_store(&t->spilling, false);
        gw_log_warn("backend %s: %s load unknown for 10 s; no longer spilling", t->backend,
                    t->url);
    }
    atomic_store(&t->scraping, false);
    gw_target_unref(t);
    gw_buf_free(&sc->body);
    free(sc->model);
    free(sc);
}

static const struct gw_up_callbacks scrape_cbs = {NULL, scrape_data, scrape_done};

static void scrape_tick(const struct gw_config *cfg, uint64_t now)
{
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const struct gw_backend_conf *b = &cfg->backends[i];
        if (!b->provider->scrape_load)
            continue;
        for (size_t j = 0; b->targets && j < b->nurls; j++) {
            struct gw_target *t = b->targets[j];
            if (atomic_load(&t->scraping) ||
                now - t->last_scrape_ns < cfg->scrape_interval_ms * 1000000ull)
                continue;
            t->last_scrape_ns = now;
            struct scrape *sc = gw_calloc(1, sizeof(*sc));
            atomic_fetch_add(&t->refs, 1);
            sc->t = t;
            sc->model = gw_strdup(b->model);
            gw_buf_init(&sc->body, 4u << 20);
            sc->waiting_above = cfg->spill_waiting_above;
            sc->back_below = cfg->spill_back_below;
            sc->kv_above = cfg->spill_kv_above;
            sc->spill = cfg->spill;
            char url[1024];
            snprintf(url, sizeof(url), "%s/metrics", t->url);
            struct gw_up_opts o = {.url = url, .method = "GET", .connect_timeout_ms = 1000,
                                   .total_timeout_ms = 2000};
            atomic_store(&t->scraping, true);
            if (!gw_up_start(G.health_up, &o, &scrape_cbs, sc)) {
                atomic_store(&t->scraping, false);
                gw_target_unref(t);
                gw_buf_free(&sc->body);
                free(sc->model);
                free(sc);
            }
        }
    }
}

static void on_health_tick(uv_timer_t *tm)
{
    struct gw_config *cfg = G.cfg;
    uint64_t now = gw_now_ns();
    scrape_tick(cfg, now);
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const struct gw_backend_conf *b = &cfg->backends[i];
        for (size_t j = 0; b->targets && j < b->nurls; j++) {
            struct gw_target *t = b->targets[j];
            bool healthy = atomic_load(&t->healthy);
            uint64_t every = b->health_interval_ms;
            if (!healthy)  /* ejected: probe to bring it back, even if checks are off */
                every = every ? GW_MIN(every, 2000) : 2000;
            if (!every || atomic_load(&t->probing) ||
                now - t->last_probe_ns < every * 1000000ull)
                continue;
            /* a URL that requests just ejected gets a rest before the
             * first probe, so it does not flap back at once */
            if (!healthy && now - atomic_load(&t->ejected_ns) < every * 1000000ull)
                continue;
            t->last_probe_ns = now;
            struct probe *p = gw_calloc(1, sizeof(*p));
            atomic_fetch_add(&t->refs, 1);
            p->t = t;
            p->threshold = b->fail_threshold ? b->fail_threshold : 3;
            p->strict = b->provider->scrape_load;
            char url[1024];
            snprintf(url, sizeof(url), "%s%s", t->url, b->health_path ? b->health_path : "/health");
            struct gw_up_opts o = {.url = url, .method = "GET", .connect_timeout_ms = 1000,
                                   .total_timeout_ms = 2000};
            if (!b->provider->scrape_load && b->api_key)
                o.headers = b->provider->add_headers(b, NULL, NULL);
            atomic_store(&t->probing, true);
            if (!gw_up_start(G.health_up, &o, &probe_cbs, p)) {
                atomic_store(&t->probing, false);
                gw_target_unref(t);
                free(p);
            }
        }
    }
}

/* ---- virtual keys (main thread) ---- */

static void on_keys_tick(uv_timer_t *t)
{
    static unsigned ticks;
    if (++ticks % 60 == 0) /* reservations of a replica that died */
        gw_store_expire_reservations(G.store, (int64_t)(gw_wall_ns() / 1000000000ull), 900);
    struct gw_keyset *ks = gw_keyset_load(G.store);
    if (!ks) {
        static uint64_t last;
        uint64_t now = gw_now_ns();
        if (now - last > 10000000000ull) {
            gw_log_error("keys: cannot read virtual keys from the %s database (%s); "
                         "using the last set read",
                         gw_store_kind(G.store), gw_store_error(G.store));
            last = now;
        }
        return;
    }
    if (gw_keyset_same(ks, G.keyset)) {
        gw_keyset_unref(ks);
        return;
    }
    uv_mutex_lock(&G.cfg_lock);
    struct gw_keyset *old = G.keyset;
    G.keyset = ks;
    uv_mutex_unlock(&G.cfg_lock);
    gw_keyset_unref(old);
    broadcast(GW_CMD_KEYS);
}

void gw_keys_refresh_now(void)
{
    if (G.store)
        on_keys_tick(&G.keys_timer);
}

/* ---- reload, shutdown ---- */

static void reload(void)
{
    char err[512];
    gw_log_info("SIGHUP: reloading %s", G.config_path);
    struct gw_config *nc = gw_config_load(G.config_path, err, sizeof(err));
    if (!nc) {
        gw_log_error("reload rejected, keeping the running config (generation %llu): %s",
                     (unsigned long long)G.cfg->generation, err);
        gw_series_inc(gw_metrics_getv(G.metrics, &gw_m_reloads, "error"), 1);
        atomic_store(&G.last_reload_ok, false);
        atomic_store(&G.last_reload_ts, (double)gw_wall_ns() / 1e9);
        return;
    }
    if ((nc->ledger_url == NULL) != (G.cfg->ledger_url == NULL) ||
        (nc->ledger_url && strcmp(nc->ledger_url, G.cfg->ledger_url) != 0))
        gw_log_warn("reload: ledger.database changes need a restart; the ledger goes on as before");
    if (nc->limits_sync_ms != G.cfg->limits_sync_ms)
        gw_log_warn("reload: ledger.limits_sync changes need a restart; rate-limit counts are "
                    "shared as before");
    if ((nc->otlp_endpoint == NULL) != (G.cfg->otlp_endpoint == NULL) ||
        (nc->otlp_endpoint && strcmp(nc->otlp_endpoint, G.cfg->otlp_endpoint) != 0))
        gw_log_warn("reload: telemetry.otlp changes need a restart; tracing goes on as before");
    if (strcmp(nc->listen, G.cfg->listen) != 0 || nc->workers != G.cfg->workers ||
        (nc->admin_listen == NULL) != (G.cfg->admin_listen == NULL) ||
        (nc->admin_listen && strcmp(nc->admin_listen, G.cfg->admin_listen) != 0))
        gw_log_warn("reload: listen, admin_listen and workers changes need a restart; "
                    "keeping the current ones");
    gw_backends_attach(nc, G.cfg);
    uv_mutex_lock(&G.cfg_lock);
    struct gw_config *old = G.cfg;
    G.cfg = nc;
    uv_mutex_unlock(&G.cfg_lock);
    if (G.admin) {
        struct gw_http_server_opts o;
        server_opts(nc, &o);
        gw_http_server_set_limits(G.admin, &o);
    }
    gw_config_unref(old);
    broadcast(GW_CMD_RELOAD);
    gw_series_inc(gw_metrics_getv(G.metrics, &gw_m_reloads, "ok"), 1);
    atomic_store(&G.last_reload_ok, true);
    atomic_store(&G.last_reload_ts, (double)gw_wall_ns() / 1e9);
    gw_log_info("config reloaded (generation %llu, %zu backends)",
                (unsigned long long)nc->generation, nc->nbackends);
}

static void main_close_all(void)
{
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&deadline_timer, NULL);
    uv_close((uv_handle_t *)&exited_async, NULL);
    if (G.store) {
        uv_timer_stop(&G.keys_timer);
        uv_close((uv_handle_t *)&G.keys_timer, NULL);
    }
    uv_timer_stop(&G.health_timer);
    uv_close((uv_handle_t *)&G.health_timer, NULL);
    if (G.health_up) {
        gw_upstream_free(G.health_up);
        G.health_up = NULL;
    }
    if (G.admin) {
        gw_http_server_close(G.admin, NULL, NULL);
        G.admin = NULL;
    }
}

static void on_worker_exited(uv_async_t *a)
{
    if (atomic_load(&workers_exited) == G.nworkers)
        main_close_all();
}

static void on_deadline(uv_timer_t *t)
{
    gw_log_warn("shutdown deadline reached: aborting the requests still in flight");
    broadcast(GW_CMD_STOP);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (signum == SIGHUP) {
        reload();
        return;
    }
    signals_seen++;
    if (shutting_down) {
        if (signals_seen >= 2) {
            gw_log_warn("second signal: aborting in-flight requests now");
            broadcast(GW_CMD_STOP);
        }
        return;
    }
    shutting_down = true;
    atomic_store(&G.draining, true);
    gw_log_info("%s: draining (no new connections; in-flight requests get up to %llu ms)",
                signum == SIGTERM ? "SIGTERM" : "SIGINT",
                (unsigned long long)G.cfg->shutdown_timeout_ms);
    broadcast(GW_CMD_DRAIN);
    uv_timer_start(&deadline_timer, on_deadline, G.cfg->shutdown_timeout_ms, 0);
}

static int open_access_log(const char *where)
{
    if (!where || strcmp(where, "stdout") == 0)
        return STDOUT_FILENO;
    if (strcmp(where, "stderr") == 0)
        return STDERR_FILENO;
    if (strcmp(where, "off") == 0)
        return -1;
    int fd = open(where, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        gw_log_error("access_log %s: %s; access logging is off", where, strerror(errno));
    return fd;
}

static const char *addr_host(const char *listen, char *buf, size_t len)
{
    const char *colon = strrchr(listen, ':');
    size_t n = colon ? (size_t)(colon - listen) : strlen(listen);
    if (n == 0 || (n == 7 && memcmp(listen, "0.0.0.0", 7) == 0)) {
        snprintf(buf, len, "127.0.0.1");
        return buf;
    }
    snprintf(buf, len, "%.*s", (int)n, listen);
    return buf;
}

int gw_serve(const char *config_path)
{
    char err[512];
    signal(SIGPIPE, SIG_IGN);
#ifdef __GLIBC__
    /* Under load glibc trims a thread's heap whenever its top is free, and
     * the page-table work that takes interrupts every thread: with a worker,
     * the budget thread and the ledger writer freeing in turn it cost a
     * budgeted key 15-20 % of its throughput (bench/keys). Keep up to 16 MiB
     * free at the top instead (on_trim gives memory back once a worker is
     * idle). MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_ in the environment win. */
    if (!getenv("MALLOC_TRIM_THRESHOLD_"))
        mallopt(M_TRIM_THRESHOLD, 16 << 20);
    if (!getenv("MALLOC_TOP_PAD_"))
        mallopt(M_TOP_PAD, 4 << 20);
#endif
    struct gw_config *cfg = gw_config_load(config_path, err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "hybridgw: %s\n", err);
        return 2;
    }
    if (cfg->log_level && gw_log_level_parse(cfg->log_level) >= 0 && !getenv("HYBRIDGW_LOG_LEVEL"))
        gw_log_level = gw_log_level_parse(cfg->log_level);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "hybridgw: curl_global_init failed\n");
        return 1;
    }
    gw_log_set_prefix("main");
    memset(&G, 0, sizeof(G));
    G.config_path = gw_strdup(config_path);
    G.cfg = cfg;
    uv_mutex_init(&G.cfg_lock);
    gw_backends_attach(cfg, NULL);
    G.loop = uv_default_loop();
    G.metrics = gw_metrics_new();
    gw_series_set(gw_metrics_getv(G.metrics, &gw_m_build, GW_VERSION), 1);
    G.access_fd = open_access_log(cfg->access_log);
    atomic_store(&G.last_reload_ok, true);
    atomic_store(&G.last_reload_ts, (double)gw_wall_ns() / 1e9);
    if (cfg->ledger_url) {
        G.ledger = gw_ledger_start(cfg->ledger_url, cfg->ledger_queue, err, sizeof(err));
        if (!G.ledger) {
            fprintf(stderr, "hybridgw: %s\n", err);
            return 2;
        }
        gw_log_info("ledger: %s database, every request's cost record is appended",
                    gw_ledger_kind(G.ledger));
    }
    if (cfg->ledger_url) {
        G.store = gw_store_open(cfg->ledger_url, err, sizeof(err));
        if (!G.store) {
            fprintf(stderr, "hybridgw: %s\n", err);
            return 2;
        }
        G.keyset = gw_keyset_load(G.store);
        if (!G.keyset) {
            fprintf(stderr, "hybridgw: cannot read virtual keys: %s\n", gw_store_error(G.store));
            return 2;
        }
        gw_log_info("keys: %zu virtual keys from the %s database (re-read every second)",
                    G.keyset->n, gw_store_kind(G.store));
        G.budget = gw_budget_start(cfg->ledger_url, err, sizeof(err));
        if (!G.budget) {
            fprintf(stderr, "hybridgw: %s\n", err);
            return 2;
        }
        G.limits = gw_limits_new();
        if (cfg->limits_sync_ms > 0) {
            if (gw_limits_sync_start(G.limits, cfg->ledger_url, (int64_t)cfg->limits_sync_ms,
                                     err, sizeof(err)) < 0) {
                fprintf(stderr, "hybridgw: %s\n", err);
                return 2;
            }
            gw_log_info("rate limits: counts shared with other replicas every %llu ms "
                        "through the %s database",
                        (unsigned long long)cfg->limits_sync_ms, gw_store_kind(G.store));
        } else {
            gw_log_info("rate limits: counted in this process only (ledger.limits_sync: 0)");
        }
    }
    if (cfg->otlp_endpoint) {
        G.tracer = gw_tracer_start(cfg);
        if (G.tracer)
            gw_log_info("tracing: OTLP/HTTP JSON to %s, sampling %.2f", cfg->otlp_endpoint,
                        cfg->otlp_sample);
        else
            gw_log_error("tracing: could not start the exporter; traces are off");
    }
    if (cfg->nkeys == 0 && !cfg->ledger_url)
        gw_log_warn("auth.keys is empty and there is no ledger (virtual keys): the API "
                    "accepts requests without a key");

    struct sockaddr_storage addr;
    if (gw_http_parse_addr(cfg->listen, &addr) < 0) {
        fprintf(stderr, "hybridgw: listen: cannot parse address %s\n", cfg->listen);
        return 2;
    }
    uv_async_init(G.loop, &exited_async, on_worker_exited);
    G.nworkers = cfg->workers;
    G.workers = gw_calloc(G.nworkers, sizeof(*G.workers));
    int rc = 0;
    for (unsigned i = 0; i < G.nworkers; i++) {
        struct gw_worker *w = &G.workers[i];
        w->id = i;
        w->gw = &G;
        w->cfg = gw_config_ref(cfg);
        w->keyset = gw_keyset_ref(G.keyset);
        w->metrics = gw_metrics_new();
        gw_buf_init(&w->alog, 0);
        gw_random_bytes(&w->rng, sizeof(w->rng));
        w->rng |= 1;
        uv_loop_init(&w->loop);
        uv_async_init(&w->loop, &w->async, on_worker_cmd);
        w->async.data = w;
        rc = start_worker(w, &addr);
        if (rc < 0) {
            fprintf(stderr, "hybridgw: cannot listen on %s: %s\n", cfg->listen, uv_strerror(rc));
            break;
        }
        if (i == 0) {
            /* port 0: the others join the port the kernel picked */
            G.listen_port = gw_http_server_port(w->server);
            if (addr.ss_family == AF_INET6)
                ((struct sockaddr_in6 *)&addr)->sin6_port = htons((uint16_t)G.listen_port);
            else
                ((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)G.listen_port);
        }
    }
    if (rc == 0 && cfg->admin_listen) {
        struct sockaddr_storage aa;
        struct gw_http_server_opts o;
        server_opts(cfg, &o);
        o.on_request = gw_api_admin_on_request;
        o.on_error = gw_api_on_error;
        o.ud = &G;
        rc = gw_http_parse_addr(cfg->admin_listen, &aa);
        if (rc == 0)
            rc = gw_http_server_start(G.loop, (struct sockaddr *)&aa, &o, &G.admin);
        if (rc < 0)
            fprintf(stderr, "hybridgw: cannot listen on admin_listen %s: %s\n", cfg->admin_listen,
                    uv_strerror(rc));
        else
            G.admin_port = gw_http_server_port(G.admin);
    }
    G.health_up = gw_upstream_new(G.loop);
    uv_timer_init(G.loop, &G.health_timer);
    uv_timer_init(G.loop, &deadline_timer);
    uv_signal_init(G.loop, &sig_term);
    uv_signal_init(G.loop, &sig_int);
    uv_signal_init(G.loop, &sig_hup);
    if (rc < 0) {
        /* stop what started, then exit with an error */
        shutting_down = true;
        broadcast(GW_CMD_STOP);
        if (atomic_load(&workers_exited) == G.nworkers)
            main_close_all();
    } else {
        uv_signal_start(&sig_term, on_signal, SIGTERM);
        uv_signal_start(&sig_int, on_signal, SIGINT);
        uv_signal_start(&sig_hup, on_signal, SIGHUP);
        uv_timer_start(&G.health_timer, on_health_tick, 0, 100);
        if (G.store) {
            uv_timer_init(G.loop, &G.keys_timer);
            uv_timer_start(&G.keys_timer, on_keys_tick, 1000, 1000);
        }
        char host[128];
        gw_log_info("hybridgw %s: %u workers, %zu backends, config generation %llu", GW_VERSION,
                    G.nworkers, cfg->nbackends, (unsigned long long)cfg->generation);
        /* printed whatever the log level: scripts and tests read the ports */
        gw_log_write(GW_LOG_INFO, "listening on http://%s:%d",
                     addr_host(cfg->listen, host, sizeof(host)), G.listen_port);
        if (G.admin)
            gw_log_write(GW_LOG_INFO, "admin listening on http://%s:%d",
                         addr_host(cfg->admin_listen, host, sizeof(host)), G.admin_port);
    }
    uv_run(G.loop, UV_RUN_DEFAULT);
    for (unsigned i = 0; i < G.nworkers; i++) {
        struct gw_worker *w = &G.workers[i];
        if (w->thread_started)
            uv_thread_join(&w->thread);
        gw_config_unref(w->cfg);
        gw_keyset_unref(w->keyset);
        gw_metrics_free(w->metrics);
        gw_buf_free(&w->alog);
    }
    uv_run(G.loop, UV_RUN_DEFAULT);
    uv_loop_close(G.loop);
    gw_budget_stop(G.budget);
    G.budget = NULL;
    gw_limits_free(G.limits);
    G.limits = NULL;
    gw_keyset_unref(G.keyset);
    G.keyset = NULL;
    if (G.store) {
        gw_store_close(G.store);
        G.store = NULL;
    }
    if (G.ledger) {
        /* the workers are gone: every record is queued; write them */
        gw_ledger_stop(G.ledger, 10000);
        G.ledger = NULL;
    }
    if (G.tracer) {
        /* the workers are gone: every span is queued; send them */
        gw_tracer_stop(G.tracer, 5000);
        G.tracer = NULL;
    }
    free(G.workers);
    gw_metrics_free(G.metrics);
    gw_config_unref(G.cfg);
    uv_mutex_destroy(&G.cfg_lock);
    free(G.config_path);
    if (G.access_fd > STDERR_FILENO)
        close(G.access_fd);
    curl_global_cleanup();
    if (rc < 0)
        return 1;
    gw_log_info("stopped");
    return 0;
}
