/*
 * server.c - HTTP/1.1 server connections on a libuv loop (see http.h).
 *
 * A connection moves through explicit states, changed only by set_state():
 *
 *   IDLE ──first byte──► HEAD ──headers──► BODY ──body──► HANDLER
 *     ▲                                                      │
 *     └──────────── response ended, keep-alive ◄─────────────┘
 *
 * One timer per connection enforces the deadline of the current state: idle
 * keep-alive time in IDLE, an absolute header deadline from the first byte
 * in HEAD (a slowloris peer cannot extend it by dribbling bytes), a body
 * deadline in BODY. In HANDLER the handler's own timeouts apply.
 *
 * Reading never stops while a request is in the handler: that is how a
 * client disconnect mid-stream is noticed at once. Bytes of a pipelined next
 * request are stashed (capped) and parsed only after the response ended.
 *
 * Writes try the socket directly (uv_try_write) and copy only what the
 * kernel did not take into a queued uv_write, so a fast client costs no copy.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "hybridgw/buf.h"
#include "hybridgw/http.h"
#include "hybridgw/log.h"
#include "http/h1.h"

enum conn_state {
    CONN_IDLE = 0,  /* between requests, waiting for the first byte */
    CONN_HEAD,      /* reading request line and headers */
    CONN_BODY,      /* reading the body */
    CONN_HANDLER,   /* the request is with the handler */
    CONN_CLOSING,   /* handles are being closed */
    CONN_STATE_COUNT
};

static const char *const conn_state_names[] = {"idle", "head", "body", "handler", "closing"};
_Static_assert(GW_ARRAY_LEN(conn_state_names) == CONN_STATE_COUNT, "conn state names");

struct conn;

struct gw_http_req {
    struct conn *conn;
    struct gw_arena arena;
    gw_str method, path, query;
    uint64_t start_ns;
    struct gw_buf resp_head;    /* extra response headers, "Name: value\r\n" */
    void *data;
    gw_http_abort_cb on_abort;
    void *abort_ud;
    gw_http_drain_cb on_drain;
    void *drain_ud;
    char peer[48];
    uint64_t bytes_out;         /* response bytes handed to the socket */
    int status;                 /* response status, 0 before the head */
    bool owned;                 /* the handler owns it (on_request ran) */
    bool started;               /* response head sent */
    bool chunked;
    bool ended;                 /* response complete */
    bool want_drain;            /* resp_write returned 1 */
    bool answered_in_head;      /* on_head sent a response */
    bool is_head;               /* HEAD: the response has no body */
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    struct gw_http_server *srv;
    struct gw_h1 *h1;
    struct gw_http_req *req;    /* the request being read or handled */
    char *stash;                /* unparsed bytes (pipelined requests) */
    size_t stash_len, stash_cap;
    struct conn *prev, *next;   /* server's list of connections */
    enum conn_state state;
    unsigned handles_open;      /* tcp + timer until both close callbacks ran */
    unsigned writes_pending;
    bool keep_alive;            /* decided per request */
    bool peer_gone;             /* EOF or error seen */
    bool close_after_write;     /* close once writes are flushed */
    bool lingering;             /* write side shut: drain input, then close */
    bool reading_stopped;       /* pipelined input over its cap */
    unsigned feeding;           /* conn_feed() is on the stack */
};

struct gw_http_server {
    uv_tcp_t listener;
    uv_loop_t *loop;
    struct gw_http_server_opts opts;
    struct conn *conns;         /* doubly linked list */
    size_t nconns;
    size_t inflight;
    bool accepting;
    bool closing;
    bool listener_closed;
    void (*on_closed)(void *);
    void *on_closed_arg;
    char *rbuf;                 /* shared read buffer, one per loop */
    size_t rbuf_size;
};

#define READ_BUF_SIZE 65536

static void conn_close(struct conn *c);
static void conn_process(struct conn *c);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);
static void req_finish(struct gw_http_req *r);

/* ---- small helpers ---- */

const char *gw_http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 529: return "Site Overloaded";
    default: return "Unknown";
    }
}

