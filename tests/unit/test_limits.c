/*
 * test_limits.c - the rate limiter (src/gateway/limits.c): requests and
 * tokens per sliding minute, concurrency, key and team together, the times
 * it reports, counts from other replicas, and forgetting idle subjects.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/limits.h"

#define T0 1800000000000ll /* ms, on a second boundary */

static const struct gw_limit_spec none = {0, 0, 0};

static enum gw_limit_kind admit(struct gw_limits *L, const char *key, struct gw_limit_spec ks,
                                const char *team, struct gw_limit_spec ts, int64_t tokens,
                                int64_t now, struct gw_limit_ticket *t,
                                struct gw_limit_verdict *v)
{
    return gw_limits_admit(L, key, &ks, team, &ts, tokens, now, t, v);
}

static void test_rpm_sliding_window(void **state)
{
    (void)state;
    struct gw_limits *L = gw_limits_new();
    struct gw_limit_spec k = {3, 0, 0};
    struct gw_limit_ticket t;
    struct gw_limit_verdict v;
    /* two at 0 s, one at 30 s */
    assert_int_equal(admit(L, "vk_a", k, "", none, 10, T0, &t, &v), GW_LIMIT_OK);
    assert_int_equal(v.view.req_limit, 3);
    assert_int_equal(v.view.req_remaining, 2);
    assert_int_equal(v.view.req_reset_ms, 60000);
    gw_limits_finish(L, &t, 10);
    assert_int_equal(admit(L, "vk_a", k, "", none, 10, T0 + 400, &t, &v), GW_LIMIT_OK);
    gw_limits_finish(L, &t, 10);
    assert_int_equal(admit(L, "vk_a", k, "", none, 10, T0 + 30000, &t, &v), GW_LIMIT_OK);
    assert_int_equal(v.view.req_remaining, 0);
    assert_int_equal(v.view.req_reset_ms, 60000); /* the newest leaves at 90 s */
    gw_limits_finish(L, &t, 10);
    /* the fourth at 59.25 s: the first two leave at 60 s */
    assert_int_equal(admit(L, "vk_a", k, "", none, 10, T0 + 59250, &t, &v), GW_LIMIT_REQUESTS);
    assert_string_equal(v.scope, "key");
    assert_int_equal(v.limit, 3);
    assert_int_equal(v.used, 3);
    assert_int_equal(v.retry_after_ms, 750);
    assert_null(t.e[0]);
    /* at 60 s the window is (0, 60]: only the 30 s one is left, two fit */
    assert_int_equal(admit(L, "vk_a", k, "", none, 10, T0 + 60000, &t, &v), GW_LIMIT_OK);
    gw_limits_finish(L, &t, 10);
    assert_int_equal(admit(L, "vk_a", k, "", none, 10, T0 + 60001, &t, &v), GW_LIMIT_OK);
    gw_limits_finish(L, &t, 10);
    assert_int_equal(admit(L, "vk_a", k, "", none, 10, T0 + 60002, &t, &v), GW_LIMIT_REQUESTS);
    /* the 30 s one leaves at 90 s */
    assert_int_equal(v.retry_after_ms, 90000 - 60002);
    /* a different key has its own window */
    assert_int_equal(admit(L, "vk_b", k, "", none, 10, T0 + 60002, &t, &v), GW_LIMIT_OK);
    gw_limits_finish(L, &t, 10);
    /* a burst of 100 at one instant: exactly the limit gets through */
    int ok = 0;
    for (int i = 0; i < 100; i++)
        if (admit(L, "vk_c", k, "", none, 1, T0 + 200000, &t, &v) == GW_LIMIT_OK) {
            ok++;
            gw_limits_finish(L, &t, 1);
        }
    assert_int_equal(ok, 3);
    gw_limits_free(L);
}

