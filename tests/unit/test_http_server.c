/*
 * test_http_server.c - the HTTP/1.1 server (src/http/server.c, contract in
 * include/hybridgw/http.h) driven over real loopback sockets.
 *
 * Each test starts a server on 127.0.0.1 port 0 on the test's own libuv
 * loop, connects libuv TCP clients to it on the same loop, and runs the loop
 * until what it waits for has happened. A 10 s guard timer only stops a
 * hung test; no assertion depends on timing. The teardown closes every
 * client, closes the server, and checks that the loop has no handle left.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "hybridgw/buf.h"
#include "hybridgw/http.h"

#define GUARD_MS 10000

/* ---- a minimal HTTP/1.1 response reader for the client side ------------ */

struct resp {
    int status;
    char head[2048];    /* status line and headers */
    char body[8192];
    size_t body_len;
};

/* The value of response header `name` (case-insensitive), copied into a
 * static buffer; NULL when absent. */
static const char *find_header(const struct resp *r, const char *name)
{
    static char val[256];
    size_t nl = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, nl) != 0 || p[2 + nl] != ':')
            continue;
        const char *v = p + 2 + nl + 1;
        while (*v == ' ')
            v++;
        const char *end = strstr(v, "\r\n");
        size_t n = end ? (size_t)(end - v) : strlen(v);
        snprintf(val, sizeof(val), "%.*s", (int)n, v);
        return val;
    }
    return NULL;
}

/* Decode a chunked body at p[0..len). Returns bytes used, or 0 when the
 * body is not complete yet; -1 when malformed. */
static long dechunk(const char *p, size_t len, char *out, size_t cap, size_t *out_len)
{
    size_t off = 0;
    *out_len = 0;
    for (;;) {
        const char *eol = memmem(p + off, len - off, "\r\n", 2);
        if (!eol)
            return 0;
        char *end;
        unsigned long n = strtoul(p + off, &end, 16);
        if (end == p + off)
            return -1;
        size_t data = (size_t)(eol - p) + 2;
        if (n == 0) {
            if (len < data + 2)
                return 0;
            return memcmp(p + data, "\r\n", 2) == 0 ? (long)(data + 2) : -1;
        }
        if (len < data + n + 2)
            return 0;
        if (memcmp(p + data + n, "\r\n", 2) != 0 || *out_len + n > cap)
            return -1;
        memcpy(out + *out_len, p + data, n);
        *out_len += n;
        off = data + n + 2;
    }
}

/* Parse the complete responses at the start of p[0..len) (interim 1xx
 * responses count as responses). */
static size_t parse_responses(const char *p, size_t len, struct resp *out, size_t max)
{
    size_t n = 0, off = 0;
    while (n < max && off < len) {
        const char *hend = memmem(p + off, len - off, "\r\n\r\n", 4);
        if (!hend)
            break;
        struct resp *r = &out[n];
        memset(r, 0, sizeof(*r));
        size_t hlen = (size_t)(hend - (p + off)) + 2;
        assert_true(hlen < sizeof(r->head));
        memcpy(r->head, p + off, hlen);
        assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
        size_t body = (size_t)(hend - p) + 4;
        if (r->status < 200) {
            off = body;
            n++;
            continue;
        }
        const char *te = find_header(r, "Transfer-Encoding");
        const char *cl = find_header(r, "Content-Length");
        if (te && strncmp(te, "chunked", 7) == 0) {
            long used = dechunk(p + body, len - body, r->body, sizeof(r->body) - 1, &r->body_len);
            assert_true(used >= 0);
            if (used == 0)
                break;
            off = body + (size_t)used;
        } else {
            assert_non_null(cl);
            size_t blen = strtoul(cl, NULL, 10);
            if (len - body < blen)
                break;
            assert_true(blen < sizeof(r->body));
            memcpy(r->body, p + body, blen);
            r->body_len = blen;
            off = body + blen;
        }
        r->body[r->body_len] = '\0';
        n++;
    }
    return n;
}

/* ---- test fixture: loop, guard timer, server, clients ------------------- */

struct client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    struct gw_buf in;       /* everything received */
    bool used, connected, eof, closed, closing;
    int read_err;           /* 0, UV_EOF or the error */
};

enum mode { MODE_ECHO = 0, MODE_STREAM, MODE_HOLD, MODE_PUSH };

