/*
 * test_vllm_load.c - unit tests for gw_vllm_load_parse (src/router/load.c,
 * contract in src/router/router.h): reading vLLM's queue, running count and
 * KV-cache use from its Prometheus /metrics text (metric names per
 * PROTOCOLS.md 4.5 and /work/shared/data/metrics/vllm.txt), for one served
 * model, summed (queue) or maxed (cache) over engines.
 *
 * Every page is parsed from an exact-size heap copy without a terminating
 * NUL, so ASan catches any read past len.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/router.h"

static int parse(const char *page, const char *model, struct gw_vllm_load *l)
{
    size_t n = strlen(page);
    char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, page, n);
    int rc = gw_vllm_load_parse(copy, n, model, l);
    free(copy);
    return rc;
}

#define NEAR(a, b) (fabs((a) - (b)) < 1e-9)

/* What a vLLM 0.11 (V1 engine) server shows, abridged: HELP/TYPE lines,
 * histograms, counters with _total, and the three gauges. */
static const char VLLM_PAGE[] =
    "# HELP python_gc_objects_collected_total Objects collected during gc\n"
    "# TYPE python_gc_objects_collected_total counter\n"
    "python_gc_objects_collected_total{generation=\"0\"} 12345.0\n"
    "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
    "# TYPE vllm:num_requests_running gauge\n"
    "vllm:num_requests_running{engine=\"0\",model_name=\"Qwen/Qwen2.5-Coder-32B-Instruct\"} 7.0\n"
    "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
    "# TYPE vllm:num_requests_waiting gauge\n"
    "vllm:num_requests_waiting{engine=\"0\",model_name=\"Qwen/Qwen2.5-Coder-32B-Instruct\"} 14.0\n"
    "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n"
    "# TYPE vllm:kv_cache_usage_perc gauge\n"
    "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"Qwen/Qwen2.5-Coder-32B-Instruct\"} 0.8125\n"
    "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n"
    "# TYPE vllm:prompt_tokens_total counter\n"
    "vllm:prompt_tokens_total{engine=\"0\",model_name=\"Qwen/Qwen2.5-Coder-32B-Instruct\"} 1.234e+06\n"
    "# TYPE vllm:request_success_total counter\n"
    "vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"Qwen/Qwen2.5-Coder-32B-Instruct\"} 99.0\n"
    "# TYPE vllm:time_to_first_token_seconds histogram\n"
    "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"0.001\",model_name=\"Qwen/Qwen2.5-Coder-32B-Instruct\"} 0.0\n"
    "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"Qwen/Qwen2.5-Coder-32B-Instruct\"} 99.0\n"
    "vllm:time_to_first_token_seconds_count{engine=\"0\",model_name=\"Qwen/Qwen2.5-Coder-32B-Instruct\"} 99.0\n"
    "vllm:time_to_first_token_seconds_sum{engine=\"0\",model_name=\"Qwen/Qwen2.5-Coder-32B-Instruct\"} 12.5\n"
    "# TYPE vllm:cache_config_info gauge\n"
    "vllm:cache_config_info{block_size=\"16\",cache_dtype=\"auto\",engine=\"0\"} 1.0\n"
    "# TYPE http_requests_total counter\n"
    "http_requests_total{handler=\"/v1/chat/completions\",method=\"POST\",status=\"2xx\"} 99.0\n";

static void test_realistic_page(void **state)
{
    (void)state;
    struct gw_vllm_load l;
    assert_int_equal(parse(VLLM_PAGE, "Qwen/Qwen2.5-Coder-32B-Instruct", &l), GW_OK);
    assert_true(l.have_waiting && l.have_running && l.have_kv);
    assert_true(NEAR(l.waiting, 14));
    assert_true(NEAR(l.running, 7));
    assert_true(NEAR(l.kv_cache, 0.8125));
}

/* The simulator's page (model_name first, engine second, integer values). */
static void test_sim_page(void **state)
{
    (void)state;
    static const char page[] =
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        "vllm:num_requests_running{model_name=\"sim-model\",engine=\"0\"} 2\n"
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n"
        "vllm:num_requests_waiting{model_name=\"sim-model\",engine=\"0\"} 3\n"
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        "vllm:kv_cache_usage_perc{model_name=\"sim-model\",engine=\"0\"} 1\n";
    struct gw_vllm_load l;
    assert_int_equal(parse(page, "sim-model", &l), GW_OK);
    assert_true(NEAR(l.waiting, 3) && NEAR(l.running, 2) && NEAR(l.kv_cache, 1));
}

