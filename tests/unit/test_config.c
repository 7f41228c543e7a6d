/*
 * test_config.c - unit tests for the configuration loader
 * (src/config/config.c): defaults, a full file, every validation error with
 * its line and field, ${VAR} interpolation, auth key hashing, model
 * resolution, refcounting and loading from a file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hybridgw/config.h"
#include "provider/provider.h"

/* SHA-256("test") */
static const char sha256_test_hex[] =
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/* One valid backend; lines 1-6. Error cases append from line 7. */
#define BACKEND \
    "backends:\n" \
    "  qwen:\n" \
    "    tier: local\n" \
    "    provider: vllm\n" \
    "    url: http://127.0.0.1:8000\n" \
    "    model: qwen\n"

static struct gw_config *load(const char *yaml, char *err, size_t errlen)
{
    return gw_config_load_string(yaml, strlen(yaml), "t.yaml", err, errlen);
}

static void hex_of(const unsigned char *in, size_t n, char *out)
{
    gw_hex(in, n, out);
}

/* The load must fail with a message containing where ("t.yaml:LINE: field")
 * and what (the problem). */
static void expect_error(const char *yaml, const char *where, const char *what)
{
    char err[512];
    struct gw_config *c = load(yaml, err, sizeof(err));
    if (c) {
        gw_config_unref(c);
        fail_msg("loaded, but expected an error with \"%s\" \"%s\" for:\n%s", where, what,
                 yaml);
    }
    if (!strstr(err, where) || (what && !strstr(err, what)))
        fail_msg("error \"%s\" lacks \"%s\" / \"%s\" for:\n%s", err, where, what ? what : "",
                 yaml);
}

/* ------------------------------------------------------------------------ */

static void test_tier(void **state)
{
    (void)state;
    assert_string_equal(gw_tier_str(GW_TIER_LOCAL), "local");
    assert_string_equal(gw_tier_str(GW_TIER_FRONTIER), "frontier");
    assert_string_equal(gw_tier_str(GW_TIER_COUNT), "?");
    assert_int_equal(gw_tier_parse("local"), GW_TIER_LOCAL);
    assert_int_equal(gw_tier_parse("frontier"), GW_TIER_FRONTIER);
    assert_int_equal(gw_tier_parse("cloud"), -1);
    assert_int_equal(gw_tier_parse(""), -1);
    assert_int_equal(gw_tier_parse(NULL), -1);
}

