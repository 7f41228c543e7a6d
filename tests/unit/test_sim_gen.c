/*
 * test_sim_gen.c - unit tests for request parsing (src/sim/sim_req.c) and
 * everything the simulator writes (src/sim/sim_gen.c): every stream event
 * is parsed back with jansson and checked against PROTOCOLS.md 1.3/1.4,
 * 2.3/2.4 and 4.3/4.4.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../src/sim/sim_out.c"
#include "../../src/sim/sim_rng.c"
#include "../../src/sim/sim_opts.c"
#include "../../src/sim/sim_req.c"
#include "../../src/sim/sim_gen.c"

/* ------------------------------------------------------------ helpers */

static void must_parse(struct sim_req *rq, enum sim_dialect d, const char *body)
{
    struct sim_err e;
    if (sim_req_parse(rq, d, body, strlen(body), false, 7, &e) != 0)
        fail_msg("parse failed: %d %s", e.status, e.msg);
}

static void must_reject(enum sim_dialect d, const char *body, const char *msg_part)
{
    struct sim_req rq;
    struct sim_err e;
    if (sim_req_parse(&rq, d, body, strlen(body), false, 7, &e) == 0)
        fail_msg("accepted: %s", body);
    assert_int_equal(e.status, 400);
    if (!strstr(e.msg, msg_part))
        fail_msg("message '%s' lacks '%s'", e.msg, msg_part);
}

/* One parsed SSE event. */
struct ev {
    char name[32];      /* event: line, "" when absent */
    char data[SIM_EVENT_MAX];
    json_t *json;       /* NULL for [DONE] or non-JSON */
};

/* Split one event written by the generator (exactly one per buffer). */
static void split_event(const char *buf, struct ev *ev)
{
    const char *p = buf;
    ev->name[0] = '\0';
    ev->json = NULL;
    if (strncmp(p, "event: ", 7) == 0) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        snprintf(ev->name, sizeof(ev->name), "%.*s", (int)(nl - p - 7), p + 7);
        p = nl + 1;
    }
    assert_true(strncmp(p, "data: ", 6) == 0);
    p += 6;
    const char *end = strstr(p, "\n\n");
    assert_non_null(end);
    assert_string_equal(end, "\n\n");   /* exactly one event */
    snprintf(ev->data, sizeof(ev->data), "%.*s", (int)(end - p), p);
    assert_null(strchr(ev->data, '\n'));
    if (strcmp(ev->data, "[DONE]") != 0)
        ev->json = json_loads(ev->data, 0, NULL);
}

/* Run a generator to the end, collecting events. Returns the count. */
static size_t run_stream(struct sim_gen *g, struct ev *evs, size_t max, size_t *n_tokens)
{
    char buf[SIM_EVENT_MAX];
    struct sim_out o;
    size_t n = 0;
    *n_tokens = 0;
    for (;;) {
        bool tok = sim_gen_next_is_token(g);
        sim_out_fixed(&o, buf, sizeof(buf));
        enum sim_ev k = sim_gen_next(g, &o);
        if (k == SIM_EV_END)
            break;
        assert_false(o.err);
        assert_int_equal(k == SIM_EV_TOKEN, tok);
        *n_tokens += k == SIM_EV_TOKEN;
        assert_true(n < max);
        split_event(buf, &evs[n++]);
    }
    return n;
}

static void free_events(struct ev *evs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        json_decref(evs[i].json);
}

static const char *jstr(const json_t *o, const char *path)
{
    /* dotted path of object keys and array indexes ("choices.0.delta") */
    char key[64];
    const json_t *cur = o;
    while (*path && cur) {
        const char *dot = strchr(path, '.');
        size_t l = dot ? (size_t)(dot - path) : strlen(path);
        snprintf(key, sizeof(key), "%.*s", (int)l, path);
        if (json_is_array(cur))
            cur = json_array_get(cur, (size_t)atoi(key));
        else
            cur = json_object_get(cur, key);
        path += l + (dot ? 1 : 0);
    }
    return json_is_string(cur) ? json_string_value(cur) : NULL;
}

static const json_t *jget(const json_t *o, const char *path)
{
    char key[64];
    const json_t *cur = o;
    while (*path && cur) {
        const char *dot = strchr(path, '.');
        size_t l = dot ? (size_t)(dot - path) : strlen(path);
        snprintf(key, sizeof(key), "%.*s", (int)l, path);
        cur = json_is_array(cur) ? json_array_get(cur, (size_t)atoi(key))
                                 : json_object_get(cur, key);
        path += l + (dot ? 1 : 0);
    }
    return cur;
}

