/*
 * test_translate.c - golden tests for the OpenAI <-> Anthropic translators
 * (src/translate/, contract in src/translate/translate.h).
 *
 * Every tests/golden/translate/<case>.json is one cmocka test. A case is
 *   {"description": "...", "kind": K, "input": ..., "expected": ...,
 *    "opts": {...}, "model": "...", "include_usage": bool,
 *    "finish": null | "error text", "expected_error": {...},
 *    "expected_usage": {...}}
 * with K one of
 *   req_openai_to_anthropic, req_anthropic_to_openai   (opts: model,
 *       default_max_tokens, stream)
 *   resp_anthropic_to_openai, resp_openai_to_anthropic (model)
 *   stream_anthropic_to_openai, stream_openai_to_anthropic (model,
 *       include_usage; input is a list of {"event"?, "data"}: data given as
 *       JSON is fed compact, data given as a string is fed verbatim; after
 *       the list gw_xstream_finish(finish) is called; expected is the exact
 *       list of emitted {"event": name-or-null, "data": JSON or "[DONE]"})
 *   error_body        (input {status, message} -> expected body JSON)
 *   error_to_openai   (input {status, body: JSON or string} -> expected
 *                      {status, type, message})
 * expected_error ({status, type, param, message}: message is a substring)
 * replaces expected for inputs that must be refused. expected_usage checks
 * the struct gw_usage a response or stream reported. Outputs are compared
 * with json_equal; a mismatch prints each differing path.
 *
 * A few table-free tests follow: callback stop codes, input after the end,
 * malformed events, helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translate/translate.h"

#define FIXED_CLOCK 1755000000

static char golden_dir[4096];

/* ------------------------------------------------------------------ */
/* readable diffs                                                      */

static void show(const char *label, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    print_message("      %s %s\n", label, s ? s : "(absent)");
    free(s);
}

/* Print every path where want and got differ; returns the count. */
static int diff(const char *path, json_t *want, json_t *got)
{
    char sub[1024];
    if (json_equal(want, got))
        return 0;
    if (json_is_object(want) && json_is_object(got)) {
        int n = 0;
        const char *k;
        json_t *v;
        json_object_foreach(want, k, v) {
            snprintf(sub, sizeof(sub), "%s.%s", path, k);
            n += diff(sub, v, json_object_get(got, k));
        }
        json_object_foreach(got, k, v) {
            if (!json_object_get(want, k)) {
                snprintf(sub, sizeof(sub), "%s.%s", path, k);
                n += diff(sub, NULL, v);
            }
        }
        return n;
    }
    if (json_is_array(want) && json_is_array(got)) {
        int n = 0;
        size_t nw = json_array_size(want), ng = json_array_size(got);
        for (size_t i = 0; i < (nw > ng ? nw : ng); i++) {
            snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
            n += diff(sub, json_array_get(want, i), json_array_get(got, i));
        }
        return n;
    }
    print_message("    at %s\n", path);
    show("expected:", want);
    show("actual:  ", got);
    return 1;
}

static void expect_json(json_t *want, json_t *got)
{
    if (diff("$", want, got)) {
        show("whole actual:", got);
        fail_msg("output differs from the golden file");
    }
}

/* ------------------------------------------------------------------ */
/* running one case                                                    */

static void check_error(json_t *c, const struct gw_xlate_err *err)
{
    json_t *want = json_object_get(c, "expected_error");
    if (!want) {
        print_message("    unexpected error %d %s (%s): %s\n", err->status, err->type,
                      err->param ? err->param : "-", err->message);
        fail_msg("translation failed");
    }
    assert_int_equal(json_integer_value(json_object_get(want, "status")), err->status);
    const char *type = json_string_value(json_object_get(want, "type"));
    if (type)
        assert_string_equal(type, err->type);
    json_t *param = json_object_get(want, "param");
    if (json_is_string(param)) {
        assert_non_null(err->param);
        assert_string_equal(json_string_value(param), err->param);
    } else if (json_is_null(param)) {
        assert_null(err->param);
    }
    const char *msg = json_string_value(json_object_get(want, "message"));
    if (msg && !strstr(err->message, msg)) {
        print_message("    message \"%s\" lacks \"%s\"\n", err->message, msg);
        fail_msg("error message");
    }
    assert_non_null(memchr(err->message, '\0', sizeof(err->message)));
}

