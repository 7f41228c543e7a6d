/*
 * test_backend.c - unit tests for backend runtime state
 * (src/gateway/backend.c, contract in src/gateway/gateway.h): attaching
 * targets to a config and carrying them over a reload, least-in-flight
 * balancing per worker, and passive health (ejection after consecutive
 * failures).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "hybridgw/config.h"

#define QWEN3 \
    "backends:\n" \
    "  qwen:\n" \
    "    tier: local\n" \
    "    provider: vllm\n" \
    "    urls: [\"http://10.0.0.1:8000\", \"http://10.0.0.2:8000\", \"http://10.0.0.3:8000\"]\n" \
    "    model: qwen\n" \
    "    health: { fail_threshold: 2 }\n" \
    "  solo:\n" \
    "    tier: frontier\n" \
    "    provider: openai\n" \
    "    url: https://api.example.com/v1\n" \
    "    model: gpt\n"

/* qwen after a reload: .2 removed, .4 added, .1 and .3 kept. */
#define QWEN_RELOADED \
    "backends:\n" \
    "  qwen:\n" \
    "    tier: local\n" \
    "    provider: vllm\n" \
    "    urls: [\"http://10.0.0.3:8000\", \"http://10.0.0.1:8000\", \"http://10.0.0.4:8000\"]\n" \
    "    model: qwen\n" \
    "  solo:\n" \
    "    tier: frontier\n" \
    "    provider: openai\n" \
    "    url: https://api.example.com/v1\n" \
    "    model: gpt\n"

/* Configs of the current test, released by the teardown. */
static struct gw_config *g_cfg, *g_cfg2;

static struct gw_config *load(const char *yaml)
{
    char err[256];
    struct gw_config *c = gw_config_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err));
    if (!c)
        fail_msg("config: %s", err);
    return c;
}

static int setup(void **state)
{
    (void)state;
    g_cfg = load(QWEN3);
    gw_backends_attach(g_cfg, NULL);
    g_cfg2 = NULL;
    return 0;
}

/* Drop the test's (last) reference. The targets are released explicitly
 * first: release_targets() is idempotent, so this is right whether or not
 * gw_config_unref() calls release_runtime itself, and it keeps the leak
 * report of a broken unref confined to the tests that check unref. */
static void drop(struct gw_config *c)
{
    if (!c)
        return;
    if (atomic_load(&c->refs) == 1 && c->release_runtime)
        c->release_runtime(c);
    gw_config_unref(c);
}

static int teardown(void **state)
{
    (void)state;
    drop(g_cfg2);
    drop(g_cfg);
    g_cfg = g_cfg2 = NULL;
    return 0;
}

static struct gw_backend_conf *backend(struct gw_config *c, const char *name)
{
    for (size_t i = 0; i < c->nbackends; i++)
        if (strcmp(c->backends[i].name, name) == 0)
            return &c->backends[i];
    fail_msg("no backend %s", name);
    return NULL;
}

static void set_inflight(struct gw_backend_conf *b, unsigned worker, const int64_t *n)
{
    for (size_t j = 0; j < b->nurls; j++)
        b->targets[j]->wk[worker].inflight = n[j];
}

/* ------------------------------------------------------------------------ */

static void test_attach(void **state)
{
    (void)state;
    struct gw_backend_conf *q = backend(g_cfg, "qwen"), *s = backend(g_cfg, "solo");
    assert_int_equal(q->nurls, 3);
    assert_non_null(q->targets);
    for (size_t j = 0; j < q->nurls; j++) {
        struct gw_target *t = q->targets[j];
        assert_non_null(t);
        assert_string_equal(t->backend, "qwen");
        assert_string_equal(t->url, q->urls[j]);
        assert_true(atomic_load(&t->healthy));
        assert_int_equal(atomic_load(&t->refs), 1);
        assert_int_equal(atomic_load(&t->consecutive_failures), 0);
    }
    assert_ptr_not_equal(q->targets[0], q->targets[1]);
    assert_int_equal(s->nurls, 1);
    assert_string_equal(s->targets[0]->url, "https://api.example.com/v1");
    assert_non_null(g_cfg->release_runtime);
    assert_true(gw_backend_healthy(q));
    assert_true(gw_backend_healthy(s));
}

static void test_pick_least_inflight(void **state)
{
    (void)state;
    struct gw_backend_conf *q = backend(g_cfg, "qwen");
    static const struct {
        int64_t inflight[3];
        size_t want;
    } cases[] = {
        {{2, 0, 1}, 1}, {{0, 5, 5}, 0}, {{9, 9, 3}, 2}, {{1, 1, 0}, 2}, {{100, 99, 101}, 1},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        set_inflight(q, 0, cases[i].inflight);
        /* the answer does not depend on where the scan starts */
        for (int k = 0; k < 6; k++) {
            struct gw_target *t = gw_backend_pick(q, 0);
            if (t != q->targets[cases[i].want])
                fail_msg("case %zu: picked %s, want %s", i, t ? t->url : "NULL",
                         q->urls[cases[i].want]);
        }
    }
}

