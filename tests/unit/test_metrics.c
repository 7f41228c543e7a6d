/*
 * test_metrics.c - unit tests for the per-worker metrics registries
 * (src/metrics/metrics.c, contract in include/hybridgw/metrics.h): series
 * identity, counters, gauges, histograms, the text exposition format, and
 * merging several registries at scrape.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hybridgw/metrics.h"

static const struct gw_metric_family f_req = {
    "t_requests_total", "Requests handled.", GW_METRIC_COUNTER, {"backend", "status", NULL},
    NULL, 0};
static const struct gw_metric_family f_inflight = {
    "t_inflight", "Requests in flight.", GW_METRIC_GAUGE, {NULL}, NULL, 0};
static const double dur_buckets[] = {0.1, 1, 10};
static const struct gw_metric_family f_dur = {
    "t_duration_seconds", "Request duration.", GW_METRIC_HISTOGRAM, {"backend", NULL},
    dur_buckets, 3};
static const struct gw_metric_family f_unused = {
    "t_unused_total", "Never touched.", GW_METRIC_COUNTER, {"x", NULL}, NULL, 0};

/* Registries and the output buffer of the current test; freed by the
 * teardown so a failed assertion does not leak them. */
static struct gw_metrics *g_regs[3];
static struct gw_buf g_out;

static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < GW_ARRAY_LEN(g_regs); i++)
        g_regs[i] = gw_metrics_new();
    gw_buf_init(&g_out, 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < GW_ARRAY_LEN(g_regs); i++) {
        gw_metrics_free(g_regs[i]);
        g_regs[i] = NULL;
    }
    gw_buf_free(&g_out);
    return 0;
}

/* Render families from the first nregs registries into g_out (reset first). */
static const char *render(size_t nregs, const struct gw_metric_family *const *fams, size_t nfams)
{
    gw_buf_reset(&g_out);
    gw_metrics_render(g_regs, nregs, fams, nfams, &g_out);
    assert_int_equal(g_out.err, 0);
    return g_out.data ? g_out.data : "";
}

static void expect_render(size_t nregs, const struct gw_metric_family *const *fams, size_t nfams,
                          const char *want)
{
    const char *got = render(nregs, fams, nfams);
    if (strcmp(got, want) != 0)
        fail_msg("rendered:\n%s\nwant:\n%s", got, want);
}

/* ------------------------------------------------------------------------ */

static void test_series_identity(void **state)
{
    (void)state;
    struct gw_metrics *m = g_regs[0];
    const char *v1[] = {"qwen", "200"}, *v1b[] = {"qwen", "200"}, *v2[] = {"qwen", "500"};
    struct gw_series *a = gw_metrics_get(m, &f_req, v1);
    assert_non_null(a);
    assert_ptr_equal(gw_metrics_get(m, &f_req, v1b), a);  /* by value, not pointer */
    assert_ptr_equal(gw_metrics_getv(m, &f_req, "qwen", "200"), a);
    struct gw_series *b = gw_metrics_get(m, &f_req, v2);
    assert_ptr_not_equal(a, b);
    /* the same label values in another family are another series */
    assert_ptr_not_equal(gw_metrics_getv(m, &f_dur, "qwen"), a);
    /* label values are not confused by where they split */
    assert_ptr_not_equal(gw_metrics_getv(m, &f_req, "ab", "c"),
                         gw_metrics_getv(m, &f_req, "a", "bc"));
    /* NULL means "" */
    const char *vn[] = {NULL, "x"};
    assert_ptr_equal(gw_metrics_get(m, &f_req, vn), gw_metrics_getv(m, &f_req, "", "x"));
    /* no labels */
    assert_ptr_equal(gw_metrics_getv(m, &f_inflight), gw_metrics_get(m, &f_inflight, NULL));
}

