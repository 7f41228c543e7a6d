/*
 * sim_out.c - bounded output buffer (see sim_out.h).
 */
#include "sim_out.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sim_out_fixed(struct sim_out *o, char *buf, size_t cap)
{
    o->p = buf;
    o->cap = cap;
    o->len = 0;
    o->max = 0;
    o->err = cap == 0;
    if (cap)
        buf[0] = '\0';
}

void sim_out_heap(struct sim_out *o, size_t max)
{
    o->cap = max < 256 ? max : 256;
    if (o->cap == 0)
        o->cap = 1;
    o->p = malloc(o->cap);
    if (!o->p)
        abort();
    o->p[0] = '\0';
    o->len = 0;
    o->max = max ? max : 1;
    o->err = false;
}

void sim_out_free(struct sim_out *o)
{
    if (o->max)
        free(o->p);
    o->p = NULL;
    o->cap = o->len = 0;
}

void sim_out_reset(struct sim_out *o)
{
    o->len = 0;
    o->err = o->cap == 0;
    if (o->cap)
        o->p[0] = '\0';
}

/* Make room for n more bytes plus the NUL; false (and sticky error) when the
 * buffer cannot hold them. */
static bool room(struct sim_out *o, size_t n)
{
    if (o->err)
        return false;
    if (n < o->cap - o->len)
        return true;
    if (o->max == 0 || n >= o->max - o->len) {
        o->err = true;
        return false;
    }
    size_t want = o->len + n + 1, ncap = o->cap;
    while (ncap < want)
        ncap = ncap > o->max / 2 ? o->max : ncap * 2;
    char *np = realloc(o->p, ncap);
    if (!np)
        abort();
    o->p = np;
    o->cap = ncap;
    return true;
}

void sim_out_put(struct sim_out *o, const char *s, size_t n)
{
    if (!room(o, n))
        return;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

void sim_out_puts(struct sim_out *o, const char *s)
{
    sim_out_put(o, s, strlen(s));
}

void sim_out_printf(struct sim_out *o, const char *fmt, ...)
{
    va_list ap;
    if (o->err)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        o->err = true;
        return;
    }
    if ((size_t)n < o->cap - o->len) {
        o->len += (size_t)n;
        return;
    }
    o->p[o->len] = '\0';
    if (!room(o, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    o->len += (size_t)n;
}

void sim_out_u64(struct sim_out *o, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    sim_out_put(o, tmp + i, sizeof(tmp) - i);
}

void sim_out_json_esc(struct sim_out *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                u[0] = '\\';
                u[1] = 'u';
                u[2] = '0';
                u[3] = '0';
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
                u[6] = '\0';
                esc = u;
            }
        }
        if (!esc)
            continue;
        sim_out_put(o, s + run, i - run);
        sim_out_puts(o, esc);
        run = i + 1;
    }
    sim_out_put(o, s + run, n - run);
}

void sim_out_json_str(struct sim_out *o, const char *s, size_t n)
{
    sim_out_put(o, "\"", 1);
    sim_out_json_esc(o, s, n);
    sim_out_put(o, "\"", 1);
}