/* Only the configured model's series count; a series without model_name
 * counts for any model; a model whose name is a prefix of another's does
 * not take the other's numbers. */
static void test_model_filter(void **state)
{
    (void)state;
    static const char page[] =
        "vllm:num_requests_waiting{engine=\"0\",model_name=\"qwen\"} 5\n"
        "vllm:num_requests_waiting{engine=\"0\",model_name=\"qwen-coder\"} 100\n"
        "vllm:num_requests_waiting{engine=\"0\",model_name=\"llama\"} 1000\n"
        "vllm:num_requests_running{engine=\"0\",model_name=\"qwen-coder\"} 3\n"
        "vllm:kv_cache_usage_perc{engine=\"0\"} 0.5\n";
    struct gw_vllm_load l;
    assert_int_equal(parse(page, "qwen", &l), GW_OK);
    assert_true(l.have_waiting && NEAR(l.waiting, 5));
    assert_false(l.have_running);
    assert_true(NEAR(l.running, 0));
    assert_true(l.have_kv && NEAR(l.kv_cache, 0.5)); /* unlabelled: for any model */

    assert_int_equal(parse(page, "qwen-coder", &l), GW_OK);
    assert_true(NEAR(l.waiting, 100) && NEAR(l.running, 3));

    assert_int_equal(parse(page, "llama", &l), GW_OK);
    assert_true(NEAR(l.waiting, 1000));
    assert_false(l.have_running);

    /* a model with no series at all, and no unlabelled series */
    static const char only_others[] =
        "vllm:num_requests_waiting{model_name=\"a\"} 4\n"
        "vllm:num_requests_running{model_name=\"a\"} 1\n"
        "vllm:kv_cache_usage_perc{model_name=\"a\"} 0.2\n";
    assert_int_equal(parse(only_others, "b", &l), GW_EPARSE);
    assert_int_equal(parse(only_others, "", &l), GW_EPARSE);
}

/* The label is matched by its name: another label whose name ends in
 * model_name, or a value that contains the text model_name=", does not
 * stand for it. */
static void test_model_label_exact(void **state)
{
    (void)state;
    struct gw_vllm_load l;
    static const char other_label[] =
        "vllm:num_requests_waiting{served_model_name=\"x\",model_name=\"qwen\"} 4\n";
    assert_int_equal(parse(other_label, "qwen", &l), GW_OK);
    assert_true(NEAR(l.waiting, 4));
    static const char in_value[] =
        "vllm:num_requests_waiting{note=\"model_name=\\\"x\\\"\",model_name=\"qwen\"} 4\n";
    assert_int_equal(parse(in_value, "qwen", &l), GW_OK);
    assert_true(NEAR(l.waiting, 4));
}

/* Data parallel: one series per engine; the queue sums, the cache is the
 * fullest engine's. */
static void test_engines(void **state)
{
    (void)state;
    static const char page[] =
        "vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 4\n"
        "vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 6\n"
        "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3\n"
        "vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 9\n"
        "vllm:num_requests_waiting{engine=\"2\",model_name=\"m\"} 0\n"
        "vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.4\n"
        "vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.93\n"
        "vllm:kv_cache_usage_perc{engine=\"2\",model_name=\"m\"} 0.1\n";
    struct gw_vllm_load l;
    assert_int_equal(parse(page, "m", &l), GW_OK);
    assert_true(NEAR(l.running, 10));
    assert_true(NEAR(l.waiting, 12));
    assert_true(NEAR(l.kv_cache, 0.93));
}

/* vllm:gpu_cache_usage_perc (deprecated, older servers) is the fallback
 * when vllm:kv_cache_usage_perc is absent, and ignored when it is there
 * (servers in transition show both). */