void gw_http_server_opts_default(struct gw_http_server_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->max_header_bytes = 32 * 1024;
    o->max_headers = 100;
    o->max_body_bytes = 8 * 1024 * 1024;
    o->header_timeout_ms = 10000;
    o->body_timeout_ms = 10000;
    o->idle_timeout_ms = 75000;
    o->write_high_water = 64 * 1024;
}

int gw_http_parse_addr(const char *s, struct sockaddr_storage *addr)
{
    char host[128];
    const char *colon;
    memset(addr, 0, sizeof(*addr));
    if (!s || !*s)
        return UV_EINVAL;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host))
            return UV_EINVAL;
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof(host))
            return UV_EINVAL;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        if (!host[0])
            strcpy(host, "0.0.0.0");
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535 || end == colon + 1)
        return UV_EINVAL;
    if (strchr(host, ':'))
        return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)addr);
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)addr);
}

static void set_state(struct conn *c, enum conn_state s)
{
    gw_log_debug("conn %p: %s -> %s", (void *)c, conn_state_names[c->state], conn_state_names[s]);
    c->state = s;
}

static void on_timer(uv_timer_t *t);

static void arm_timer(struct conn *c, uint64_t ms)
{
    if (ms)
        uv_timer_start(&c->timer, on_timer, ms, 0);
    else
        uv_timer_stop(&c->timer);
}

/* Cached "Date:" value, refreshed once a second per thread. */
static const char *http_date(void)
{
    static _Thread_local char buf[40];
    static _Thread_local time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

/* ---- writing ---- */

struct wreq {
    uv_write_t req;
    struct conn *conn;
    size_t len;
    char data[];
};

static void maybe_drain(struct conn *c)
{
    struct gw_http_req *r = c->req;
    if (r && r->want_drain && r->on_drain && !r->ended &&
        c->tcp.write_queue_size < c->srv->opts.write_high_water / 2) {
        r->want_drain = false;
        r->on_drain(r, r->drain_ud);
    }
}

#define LINGER_MS 2000

/* The response is out and our side is shut. Closing now with unread client
 * bytes in the kernel would send a RST that can destroy the response before
 * the client reads it, so keep reading and discarding for a short while. */
static void on_shutdown(uv_shutdown_t *sr, int status)
{
    struct conn *c = sr->data;
    free(sr);
    if (status < 0 || c->peer_gone || c->state == CONN_CLOSING) {
        conn_close(c);
        return;
    }
    c->lingering = true;
    arm_timer(c, LINGER_MS);
}

static void start_shutdown(struct conn *c)
{
    uv_shutdown_t *sr = gw_malloc(sizeof(*sr));
    sr->data = c;
    if (uv_shutdown(sr, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        free(sr);
        conn_close(c);
    }
}

static void close_when_flushed(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    if (c->peer_gone) {
        conn_close(c);
        return;
    }
    if (c->close_after_write)
        return;
    c->close_after_write = true;
    uv_timer_stop(&c->timer);
    if (c->writes_pending == 0)
        start_shutdown(c);
}

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = (struct wreq *)w;
    struct conn *c = wr->conn;
    free(wr);
    c->writes_pending--;
    if (c->state == CONN_CLOSING)
        return;
    if (status < 0) {
        c->peer_gone = true;
        /* the abort path runs from the read side or right here */
        if (c->req && c->req->owned && !c->req->ended) {
            struct gw_http_req *r = c->req;
            if (r->on_abort) {
                gw_http_abort_cb cb = r->on_abort;
                r->on_abort = NULL;
                r->ended = true;
                cb(r, r->abort_ud);
                req_finish(r);
            }
        }
        conn_close(c);
        return;
    }
    if (c->close_after_write && c->writes_pending == 0) {
        start_shutdown(c);
        return;
    }
    maybe_drain(c);
}

/* Write bufs to the connection: directly when nothing is queued, and the
 * rest copied into one queued write. Returns 0 or -1 (connection gone). */
static int conn_write(struct conn *c, uv_buf_t *bufs, unsigned nbufs)
{
    if (c->state == CONN_CLOSING || c->peer_gone)
        return -1;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    size_t done = 0;
    if (c->writes_pending == 0) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
        if (n > 0)
            done = (size_t)n;
        else if (n < 0 && n != UV_EAGAIN) {
            c->peer_gone = true;
            return -1;
        }
    }
    if (done == total)
        return 0;
    struct wreq *wr = gw_malloc(sizeof(*wr) + (total - done));
    wr->conn = c;
    wr->len = total - done;
    size_t off = 0, skip = done;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t l = bufs[i].len;
        const char *p = bufs[i].base;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        p += skip;
        l -= skip;
        skip = 0;
        memcpy(wr->data + off, p, l);
        off += l;
    }
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
    int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc < 0) {
        free(wr);
        c->peer_gone = true;
        return -1;
    }
    c->writes_pending++;
    return 0;
}