static void test_pick_spreads_ties(void **state)
{
    (void)state;
    struct gw_backend_conf *q = backend(g_cfg, "qwen");
    static const int64_t zero[3] = {0, 0, 0};
    set_inflight(q, 0, zero);
    unsigned hits[3] = {0, 0, 0};
    for (int k = 0; k < 30; k++) {
        struct gw_target *t = gw_backend_pick(q, 0);
        assert_non_null(t);
        for (size_t j = 0; j < 3; j++)
            hits[j] += t == q->targets[j];
    }
    for (size_t j = 0; j < 3; j++)
        if (hits[j] == 0)
            fail_msg("target %zu never picked among equals (%u/%u/%u)", j, hits[0], hits[1],
                     hits[2]);
}

static void test_pick_per_worker(void **state)
{
    (void)state;
    struct gw_backend_conf *q = backend(g_cfg, "qwen");
    static const int64_t w0[3] = {0, 7, 7}, w5[3] = {7, 7, 0};
    set_inflight(q, 0, w0);
    set_inflight(q, 5, w5);
    assert_ptr_equal(gw_backend_pick(q, 0), q->targets[0]);
    assert_ptr_equal(gw_backend_pick(q, 5), q->targets[2]);
    /* a worker with no counts yet sees all equal, and gets a target */
    assert_non_null(gw_backend_pick(q, GW_MAX_WORKERS - 1));
}

static void test_pick_skips_unhealthy(void **state)
{
    (void)state;
    struct gw_backend_conf *q = backend(g_cfg, "qwen");
    static const int64_t n[3] = {0, 5, 9};
    set_inflight(q, 0, n);
    atomic_store(&q->targets[0]->healthy, false);
    for (int k = 0; k < 6; k++)
        assert_ptr_equal(gw_backend_pick(q, 0), q->targets[1]);
    atomic_store(&q->targets[1]->healthy, false);
    for (int k = 0; k < 6; k++)
        assert_ptr_equal(gw_backend_pick(q, 0), q->targets[2]);
    assert_true(gw_backend_healthy(q));
    atomic_store(&q->targets[2]->healthy, false);
    assert_null(gw_backend_pick(q, 0));
    assert_false(gw_backend_healthy(q));
    /* other backends are unaffected */
    assert_true(gw_backend_healthy(backend(g_cfg, "solo")));
}

static void test_unattached(void **state)
{
    (void)state;
    g_cfg2 = load(QWEN3);
    struct gw_backend_conf *q = backend(g_cfg2, "qwen");
    assert_null(q->targets);
    assert_null(gw_backend_pick(q, 0));
    assert_false(gw_backend_healthy(q));
}

/* Passive health, as a script of outcomes per case: 'F' a failed request,
 * 'S' a success; the row says after which report the target is ejected
 * (that report returns true, every other returns false). */
static void test_passive_health(void **state)
{
    (void)state;
    static const struct {
        const char *backend;
        unsigned threshold_override; /* 0: as configured */
        const char *script;
        int ejected_at;              /* 0-based index, -1 never */
    } cases[] = {
        {"qwen", 0, "F", -1},          /* configured threshold 2 */
        {"qwen", 0, "FF", 1},
        {"qwen", 0, "FSFSFS", -1},     /* consecutive only */
        {"qwen", 0, "SFSFF", 4},
        {"qwen", 0, "FFFF", 1},        /* returns true once */
        {"solo", 0, "FF", -1},         /* default threshold 3 */
        {"solo", 0, "FFF", 2},
        {"solo", 1, "F", 0},
        {"solo", 5, "FFFFSFFFFF", 9},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        struct gw_backend_conf *b = backend(g_cfg, cases[i].backend);
        struct gw_backend_conf copy = *b;
        if (cases[i].threshold_override)
            copy.fail_threshold = cases[i].threshold_override;
        struct gw_target *t = b->targets[0];
        atomic_store(&t->healthy, true);
        atomic_store(&t->consecutive_failures, 0);
        int ejected = -1;
        for (int k = 0; cases[i].script[k]; k++) {
            bool ok = cases[i].script[k] == 'S';
            bool r = gw_target_report(t, &copy, ok);
            if (r) {
                if (ejected >= 0)
                    fail_msg("case %zu: ejected twice (at %d and %d)", i, ejected, k);
                ejected = k;
            }
            /* healthy exactly until the ejecting report */
            bool want_healthy = cases[i].ejected_at < 0 || k < cases[i].ejected_at;
            if (atomic_load(&t->healthy) != want_healthy)
                fail_msg("case %zu: after report %d healthy=%d, want %d", i, k,
                         atomic_load(&t->healthy), want_healthy);
        }
        if (ejected != cases[i].ejected_at)
            fail_msg("case %zu (%s): ejected at %d, want %d", i, cases[i].script, ejected,
                     cases[i].ejected_at);
    }
}