static void check_usage(json_t *c, const struct gw_usage *u)
{
    json_t *want = json_object_get(c, "expected_usage");
    if (!want)
        return;
    json_t *got = json_pack("{s:I, s:I, s:I, s:I, s:b}", "prompt_tokens", (json_int_t)u->prompt_tokens,
                            "completion_tokens", (json_int_t)u->completion_tokens, "cached_tokens",
                            (json_int_t)u->cached_tokens, "cache_write_tokens",
                            (json_int_t)u->cache_write_tokens, "reported", u->reported);
    /* compare only the keys the fixture names */
    json_t *sub = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(want, k, v)
        json_object_set(sub, k, json_object_get(got, k));
    if (diff("usage", want, sub))
        fail_msg("usage differs");
    json_decref(sub);
    json_decref(got);
}

static void run_request(json_t *c, const char *kind)
{
    json_t *jo = json_object_get(c, "opts");
    struct gw_xlate_opts o = {
        .model = json_string_value(json_object_get(jo, "model")),
        .default_max_tokens = json_integer_value(json_object_get(jo, "default_max_tokens")),
        .stream = json_is_true(json_object_get(jo, "stream")),
    };
    struct gw_xlate_err err = {0};
    json_t *in = json_object_get(c, "input");
    json_t *before = json_deep_copy(in);
    json_t *out = strcmp(kind, "req_openai_to_anthropic") == 0
                      ? gw_xlate_req_openai_to_anthropic(in, &o, &err)
                      : gw_xlate_req_anthropic_to_openai(in, &o, &err);
    assert_true(json_equal(before, in)); /* the input is not modified */
    json_decref(before);
    if (!out) {
        check_error(c, &err);
        return;
    }
    if (json_object_get(c, "expected_error"))
        fail_msg("expected an error, got a translation");
    expect_json(json_object_get(c, "expected"), out);
    json_decref(out);
}

static void run_response(json_t *c, const char *kind)
{
    struct gw_xlate_err err = {0};
    struct gw_usage u;
    gw_usage_init(&u);
    const char *model = json_string_value(json_object_get(c, "model"));
    json_t *in = json_object_get(c, "input");
    json_t *out = strcmp(kind, "resp_anthropic_to_openai") == 0
                      ? gw_xlate_resp_anthropic_to_openai(in, model, &u, &err)
                      : gw_xlate_resp_openai_to_anthropic(in, model, &u, &err);
    if (!out) {
        check_error(c, &err);
        return;
    }
    if (json_object_get(c, "expected_error"))
        fail_msg("expected an error, got a translation");
    expect_json(json_object_get(c, "expected"), out);
    check_usage(c, &u);
    json_decref(out);
}

struct emitted {
    json_t *list;   /* [{event, data}] */
};

static int on_emit(void *ud, const char *event, const char *data, size_t len)
{
    struct emitted *e = ud;
    assert_int_equal(strlen(data), len);
    assert_null(memchr(data, '\n', len)); /* one line of data */
    json_t *d;
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        d = json_string("[DONE]");
    } else {
        json_error_t jerr;
        d = json_loadb(data, len, 0, &jerr);
        if (!d) {
            print_message("    emitted invalid JSON: %.*s\n", (int)len, data);
            fail_msg("invalid JSON emitted");
        }
    }
    json_array_append_new(e->list, json_pack("{s:o, s:o}", "event",
                                             event ? json_string(event) : json_null(), "data", d));
    return 0;
}

static void run_stream(json_t *c, const char *kind)
{
    enum gw_xstream_dir dir = strcmp(kind, "stream_anthropic_to_openai") == 0
                                  ? GW_XSTREAM_ANTHROPIC_TO_OPENAI
                                  : GW_XSTREAM_OPENAI_TO_ANTHROPIC;
    struct gw_xstream *x = gw_xstream_new(dir, json_string_value(json_object_get(c, "model")),
                                          json_is_true(json_object_get(c, "include_usage")));
    struct emitted e = {json_array()};
    size_t i;
    json_t *ev;
    json_t *rcs = json_object_get(c, "feed_rc"); /* optional expected return codes */
    json_array_foreach(json_object_get(c, "input"), i, ev) {
        json_t *name = json_object_get(ev, "event");
        json_t *data = json_object_get(ev, "data");
        char *s = json_is_string(data) ? strdup(json_string_value(data))
                                       : json_dumps(data, JSON_COMPACT);
        int rc = gw_xstream_feed(x, gw_str_c(json_string_value(name)), gw_str_c(s), on_emit, &e);
        json_t *want_rc = json_array_get(rcs, i);
        assert_int_equal(want_rc ? json_integer_value(want_rc) : 0, rc);
        free(s);
    }
    json_t *fin = json_object_get(c, "finish");
    if (!json_is_false(fin))
        assert_int_equal(0, gw_xstream_finish(x, json_string_value(fin), on_emit, &e));
    json_t *done = json_object_get(c, "expected_done");
    if (json_is_boolean(done))
        assert_int_equal(json_is_true(done), gw_xstream_done(x));
    expect_json(json_object_get(c, "expected"), e.list);
    struct gw_usage u;
    gw_xstream_usage(x, &u);
    check_usage(c, &u);
    json_decref(e.list);
    gw_xstream_free(x);
}