/* ---- requests ---- */

static struct gw_http_req *req_new(struct conn *c)
{
    struct gw_http_req *r = gw_calloc(1, sizeof(*r));
    r->conn = c;
    gw_arena_init(&r->arena, 512); /* little lives here; long streams keep it */
    gw_buf_init(&r->resp_head, 64 * 1024);
    r->start_ns = gw_now_ns();
    return r;
}

static void req_free(struct gw_http_req *r)
{
    struct gw_http_server *s = r->conn->srv;
    if (r->status && s->opts.on_complete)
        s->opts.on_complete(r);
    gw_arena_free(&r->arena);
    gw_buf_free(&r->resp_head);
    free(r);
}

struct gw_http_server *gw_http_req_server(struct gw_http_req *r)
{
    return r->conn->srv;
}

uv_loop_t *gw_http_req_loop(struct gw_http_req *r)
{
    return r->conn->srv->loop;
}

struct gw_arena *gw_http_req_arena(struct gw_http_req *r)
{
    return &r->arena;
}

gw_str gw_http_req_method(const struct gw_http_req *r)
{
    return r->method;
}

gw_str gw_http_req_path(const struct gw_http_req *r)
{
    return r->path;
}

gw_str gw_http_req_query(const struct gw_http_req *r)
{
    return r->query;
}

gw_str gw_http_req_header(const struct gw_http_req *r, const char *name)
{
    return gw_h1_header(r->conn->h1, name);
}

size_t gw_http_req_header_count(const struct gw_http_req *r)
{
    return gw_h1_header_count(r->conn->h1);
}

void gw_http_req_header_at(const struct gw_http_req *r, size_t i, gw_str *name, gw_str *value)
{
    gw_h1_header_at(r->conn->h1, i, name, value);
}

gw_str gw_http_req_body(const struct gw_http_req *r)
{
    return gw_h1_body(r->conn->h1);
}

void gw_http_req_drop_body(struct gw_http_req *r)
{
    gw_h1_discard_body(r->conn->h1);
}

const char *gw_http_req_peer(struct gw_http_req *r)
{
    if (!r->peer[0]) {
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        if (uv_tcp_getpeername(&r->conn->tcp, (struct sockaddr *)&ss, &len) == 0) {
            if (ss.ss_family == AF_INET6)
                uv_ip6_name((struct sockaddr_in6 *)&ss, r->peer, sizeof(r->peer));
            else
                uv_ip4_name((struct sockaddr_in *)&ss, r->peer, sizeof(r->peer));
        } else {
            strcpy(r->peer, "-");
        }
    }
    return r->peer;
}

void gw_http_req_set_data(struct gw_http_req *r, void *data)
{
    r->data = data;
}

void *gw_http_req_data(const struct gw_http_req *r)
{
    return r->data;
}

void gw_http_req_set_abort(struct gw_http_req *r, gw_http_abort_cb cb, void *ud)
{
    r->on_abort = cb;
    r->abort_ud = ud;
}

