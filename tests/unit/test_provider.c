/*
 * test_provider.c - unit tests for the OpenAI-compatible providers
 * (src/provider/openai_compat.c, contract in src/provider/provider.h):
 * lookup, headers, request rewriting, usage extraction, and the mapping of
 * upstream errors (vLLM's flat and nested bodies, {"error":"Unauthorized"},
 * FastAPI's detail, non-JSON bodies) to client statuses and messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hybridgw/config.h"
#include "provider/provider.h"

#define CFG \
    "backends:\n" \
    "  qwen:\n" \
    "    tier: local\n" \
    "    provider: vllm\n" \
    "    url: http://127.0.0.1:8000\n" \
    "    model: Qwen/Qwen3-32B\n" \
    "  gpt:\n" \
    "    tier: frontier\n" \
    "    provider: openai\n" \
    "    url: https://api.example.com/v1\n" \
    "    model: gpt-4.1\n" \
    "    api_key: \"sk-test-123\"\n"

static struct gw_config *g_cfg;
static json_t *g_json;              /* JSON of the current check, if any */
static struct curl_slist *g_headers;

static int setup(void **state)
{
    (void)state;
    char err[256];
    g_cfg = gw_config_load_string(CFG, strlen(CFG), "t.yaml", err, sizeof(err));
    if (!g_cfg) {
        print_error("config: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    gw_config_unref(g_cfg);
    g_cfg = NULL;
    json_decref(g_json);
    g_json = NULL;
    curl_slist_free_all(g_headers);
    g_headers = NULL;
    return 0;
}

static const struct gw_backend_conf *backend(const char *name)
{
    const struct gw_backend_conf *b = gw_config_backend(g_cfg, name);
    assert_non_null(b);
    assert_non_null(b->provider);
    return b;
}

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j)
        fail_msg("bad test JSON (%s): %s", e.text, text);
    return j;
}

/* ------------------------------------------------------------------------ */

static void test_lookup(void **state)
{
    (void)state;
    const struct gw_provider *v = gw_provider_find("vllm"), *o = gw_provider_find("openai");
    assert_non_null(v);
    assert_non_null(o);
    assert_string_equal(v->name, "vllm");
    assert_string_equal(o->name, "openai");
    assert_int_equal(v->dialect, GW_DIALECT_OPENAI);
    assert_int_equal(o->dialect, GW_DIALECT_OPENAI);
    assert_true(v->scrape_load);
    assert_false(o->scrape_load);
    const struct gw_provider *a = gw_provider_find("anthropic");
    assert_non_null(a);
    assert_int_equal(a->dialect, GW_DIALECT_ANTHROPIC);
    assert_string_equal(a->chat_path(NULL), "/v1/messages");
    assert_null(gw_provider_find("VLLM"));
    assert_null(gw_provider_find(""));
    assert_non_null(strstr(gw_provider_names(), "vllm"));
    assert_non_null(strstr(gw_provider_names(), "openai"));
    /* the config resolved each backend's provider by name */
    assert_ptr_equal(backend("qwen")->provider, v);
    assert_ptr_equal(backend("gpt")->provider, o);
    assert_string_equal(v->chat_path(backend("qwen")), "/v1/chat/completions");
    assert_string_equal(o->chat_path(backend("gpt")), "/v1/chat/completions");
}

static bool has_header(const struct curl_slist *h, const char *line)
{
    for (; h; h = h->next)
        if (strcmp(h->data, line) == 0)
            return true;
    return false;
}

static bool has_prefix(const struct curl_slist *h, const char *prefix)
{
    for (; h; h = h->next)
        if (strncasecmp(h->data, prefix, strlen(prefix)) == 0)
            return true;
    return false;
}

static void test_headers(void **state)
{
    (void)state;
    const struct gw_backend_conf *q = backend("qwen"), *g = backend("gpt");
    g_headers = q->provider->add_headers(q, NULL, NULL);
    assert_true(has_header(g_headers, "Content-Type: application/json"));
    assert_true(has_prefix(g_headers, "Accept:"));
    assert_true(has_header(g_headers, "Expect:"));
    assert_false(has_prefix(g_headers, "Authorization:"));
    curl_slist_free_all(g_headers);
    g_headers = NULL;

    /* headers already in the list are kept */
    g_headers = curl_slist_append(NULL, "X-Request-Id: abc");
    g_headers = g->provider->add_headers(g, g_headers, NULL);
    assert_true(has_header(g_headers, "X-Request-Id: abc"));
    assert_true(has_header(g_headers, "Authorization: Bearer sk-test-123"));
    assert_true(has_header(g_headers, "Content-Type: application/json"));
}

