/*
 * http.h - the HTTP/1.1 server side: listening sockets, connections,
 * request parsing (through the http-parser wrapper in src/http/parser.c) and
 * the response writer, including chunked streaming with backpressure.
 *
 * One gw_http_server belongs to one libuv loop (one worker thread). Several
 * servers in several threads may listen on the same address: the socket is
 * bound with SO_REUSEPORT and the kernel spreads connections among them.
 *
 * Request lifecycle
 *   1. on_head(req) runs once the request line and headers are in. It may
 *      answer at once (e.g. 401, 404, 405, 413) by sending a response; the
 *      body is then read and discarded (up to the body cap) or the connection
 *      is closed.
 *   2. on_request(req) runs once the whole body is in (capped by
 *      max_body_bytes; past it the server answers 413 itself through
 *      on_error). From here the handler owns the response: it must end it
 *      with gw_http_resp_send() or gw_http_resp_start() ... gw_http_resp_end().
 *   3. If the client goes away (or a timeout fires) while the handler still
 *      owns the request, the server calls the abort callback set with
 *      gw_http_req_set_abort(). After that callback returns the request is
 *      gone: the handler must not touch it again. Without an abort callback
 *      the server keeps the request alive until the handler ends it.
 * Pipelined requests are parsed one at a time: the next request's on_head
 * runs only after the current response has ended.
 */
#ifndef HYBRIDGW_HTTP_H
#define HYBRIDGW_HTTP_H

#include <uv.h>
#include "hybridgw/core.h"
#include "hybridgw/arena.h"

struct gw_http_server;
struct gw_http_req;

typedef void (*gw_http_req_cb)(struct gw_http_req *req);
/* Called when the server itself must answer with an error before the handler
 * owns the request (malformed request: 400, header too large: 431, body too
 * large: 413, timeout: 408). The callback must send the error response in
 * the dialect it chooses; if NULL the server sends a plain JSON body. */
typedef void (*gw_http_error_cb)(struct gw_http_req *req, int status, const char *msg);
typedef void (*gw_http_abort_cb)(struct gw_http_req *req, void *ud);
typedef void (*gw_http_drain_cb)(struct gw_http_req *req, void *ud);

struct gw_http_server_opts {
    size_t max_header_bytes;     /* request line + headers; 431 past it */
    unsigned max_headers;        /* header count; 431 past it */
    size_t max_body_bytes;       /* 413 past it */
    uint64_t header_timeout_ms;  /* time to read the request line and headers */
    uint64_t body_timeout_ms;    /* time to read the body after the headers */
    uint64_t idle_timeout_ms;    /* keep-alive idle time between requests */
    size_t write_high_water;     /* gw_http_resp_write() returns 1 past this */
    gw_http_req_cb on_head;      /* may be NULL */
    gw_http_req_cb on_request;   /* required */
    gw_http_error_cb on_error;   /* may be NULL */
    /* Called once per answered request, right before it is freed (also for
     * errors the server answered itself); for access logs. May be NULL. */
    gw_http_req_cb on_complete;
    void *ud;                    /* returned by gw_http_server_ud() */
};

/* Fill opts with defaults: 32 KiB headers, 100 headers, 8 MiB body,
 * 10 s header/body timeouts, 75 s idle, 64 KiB high water. */
void gw_http_server_opts_default(struct gw_http_server_opts *o);

/* Parse "host:port" / "[v6]:port" / ":port" into addr. */
int gw_http_parse_addr(const char *s, struct sockaddr_storage *addr);

/* Bind (SO_REUSEPORT) and listen on addr; returns 0 or a negative libuv
 * error (uv_strerror() names it). When addr's port is 0 the kernel picks one;
 * gw_http_server_port() tells which, and another server may then be started
 * on that port. */
int gw_http_server_start(uv_loop_t *loop, const struct sockaddr *addr,
                         const struct gw_http_server_opts *opts,
                         struct gw_http_server **out);
int gw_http_server_port(const struct gw_http_server *s);
void *gw_http_server_ud(const struct gw_http_server *s);
uv_loop_t *gw_http_server_loop(const struct gw_http_server *s);
/* Replace limits/timeouts for connections accepted from now on (reload). */
void gw_http_server_set_limits(struct gw_http_server *s, const struct gw_http_server_opts *o);
/* Stop accepting; idle keep-alive connections are closed, busy ones get
 * "Connection: close" on their current response. */