void gw_http_req_set_drain(struct gw_http_req *r, gw_http_drain_cb cb, void *ud)
{
    r->on_drain = cb;
    r->drain_ud = ud;
}

uint64_t gw_http_req_start_ns(const struct gw_http_req *r)
{
    return r->start_ns;
}

/* ---- response ---- */

void gw_http_resp_header_n(struct gw_http_req *r, const char *name, const char *value,
                           size_t vlen)
{
    if (r->started)
        return;
    /* never let a value smuggle a header line */
    for (size_t i = 0; i < vlen; i++)
        if (value[i] == '\r' || value[i] == '\n')
            return;
    gw_buf_puts(&r->resp_head, name);
    gw_buf_append(&r->resp_head, ": ", 2);
    gw_buf_append(&r->resp_head, value, vlen);
    gw_buf_append(&r->resp_head, "\r\n", 2);
}

void gw_http_resp_header(struct gw_http_req *r, const char *name, const char *value)
{
    gw_http_resp_header_n(r, name, value, strlen(value));
}

static bool want_close(struct conn *c)
{
    return !c->keep_alive || !c->srv->accepting || c->peer_gone;
}

static int build_head(struct gw_http_req *r, char *out, size_t cap, int status,
                      const char *ctype, bool chunked, size_t clen)
{
    struct conn *c = r->conn;
    int n;
    if (chunked)
        n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\n"
                     "Transfer-Encoding: chunked\r\n%s",
                     status, gw_http_status_text(status), http_date(), ctype,
                     want_close(c) ? "Connection: close\r\n" : "");
    else
        n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n%s",
                     status, gw_http_status_text(status), http_date(), ctype, clen,
                     want_close(c) ? "Connection: close\r\n" : "");
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return n;
}

/* The response is complete: release the request, then either close the
 * connection or go back to parsing (pipelined bytes may be waiting). */
static void req_finish(struct gw_http_req *r)
{
    struct conn *c = r->conn;
    bool close_it = want_close(c);
    if (r->owned && c->srv->inflight > 0)
        c->srv->inflight--;
    c->req = NULL;
    req_free(r);
    if (c->state == CONN_CLOSING) {
        conn_close(c); /* may free c now that the request is gone */
        return;
    }
    if (close_it) {
        close_when_flushed(c);
        return;
    }
    gw_h1_reset(c->h1);
    set_state(c, CONN_IDLE);
    arm_timer(c, c->srv->opts.idle_timeout_ms);
    conn_process(c);
}

void gw_http_resp_send(struct gw_http_req *r, int status, const char *content_type,
                       const void *body, size_t len)
{
    if (r->started || r->ended)
        return;
    char head[512];
    int n = build_head(r, head, sizeof(head), status,
                       content_type ? content_type : "application/json", false, len);
    r->started = true;
    r->ended = true;
    r->status = status;
    if (r->is_head)
        len = 0; /* Content-Length says what a GET would get; no body */
    r->bytes_out += (size_t)(n > 0 ? n : 0) + r->resp_head.len + 2 + len;
    if (n > 0) {
        uv_buf_t bufs[4] = {
            uv_buf_init(head, (unsigned)n),
            uv_buf_init(r->resp_head.data ? r->resp_head.data : "",
                        (unsigned)r->resp_head.len),
            uv_buf_init("\r\n", 2),
            uv_buf_init((char *)body, (unsigned)len),
        };
        conn_write(r->conn, bufs, len ? 4 : 3);
    }
    if (!r->owned) {
        /* answered from on_head or by the server itself: the request is
         * finished by the read path once the body has been skipped */
        r->answered_in_head = true;
        return;
    }
    req_finish(r);
}

void gw_http_resp_start(struct gw_http_req *r, int status, const char *content_type)
{
    if (r->started || r->ended)
        return;
    char head[512];
    int n = build_head(r, head, sizeof(head), status,
                       content_type ? content_type : "text/event-stream", true, 0);
    r->started = true;
    r->chunked = true;
    r->status = status;
    r->bytes_out += (size_t)(n > 0 ? n : 0) + r->resp_head.len + 2;
    if (n > 0) {
        uv_buf_t bufs[3] = {
            uv_buf_init(head, (unsigned)n),
            uv_buf_init(r->resp_head.data ? r->resp_head.data : "",
                        (unsigned)r->resp_head.len),
            uv_buf_init("\r\n", 2),
        };
        conn_write(r->conn, bufs, 3);
    }
    gw_buf_free(&r->resp_head);
}

