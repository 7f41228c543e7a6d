/*
 * test_trace.c - unit tests for src/telemetry (trace.h): traceparent parsing
 * and formatting, random ids, spans and their OTLP/HTTP JSON encoding, and
 * the exporter end to end against a small HTTP receiver running in a thread
 * of this process (127.0.0.1, port 0).
 *
 * The receiver reads one request per connection, records its header block
 * and body, and answers with a configurable status (or never answers, to
 * test timeouts and the stop deadline). Waits have generous guard timeouts;
 * nothing asserts how fast anything is.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "hybridgw/config.h"
#include "hybridgw/core.h"
#include "telemetry/trace.h"

#define GUARD_MS 20000 /* generous: sanitizer builds are slow */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- traceparent --------------------------------------------------------- */

struct tp_case {
    const char *in;
    bool valid;
    uint8_t flags;
};

static const struct tp_case tp_cases[] = {
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true, 1},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff", true, 0xff},
    {"  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t", true, 1}, /* OWS */
    /* versions */
    {"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, 0},
    {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, 0},
    {"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, 0},
    {"0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, 0},
    {"000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, 0},
    /* all-zero ids */
    {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false, 0},
    /* bad hex */
    {"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7- 1", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e47 6-00f067aa0ba902b7-01", false, 0},
    /* uppercase hex is invalid per W3C */
    {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", false, 0},
    /* lengths and separators */
    {"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false, 0},
    {"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01", false, 0},
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01", false, 0},
    {"", false, 0},
    {"00", false, 0},
    {"garbage", false, 0},
};

static void test_traceparent_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < GW_ARRAY_LEN(tp_cases); i++) {
        const struct tp_case *c = &tp_cases[i];
        struct gw_trace_ctx ctx;
        memset(&ctx, 0xaa, sizeof(ctx));
        bool ok = gw_traceparent_parse(gw_str_c(c->in), &ctx);
        if (ok != c->valid)
            fail_msg("case %zu (%s): got %d", i, c->in, ok);
        assert_int_equal(ctx.valid, c->valid);
        if (c->valid) {
            static const uint8_t tid[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                            0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
            static const uint8_t sid[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
            assert_memory_equal(ctx.trace_id, tid, 16);
            assert_memory_equal(ctx.span_id, sid, 8);
            assert_int_equal(ctx.flags, c->flags);
        } else {
            /* a failed parse leaves nothing half-filled */
            static const uint8_t zero[16];
            assert_memory_equal(ctx.trace_id, zero, 16);
            assert_memory_equal(ctx.span_id, zero, 8);
            assert_int_equal(ctx.flags, 0);
        }
    }
    /* not NUL-terminated: the length decides */
    const char *s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01XYZ";
    struct gw_trace_ctx ctx;
    assert_true(gw_traceparent_parse((gw_str){s, 55}, &ctx));
    assert_false(gw_traceparent_parse((gw_str){s, 56}, &ctx));
    assert_false(gw_traceparent_parse((gw_str){s, 54}, &ctx));
    assert_false(gw_traceparent_parse(GW_STR_NULL, &ctx));
    assert_false(gw_traceparent_parse(gw_str_c(s), NULL));
}

static void test_traceparent_format(void **state)
{
    (void)state;
    static const uint8_t tid[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                    0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
    static const uint8_t sid[8] = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7};
    char out[56];
    memset(out, 'X', sizeof(out));
    gw_traceparent_format(tid, sid, 1, out);
    assert_string_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    gw_traceparent_format(tid, sid, 0xab, out);
    assert_string_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ab");

    /* random ids round trip through format and parse */
    for (int i = 0; i < 200; i++) {
        uint8_t t[16], sp[8];
        gw_trace_new_id(t, sizeof(t));
        gw_trace_new_id(sp, sizeof(sp));
        uint8_t flags = (uint8_t)i;
        gw_traceparent_format(t, sp, flags, out);
        assert_int_equal(strlen(out), 55);
        struct gw_trace_ctx ctx;
        assert_true(gw_traceparent_parse(gw_str_c(out), &ctx));
        assert_memory_equal(ctx.trace_id, t, 16);
        assert_memory_equal(ctx.span_id, sp, 8);
        assert_int_equal(ctx.flags, flags);
    }
}

static void test_new_id(void **state)
{
    (void)state;
    static const uint8_t zero[16];
    uint8_t prev[16] = {0};
    for (int i = 0; i < 1000; i++) {
        uint8_t id[16];
        gw_trace_new_id(id, sizeof(id));
        assert_memory_not_equal(id, zero, 16);
        assert_memory_not_equal(id, prev, 16);
        memcpy(prev, id, 16);
    }
    /* odd lengths fill every byte; one byte is never 0 */
    for (int i = 0; i < 1000; i++) {
        uint8_t b;
        gw_trace_new_id(&b, 1);
        assert_int_not_equal(b, 0);
    }
    uint8_t odd[11];
    memset(odd, 0, sizeof(odd));
    gw_trace_new_id(odd, sizeof(odd));
    assert_memory_not_equal(odd, zero, sizeof(odd));
    gw_trace_new_id(NULL, 8); /* ignored */
    /* random01 stays in [0, 1) */
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        double d = gw_trace_random01();
        assert_true(d >= 0.0 && d < 1.0);
        sum += d;
    }
    assert_true(sum > 4000 && sum < 6000);
}

/* ---- spans and encoding -------------------------------------------------- */

static const uint8_t TID[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0xff};
static const uint8_t SID[8] = {0xa0, 0xb1, 0xc2, 0xd3, 0xe4, 0xf5, 0x06, 0x17};
static const uint8_t PID[8] = {0, 0, 0, 0, 0, 0, 0, 1};

static json_t *parse_json(const char *s)
{
    json_error_t err;
    json_t *j = json_loads(s, 0, &err);
    if (!j)
        fail_msg("not JSON (%s at %d): %s", err.text, err.position, s);
    return j;
}

/* The value object of attribute key in array attrs, or NULL. */
static json_t *attr_value(json_t *attrs, const char *key)
{
    size_t i;
    json_t *a;
    json_array_foreach(attrs, i, a) {
        if (strcmp(json_string_value(json_object_get(a, "key")), key) == 0)
            return json_object_get(a, "value");
    }
    return NULL;
}

static const char *str_at(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    assert_non_null(v);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static json_t *spans_of(json_t *root, json_t **resource, json_t **scope)
{
    json_t *rs = json_object_get(root, "resourceSpans");
    assert_true(json_is_array(rs));
    assert_int_equal(json_array_size(rs), 1);
    json_t *r0 = json_array_get(rs, 0);
    if (resource)
        *resource = json_object_get(json_object_get(r0, "resource"), "attributes");
    json_t *ss = json_object_get(r0, "scopeSpans");
    assert_int_equal(json_array_size(ss), 1);
    json_t *s0 = json_array_get(ss, 0);
    if (scope)
        *scope = json_object_get(s0, "scope");
    json_t *spans = json_object_get(s0, "spans");
    assert_true(json_is_array(spans));
    return spans;
}

static void test_encode_fields(void **state)
{
    (void)state;
    struct gw_span *sp[2];
    sp[0] = gw_span_new("chat gpt-4o", 3, TID, SID, PID, 1755000000000000000ull);
    gw_span_str(sp[0], "gen_ai.operation.name", "chat");
    gw_span_int(sp[0], "gen_ai.request.max_tokens", 1024);
    gw_span_int(sp[0], "neg", INT64_MIN);
    gw_span_double(sp[0], "gen_ai.request.temperature", 0.2);
    gw_span_double(sp[0], "big", 1e300);
    gw_span_double(sp[0], "nan", NAN);
    gw_span_double(sp[0], "inf", -INFINITY);
    gw_span_bool(sp[0], "gen_ai.request.stream", true);
    gw_span_bool(sp[0], "f", false);
    const char *fr[] = {"tool_calls", "stop", "with\x1fsep"};
    gw_span_str_array(sp[0], "gen_ai.response.finish_reasons", fr, 3);
    gw_span_str_array(sp[0], "empty", NULL, 0);
    gw_span_str(sp[0], "esc", "q\"b\\n\nt\tc\x01 \xc3\xa9 bad\xff end");
    gw_span_status(sp[0], 2, "upstream \"5xx\"");
    gw_span_end(sp[0], 1755000001250000000ull);
    /* a root span without end time and without attributes */
    sp[1] = gw_span_new("root", 2, TID, PID, NULL, 42);

    char *out = gw_otlp_encode(sp, 2, "llm-gateway", "prod");
    assert_non_null(out);
    json_t *root = parse_json(out);
    json_t *res, *scope;
    json_t *spans = spans_of(root, &res, &scope);
    assert_string_equal(json_string_value(json_object_get(attr_value(res, "service.name"), "stringValue")),
                        "llm-gateway");
    assert_string_equal(json_string_value(json_object_get(
                            attr_value(res, "deployment.environment.name"), "stringValue")),
                        "prod");
    assert_string_equal(str_at(scope, "name"), "hybridgw");
    assert_string_equal(str_at(scope, "version"), GW_VERSION);
    assert_int_equal(json_array_size(spans), 2);

    json_t *s = json_array_get(spans, 0);
    assert_string_equal(str_at(s, "traceId"), "0102030405060708090a0b0c0d0e0fff");
    assert_string_equal(str_at(s, "spanId"), "a0b1c2d3e4f50617");
    assert_string_equal(str_at(s, "parentSpanId"), "0000000000000001");
    assert_string_equal(str_at(s, "name"), "chat gpt-4o");
    assert_true(json_is_integer(json_object_get(s, "kind")));
    assert_int_equal(json_integer_value(json_object_get(s, "kind")), 3);
    assert_string_equal(str_at(s, "startTimeUnixNano"), "1755000000000000000");
    assert_string_equal(str_at(s, "endTimeUnixNano"), "1755000001250000000");
    json_t *st = json_object_get(s, "status");
    assert_true(json_is_integer(json_object_get(st, "code")));
    assert_int_equal(json_integer_value(json_object_get(st, "code")), 2);
    assert_string_equal(str_at(st, "message"), "upstream \"5xx\"");
    assert_null(json_object_get(s, "droppedAttributesCount"));

    json_t *attrs = json_object_get(s, "attributes");
    assert_int_equal(json_array_size(attrs), 12);
    /* order is the order of first set */
    assert_string_equal(str_at(json_array_get(attrs, 0), "key"), "gen_ai.operation.name");
    assert_string_equal(str_at(attr_value(attrs, "gen_ai.operation.name"), "stringValue"), "chat");
    assert_string_equal(str_at(attr_value(attrs, "gen_ai.request.max_tokens"), "intValue"), "1024");
    assert_string_equal(str_at(attr_value(attrs, "neg"), "intValue"), "-9223372036854775808");
    json_t *d = json_object_get(attr_value(attrs, "gen_ai.request.temperature"), "doubleValue");
    assert_true(json_is_real(d));
    assert_true(json_real_value(d) == 0.2);
    assert_true(json_real_value(json_object_get(attr_value(attrs, "big"), "doubleValue")) == 1e300);
    assert_string_equal(str_at(attr_value(attrs, "nan"), "doubleValue"), "NaN");
    assert_string_equal(str_at(attr_value(attrs, "inf"), "doubleValue"), "-Infinity");
    assert_true(json_is_true(json_object_get(attr_value(attrs, "gen_ai.request.stream"), "boolValue")));
    assert_true(json_is_false(json_object_get(attr_value(attrs, "f"), "boolValue")));
    json_t *arr = json_object_get(json_object_get(attr_value(attrs, "gen_ai.response.finish_reasons"),
                                                  "arrayValue"),
                                  "values");
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(str_at(json_array_get(arr, 0), "stringValue"), "tool_calls");
    assert_string_equal(str_at(json_array_get(arr, 1), "stringValue"), "stop");
    assert_string_equal(str_at(json_array_get(arr, 2), "stringValue"), "with\x1fsep");
    arr = json_object_get(json_object_get(attr_value(attrs, "empty"), "arrayValue"), "values");
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), 0);
    /* escapes survive; invalid UTF-8 becomes U+FFFD */
    assert_string_equal(str_at(attr_value(attrs, "esc"), "stringValue"),
                        "q\"b\\n\nt\tc\x01 \xc3\xa9 bad\xef\xbf\xbd end");
    /* the text itself is ASCII-safe JSON: no raw control bytes */
    for (const char *p = out; *p; p++)
        assert_true((unsigned char)*p >= 0x20);

    s = json_array_get(spans, 1);
    assert_null(json_object_get(s, "parentSpanId"));
    assert_string_equal(str_at(s, "spanId"), "0000000000000001");
    assert_int_equal(json_integer_value(json_object_get(s, "kind")), 2);
    assert_string_equal(str_at(s, "startTimeUnixNano"), "42");
    assert_string_equal(str_at(s, "endTimeUnixNano"), "42"); /* never before start */
    assert_int_equal(json_array_size(json_object_get(s, "attributes")), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "status"), "code")), 0);
    assert_null(json_object_get(json_object_get(s, "status"), "message"));

    json_decref(root);
    free(out);
    gw_span_free(sp[0]);
    gw_span_free(sp[1]);
}

static void test_encode_edges(void **state)
{
    (void)state;
    /* no spans, no environment */
    char *out = gw_otlp_encode(NULL, 0, NULL, NULL);
    json_t *root = parse_json(out);
    json_t *res;
    assert_int_equal(json_array_size(spans_of(root, &res, NULL)), 0);
    assert_int_equal(json_array_size(res), 1);
    assert_string_equal(str_at(attr_value(res, "service.name"), "stringValue"), "hybridgw");
    json_decref(root);
    free(out);

    struct gw_span *s = gw_span_new(NULL, 99, TID, SID, (const uint8_t[8]){0}, 5);
    /* replace keeps one entry and takes the new type */
    gw_span_str(s, "k", "first");
    gw_span_int(s, "k", 7);
    const char *one[] = {"a"};
    gw_span_str_array(s, "arr", one, 1);
    gw_span_str_array(s, "arr", one, 1);
    /* ignored: NULL/empty key, NULL value, NULL span */
    gw_span_str(s, NULL, "x");
    gw_span_str(s, "", "x");
    gw_span_str(s, "nullv", NULL);
    gw_span_int(NULL, "k", 1);
    gw_span_end(NULL, 1);
    gw_span_status(NULL, 1, "x");
    gw_span_status(s, 7, NULL); /* out of range -> unset */
    gw_span_end(s, 3);          /* before start: clamped when encoded */
    /* fill past the attribute limit */
    char key[32];
    for (int i = 0; i < GW_SPAN_MAX_ATTRS + 5; i++) {
        snprintf(key, sizeof(key), "n%d", i);
        gw_span_int(s, key, i);
    }
    /* a long value is cut at a character boundary (2-byte chars) */
    size_t big = GW_SPAN_MAX_VALUE + 11;
    char *long_v = malloc(big + 1);
    for (size_t i = 0; i < big; i += 2) {
        long_v[i] = (char)0xc3;
        long_v[i + 1] = (char)0xa9;
    }
    long_v[big] = 0;
    long_v[big - 1] = 'z';
    gw_span_str(s, "k", long_v); /* existing key: replaces even when full */
    free(long_v);

    out = gw_otlp_encode(&s, 1, "svc", NULL);
    root = parse_json(out);
    json_t *sp = json_array_get(spans_of(root, &res, NULL), 0);
    assert_null(attr_value(res, "deployment.environment.name"));
    assert_string_equal(str_at(sp, "name"), "");
    assert_int_equal(json_integer_value(json_object_get(sp, "kind")), 0);
    assert_null(json_object_get(sp, "parentSpanId")); /* all-zero parent = root */
    assert_string_equal(str_at(sp, "endTimeUnixNano"), "5");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(sp, "status"), "code")), 0);
    json_t *attrs = json_object_get(sp, "attributes");
    assert_int_equal(json_array_size(attrs), GW_SPAN_MAX_ATTRS);
    assert_int_equal(json_integer_value(json_object_get(sp, "droppedAttributesCount")), 7);
    const char *kv = str_at(attr_value(attrs, "k"), "stringValue");
    assert_true(strlen(kv) <= GW_SPAN_MAX_VALUE);
    assert_true(strlen(kv) >= GW_SPAN_MAX_VALUE - 2);
    assert_int_equal(strlen(kv) % 2, 0);
    assert_null(attr_value(attrs, "nullv"));
    json_t *arr = json_object_get(json_object_get(attr_value(attrs, "arr"), "arrayValue"), "values");
    assert_int_equal(json_array_size(arr), 1);
    json_decref(root);
    free(out);
    gw_span_free(s);
    gw_span_free(NULL);

    /* array item cap */
    const char *many[GW_SPAN_MAX_ARRAY + 3];
    for (size_t i = 0; i < GW_ARRAY_LEN(many); i++)
        many[i] = i % 2 ? NULL : "v";
    s = gw_span_new("x", 1, TID, SID, NULL, 1);
    gw_span_str_array(s, "many", many, GW_ARRAY_LEN(many));
    out = gw_otlp_encode(&s, 1, "svc", "e");
    root = parse_json(out);
    attrs = json_object_get(json_array_get(spans_of(root, NULL, NULL), 0), "attributes");
    arr = json_object_get(json_object_get(attr_value(attrs, "many"), "arrayValue"), "values");
    assert_int_equal(json_array_size(arr), GW_SPAN_MAX_ARRAY);
    assert_string_equal(str_at(json_array_get(arr, 1), "stringValue"), ""); /* NULL item */
    json_decref(root);
    free(out);
    gw_span_free(s);
}

