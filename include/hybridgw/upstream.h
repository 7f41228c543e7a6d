/*
 * upstream.h - the client side: HTTP(S) requests to upstream servers through
 * libcurl's multi interface, driven by the worker's libuv loop (curl tells us
 * which sockets to watch and when to wake it; uv_poll and a uv_timer do it).
 * Connections are pooled per loop by the multi handle.
 *
 * A transfer reports, in order: on_head once the response status and
 * headers are in, on_data for each piece of the body, then on_done exactly
 * once with errstr NULL on success or one of the gw_up_err_* strings
 * (compare by pointer, print as is). gw_up_cancel() stops a transfer with no
 * further callbacks; after on_done the transfer is freed.
 */
#ifndef HYBRIDGW_UPSTREAM_H
#define HYBRIDGW_UPSTREAM_H

#include <uv.h>
#include <curl/curl.h>
#include "hybridgw/core.h"

struct gw_upstream;
struct gw_up;

extern const char gw_up_err_connect[];      /* could not connect */
extern const char gw_up_err_connect_timeout[];
extern const char gw_up_err_first_byte[];   /* no response head in time */
extern const char gw_up_err_stalled[];      /* gap between body bytes too long */
extern const char gw_up_err_timeout[];      /* whole request took too long */
extern const char gw_up_err_io[];           /* connection reset / protocol error */
extern const char gw_up_err_too_big[];      /* on_data asked to stop: too big */
extern const char gw_up_err_cancelled[];    /* gw_upstream_free with the transfer running */

/* Classify an errstr for metrics labels: "connect", "timeout", "stalled", "io". */
const char *gw_up_err_kind(const char *errstr);

struct gw_up_callbacks {
    void (*on_head)(struct gw_up *u, int status, void *ud);
    /* Return 0 to go on, 1 to pause (resume with gw_up_resume), -1 to stop
     * (on_done then gets gw_up_err_too_big). */
    int (*on_data)(struct gw_up *u, const char *p, size_t n, void *ud);
    void (*on_done)(struct gw_up *u, const char *errstr, void *ud);
};

struct gw_up_opts {
    const char *url;
    const char *method;               /* "GET" or "POST" */
    struct curl_slist *headers;       /* owned by the transfer from now on */
    const char *body;                 /* borrowed; must outlive the transfer */
    size_t body_len;
    uint64_t connect_timeout_ms;
    uint64_t first_byte_timeout_ms;   /* 0 = none */
    uint64_t idle_timeout_ms;         /* max gap between body pieces; 0 = none */
    uint64_t total_timeout_ms;        /* 0 = none */
    size_t buffer_size;               /* curl's receive buffer; 0 = 16 KiB. Streams
                                       * use a small one: it lives as long as
                                       * the stream */
};

struct gw_upstream *gw_upstream_new(uv_loop_t *loop);
/* End every transfer still running (on_done with gw_up_err_cancelled, so
 * owners free what they hold) and free once handles are closed. */
void gw_upstream_free(struct gw_upstream *us);
size_t gw_upstream_active(const struct gw_upstream *us);

struct gw_up *gw_up_start(struct gw_upstream *us, const struct gw_up_opts *o,
                          const struct gw_up_callbacks *cb, void *ud);
void gw_up_pause(struct gw_up *u);
void gw_up_resume(struct gw_up *u);
void gw_up_cancel(struct gw_up *u);
/* A response header's value (first one, case-insensitive), valid until
 * on_done returns; {NULL,0} when absent. */
gw_str gw_up_header(const struct gw_up *u, const char *name);
int gw_up_status(const struct gw_up *u);
/* Time of the first response byte (ns, monotonic), 0 if none yet. */
uint64_t gw_up_first_byte_ns(const struct gw_up *u);

#endif
