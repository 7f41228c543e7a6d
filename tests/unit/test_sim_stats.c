/*
 * test_sim_stats.c - unit tests for the simulator's shared counters and
 * their renderings (src/sim/sim_stats.c): /sim/stats JSON and vLLM-style
 * Prometheus text (validated with `promtool check metrics` when promtool is
 * installed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <jansson.h>

#include "../../src/sim/sim_out.c"
#include "../../src/sim/sim_stats.c"

static const char *const models[] = {"qwen-coder", "llama"};

static void test_model_index(void **state)
{
    static struct sim_stats s;
    sim_stats_init(&s, models, 2);
    assert_int_equal(sim_stats_model_index(&s, "llama"), 1);
    assert_int_equal(sim_stats_model_index(&s, "qwen-coder"), 0);
    assert_int_equal(sim_stats_model_index(&s, "unknown"), 0);
}

/* Run promtool over the exposition text. promtool 2.42 always lints and
 * its lint flags every ':' in a metric name, which vLLM's own names have:
 * so the text must pass cleanly once "vllm:" becomes "vllm_", and as-is the
 * colon rule must be the only complaint. */
static void promtool_check(const char *text, size_t len)
{
    char path[] = "/tmp/test_sim_stats_XXXXXX", cmd[160], line[256];
    char *copy = malloc(len + 1);
    int fd, rc;
    FILE *p;

    assert_non_null(copy);
    memcpy(copy, text, len + 1);
    for (char *c = copy; (c = strstr(c, "vllm:")) != NULL; c += 5)
        c[4] = '_';
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, copy, len), (ssize_t)len);
    close(fd);
    free(copy);
    snprintf(cmd, sizeof(cmd), "/usr/bin/promtool check metrics < %s", path);
    rc = system(cmd);
    unlink(path);
    assert_int_equal(rc, 0);

    memcpy(path + strlen(path) - 6, "XXXXXX", 6);
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    snprintf(cmd, sizeof(cmd), "/usr/bin/promtool check metrics < %s 2>&1", path);
    p = popen(cmd, "r");
    assert_non_null(p);
    while (fgets(line, sizeof(line), p)) {
        if (!strstr(line, "metric names should not contain ':'"))
            fail_msg("promtool: %s", line);
    }
    pclose(p);
    unlink(path);
}

