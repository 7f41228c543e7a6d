/*
 * test_h1.c - unit tests for the HTTP/1.1 request parser wrapper
 * (src/http/h1.c, contract in src/http/h1.h).
 *
 * Every valid request in the table is parsed three ways (in one piece, one
 * byte at a time, and in 3-byte pieces) and must give the same method, URL,
 * headers, body and flags each time; every malformed or oversized request
 * must give the same error status however it is split.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/h1.h"

static const struct gw_h1_limits default_limits = {8192, 32, 4096};

/* The parser under test. Tests create it with new_parser() and the teardown
 * frees it, so a failed assertion (a longjmp) does not leak it. */
static struct gw_h1 *g_h;

static struct gw_h1 *new_parser(const struct gw_h1_limits *lim)
{
    gw_h1_free(g_h);
    g_h = gw_h1_new(lim);
    return g_h;
}

static void free_parser(void)
{
    gw_h1_free(g_h);
    g_h = NULL;
}

static int teardown(void **state)
{
    (void)state;
    free_parser();
    return 0;
}

/* What one parsed message looked like, flattened for comparison. */
struct msg {
    char method[16];
    char url[512];
    char headers[1024];   /* "Name=value|" for each header, in order */
    char body[1024];
    size_t nheaders;
    bool keep_alive, expect, has_body; /* has_body as seen at HEAD */
    int minor;
};

static void put_str(char *out, size_t cap, gw_str s)
{
    size_t n = s.len < cap - 1 ? s.len : cap - 1;
    if (n)
        memcpy(out, s.p, n);
    out[n] = '\0';
}

static void capture(const struct gw_h1 *h, struct msg *m)
{
    memset(m, 0, sizeof(*m));
    put_str(m->method, sizeof(m->method), gw_h1_method(h));
    put_str(m->url, sizeof(m->url), gw_h1_url(h));
    m->nheaders = gw_h1_header_count(h);
    size_t off = 0;
    for (size_t i = 0; i < m->nheaders; i++) {
        gw_str n, v;
        gw_h1_header_at(h, i, &n, &v);
        assert_non_null(n.p);
        assert_non_null(v.p);
        int w = snprintf(m->headers + off, sizeof(m->headers) - off, "%.*s=%.*s|", (int)n.len,
                         n.p, (int)v.len, v.p);
        assert_true(w > 0 && (size_t)w < sizeof(m->headers) - off);
        off += (size_t)w;
    }
    put_str(m->body, sizeof(m->body), gw_h1_body(h));
    m->keep_alive = gw_h1_keep_alive(h);
    m->expect = gw_h1_expect_continue(h);
    m->has_body = gw_h1_has_body(h);
    m->minor = gw_h1_http_minor(h);
}

/* Feed in in pieces of `step` bytes (0: one piece). Complete messages are
 * captured into msgs and the parser is reset after each. Returns the number
 * of messages; *status gets the error status (0 when none). Checks the
 * feed contract on the way: used never exceeds what was given, NEED_MORE
 * means every byte was used, and HEAD comes once before each DONE. */
static size_t parse(const char *in, size_t len, size_t step, const struct gw_h1_limits *lim,
                    struct msg *msgs, size_t max, int *status)
{
    struct gw_h1 *h = new_parser(lim);
    size_t nmsgs = 0, off = 0;
    bool head_seen = false, has_body = false;
    *status = 0;
    while (off < len && !*status) {
        size_t n = step ? GW_MIN(step, len - off) : len - off;
        const char *p = in + off;
        off += n;
        while (n > 0) {
            size_t used = 12345;
            enum gw_h1_ev ev = gw_h1_feed(h, p, n, &used);
            assert_true(used <= n);
            p += used;
            n -= used;
            if (ev == GW_H1_NEED_MORE) {
                assert_int_equal(n, 0);
                assert_true(gw_h1_in_message(h));
            } else if (ev == GW_H1_HEAD) {
                assert_false(head_seen);
                head_seen = true;
                has_body = gw_h1_has_body(h); /* what the server asks at HEAD */
            } else if (ev == GW_H1_DONE) {
                assert_true(head_seen);
                assert_true(nmsgs < max);
                capture(h, &msgs[nmsgs]);
                msgs[nmsgs++].has_body = has_body;
                head_seen = false;
                gw_h1_reset(h);
                assert_false(gw_h1_in_message(h));
            } else {
                assert_int_equal(ev, GW_H1_ERROR);
                *status = gw_h1_error_status(h);
                assert_true(*status >= 400);
                assert_non_null(gw_h1_error_msg(h));
                assert_true(strlen(gw_h1_error_msg(h)) > 0);
                break;
            }
        }
    }
    free_parser();
    return nmsgs;
}