static void test_tpm_corrected_at_finish(void **state)
{
    (void)state;
    struct gw_limits *L = gw_limits_new();
    struct gw_limit_spec k = {0, 1000, 0};
    struct gw_limit_ticket t1, t2;
    struct gw_limit_verdict v;
    assert_int_equal(admit(L, "vk", k, "", none, 600, T0, &t1, &v), GW_LIMIT_OK);
    assert_int_equal(v.view.tok_remaining, 400);
    assert_int_equal(v.view.req_limit, 0); /* no rpm: no request headers */
    assert_int_equal(admit(L, "vk", k, "", none, 500, T0 + 10, &t2, &v), GW_LIMIT_TOKENS);
    assert_int_equal(v.used, 600);
    assert_int_equal(v.retry_after_ms, 60000 - 10);
    /* the first used only 100 of its 600: 500 fit now */
    gw_limits_finish(L, &t1, 100);
    assert_int_equal(admit(L, "vk", k, "", none, 500, T0 + 20, &t2, &v), GW_LIMIT_OK);
    assert_int_equal(v.view.tok_remaining, 400);
    /* used more than charged: the window holds the real amount */
    gw_limits_finish(L, &t2, 700);
    assert_int_equal(admit(L, "vk", k, "", none, 300, T0 + 30, &t2, &v), GW_LIMIT_TOKENS);
    assert_int_equal(v.used, 800);
    /* more than the whole limit: no wait helps */
    assert_int_equal(admit(L, "vk", k, "", none, 1001, T0 + 30, &t2, &v), GW_LIMIT_TOO_LARGE);
    assert_int_equal(v.retry_after_ms, 0);
    assert_int_equal(v.limit, 1000);
    /* finishing after the second left the window changes nothing */
    assert_int_equal(admit(L, "vk", k, "", none, 200, T0 + 40, &t1, &v), GW_LIMIT_OK);
    assert_int_equal(admit(L, "vk", k, "", none, 900, T0 + 61000, &t2, &v), GW_LIMIT_OK);
    gw_limits_finish(L, &t1, 0);
    gw_limits_finish(L, &t2, 900);
    assert_int_equal(admit(L, "vk", k, "", none, 100, T0 + 61001, &t1, &v), GW_LIMIT_OK);
    assert_int_equal(admit(L, "vk", k, "", none, 1, T0 + 61002, &t2, &v), GW_LIMIT_TOKENS);
    gw_limits_finish(L, &t1, 100);
    gw_limits_free(L);
}

static void test_concurrency(void **state)
{
    (void)state;
    struct gw_limits *L = gw_limits_new();
    struct gw_limit_spec k = {0, 0, 2};
    struct gw_limit_ticket a, b, c;
    struct gw_limit_verdict v;
    assert_int_equal(admit(L, "vk", k, "", none, 5, T0, &a, &v), GW_LIMIT_OK);
    assert_int_equal(admit(L, "vk", k, "", none, 5, T0, &b, &v), GW_LIMIT_OK);
    assert_int_equal(admit(L, "vk", k, "", none, 5, T0, &c, &v), GW_LIMIT_CONCURRENT);
    assert_int_equal(v.limit, 2);
    assert_int_equal(v.used, 2);
    assert_true(v.retry_after_ms > 0);
    gw_limits_finish(L, &a, 5);
    gw_limits_finish(L, &a, 5); /* a ticket given back twice counts once */
    assert_int_equal(admit(L, "vk", k, "", none, 5, T0, &c, &v), GW_LIMIT_OK);
    assert_int_equal(admit(L, "vk", k, "", none, 5, T0, &a, &v), GW_LIMIT_CONCURRENT);
    gw_limits_finish(L, &b, 5);
    gw_limits_finish(L, &c, 5);
    gw_limits_free(L);
}

