/*
 * test_cost.c - cost arithmetic against hand-computed cases (cost.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "hybridgw/config.h"
#include "hybridgw/cost.h"
#include "gateway/gateway.h"
#include "provider/provider.h"

static struct gw_config *load(const char *yaml)
{
    char err[512];
    struct gw_config *c = gw_config_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err));
    if (!c)
        fail_msg("config: %s", err);
    gw_backends_attach(c, NULL);
    return c;
}

static struct gw_usage usage(int64_t prompt, int64_t out, int64_t cached, int64_t written)
{
    struct gw_usage u;
    gw_usage_init(&u);
    u.prompt_tokens = prompt;
    u.completion_tokens = out;
    u.cached_tokens = cached;
    u.cache_write_tokens = written;
    u.reported = true;
    return u;
}

#define CLOSE(a, b) assert_true(fabs((a) - (b)) < 1e-12)

static void test_per_mtok_with_cache(void **state)
{
    (void)state;
    struct gw_price p = {3.0, 15.0, 0.30, 3.75, "t"};
    /* 1,000 prompt tokens of which 600 cache reads and 100 cache writes,
     * 200 output: 300*3 + 600*0.3 + 100*3.75 + 200*15 = 900 + 180 + 375 +
     * 3000 = 4455 per million -> 0.004455 USD */
    struct gw_usage u = usage(1000, 200, 600, 100);
    CLOSE(gw_cost_of(&p, &u), 0.004455);
    /* nothing cached */
    u = usage(1000000, 0, 0, 0);
    CLOSE(gw_cost_of(&p, &u), 3.0);
    /* inconsistent counts never go negative */
    u = usage(10, 0, 50, 0);
    CLOSE(gw_cost_of(&p, &u), 50 * 0.30 / 1e6);
}

static void test_builtin_and_config_prices(void **state)
{
    (void)state;
    struct gw_config *c = load(
        "backends:\n"
        "  claude: { tier: frontier, provider: anthropic, url: \"http://x\", model: claude-sonnet-4-5-20250929 }\n"
        "  gpt: { tier: frontier, provider: openai, url: \"http://x\", model: gpt-4o-mini,"
        " price: { per_mtok: { input: 1, output: 2 } } }\n"
        "  odd: { tier: frontier, provider: openai, url: \"http://x\", model: some-new-model }\n"
        "  loc: { tier: local, provider: vllm, url: \"http://x\", model: qwen }\n");
    struct gw_price p;
    assert_true(gw_cost_price(gw_config_backend(c, "claude"), &p));
    CLOSE(p.input, 3.0);
    CLOSE(p.output, 15.0);
    CLOSE(p.cache_read, 0.30);
    CLOSE(p.cache_write, 3.75);
    assert_string_equal(p.source, "builtin");
    assert_true(gw_cost_price(gw_config_backend(c, "gpt"), &p));
    assert_string_equal(p.source, "config");
    CLOSE(p.input, 1);
    CLOSE(p.cache_read, 1); /* unpriced cache kinds cost like input */
    assert_false(gw_cost_price(gw_config_backend(c, "odd"), &p));
    assert_false(gw_cost_price(gw_config_backend(c, "loc"), &p));
    gw_config_unref(c);
}

static void test_record_and_counterfactual(void **state)
{
    (void)state;
    struct gw_config *c = load(
        "backends:\n"
        "  loc: { tier: local, provider: vllm, url: \"http://x\", model: qwen,"
        " price: { gpu_hourly_usd: 2.0, replicas: 1, output_weight: 4, min_tokens_per_hour: 1000000 } }\n"
        "  claude: { tier: frontier, provider: anthropic, url: \"http://x\", model: claude-sonnet-4-5 }\n");
    const struct gw_backend_conf *l = gw_config_backend(c, "loc");
    const struct gw_backend_conf *f = gw_config_backend(c, "claude");
    struct gw_usage u = usage(1000, 100, 0, 0);
    struct gw_cost_record r;
    /* self-hosted, below the hourly floor: weighted 1000 + 4*100 = 1400
     * tokens of a 2 USD hour shared by at least 1e6 tokens */
    gw_cost_compute(c, l, l->targets[0], &u, false, &r);
    assert_true(r.known);
    CLOSE(r.usd, 1400 * 2.0 / 1e6);
    /* counterfactual: the same tokens on claude: 1000*3 + 100*15 = 4500/1e6 */
    CLOSE(r.counterfactual_usd, 0.0045);
    /* a frontier request's counterfactual is its own cost */
    gw_cost_compute(c, f, f->targets[0], &u, true, &r);
    CLOSE(r.usd, 0.0045);
    CLOSE(r.counterfactual_usd, 0.0045);
    assert_true(r.estimated_usage);
    gw_config_unref(c);
}

static void test_gpu_share_above_floor(void **state)
{
    (void)state;
    struct gw_config *c = load(
        "backends:\n"
        "  loc: { tier: local, provider: vllm, url: \"http://x\", model: qwen,"
        " price: { gpu_hourly_usd: 1.0, output_weight: 1, min_tokens_per_hour: 100 } }\n");
    const struct gw_backend_conf *l = gw_config_backend(c, "loc");
    struct gw_usage u = usage(100, 100, 0, 0);
    /* first request: 200 weighted tokens in the hour so far -> all of the
     * hour's 1 USD over 200 tokens: 200 * 1/200 = 1 USD */
    CLOSE(gw_cost_gpu_share(l, l->targets[0], &u, 0), 1.0);
    /* second: 400 in the hour -> 200 * 1/400 = 0.5 */
    CLOSE(gw_cost_gpu_share(l, l->targets[0], &u, 0), 0.5);
    gw_config_unref(c);
}

static void test_reference_by_name(void **state)
{
    (void)state;
    struct gw_config *c = load(
        "backends:\n"
        "  a: { tier: frontier, provider: openai, url: \"http://x\", model: gpt-4o }\n"
        "  b: { tier: frontier, provider: anthropic, url: \"http://x\", model: claude-opus-4-1 }\n"
        "cost: { reference: b }\n");
    struct gw_usage u = usage(1000, 1000, 0, 0);
    struct gw_cost_record r;
    gw_cost_compute(c, gw_config_backend(c, "a"), NULL, &u, false, &r);
    CLOSE(r.usd, (1000 * 2.5 + 1000 * 10.0) / 1e6);
    CLOSE(r.counterfactual_usd, (1000 * 15.0 + 1000 * 75.0) / 1e6);
    gw_config_unref(c);
    char err[256];
    const char *bad = "backends:\n  a: { tier: frontier, provider: openai, url: \"http://x\", model: m }\n"
                      "cost: { reference: nope }\n";
    assert_null(gw_config_load_string(bad, strlen(bad), "t.yaml", err, sizeof(err)));
    assert_non_null(strstr(err, "t.yaml:3: cost.reference: unknown backend"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_mtok_with_cache),
        cmocka_unit_test(test_builtin_and_config_prices),
        cmocka_unit_test(test_record_and_counterfactual),
        cmocka_unit_test(test_gpu_share_above_floor),
        cmocka_unit_test(test_reference_by_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