int gw_http_resp_writev(struct gw_http_req *r, const gw_str *parts, size_t nparts)
{
    struct conn *c = r->conn;
    if (!r->started || r->ended || !r->chunked || nparts > 8)
        return -1;
    size_t len = 0;
    for (size_t i = 0; i < nparts; i++)
        len += parts[i].len;
    if (len == 0)
        return 0;
    char size[24];
    int n = snprintf(size, sizeof(size), "%zx\r\n", len);
    uv_buf_t bufs[10];
    unsigned nb = 0;
    bufs[nb++] = uv_buf_init(size, (unsigned)n);
    for (size_t i = 0; i < nparts; i++)
        if (parts[i].len)
            bufs[nb++] = uv_buf_init((char *)parts[i].p, (unsigned)parts[i].len);
    bufs[nb++] = uv_buf_init("\r\n", 2);
    if (conn_write(c, bufs, nb) < 0)
        return -1;
    r->bytes_out += len;
    if (c->tcp.write_queue_size > c->srv->opts.write_high_water) {
        r->want_drain = true;
        return 1;
    }
    return 0;
}

int gw_http_resp_write(struct gw_http_req *r, const void *data, size_t len)
{
    gw_str part = {data, len};
    return gw_http_resp_writev(r, &part, 1);
}

size_t gw_http_resp_queued(const struct gw_http_req *r)
{
    return r->conn->tcp.write_queue_size;
}

bool gw_http_resp_started(const struct gw_http_req *r)
{
    return r->started;
}

int gw_http_resp_status(const struct gw_http_req *r)
{
    return r->status;
}

uint64_t gw_http_resp_bytes(const struct gw_http_req *r)
{
    return r->bytes_out;
}

void gw_http_resp_end(struct gw_http_req *r)
{
    if (r->ended)
        return;
    if (!r->started) {
        gw_http_resp_send(r, 500, NULL, "", 0);
        return;
    }
    r->ended = true;
    uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
    conn_write(r->conn, &b, 1);
    req_finish(r);
}

void gw_http_req_reset(struct gw_http_req *r)
{
    struct conn *c = r->conn;
    r->ended = true;
    c->keep_alive = false;
    c->peer_gone = true; /* nothing more is written */
    req_finish(r);
    conn_close(c);
}

/* Answer on the server's behalf (bad request, too large, timeout). The
 * connection is closed afterwards: its byte stream can't be trusted. */
static void server_error(struct conn *c, int status, const char *msg)
{
    if (!c->req)
        c->req = req_new(c);
    struct gw_http_req *r = c->req;
    c->keep_alive = false;
    if (!r->method.p) {
        /* the request line may be in (a 413 for a declared length comes
         * right after the headers): the error handler can then answer in
         * the dialect of the path */
        gw_str url = gw_h1_url(c->h1);
        if (url.len) {
            const char *q = memchr(url.p, '?', url.len);
            r->method = gw_h1_method(c->h1);
            r->path = (gw_str){url.p, q ? (size_t)(q - url.p) : url.len};
        } else {
            r->method = GW_STR("-");
            r->path = GW_STR("-");
        }
    }
    if (c->srv->opts.on_error) {
        c->srv->opts.on_error(r, status, msg);
    }
    if (!r->started) {
        char body[256];
        struct gw_buf b;
        gw_buf_init(&b, 0);
        gw_buf_puts(&b, "{\"error\":{\"message\":");
        gw_buf_json_str(&b, msg, strlen(msg));
        gw_buf_printf(&b, ",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}");
        snprintf(body, sizeof(body), "%s", b.data ? b.data : "{}");
        gw_buf_free(&b);
        gw_http_resp_send(r, status, "application/json", body, strlen(body));
    }
    c->req = NULL;
    req_free(r);
    close_when_flushed(c);
}