static void test_prepare_request(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        bool stream;
        const char *want;
    } cases[] = {
        {"{\"model\":\"coder\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", false,
         "{\"model\":\"Qwen/Qwen3-32B\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"},
        {"{\"model\":\"coder\",\"stream\":true}", true,
         "{\"model\":\"Qwen/Qwen3-32B\",\"stream\":true,"
         "\"stream_options\":{\"include_usage\":true}}"},
        {"{\"model\":\"x\",\"stream\":true,\"stream_options\":{\"include_usage\":false,\"y\":1}}",
         true,
         "{\"model\":\"Qwen/Qwen3-32B\",\"stream\":true,"
         "\"stream_options\":{\"include_usage\":true,\"y\":1}}"},
        {"{\"model\":\"x\",\"stream\":true,\"stream_options\":null}", true,
         "{\"model\":\"Qwen/Qwen3-32B\",\"stream\":true,"
         "\"stream_options\":{\"include_usage\":true}}"},
        {"{\"model\":\"x\",\"stream\":true,\"stream_options\":\"junk\"}", true,
         "{\"model\":\"Qwen/Qwen3-32B\",\"stream\":true,"
         "\"stream_options\":{\"include_usage\":true}}"},
        {"{\"messages\":[],\"temperature\":0.2,\"max_tokens\":5,\"tools\":[{\"type\":\"function\"}]}",
         false,
         "{\"model\":\"Qwen/Qwen3-32B\",\"messages\":[],\"temperature\":0.2,\"max_tokens\":5,"
         "\"tools\":[{\"type\":\"function\"}]}"},
    };
    const struct gw_backend_conf *q = backend("qwen");
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        g_json = parse(cases[i].in);
        assert_int_equal(q->provider->prepare_request(q, g_json, cases[i].stream), GW_OK);
        json_t *want = parse(cases[i].want);
        bool eq = json_equal(g_json, want);
        json_decref(want);
        if (!eq) {
            char *got = json_dumps(g_json, JSON_SORT_KEYS | JSON_COMPACT);
            char msg[512];
            snprintf(msg, sizeof(msg), "case %zu: got %s, want %s", i, got, cases[i].want);
            free(got);
            fail_msg("%s", msg);
        }
        json_decref(g_json);
        g_json = NULL;
    }
    /* the openai backend sends its own model name */
    const struct gw_backend_conf *g = backend("gpt");
    g_json = parse("{\"model\":\"smart\"}");
    assert_int_equal(g->provider->prepare_request(g, g_json, false), GW_OK);
    assert_string_equal(json_string_value(json_object_get(g_json, "model")), "gpt-4.1");
}

static void test_read_usage(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        bool reported;
        int64_t prompt, completion, cached, reasoning;
    } cases[] = {
        {"{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15}}", true, 10,
         5, 0, 0},
        {"{\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":40,"
         "\"prompt_tokens_details\":{\"cached_tokens\":64},"
         "\"completion_tokens_details\":{\"reasoning_tokens\":30}}}",
         true, 100, 40, 64, 30},
        /* called with the usage object itself */
        {"{\"prompt_tokens\":7,\"completion_tokens\":0}", true, 7, 0, 0, 0},
        /* every stream chunk carries "usage":null once include_usage is on */
        {"{\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}", false, -1, -1, 0, 0},
        {"{\"usage\":{}}", false, -1, -1, 0, 0},
        {"{}", false, -1, -1, 0, 0},
        {"{\"usage\":{\"prompt_tokens\":12}}", true, 12, -1, 0, 0},
        {"{\"usage\":{\"prompt_tokens\":\"12\",\"completion_tokens\":3}}", true, -1, 3, 0, 0},
        {"{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,"
         "\"prompt_tokens_details\":{\"cached_tokens\":-4},"
         "\"completion_tokens_details\":null}}",
         true, 5, 1, 0, 0},
        {"{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,"
         "\"prompt_tokens_details\":null}}",
         true, 5, 1, 0, 0},
    };
    const struct gw_provider *p = backend("qwen")->provider;
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        struct gw_usage u;
        gw_usage_init(&u);
        assert_int_equal(u.prompt_tokens, -1);
        assert_int_equal(u.completion_tokens, -1);
        assert_false(u.reported);
        g_json = parse(cases[i].json);
        p->read_usage(g_json, &u);
        json_decref(g_json);
        g_json = NULL;
        if (u.reported != cases[i].reported || u.prompt_tokens != cases[i].prompt ||
            u.completion_tokens != cases[i].completion || u.cached_tokens != cases[i].cached ||
            u.reasoning_tokens != cases[i].reasoning)
            fail_msg("case %zu: reported=%d p=%lld c=%lld cached=%lld reasoning=%lld", i,
                     u.reported, (long long)u.prompt_tokens, (long long)u.completion_tokens,
                     (long long)u.cached_tokens, (long long)u.reasoning_tokens);
    }
}

