/*
 * test_sim_opts.c - unit tests for the simulator's flag, fault spec,
 * directive and /sim/config parsing (src/sim/sim_opts.c, included whole so
 * that static helpers are reachable).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../src/sim/sim_out.c"
#include "../../src/sim/sim_opts.c"

static void test_fault_parse_table(void **state)
{
    static const struct {
        const char *spec;
        int rc;
        enum sim_fault_kind kind;
        int status;
        int retry_after;
        uint32_t at;
        double slow;
    } cases[] = {
        {"", 0, SIM_FAULT_NONE, 0, -1, 0, 0},
        {"none", 0, SIM_FAULT_NONE, 0, -1, 0, 0},
        {"  none ", 0, SIM_FAULT_NONE, 0, -1, 0, 0},
        {"500", 0, SIM_FAULT_STATUS, 500, -1, 0, 0},
        {"status=529", 0, SIM_FAULT_STATUS, 529, -1, 0, 0},
        {"status=429,retry_after=2", 0, SIM_FAULT_STATUS, 429, 2, 0, 0},
        {"429,retry-after=0", 0, SIM_FAULT_STATUS, 429, 0, 0, 0},
        {"stall", 0, SIM_FAULT_STALL, 0, -1, 0, 0},
        {"stall@3", 0, SIM_FAULT_STALL, 0, -1, 3, 0},
        {"disconnect@5", 0, SIM_FAULT_DISCONNECT, 0, -1, 5, 0},
        {"disconnect", 0, SIM_FAULT_DISCONNECT, 0, -1, 0, 0},
        {"malformed", 0, SIM_FAULT_MALFORMED, 0, -1, 1, 0},
        {"malformed@0", 0, SIM_FAULT_MALFORMED, 0, -1, 0, 0},
        {"error", 0, SIM_FAULT_ERROR, 0, -1, 1, 0},
        {"error@4,status=529", 0, SIM_FAULT_ERROR, 529, -1, 4, 0},
        {"slow", 0, SIM_FAULT_NONE, 0, -1, 0, 2},
        {"slow=10", 0, SIM_FAULT_NONE, 0, -1, 0, 10},
        {"slow=0.5,stall@2", 0, SIM_FAULT_STALL, 0, -1, 2, 0.5},
        /* bad */
        {"399", -1, 0, 0, 0, 0, 0},
        {"status=600", -1, 0, 0, 0, 0, 0},
        {"status=abc", -1, 0, 0, 0, 0, 0},
        {"stall@", -1, 0, 0, 0, 0, 0},
        {"stall@x", -1, 0, 0, 0, 0, 0},
        {"stall@-1", -1, 0, 0, 0, 0, 0},
        {"stall@2000000", -1, 0, 0, 0, 0, 0},
        {"stall,disconnect", -1, 0, 0, 0, 0, 0},
        {"stall,status=500", -1, 0, 0, 0, 0, 0},
        {"retry_after=2", -1, 0, 0, 0, 0, 0},
        {"status=429,retry_after=99999999", -1, 0, 0, 0, 0, 0},
        {"slow=0", -1, 0, 0, 0, 0, 0},
        {"slow=fast", -1, 0, 0, 0, 0, 0},
        {"slow=inf", -1, 0, 0, 0, 0, 0},
        {"stallx", -1, 0, 0, 0, 0, 0},
        {"bogus", -1, 0, 0, 0, 0, 0},
        {"500,", -1, 0, 0, 0, 0, 0},
        {",500", -1, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct sim_fault f;
        char err[256] = "";
        int rc = sim_fault_parse(cases[i].spec, strlen(cases[i].spec), &f, err, sizeof(err));
        if (rc != cases[i].rc)
            fail_msg("spec '%s': rc %d, want %d (%s)", cases[i].spec, rc, cases[i].rc, err);
        if (rc) {
            assert_true(err[0] != '\0');
            continue;
        }
        assert_int_equal(f.kind, cases[i].kind);
        assert_int_equal(f.status, cases[i].status);
        assert_int_equal(f.retry_after, cases[i].retry_after);
        assert_int_equal(f.at, cases[i].at);
        assert_true(f.slow_tps == cases[i].slow);
    }
}

static void test_fault_format_roundtrip(void **state)
{
    static const char *const specs[] = {
        "none", "status=429,retry_after=2", "status=500", "stall@0", "disconnect@7",
        "malformed@1", "error@3,status=529", "error@1", "slow=2", "stall@2,slow=0.5",
    };
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        struct sim_fault f, g;
        char buf[96], err[128];
        assert_int_equal(sim_fault_parse(specs[i], strlen(specs[i]), &f, err, sizeof(err)), 0);
        sim_fault_format(&f, buf, sizeof(buf));
        assert_string_equal(buf, specs[i]);
        assert_int_equal(sim_fault_parse(buf, strlen(buf), &g, err, sizeof(err)), 0);
        assert_memory_equal(&f, &g, sizeof(f));
    }
}

static int parse_args(struct sim_opts *o, char *err, size_t errlen, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    argv[argc++] = "hybridgw-sim";
    va_start(ap, errlen);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    sim_opts_default(o);
    return sim_opts_parse(o, argc, argv, err, errlen);
}