/* ---- reading ---- */

static void stash_keep(struct conn *c, const char *p, size_t n)
{
    if (n == 0)
        return;
    if (c->stash_len + n > c->stash_cap) {
        size_t cap = c->stash_cap ? c->stash_cap : 4096;
        while (cap < c->stash_len + n)
            cap *= 2;
        c->stash = gw_realloc(c->stash, cap);
        c->stash_cap = cap;
    }
    memcpy(c->stash + c->stash_len, p, n);
    c->stash_len += n;
}

static void on_head_complete(struct conn *c)
{
    struct gw_http_req *r = c->req;
    gw_str url = gw_h1_url(c->h1);
    const char *q = memchr(url.p, '?', url.len);
    r->method = gw_h1_method(c->h1);
    r->is_head = gw_str_eq_c(r->method, "HEAD");
    r->path = (gw_str){url.p, q ? (size_t)(q - url.p) : url.len};
    r->query = q ? (gw_str){q + 1, url.len - (size_t)(q - url.p) - 1} : GW_STR("");
    c->keep_alive = gw_h1_keep_alive(c->h1);
    if (c->srv->opts.on_head)
        c->srv->opts.on_head(r);
    if (r->answered_in_head) {
        gw_h1_discard_body(c->h1);
        /* a client waiting for 100-continue will not send the body */
        if (gw_h1_expect_continue(c->h1) && gw_h1_has_body(c->h1)) {
            c->keep_alive = false;
            c->req = NULL;
            req_free(r);
            close_when_flushed(c);
            return;
        }
    } else if (gw_h1_expect_continue(c->h1) && gw_h1_has_body(c->h1)) {
        uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
        conn_write(c, &b, 1);
    }
    set_state(c, CONN_BODY);
    arm_timer(c, c->srv->opts.body_timeout_ms);
}

static void on_message_done(struct conn *c)
{
    struct gw_http_req *r = c->req;
    uv_timer_stop(&c->timer);
    if (r->answered_in_head) {
        /* the response went out from on_head; this request is finished */
        if (!c->keep_alive) {
            c->req = NULL;
            req_free(r);
            close_when_flushed(c);
            return;
        }
        req_finish(r);
        return;
    }
    set_state(c, CONN_HANDLER);
    r->owned = true;
    c->srv->inflight++;
    c->srv->opts.on_request(r);
}

/* Run the state machine over data as far as it goes. Stops at a request
 * handed to the handler; bytes after it are stashed. When the handler ends
 * the request synchronously, parsing goes on here with the stash (a loop,
 * not recursion, so a burst of pipelined requests can't exhaust the stack). */
static void conn_feed(struct conn *c, const char *data, size_t len)
{
    char *owned = NULL;
    c->feeding++;
    while (len > 0 && c->state != CONN_CLOSING && !c->close_after_write) {
        if (c->state == CONN_HANDLER) {
            /* pipelined bytes: keep them for later, bounded */
            if (c->stash_len + len > c->srv->opts.max_header_bytes + c->srv->opts.max_body_bytes) {
                uv_read_stop((uv_stream_t *)&c->tcp);
                c->reading_stopped = true;
                break;
            }
            stash_keep(c, data, len);
            break;
        }
        if (c->state == CONN_IDLE) {
            if (!c->req)
                c->req = req_new(c);
            set_state(c, CONN_HEAD);
            arm_timer(c, c->srv->opts.header_timeout_ms);
        }
        size_t used = 0;
        enum gw_h1_ev ev = gw_h1_feed(c->h1, data, len, &used);
        data += used;
        len -= used;
        if (ev == GW_H1_NEED_MORE) {
            if (used == 0)
                break;
        } else if (ev == GW_H1_HEAD) {
            on_head_complete(c);
        } else if (ev == GW_H1_DONE) {
            if (len)
                stash_keep(c, data, len);
            len = 0;
            on_message_done(c);
            if (c->state == CONN_IDLE && c->stash_len) {
                /* answered synchronously: go on with what was stashed */
                free(owned);
                owned = c->stash;
                data = owned;
                len = c->stash_len;
                c->stash = NULL;
                c->stash_len = c->stash_cap = 0;
            }
        } else {
            server_error(c, gw_h1_error_status(c->h1), gw_h1_error_msg(c->h1));
            break;
        }
    }
    c->feeding--;
    free(owned);
}