static long long jint(const json_t *o, const char *path)
{
    const json_t *v = jget(o, path);
    if (!json_is_integer(v))
        fail_msg("%s is not an integer", path);
    return json_integer_value(v);
}

#define EVMAX 256
static struct ev evs[EVMAX];

/* ---------------------------------------------------- request parsing */

static void test_req_openai_basic(void **state)
{
    struct sim_req rq;
    /* 12 chars system + 20 chars user = 32 chars -> 8 tokens, + 4*2 */
    must_parse(&rq, SIM_DIALECT_OPENAI,
               "{\"model\":\"m1\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief ok.\"},"
               "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"abcdefghijklmnopqrst\"}]}]}");
    assert_string_equal(rq.model, "m1");
    assert_false(rq.stream);
    assert_false(rq.include_usage);
    assert_int_equal(rq.max_tokens, -1);
    assert_int_equal(rq.prompt_tokens, 16);
    assert_int_equal(rq.system_tokens, 3 + 4);
    assert_false(rq.cache_hint);
    assert_false(rq.has_tools);

    /* UTF-8 counts code points: 4 x "é" = 4 chars = 1 token, + 4 */
    must_parse(&rq, SIM_DIALECT_OPENAI,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}]}");
    assert_int_equal(rq.prompt_tokens, 5);
}