static void test_key_and_team(void **state)
{
    (void)state;
    struct gw_limits *L = gw_limits_new();
    struct gw_limit_spec team = {3, 0, 0}, k1 = {10, 0, 0};
    struct gw_limit_ticket t;
    struct gw_limit_verdict v;
    /* two keys of one team share the team's 3 */
    assert_int_equal(admit(L, "vk_1", k1, "ml", team, 1, T0, &t, &v), GW_LIMIT_OK);
    /* headers show the tighter: the team's 2 left, not the key's 9 */
    assert_int_equal(v.view.req_limit, 3);
    assert_int_equal(v.view.req_remaining, 2);
    gw_limits_finish(L, &t, 1);
    assert_int_equal(admit(L, "vk_1", k1, "ml", team, 1, T0, &t, &v), GW_LIMIT_OK);
    gw_limits_finish(L, &t, 1);
    assert_int_equal(admit(L, "vk_2", none, "ml", team, 1, T0, &t, &v), GW_LIMIT_OK);
    assert_null(t.e[0]); /* an unlimited key is not tracked */
    assert_non_null(t.e[1]);
    gw_limits_finish(L, &t, 1);
    assert_int_equal(admit(L, "vk_2", none, "ml", team, 1, T0, &t, &v), GW_LIMIT_REQUESTS);
    assert_string_equal(v.scope, "team");
    /* refused by the team: the key's count did not move either */
    assert_int_equal(admit(L, "vk_1", k1, "", none, 1, T0, &t, &v), GW_LIMIT_OK);
    assert_int_equal(v.view.req_remaining, 7);
    gw_limits_finish(L, &t, 1);
    /* another team is not affected; no limits at all is never counted */
    assert_int_equal(admit(L, "vk_3", none, "other", team, 1, T0, &t, &v), GW_LIMIT_OK);
    gw_limits_finish(L, &t, 1);
    assert_int_equal(admit(L, "vk_4", none, "", none, 1, T0, &t, &v), GW_LIMIT_OK);
    assert_int_equal(v.view.req_limit, 0);
    assert_int_equal(gw_limits_subjects(L), 3); /* vk_1, ml, other */
    gw_limits_free(L);
}

static void test_clock_steps_back(void **state)
{
    (void)state;
    struct gw_limits *L = gw_limits_new();
    struct gw_limit_spec k = {2, 0, 0};
    struct gw_limit_ticket t;
    struct gw_limit_verdict v;
    assert_int_equal(admit(L, "vk", k, "", none, 1, T0 + 5000, &t, &v), GW_LIMIT_OK);
    gw_limits_finish(L, &t, 1);
    /* the wall clock went back 3 s: still counted in the same window */
    assert_int_equal(admit(L, "vk", k, "", none, 1, T0 + 2000, &t, &v), GW_LIMIT_OK);
    gw_limits_finish(L, &t, 1);
    assert_int_equal(admit(L, "vk", k, "", none, 1, T0 + 2500, &t, &v), GW_LIMIT_REQUESTS);
    assert_true(v.retry_after_ms > 0);
    gw_limits_free(L);
}