static void assert_msg_equal(const struct msg *got, const struct msg *want, const char *what)
{
    if (strcmp(got->method, want->method) || strcmp(got->url, want->url) ||
        strcmp(got->headers, want->headers) || strcmp(got->body, want->body) ||
        got->keep_alive != want->keep_alive || got->expect != want->expect ||
        got->has_body != want->has_body || got->minor != want->minor)
        fail_msg("%s:\n got  %s %s 1.%d [%s] body=\"%s\" ka=%d exp=%d hb=%d\n want %s %s 1.%d "
                 "[%s] body=\"%s\" ka=%d exp=%d hb=%d",
                 what, got->method, got->url, got->minor, got->headers, got->body,
                 got->keep_alive, got->expect, got->has_body, want->method, want->url,
                 want->minor, want->headers, want->body, want->keep_alive, want->expect,
                 want->has_body);
}

/* ------------------------------------------------------------------------ */

static const struct {
    const char *in;
    struct msg want;
} valid_cases[] = {
    {"GET /v1/models HTTP/1.1\r\nHost: gw\r\nUser-Agent: t/1\r\n\r\n",
     {"GET", "/v1/models", "Host=gw|User-Agent=t/1|", "", 2, true, false, false, 1}},
    {"POST /v1/chat/completions?x=1&y HTTP/1.1\r\nContent-Length: 11\r\n"
     "Content-Type: application/json\r\n\r\nhello world",
     {"POST", "/v1/chat/completions?x=1&y", "Content-Length=11|Content-Type=application/json|",
      "hello world", 2, true, false, true, 1}},
    {"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
     {"POST", "/c", "Transfer-Encoding=chunked|", "hello world", 1, true, false, true, 1}},
    {"GET / HTTP/1.0\r\n\r\n", {"GET", "/", "", "", 0, false, false, false, 0}},
    {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     {"GET", "/", "Connection=keep-alive|", "", 1, true, false, false, 0}},
    {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
     {"GET", "/", "Connection=close|", "", 1, false, false, false, 1}},
    {"POST /up HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok",
     {"POST", "/up", "Expect=100-Continue|Content-Length=2|", "ok", 2, true, true, true, 1}},
    {"POST /e HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
     {"POST", "/e", "Content-Length=0|", "", 1, true, false, false, 1}},
    {"GET /h HTTP/1.1\r\nX-Empty:\r\nX-Pad:    v\r\n\r\n",
     {"GET", "/h", "X-Empty=|X-Pad=v|", "", 2, true, false, false, 1}},
    {"DELETE http://host:8080/abs?q HTTP/1.1\r\nA: 1\r\nA: 2\r\n\r\n",
     {"DELETE", "http://host:8080/abs?q", "A=1|A=2|", "", 2, true, false, false, 1}},
    {"OPTIONS * HTTP/1.1\r\n\r\n", {"OPTIONS", "*", "", "", 0, true, false, false, 1}},
};

static void test_valid_requests(void **state)
{
    (void)state;
    static const size_t steps[] = {0, 1, 3};
    for (size_t i = 0; i < GW_ARRAY_LEN(valid_cases); i++) {
        for (size_t s = 0; s < GW_ARRAY_LEN(steps); s++) {
            struct msg got[2];
            int status;
            size_t n = parse(valid_cases[i].in, strlen(valid_cases[i].in), steps[s],
                             &default_limits, got, 2, &status);
            char what[64];
            snprintf(what, sizeof(what), "case %zu step %zu", i, steps[s]);
            if (status || n != 1)
                fail_msg("%s: %zu messages, status %d", what, n, status);
            assert_msg_equal(&got[0], &valid_cases[i].want, what);
            assert_int_equal(got[0].nheaders, valid_cases[i].want.nheaders);
        }
    }
}