/* Parse stashed bytes after a response ended asynchronously. */
static void conn_process(struct conn *c)
{
    if (c->feeding || c->stash_len == 0 || c->state != CONN_IDLE)
        return;
    char *buf = c->stash;
    size_t len = c->stash_len;
    c->stash = NULL;
    c->stash_len = c->stash_cap = 0;
    conn_feed(c, buf, len);
    free(buf);
    if (c->reading_stopped && c->state != CONN_CLOSING && !c->peer_gone) {
        c->reading_stopped = false;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    struct gw_http_server *s = c->srv;
    buf->base = s->rbuf;
    buf->len = s->rbuf_size;
}

static void peer_gone(struct conn *c)
{
    c->peer_gone = true;
    struct gw_http_req *r = c->req;
    if (r && r->owned && !r->ended) {
        if (r->on_abort) {
            gw_http_abort_cb cb = r->on_abort;
            r->on_abort = NULL;
            r->ended = true;
            cb(r, r->abort_ud);
            c->req = NULL;
            if (c->srv->inflight > 0)
                c->srv->inflight--;
            req_free(r);
            conn_close(c);
        } else {
            /* the handler still holds it; close once it ends the request */
            uv_read_stop((uv_stream_t *)&c->tcp);
        }
        return;
    }
    conn_close(c);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = st->data;
    if (n < 0) {
        peer_gone(c);
        return;
    }
    if (n == 0 || c->lingering || c->state == CONN_CLOSING)
        return;
    if (c->stash_len && c->state != CONN_HANDLER) {
        /* older bytes first */
        stash_keep(c, buf->base, (size_t)n);
        conn_process(c);
        return;
    }
    conn_feed(c, buf->base, (size_t)n);
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->lingering) {
        conn_close(c);
        return;
    }
    switch (c->state) {
    case CONN_IDLE:
        conn_close(c);
        break;
    case CONN_HEAD:
        server_error(c, 408, "timed out reading the request headers");
        break;
    case CONN_BODY:
        server_error(c, 408, "timed out reading the request body");
        break;
    default:
        break;
    }
}

/* ---- connection lifetime ---- */

static void conn_free(struct conn *c)
{
    struct gw_http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    gw_h1_free(c->h1);
    free(c->stash);
    free(c);
}

static void server_maybe_done(struct gw_http_server *s);

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct gw_http_server *s = c->srv;
    if (--c->handles_open == 0 && !c->req) {
        conn_free(c);
        server_maybe_done(s);
    }
}

static void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSING) {
        /* second call after the held request finished: free if possible */
        if (c->handles_open == 0 && !c->req) {
            struct gw_http_server *s = c->srv;
            conn_free(c);
            server_maybe_done(s);
        }
        return;
    }
    set_state(c, CONN_CLOSING);
    struct gw_http_req *r = c->req;
    if (r && r->owned && !r->ended && r->on_abort) {
        gw_http_abort_cb cb = r->on_abort;
        r->on_abort = NULL;
        r->ended = true;
        cb(r, r->abort_ud);
        c->req = NULL;
        if (c->srv->inflight > 0)
            c->srv->inflight--;
        req_free(r);
    } else if (r && !r->owned) {
        c->req = NULL;
        req_free(r);
    }
    /* else: the handler owns the request and will end it; freed then */
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct gw_http_server *s = ls->data;
    if (status < 0) {
        gw_log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    struct conn *c = gw_calloc(1, sizeof(*c));
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
        s->nconns++;
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct gw_h1_limits lim = {s->opts.max_header_bytes, s->opts.max_headers,
                               s->opts.max_body_bytes};
    c->h1 = gw_h1_new(&lim);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    set_state(c, CONN_IDLE);
    arm_timer(c, s->opts.idle_timeout_ms);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (!s->accepting)
        c->keep_alive = false;
}