static void test_prom_render(void **state)
{
    static struct sim_stats s;
    struct sim_out o;
    sim_stats_init(&s, models, 2);
    atomic_store(&s.m[0].running, 3);
    atomic_store(&s.m[0].waiting, 2);
    atomic_fetch_add(&s.m[0].prompt_tokens, 120);
    atomic_fetch_add(&s.m[1].generation_tokens, 40);
    atomic_fetch_add(&s.m[0].success[SIM_FIN_LENGTH], 1);
    sim_stats_observe_ttft(&s, 0, 0.003);
    sim_stats_observe_ttft(&s, 0, 0.3);
    sim_stats_observe_ttft(&s, 0, 9999);   /* only in +Inf */
    sim_out_heap(&o, 1 << 20);
    sim_stats_render_prom(&s, 4, &o);
    assert_false(o.err);
#define HAS(line) \
    do { \
        if (!strstr(o.p, line)) \
            fail_msg("missing: %s", line); \
    } while (0)
    HAS("# TYPE vllm:num_requests_running gauge\n");
    HAS("vllm:num_requests_running{model_name=\"qwen-coder\",engine=\"0\"} 3\n");
    HAS("vllm:num_requests_waiting{model_name=\"qwen-coder\",engine=\"0\"} 2\n");
    HAS("vllm:kv_cache_usage_perc{model_name=\"qwen-coder\",engine=\"0\"} 0.75\n");
    HAS("vllm:kv_cache_usage_perc{model_name=\"llama\",engine=\"0\"} 0\n");
    HAS("vllm:prompt_tokens_total{model_name=\"qwen-coder\",engine=\"0\"} 120\n");
    HAS("vllm:generation_tokens_total{model_name=\"llama\",engine=\"0\"} 40\n");
    HAS("vllm:request_success_total{model_name=\"qwen-coder\",engine=\"0\",finished_reason=\"length\"} 1\n");
    HAS("vllm:request_success_total{model_name=\"llama\",engine=\"0\",finished_reason=\"abort\"} 0\n");
    HAS("# TYPE vllm:time_to_first_token_seconds histogram\n");
    HAS("vllm:time_to_first_token_seconds_bucket{model_name=\"qwen-coder\",engine=\"0\",le=\"0.001\"} 0\n");
    HAS("vllm:time_to_first_token_seconds_bucket{model_name=\"qwen-coder\",engine=\"0\",le=\"0.005\"} 1\n");
    HAS("vllm:time_to_first_token_seconds_bucket{model_name=\"qwen-coder\",engine=\"0\",le=\"0.5\"} 2\n");
    HAS("vllm:time_to_first_token_seconds_bucket{model_name=\"qwen-coder\",engine=\"0\",le=\"2560\"} 2\n");
    HAS("vllm:time_to_first_token_seconds_bucket{model_name=\"qwen-coder\",engine=\"0\",le=\"+Inf\"} 3\n");
    HAS("vllm:time_to_first_token_seconds_count{model_name=\"qwen-coder\",engine=\"0\"} 3\n");
    HAS("vllm:time_to_first_token_seconds_sum{model_name=\"qwen-coder\",engine=\"0\"} 9999.303000\n");

    /* unlimited concurrency: 3 of 256 notional slots; saturation clamps */
    sim_out_reset(&o);
    atomic_store(&s.m[0].running, 1000);
    sim_stats_render_prom(&s, 10, &o);
    HAS("vllm:kv_cache_usage_perc{model_name=\"qwen-coder\",engine=\"0\"} 1\n");
#undef HAS

    if (access("/usr/bin/promtool", X_OK) == 0)
        promtool_check(o.p, o.len);
    sim_out_free(&o);
}

static void test_stats_json_and_reset(void **state)
{
    static struct sim_stats s;
    char buf[1024];
    struct sim_out o;
    sim_stats_init(&s, models, 2);
    atomic_fetch_add(&s.c.requests[SIM_EP_CHAT], 3);
    atomic_fetch_add(&s.c.requests[SIM_EP_MESSAGES], 2);
    atomic_fetch_add(&s.c.requests[SIM_EP_SIM], 10);
    atomic_fetch_add(&s.c.cancelled, 1);
    atomic_fetch_add(&s.c.completed, 4);
    atomic_fetch_add(&s.c.faults, 2);
    atomic_store(&s.m[1].running, 2);
    atomic_store(&s.m[0].waiting, 1);
    atomic_fetch_add(&s.m[0].prompt_tokens, 5);

    sim_out_fixed(&o, buf, sizeof(buf));
    sim_stats_render_json(&s, &o);
    assert_false(o.err);
    json_t *j = json_loads(buf, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "requests_total")), 5);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "requests"),
                                                        "chat_completions")), 3);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "requests"), "sim")), 10);
    assert_int_equal(json_integer_value(json_object_get(j, "active")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "running")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "waiting")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "cancelled")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "completed")), 4);
    assert_int_equal(json_integer_value(json_object_get(j, "faults_injected")), 2);
    json_decref(j);

    sim_stats_reset(&s);
    sim_out_reset(&o);
    sim_stats_render_json(&s, &o);
    j = json_loads(buf, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "requests_total")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "cancelled")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "running")), 2);   /* live gauge */
    json_decref(j);
    assert_int_equal(atomic_load(&s.m[0].prompt_tokens), 5);   /* metrics only grow */
    assert_string_equal(sim_endpoint_str(SIM_EP_COUNT_TOKENS), "count_tokens");
    assert_string_equal(sim_finish_str(SIM_FIN_ABORT), "abort");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_index),
        cmocka_unit_test(test_prom_render),
        cmocka_unit_test(test_stats_json_and_reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