static const struct {
    const char *in;
    struct gw_h1_limits lim;
    int status;
} error_cases[] = {
    {"garbage\r\n\r\n", {8192, 32, 4096}, 400},
    {"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", {8192, 32, 4096}, 400},
    {"FOO / HTTP/1.1\r\n\r\n", {8192, 32, 4096}, 400},
    {"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", {8192, 32, 4096}, 400},
    {"POST / HTTP/1.1\r\nContent-Length: 12a\r\n\r\n", {8192, 32, 4096}, 400},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
     {8192, 32, 4096}, 400},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", {8192, 32, 4096}, 400},
    {"GET / HTTP/2.0\r\n\r\n", {8192, 32, 4096}, 505},
    {"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", {8192, 32, 4096}, 501},
    {"CONNECT example.com:443 HTTP/1.1\r\n\r\n", {8192, 32, 4096}, 501},
    {"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", {8192, 32, 100}, 413},
    {"POST / HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n", {8192, 32, 100}, 413},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n"
     "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n0\r\n\r\n",
     {8192, 32, 100}, 413},
    {"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
     {32, 32, 100}, 431},
    {"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", {8192, 4, 100}, 431},
    {"GET / HTTP/1.1\r\nX-Long: 0123456789012345678901234567890123456789\r\n\r\n", {40, 32, 100},
     431},
};

static void test_error_requests(void **state)
{
    (void)state;
    static const size_t steps[] = {0, 1, 2, 7};
    for (size_t i = 0; i < GW_ARRAY_LEN(error_cases); i++) {
        for (size_t s = 0; s < GW_ARRAY_LEN(steps); s++) {
            struct msg got[2];
            int status;
            size_t n = parse(error_cases[i].in, strlen(error_cases[i].in), steps[s],
                             &error_cases[i].lim, got, 2, &status);
            if (status != error_cases[i].status || n != 0)
                fail_msg("case %zu step %zu: status %d with %zu messages, want %d", i, steps[s],
                         status, n, error_cases[i].status);
        }
    }
}

/* Limits are inclusive: a request exactly at each limit is accepted. */
static void test_limits_boundary(void **state)
{
    (void)state;
    /* "/" + "A" + "1" = 3 header bytes (URL, names and values count) */
    const char *req = "POST / HTTP/1.1\r\nA: 1\r\nContent-Length: 4\r\n\r\nbody";
    /* URL(1) + A(1) + 1(1) + Content-Length(14) + 4(1) = 18 */
    struct gw_h1_limits at = {18, 2, 4}, under_hdr = {17, 2, 4}, under_cnt = {18, 1, 4},
                        under_body = {18, 2, 3};
    struct msg got[1];
    int status;
    assert_int_equal(parse(req, strlen(req), 0, &at, got, 1, &status), 1);
    assert_int_equal(status, 0);
    assert_string_equal(got[0].body, "body");
    parse(req, strlen(req), 0, &under_hdr, got, 1, &status);
    assert_int_equal(status, 431);
    parse(req, strlen(req), 0, &under_cnt, got, 1, &status);
    assert_int_equal(status, 431);
    parse(req, strlen(req), 0, &under_body, got, 1, &status);
    assert_int_equal(status, 413);
}

static void test_pipelined(void **state)
{
    (void)state;
    const char *in = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                     "POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                     "GET /c HTTP/1.0\r\n\r\n";
    static const size_t steps[] = {0, 1, 5, 1000};
    for (size_t s = 0; s < GW_ARRAY_LEN(steps); s++) {
        struct msg got[4];
        int status;
        size_t n = parse(in, strlen(in), steps[s], &default_limits, got, 4, &status);
        assert_int_equal(status, 0);
        assert_int_equal(n, 3);
        assert_string_equal(got[0].url, "/a");
        assert_string_equal(got[0].headers, "Host=x|");
        assert_string_equal(got[1].method, "POST");
        assert_string_equal(got[1].url, "/b");
        assert_string_equal(got[1].body, "abc");
        assert_string_equal(got[1].headers, "Content-Length=3|");
        assert_string_equal(got[2].url, "/c");
        assert_int_equal(got[2].minor, 0);
        assert_false(got[2].keep_alive);
        assert_int_equal(got[2].nheaders, 0);
    }
}