static uv_loop_t g_loop;
static uv_timer_t g_guard;
static bool g_guard_fired;
static struct gw_http_server *g_srv;
static bool g_srv_closed;
static int g_port;
static struct client g_cli[3];
static enum mode g_mode;
static unsigned g_nreq, g_nhead, g_aborts, g_errors;
static struct gw_http_req *g_held;
static char g_peer[64], g_query[64], g_hdr[64];
static size_t g_pushed;         /* MODE_PUSH: body bytes written */
static unsigned g_drains;

static void on_guard(uv_timer_t *t)
{
    (void)t;
    g_guard_fired = true;
}

/* Run the loop until pred() holds; fail if the guard fires first. */
static void run_until_(bool (*pred)(void), const char *what)
{
    uv_timer_start(&g_guard, on_guard, GUARD_MS, 0);
    while (!pred() && !g_guard_fired)
        uv_run(&g_loop, UV_RUN_ONCE);
    uv_timer_stop(&g_guard);
    if (g_guard_fired)
        fail_msg("timed out waiting for %s", what);
}
#define run_until(pred) run_until_(pred, #pred)

/* ---- handler side ---- */

static void on_abort(struct gw_http_req *r, void *ud)
{
    (void)ud;
    assert_ptr_equal(r, g_held);
    g_aborts++;
    g_held = NULL;
}

static void copy_str(char *out, size_t cap, gw_str s)
{
    snprintf(out, cap, "%.*s", (int)s.len, s.p ? s.p : "");
}

static void push(struct gw_http_req *r);

static void on_request(struct gw_http_req *r)
{
    g_nreq++;
    copy_str(g_query, sizeof(g_query), gw_http_req_query(r));
    copy_str(g_hdr, sizeof(g_hdr), gw_http_req_header(r, "x-test"));
    snprintf(g_peer, sizeof(g_peer), "%s", gw_http_req_peer(r));
    gw_str path = gw_http_req_path(r), body = gw_http_req_body(r), m = gw_http_req_method(r);
    switch (g_mode) {
    case MODE_ECHO: {
        char out[512];
        int n = snprintf(out, sizeof(out), "%.*s %.*s body=%.*s", (int)m.len, m.p, (int)path.len,
                         path.p, (int)body.len, body.p);
        gw_http_resp_header(r, "X-Echo", "yes");
        gw_http_resp_send(r, 200, "text/plain", out, (size_t)n);
        break;
    }
    case MODE_STREAM: {
        gw_http_resp_start(r, 200, NULL);
        assert_true(gw_http_resp_started(r));
        assert_int_equal(gw_http_resp_write(r, "data: a\n\n", 9), 0);
        gw_str parts[3] = {GW_STR("data: "), GW_STR("bb"), GW_STR("\n\n")};
        assert_int_equal(gw_http_resp_writev(r, parts, 3), 0);
        assert_int_equal(gw_http_resp_write(r, "", 0), 0); /* nothing: no last-chunk */
        assert_int_equal(gw_http_resp_write(r, "data: [DONE]\n\n", 14), 0);
        gw_http_resp_end(r);
        break;
    }
    case MODE_PUSH:
        push(r);
        break;
    case MODE_HOLD:
        g_held = r;
        gw_http_req_set_abort(r, on_abort, NULL);
        gw_http_resp_start(r, 200, "text/event-stream");
        assert_int_equal(gw_http_resp_write(r, "data: first\n\n", 13), 0);
        break;
    }
}

/* MODE_PUSH: write until gw_http_resp_write() says the queue is above the
 * high-water mark, then end the response when the drain callback runs. */
static void on_drain(struct gw_http_req *r, void *ud)
{
    (void)ud;
    g_drains++;
    assert_true(gw_http_resp_queued(r) < 4096 / 2);
    g_held = NULL;
    gw_http_resp_end(r);
}

static void push(struct gw_http_req *r)
{
    static char chunk[65536];
    memset(chunk, 'p', sizeof(chunk));
    g_held = r;
    gw_http_req_set_abort(r, on_abort, NULL);
    gw_http_req_set_drain(r, on_drain, NULL);
    gw_http_resp_start(r, 200, "application/octet-stream");
    for (int i = 0; i < 4096; i++) {
        int rc = gw_http_resp_write(r, chunk, sizeof(chunk));
        assert_true(rc == 0 || rc == 1);
        g_pushed += sizeof(chunk);
        if (rc == 1) {
            assert_true(gw_http_resp_queued(r) > 4096);
            return;
        }
    }
    fail_msg("gw_http_resp_write never reported the high-water mark");
}

