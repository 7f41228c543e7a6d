/*
 * test_sse.c - unit tests for the server-sent events parser
 * (src/http/sse.c, contract in include/hybridgw/sse.h).
 *
 * Each stream in the table is fed in one piece, one byte at a time, and
 * split in two at every offset; the events seen must be the same every time.
 * Then: a callback that stops feeding, the per-event cap, and end of stream.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hybridgw/sse.h"

/* Events rendered as text: "[event|data|id]" with "~" for an absent field
 * and "\n" in data written as "/". */
struct seen {
    char log[4096];
    size_t len;
    unsigned nev;
    unsigned stop_at;   /* 1-based event number whose callback stops; 0 none */
    int stop_rc;
};

static void put(struct seen *s, gw_str v)
{
    if (!v.p) {
        s->log[s->len++] = '~';
        return;
    }
    for (size_t i = 0; i < v.len && s->len < sizeof(s->log) - 8; i++)
        s->log[s->len++] = v.p[i] == '\n' ? '/' : v.p[i];
}

static int on_event(const struct gw_sse_event *ev, void *ud)
{
    struct seen *s = ud;
    assert_true(s->len < sizeof(s->log) - 64);
    s->log[s->len++] = '[';
    put(s, ev->event);
    s->log[s->len++] = '|';
    assert_non_null(ev->data.p); /* there is always data when dispatched */
    put(s, ev->data);
    s->log[s->len++] = '|';
    put(s, ev->id);
    s->log[s->len++] = ']';
    s->log[s->len] = '\0';
    s->nev++;
    if (s->stop_at && s->nev == s->stop_at)
        return s->stop_rc;
    return 0;
}

/* The parser under test lives here so that the teardown frees it even when
 * an assertion fails (cmocka longjmps out of the test). */
static struct gw_sse g_p;

static struct gw_sse *parser_new(size_t max_event)
{
    gw_sse_free(&g_p);
    gw_sse_init(&g_p, max_event);
    return &g_p;
}

static int setup(void **state)
{
    (void)state;
    gw_sse_init(&g_p, 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    gw_sse_free(&g_p);
    return 0;
}

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof(*s));
}

static const struct {
    const char *in;
    const char *want;
    bool unfinished; /* gw_sse_finish() reports a dropped event */
} cases[] = {
    {"data: hello\n\n", "[~|hello|~]", false},
    {"data: a\r\n\r\n", "[~|a|~]", false},
    {"data: a\r\rdata: b\r\r\n", "[~|a|~][~|b|~]", false},
    {"data: a\r\ndata: b\n\r\n", "[~|a/b|~]", false},
    {"data: a\ndata: b\ndata: c\n\n", "[~|a/b/c|~]", false},
    {"data:nospace\n\n", "[~|nospace|~]", false},
    {"data:  two\n\n", "[~| two|~]", false},
    {"data: a:b: c\n\n", "[~|a:b: c|~]", false},
    {": comment\n\n", "", false},
    {": ping\ndata: x\n\n", "[~|x|~]", false},
    {"event: delta\nid: 7\ndata: {}\n\n", "[delta|{}|7]", false},
    {"event:\ndata: x\n\n", "[|x|~]", false},
    {"retry: 100\nfoo: bar\nfoo\ndata: x\n\n", "[~|x|~]", false},
    {"\n\n\n\r\n", "", false},
    {"data\n\n", "[~||~]", false},
    {"data:\ndata:\n\n", "[~|/|~]", false},
    {"Data: x\n\n", "", false},
    {"event: e\nid: 1\n\n", "", false},
    {"data: 1\n\ndata: 2\n\n", "[~|1|~][~|2|~]", false},
    {"event: a\ndata: 1\n\ndata: 2\n\n", "[a|1|~][~|2|~]", false},
    {"data: [DONE]\n\n", "[~|[DONE]|~]", false},
    {"data: x\n", "", true},
    {"data: a\n\ndata: b", "[~|a|~]", true},
    {"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"
     "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}\n\ndata: [DONE]\n\n",
     "[~|{\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}|~]"
     "[~|{\"choices\":[],\"usage\":{\"prompt_tokens\":3}}|~][~|[DONE]|~]",
     false},
};

/* Feed in[0..len) split at the given offsets (ascending, may repeat). */
static int feed_split(struct gw_sse *p, const char *in, size_t len, const size_t *cuts,
                      size_t ncuts, struct seen *s)
{
    size_t off = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        int rc = gw_sse_feed(p, in + off, end - off, on_event, s);
        if (rc)
            return rc;
        off = end;
    }
    return 0;
}