/* ---- server ---- */

int gw_http_server_start(uv_loop_t *loop, const struct sockaddr *addr,
                         const struct gw_http_server_opts *opts,
                         struct gw_http_server **out)
{
    struct gw_http_server *s = gw_calloc(1, sizeof(*s));
    s->loop = loop;
    s->opts = *opts;
    s->rbuf_size = READ_BUF_SIZE;
    s->rbuf = gw_malloc(s->rbuf_size);
    int rc = uv_tcp_init_ex(loop, &s->listener, addr->sa_family);
    if (rc < 0)
        goto fail;
    s->listener.data = s;
    uv_os_fd_t fd;
    uv_fileno((uv_handle_t *)&s->listener, &fd);
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        rc = uv_translate_sys_error(errno);
        goto fail_close;
    }
    rc = uv_tcp_bind(&s->listener, addr, 0);
    if (rc < 0)
        goto fail_close;
    rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    if (rc < 0)
        goto fail_close;
    s->accepting = true;
    *out = s;
    return 0;
fail_close:
    uv_close((uv_handle_t *)&s->listener, NULL);
    /* the listener handle lives in s: run the loop once so the close
     * completes before freeing */
    uv_run(loop, UV_RUN_NOWAIT);
fail:
    free(s->rbuf);
    free(s);
    return rc;
}

int gw_http_server_port(const struct gw_http_server *s)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

void *gw_http_server_ud(const struct gw_http_server *s)
{
    return s->opts.ud;
}

uv_loop_t *gw_http_server_loop(const struct gw_http_server *s)
{
    return s->loop;
}

void gw_http_server_set_limits(struct gw_http_server *s, const struct gw_http_server_opts *o)
{
    s->opts.max_header_bytes = o->max_header_bytes;
    s->opts.max_headers = o->max_headers;
    s->opts.max_body_bytes = o->max_body_bytes;
    s->opts.header_timeout_ms = o->header_timeout_ms;
    s->opts.body_timeout_ms = o->body_timeout_ms;
    s->opts.idle_timeout_ms = o->idle_timeout_ms;
    s->opts.write_high_water = o->write_high_water;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct gw_http_server *s = h->data;
    s->accepting = false;
    s->listener_closed = true;
    server_maybe_done(s);
}

void gw_http_server_stop_accepting(struct gw_http_server *s)
{
    if (!s->accepting)
        return;
    s->accepting = false;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    /* idle connections go now; busy ones close after their response */
    struct conn *c = s->conns;
    while (c) {
        struct conn *next = c->next;
        if (c->state == CONN_IDLE)
            conn_close(c);
        else
            c->keep_alive = false;
        c = next;
    }
}

size_t gw_http_server_conns(const struct gw_http_server *s)
{
    return s->nconns;
}

size_t gw_http_server_inflight(const struct gw_http_server *s)
{
    return s->inflight;
}

static void server_maybe_done(struct gw_http_server *s)
{
    if (!s->closing || s->nconns > 0 || !s->listener_closed)
        return;
    void (*cb)(void *) = s->on_closed;
    void *arg = s->on_closed_arg;
    s->on_closed = NULL;
    s->closing = false;
    free(s->rbuf);
    free(s);
    if (cb)
        cb(arg);
}

void gw_http_server_close(struct gw_http_server *s, void (*on_closed)(void *), void *arg)
{
    s->on_closed = on_closed;
    s->on_closed_arg = arg;
    if (s->accepting) {
        s->accepting = false;
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    }
    s->closing = true;
    struct conn *c = s->conns;
    while (c) {
        struct conn *next = c->next;
        conn_close(c);
        c = next;
    }
    server_maybe_done(s);
}