static void test_counter_gauge_render(void **state)
{
    (void)state;
    struct gw_metrics *m = g_regs[0];
    gw_series_inc(gw_metrics_getv(m, &f_req, "qwen", "200"), 1);
    gw_series_inc(gw_metrics_getv(m, &f_req, "qwen", "200"), 2);
    gw_series_inc(gw_metrics_getv(m, &f_req, "llama", "429"), 1);
    struct gw_series *g = gw_metrics_getv(m, &f_inflight);
    gw_series_inc(g, 5);
    gw_series_inc(g, -2);
    const struct gw_metric_family *fams[] = {&f_req, &f_inflight, &f_unused};
    expect_render(1, fams, 3,
                  "# HELP t_requests_total Requests handled.\n"
                  "# TYPE t_requests_total counter\n"
                  "t_requests_total{backend=\"llama\",status=\"429\"} 1\n"
                  "t_requests_total{backend=\"qwen\",status=\"200\"} 3\n"
                  "# HELP t_inflight Requests in flight.\n"
                  "# TYPE t_inflight gauge\n"
                  "t_inflight 3\n"
                  "# HELP t_unused_total Never touched.\n"
                  "# TYPE t_unused_total counter\n");
    gw_series_set(g, 0.5);
    const struct gw_metric_family *one[] = {&f_inflight};
    expect_render(1, one, 1,
                  "# HELP t_inflight Requests in flight.\n# TYPE t_inflight gauge\n"
                  "t_inflight 0.5\n");
}

static void test_value_formats(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0, "0"},       {42, "42"},         {-7, "-7"},       {0.25, "0.25"},
        {1e15, "1000000000000000"}, {1e20, "1e+20"}, {123456789012, "123456789012"}, {NAN, "NaN"},
        {INFINITY, "+Inf"}, {-INFINITY, "-Inf"},
    };
    const struct gw_metric_family *fams[] = {&f_inflight};
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        gw_series_set(gw_metrics_getv(g_regs[0], &f_inflight), cases[i].v);
        char want[256];
        snprintf(want, sizeof(want),
                 "# HELP t_inflight Requests in flight.\n# TYPE t_inflight gauge\n"
                 "t_inflight %s\n",
                 cases[i].text);
        expect_render(1, fams, 1, want);
    }
}

static void test_histogram(void **state)
{
    (void)state;
    struct gw_series *s = gw_metrics_getv(g_regs[0], &f_dur, "qwen");
    /* bounds are inclusive (le): 0.1 goes in the first bucket, 1 in the
     * second; 50 only in +Inf. Values are exact in binary. */
    static const double obs[] = {0.0625, 0.1, 0.5, 1, 4, 50};
    for (size_t i = 0; i < GW_ARRAY_LEN(obs); i++)
        gw_series_observe(s, obs[i]);
    const struct gw_metric_family *fams[] = {&f_dur};
    char want[1024];
    snprintf(want, sizeof(want),
             "# HELP t_duration_seconds Request duration.\n"
             "# TYPE t_duration_seconds histogram\n"
             "t_duration_seconds_bucket{backend=\"qwen\",le=\"0.1\"} 2\n"
             "t_duration_seconds_bucket{backend=\"qwen\",le=\"1\"} 4\n"
             "t_duration_seconds_bucket{backend=\"qwen\",le=\"10\"} 5\n"
             "t_duration_seconds_bucket{backend=\"qwen\",le=\"+Inf\"} 6\n"
             "t_duration_seconds_sum{backend=\"qwen\"} %.17g\n"
             "t_duration_seconds_count{backend=\"qwen\"} 6\n",
             0.0625 + 0.1 + 0.5 + 1 + 4 + 50);
    expect_render(1, fams, 1, want);
}

static void test_merge_registries(void **state)
{
    (void)state;
    /* three workers: the same series in two, one only in the third */
    gw_series_inc(gw_metrics_getv(g_regs[0], &f_req, "qwen", "200"), 10);
    gw_series_inc(gw_metrics_getv(g_regs[1], &f_req, "qwen", "200"), 5);
    gw_series_inc(gw_metrics_getv(g_regs[2], &f_req, "a-first", "200"), 1);
    gw_series_observe(gw_metrics_getv(g_regs[0], &f_dur, "qwen"), 0.5);
    gw_series_observe(gw_metrics_getv(g_regs[2], &f_dur, "qwen"), 2);
    gw_series_inc(gw_metrics_getv(g_regs[0], &f_inflight), 2);
    gw_series_inc(gw_metrics_getv(g_regs[1], &f_inflight), 3);
    const struct gw_metric_family *fams[] = {&f_req, &f_dur, &f_inflight};
    expect_render(3, fams, 3,
                  "# HELP t_requests_total Requests handled.\n"
                  "# TYPE t_requests_total counter\n"
                  "t_requests_total{backend=\"a-first\",status=\"200\"} 1\n"
                  "t_requests_total{backend=\"qwen\",status=\"200\"} 15\n"
                  "# HELP t_duration_seconds Request duration.\n"
                  "# TYPE t_duration_seconds histogram\n"
                  "t_duration_seconds_bucket{backend=\"qwen\",le=\"0.1\"} 0\n"
                  "t_duration_seconds_bucket{backend=\"qwen\",le=\"1\"} 1\n"
                  "t_duration_seconds_bucket{backend=\"qwen\",le=\"10\"} 2\n"
                  "t_duration_seconds_bucket{backend=\"qwen\",le=\"+Inf\"} 2\n"
                  "t_duration_seconds_sum{backend=\"qwen\"} 2.5\n"
                  "t_duration_seconds_count{backend=\"qwen\"} 2\n"
                  "# HELP t_inflight Requests in flight.\n"
                  "# TYPE t_inflight gauge\n"
                  "t_inflight 5\n");
    /* a scrape of fewer registries sees only those */
    const struct gw_metric_family *one[] = {&f_req};
    expect_render(1, one, 1,
                  "# HELP t_requests_total Requests handled.\n"
                  "# TYPE t_requests_total counter\n"
                  "t_requests_total{backend=\"qwen\",status=\"200\"} 10\n");
}