static void check_case(size_t i, const size_t *cuts, size_t ncuts, const char *how)
{
    struct seen s;
    struct gw_sse *p = parser_new(0);
    seen_init(&s);
    const char *in = cases[i].in;
    int rc = feed_split(p, in, strlen(in), cuts, ncuts, &s);
    bool unfinished = gw_sse_finish(p);
    gw_sse_free(p);
    if (rc != 0 || strcmp(s.log, cases[i].want) != 0 || unfinished != cases[i].unfinished)
        fail_msg("case %zu (%s): rc %d, events \"%s\" (want \"%s\"), unfinished %d (want %d)", i,
                 how, rc, s.log, cases[i].want, unfinished, cases[i].unfinished);
}

static void test_streams_any_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        size_t len = strlen(cases[i].in);
        check_case(i, NULL, 0, "one piece");
        /* two pieces, cut at every offset (including empty pieces) */
        for (size_t c = 0; c <= len; c++) {
            char how[32];
            snprintf(how, sizeof(how), "cut at %zu", c);
            check_case(i, &c, 1, how);
        }
        /* one byte at a time */
        size_t cuts[512];
        assert_true(len < GW_ARRAY_LEN(cuts));
        for (size_t c = 0; c < len; c++)
            cuts[c] = c + 1;
        check_case(i, cuts, len, "bytewise");
    }
}

/* The callback's non-zero value stops the feed and is returned. */
static void test_callback_stops(void **state)
{
    (void)state;
    struct seen s;
    struct gw_sse *p = parser_new(0);
    seen_init(&s);
    s.stop_at = 1;
    s.stop_rc = 7;
    const char *in = "data: 1\n\ndata: 2\n\n";
    assert_int_equal(gw_sse_feed(p, in, strlen(in), on_event, &s), 7);
    assert_int_equal(s.nev, 1);
    assert_string_equal(s.log, "[~|1|~]");
    gw_sse_free(p);
}

/* The chat handler's callback returns 1 when the client's queue is full and
 * treats the piece as taken (the upstream is paused, not rewound). So a
 * stop must not lose the bytes after the event that stopped: the next feed
 * (an empty one will do) goes on with them, and the events seen in total are
 * the same as without the stop. Checked for each event of a stream, both
 * when the stream arrives in one piece and when it arrives byte by byte. */
static void test_stop_then_resume_loses_nothing(void **state)
{
    (void)state;
    const char *in = "data: 1\n\nevent: e\ndata: 2a\ndata: 2b\n\ndata: 3\n\ndata: 4";
    const char *tail = "\n\n";
    const char *want = "[~|1|~][e|2a/2b|~][~|3|~][~|4|~]";
    size_t len = strlen(in);
    for (unsigned stop = 1; stop <= 4; stop++) {
        for (int bytewise = 0; bytewise <= 1; bytewise++) {
                    struct seen s;
            struct gw_sse *p = parser_new(0);
            seen_init(&s);
            s.stop_at = stop;
            s.stop_rc = 1;
            size_t step = bytewise ? 1 : len;
            for (size_t off = 0; off < len; off += step) {
                int rc = gw_sse_feed(p, in + off, GW_MIN(step, len - off), on_event, &s);
                assert_true(rc == 0 || rc == 1);
                if (rc == 1) /* resumed later: flush what was held back */
                    assert_int_equal(gw_sse_feed(p, "", 0, on_event, &s), 0);
            }
            /* the tail completes event 4, which stops when stop == 4 */
            assert_int_equal(gw_sse_feed(p, tail, strlen(tail), on_event, &s), stop == 4 ? 1 : 0);
            if (strcmp(s.log, want) != 0)
                fail_msg("stop at event %u (%s): got \"%s\", want \"%s\"", stop,
                         bytewise ? "bytewise" : "one piece", s.log, want);
            assert_false(gw_sse_finish(p));
            gw_sse_free(p);
        }
    }
}

/* After a stop in the middle of a multi-line event, the next multi-line
 * event's data is its own (the join scratch starts empty). */
static void test_stop_does_not_leak_data(void **state)
{
    (void)state;
    struct seen s;
    struct gw_sse *p = parser_new(0);
    seen_init(&s);
    s.stop_at = 1;
    s.stop_rc = 1;
    const char *a = "data: a\ndata: b\n\n", *b = "data: c\ndata: d\n\n";
    assert_int_equal(gw_sse_feed(p, a, strlen(a), on_event, &s), 1);
    assert_int_equal(gw_sse_feed(p, b, strlen(b), on_event, &s), 0);
    assert_string_equal(s.log, "[~|a/b|~][~|c/d|~]");
    gw_sse_free(p);
}