static void test_map_error(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *body;
        int want_status;
        const char *type;
        const char *code;   /* NULL: none */
        const char *message;
    } cases[] = {
        /* vLLM >= 0.10.1 / OpenAI: nested */
        {400, "{\"error\":{\"message\":\"temperature must be >= 0\",\"type\":\"BadRequestError\","
              "\"param\":null,\"code\":400}}",
         400, "invalid_request_error", NULL, "temperature must be >= 0"},
        /* vLLM < 0.10.1: flat */
        {400, "{\"object\":\"error\",\"message\":\"This model's maximum context length is 32768 "
              "tokens. However, you requested 40000 tokens.\",\"type\":\"BadRequestError\","
              "\"param\":null,\"code\":400}",
         400, "invalid_request_error", "context_length_exceeded",
         "This model's maximum context length is 32768 tokens. However, you requested 40000 "
         "tokens."},
        {400, "{\"error\":{\"message\":\"This model's maximum context length is 8192 tokens\"}}",
         400, "invalid_request_error", "context_length_exceeded",
         "This model's maximum context length is 8192 tokens"},
        /* vLLM's --api-key middleware */
        {401, "{\"error\":\"Unauthorized\"}", 502, "upstream_error", "upstream_auth_failed",
         "backend qwen rejected the gateway's credentials: Unauthorized"},
        {403, "{\"error\":{\"message\":\"forbidden\"}}", 502, "upstream_error",
         "upstream_auth_failed", "backend qwen rejected the gateway's credentials: forbidden"},
        /* FastAPI */
        {404, "{\"detail\":\"Not Found\"}", 502, "upstream_error", "upstream_not_found",
         "backend qwen: Not Found"},
        {408, "", 504, "upstream_error", "upstream_timeout", "backend qwen timed out: no error body"},
        {413, "{\"message\":\"too big\"}", 413, "invalid_request_error", NULL, "too big"},
        {422, "{\"detail\":[{\"loc\":[\"body\",\"messages\"],\"msg\":\"field required\"}]}", 422,
         "invalid_request_error", NULL,
         "{\"detail\":[{\"loc\":[\"body\",\"messages\"],\"msg\":\"field required\"}]}"},
        {429, "{\"error\":{\"message\":\"slow down\",\"type\":\"requests\"}}", 429,
         "rate_limit_error", "rate_limit_exceeded", "backend qwen is rate limiting: slow down"},
        {503, "Service Unavailable", 503, "upstream_error", "upstream_overloaded",
         "backend qwen is overloaded: Service Unavailable"},
        {529, "{\"error\":{\"message\":\"Overloaded\"}}", 503, "upstream_error",
         "upstream_overloaded", "backend qwen is overloaded: Overloaded"},
        /* not JSON: the start of it, printable bytes only */
        {500, "Internal Server Error", 502, "upstream_error", "upstream_error",
         "backend qwen failed with status 500: Internal Server Error"},
        {502, "<html>\r\n<body>bad\tgateway</body>\n</html>", 502, "upstream_error",
         "upstream_error", "backend qwen failed with status 502: <html>  <body>bad gateway</body> "
                           "</html>"},
        {500, "", 502, "upstream_error", "upstream_error",
         "backend qwen failed with status 500: no error body"},
        {504, "[1,2]", 502, "upstream_error", "upstream_error",
         "backend qwen failed with status 504: [1,2]"},
        /* JSON, but no message of a known shape: quoted as text */
        {500, "{\"error\":{\"message\":123}}", 502, "upstream_error", "upstream_error",
         "backend qwen failed with status 500: {\"error\":{\"message\":123}}"},
        {400, "{\"error\":{\"code\":\"x\"},\"message\":\"outer\"}", 400, "invalid_request_error",
         NULL, "outer"},
        {418, "{\"detail\":\"teapot\"}", 502, "upstream_error", "upstream_error",
         "backend qwen failed with status 418: teapot"},
    };
    const struct gw_backend_conf *q = backend("qwen");
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        struct gw_error e;
        memset(&e, 0x5a, sizeof(e));
        q->provider->map_error(q, cases[i].status, cases[i].body, strlen(cases[i].body), &e);
        bool code_ok = cases[i].code ? (e.code && strcmp(e.code, cases[i].code) == 0) : !e.code;
        if (e.status != cases[i].want_status || !e.type || strcmp(e.type, cases[i].type) != 0 ||
            !code_ok || strcmp(e.message, cases[i].message) != 0 || e.param != NULL)
            fail_msg("case %zu (%d): got %d %s %s \"%s\"\n want %d %s %s \"%s\"", i,
                     cases[i].status, e.status, e.type ? e.type : "(null)",
                     e.code ? e.code : "(null)", e.message, cases[i].want_status, cases[i].type,
                     cases[i].code ? cases[i].code : "(null)", cases[i].message);
    }
}