/* ---- a tiny OTLP receiver ------------------------------------------------ */

#define RX_MAX 64

struct rx_req {
    char *head;  /* request line + headers */
    char *body;
};

struct rx {
    int lfd;
    unsigned port;
    char url[64];
    pthread_t thread;
    atomic_bool stop;
    atomic_int status;   /* answer with this ... */
    atomic_int fail_left; /* ... this many more times (-1: always), then 200 */
    atomic_bool hang;    /* do not answer while set */
    pthread_mutex_t mu;
    struct rx_req reqs[RX_MAX];
    size_t nreqs;
};

/* Read one request from fd; false on EOF, error or stop. */
static bool rx_read(struct rx *rx, int fd, struct rx_req *out)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    char *hend = NULL;
    size_t clen = 0;
    for (;;) {
        if (hend && len >= (size_t)(hend - buf) + 4 + clen)
            break;
        if (len == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap + 1);
            hend = hend ? nb + (hend - buf) : NULL;
            buf = nb;
        }
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, 50);
        if (atomic_load(&rx->stop))
            goto fail;
        if (r <= 0)
            continue;
        ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0)
            goto fail;
        len += (size_t)n;
        buf[len] = 0;
        if (!hend && (hend = strstr(buf, "\r\n\r\n"))) {
            const char *cl = strcasestr(buf, "\r\ncontent-length:");
            if (cl && cl < hend)
                clen = strtoul(cl + 17, NULL, 10);
        }
    }
    out->head = strndup(buf, (size_t)(hend - buf) + 2);
    out->body = strndup(hend + 4, clen);
    free(buf);
    return true;