static void test_req_openai_stream_options(void **state)
{
    struct sim_req rq;
    must_parse(&rq, SIM_DIALECT_OPENAI,
               "{\"model\":\"m\",\"stream\":true,\"stream_options\":{},"
               "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    assert_true(rq.stream);
    assert_true(rq.include_usage);   /* vLLM: object without include_usage = true */
    must_parse(&rq, SIM_DIALECT_OPENAI,
               "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":false},"
               "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    assert_false(rq.include_usage);
    must_parse(&rq, SIM_DIALECT_OPENAI,
               "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    assert_false(rq.include_usage);
    must_reject(SIM_DIALECT_OPENAI,
                "{\"model\":\"m\",\"stream\":false,\"stream_options\":{\"include_usage\":true},"
                "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                "Stream options can only be defined when `stream=True`.");
    must_reject(SIM_DIALECT_OPENAI,
                "{\"model\":\"m\",\"stream_options\":{},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                "stream=True");
}

static void test_req_openai_max_tokens(void **state)
{
    struct sim_req rq;
    must_parse(&rq, SIM_DIALECT_OPENAI, "{\"model\":\"m\",\"max_tokens\":5,\"max_completion_tokens\":3,"
               "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    assert_int_equal(rq.max_tokens, 3);   /* max_completion_tokens wins */
    must_parse(&rq, SIM_DIALECT_OPENAI, "{\"model\":\"m\",\"max_tokens\":5,"
               "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    assert_int_equal(rq.max_tokens, 5);
    must_reject(SIM_DIALECT_OPENAI, "{\"model\":\"m\",\"max_tokens\":0,"
                "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "max_tokens");
    must_reject(SIM_DIALECT_OPENAI, "{\"model\":\"m\",\"max_tokens\":\"5\","
                "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "max_tokens");
}

static void test_req_rejects(void **state)
{
    must_reject(SIM_DIALECT_OPENAI, "not json", "Invalid JSON");
    must_reject(SIM_DIALECT_OPENAI, "[1]", "JSON object");
    must_reject(SIM_DIALECT_OPENAI, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model");
    must_reject(SIM_DIALECT_OPENAI, "{\"model\":\"m\"}", "messages");
    must_reject(SIM_DIALECT_OPENAI, "{\"model\":\"m\",\"messages\":[]}", "messages");
    must_reject(SIM_DIALECT_OPENAI, "{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}", "role");
    must_reject(SIM_DIALECT_OPENAI, "{\"model\":\"m\",\"stream\":1,"
                "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "stream");
    must_reject(SIM_DIALECT_OPENAI, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
                "\"content\":\"[sim:fault=bogus]\"}]}", "fault");
    must_reject(SIM_DIALECT_ANTHROPIC, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                "max_tokens: Field required");
    must_reject(SIM_DIALECT_ANTHROPIC, "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"system\","
                "\"content\":\"x\"}]}", "role");
    must_reject(SIM_DIALECT_ANTHROPIC, "{\"model\":\"m\",\"max_tokens\":-1,\"messages\":[{\"role\":\"user\","
                "\"content\":\"x\"}]}", "max_tokens");
}

static void test_req_directives_only_last_user(void **state)
{
    struct sim_req rq;
    must_parse(&rq, SIM_DIALECT_OPENAI,
               "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"[sim:output_tokens=9]\"},"
               "{\"role\":\"assistant\",\"content\":\"ok\"},"
               "{\"role\":\"user\",\"content\":\"go [sim:ttft_ms=5] [sim:fault=stall@2]\"}]}");
    assert_int_equal(rq.dir.output_tokens, -1);
    assert_int_equal(rq.dir.ttft_ms, 5);
    assert_true(rq.dir.has_fault);
    assert_int_equal(rq.dir.fault.kind, SIM_FAULT_STALL);
    assert_int_equal(rq.dir.fault.at, 2);
}

static void test_req_anthropic(void **state)
{
    struct sim_req rq;
    struct sim_err e;
    const char *b = "{\"model\":\"claude\",\"max_tokens\":0,\"system\":[{\"type\":\"text\","
                    "\"text\":\"sim:cache policy text here\"}],\"messages\":[{\"role\":\"user\","
                    "\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t\",\"content\":\"abcd\"},"
                    "{\"type\":\"text\",\"text\":\"efgh\"}]}]}";
    must_parse(&rq, SIM_DIALECT_ANTHROPIC, b);
    assert_int_equal(rq.max_tokens, 0);
    assert_true(rq.cache_hint);
    /* system 26 chars, messages 8 chars: ceil(34/4)=9 + 2*4 */
    assert_int_equal(rq.prompt_tokens, 17);
    assert_int_equal(rq.system_tokens, 7 + 4);
    /* count_tokens: no max_tokens needed */
    b = "{\"model\":\"claude\",\"messages\":[{\"role\":\"user\",\"content\":\"abcdefgh\"}]}";
    assert_int_equal(sim_req_parse(&rq, SIM_DIALECT_ANTHROPIC, b, strlen(b), true, 0, &e), 0);
    assert_int_equal(rq.prompt_tokens, 6);
}

static void test_req_tools(void **state)
{
    struct sim_req rq;
    must_parse(&rq, SIM_DIALECT_OPENAI,
               "{\"model\":\"m\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
               "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},"
               "\"days\":{\"type\":\"integer\"},\"unit\":{\"type\":\"string\",\"enum\":[\"c\",\"f\"]},"
               "\"exact\":{\"type\":\"boolean\"},\"extra\":{\"type\":\"number\"}}}}}],"
               "\"messages\":[{\"role\":\"user\",\"content\":\"weather? sim:tool_call\"}]}");
    assert_true(rq.has_tools);
    assert_true(rq.dir.tool_call);
    assert_string_equal(rq.tool_name, "get_weather");
    json_t *a = json_loads(rq.tool_args, 0, NULL);
    assert_non_null(a);
    assert_int_equal(json_object_size(a), 4);   /* at most four properties */
    assert_true(json_is_string(json_object_get(a, "city")));
    assert_true(json_is_integer(json_object_get(a, "days")));
    assert_string_equal(json_string_value(json_object_get(a, "unit")), "c");
    assert_true(json_is_boolean(json_object_get(a, "exact")));
    json_decref(a);

    /* no schema -> "{}"; tool_choice none -> no tools */
    must_parse(&rq, SIM_DIALECT_ANTHROPIC, "{\"model\":\"m\",\"max_tokens\":9,\"tools\":[{\"name\":\"t\"}],"
               "\"messages\":[{\"role\":\"user\",\"content\":\"sim:tool_call\"}]}");
    assert_string_equal(rq.tool_args, "{}");
    must_parse(&rq, SIM_DIALECT_ANTHROPIC, "{\"model\":\"m\",\"max_tokens\":9,\"tools\":[{\"name\":\"t\"}],"
               "\"tool_choice\":{\"type\":\"none\"},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    assert_false(rq.has_tools);

    /* huge property names never overflow and the result stays JSON */
    char body[4096], big[300];
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    snprintf(body, sizeof(body), "{\"model\":\"m\",\"tools\":[{\"type\":\"function\",\"function\":"
             "{\"name\":\"f\",\"parameters\":{\"properties\":{\"%s1\":{},\"%s2\":{}}}}}],"
             "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", big, big);
    must_parse(&rq, SIM_DIALECT_OPENAI, body);
    a = json_loads(rq.tool_args, 0, NULL);
    assert_non_null(a);
    assert_int_equal(json_object_size(a), 1);
    json_decref(a);
}

static void test_req_check_len(void **state)
{
    struct sim_req rq;
    struct sim_err e;
    must_parse(&rq, SIM_DIALECT_OPENAI, "{\"model\":\"m\",\"max_tokens\":100,"
               "\"messages\":[{\"role\":\"user\",\"content\":\"abcdefgh\"}]}");
    assert_int_equal(rq.prompt_tokens, 6);
    assert_int_equal(sim_req_check_len(&rq, 106, &e), 0);
    assert_int_equal(sim_req_check_len(&rq, 105, &e), -1);
    assert_non_null(strstr(e.msg, "This model's maximum context length is 105 tokens and your request has 6 input tokens (100 > 105 - 6)."));
    assert_string_equal(e.param, "max_tokens");
    assert_int_equal(sim_req_check_len(&rq, 5, &e), -1);
    assert_true(strncmp(e.msg, "This model's maximum context length is 5 tokens.", 48) == 0);
    rq.dialect = SIM_DIALECT_ANTHROPIC;
    assert_int_equal(sim_req_check_len(&rq, 5, &e), -1);
    assert_string_equal(e.msg, "prompt is too long: 6 tokens > 5 maximum");
}

/* ------------------------------------------------------- OpenAI output */

static void check_openai_stream(const char *body, uint32_t out_tokens, const char *finish,
                                bool usage, uint32_t want_completion)
{
    struct sim_req rq;
    struct sim_gen g;
    size_t ntok, n, i;
    must_parse(&rq, SIM_DIALECT_OPENAI, body);
    sim_gen_init(&g, &rq, out_tokens, 1, 1, 1755000000);
    n = run_stream(&g, evs, EVMAX, &ntok);
    assert_int_equal(ntok, want_completion);
    /* role, tokens, finish, [usage], DONE */
    assert_int_equal(n, 1 + ntok + 1 + (usage ? 1 : 0) + 1);
    for (i = 0; i + 1 < n; i++) {
        json_t *j = evs[i].json;
        assert_string_equal(evs[i].name, "");   /* never event: lines */
        if (!j)
            fail_msg("event %zu not JSON: %s", i, evs[i].data);
        assert_string_equal(jstr(j, "id"), g.id);
        assert_string_equal(jstr(j, "object"), "chat.completion.chunk");
        assert_int_equal(jint(j, "created"), 1755000000);
        assert_string_equal(jstr(j, "model"), rq.model);
        if (usage)
            assert_non_null(json_object_get(j, "usage"));
        else
            assert_null(json_object_get(j, "usage"));
    }
    assert_string_equal(evs[n - 1].data, "[DONE]");
    assert_string_equal(jstr(evs[0].json, "choices.0.delta.role"), "assistant");
    assert_string_equal(jstr(evs[0].json, "choices.0.delta.content"), "");
    assert_true(json_is_null(jget(evs[0].json, "choices.0.finish_reason")));
    const json_t *fin = evs[ntok + 1].json;
    assert_string_equal(jstr(fin, "choices.0.finish_reason"), finish);
    assert_int_equal(json_object_size(jget(fin, "choices.0.delta")), 0);
    if (usage) {
        const json_t *u = evs[ntok + 2].json;
        assert_int_equal(json_array_size(jget(u, "choices")), 0);
        assert_int_equal(jint(u, "usage.prompt_tokens"), rq.prompt_tokens);
        assert_int_equal(jint(u, "usage.completion_tokens"), want_completion);
        assert_int_equal(jint(u, "usage.total_tokens"), rq.prompt_tokens + want_completion);
        assert_true(json_is_null(jget(fin, "usage")));
    }
    free_events(evs, n);
}

static void test_openai_stream_text(void **state)
{
    check_openai_stream("{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 5, "stop", true, 5);
    check_openai_stream("{\"model\":\"m\",\"stream\":true,"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 5, "stop", false, 5);
    check_openai_stream("{\"model\":\"m\",\"stream\":true,\"max_tokens\":3,\"stream_options\":{},"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 5, "length", true, 3);
    check_openai_stream("{\"model\":\"m\",\"stream\":true,\"max_tokens\":5,"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 5, "stop", false, 5);
    check_openai_stream("{\"model\":\"m\",\"stream\":true,\"stream_options\":{},"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"[sim:output_tokens=0]\"}]}",
                        5, "stop", true, 0);
    check_openai_stream("{\"model\":\"we\\\"ird\",\"stream\":true,"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"[sim:output_tokens=2]\"}]}",
                        5, "stop", false, 2);
}

static void test_openai_stream_tool(void **state)
{
    struct sim_req rq;
    struct sim_gen g;
    size_t ntok, n, i;
    char args[SIM_TOOL_ARGS_MAX] = "";
    must_parse(&rq, SIM_DIALECT_OPENAI,
               "{\"model\":\"m\",\"stream\":true,\"stream_options\":{},\"tools\":[{\"type\":\"function\","
               "\"function\":{\"name\":\"lookup\",\"parameters\":{\"properties\":{\"q\":{\"type\":\"string\"},"
               "\"n\":{\"type\":\"integer\"}}}}}],"
               "\"messages\":[{\"role\":\"user\",\"content\":\"find sim:tool_call\"}]}");
    sim_gen_init(&g, &rq, 16, 3, 42, 1);
    n = run_stream(&g, evs, EVMAX, &ntok);
    assert_int_equal(ntok, sim_gen_completion_tokens(&g));
    assert_true(ntok >= 2);
    const json_t *first = evs[1].json;
    assert_string_equal(jstr(first, "choices.0.delta.tool_calls.0.id"), "call_42");
    assert_string_equal(jstr(first, "choices.0.delta.tool_calls.0.type"), "function");
    assert_string_equal(jstr(first, "choices.0.delta.tool_calls.0.function.name"), "lookup");
    assert_string_equal(jstr(first, "choices.0.delta.tool_calls.0.function.arguments"), "");
    assert_int_equal(jint(first, "choices.0.delta.tool_calls.0.index"), 0);
    for (i = 2; i < 1 + ntok; i++) {
        const json_t *tc = jget(evs[i].json, "choices.0.delta.tool_calls.0");
        assert_null(json_object_get(tc, "id"));
        assert_null(jget(tc, "function.name"));
        assert_int_equal(jint(tc, "index"), 0);
        strcat(args, jstr(tc, "function.arguments"));
    }
    assert_string_equal(args, rq.tool_args);
    assert_string_equal(jstr(evs[ntok + 1].json, "choices.0.finish_reason"), "tool_calls");
    assert_int_equal(jint(evs[ntok + 2].json, "usage.completion_tokens"), ntok);
    free_events(evs, n);
}

static void test_openai_body(void **state)
{
    struct sim_req rq;
    struct sim_gen g, g2;
    struct sim_out o;
    size_t ntok, n;
    must_parse(&rq, SIM_DIALECT_OPENAI,
               "{\"model\":\"m\",\"max_tokens\":4,\"messages\":[{\"role\":\"system\",\"content\":"
               "\"sim:cache me\"},{\"role\":\"user\",\"content\":\"hello there\"}]}");
    sim_gen_init(&g, &rq, 10, 5, 1, 99);
    sim_out_heap(&o, 1 << 20);
    sim_gen_body(&g, &o);
    assert_false(o.err);
    json_t *j = json_loads(o.p, 0, NULL);
    assert_non_null(j);
    assert_string_equal(jstr(j, "object"), "chat.completion");
    assert_string_equal(jstr(j, "choices.0.message.role"), "assistant");
    assert_string_equal(jstr(j, "choices.0.finish_reason"), "length");
    assert_true(json_is_null(jget(j, "choices.0.logprobs")));
    assert_int_equal(jint(j, "usage.completion_tokens"), 4);
    assert_int_equal(jint(j, "usage.total_tokens"), rq.prompt_tokens + 4);
    assert_int_equal(jint(j, "usage.prompt_tokens_details.cached_tokens"), rq.system_tokens);
    /* same text as the stream of an identical request */
    const char *text = jstr(j, "choices.0.message.content");
    char joined[1024] = "";
    rq.stream = true;
    sim_gen_init(&g2, &rq, 10, 5, 1, 99);
    n = run_stream(&g2, evs, EVMAX, &ntok);
    for (size_t i = 1; i <= ntok; i++)
        strcat(joined, jstr(evs[i].json, "choices.0.delta.content"));
    assert_string_equal(joined, text);
    free_events(evs, n);
    json_decref(j);
    sim_out_free(&o);
}

static void text_for(const char *body, uint64_t seed, char *out, size_t outlen)
{
    struct sim_req rq;
    struct sim_gen g;
    struct sim_out o;
    must_parse(&rq, SIM_DIALECT_OPENAI, body);
    sim_gen_init(&g, &rq, 12, seed, 1, 1);
    sim_out_fixed(&o, out, outlen);
    sim_gen_body(&g, &o);
    assert_false(o.err);
}

static void test_determinism(void **state)
{
    char a[2048], b[2048], c[2048], d[2048];
    const char *r1 = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"one\"}]}";
    const char *r2 = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"two\"}]}";
    text_for(r1, 1, a, sizeof(a));
    text_for(r1, 1, b, sizeof(b));
    text_for(r1, 2, c, sizeof(c));
    text_for(r2, 1, d, sizeof(d));
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_string_not_equal(a, d);
}

/* ---------------------------------------------------- Anthropic output */

static void check_anthropic_names(struct ev *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!e[i].json)
            fail_msg("event %zu not JSON: %s", i, e[i].data);
        assert_true(e[i].name[0] != '\0');
        assert_string_equal(jstr(e[i].json, "type"), e[i].name);
    }
}

static void test_anthropic_stream_text(void **state)
{
    struct sim_req rq;
    struct sim_gen g;
    size_t ntok, n, i;
    must_parse(&rq, SIM_DIALECT_ANTHROPIC,
               "{\"model\":\"claude-x\",\"max_tokens\":3,\"stream\":true,\"system\":\"sim:cache abc\","
               "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    sim_gen_init(&g, &rq, 8, 1, 1, 1);
    n = run_stream(&g, evs, EVMAX, &ntok);
    assert_int_equal(ntok, 3);
    check_anthropic_names(evs, n);
    static const char *const want[] = {
        "message_start", "content_block_start", "ping", "content_block_delta",
        "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    };
    assert_int_equal(n, sizeof(want) / sizeof(want[0]));
    for (i = 0; i < n; i++)
        assert_string_equal(evs[i].name, want[i]);
    const json_t *ms = evs[0].json;
    assert_string_equal(jstr(ms, "message.id"), g.id);
    assert_true(strncmp(g.id, "msg_", 4) == 0);
    assert_string_equal(jstr(ms, "message.model"), "claude-x");
    assert_string_equal(jstr(ms, "message.role"), "assistant");
    assert_true(json_is_null(jget(ms, "message.stop_reason")));
    assert_int_equal(json_array_size(jget(ms, "message.content")), 0);
    assert_int_equal(jint(ms, "message.usage.cache_read_input_tokens"), rq.system_tokens);
    assert_int_equal(jint(ms, "message.usage.input_tokens"), rq.prompt_tokens - rq.system_tokens);
    assert_int_equal(jint(ms, "message.usage.cache_creation_input_tokens"), 0);
    assert_string_equal(jstr(evs[1].json, "content_block.type"), "text");
    assert_string_equal(jstr(evs[3].json, "delta.type"), "text_delta");
    assert_int_equal(jint(evs[3].json, "index"), 0);
    assert_string_equal(jstr(evs[7].json, "delta.stop_reason"), "max_tokens");
    assert_int_equal(jint(evs[7].json, "usage.output_tokens"), 3);
    free_events(evs, n);
}

static void test_anthropic_stream_tool(void **state)
{
    struct sim_req rq;
    struct sim_gen g;
    size_t ntok, n, i;
    char args[SIM_TOOL_ARGS_MAX] = "";
    must_parse(&rq, SIM_DIALECT_ANTHROPIC,
               "{\"model\":\"c\",\"max_tokens\":100,\"stream\":true,\"tools\":[{\"name\":\"get_weather\","
               "\"input_schema\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}}],"
               "\"messages\":[{\"role\":\"user\",\"content\":\"[sim:tool_call]\"}]}");
    sim_gen_init(&g, &rq, 8, 1, 77, 1);
    n = run_stream(&g, evs, EVMAX, &ntok);
    check_anthropic_names(evs, n);
    const json_t *bs = evs[1].json;
    assert_string_equal(jstr(bs, "content_block.type"), "tool_use");
    assert_string_equal(jstr(bs, "content_block.id"), "toolu_77");
    assert_string_equal(jstr(bs, "content_block.name"), "get_weather");
    assert_int_equal(json_object_size(jget(bs, "content_block.input")), 0);
    assert_string_equal(jstr(evs[3].json, "delta.partial_json"), "");
    for (i = 3; i < 3 + ntok; i++) {
        assert_string_equal(jstr(evs[i].json, "delta.type"), "input_json_delta");
        strcat(args, jstr(evs[i].json, "delta.partial_json"));
    }
    json_t *a = json_loads(args, 0, NULL);
    assert_non_null(a);
    assert_true(json_is_string(json_object_get(a, "city")));
    json_decref(a);
    assert_string_equal(jstr(evs[n - 2].json, "delta.stop_reason"), "tool_use");
    free_events(evs, n);
}

static void test_anthropic_body(void **state)
{
    struct sim_req rq;
    struct sim_gen g;
    struct sim_out o;
    must_parse(&rq, SIM_DIALECT_ANTHROPIC,
               "{\"model\":\"c\",\"max_tokens\":100,\"tools\":[{\"name\":\"t\",\"input_schema\":"
               "{\"properties\":{\"x\":{\"type\":\"integer\"}}}}],"
               "\"messages\":[{\"role\":\"user\",\"content\":\"sim:tool_call\"}]}");
    sim_gen_init(&g, &rq, 8, 1, 5, 1);
    sim_out_heap(&o, 1 << 16);
    sim_gen_body(&g, &o);
    json_t *j = json_loads(o.p, 0, NULL);
    assert_non_null(j);
    assert_string_equal(jstr(j, "type"), "message");
    assert_string_equal(jstr(j, "content.0.type"), "tool_use");
    assert_string_equal(jstr(j, "content.0.id"), "toolu_5");
    assert_true(json_is_integer(jget(j, "content.0.input.x")));
    assert_string_equal(jstr(j, "stop_reason"), "tool_use");
    assert_true(json_is_null(jget(j, "stop_sequence")));
    assert_int_equal(jint(j, "usage.cache_read_input_tokens"), 0);
    json_decref(j);

    /* text, no tools */
    must_parse(&rq, SIM_DIALECT_ANTHROPIC, "{\"model\":\"c\",\"max_tokens\":100,"
               "\"messages\":[{\"role\":\"user\",\"content\":\"sim:tool_call\"}]}");
    sim_gen_init(&g, &rq, 8, 1, 5, 1);
    sim_out_reset(&o);
    sim_gen_body(&g, &o);
    j = json_loads(o.p, 0, NULL);
    assert_string_equal(jstr(j, "content.0.type"), "text");
    assert_string_equal(jstr(j, "stop_reason"), "end_turn");
    assert_int_equal(jint(j, "usage.output_tokens"), 8);
    json_decref(j);
    sim_out_free(&o);
}

/* -------------------------------------------------------- errors, misc */

static void test_error_bodies(void **state)
{
    char buf[1024];
    struct sim_out o;
    json_t *j;

    sim_out_fixed(&o, buf, sizeof(buf));
    sim_gen_error_body(&o, SIM_DIALECT_OPENAI, SIM_ERROR_NESTED, 404,
                       "The model `x` does not exist.", "model", NULL);
    j = json_loads(buf, 0, NULL);
    assert_string_equal(jstr(j, "error.type"), "NotFoundError");
    assert_string_equal(jstr(j, "error.param"), "model");
    assert_int_equal(jint(j, "error.code"), 404);
    assert_string_equal(jstr(j, "error.message"), "The model `x` does not exist.");
    json_decref(j);

    sim_out_reset(&o);
    sim_gen_error_body(&o, SIM_DIALECT_OPENAI, SIM_ERROR_FLAT, 400, "bad", NULL, NULL);
    j = json_loads(buf, 0, NULL);
    assert_string_equal(jstr(j, "object"), "error");
    assert_string_equal(jstr(j, "type"), "BadRequestError");
    assert_true(json_is_null(json_object_get(j, "param")));
    assert_int_equal(jint(j, "code"), 400);
    json_decref(j);

    sim_out_reset(&o);
    sim_gen_error_body(&o, SIM_DIALECT_OPENAI, SIM_ERROR_OPENAI, 429, NULL, NULL, NULL);
    j = json_loads(buf, 0, NULL);
    assert_string_equal(jstr(j, "error.code"), "rate_limit_exceeded");
    json_decref(j);

    sim_out_reset(&o);
    sim_gen_error_body(&o, SIM_DIALECT_ANTHROPIC, SIM_ERROR_NESTED, 529, NULL, NULL, "req_1");
    j = json_loads(buf, 0, NULL);
    assert_string_equal(jstr(j, "type"), "error");
    assert_string_equal(jstr(j, "error.type"), "overloaded_error");
    assert_string_equal(jstr(j, "error.message"), "Overloaded");
    assert_string_equal(jstr(j, "request_id"), "req_1");
    json_decref(j);

    static const struct { int status; const char *type; } an[] = {
        {400, "invalid_request_error"}, {401, "authentication_error"}, {403, "permission_error"},
        {404, "not_found_error"}, {413, "request_too_large"}, {429, "rate_limit_error"},
        {500, "api_error"}, {504, "timeout_error"}, {529, "overloaded_error"}, {422, "invalid_request_error"},
    };
    for (size_t i = 0; i < sizeof(an) / sizeof(an[0]); i++)
        assert_string_equal(sim_anthropic_error_type(an[i].status), an[i].type);
}

static void test_error_and_malformed_events(void **state)
{
    struct sim_req rq;
    struct sim_gen g;
    char buf[SIM_EVENT_MAX];
    struct sim_out o;
    struct ev e;

    must_parse(&rq, SIM_DIALECT_ANTHROPIC, "{\"model\":\"c\",\"max_tokens\":5,\"stream\":true,"
               "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    sim_gen_init(&g, &rq, 8, 1, 1, 1);
    sim_out_fixed(&o, buf, sizeof(buf));
    sim_gen_error_event(&g, 0, SIM_ERROR_NESTED, &o);
    split_event(buf, &e);
    assert_string_equal(e.name, "error");
    assert_string_equal(jstr(e.json, "error.type"), "overloaded_error");
    json_decref(e.json);

    sim_out_reset(&o);
    sim_gen_malformed_event(&g, &o);
    split_event(buf, &e);
    assert_null(e.json);

    must_parse(&rq, SIM_DIALECT_OPENAI, "{\"model\":\"m\",\"stream\":true,"
               "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}");
    sim_gen_init(&g, &rq, 8, 1, 1, 1);
    sim_out_reset(&o);
    sim_gen_error_event(&g, 0, SIM_ERROR_FLAT, &o);
    /* data: {"error":...}\n\n data: [DONE]\n\n */
    char *second = strstr(buf, "\n\ndata: [DONE]\n\n");
    assert_non_null(second);
    second[2] = '\0';
    split_event(buf, &e);
    assert_int_equal(jint(e.json, "error.code"), 500);
    assert_string_equal(jstr(e.json, "error.type"), "InternalServerError");
    json_decref(e.json);

    sim_out_reset(&o);
    sim_gen_malformed_event(&g, &o);
    split_event(buf, &e);
    assert_null(e.json);
}

static void test_models(void **state)
{
    static const char *const models[] = {"a", "b"};
    char buf[4096];
    struct sim_out o;
    sim_out_fixed(&o, buf, sizeof(buf));
    sim_gen_models(&o, models, 2, 4096, 7, false);
    json_t *j = json_loads(buf, 0, NULL);
    assert_non_null(j);
    assert_string_equal(jstr(j, "object"), "list");
    assert_int_equal(json_array_size(jget(j, "data")), 2);
    assert_string_equal(jstr(j, "data.1.id"), "b");
    assert_string_equal(jstr(j, "data.0.object"), "model");
    assert_string_equal(jstr(j, "data.0.owned_by"), "vllm");
    assert_int_equal(jint(j, "data.0.max_model_len"), 4096);
    assert_int_equal(jint(j, "data.0.created"), 7);
    json_decref(j);

    sim_out_reset(&o);
    sim_gen_models(&o, models, 2, 4096, 7, true);
    j = json_loads(buf, 0, NULL);
    assert_string_equal(jstr(j, "data.0.type"), "model");
    assert_string_equal(jstr(j, "last_id"), "b");
    assert_true(json_is_false(json_object_get(j, "has_more")));
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_req_openai_basic),
        cmocka_unit_test(test_req_openai_stream_options),
        cmocka_unit_test(test_req_openai_max_tokens),
        cmocka_unit_test(test_req_rejects),
        cmocka_unit_test(test_req_directives_only_last_user),
        cmocka_unit_test(test_req_anthropic),
        cmocka_unit_test(test_req_tools),
        cmocka_unit_test(test_req_check_len),
        cmocka_unit_test(test_openai_stream_text),
        cmocka_unit_test(test_openai_stream_tool),
        cmocka_unit_test(test_openai_body),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_anthropic_stream_text),
        cmocka_unit_test(test_anthropic_stream_tool),
        cmocka_unit_test(test_anthropic_body),
        cmocka_unit_test(test_error_bodies),
        cmocka_unit_test(test_error_and_malformed_events),
        cmocka_unit_test(test_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