static void test_deprecated_cache_name(void **state)
{
    (void)state;
    struct gw_vllm_load l;
    static const char old_only[] =
        "vllm:num_requests_waiting{model_name=\"m\"} 1\n"
        "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.77\n"
        "vllm:gpu_cache_usage_perc{model_name=\"other\"} 0.99\n";
    assert_int_equal(parse(old_only, "m", &l), GW_OK);
    assert_true(l.have_kv && NEAR(l.kv_cache, 0.77));

    static const char old_first[] =
        "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.99\n"
        "vllm:kv_cache_usage_perc{model_name=\"m\"} 0.25\n";
    assert_int_equal(parse(old_first, "m", &l), GW_OK);
    assert_true(NEAR(l.kv_cache, 0.25));

    static const char new_first[] =
        "vllm:kv_cache_usage_perc{model_name=\"m\"} 0.25\n"
        "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.99\n";
    assert_int_equal(parse(new_first, "m", &l), GW_OK);
    assert_true(NEAR(l.kv_cache, 0.25));

    /* the old name alone is enough for a page to count */
    static const char old_alone[] = "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n";
    assert_int_equal(parse(old_alone, "m", &l), GW_OK);
    assert_true(l.have_kv && !l.have_waiting && !l.have_running);

    /* the old CPU cache metric and other removed names mean nothing */
    static const char removed[] =
        "vllm:cpu_cache_usage_perc{model_name=\"m\"} 0.5\n"
        "vllm:num_requests_swapped{model_name=\"m\"} 3\n";
    assert_int_equal(parse(removed, "m", &l), GW_EPARSE);
}

/* None of the three metrics (DCGM, another exporter, an HTML error page,
 * an empty body): GW_EPARSE, and the output is zeroed. */
static void test_missing_metrics(void **state)
{
    (void)state;
    struct gw_vllm_load l;
    static const char dcgm[] =
        "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n"
        "# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
        "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",UUID=\"GPU-1\"} 87\n";
    memset(&l, 0x55, sizeof(l));
    assert_int_equal(parse(dcgm, "m", &l), GW_EPARSE);
    assert_false(l.have_waiting || l.have_running || l.have_kv);
    assert_true(l.waiting == 0 && l.running == 0 && l.kv_cache == 0);
    assert_int_equal(parse("", "m", &l), GW_EPARSE);
    assert_int_equal(parse("\n\n\n", "m", &l), GW_EPARSE);
    assert_int_equal(parse("<html><body>502 Bad Gateway</body></html>", "m", &l), GW_EPARSE);
    /* only HELP/TYPE lines for the names, no samples */
    static const char no_samples[] =
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"
        "# TYPE vllm:num_requests_waiting gauge\n";
    assert_int_equal(parse(no_samples, "m", &l), GW_EPARSE);
    /* names that only start like the metrics */
    static const char longer[] =
        "vllm:num_requests_waiting_total{model_name=\"m\"} 3\n"
        "vllm:num_requests_running_by_lora{model_name=\"m\"} 3\n"
        "vllm:kv_cache_usage_perc_x 0.3\n";
    assert_int_equal(parse(longer, "m", &l), GW_EPARSE);
    /* NULL-free zero length */
    assert_int_equal(gw_vllm_load_parse("vllm:num_requests_waiting 3\n", 0, "m", &l), GW_EPARSE);
}

/* Broken lines are skipped; the good ones around them still count. */
static void test_garbage_lines(void **state)
{
    (void)state;
    static const char page[] =
        "vllm:num_requests_waiting{model_name=\"m\"\n"            /* no closing brace */
        "vllm:num_requests_waiting{model_name=\"m\"} \n"          /* no value */
        "vllm:num_requests_waiting{model_name=\"m\"} abc\n"       /* not a number */
        "vllm:num_requests_waiting{model_name=\"m\"} 12abc\n"     /* trailing junk */
        "vllm:num_requests_waiting{model_name=\"m\"} NaN\n"
        "vllm:num_requests_waiting{model_name=\"m\"} -3\n"
        "vllm:num_requests_waiting{model_name=\"m} 7\n"           /* unterminated value */
        "vllm:num_requests_waiting\n"
        "vllm:num_requests_waiting{\n"
        "vllm:num_requests_waiting{}\n"
        "\x01\x02\xff\xfe garbage \x80\n"
        "vllm:num_requests_running{model_name=\"m\"} 2 1712345678000\n" /* with a timestamp */
        "vllm:num_requests_waiting{model_name=\"m\"} 6\n"
        "vllm:kv_cache_usage_perc{model_name=\"m\"} 1.7\n";    /* clamped to 1 */
    struct gw_vllm_load l;
    assert_int_equal(parse(page, "m", &l), GW_OK);
    assert_true(NEAR(l.waiting, 6));
    assert_true(NEAR(l.running, 2));
    assert_true(NEAR(l.kv_cache, 1));

    /* a 200 KB label set */
    size_t big = 200 * 1024;
    char *p = malloc(big + 100);
    int n = snprintf(p, 100, "vllm:num_requests_waiting{x=\"");
    memset(p + n, 'a', big);
    snprintf(p + n + big, 100, "\",model_name=\"m\"} 9\n");
    assert_int_equal(parse(p, "m", &l), GW_OK);
    assert_true(NEAR(l.waiting, 9));
    free(p);
}