static void test_defaults(void **state)
{
    (void)state;
    char err[512];
    struct gw_config *c = load(BACKEND, err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned want_workers = cores < 1 ? 1 : cores > 64 ? 64 : (unsigned)cores;

    assert_int_equal(atomic_load(&c->refs), 1);
    assert_string_equal(c->path, "t.yaml");
    assert_true(c->generation > 0);
    assert_string_equal(c->listen, "0.0.0.0:8080");
    assert_null(c->admin_listen);
    assert_int_equal(c->workers, want_workers);
    assert_int_equal(c->limits_sync_ms, 500);
    assert_int_equal(c->max_body_bytes, 8u << 20);
    assert_int_equal(c->max_header_bytes, 32u << 10);
    assert_int_equal(c->max_headers, 100);
    assert_int_equal(c->header_timeout_ms, 10000);
    assert_int_equal(c->body_timeout_ms, 30000);
    assert_int_equal(c->idle_timeout_ms, 75000);
    assert_int_equal(c->shutdown_timeout_ms, 30000);
    assert_int_equal(c->write_high_water, 64u << 10);
    assert_int_equal(c->nkeys, 0);
    assert_int_equal(c->nmodels, 0);
    assert_int_equal(c->default_tier, GW_TIER_LOCAL);
    assert_string_equal(c->access_log, "stdout");
    assert_string_equal(c->log_level, "info");

    assert_int_equal(c->nbackends, 1);
    const struct gw_backend_conf *b = &c->backends[0];
    assert_string_equal(b->name, "qwen");
    assert_int_equal(b->line, 2);
    assert_int_equal(b->tier, GW_TIER_LOCAL);
    assert_string_equal(b->provider_name, "vllm");
    assert_non_null(b->provider);
    assert_ptr_equal(b->provider, gw_provider_find("vllm"));
    assert_int_equal(b->nurls, 1);
    assert_string_equal(b->urls[0], "http://127.0.0.1:8000");
    assert_null(b->targets);
    assert_string_equal(b->model, "qwen");
    assert_null(b->api_key);
    assert_int_equal(b->context_window, 0);
    assert_int_equal(b->connect_timeout_ms, 2000);
    assert_int_equal(b->first_byte_timeout_ms, 60000);
    assert_int_equal(b->stream_idle_timeout_ms, 30000);
    assert_int_equal(b->request_timeout_ms, 600000);
    assert_int_equal(b->max_response_bytes, 32u << 20);
    assert_string_equal(b->health_path, "/health");
    assert_int_equal(b->health_interval_ms, 5000);
    assert_int_equal(b->fail_threshold, 3);
    gw_config_unref(c);
}

static const char full_yaml[] =
    "# a full configuration\n"                                           /* 1 */
    "listen: \"127.0.0.1:8081\"\n"                                       /* 2 */
    "admin_listen: \"127.0.0.1:9091\"\n"                                 /* 3 */
    "workers: 3\n"                                                       /* 4 */
    "log_level: debug\n"                                                 /* 5 */
    "access_log: /var/log/hybridgw/access.log\n"                         /* 6 */
    "limits:\n"                                                          /* 7 */
    "  max_body_bytes: 1MiB\n"
    "  max_header_bytes: 16KiB\n"
    "  max_headers: 50\n"
    "  header_timeout: 5s\n"
    "  body_timeout: 20s\n"
    "  idle_timeout: 1m\n"
    "  shutdown_timeout: 250ms\n"
    "  write_high_water: 128KiB\n"
    "auth:\n"
    "  keys:\n"
    "    - { name: dev, key: \"test\" }\n"
    "    - { name: ci, sha256: "
    "\"0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef\" }\n"
    "backends:\n"                                                        /* 20 */
    "  qwen-coder:\n"                                                    /* 21 */
    "    tier: local\n"
    "    provider: vllm\n"
    "    urls: [\"http://10.0.0.1:8000/\", \"http://10.0.0.2:8000\"]\n"
    "    model: Qwen/Qwen2.5-Coder-32B-Instruct\n"
    "    context_window: 32768\n"
    "    timeouts: { connect: 1s, first_byte: 30s, stream_idle: 10s, request: 300s }\n"
    "    max_response_bytes: 16MiB\n"
    "    health: { path: /v1/models, interval: 0, fail_threshold: 5 }\n"
    "    price: { gpu_hourly_usd: 1.21, replicas: 2 }\n"
    "  gpt:\n"                                                           /* 31 */
    "    tier: frontier\n"
    "    provider: openai\n"
    "    url: https://api.openai.com/v1/\n"
    "    model: gpt-4.1\n"
    "    api_key: \"sk-test-123\"\n"
    "    price: { per_mtok: { input: 2.0, output: 8.0 } }\n"
    "models:\n"
    "  coder: { backend: qwen-coder }\n"
    "  smart: { backend: gpt }\n"
    "router:\n"
    "  default_tier: frontier\n"
    "  classifier: builtin\n"
    "  min_confidence: 0.55\n"
    "  routes: { code: local, reasoning: frontier }\n"
    "  rules:\n"
    "    - { name: keep-local, header: \"x-data-class\", equals: restricted, tier: local }\n"
    "  spill: { waiting_above: 8, kv_cache_above: 0.9, back_below: 4 }\n"
    "  fallback: { local: [frontier], frontier: [local] }\n"
    "telemetry:\n"
    "  otlp: { endpoint: \"http://otel:4318/v1/traces\", headers: {}, sample: 1.0 }\n"
    "ledger: { database: \"sqlite:///var/lib/hybridgw/ledger.db\", limits_sync: 250ms }\n";

static void test_full(void **state)
{
    (void)state;
    char err[512], hex[65];
    struct gw_config *c = load(full_yaml, err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    assert_string_equal(c->listen, "127.0.0.1:8081");
    assert_string_equal(c->admin_listen, "127.0.0.1:9091");
    assert_int_equal(c->workers, 3);
    assert_string_equal(c->log_level, "debug");
    assert_string_equal(c->access_log, "/var/log/hybridgw/access.log");
    assert_int_equal(c->max_body_bytes, 1u << 20);
    assert_int_equal(c->max_header_bytes, 16u << 10);
    assert_int_equal(c->max_headers, 50);
    assert_int_equal(c->header_timeout_ms, 5000);
    assert_int_equal(c->body_timeout_ms, 20000);
    assert_int_equal(c->idle_timeout_ms, 60000);
    assert_int_equal(c->shutdown_timeout_ms, 250);
    assert_int_equal(c->write_high_water, 128u << 10);

    assert_int_equal(c->nkeys, 2);
    assert_string_equal(c->keys[0].name, "dev");
    hex_of(c->keys[0].sha256, 32, hex);
    assert_string_equal(hex, sha256_test_hex);
    assert_string_equal(c->keys[1].name, "ci");
    hex_of(c->keys[1].sha256, 32, hex);
    assert_string_equal(hex, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");

    assert_int_equal(c->nbackends, 2);
    const struct gw_backend_conf *q = &c->backends[0], *g = &c->backends[1];
    assert_string_equal(q->name, "qwen-coder");
    assert_int_equal(q->line, 21);
    assert_int_equal(q->nurls, 2);
    assert_string_equal(q->urls[0], "http://10.0.0.1:8000");
    assert_string_equal(q->urls[1], "http://10.0.0.2:8000");
    assert_string_equal(q->model, "Qwen/Qwen2.5-Coder-32B-Instruct");
    assert_int_equal(q->context_window, 32768);
    assert_int_equal(q->connect_timeout_ms, 1000);
    assert_int_equal(q->first_byte_timeout_ms, 30000);
    assert_int_equal(q->stream_idle_timeout_ms, 10000);
    assert_int_equal(q->request_timeout_ms, 300000);
    assert_int_equal(q->max_response_bytes, 16u << 20);
    assert_string_equal(q->health_path, "/v1/models");
    assert_int_equal(q->health_interval_ms, 0);
    assert_int_equal(q->fail_threshold, 5);
    assert_null(q->api_key);

    assert_string_equal(g->name, "gpt");
    assert_int_equal(g->line, 31);
    assert_int_equal(g->tier, GW_TIER_FRONTIER);
    assert_ptr_equal(g->provider, gw_provider_find("openai"));
    assert_string_equal(g->urls[0], "https://api.openai.com/v1");
    assert_string_equal(g->api_key, "sk-test-123");

    assert_int_equal(c->nmodels, 2);
    assert_string_equal(c->models[0].name, "coder");
    assert_string_equal(c->models[0].backend_name, "qwen-coder");
    assert_ptr_equal(c->models[0].backend, q);
    assert_ptr_equal(c->models[1].backend, g);
    assert_int_equal(c->default_tier, GW_TIER_FRONTIER);
    assert_string_equal(c->ledger_url, "sqlite:///var/lib/hybridgw/ledger.db");
    assert_int_equal(c->limits_sync_ms, 250);
    gw_config_unref(c);
}

/* The example shipped in config/ must load (with its variables set). */
static void test_example_file(void **state)
{
    (void)state;
    char err[512];
    /* CMake compiles with absolute paths: find the tree from __FILE__. */
    char path[1024];
    const char *me = __FILE__;
    const char *tail = strstr(me, "tests/unit/test_config.c");
    if (!tail)
        skip();
    snprintf(path, sizeof(path), "%.*sconfig/hybridgw.example.yaml", (int)(tail - me), me);
    if (access(path, R_OK) != 0)
        skip();
    setenv("HYBRIDGW_DEV_KEY", "example-dev-key", 1);
    struct gw_config *c = gw_config_load(path, err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    assert_true(c->nbackends >= 1);
    gw_config_unref(c);
}

static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        const char *where;
        const char *what;
    } cases[] = {
        /* structure */
        {"", "t.yaml:1: backends", "at least one backend"},
        {"listen: \"1.2.3.4:80\"\n", "t.yaml:1: backends", "at least one backend"},
        {"backends: {}\n", "t.yaml:1: backends", "at least one backend"},
        {"- a\n- b\n", "t.yaml:1: ", "top level must be a mapping"},
        {BACKEND "listen: [unclosed\n", "t.yaml:8:", "YAML syntax error"},
        {BACKEND "---\nlisten: \"1.2.3.4:80\"\n", "t.yaml:8:", "second YAML document"},
        {BACKEND "  bad: [1, 2\n", "t.yaml:", "YAML syntax error"},
        /* unknown keys (typos) */
        {BACKEND "listn: \"1.2.3.4:80\"\n", "t.yaml:7: listn", "did you mean \"listen\""},
        {BACKEND "    modle: x\n", "t.yaml:7: backends.qwen.modle", "did you mean \"model\""},
        {BACKEND "    timeouts: { conect: 1s }\n", "t.yaml:7: backends.qwen.timeouts.conect",
         "unknown key"},
        {BACKEND "    health: { paht: /h }\n", "t.yaml:7: backends.qwen.health.paht",
         "unknown key"},
        {BACKEND "router:\n  classifer: builtin\n", "t.yaml:8: router.classifer",
         "did you mean \"classifier\""},
        {BACKEND "router:\n  zzzzzzzz: 1\n", "t.yaml:8: router.zzzzzzzz", "unknown key"},
        {BACKEND "limits:\n  max_body: 1\n", "t.yaml:8: limits.max_body", "unknown key"},
        {BACKEND "auth:\n  keys:\n    - { name: a, key: b, extra: c }\n",
         "t.yaml:9: auth.keys[0].extra", "unknown key"},
        {BACKEND "models:\n  m: { backend: qwen, tier: local }\n", "t.yaml:8: models.m.tier",
         "unknown key"},
        /* duplicate keys */
        {BACKEND "listen: \"1.2.3.4:80\"\nlisten: \"1.2.3.4:81\"\n", "t.yaml:8: listen",
         "duplicate key (first defined on line 7)"},
        {BACKEND "    tier: frontier\n", "t.yaml:7: backends.qwen.tier",
         "duplicate key (first defined on line 3)"},
        {BACKEND "  qwen:\n    tier: local\n", "t.yaml:7: backends.qwen", "duplicate key"},
        {BACKEND "telemetry:\n  otlp: { a: 1, a: 2 }\n", "t.yaml:8: telemetry.otlp.a",
         "duplicate key"},
        {BACKEND "    price: { input: 1, input: 2 }\n", "t.yaml:7: backends.qwen.price.input",
         "duplicate key"},
        /* backends */
        {"backends:\n  qwen:\n    provider: vllm\n    url: http://h:1\n    model: m\n",
         "t.yaml:2: backends.qwen.tier", "missing"},
        {"backends:\n  qwen:\n    tier: cloud\n    provider: vllm\n    url: http://h:1\n"
         "    model: m\n",
         "t.yaml:3: backends.qwen.tier", "must be local or frontier"},
        {"backends:\n  qwen:\n    tier: local\n    url: http://h:1\n    model: m\n",
         "t.yaml:2: backends.qwen.provider", "missing"},
        {"backends:\n  qwen:\n    tier: local\n    provider: nope\n    url: http://h:1\n"
         "    model: m\n",
         "t.yaml:4: backends.qwen.provider", "unknown provider \"nope\" (known: "},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n    url: http://h:1\n",
         "t.yaml:2: backends.qwen.model", "missing"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n    model: m\n",
         "t.yaml:2: backends.qwen.url", "missing"},
        {"backends:\n  qwen:\n    tier:\n    provider: vllm\n    url: http://h:1\n"
         "    model: m\n",
         "t.yaml:3: backends.qwen.tier", "must not be empty"},
        {"backends:\n  qwen:\n", "t.yaml:2: backends.qwen", "expected a mapping"},
        {"backends:\n  local:\n    tier: local\n", "t.yaml:2: backends.local", "reserved"},
        {"backends:\n  \"bad name\":\n    tier: local\n", "t.yaml:2: backends.bad name",
         "backend names must be"},
        {"backends: [a, b]\n", "t.yaml:1: backends", "expected a mapping"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n"
         "    url: ftp://127.0.0.1:8000\n    model: m\n",
         "t.yaml:5: backends.qwen.url", "not an http(s) URL"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n"
         "    urls: [\"http://a:1\", \"http//b\"]\n    model: m\n",
         "t.yaml:5: backends.qwen.urls[1]", "not an http(s) URL"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n"
         "    urls:\n      - http://a:1\n      - http://a:1/\n    model: m\n",
         "t.yaml:7: backends.qwen.urls[1]", "twice"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n    urls: []\n"
         "    model: m\n",
         "t.yaml:5: backends.qwen.urls", "at least one URL"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n    urls: http://a:1\n"
         "    model: m\n",
         "t.yaml:5: backends.qwen.urls", "expected a list"},
        {BACKEND "    urls: [\"http://b:1\"]\n", "t.yaml:7: backends.qwen.urls",
         "either url or urls, not both"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n    url: http://h:99999\n"
         "    model: m\n",
         "t.yaml:5: backends.qwen.url", "bad port"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n    url: http://h:1/a?b=c\n"
         "    model: m\n",
         "t.yaml:5: backends.qwen.url", "query"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n    url: \"http://\"\n"
         "    model: m\n",
         "t.yaml:5: backends.qwen.url", "no host"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n    url: http://h:1\n"
         "    model: \"a\\0b\"\n",
         "t.yaml:6: backends.qwen.model", "NUL"},
        {BACKEND "    context_window: lots\n", "t.yaml:7: backends.qwen.context_window",
         "integer"},
        {BACKEND "    max_response_bytes: 0\n", "t.yaml:7: backends.qwen.max_response_bytes",
         "greater than 0"},
        {BACKEND "    timeouts: { connect: 0s }\n", "t.yaml:7: backends.qwen.timeouts.connect",
         "greater than 0"},
        {BACKEND "    timeouts: { first_byte: 700s }\n",
         "t.yaml:7: backends.qwen.timeouts.first_byte", "longer than"},
        {BACKEND "    timeouts: 5s\n", "t.yaml:7: backends.qwen.timeouts", "expected a mapping"},
        {BACKEND "    health: { path: health }\n", "t.yaml:7: backends.qwen.health.path",
         "must start with '/'"},
        {BACKEND "    health: { fail_threshold: 0 }\n",
         "t.yaml:7: backends.qwen.health.fail_threshold", "integer from 1"},
        {BACKEND "    health: { interval: often }\n", "t.yaml:7: backends.qwen.health.interval",
         "not a duration"},
        {BACKEND "    price: 3\n", "t.yaml:7: backends.qwen.price", "expected a mapping"},
        /* models */
        {BACKEND "models:\n  auto: { backend: qwen }\n", "t.yaml:8: models.auto", "reserved"},
        {BACKEND "models:\n  Frontier: { backend: qwen }\n", "t.yaml:8: models.Frontier",
         "reserved"},
        {BACKEND "models:\n  qwen: { backend: qwen }\n", "t.yaml:8: models.qwen",
         "same name as a backend"},
        {BACKEND "models:\n  coder: { backend: nosuch }\n", "t.yaml:8: models.coder.backend",
         "unknown backend \"nosuch\""},
        {BACKEND "models:\n  coder: {}\n", "models.coder.backend", "missing"},
        {BACKEND "models:\n  coder: qwen\n", "t.yaml:8: models.coder", "expected a mapping"},
        /* top-level scalars */
        {BACKEND "workers: 0\n", "t.yaml:7: workers", "auto or an integer from 1 to 64"},
        {BACKEND "workers: 65\n", "t.yaml:7: workers", "auto or an integer from 1 to 64"},
        {BACKEND "workers: many\n", "t.yaml:7: workers", "auto or an integer"},
        {BACKEND "workers: -2\n", "t.yaml:7: workers", "auto or an integer"},
        {BACKEND "listen: \"8080\"\n", "t.yaml:7: listen", "host:port"},
        {BACKEND "listen: \"h:70000\"\n", "t.yaml:7: listen", "bad port"},
        {BACKEND "listen:\n", "t.yaml:7: listen", "must not be empty"},
        {BACKEND "listen: \"0.0.0.0:8080\"\nadmin_listen: \"0.0.0.0:8080\"\n",
         "t.yaml:8: admin_listen", "same address"},
        {BACKEND "admin_listen: \"0.0.0.0:8080\"\n", "t.yaml:7: admin_listen", "same address"},
        {BACKEND "listen: \"127.0.0.1:9000\"\nadmin_listen: \"0.0.0.0:9000\"\n",
         "t.yaml:8: admin_listen", "same address"},
        {BACKEND "log_level: loud\n", "t.yaml:7: log_level", "error, warn, info or debug"},
        {BACKEND "access_log: \"\"\n", "t.yaml:7: access_log", "must not be empty"},
        {BACKEND "access_log: [a]\n", "t.yaml:7: access_log", "expected a string"},
        /* limits */
        {BACKEND "limits:\n  max_body_bytes: 0\n", "t.yaml:8: limits.max_body_bytes",
         "greater than 0"},
        {BACKEND "limits:\n  max_header_bytes: 8 lots\n", "t.yaml:8: limits.max_header_bytes",
         "not a size"},
        {BACKEND "limits:\n  write_high_water: -1\n", "t.yaml:8: limits.write_high_water",
         "not a size"},
        {BACKEND "limits:\n  header_timeout: soon\n", "t.yaml:8: limits.header_timeout",
         "not a duration"},
        {BACKEND "limits:\n  idle_timeout: 0\n", "t.yaml:8: limits.idle_timeout",
         "greater than 0"},
        {BACKEND "limits:\n  shutdown_timeout: 48h\n", "t.yaml:8: limits.shutdown_timeout",
         "at most 24h"},
        {BACKEND "limits:\n  max_headers: 0\n", "t.yaml:8: limits.max_headers",
         "integer from 1 to 10000"},
        {BACKEND "limits: 5\n", "t.yaml:7: limits", "expected a mapping"},
        /* auth */
        {BACKEND "auth:\n  keys:\n    - { name: a, key: x }\n    - { name: a, key: y }\n",
         "t.yaml:10: auth.keys[1].name", "duplicate key name"},
        {BACKEND "auth:\n  keys:\n    - { name: a, sha256: abc }\n",
         "t.yaml:9: auth.keys[0].sha256", "64 hex digits"},
        {BACKEND "auth:\n  keys:\n    - { name: a, sha256: "
                 "\"zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\" }\n",
         "t.yaml:9: auth.keys[0].sha256", "64 hex digits"},
        {BACKEND "auth:\n  keys:\n    - { name: a, key: x, sha256: abc }\n",
         "t.yaml:9: auth.keys[0]", "both key and sha256"},
        {BACKEND "auth:\n  keys:\n    - { name: a }\n", "t.yaml:9: auth.keys[0]", "needs key"},
        {BACKEND "auth:\n  keys:\n    - { key: x }\n", "t.yaml:9: auth.keys[0].name", "missing"},
        {BACKEND "auth:\n  keys:\n    - { name: a, key: \"\" }\n", "t.yaml:9: auth.keys[0].key",
         "must not be empty"},
        {BACKEND "auth:\n  keys: { name: a }\n", "t.yaml:8: auth.keys", "expected a list"},
        {BACKEND "auth:\n  keys:\n    - x\n", "t.yaml:9: auth.keys[0]", "expected a mapping"},
        /* router and inactive sections */
        {BACKEND "router:\n  default_tier: cloud\n", "t.yaml:8: router.default_tier",
         "must be local or frontier"},
        {BACKEND "telemetry: 1\n", "t.yaml:7: telemetry", "expected a mapping"},
        {BACKEND "ledger: [a]\n", "t.yaml:7: ledger", "expected a mapping"},
        {BACKEND "ledger: { limits_sync: often }\n", "t.yaml:7: ledger.limits_sync",
         "not a duration"},
        {BACKEND "telemetry: { [a]: 1 }\n", "t.yaml:7: telemetry", "keys must be strings"},
        /* interpolation */
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n    url: http://h:1\n"
         "    model: \"${HGW_TEST_SURELY_UNSET}\"\n",
         "t.yaml:6: backends.qwen.model", "HGW_TEST_SURELY_UNSET is not set"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n    url: http://h:1\n"
         "    model: \"x${HGW_TEST_X\"\n",
         "t.yaml:6: backends.qwen.model", "bad ${HGW_TEST_X: missing '}'"},
        {"backends:\n  qwen:\n    tier: local\n    provider: vllm\n    url: http://h:1\n"
         "    model: \"${1BAD}\"\n",
         "t.yaml:6: backends.qwen.model", "bad ${...}"},
        {BACKEND "auth:\n  keys:\n    - { name: a, key: \"${HGW_TEST_SURELY_UNSET}\" }\n",
         "t.yaml:9: auth.keys[0].key", "HGW_TEST_SURELY_UNSET is not set"},
    };
    unsetenv("HGW_TEST_SURELY_UNSET");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_error(cases[i].yaml, cases[i].where, cases[i].what);
}