/* The body need not be NUL-terminated nor text: only len bytes are read,
 * and bytes that are not printable ASCII are not copied into the message. */
static void test_map_error_raw_body(void **state)
{
    (void)state;
    const struct gw_backend_conf *q = backend("qwen");
    struct gw_error e;
    const char body[] = "Bad GatewayXXXXXXXX";
    q->provider->map_error(q, 502, body, 11, &e);
    assert_string_equal(e.message, "backend qwen failed with status 502: Bad Gateway");

    const char bin[] = {'o', 'k', '\0', '\x01', '\xff', '\xc3', '\xa9', 'z'};
    q->provider->map_error(q, 500, bin, sizeof(bin), &e);
    assert_string_equal(e.message, "backend qwen failed with status 500: ok     z");

    /* a long non-JSON body is cut, and the message stays a C string */
    char big[4096];
    memset(big, 'a', sizeof(big));
    q->provider->map_error(q, 500, big, sizeof(big), &e);
    assert_true(strlen(e.message) < sizeof(e.message));
    assert_true(strlen(e.message) < 300);
    assert_non_null(strstr(e.message, "backend qwen failed with status 500: aaaa"));
}

static bool valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
        if (!n)
            return false;
        for (size_t k = 1; k < n; k++)
            if ((p[k] & 0xc0) != 0x80)
                return false;
        p += n;
    }
    return true;
}

/* The message goes to the client inside a JSON string, which must be UTF-8
 * (RFC 8259 8.1). An upstream message longer than the message buffer is cut,
 * and the cut must not split a multi-byte character. */
static void test_map_error_long_utf8(void **state)
{
    (void)state;
    const struct gw_backend_conf *q = backend("qwen");
    static const int statuses[] = {400, 401, 429, 500};
    for (size_t s = 0; s < GW_ARRAY_LEN(statuses); s++) {
        for (size_t pad = 0; pad < 3; pad++) {
            char body[2048];
            size_t n = (size_t)snprintf(body, sizeof(body), "{\"error\":{\"message\":\"%.*s",
                                        (int)pad, "xx");
            for (int k = 0; k < 400; k++) {
                memcpy(body + n, "\xc3\xa9", 2); /* é */
                n += 2;
            }
            n += (size_t)snprintf(body + n, sizeof(body) - n, "\"}}");
            struct gw_error e;
            q->provider->map_error(q, statuses[s], body, n, &e);
            assert_true(strlen(e.message) > 400);
            if (!valid_utf8(e.message))
                fail_msg("status %d pad %zu: message cut inside a UTF-8 character (%zu bytes)",
                         statuses[s], pad, strlen(e.message));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_error_raw_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_error_long_utf8, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
