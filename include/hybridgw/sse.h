/*
 * sse.h - server-sent events parser: a resumable feed over a byte stream.
 * Accepts \n, \r\n and \r line ends, strips one space after "field:", joins
 * several data: lines with \n, ignores comments (":...") and unknown fields.
 * Complete events inside one input piece are handed out without copying;
 * only an event split across pieces is copied into the parser's buffer,
 * which is capped (an event over the cap is an error).
 */
#ifndef HYBRIDGW_SSE_H
#define HYBRIDGW_SSE_H

#include "hybridgw/buf.h"

/* One event. Slices are valid only during the callback. */
struct gw_sse_event {
    gw_str event;   /* "event:" field; {NULL,0} when absent */
    gw_str data;    /* data lines joined with \n */
    gw_str id;
};

/* Return 0 to go on, non-zero to stop feeding (gw_sse_feed returns it). */
typedef int (*gw_sse_cb)(const struct gw_sse_event *ev, void *ud);

struct gw_sse {
    struct gw_buf pending;   /* bytes of an unfinished event */
    struct gw_buf data;      /* scratch for multi-line data */
    size_t max_event;        /* cap on one event's size */
};

void gw_sse_init(struct gw_sse *s, size_t max_event);
void gw_sse_free(struct gw_sse *s);
/* Feed bytes; calls cb for every complete event. Returns 0, the callback's
 * non-zero value, or GW_ETOOBIG when an event exceeds max_event. */
int gw_sse_feed(struct gw_sse *s, const char *p, size_t n, gw_sse_cb cb, void *ud);
/* At end of stream: an unfinished event is dropped, as browsers and the
 * OpenAI SDKs do; returns true if there was one. */
bool gw_sse_finish(struct gw_sse *s);

#endif
