/*
 * buf.c - capped growable buffer with a sticky error (see buf.h).
 */
#include <stdio.h>
#include <stdlib.h>

#include "hybridgw/buf.h"

void gw_buf_init(struct gw_buf *b, size_t cap)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->cap = cap ? cap : SIZE_MAX;
    b->err = 0;
}

void gw_buf_free(struct gw_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->alloc = 0;
    b->err = 0;
}

void gw_buf_reset(struct gw_buf *b)
{
    b->len = 0;
    b->err = 0;
    if (b->data)
        b->data[0] = '\0';
}

int gw_buf_reserve(struct gw_buf *b, size_t extra)
{
    if (b->err)
        return b->err;
    if (extra > b->cap || b->len > b->cap - extra) {
        b->err = GW_ETOOBIG;
        return b->err;
    }
    size_t need = b->len + extra + 1; /* room for a NUL */
    if (need <= b->alloc)
        return GW_OK;
    size_t n = b->alloc ? b->alloc : 256;
    while (n < need)
        n *= 2;
    if (b->cap < SIZE_MAX && n > b->cap + 1)
        n = b->cap + 1;
    b->data = gw_realloc(b->data, n);
    b->alloc = n;
    return GW_OK;
}

int gw_buf_append(struct gw_buf *b, const void *p, size_t n)
{
    int rc = gw_buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return GW_OK;
}

int gw_buf_puts(struct gw_buf *b, const char *s)
{
    return gw_buf_append(b, s, strlen(s));
}

int gw_buf_vprintf(struct gw_buf *b, const char *fmt, va_list ap)
{
    if (b->err)
        return b->err;
    va_list ap2;
    va_copy(ap2, ap);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        b->err = GW_ERR;
        return b->err;
    }
    if ((size_t)n < sizeof(tmp))
        return gw_buf_append(b, tmp, (size_t)n);
    int rc = gw_buf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return GW_OK;
}

int gw_buf_printf(struct gw_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = gw_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int gw_buf_json_str(struct gw_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (gw_buf_reserve(b, n + 2))
        return b->err;
    gw_buf_append(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char ubuf[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c >= 0x80) {
                size_t ok = gw_utf8_seq_len(s + i, n - i);
                if (ok) {
                    run += ok;
                    i += ok - 1;
                    continue;
                }
                esc = "\\ufffd"; /* not UTF-8: keep the output valid JSON */
            } else if (c < 0x20 || c == 0x7f) {
                ubuf[0] = '\\'; ubuf[1] = 'u'; ubuf[2] = '0'; ubuf[3] = '0';
                ubuf[4] = hex[c >> 4]; ubuf[5] = hex[c & 15]; ubuf[6] = 0;
                esc = ubuf;
            }
        }
        if (esc) {
            gw_buf_append(b, s + i - run, run);
            run = 0;
            gw_buf_puts(b, esc);
        } else {
            run++;
        }
    }
    gw_buf_append(b, s + n - run, run);
    return gw_buf_append(b, "\"", 1);
}

void gw_buf_consume(struct gw_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = '\0';
}