/* The event sequence of one buffer holding a whole request and the start of
 * the next: HEAD first, DONE next (parser paused), DONE again with nothing
 * used until reset. */
static void test_event_sequence(void **state)
{
    (void)state;
    const char *in = "POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /y HTTP/1.1\r\n";
    size_t len = strlen(in), off = 0, used;
    struct gw_h1 *h = new_parser(&default_limits);
    assert_false(gw_h1_in_message(h));
    assert_int_equal(gw_h1_feed(h, in, len, &used), GW_H1_HEAD);
    assert_true(used < len);
    off += used;
    assert_true(gw_h1_in_message(h));
    assert_true(gw_str_eq_c(gw_h1_method(h), "POST"));
    assert_true(gw_str_eq_c(gw_h1_url(h), "/x"));
    assert_true(gw_str_eq_c(gw_h1_header(h, "content-length"), "2"));
    assert_true(gw_h1_has_body(h));
    assert_int_equal(gw_h1_body(h).len, 0);

    assert_int_equal(gw_h1_feed(h, in + off, len - off, &used), GW_H1_DONE);
    off += used;
    assert_int_equal(off, strlen("POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"));
    assert_true(gw_str_eq_c(gw_h1_body(h), "hi"));
    /* not reset yet: nothing more is parsed */
    assert_int_equal(gw_h1_feed(h, in + off, len - off, &used), GW_H1_DONE);
    assert_int_equal(used, 0);

    gw_h1_reset(h);
    assert_false(gw_h1_in_message(h));
    assert_int_equal(gw_h1_header_count(h), 0);
    assert_int_equal(gw_h1_url(h).len, 0);
    assert_int_equal(gw_h1_body(h).len, 0);
    assert_int_equal(gw_h1_feed(h, in + off, len - off, &used), GW_H1_NEED_MORE);
    assert_int_equal(used, len - off);
    assert_true(gw_h1_in_message(h));
    const char *crlf = "\r\n";
    assert_int_equal(gw_h1_feed(h, crlf, 2, &used), GW_H1_HEAD);
    assert_true(gw_str_eq_c(gw_h1_url(h), "/y"));
    assert_int_equal(gw_h1_feed(h, crlf + used, 2 - used, &used), GW_H1_DONE);
    free_parser();
}

static void test_header_lookup(void **state)
{
    (void)state;
    const char *in = "GET / HTTP/1.1\r\nX-Dup: first\r\nx-dup: second\r\nX-Empty:\r\n"
                     "Content-Type: text/plain\r\n\r\n";
    struct gw_h1 *h = new_parser(&default_limits);
    size_t used;
    assert_int_equal(gw_h1_feed(h, in, strlen(in), &used), GW_H1_HEAD);
    static const struct {
        const char *name;
        const char *value; /* NULL: absent */
    } cases[] = {
        {"x-dup", "first"},  {"X-DUP", "first"}, {"content-type", "text/plain"},
        {"x-empty", ""},     {"x-missing", NULL}, {"x-du", NULL},
        {"x-dupe", NULL},    {"", NULL},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        gw_str v = gw_h1_header(h, cases[i].name);
        if (!cases[i].value) {
            assert_null(v.p);
            assert_int_equal(v.len, 0);
        } else {
            assert_non_null(v.p); /* present but empty differs from absent */
            assert_true(gw_str_eq_c(v, cases[i].value));
        }
    }
    assert_int_equal(gw_h1_header_count(h), 4);
    free_parser();
}

static void test_discard_body(void **state)
{
    (void)state;
    const char *in = "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
    /* the body is over the body cap, but a discarded body is not stored */
    struct gw_h1_limits lim = {8192, 32, 10};
    struct gw_h1 *h = new_parser(&lim);
    size_t used, off = 0, len = strlen(in);
    assert_int_equal(gw_h1_feed(h, in, len, &used), GW_H1_HEAD);
    off += used;
    gw_h1_discard_body(h);
    while (off < len) {
        /* byte by byte through the discarded body */
        enum gw_h1_ev ev = gw_h1_feed(h, in + off, 1, &used);
        off += used;
        if (ev == GW_H1_DONE)
            break;
        assert_int_equal(ev, GW_H1_NEED_MORE);
    }
    assert_int_equal(off, len);
    assert_int_equal(gw_h1_body(h).len, 0);
    assert_int_equal(gw_h1_error_status(h), 0);
    free_parser();
}