static void test_config_default_threshold(void **state)
{
    (void)state;
    /* fail_threshold 0 in a hand-built conf means the default, 3 */
    struct gw_backend_conf *b = backend(g_cfg, "qwen");
    struct gw_backend_conf copy = *b;
    copy.fail_threshold = 0;
    struct gw_target *t = b->targets[1];
    assert_false(gw_target_report(t, &copy, false));
    assert_false(gw_target_report(t, &copy, false));
    assert_true(gw_target_report(t, &copy, false));
    assert_false(atomic_load(&t->healthy));
}

/* An ejected target is not picked, and a late success report does not bring
 * it back (active health checks do that). */
static void test_ejected_not_picked(void **state)
{
    (void)state;
    struct gw_backend_conf *q = backend(g_cfg, "qwen");
    static const int64_t n[3] = {0, 3, 3};
    set_inflight(q, 0, n);
    assert_ptr_equal(gw_backend_pick(q, 0), q->targets[0]);
    gw_target_report(q->targets[0], q, false);
    assert_ptr_equal(gw_backend_pick(q, 0), q->targets[0]);
    assert_true(gw_target_report(q->targets[0], q, false));
    for (int k = 0; k < 6; k++)
        assert_ptr_not_equal(gw_backend_pick(q, 0), q->targets[0]);
    assert_false(gw_target_report(q->targets[0], q, true));
    assert_false(atomic_load(&q->targets[0]->healthy));
    assert_int_equal(atomic_load(&q->targets[0]->consecutive_failures), 0);
}

/* A reload keeps the targets (and their health) of URLs that stay, makes
 * new ones for new URLs, and drops the removed ones with the old config. */
static void test_reload_carries_targets(void **state)
{
    (void)state;
    struct gw_backend_conf *q = backend(g_cfg, "qwen");
    struct gw_target *t1 = q->targets[0], *t3 = q->targets[2];
    atomic_store(&t3->healthy, false);
    atomic_store(&t1->consecutive_failures, 1);

    g_cfg2 = load(QWEN_RELOADED);
    gw_backends_attach(g_cfg2, g_cfg);
    struct gw_backend_conf *n = backend(g_cfg2, "qwen");
    assert_ptr_equal(n->targets[0], t3);   /* 10.0.0.3 */
    assert_ptr_equal(n->targets[1], t1);   /* 10.0.0.1 */
    assert_ptr_not_equal(n->targets[2], t1);
    assert_ptr_not_equal(n->targets[2], t3);
    assert_string_equal(n->targets[2]->url, "http://10.0.0.4:8000");
    assert_true(atomic_load(&n->targets[2]->healthy));
    assert_int_equal(atomic_load(&t1->refs), 2);
    assert_int_equal(atomic_load(&t3->refs), 2);
    assert_int_equal(atomic_load(&n->targets[2]->refs), 1);
    /* same backend in both: solo's target is shared too */
    assert_ptr_equal(backend(g_cfg2, "solo")->targets[0], backend(g_cfg, "solo")->targets[0]);

    /* the old config goes; kept targets live on with their state */
    gw_config_unref(g_cfg);
    g_cfg = NULL;
    assert_int_equal(atomic_load(&t1->refs), 1);
    assert_int_equal(atomic_load(&t3->refs), 1);
    assert_false(atomic_load(&t3->healthy));
    assert_int_equal(atomic_load(&t1->consecutive_failures), 1);
    assert_string_equal(t3->url, "http://10.0.0.3:8000");
    /* with the 10.0.0.3 target ejected, picks avoid it */
    static const int64_t z[3] = {0, 0, 0};
    set_inflight(n, 0, z);
    for (int k = 0; k < 6; k++)
        assert_ptr_not_equal(gw_backend_pick(n, 0), t3);
    /* and passive health goes on counting from where it was: the default
     * threshold is 3 now (no health: section), 1 failure was carried over */
    assert_false(gw_target_report(t1, n, false));
    assert_true(gw_target_report(t1, n, false));
}

static void test_target_unref_null(void **state)
{
    (void)state;
    gw_target_unref(NULL);
    struct gw_backend_conf *q = backend(g_cfg, "qwen");
    struct gw_target *t = q->targets[0];
    atomic_fetch_add(&t->refs, 1); /* someone else holds it */
    gw_config_unref(g_cfg);
    g_cfg = NULL;
    assert_int_equal(atomic_load(&t->refs), 1);
    assert_string_equal(t->url, "http://10.0.0.1:8000");
    gw_target_unref(t); /* the last reference frees it (ASan checks) */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_attach, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pick_least_inflight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pick_spreads_ties, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pick_per_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pick_skips_unhealthy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unattached, setup, teardown),
        cmocka_unit_test_setup_teardown(test_passive_health, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_default_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ejected_not_picked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_carries_targets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_target_unref_null, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