void gw_http_server_stop_accepting(struct gw_http_server *s);
/* Number of connections still open / requests in flight. */
size_t gw_http_server_conns(const struct gw_http_server *s);
size_t gw_http_server_inflight(const struct gw_http_server *s);
/* Close every connection now (in-flight requests are aborted) and free the
 * server once all handles are closed; on_closed (may be NULL) runs then. */
void gw_http_server_close(struct gw_http_server *s, void (*on_closed)(void *), void *arg);

/* ---- request accessors; returned slices live as long as the request ---- */
struct gw_http_server *gw_http_req_server(struct gw_http_req *r);
uv_loop_t *gw_http_req_loop(struct gw_http_req *r);
struct gw_arena *gw_http_req_arena(struct gw_http_req *r);
gw_str gw_http_req_method(const struct gw_http_req *r);
gw_str gw_http_req_path(const struct gw_http_req *r);   /* without the query */
gw_str gw_http_req_query(const struct gw_http_req *r);  /* after '?', may be empty */
/* Case-insensitive lookup; the first value, or {NULL,0} when absent. */
gw_str gw_http_req_header(const struct gw_http_req *r, const char *name);
size_t gw_http_req_header_count(const struct gw_http_req *r);
void gw_http_req_header_at(const struct gw_http_req *r, size_t i, gw_str *name, gw_str *value);
gw_str gw_http_req_body(const struct gw_http_req *r);   /* valid in on_request */
/* Free the request body now (the handler has parsed it); a long stream then
 * does not keep it. gw_http_req_body() is empty afterwards. */
void gw_http_req_drop_body(struct gw_http_req *r);
/* The peer address as text ("127.0.0.1"). */
const char *gw_http_req_peer(struct gw_http_req *r);
/* Free slot for the handler's per-request state. */
void gw_http_req_set_data(struct gw_http_req *r, void *data);
void *gw_http_req_data(const struct gw_http_req *r);
void gw_http_req_set_abort(struct gw_http_req *r, gw_http_abort_cb cb, void *ud);
/* Called whenever the queued output drops below half the high water mark
 * after gw_http_resp_write() returned 1. */
void gw_http_req_set_drain(struct gw_http_req *r, gw_http_drain_cb cb, void *ud);
/* Monotonic ns timestamp of when the request's first byte arrived. */
uint64_t gw_http_req_start_ns(const struct gw_http_req *r);

/* ---- response ---- */
/* Add a response header (copied). Call before send/start. Content-Length,
 * Transfer-Encoding, Connection and Date are managed by the server. */
void gw_http_resp_header(struct gw_http_req *r, const char *name, const char *value);
void gw_http_resp_header_n(struct gw_http_req *r, const char *name, const char *value, size_t vlen);
/* Send a whole response with Content-Length; ends the request. */
void gw_http_resp_send(struct gw_http_req *r, int status, const char *content_type,
                       const void *body, size_t len);
/* Start a streamed response (chunked transfer encoding). */
void gw_http_resp_start(struct gw_http_req *r, int status, const char *content_type);
/* Queue one chunk. Returns 0, or 1 when the queued output is above the high
 * water mark (the caller should stop producing until the drain callback), or
 * a negative code when the connection is already gone. After a negative
 * return the abort callback may still run later (when the server notices
 * the close); a handler that stops at once ends the request itself
 * (gw_http_req_reset). */
int gw_http_resp_write(struct gw_http_req *r, const void *data, size_t len);
/* Same, with the chunk given in parts (written as one chunk, no copy when
 * the socket takes it at once). At most 8 parts. */
int gw_http_resp_writev(struct gw_http_req *r, const gw_str *parts, size_t nparts);
/* Bytes queued on the socket, not yet accepted by the kernel. */
size_t gw_http_resp_queued(const struct gw_http_req *r);
bool gw_http_resp_started(const struct gw_http_req *r);
/* Status sent (0 before the head), and response bytes queued so far. */
int gw_http_resp_status(const struct gw_http_req *r);
uint64_t gw_http_resp_bytes(const struct gw_http_req *r);
/* End a streamed response (last chunk); ends the request. */
void gw_http_resp_end(struct gw_http_req *r);
/* Drop the connection at once without a proper end (used by the simulator
 * to inject faults, and after an unrecoverable error); ends the request. */
void gw_http_req_reset(struct gw_http_req *r);

const char *gw_http_status_text(int status);

#endif