static void test_opts_defaults(void **state)
{
    struct sim_opts o;
    char err[256];
    assert_int_equal(parse_args(&o, err, sizeof(err), NULL), 0);
    assert_string_equal(o.listen, "127.0.0.1:8000");
    assert_int_equal(o.threads, 1);
    assert_int_equal(o.n_models, 1);
    assert_string_equal(o.models[0], "sim-model");
    assert_int_equal(o.knobs.output_tokens, 16);
    assert_int_equal(o.knobs.max_concurrency, 0);
    assert_true(o.knobs.tokens_per_sec == 0);
    assert_int_equal(o.knobs.fault.kind, SIM_FAULT_NONE);
    assert_true(o.knobs.fault_rate == 1.0);
    assert_int_equal(o.error_shape, SIM_ERROR_NESTED);
    assert_false(o.strict_models);
}

static void test_opts_all_flags(void **state)
{
    struct sim_opts o;
    char err[256];
    int rc = parse_args(&o, err, sizeof(err), "--listen", "0.0.0.0:0", "--threads=4",
                        "--model", "qwen", "--model=llama", "--strict-models", "--ttft-ms", "250",
                        "--tokens-per-sec", "50.5", "--output-tokens", "100",
                        "--max-concurrency", "8", "--max-model-len", "4096", "--seed", "42",
                        "--error-shape", "flat", "--fault", "status=429,retry_after=2",
                        "--fault-rate", "0.25", "--verbose", NULL);
    assert_int_equal(rc, 0);
    assert_string_equal(o.listen, "0.0.0.0:0");
    assert_int_equal(o.threads, 4);
    assert_int_equal(o.n_models, 2);
    assert_string_equal(o.models[0], "qwen");
    assert_string_equal(o.models[1], "llama");
    assert_true(o.strict_models);
    assert_int_equal(o.knobs.ttft_ms, 250);
    assert_true(o.knobs.tokens_per_sec == 50.5);
    assert_int_equal(o.knobs.output_tokens, 100);
    assert_int_equal(o.knobs.max_concurrency, 8);
    assert_int_equal(o.max_model_len, 4096);
    assert_true(o.seed == 42);
    assert_int_equal(o.error_shape, SIM_ERROR_FLAT);
    assert_int_equal(o.knobs.fault.kind, SIM_FAULT_STATUS);
    assert_int_equal(o.knobs.fault.retry_after, 2);
    assert_true(o.knobs.fault_rate == 0.25);
    assert_true(o.verbose);
}