fail:
    free(buf);
    return false;
}

static void *rx_main(void *arg)
{
    struct rx *rx = arg;
    while (!atomic_load(&rx->stop)) {
        struct pollfd p = {rx->lfd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(rx->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        struct rx_req req;
        if (rx_read(rx, fd, &req)) {
            pthread_mutex_lock(&rx->mu);
            if (rx->nreqs < RX_MAX) {
                rx->reqs[rx->nreqs++] = req;
            } else {
                free(req.head);
                free(req.body);
            }
            pthread_mutex_unlock(&rx->mu);
            while (atomic_load(&rx->hang) && !atomic_load(&rx->stop))
                sleep_ms(10);
            if (!atomic_load(&rx->stop)) {
                char resp[200];
                int st = 200;
                int left = atomic_load(&rx->fail_left);
                if (left != 0) {
                    st = atomic_load(&rx->status);
                    if (left > 0)
                        atomic_fetch_sub(&rx->fail_left, 1);
                }
                int n = snprintf(resp, sizeof(resp),
                                 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 2\r\nConnection: close\r\n\r\n{}",
                                 st);
                ssize_t w = write(fd, resp, (size_t)n);
                (void)w;
            }
        }
        close(fd);
    }
    return NULL;
}

static struct rx *rx_start(int status)
{
    struct rx *rx = calloc(1, sizeof(*rx));
    atomic_init(&rx->stop, false);
    atomic_init(&rx->status, status);
    atomic_init(&rx->fail_left, -1);
    atomic_init(&rx->hang, false);
    pthread_mutex_init(&rx->mu, NULL);
    rx->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(rx->lfd >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(rx->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(rx->lfd, 16), 0);
    socklen_t al = sizeof(a);
    assert_int_equal(getsockname(rx->lfd, (struct sockaddr *)&a, &al), 0);
    rx->port = ntohs(a.sin_port);
    snprintf(rx->url, sizeof(rx->url), "http://127.0.0.1:%u/v1/traces", rx->port);
    assert_int_equal(pthread_create(&rx->thread, NULL, rx_main, rx), 0);
    return rx;
}

static void rx_stop(struct rx *rx)
{
    atomic_store(&rx->stop, true);
    pthread_join(rx->thread, NULL);
    close(rx->lfd);
    for (size_t i = 0; i < rx->nreqs; i++) {
        free(rx->reqs[i].head);
        free(rx->reqs[i].body);
    }
    pthread_mutex_destroy(&rx->mu);
    free(rx);
}

static size_t rx_count(struct rx *rx)
{
    pthread_mutex_lock(&rx->mu);
    size_t n = rx->nreqs;
    pthread_mutex_unlock(&rx->mu);
    return n;
}

static void rx_wait(struct rx *rx, size_t n)
{
    for (int waited = 0; rx_count(rx) < n; waited += 10) {
        if (waited > GUARD_MS)
            fail_msg("receiver got %zu requests, expected %zu", rx_count(rx), n);
        sleep_ms(10);
    }
}

/* Spans in request i's body; also checks the body is an OTLP request. */
static size_t rx_spans(struct rx *rx, size_t i)
{
    json_t *root = parse_json(rx->reqs[i].body);
    size_t n = json_array_size(spans_of(root, NULL, NULL));
    json_decref(root);
    return n;
}

/* Wait until the tracer's counters say `done` spans have been dealt with. */
static void wait_stats(struct gw_tracer *t, uint64_t exported, uint64_t failed)
{
    struct gw_tracer_stats st;
    for (int waited = 0;; waited += 10) {
        gw_tracer_stats(t, &st);
        if (st.exported >= exported && st.failed >= failed)
            return;
        if (waited > GUARD_MS)
            fail_msg("stats: exported %" PRIu64 "/%" PRIu64 " failed %" PRIu64 "/%" PRIu64,
                     st.exported, exported, st.failed, failed);
        sleep_ms(10);
    }
}

static char *hdr_names[] = {"Authorization", "x-langfuse-ingestion-version"};
static char *hdr_values[] = {"Basic cGstbGYtMTpzay1sZi0y", "4"};

static void config_for(struct gw_config *c, const char *url, uint64_t queue, uint64_t batch)
{
    memset(c, 0, sizeof(*c));
    c->otlp_endpoint = (char *)url;
    c->otlp_header_names = hdr_names;
    c->otlp_header_values = hdr_values;
    c->notlp_headers = 2;
    c->otlp_sample = 1.0;
    c->otlp_queue = queue;
    c->otlp_batch = batch;
    c->otlp_interval_ms = 3600 * 1000; /* only batch size and stop() trigger exports */
    c->otlp_timeout_ms = 10000;
    c->service_name = "svc-test";
    c->environment = "test";
}

static void submit_n(struct gw_tracer *t, size_t n, int tag)
{
    struct gw_span *spans[64];
    assert_true(n <= GW_ARRAY_LEN(spans));
    for (size_t i = 0; i < n; i++) {
        uint8_t tid[16], sid[8];
        gw_trace_new_id(tid, 16);
        gw_trace_new_id(sid, 8);
        spans[i] = gw_span_new("chat m", 3, tid, sid, NULL, gw_wall_ns());
        gw_span_int(spans[i], "tag", tag);
        gw_span_end(spans[i], gw_wall_ns());
    }
    gw_tracer_submit(t, spans, n);
    for (size_t i = 0; i < n; i++)
        assert_null(spans[i]); /* ownership moved */
}

static void test_exporter_batches(void **state)
{
    (void)state;
    struct rx *rx = rx_start(200);
    struct gw_config c;
    config_for(&c, rx->url, 100, 3);
    struct gw_tracer *t = gw_tracer_start(&c);
    assert_non_null(t);

    submit_n(t, 7, 1);
    /* two full batches go out without waiting for the interval */
    rx_wait(rx, 2);
    wait_stats(t, 6, 0);
    struct gw_tracer_stats st;
    gw_tracer_stats(t, &st);
    assert_int_equal(st.exported, 6);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.dropped, 0);
    assert_int_equal(st.failed, 0);
    /* stop flushes the remainder */
    gw_tracer_stop(t, GUARD_MS);
    assert_int_equal(rx_count(rx), 3);
    assert_int_equal(rx_spans(rx, 0), 3);
    assert_int_equal(rx_spans(rx, 1), 3);
    assert_int_equal(rx_spans(rx, 2), 1);
    for (size_t i = 0; i < 3; i++) {
        const char *h = rx->reqs[i].head;
        assert_true(strncmp(h, "POST /v1/traces HTTP/1.1\r\n", 26) == 0);
        assert_non_null(strcasestr(h, "\r\nContent-Type: application/json\r\n"));
        assert_non_null(strstr(h, "\r\nAuthorization: Basic cGstbGYtMTpzay1sZi0y\r\n"));
        assert_non_null(strstr(h, "\r\nx-langfuse-ingestion-version: 4\r\n"));
        json_t *root = parse_json(rx->reqs[i].body);
        json_t *res;
        json_t *spans = spans_of(root, &res, NULL);
        assert_string_equal(str_at(attr_value(res, "service.name"), "stringValue"), "svc-test");
        assert_string_equal(str_at(attr_value(res, "deployment.environment.name"), "stringValue"), "test");
        assert_string_equal(str_at(attr_value(json_object_get(json_array_get(spans, 0), "attributes"), "tag"),
                                   "intValue"),
                            "1");
        json_decref(root);
    }
    rx_stop(rx);
}

static void test_exporter_overflow(void **state)
{
    (void)state;
    struct rx *rx = rx_start(200);
    struct gw_config c;
    config_for(&c, rx->url, 4, 100); /* batch > queue: a full queue wakes the thread */
    struct gw_tracer *t = gw_tracer_start(&c);
    assert_non_null(t);
    /* hold the first POST at the receiver so the queue cannot drain */
    atomic_store(&rx->hang, true);
    submit_n(t, 4, 1);
    rx_wait(rx, 1);
    /* the queue is empty again (the batch is in flight); fill it and overflow */
    submit_n(t, 10, 2);
    struct gw_tracer_stats st;
    gw_tracer_stats(t, &st);
    assert_int_equal(st.queued, 4);
    assert_int_equal(st.dropped, 6);
    assert_int_equal(st.exported, 0);
    /* a NULL entry is skipped, not counted */
    struct gw_span *one[2] = {NULL, gw_span_new("x", 1, TID, SID, NULL, 1)};
    gw_tracer_submit(t, one, 2);
    assert_null(one[1]);
    gw_tracer_stats(t, &st);
    assert_int_equal(st.dropped, 7);

    /* release the receiver: the held batch and the queued one both go out */
    atomic_store(&rx->hang, false);
    wait_stats(t, 8, 0);
    gw_tracer_stop(t, GUARD_MS);
    assert_int_equal(rx_count(rx), 2);
    assert_int_equal(rx_spans(rx, 0), 4);
    assert_int_equal(rx_spans(rx, 1), 4);
    rx_stop(rx);
}

static void test_exporter_interval(void **state)
{
    (void)state;
    struct rx *rx = rx_start(200);
    struct gw_config c;
    config_for(&c, rx->url, 100, 100);
    c.otlp_interval_ms = 50;
    c.environment = NULL;
    struct gw_tracer *t = gw_tracer_start(&c);
    assert_non_null(t);
    /* fewer than a batch: the interval sends them */
    submit_n(t, 2, 1);
    rx_wait(rx, 1);
    wait_stats(t, 2, 0);
    submit_n(t, 1, 2);
    rx_wait(rx, 2);
    wait_stats(t, 3, 0);
    gw_tracer_stop(t, GUARD_MS);
    assert_int_equal(rx_spans(rx, 0), 2);
    assert_int_equal(rx_spans(rx, 1), 1);
    json_t *root = parse_json(rx->reqs[0].body);
    json_t *res;
    spans_of(root, &res, NULL);
    assert_null(attr_value(res, "deployment.environment.name"));
    json_decref(root);
    rx_stop(rx);
}

static void test_exporter_failures(void **state)
{
    (void)state;
    /* 500: retried once, then failed */
    struct rx *rx = rx_start(500);
    struct gw_config c;
    config_for(&c, rx->url, 100, 2);
    struct gw_tracer *t = gw_tracer_start(&c);
    assert_non_null(t);
    submit_n(t, 2, 1);
    wait_stats(t, 0, 2);
    assert_int_equal(rx_count(rx), 2);
    assert_string_equal(rx->reqs[0].body, rx->reqs[1].body);
    /* 429 is retried too, and the retry can succeed */
    atomic_store(&rx->status, 429);
    atomic_store(&rx->fail_left, 1);
    submit_n(t, 2, 2);
    wait_stats(t, 2, 2);
    assert_int_equal(rx_count(rx), 4);
    /* 400: not retried */
    atomic_store(&rx->status, 400);
    atomic_store(&rx->fail_left, -1);
    submit_n(t, 2, 3);
    wait_stats(t, 2, 4);
    /* a 503 then success */
    atomic_store(&rx->status, 503);
    atomic_store(&rx->fail_left, 1);
    submit_n(t, 2, 4);
    wait_stats(t, 4, 4);
    struct gw_tracer_stats st;
    gw_tracer_stop(t, GUARD_MS);
    assert_int_equal(rx_count(rx), 7);
    rx_stop(rx);

    /* nothing listening: connection refused counts as failed */
    rx = rx_start(200);
    char url[64];
    snprintf(url, sizeof(url), "%s", rx->url);
    rx_stop(rx); /* the port is closed now */
    config_for(&c, url, 100, 1);
    t = gw_tracer_start(&c);
    submit_n(t, 1, 4);
    wait_stats(t, 0, 1);
    gw_tracer_stats(t, &st);
    assert_int_equal(st.exported, 0);
    gw_tracer_stop(t, GUARD_MS);
}

static void test_exporter_timeout_and_deadline(void **state)
{
    (void)state;
    /* a receiver that never answers: the POST times out (not retried) */
    struct rx *rx = rx_start(200);
    atomic_store(&rx->hang, true);
    struct gw_config c;
    config_for(&c, rx->url, 100, 1);
    c.otlp_timeout_ms = 200;
    struct gw_tracer *t = gw_tracer_start(&c);
    submit_n(t, 1, 1);
    wait_stats(t, 0, 1);
    gw_tracer_stop(t, GUARD_MS);
    assert_int_equal(rx_count(rx), 1);
    rx_stop(rx);

    /* stop() with a long POST in flight returns at its deadline */
    rx = rx_start(200);
    atomic_store(&rx->hang, true);
    config_for(&c, rx->url, 100, 2);
    c.otlp_timeout_ms = 600000;
    t = gw_tracer_start(&c);
    submit_n(t, 2, 1);
    rx_wait(rx, 1);
    /* one more for the queue; with batch 2 the thread would only take it
     * after the held POST, which never ends before the deadline */
    submit_n(t, 1, 2);
    uint64_t t0 = gw_now_ns();
    gw_tracer_stop(t, 300);
    uint64_t took_ms = (gw_now_ns() - t0) / 1000000;
    assert_true(took_ms < GUARD_MS); /* guard only: not stuck for the 600 s timeout */
    rx_stop(rx);
}

static void test_sample_and_null(void **state)
{
    (void)state;
    struct gw_config c;
    config_for(&c, NULL, 10, 1);
    assert_null(gw_tracer_start(&c)); /* no endpoint: off */
    c.otlp_endpoint = "";
    assert_null(gw_tracer_start(&c));
    assert_null(gw_tracer_start(NULL));

    /* NULL tracer: nothing sampled, submit frees, stats zero, stop no-op */
    struct gw_trace_ctx sampled = {.flags = 1, .valid = true};
    assert_false(gw_tracer_sample(NULL, &sampled));
    struct gw_span *s[1] = {gw_span_new("x", 1, TID, SID, NULL, 1)};
    gw_tracer_submit(NULL, s, 1);
    assert_null(s[0]);
    struct gw_tracer_stats st;
    memset(&st, 0xff, sizeof(st));
    gw_tracer_stats(NULL, &st);
    assert_int_equal(st.exported + st.dropped + st.failed + st.queued, 0);
    gw_tracer_stop(NULL, 0);

    /* a tracer that never gets to send (port 9 on loopback: discard, closed) */
    config_for(&c, "http://127.0.0.1:9/v1/traces", 10, 5);
    struct gw_trace_ctx unsampled = {.flags = 0, .valid = true};
    struct gw_trace_ctx invalid = {.flags = 1, .valid = false};
    double rates[] = {0.0, 1.0, 0.5};
    for (size_t r = 0; r < GW_ARRAY_LEN(rates); r++) {
        c.otlp_sample = rates[r];
        struct gw_tracer *t = gw_tracer_start(&c);
        assert_non_null(t);
        assert_true(gw_tracer_sample(t, &sampled));    /* parent decides */
        assert_false(gw_tracer_sample(t, &unsampled));
        int yes = 0;
        for (int i = 0; i < 10000; i++)
            yes += gw_tracer_sample(t, i % 2 ? NULL : &invalid);
        if (rates[r] == 0.0)
            assert_int_equal(yes, 0);
        else if (rates[r] == 1.0)
            assert_int_equal(yes, 10000);
        else
            assert_true(yes > 4000 && yes < 6000);
        gw_tracer_stop(t, 0); /* nothing queued */
    }

    /* stop(0) with queued spans: they are dropped, not sent */
    c.otlp_sample = 1.0;
    struct gw_tracer *t = gw_tracer_start(&c);
    submit_n(t, 3, 1);
    gw_tracer_stop(t, 0);
}

int main(void)
{
    setenv("NO_PROXY", "127.0.0.1", 1);
    setenv("no_proxy", "127.0.0.1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_table),
        cmocka_unit_test(test_traceparent_format),
        cmocka_unit_test(test_new_id),
        cmocka_unit_test(test_encode_fields),
        cmocka_unit_test(test_encode_edges),
        cmocka_unit_test(test_exporter_batches),
        cmocka_unit_test(test_exporter_overflow),
        cmocka_unit_test(test_exporter_interval),
        cmocka_unit_test(test_exporter_failures),
        cmocka_unit_test(test_exporter_timeout_and_deadline),
        cmocka_unit_test(test_sample_and_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