static void run_error(json_t *c, const char *kind)
{
    json_t *in = json_object_get(c, "input");
    int status = (int)json_integer_value(json_object_get(in, "status"));
    if (strcmp(kind, "error_body") == 0) {
        char *s = gw_xlate_anthropic_error_body(status,
                                                json_string_value(json_object_get(in, "message")));
        json_t *got = json_loads(s, 0, NULL);
        assert_non_null(got);
        expect_json(json_object_get(c, "expected"), got);
        json_decref(got);
        free(s);
        return;
    }
    json_t *body = json_object_get(in, "body");
    char *s = json_is_string(body) ? strdup(json_string_value(body))
                                   : (body ? json_dumps(body, JSON_COMPACT) : NULL);
    struct gw_xlate_err err = {0};
    gw_xlate_anthropic_error_to_openai(status, s, s ? strlen(s) : 0, &err);
    free(s);
    json_t *got = json_pack("{s:i, s:s, s:s}", "status", err.status, "type", err.type, "message",
                            err.message);
    expect_json(json_object_get(c, "expected"), got);
    json_decref(got);
}

static void test_golden(void **state)
{
    const char *path = *state;
    json_error_t jerr;
    json_t *c = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!c)
        fail_msg("%s:%d: %s", path, jerr.line, jerr.text);
    const char *kind = json_string_value(json_object_get(c, "kind"));
    assert_non_null(kind);
    if (strncmp(kind, "req_", 4) == 0)
        run_request(c, kind);
    else if (strncmp(kind, "resp_", 5) == 0)
        run_response(c, kind);
    else if (strncmp(kind, "stream_", 7) == 0)
        run_stream(c, kind);
    else if (strncmp(kind, "error_", 6) == 0)
        run_error(c, kind);
    else
        fail_msg("unknown kind %s", kind);
    json_decref(c);
}

/* ------------------------------------------------------------------ */
/* table-free tests                                                    */

static int stop_after_one(void *ud, const char *event, const char *data, size_t len)
{
    int *n = ud;
    (*n)++;
    return 7;
}

static void test_callback_stop(void **state)
{
    int n = 0;
    struct gw_xstream *x = gw_xstream_new(GW_XSTREAM_OPENAI_TO_ANTHROPIC, "m", false);
    const char *chunk = "{\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}";
    assert_int_equal(7, gw_xstream_feed(x, GW_STR_NULL, gw_str_c(chunk), stop_after_one, &n));
    assert_int_equal(1, n);
    gw_xstream_free(x);
}

static int count(void *ud, const char *event, const char *data, size_t len)
{
    int *n = ud;
    (*n)++;
    return 0;
}

static void test_malformed_and_after_end(void **state)
{
    int n = 0;
    struct gw_xstream *x = gw_xstream_new(GW_XSTREAM_ANTHROPIC_TO_OPENAI, "m", true);
    assert_int_equal(GW_EPARSE, gw_xstream_feed(x, GW_STR("message_start"), GW_STR("{nope"),
                                                count, &n));
    assert_int_equal(GW_EPARSE, gw_xstream_feed(x, GW_STR("ping"), GW_STR("[1]"), count, &n));
    assert_int_equal(0, n);
    assert_false(gw_xstream_done(x));
    assert_int_equal(0, gw_xstream_feed(x, GW_STR("message_stop"),
                                        GW_STR("{\"type\":\"message_stop\"}"), count, &n));
    assert_true(gw_xstream_done(x));
    int after = n;
    assert_int_equal(0, gw_xstream_feed(x, GW_STR("message_start"), GW_STR("{}"), count, &n));
    assert_int_equal(0, gw_xstream_finish(x, "late error", count, &n));
    assert_int_equal(after, n); /* nothing after the end */
    gw_xstream_free(x);

    /* OpenAI side: finish twice closes once */
    n = 0;
    x = gw_xstream_new(GW_XSTREAM_OPENAI_TO_ANTHROPIC, NULL, false);
    assert_int_equal(0, gw_xstream_finish(x, NULL, count, &n));
    assert_int_equal(4, n); /* message_start, ping, message_delta, message_stop */
    assert_int_equal(0, gw_xstream_finish(x, NULL, count, &n));
    assert_int_equal(4, n);
    gw_xstream_free(x);
    gw_xstream_free(NULL);
}