static void test_opts_bad_values(void **state)
{
    static const char *const bad[][2] = {
        {"--threads", "0"}, {"--threads", "300"}, {"--threads", "two"},
        {"--ttft-ms", "-5"}, {"--ttft-ms", "1.5"}, {"--ttft-ms", ""},
        {"--tokens-per-sec", "-1"}, {"--tokens-per-sec", "nan"}, {"--tokens-per-sec", "0x10"},
        {"--output-tokens", "99999999"}, {"--max-concurrency", "x"},
        {"--max-model-len", "0"}, {"--seed", "18446744073709551616"},
        {"--error-shape", "weird"}, {"--fault", "bogus"}, {"--fault-rate", "1.5"},
        {"--listen", "localhost"}, {"--listen", "1.2.3.4:70000"}, {"--model", ""},
        {"--model", "has space"}, {"--model", "quo\"te"}, {"--bogus", "1"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct sim_opts o;
        char err[256] = "";
        int rc = parse_args(&o, err, sizeof(err), bad[i][0], bad[i][1], NULL);
        if (rc != -1)
            fail_msg("%s %s: rc %d, want -1", bad[i][0], bad[i][1], rc);
        assert_true(strlen(err) > 10);
    }
    struct sim_opts o;
    char err[256];
    assert_int_equal(parse_args(&o, err, sizeof(err), "--threads", NULL), -1);
    assert_non_null(strstr(err, "needs a value"));
    assert_int_equal(parse_args(&o, err, sizeof(err), "--quiet=1", NULL), -1);
    assert_int_equal(parse_args(&o, err, sizeof(err), "--quiet", "--verbose", NULL), -1);
    assert_int_equal(parse_args(&o, err, sizeof(err), "--model", "a", "--model", "a", NULL), -1);
    assert_int_equal(parse_args(&o, err, sizeof(err), "stray", NULL), -1);
    assert_int_equal(parse_args(&o, err, sizeof(err), "--help", NULL), 1);
    assert_int_equal(parse_args(&o, err, sizeof(err), "-h", NULL), 1);
    assert_int_equal(parse_args(&o, err, sizeof(err), "--version", NULL), 2);
    assert_non_null(strstr(sim_opts_usage(), "--max-concurrency"));
}

static void test_directives(void **state)
{
    struct sim_directives d;
    char err[256];
    const char *t = "hello [sim:fault=status=429,retry_after=1] and [sim:output_tokens=3]"
                    " [sim:ttft_ms=20][sim:tokens_per_sec=7.5] please sim:tool_call";
    sim_directives_init(&d);
    assert_int_equal(sim_directives_parse(t, strlen(t), &d, err, sizeof(err)), 0);
    assert_true(d.has_fault);
    assert_int_equal(d.fault.kind, SIM_FAULT_STATUS);
    assert_int_equal(d.fault.status, 429);
    assert_int_equal(d.fault.retry_after, 1);
    assert_int_equal(d.output_tokens, 3);
    assert_int_equal(d.ttft_ms, 20);
    assert_true(d.tokens_per_sec == 7.5);
    assert_true(d.tool_call);

    sim_directives_init(&d);
    t = "no directives here, [sim is not one";
    assert_int_equal(sim_directives_parse(t, strlen(t), &d, err, sizeof(err)), 0);
    assert_false(d.has_fault);
    assert_int_equal(d.output_tokens, -1);
    assert_false(d.tool_call);

    sim_directives_init(&d);
    t = "[sim:tool_call]";
    assert_int_equal(sim_directives_parse(t, strlen(t), &d, err, sizeof(err)), 0);
    assert_true(d.tool_call);

    static const char *const bad[] = {
        "[sim:fault=bogus]", "[sim:output_tokens=-1]", "[sim:ttft_ms=abc]",
        "[sim:unknown=1]", "[sim:fault=stall", "[sim:output_tokens]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sim_directives_init(&d);
        err[0] = '\0';
        assert_int_equal(sim_directives_parse(bad[i], strlen(bad[i]), &d, err, sizeof(err)), -1);
        assert_true(err[0] != '\0');
    }
}

static void test_knobs_json(void **state)
{
    struct sim_knobs k, before;
    struct sim_opts o;
    char err[256];
    sim_opts_default(&o);
    k = o.knobs;
    const char *body = "{\"ttft_ms\":100,\"tokens_per_sec\":20,\"output_tokens\":5,"
                       "\"max_concurrency\":2,\"fault\":\"stall@1\",\"fault_rate\":0.5}";
    assert_int_equal(sim_knobs_apply_json(&k, body, strlen(body), err, sizeof(err)), 0);
    assert_int_equal(k.ttft_ms, 100);
    assert_true(k.tokens_per_sec == 20);
    assert_int_equal(k.output_tokens, 5);
    assert_int_equal(k.max_concurrency, 2);
    assert_int_equal(k.fault.kind, SIM_FAULT_STALL);
    assert_int_equal(k.fault.at, 1);
    assert_true(k.fault_rate == 0.5);

    body = "{\"fault\":null}";
    assert_int_equal(sim_knobs_apply_json(&k, body, strlen(body), err, sizeof(err)), 0);
    assert_int_equal(k.fault.kind, SIM_FAULT_NONE);

    static const char *const bad[] = {
        "[]", "not json", "{\"ttft_ms\":-1}", "{\"ttft_ms\":1.5}", "{\"fault_rate\":2}",
        "{\"fault\":\"bogus\"}", "{\"fault\":5}", "{\"max_concurrency\":\"3\"}",
        "{\"nope\":1}", "{\"ttft_ms\":10,\"output_tokens\":-3}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        before = k;
        err[0] = '\0';
        assert_int_equal(sim_knobs_apply_json(&k, bad[i], strlen(bad[i]), err, sizeof(err)), -1);
        assert_true(err[0] != '\0');
        assert_memory_equal(&k, &before, sizeof(k));   /* all-or-nothing */
    }

    char buf[512];
    struct sim_out out;
    sim_out_fixed(&out, buf, sizeof(buf));
    sim_knobs_to_json(&k, &out);
    assert_false(out.err);
    json_t *j = json_loads(buf, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "ttft_ms")), 100);
    assert_string_equal(json_string_value(json_object_get(j, "fault")), "none");
    json_decref(j);
}

static void test_out_buffer(void **state)
{
    char small[8];
    struct sim_out o;
    sim_out_fixed(&o, small, sizeof(small));
    sim_out_puts(&o, "1234567");
    assert_false(o.err);
    sim_out_puts(&o, "8");
    assert_true(o.err);
    assert_int_equal(o.len, 7);

    sim_out_heap(&o, 64);
    for (int i = 0; i < 10; i++)
        sim_out_printf(&o, "%d-", i);
    assert_string_equal(o.p, "0-1-2-3-4-5-6-7-8-9-");
    sim_out_reset(&o);
    sim_out_json_str(&o, "a\"b\\c\n\x01", 7);
    assert_string_equal(o.p, "\"a\\\"b\\\\c\\n\\u0001\"");
    for (int i = 0; i < 20; i++)
        sim_out_puts(&o, "0123456789");
    assert_true(o.err);
    assert_true(o.len < 64);
    sim_out_free(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_parse_table),
        cmocka_unit_test(test_fault_format_roundtrip),
        cmocka_unit_test(test_opts_defaults),
        cmocka_unit_test(test_opts_all_flags),
        cmocka_unit_test(test_opts_bad_values),
        cmocka_unit_test(test_directives),
        cmocka_unit_test(test_knobs_json),
        cmocka_unit_test(test_out_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
