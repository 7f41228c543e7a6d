/*
 * h1.h - HTTP/1.1 request parser: the one wrapper around http-parser.
 * Nothing else in the tree includes http_parser.h, so llhttp (or a parser
 * of our own) can replace it by rewriting h1.c alone.
 *
 * It is a resumable feed API: gw_h1_feed() consumes bytes until something
 * happens (head complete, message complete, error) and says how many bytes
 * it used; the caller keeps the rest and feeds it again later. Request line,
 * headers and body are copied into storage owned by the parser, capped by
 * the limits given at creation; it stays valid until gw_h1_reset().
 */
#ifndef HYBRIDGW_H1_H
#define HYBRIDGW_H1_H

#include "hybridgw/core.h"

struct gw_h1;

enum gw_h1_ev {
    GW_H1_NEED_MORE = 0, /* all bytes used, nothing complete yet */
    GW_H1_HEAD = 1,      /* request line and headers complete */
    GW_H1_DONE = 2,      /* whole message (with body) complete; parser paused */
    GW_H1_ERROR = 3,     /* malformed or over a limit; see gw_h1_error_* */
    GW_H1_EV_COUNT
};

struct gw_h1_limits {
    size_t max_header_bytes; /* request line + header names and values */
    unsigned max_headers;
    size_t max_body_bytes;
};

struct gw_h1 *gw_h1_new(const struct gw_h1_limits *lim);
void gw_h1_free(struct gw_h1 *h);
void gw_h1_set_limits(struct gw_h1 *h, const struct gw_h1_limits *lim);
enum gw_h1_ev gw_h1_feed(struct gw_h1 *h, const char *data, size_t len, size_t *used);
/* Forget the current message (and its storage) and get ready for the next. */
void gw_h1_reset(struct gw_h1 *h);
/* Ask the parser to drop the body of the current message instead of storing
 * it (the request was answered in its head). */
void gw_h1_discard_body(struct gw_h1 *h);

bool gw_h1_in_message(const struct gw_h1 *h);   /* a byte of a message was seen */
int gw_h1_error_status(const struct gw_h1 *h);  /* 400, 413, 431, 501, 505 */
const char *gw_h1_error_msg(const struct gw_h1 *h);

gw_str gw_h1_method(const struct gw_h1 *h);
gw_str gw_h1_url(const struct gw_h1 *h);
size_t gw_h1_header_count(const struct gw_h1 *h);
void gw_h1_header_at(const struct gw_h1 *h, size_t i, gw_str *name, gw_str *value);
gw_str gw_h1_header(const struct gw_h1 *h, const char *name);
bool gw_h1_keep_alive(const struct gw_h1 *h);
bool gw_h1_expect_continue(const struct gw_h1 *h);
bool gw_h1_has_body(const struct gw_h1 *h);
int gw_h1_http_minor(const struct gw_h1 *h);
gw_str gw_h1_body(const struct gw_h1 *h);

#endif
