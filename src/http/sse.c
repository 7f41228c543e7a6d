/*
 * sse.c - server-sent events parser (see sse.h).
 *
 * Parsing works on whole events: find the blank line that ends one, then
 * read its fields. When the input piece holds complete events they are parsed
 * in place; the tail of an unfinished event is copied to s->pending and the
 * next piece is appended to it.
 */
#include <stdlib.h>

#include "hybridgw/sse.h"

void gw_sse_init(struct gw_sse *s, size_t max_event)
{
    gw_buf_init(&s->pending, 0); /* bounded by the per-event check in feed */
    gw_buf_init(&s->data, max_event ? max_event : 1 << 20);
    s->max_event = max_event ? max_event : 1 << 20;
}

void gw_sse_free(struct gw_sse *s)
{
    gw_buf_free(&s->pending);
    gw_buf_free(&s->data);
}

/* Find the end of one line starting at p: returns the length of the line
 * content, sets *eol to the length of its terminator (0 if none found). */
static size_t line_end(const char *p, size_t n, size_t *eol)
{
    const char *nl = memchr(p, '\n', n);
    size_t upto = nl ? (size_t)(nl - p) : n;
    const char *cr = memchr(p, '\r', upto); /* rare: only CR and CRLF streams */
    if (cr) {
        size_t i = (size_t)(cr - p);
        /* a \r at the very end may be half of a \r\n: the line is
         * complete either way, and a \n that follows in the next piece
         * is at worst an empty line, which dispatches nothing new */
        *eol = (i + 1 < n && p[i + 1] == '\n') ? 2 : 1;
        return i;
    }
    *eol = nl ? 1 : 0;
    return upto;
}

/* Parse events from p[0..n). Returns bytes consumed (complete events only)
 * or a negative code / callback value through *rc. */
static size_t parse(struct gw_sse *s, const char *p, size_t n, gw_sse_cb cb, void *ud, int *rc)
{
    size_t off = 0, ev_start = 0;
    struct gw_sse_event ev = {GW_STR_NULL, GW_STR_NULL, GW_STR_NULL};
    size_t ndata = 0;
    size_t ev_bytes = 0; /* line contents of the current event */
    const char *first_data = NULL;
    size_t first_len = 0;
    *rc = 0;
    while (off < n) {
        size_t eol;
        size_t len = line_end(p + off, n - off, &eol);
        if (eol == 0)
            break;  /* incomplete line: wait for more */
        const char *line = p + off;
        off += len + eol;
        ev_bytes += len;
        if (ev_bytes > s->max_event) {
            *rc = GW_ETOOBIG;
            gw_buf_reset(&s->data);
            return ev_start;
        }
        if (len == 0) {
            /* blank line: dispatch when there is data */
            if (ndata > 0) {
                if (ndata == 1)
                    ev.data = (gw_str){first_data, first_len};
                else
                    ev.data = (gw_str){s->data.data, s->data.len};
                int r = cb(&ev, ud);
                if (r) {
                    *rc = r;
                    gw_buf_reset(&s->data);
                    return off;
                }
            }
            ev = (struct gw_sse_event){GW_STR_NULL, GW_STR_NULL, GW_STR_NULL};
            ndata = 0;
            ev_bytes = 0;
            gw_buf_reset(&s->data);
            ev_start = off;
            continue;
        }
        if (line[0] == ':')
            continue;  /* comment */
        const char *colon = memchr(line, ':', len);
        size_t fl = colon ? (size_t)(colon - line) : len;
        const char *v = colon ? colon + 1 : line + len;
        size_t vl = colon ? len - fl - 1 : 0;
        if (vl && *v == ' ') {
            v++;
            vl--;
        }
        if (fl == 4 && memcmp(line, "data", 4) == 0) {
            if (ndata == 0) {
                first_data = v;
                first_len = vl;
            } else {
                if (ndata == 1)
                    gw_buf_append(&s->data, first_data, first_len);
                gw_buf_append(&s->data, "\n", 1);
                gw_buf_append(&s->data, v, vl);
                if (s->data.err) {
                    *rc = GW_ETOOBIG;
                    gw_buf_reset(&s->data);
                    return off;
                }
            }
            ndata++;
        } else if (fl == 5 && memcmp(line, "event", 5) == 0) {
            ev.event = (gw_str){v, vl};
        } else if (fl == 2 && memcmp(line, "id", 2) == 0) {
            ev.id = (gw_str){v, vl};
        }
        /* retry and unknown fields are ignored */
    }
    gw_buf_reset(&s->data);
    return ev_start;
}

int gw_sse_feed(struct gw_sse *s, const char *p, size_t n, gw_sse_cb cb, void *ud)
{
    int rc;
    if (s->pending.len == 0) {
        /* the common case: parse in place, keep only what is left over */
        size_t used = parse(s, p, n, cb, ud, &rc);
        if (gw_buf_append(&s->pending, p + used, n - used))
            return GW_ETOOBIG;
    } else {
        if (gw_buf_append(&s->pending, p, n))
            return GW_ETOOBIG;
        size_t used = parse(s, s->pending.data, s->pending.len, cb, ud, &rc);
        gw_buf_consume(&s->pending, used);
    }
    if (rc)
        return rc; /* what was not parsed stays in pending for the next feed */
    /* only an unfinished event remains: that is what the cap limits */
    if (s->pending.len > s->max_event)
        return GW_ETOOBIG;
    return 0;
}

bool gw_sse_finish(struct gw_sse *s)
{
    bool had = s->pending.len > 0;
    gw_buf_reset(&s->pending);
    return had;
}