/* An event over the cap is an error, whether it arrives split or is the
 * join of many data lines in one piece. */
static void test_event_cap(void **state)
{
    (void)state;
    static const struct {
        const char *pieces[3];
        int rc;
        const char *want;
    } cap_cases[] = {
        /* 6 + 40 bytes of an unfinished event: over 32 */
        {{"data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", NULL}, GW_ETOOBIG, ""},
        {{"data: xxxxxxxxxx", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n\n", NULL}, GW_ETOOBIG, ""},
        /* joined data of 5 lines of 9 = 49 bytes, over 32 */
        {{"data: 123456789\ndata: 123456789\ndata: 123456789\ndata: 123456789\n"
          "data: 123456789\n\n", NULL}, GW_ETOOBIG, ""},
        /* exactly 32 bytes split across pieces: accepted */
        {{"data: 0123456789abcdef012345", "67\n\n", NULL}, 0,
         "[~|0123456789abcdef01234567|~]"},
        /* a small event after a small one: fine */
        {{"data: a\n\n", "data: b\n\n", NULL}, 0, "[~|a|~][~|b|~]"},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cap_cases); i++) {
            struct seen s;
        struct gw_sse *p = parser_new(32);
        seen_init(&s);
        int rc = 0;
        for (size_t k = 0; k < 3 && cap_cases[i].pieces[k] && rc == 0; k++)
            rc = gw_sse_feed(p, cap_cases[i].pieces[k], strlen(cap_cases[i].pieces[k]), on_event, &s);
        if (rc != cap_cases[i].rc || strcmp(s.log, cap_cases[i].want) != 0)
            fail_msg("cap case %zu: rc %d events \"%s\", want rc %d events \"%s\"", i, rc, s.log,
                     cap_cases[i].rc, cap_cases[i].want);
        gw_sse_free(p);
    }
}

/* The cap is on one event, not on a piece: when part of an event is held
 * back, a following piece made of many small complete events is fine. */
static void test_cap_is_per_event(void **state)
{
    (void)state;
    struct seen s;
    struct gw_sse *p = parser_new(64);
    seen_init(&s);
    char piece[256];
    size_t n = 0;
    piece[n++] = '\n'; /* ends the held-back event "data: 0\n" */
    for (int i = 1; i <= 10; i++)
        n += (size_t)snprintf(piece + n, sizeof(piece) - n, "data: %d\n\n", i % 10);
    assert_true(n > 64);
    assert_int_equal(gw_sse_feed(p, "data: 0\n", 8, on_event, &s), 0);
    assert_int_equal(s.nev, 0);
    int rc = gw_sse_feed(p, piece, n, on_event, &s);
    if (rc != 0 || s.nev != 11)
        fail_msg("rc %d after %u events (want 0 after 11): a %zu-byte piece of 9-byte events "
                 "was refused because 8 bytes were held back, cap 64",
                 rc, s.nev, n);
    gw_sse_free(p);
}

/* A stream that uses bare CR line ends ends its last event with "\r\r":
 * that event is complete and is delivered, not dropped at the end. */
static void test_cr_stream_last_event(void **state)
{
    (void)state;
    struct seen s;
    struct gw_sse *p = parser_new(0);
    seen_init(&s);
    const char *in = "data: 1\r\rdata: [DONE]\r\r";
    assert_int_equal(gw_sse_feed(p, in, strlen(in), on_event, &s), 0);
    bool dropped = gw_sse_finish(p);
    if (strcmp(s.log, "[~|1|~][~|[DONE]|~]") != 0 || dropped)
        fail_msg("got \"%s\" (dropped at finish: %d), want both events", s.log, dropped);
    gw_sse_free(p);
}

static void test_finish_and_reuse(void **state)
{
    (void)state;
    struct seen s;
    struct gw_sse *p = parser_new(0);
    assert_int_equal(p->max_event, 1 << 20);
    seen_init(&s);
    assert_false(gw_sse_finish(p));
    assert_int_equal(gw_sse_feed(p, "data: part", 10, on_event, &s), 0);
    assert_true(gw_sse_finish(p));
    assert_false(gw_sse_finish(p));
    /* the dropped fragment does not prefix the next event */
    assert_int_equal(gw_sse_feed(p, "data: new\n\n", 11, on_event, &s), 0);
    assert_string_equal(s.log, "[~|new|~]");
    gw_sse_free(p);
    gw_sse_free(p); /* freeing twice is harmless: buffers are reset */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_streams_any_split, setup, teardown),
        cmocka_unit_test_setup_teardown(test_callback_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_then_resume_loses_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_does_not_leak_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cap_is_per_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cr_stream_last_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_and_reuse, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