static void test_unknown_provider_lists_known(void **state)
{
    (void)state;
    char err[512];
    struct gw_config *c = load("backends:\n  qwen:\n    tier: local\n    provider: nope\n"
                               "    url: http://h:1\n    model: m\n",
                               err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, gw_provider_names()));
}

/* Values that may be secrets never appear in messages. */
static void test_errors_hide_values(void **state)
{
    (void)state;
    char err[512];
    struct gw_config *c;

    c = load(BACKEND "auth:\n  keys:\n    - { name: dev, key: s3cr3t-value }\n"
                     "    - { name: ci, key: s3cr3t-value }\n",
             err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "t.yaml:10: auth.keys[1]: same key as auth.keys[0] (dev)"));
    assert_null(strstr(err, "s3cr3t"));

    c = load("backends:\n  qwen:\n    tier: local\n    provider: vllm\n"
             "    url: http://user:hunter2@h:1\n    model: m\n",
             err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "credentials"));
    assert_null(strstr(err, "hunter2"));

    c = load(BACKEND "    api_key: \"sk-live-abc${\"\n", err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "t.yaml:7: backends.qwen.api_key"));
    assert_null(strstr(err, "sk-live"));

    c = load(BACKEND "    api_key: \"sk-live-abc${oops }\"\n", err, sizeof(err));
    assert_null(c);
    assert_null(strstr(err, "sk-live"));
    assert_null(strstr(err, "oops"));

    /* In a secret, "${xyz" may be part of the key: not named. */
    c = load(BACKEND "auth:\n  keys:\n    - { name: a, key: \"Q9${xyzSecretTail\" }\n", err,
             sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "t.yaml:9: auth.keys[0].key: bad ${...}"));
    assert_null(strstr(err, "xyz"));

    /* A well-formed reference is named even in a secret. */
    unsetenv("HGW_TEST_SURELY_UNSET");
    c = load(BACKEND "    api_key: \"${HGW_TEST_SURELY_UNSET}\"\n", err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "t.yaml:7: backends.qwen.api_key: environment variable "
                                "HGW_TEST_SURELY_UNSET is not set"));
}