/* A value longer than the parser's number buffer is read whole or not at
 * all, never as its first digits. */
static void test_long_value(void **state)
{
    (void)state;
    struct gw_vllm_load l;
    char longv[400];
    snprintf(longv, sizeof(longv), "vllm:num_requests_waiting{model_name=\"m\"} %0100d\n"
             "vllm:num_requests_running{model_name=\"m\"} 1\n", 5);
    assert_int_equal(parse(longv, "m", &l), GW_OK);
    assert_true(NEAR(l.running, 1));
    if (l.have_waiting && !NEAR(l.waiting, 5))
        fail_msg("100-character value 000...005 read as %g", l.waiting);
}

/* Never reads past len: a page cut anywhere parses (or fails) on what is
 * there, from an exact-size copy. A cut inside a value must not take the
 * bytes after the cut. */
static void test_truncation(void **state)
{
    (void)state;
    size_t n = strlen(VLLM_PAGE);
    for (size_t cut = 0; cut <= n; cut++) {
        char *copy = malloc(cut ? cut : 1);
        memcpy(copy, VLLM_PAGE, cut);
        struct gw_vllm_load l;
        int rc = gw_vllm_load_parse(copy, cut, "Qwen/Qwen2.5-Coder-32B-Instruct", &l);
        assert_true(rc == GW_OK || rc == GW_EPARSE);
        if (l.have_waiting)
            assert_true(NEAR(l.waiting, 14) || NEAR(l.waiting, 1)); /* "14.0" cut after "1" */
        free(copy);
    }
    /* the last line without a newline */
    static const char tail[] = "vllm:num_requests_waiting{model_name=\"m\"} 42";
    struct gw_vllm_load l;
    assert_int_equal(parse(tail, "m", &l), GW_OK);
    assert_true(NEAR(l.waiting, 42));
    /* cut in the middle of the label value: no match for "m" read past the end */
    static const char cut_label[] = "vllm:num_requests_waiting{model_name=\"m";
    assert_int_equal(parse(cut_label, "m", &l), GW_EPARSE);
    static const char cut_name[] = "vllm:num_requests_waitin";
    assert_int_equal(parse(cut_name, "m", &l), GW_EPARSE);
    static const char cut_brace[] = "vllm:num_requests_waiting";
    assert_int_equal(parse(cut_brace, "m", &l), GW_EPARSE);
}

/* Every metric name listed as current in the shared reference data that
 * the parser uses is found on a page built from that list. */
static void test_reference_names(void **state)
{
    (void)state;
    FILE *f = fopen("/work/shared/data/metrics/vllm.txt", "r");
    if (!f)
        skip();
    char line[256];
    int gauges = 0;
    struct gw_buf page;
    gw_buf_init(&page, 0);
    while (fgets(line, sizeof(line), f)) {
        char kind[32], name[128];
        if (line[0] == '#' || sscanf(line, "%31s %127s", kind, name) != 2)
            continue;
        if (strcmp(kind, "gauge") == 0 || strcmp(kind, "counter") == 0) {
            gw_buf_printf(&page, "%s{engine=\"0\",model_name=\"m\"} %d\n", name,
                          strcmp(kind, "gauge") == 0 ? ++gauges : 99);
        }
    }
    fclose(f);
    struct gw_vllm_load l;
    char *copy = malloc(page.len);
    memcpy(copy, page.data, page.len);
    assert_int_equal(gw_vllm_load_parse(copy, page.len, "m", &l), GW_OK);
    free(copy);
    gw_buf_free(&page);
    /* vllm.txt lists running, waiting, kv_cache_usage_perc as the first
     * three gauges: values 1, 2, 3 (the cache is clamped to 1) */
    assert_true(l.have_running && NEAR(l.running, 1));
    assert_true(l.have_waiting && NEAR(l.waiting, 2));
    assert_true(l.have_kv && NEAR(l.kv_cache, 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_realistic_page),
        cmocka_unit_test(test_sim_page),
        cmocka_unit_test(test_model_filter),
        cmocka_unit_test(test_model_label_exact),
        cmocka_unit_test(test_engines),
        cmocka_unit_test(test_deprecated_cache_name),
        cmocka_unit_test(test_missing_metrics),
        cmocka_unit_test(test_garbage_lines),
        cmocka_unit_test(test_long_value),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_reference_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
