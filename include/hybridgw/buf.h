/*
 * buf.h - a growable byte buffer with a hard cap (curl's dynbuf idea).
 * Appending past the cap fails with GW_ETOOBIG and sets a sticky error flag,
 * so emitters can append freely and check once at the end (SQLite JsonString).
 */
#ifndef HYBRIDGW_BUF_H
#define HYBRIDGW_BUF_H

#include <stdarg.h>
#include "hybridgw/core.h"

struct gw_buf {
    char *data;     /* heap memory, NUL-terminated when len < cap */
    size_t len;     /* bytes used */
    size_t alloc;   /* bytes allocated */
    size_t cap;     /* never grow beyond this; 0 means SIZE_MAX */
    int err;        /* sticky: first error seen, 0 if none */
};

void gw_buf_init(struct gw_buf *b, size_t cap);
void gw_buf_free(struct gw_buf *b);
/* Keep the memory, forget the contents and the error. */
void gw_buf_reset(struct gw_buf *b);
int gw_buf_reserve(struct gw_buf *b, size_t extra);
int gw_buf_append(struct gw_buf *b, const void *p, size_t n);
int gw_buf_puts(struct gw_buf *b, const char *s);
int gw_buf_printf(struct gw_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int gw_buf_vprintf(struct gw_buf *b, const char *fmt, va_list ap);
/* Append s as a JSON string literal (with quotes), escaping as needed. */
int gw_buf_json_str(struct gw_buf *b, const char *s, size_t n);
/* Drop the first n bytes. */
void gw_buf_consume(struct gw_buf *b, size_t n);

#endif