static void test_label_escaping(void **state)
{
    (void)state;
    gw_series_inc(gw_metrics_getv(g_regs[0], &f_req, "a\\b\"c\nd", "x"), 1);
    const struct gw_metric_family *fams[] = {&f_req};
    expect_render(1, fams, 1,
                  "# HELP t_requests_total Requests handled.\n"
                  "# TYPE t_requests_total counter\n"
                  "t_requests_total{backend=\"a\\\\b\\\"c\\nd\",status=\"x\"} 1\n");
}

/* Many series: the table grows, pointers handed out earlier stay valid and
 * keep their values, and every series is rendered once. */
static void test_many_series(void **state)
{
    (void)state;
    enum { N = 700 };
    struct gw_series *s[N];
    char name[16];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "b%04d", i);
        s[i] = gw_metrics_getv(g_regs[0], &f_req, name, "200");
        gw_series_inc(s[i], i);
    }
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "b%04d", i);
        assert_ptr_equal(gw_metrics_getv(g_regs[0], &f_req, name, "200"), s[i]);
        gw_series_inc(s[i], 1);
    }
    const struct gw_metric_family *fams[] = {&f_req};
    const char *out = render(1, fams, 1);
    size_t lines = 0;
    for (const char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 2 + N);
    /* sorted by label values; spot-check first, a middle one and the last */
    assert_non_null(strstr(out, "# TYPE t_requests_total counter\n"
                                "t_requests_total{backend=\"b0000\",status=\"200\"} 1\n"
                                "t_requests_total{backend=\"b0001\",status=\"200\"} 2\n"));
    assert_non_null(strstr(out, "t_requests_total{backend=\"b0350\",status=\"200\"} 351\n"));
    char last[96];
    snprintf(last, sizeof(last), "t_requests_total{backend=\"b%04d\",status=\"200\"} %d\n", N - 1,
             N);
    assert_true(strlen(out) >= strlen(last));
    assert_string_equal(out + strlen(out) - strlen(last), last);
}

/* A scrape running while the worker creates series (the documented
 * threading model: one writer per registry, the scraper under the lock).
 * ASan/TSan would flag a table freed under the scraper. */
struct writer_arg {
    struct gw_metrics *m;
    int n;
};

static void *writer(void *p)
{
    struct writer_arg *a = p;
    char name[16];
    for (int i = 0; i < a->n; i++) {
        snprintf(name, sizeof(name), "w%05d", i);
        gw_series_inc(gw_metrics_getv(a->m, &f_req, name, "200"), 1);
    }
    return NULL;
}

static void test_scrape_while_writing(void **state)
{
    (void)state;
    struct writer_arg a = {g_regs[0], 3000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer, &a), 0);
    const struct gw_metric_family *fams[] = {&f_req};
    for (int i = 0; i < 20; i++)
        render(1, fams, 1);
    pthread_join(t, NULL);
    const char *out = render(1, fams, 1);
    size_t lines = 0;
    for (const char *p = out; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 2 + 3000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_series_identity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counter_gauge_render, setup, teardown),
        cmocka_unit_test_setup_teardown(test_value_formats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_histogram, setup, teardown),
        cmocka_unit_test_setup_teardown(test_merge_registries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_label_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_series, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scrape_while_writing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