/* What one replica collects, another applies as remote counts. */
static void test_remote_counts(void **state)
{
    (void)state;
    struct gw_limits *A = gw_limits_new(), *B = gw_limits_new();
    struct gw_limit_spec k = {5, 1000, 2};
    struct gw_limit_ticket t1, t2, t3;
    struct gw_limit_verdict v;
    assert_int_equal(admit(A, "vk", k, "", none, 100, T0, &t1, &v), GW_LIMIT_OK);
    assert_int_equal(admit(A, "vk", k, "", none, 100, T0 + 1000, &t2, &v), GW_LIMIT_OK);
    assert_int_equal(admit(A, "vk", k, "", none, 100, T0 + 1000, &t3, &v), GW_LIMIT_CONCURRENT);
    gw_limits_finish(A, &t1, 50);
    struct gw_rate_row *rows;
    struct gw_rate_inflight *inf;
    size_t nr, ni;
    gw_limits_collect(A, T0 + 1500, &rows, &nr, &inf, &ni);
    assert_int_equal(nr, 2); /* seconds 0 and 1 changed */
    int64_t req = 0, tok = 0;
    for (size_t i = 0; i < nr; i++) {
        assert_string_equal(rows[i].subject, "key:vk");
        req += rows[i].requests;
        tok += rows[i].tokens;
    }
    assert_int_equal(req, 2);
    assert_int_equal(tok, 150);
    assert_int_equal(ni, 1);
    assert_int_equal(inf[0].inflight, 1);
    gw_limits_apply_remote(B, T0 + 1600, rows, nr, inf, ni);
    /* B sees A's running request: one more fits its concurrency of 2 */
    assert_int_equal(admit(B, "vk", k, "", none, 100, T0 + 1700, &t1, &v), GW_LIMIT_OK);
    assert_int_equal(v.view.req_remaining, 2);   /* 5 - 2 remote - 1 own */
    assert_int_equal(v.view.tok_remaining, 750); /* 1000 - 150 - 100 */
    assert_int_equal(admit(B, "vk", k, "", none, 100, T0 + 1700, &t3, &v), GW_LIMIT_CONCURRENT);
    free(rows);
    free(inf);
    /* nothing changed since: only the running request is published */
    gw_limits_collect(A, T0 + 1800, &rows, &nr, &inf, &ni);
    assert_int_equal(nr, 0);
    assert_int_equal(ni, 1);
    free(rows);
    free(inf);
    /* A's request ends; the next exchange replaces what B held */
    gw_limits_finish(A, &t2, 100);
    gw_limits_collect(A, T0 + 2000, &rows, &nr, &inf, &ni);
    assert_int_equal(ni, 1);
    assert_int_equal(inf[0].inflight, 0);
    gw_limits_apply_remote(B, T0 + 2000, NULL, 0, NULL, 0);
    assert_int_equal(admit(B, "vk", k, "", none, 100, T0 + 2000, &t3, &v), GW_LIMIT_OK);
    assert_int_equal(v.view.req_remaining, 3); /* B's own two */
    gw_limits_finish(B, &t1, 100);
    gw_limits_finish(B, &t3, 100);
    free(rows);
    free(inf);
    /* remote seconds outside the window are ignored */
    struct gw_rate_row old = {"key:vk", T0 / 1000 - 100, 50, 50};
    gw_limits_apply_remote(B, T0 + 3000, &old, 1, NULL, 0);
    assert_int_equal(admit(B, "vk", k, "", none, 1, T0 + 3000, &t1, &v), GW_LIMIT_OK);
    gw_limits_finish(B, &t1, 1);
    gw_limits_free(A);
    gw_limits_free(B);
}

static void test_forget_idle(void **state)
{
    (void)state;
    struct gw_limits *L = gw_limits_new();
    struct gw_limit_spec k = {1, 0, 0};
    struct gw_limit_ticket t, held;
    struct gw_limit_verdict v;
    struct gw_rate_row *rows;
    struct gw_rate_inflight *inf;
    size_t nr, ni;
    assert_int_equal(admit(L, "idle", k, "", none, 1, T0, &t, &v), GW_LIMIT_OK);
    gw_limits_finish(L, &t, 1);
    assert_int_equal(admit(L, "busy", k, "", none, 1, T0, &held, &v), GW_LIMIT_OK);
    gw_limits_collect(L, T0 + 1000, &rows, &nr, &inf, &ni);
    free(rows);
    free(inf);
    assert_int_equal(gw_limits_subjects(L), 2);
    /* two windows later: the idle one is forgotten, the one with a
     * request still running is kept */
    gw_limits_collect(L, T0 + 125000, &rows, &nr, &inf, &ni);
    free(rows);
    free(inf);
    assert_int_equal(gw_limits_subjects(L), 1);
    gw_limits_finish(L, &held, 1);
    gw_limits_collect(L, T0 + 126000, &rows, &nr, &inf, &ni);
    free(rows);
    free(inf);
    gw_limits_collect(L, T0 + 127000, &rows, &nr, &inf, &ni);
    free(rows);
    free(inf);
    assert_int_equal(gw_limits_subjects(L), 0);
    gw_limits_free(L);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rpm_sliding_window), cmocka_unit_test(test_tpm_corrected_at_finish),
        cmocka_unit_test(test_concurrency),        cmocka_unit_test(test_key_and_team),
        cmocka_unit_test(test_clock_steps_back),   cmocka_unit_test(test_remote_counts),
        cmocka_unit_test(test_forget_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