static void test_error_is_sticky(void **state)
{
    (void)state;
    struct gw_h1 *h = new_parser(&default_limits);
    size_t used;
    assert_int_equal(gw_h1_feed(h, "BAD\x01 / HTTP/1.1\r\n", 17, &used), GW_H1_ERROR);
    assert_int_equal(gw_h1_error_status(h), 400);
    const char *ok = "GET / HTTP/1.1\r\n\r\n";
    assert_int_equal(gw_h1_feed(h, ok, strlen(ok), &used), GW_H1_ERROR);
    assert_int_equal(used, 0);
    assert_int_equal(gw_h1_error_status(h), 400);
    free_parser();
    gw_h1_free(NULL);
}

static void test_set_limits(void **state)
{
    (void)state;
    struct gw_h1 *h = new_parser(&default_limits);
    const char *in = "POST / HTTP/1.1\r\nContent-Length: 50\r\n\r\n";
    size_t used;
    assert_int_equal(gw_h1_feed(h, in, strlen(in), &used), GW_H1_HEAD);
    h = new_parser(&default_limits);
    struct gw_h1_limits small = {8192, 32, 49};
    gw_h1_set_limits(h, &small);
    assert_int_equal(gw_h1_feed(h, in, strlen(in), &used), GW_H1_ERROR);
    assert_int_equal(gw_h1_error_status(h), 413);
    free_parser();
}

/* A feed of zero bytes is "nothing new": it must not change the state,
 * whether between messages or in the middle of one. */
static void test_empty_feed(void **state)
{
    (void)state;
    struct gw_h1 *h = new_parser(&default_limits);
    size_t used = 99;
    assert_int_equal(gw_h1_feed(h, "", 0, &used), GW_H1_NEED_MORE);
    assert_int_equal(used, 0);
    const char *part = "GET /p HTTP/1.1\r\nHo";
    assert_int_equal(gw_h1_feed(h, part, strlen(part), &used), GW_H1_NEED_MORE);
    assert_int_equal(gw_h1_feed(h, "", 0, &used), GW_H1_NEED_MORE);
    assert_int_equal(used, 0);
    assert_int_equal(gw_h1_error_status(h), 0);
    const char *rest = "st: a\r\n\r\n";
    assert_int_equal(gw_h1_feed(h, rest, strlen(rest), &used), GW_H1_HEAD);
    assert_true(gw_str_eq_c(gw_h1_header(h, "host"), "a"));
    free_parser();
}

/* Trailer fields of a chunked request are not part of the header section
 * (RFC 9110 6.5.1: a recipient must not merge them into it): after the
 * message they must not show up as request headers, nor change the headers
 * the head had. */
static void test_trailers_not_headers(void **state)
{
    (void)state;
    const char *in = "POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "3\r\nabc\r\n0\r\nAuthorization: Bearer smuggled\r\n\r\n";
    struct msg got[1];
    int status;
    size_t n = parse(in, strlen(in), 0, &default_limits, got, 1, &status);
    assert_int_equal(status, 0);
    assert_int_equal(n, 1);
    assert_string_equal(got[0].body, "abc");
    assert_string_equal(got[0].headers, "Transfer-Encoding=chunked|");
    assert_int_equal(got[0].nheaders, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_valid_requests, teardown),
        cmocka_unit_test_teardown(test_error_requests, teardown),
        cmocka_unit_test_teardown(test_limits_boundary, teardown),
        cmocka_unit_test_teardown(test_pipelined, teardown),
        cmocka_unit_test_teardown(test_event_sequence, teardown),
        cmocka_unit_test_teardown(test_header_lookup, teardown),
        cmocka_unit_test_teardown(test_discard_body, teardown),
        cmocka_unit_test_teardown(test_error_is_sticky, teardown),
        cmocka_unit_test_teardown(test_set_limits, teardown),
        cmocka_unit_test_teardown(test_empty_feed, teardown),
        cmocka_unit_test_teardown(test_trailers_not_headers, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