static void test_helpers(void **state)
{
    assert_string_equal("stop", gw_xlate_finish_reason(NULL));
    assert_string_equal("length", gw_xlate_finish_reason("model_context_window_exceeded"));
    assert_string_equal("stop", gw_xlate_finish_reason("pause_turn"));
    assert_string_equal("end_turn", gw_xlate_stop_reason("weird"));
    assert_string_equal("tool_use", gw_xlate_stop_reason("function_call"));
    assert_string_equal("overloaded_error", gw_xlate_anthropic_error_type(529));
    assert_string_equal("api_error", gw_xlate_anthropic_error_type(502));
    assert_string_equal("invalid_request_error", gw_xlate_anthropic_error_type(422));

    /* usage: message_start then a message_delta that repeats input */
    struct gw_usage u;
    gw_usage_init(&u);
    json_t *a = json_pack("{s:i, s:i, s:i, s:i}", "input_tokens", 10, "output_tokens", 1,
                          "cache_read_input_tokens", 100, "cache_creation_input_tokens", 5);
    json_t *b = json_pack("{s:i}", "output_tokens", 42);
    gw_xlate_anthropic_usage(a, &u);
    gw_xlate_anthropic_usage(b, &u);
    assert_int_equal(115, u.prompt_tokens);
    assert_int_equal(42, u.completion_tokens);
    assert_int_equal(100, u.cached_tokens);
    assert_int_equal(5, u.cache_write_tokens);
    assert_true(u.reported);
    json_decref(a);
    json_decref(b);

    /* a NULL err is allowed */
    json_t *bad = json_pack("{s:[]}", "messages");
    assert_null(gw_xlate_req_openai_to_anthropic(bad, NULL, NULL));
    assert_null(gw_xlate_req_anthropic_to_openai(bad, NULL, NULL));
    assert_null(gw_xlate_resp_openai_to_anthropic(bad, NULL, NULL, NULL));
    assert_null(gw_xlate_resp_anthropic_to_openai(bad, NULL, NULL, NULL));
    json_decref(bad);

    /* ids are minted when the upstream has none */
    json_t *r = json_pack("{s:[{s:s, s:s}]}", "content", "type", "text", "text", "x");
    json_t *o = gw_xlate_resp_anthropic_to_openai(r, "m", NULL, NULL);
    assert_non_null(o);
    assert_int_equal(0, strncmp(json_string_value(json_object_get(o, "id")), "chatcmpl-", 9));
    assert_true(json_string_length(json_object_get(o, "id")) > 9);
    json_decref(o);
    json_decref(r);
}

/* ------------------------------------------------------------------ */

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
    gw_xlate_set_clock(FIXED_CLOCK);
    /* __FILE__ is <root>/tests/unit/test_translate.c */
    const char *suffix = "tests/unit/test_translate.c";
    size_t n = strlen(__FILE__);
    if (n < strlen(suffix) || strcmp(&__FILE__[n - strlen(suffix)], suffix) != 0) {
        fprintf(stderr, "cannot find the repository root from %s\n", __FILE__);
        return 1;
    }
    snprintf(golden_dir, sizeof(golden_dir), "%.*stests/golden/translate",
             (int)(n - strlen(suffix)), __FILE__);

    DIR *d = opendir(golden_dir);
    if (!d) {
        fprintf(stderr, "cannot open %s\n", golden_dir);
        return 1;
    }
    char **names = NULL;
    size_t count_files = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".json") != 0)
            continue;
        names = realloc(names, (count_files + 1) * sizeof(*names));
        size_t pl = strlen(golden_dir) + l + 2;
        names[count_files] = malloc(pl);
        snprintf(names[count_files], pl, "%s/%s", golden_dir, de->d_name);
        count_files++;
    }
    closedir(d);
    if (count_files)
        qsort(names, count_files, sizeof(*names), by_name);

    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_callback_stop),
        cmocka_unit_test(test_malformed_and_after_end),
        cmocka_unit_test(test_helpers),
    };
    size_t total = count_files + GW_ARRAY_LEN(fixed);
    struct CMUnitTest *tests = calloc(total, sizeof(*tests));
    for (size_t i = 0; i < count_files; i++) {
        tests[i].name = strrchr(names[i], '/') + 1;
        tests[i].test_func = test_golden;
        tests[i].initial_state = names[i];
    }
    for (size_t i = 0; i < GW_ARRAY_LEN(fixed); i++)
        tests[count_files + i] = fixed[i];
    int rc = _cmocka_run_group_tests("translate", tests, total, NULL, NULL);
    for (size_t i = 0; i < count_files; i++)
        free(names[i]);
    free(names);
    free(tests);
    return rc;
}