static void test_interpolate(void **state)
{
    (void)state;
    char err[256];
    char *s;
    setenv("HGW_T_A", "alpha", 1);
    setenv("HGW_T_EMPTY", "", 1);
    unsetenv("HGW_T_UNSET");

    static const struct {
        const char *in, *out;
    } ok[] = {
        {"", ""},
        {"plain", "plain"},
        {"${HGW_T_A}", "alpha"},
        {"x-${HGW_T_A}-y", "x-alpha-y"},
        {"${HGW_T_A}${HGW_T_A}", "alphaalpha"},
        {"${HGW_T_UNSET:-dflt}", "dflt"},
        {"${HGW_T_EMPTY:-dflt}", "dflt"},
        {"${HGW_T_A:-dflt}", "alpha"},
        {"${HGW_T_UNSET:-}", ""},
        {"${HGW_T_EMPTY}", ""},
        {"${HGW_T_UNSET:-a:b/c d}", "a:b/c d"},
        {"$$", "$"},
        {"a$$b", "a$b"},
        {"$${HGW_T_A}", "${HGW_T_A}"},
        {"$$$", "$$"},
        {"$HOME", "$HOME"},
        {"cost$", "cost$"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        s = gw_config_interpolate(ok[i].in, err, sizeof(err));
        if (!s)
            fail_msg("\"%s\": %s", ok[i].in, err);
        if (strcmp(s, ok[i].out) != 0)
            fail_msg("\"%s\" -> \"%s\", want \"%s\"", ok[i].in, s, ok[i].out);
        free(s);
    }

    static const struct {
        const char *in, *msg;
    } bad[] = {
        {"${HGW_T_UNSET}", "HGW_T_UNSET is not set"},
        {"x${HGW_T_UNSET}y", "HGW_T_UNSET is not set"},
        {"${", "bad ${...}"},
        {"${}", "bad ${...}"},
        {"${HGW_T_A", "missing '}'"},
        {"${HGW_T_A:-dflt", "missing '}'"},
        {"${9X}", "bad ${...}"},
        {"${A B}", "expected '}'"},
        {"${HGW_T_A-x}", "expected '}'"},
        {"${HGW_T_UNSET:-${HGW_T_A}}", "nested"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        s = gw_config_interpolate(bad[i].in, err, sizeof(err));
        if (s)
            fail_msg("\"%s\" gave \"%s\", want an error", bad[i].in, s);
        if (!strstr(err, bad[i].msg))
            fail_msg("\"%s\": error \"%s\" lacks \"%s\"", bad[i].in, err, bad[i].msg);
    }
    /* No error buffer is fine. */
    assert_null(gw_config_interpolate("${HGW_T_UNSET}", NULL, 0));
}

static void test_env_in_config(void **state)
{
    (void)state;
    char err[512];
    setenv("HGW_T_HOST", "10.1.2.3", 1);
    setenv("HGW_T_KEY", "test", 1);
    setenv("HGW_T_EMPTY", "", 1);
    unsetenv("HGW_T_UNSET");
    struct gw_config *c = load("listen: \"${HGW_T_UNSET:-127.0.0.1}:${HGW_T_UNSET:-7000}\"\n"
                               "access_log: \"/logs/$$HOME/a.log\"\n"
                               "auth:\n  keys:\n    - { name: dev, key: \"${HGW_T_KEY}\" }\n"
                               "backends:\n  qwen:\n    tier: \"${HGW_T_UNSET:-frontier}\"\n"
                               "    provider: vllm\n"
                               "    url: \"http://${HGW_T_HOST}:8000/\"\n"
                               "    model: \"${HGW_T_UNSET:-fallback-model}\"\n"
                               "    api_key: \"${HGW_T_EMPTY:-}\"\n"
                               "    context_window: \"${HGW_T_UNSET:-4096}\"\n",
                               err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    char hex[65];
    assert_string_equal(c->listen, "127.0.0.1:7000");
    assert_string_equal(c->access_log, "/logs/$HOME/a.log");
    hex_of(c->keys[0].sha256, 32, hex);
    assert_string_equal(hex, sha256_test_hex);
    assert_int_equal(c->backends[0].tier, GW_TIER_FRONTIER);
    assert_string_equal(c->backends[0].urls[0], "http://10.1.2.3:8000");
    assert_string_equal(c->backends[0].model, "fallback-model");
    assert_null(c->backends[0].api_key);
    assert_int_equal(c->backends[0].context_window, 4096);
    gw_config_unref(c);

    /* an unset variable in telemetry is an error naming the variable */
    c = load(BACKEND "telemetry:\n  otlp: { headers: { auth: \"${HGW_T_UNSET}\" } }\n", err,
             sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "HGW_T_UNSET"));
}

static void test_keys(void **state)
{
    (void)state;
    char err[512], hex[65];
    struct gw_config *c = load(BACKEND "auth:\n  keys:\n"
                                       "    - name: plain\n      key: test\n"
                                       "    - name: hashed\n      sha256: \"ABCDEF0123456789"
                                       "abcdef0123456789abcdef0123456789abcdef0123456789\"\n",
                               err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    assert_int_equal(c->nkeys, 2);
    assert_string_equal(c->keys[0].name, "plain");
    hex_of(c->keys[0].sha256, 32, hex);
    assert_string_equal(hex, sha256_test_hex);
    hex_of(c->keys[1].sha256, 32, hex);
    assert_string_equal(hex, "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
    gw_config_unref(c);

    /* A plain key and the sha256 of the same key are one key. */
    char yaml[512];
    snprintf(yaml, sizeof(yaml),
             BACKEND "auth:\n  keys:\n    - { name: a, key: test }\n"
                     "    - { name: b, sha256: \"%s\" }\n",
             sha256_test_hex);
    expect_error(yaml, "t.yaml:10: auth.keys[1]", "same key as auth.keys[0] (a)");

    /* Empty auth is allowed (no keys). */
    c = load(BACKEND "auth:\n  keys: []\n", err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(c->nkeys, 0);
    gw_config_unref(c);
}

static void test_resolve_model(void **state)
{
    (void)state;
    char err[512];
    struct gw_config *c = load(full_yaml, err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    const struct gw_backend_conf *q = gw_config_backend(c, "qwen-coder");
    const struct gw_backend_conf *g = gw_config_backend(c, "gpt");
    assert_non_null(q);
    assert_non_null(g);
    assert_null(gw_config_backend(c, "coder"));
    assert_null(gw_config_backend(c, NULL));

    assert_ptr_equal(gw_config_resolve_model(c, "coder", 5), q);
    assert_ptr_equal(gw_config_resolve_model(c, "smart", 5), g);
    assert_ptr_equal(gw_config_resolve_model(c, "gpt", 3), g);
    assert_ptr_equal(gw_config_resolve_model(c, "qwen-coder", 10), q);
    /* not NUL-terminated at len */
    assert_ptr_equal(gw_config_resolve_model(c, "coderXYZ", 5), q);
    assert_null(gw_config_resolve_model(c, "code", 4));
    assert_null(gw_config_resolve_model(c, "coders", 6));
    assert_null(gw_config_resolve_model(c, "auto", 4));
    assert_null(gw_config_resolve_model(c, "local", 5));
    assert_null(gw_config_resolve_model(c, "", 0));
    assert_null(gw_config_resolve_model(NULL, "coder", 5));
    gw_config_unref(c);
}

static void test_refs_and_generation(void **state)
{
    (void)state;
    char err[512];
    struct gw_config *a = load(BACKEND, err, sizeof(err));
    struct gw_config *b = load(BACKEND, err, sizeof(err));
    assert_non_null(a);
    assert_non_null(b);
    assert_true(b->generation > a->generation);
    /* a failed load does not use up a generation */
    assert_null(load("x: 1\n", err, sizeof(err)));
    struct gw_config *c = load(BACKEND, err, sizeof(err));
    assert_int_equal(c->generation, b->generation + 1);
    assert_ptr_equal(gw_config_ref(a), a);
    assert_int_equal(atomic_load(&a->refs), 2);
    gw_config_unref(a);
    assert_int_equal(atomic_load(&a->refs), 1);
    gw_config_unref(a);
    gw_config_unref(b);
    gw_config_unref(c);
    gw_config_unref(NULL);
    assert_null(gw_config_ref(NULL));
}

static void test_shapes(void **state)
{
    (void)state;
    char err[512];
    struct gw_config *c;

    /* Null values keep defaults; "" admin_listen means none; anchors work. */
    c = load("listen: \"[::1]:8080\"\n"
             "admin_listen: \"\"\n"
             "workers: 4\n"
             "limits:\n"
             "telemetry:\n"
             "ledger: ~\n"
             "x-timeouts: &t { connect: 3s, request: 30s }\n",
             err, sizeof(err));
    assert_null(c); /* x-timeouts is not a known key */
    assert_non_null(strstr(err, "t.yaml:7: x-timeouts: unknown key"));

    c = load("listen: \"[::1]:8080\"\n"
             "admin_listen: \"\"\n"
             "workers: \"4\"\n"
             "limits:\n"
             "telemetry:\n"
             "ledger: ~\n"
             "backends:\n"
             "  a:\n"
             "    tier: local\n    provider: vllm\n    url: \"http://[fd00::1]:8000/v1/\"\n"
             "    model: m\n"
             "    timeouts: &t { connect: 3s, request: 30s }\n"
             "    api_key: ~\n"
             "  b:\n"
             "    tier: local\n    provider: vllm\n    url: \"HTTPS://example.com/\"\n"
             "    model: m\n"
             "    timeouts: *t\n",
             err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    assert_string_equal(c->listen, "[::1]:8080");
    assert_null(c->admin_listen);
    assert_int_equal(c->workers, 4);
    assert_int_equal(c->max_body_bytes, 8u << 20);
    assert_string_equal(c->backends[0].urls[0], "http://[fd00::1]:8000/v1");
    assert_string_equal(c->backends[1].urls[0], "HTTPS://example.com");
    assert_int_equal(c->backends[1].connect_timeout_ms, 3000);
    /* unset phases are lowered to fit the request timeout */
    assert_int_equal(c->backends[1].first_byte_timeout_ms, 30000);
    assert_int_equal(c->backends[1].stream_idle_timeout_ms, 30000);
    assert_null(c->backends[0].api_key);
    gw_config_unref(c);

    /* workers: auto explicitly; different admin port is fine. */
    c = load(BACKEND "workers: auto\nlisten: \"0.0.0.0:8080\"\nadmin_listen: \"0.0.0.0:9090\"\n",
             err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    assert_true(c->workers >= 1 && c->workers <= 64);
    assert_string_equal(c->admin_listen, "0.0.0.0:9090");
    gw_config_unref(c);
}

/* Hostile documents fail cleanly. */
static void test_hostile(void **state)
{
    (void)state;
    char err[512];
    char *deep = malloc(4096);
    size_t n = 0;
    n += (size_t)sprintf(deep + n, BACKEND "ledger:\n  x: ");
    for (int i = 0; i < 40; i++)
        deep[n++] = '[';
    for (int i = 0; i < 40; i++)
        deep[n++] = ']';
    deep[n++] = '\n';
    deep[n] = '\0';
    expect_error(deep, "ledger.x", "unknown key");
    free(deep);

    /* "billion laughs": 10^7 nodes from a few lines. */
    expect_error(BACKEND "ledger:\n"
                         "  a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                         "  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                         "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                         "  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                         "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                         "  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                         "  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
                 "t.yaml:", "ledger.a");

    /* Arbitrary bytes, including NULs, and no error buffer. */
    static const char junk[] = "\x00\xff\xfe{[:\n\t- &a *a\x01";
    assert_null(gw_config_load_string(junk, sizeof(junk) - 1, "junk", err, sizeof(err)));
    assert_true(strlen(err) > 0);
    assert_null(gw_config_load_string(junk, sizeof(junk) - 1, NULL, NULL, 0));
    assert_null(gw_config_load_string(NULL, 0, NULL, err, sizeof(err)));
    assert_null(gw_config_load_string("backends:\n  a: *nope\n", 21, "t.yaml", err,
                                      sizeof(err)));
    assert_non_null(strstr(err, "t.yaml:"));
}

static void test_load_file(void **state)
{
    (void)state;
    char err[512];
    char path[] = "/tmp/test_config_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(BACKEND "workers: 0\n", f);
    fclose(f);

    struct gw_config *c = gw_config_load(path, err, sizeof(err));
    assert_null(c);
    char want[600];
    snprintf(want, sizeof(want), "%s:7: workers", path);
    assert_non_null(strstr(err, want));

    f = fopen(path, "w");
    assert_non_null(f);
    fputs(BACKEND, f);
    fclose(f);
    c = gw_config_load(path, err, sizeof(err));
    if (!c)
        fail_msg("%s", err);
    assert_string_equal(c->path, path);
    gw_config_unref(c);
    unlink(path);

    c = gw_config_load("/nonexistent/hybridgw.yaml", err, sizeof(err));
    assert_null(c);
    assert_non_null(strstr(err, "/nonexistent/hybridgw.yaml: cannot open"));
    assert_null(gw_config_load(NULL, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tier),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_example_file),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_unknown_provider_lists_known),
        cmocka_unit_test(test_errors_hide_values),
        cmocka_unit_test(test_interpolate),
        cmocka_unit_test(test_env_in_config),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_resolve_model),
        cmocka_unit_test(test_refs_and_generation),
        cmocka_unit_test(test_shapes),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_load_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