/* Paths under /deny are answered from on_head, before the body. */
static void on_head(struct gw_http_req *r)
{
    g_nhead++;
    gw_str path = gw_http_req_path(r);
    if (path.len >= 5 && memcmp(path.p, "/deny", 5) == 0)
        gw_http_resp_send(r, 401, "application/json", "{\"error\":\"no\"}", 14);
}

static void on_srv_closed(void *arg)
{
    (void)arg;
    g_srv_closed = true;
}

static void start_server(const struct gw_http_server_opts *extra)
{
    struct gw_http_server_opts o;
    if (extra) {
        o = *extra;
    } else {
        gw_http_server_opts_default(&o);
    }
    o.on_request = on_request;
    o.on_head = on_head;
    struct sockaddr_storage ss;
    assert_int_equal(gw_http_parse_addr("127.0.0.1:0", &ss), 0);
    assert_int_equal(gw_http_server_start(&g_loop, (struct sockaddr *)&ss, &o, &g_srv), 0);
    g_port = gw_http_server_port(g_srv);
    assert_true(g_port > 0);
}

/* ---- client side ---- */

static void cli_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    (void)suggested;
    static char buf[65536];
    *b = uv_buf_init(buf, sizeof(buf));
}

static void cli_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct client *c = s->data;
    if (n > 0) {
        assert_int_equal(gw_buf_append(&c->in, b->base, (size_t)n), 0);
    } else if (n < 0) {
        c->eof = true;
        c->read_err = (int)n;
        uv_read_stop(s);
    }
}

static void cli_connected(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    assert_int_equal(status, 0);
    c->connected = true;
    uv_read_start((uv_stream_t *)&c->tcp, cli_alloc, cli_read);
}

static struct client *g_waiting;
static bool connected(void)
{
    return g_waiting->connected;
}

static struct client *cli_connect(int i)
{
    struct client *c = &g_cli[i];
    memset(c, 0, sizeof(*c));
    c->used = true;
    gw_buf_init(&c->in, 0);
    assert_int_equal(uv_tcp_init(&g_loop, &c->tcp), 0);
    c->tcp.data = c;
    c->creq.data = c;
    struct sockaddr_in sa;
    assert_int_equal(uv_ip4_addr("127.0.0.1", g_port, &sa), 0);
    assert_int_equal(uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&sa, cli_connected), 0);
    g_waiting = c;
    run_until(connected);
    return c;
}

struct wbuf {
    uv_write_t req;
    char data[];
};

static void cli_written(uv_write_t *w, int status)
{
    (void)status; /* the server may have closed already: that is tested elsewhere */
    free(w);
}

static void cli_send(struct client *c, const char *data, size_t len)
{
    struct wbuf *w = malloc(sizeof(*w) + len);
    assert_non_null(w);
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    assert_int_equal(uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, cli_written), 0);
}

static void cli_sends(struct client *c, const char *s)
{
    cli_send(c, s, strlen(s));
}

static void cli_on_close(uv_handle_t *h)
{
    struct client *c = h->data;
    c->closed = true;
}

static void cli_close(struct client *c)
{
    if (c->used && !c->closing) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, cli_on_close);
    }
}

/* Predicates over g_waiting / the server. */
static size_t g_want;
static struct resp g_resp[4];
static size_t g_nresp;

static bool have_responses(void)
{
    g_nresp = parse_responses(g_waiting->in.data ? g_waiting->in.data : "", g_waiting->in.len,
                              g_resp, GW_ARRAY_LEN(g_resp));
    return g_nresp >= g_want;
}

static bool got_eof(void)
{
    return g_waiting->eof;
}

static bool no_conns(void)
{
    return gw_http_server_conns(g_srv) == 0;
}

static bool aborted(void)
{
    return g_aborts > 0;
}

static bool held(void)
{
    return g_held != NULL && g_waiting->in.len > 0 &&
           memmem(g_waiting->in.data, g_waiting->in.len, "data: first", 11) != NULL;
}

static bool srv_closed(void)
{
    return g_srv_closed;
}

static bool all_clients_closed(void)
{
    for (size_t i = 0; i < GW_ARRAY_LEN(g_cli); i++)
        if (g_cli[i].used && !g_cli[i].closed)
            return false;
    return true;
}

/* Wait until client c has n complete responses; they are in g_resp. */
static void wait_responses(struct client *c, size_t n)
{
    g_waiting = c;
    g_want = n;
    run_until(have_responses);
    assert_int_equal(g_nresp, n);
}

static void wait_eof(struct client *c)
{
    g_waiting = c;
    run_until(got_eof);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(uv_loop_init(&g_loop), 0);
    assert_int_equal(uv_timer_init(&g_loop, &g_guard), 0);
    g_guard_fired = false;
    g_srv = NULL;
    g_srv_closed = false;
    memset(g_cli, 0, sizeof(g_cli));
    g_mode = MODE_ECHO;
    g_nreq = g_nhead = g_aborts = g_errors = 0;
    g_held = NULL;
    g_pushed = 0;
    g_drains = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    g_guard_fired = false;
    if (g_held) {
        /* a failed test left a request with the handler: end it */
        gw_http_resp_end(g_held);
        g_held = NULL;
    }
    for (size_t i = 0; i < GW_ARRAY_LEN(g_cli); i++)
        cli_close(&g_cli[i]);
    if (g_srv)
        gw_http_server_close(g_srv, on_srv_closed, NULL);
    uv_timer_start(&g_guard, on_guard, GUARD_MS, 0);
    while ((!all_clients_closed() || (g_srv && !g_srv_closed)) && !g_guard_fired)
        uv_run(&g_loop, UV_RUN_ONCE);
    for (size_t i = 0; i < GW_ARRAY_LEN(g_cli); i++)
        gw_buf_free(&g_cli[i].in);
    if (g_guard_fired) {
        print_error("teardown: server or clients did not close\n");
        return -1;
    }
    uv_close((uv_handle_t *)&g_guard, NULL);
    uv_run(&g_loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&g_loop);
    if (rc != 0) {
        print_error("teardown: handles left on the loop (%s)\n", uv_err_name(rc));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */

static void test_keep_alive(void **state)
{
    (void)state;
    start_server(NULL);
    struct client *c = cli_connect(0);
    cli_sends(c, "GET /one?a=1 HTTP/1.1\r\nHost: t\r\nX-Test: v1\r\n\r\n");
    wait_responses(c, 1);
    assert_int_equal(g_resp[0].status, 200);
    assert_string_equal(g_resp[0].body, "GET /one body=");
    assert_string_equal(g_query, "a=1");
    assert_string_equal(g_hdr, "v1");
    assert_string_equal(g_peer, "127.0.0.1");
    assert_non_null(find_header(&g_resp[0], "Date"));
    assert_string_equal(find_header(&g_resp[0], "X-Echo"), "yes");
    assert_null(find_header(&g_resp[0], "Connection"));
    assert_int_equal(gw_http_server_conns(g_srv), 1);
    assert_int_equal(gw_http_server_inflight(g_srv), 0);

    /* the same connection serves the next request */
    cli_sends(c, "POST /two HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    wait_responses(c, 2);
    assert_int_equal(g_resp[1].status, 200);
    assert_string_equal(g_resp[1].body, "POST /two body=hello");
    assert_false(c->eof);
    assert_int_equal(g_nreq, 2);
    assert_int_equal(g_nhead, 2);
    assert_int_equal(gw_http_server_conns(g_srv), 1);
}

static void test_pipelining(void **state)
{
    (void)state;
    start_server(NULL);
    struct client *c = cli_connect(0);
    /* three requests in one write; the middle one is answered from on_head
     * and its body must be skipped, not parsed as a request */
    cli_sends(c, "GET /p1 HTTP/1.1\r\nHost: t\r\n\r\n"
                 "POST /deny HTTP/1.1\r\nHost: t\r\nContent-Length: 18\r\n\r\nGET /evil HTTP/1.1"
                 "POST /p3 HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz");
    wait_responses(c, 3);
    assert_int_equal(g_resp[0].status, 200);
    assert_string_equal(g_resp[0].body, "GET /p1 body=");
    assert_int_equal(g_resp[1].status, 401);
    assert_string_equal(g_resp[1].body, "{\"error\":\"no\"}");
    assert_int_equal(g_resp[2].status, 200);
    assert_string_equal(g_resp[2].body, "POST /p3 body=xyz");
    assert_int_equal(g_nreq, 2);
    assert_int_equal(g_nhead, 3);
    assert_false(c->eof);
    /* still usable */
    cli_sends(c, "GET /p4 HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_responses(c, 4);
    assert_string_equal(g_resp[3].body, "GET /p4 body=");
}

/* The server answers the error itself and closes the connection. */
static void test_server_errors(void **state)
{
    (void)state;
    static const struct {
        const char *req;        /* NULL: a huge header is generated */
        int status;
    } cases[] = {
        {"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n", 413},
        {NULL, 431},
        {"GARBAGE\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n\r\n", 431},
    };
    struct gw_http_server_opts o;
    gw_http_server_opts_default(&o);
    o.max_header_bytes = 4096;
    o.max_headers = 5;
    o.max_body_bytes = 1024;
    start_server(&o);
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        struct client *c = cli_connect((int)(i % 2));
        if (cases[i].req) {
            cli_sends(c, cases[i].req);
        } else {
            char big[16384];
            int n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX-Big: ");
            memset(big + n, 'a', 10000);
            memcpy(big + n + 10000, "\r\n\r\n", 4);
            cli_send(c, big, (size_t)n + 10004);
        }
        wait_responses(c, 1);
        if (g_resp[0].status != cases[i].status)
            fail_msg("case %zu: status %d, want %d", i, g_resp[0].status, cases[i].status);
        const char *conn = find_header(&g_resp[0], "Connection");
        assert_non_null(conn);
        assert_string_equal(conn, "close");
        assert_non_null(strstr(g_resp[0].body, "\"error\""));
        assert_non_null(strstr(g_resp[0].body, "\"message\""));
        wait_eof(c);
        /* nothing after the error response */
        assert_int_equal(parse_responses(c->in.data, c->in.len, g_resp, 4), 1);
        cli_close(c);
        g_waiting = c;
        run_until(all_clients_closed);
        gw_buf_free(&c->in);
        c->used = false;
    }
    assert_int_equal(g_nreq, 0);
    run_until(no_conns);
}

static void test_header_timeout(void **state)
{
    (void)state;
    struct gw_http_server_opts o;
    gw_http_server_opts_default(&o);
    o.header_timeout_ms = 50;
    start_server(&o);
    struct client *c = cli_connect(0);
    cli_sends(c, "GET /slow HTTP/1.1\r\nHost: t\r\n"); /* never finished */
    wait_responses(c, 1);
    assert_int_equal(g_resp[0].status, 408);
    assert_non_null(strstr(g_resp[0].body, "timed out"));
    wait_eof(c);
    assert_int_equal(g_nreq, 0);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    struct gw_http_server_opts o;
    gw_http_server_opts_default(&o);
    o.idle_timeout_ms = 50;
    start_server(&o);
    struct client *c = cli_connect(0);
    cli_sends(c, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_responses(c, 1);
    /* then nothing: the idle keep-alive connection is closed, silently */
    wait_eof(c);
    assert_int_equal(parse_responses(c->in.data, c->in.len, g_resp, 4), 1);
    run_until(no_conns);
}

static void test_chunked_stream(void **state)
{
    (void)state;
    g_mode = MODE_STREAM;
    start_server(NULL);
    struct client *c = cli_connect(0);
    cli_sends(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_responses(c, 1);
    assert_int_equal(g_resp[0].status, 200);
    assert_string_equal(find_header(&g_resp[0], "Transfer-Encoding"), "chunked");
    assert_string_equal(find_header(&g_resp[0], "Content-Type"), "text/event-stream");
    assert_null(find_header(&g_resp[0], "Content-Length"));
    assert_string_equal(g_resp[0].body, "data: a\n\ndata: bb\n\ndata: [DONE]\n\n");
    /* the exact framing: one chunk per write, writev parts joined */
    const char *body = strstr(c->in.data, "\r\n\r\n") + 4;
    assert_string_equal(body, "9\r\ndata: a\n\n\r\n"
                              "a\r\ndata: bb\n\n\r\n"
                              "e\r\ndata: [DONE]\n\n\r\n"
                              "0\r\n\r\n");
    /* keep-alive after a streamed response */
    g_mode = MODE_ECHO;
    cli_sends(c, "GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_responses(c, 2);
    assert_string_equal(g_resp[1].body, "GET /after body=");
}

static void test_abort_on_client_close(void **state)
{
    (void)state;
    g_mode = MODE_HOLD;
    start_server(NULL);
    struct client *c = cli_connect(0);
    cli_sends(c, "POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}");
    g_waiting = c;
    run_until(held);
    assert_int_equal(gw_http_server_inflight(g_srv), 1);
    assert_int_equal(g_aborts, 0);
    /* the client goes away mid-response */
    cli_close(c);
    run_until(aborted);
    assert_int_equal(g_aborts, 1);
    assert_null(g_held);
    assert_int_equal(gw_http_server_inflight(g_srv), 0);
    run_until(no_conns);
    assert_int_equal(g_aborts, 1);
}

/* Closing the server with a request in the handler aborts it. */
static void test_abort_on_server_close(void **state)
{
    (void)state;
    g_mode = MODE_HOLD;
    start_server(NULL);
    struct client *c = cli_connect(0);
    cli_sends(c, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    g_waiting = c;
    run_until(held);
    gw_http_server_close(g_srv, on_srv_closed, NULL);
    assert_int_equal(g_aborts, 1);
    run_until(srv_closed);
    g_srv = NULL;
    wait_eof(c);
}

static bool stream_ended(void)
{
    const struct gw_buf *b = &g_waiting->in;
    return b->len >= 5 && memcmp(b->data + b->len - 5, "0\r\n\r\n", 5) == 0;
}

/* Backpressure: past the high-water mark resp_write returns 1, the drain
 * callback runs once the client has read enough, and every byte arrives. */
static void test_backpressure_drain(void **state)
{
    (void)state;
    g_mode = MODE_PUSH;
    struct gw_http_server_opts o;
    gw_http_server_opts_default(&o);
    o.write_high_water = 4096;
    start_server(&o);
    struct client *c = cli_connect(0);
    cli_sends(c, "GET /push HTTP/1.1\r\nHost: t\r\n\r\n");
    g_waiting = c;
    run_until(stream_ended);
    assert_int_equal(g_drains, 1);
    assert_true(g_pushed >= 65536);
    /* count the body bytes: every chunk is 64 KiB of 'p' */
    const char *body = memmem(c->in.data, c->in.len, "\r\n\r\n", 4);
    assert_non_null(body);
    size_t ps = 0;
    for (const char *q = body; q < c->in.data + c->in.len; q++)
        ps += *q == 'p';
    assert_int_equal(ps, g_pushed);
    assert_int_equal(gw_http_server_inflight(g_srv), 0);
    assert_false(c->eof);
}

static void test_expect_continue(void **state)
{
    (void)state;
    start_server(NULL);
    struct client *c = cli_connect(0);
    cli_sends(c, "POST /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                 "Content-Length: 4\r\n\r\n");
    wait_responses(c, 1);
    assert_int_equal(g_resp[0].status, 100);
    assert_int_equal(g_nreq, 0);
    cli_sends(c, "data");
    wait_responses(c, 2);
    assert_int_equal(g_resp[1].status, 200);
    assert_string_equal(g_resp[1].body, "POST /up body=data");
}

static void test_http10_closes(void **state)
{
    (void)state;
    start_server(NULL);
    struct client *c = cli_connect(0);
    cli_sends(c, "GET /old HTTP/1.0\r\n\r\n");
    wait_responses(c, 1);
    assert_int_equal(g_resp[0].status, 200);
    const char *conn = find_header(&g_resp[0], "Connection");
    assert_non_null(conn);
    assert_string_equal(conn, "close");
    wait_eof(c);
}

static void test_two_clients(void **state)
{
    (void)state;
    start_server(NULL);
    struct client *a = cli_connect(0), *b = cli_connect(1);
    /* a sends half a request; b is served meanwhile */
    cli_sends(a, "GET /a HTTP/1.1\r\nHo");
    cli_sends(b, "GET /b HTTP/1.1\r\nHost: t\r\n\r\n");
    wait_responses(b, 1);
    assert_string_equal(g_resp[0].body, "GET /b body=");
    assert_int_equal(gw_http_server_conns(g_srv), 2);
    cli_sends(a, "st: t\r\n\r\n");
    wait_responses(a, 1);
    assert_string_equal(g_resp[0].body, "GET /a body=");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keep_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_on_client_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_on_server_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http10_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_clients, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
