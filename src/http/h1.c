/*
 * h1.c - http-parser behind the gw_h1 feed API (see h1.h).
 */
#include <stdlib.h>
#include <strings.h>
#include <http_parser.h>

#include "hybridgw/buf.h"
#include "http/h1.h"

struct hdr {
    size_t name_off, name_len;
    size_t val_off, val_len;
};

struct gw_h1 {
    http_parser p;
    struct gw_h1_limits lim;
    struct gw_buf head;        /* URL and header bytes, capped */
    struct gw_buf body;        /* body bytes, capped */
    struct hdr *hdrs;          /* offsets into head */
    size_t nhdrs, hdrs_alloc;
    size_t url_off, url_len;
    int last_cb;               /* 0 none, 1 field, 2 value */
    int err_status;            /* HTTP status to answer with on error */
    const char *err_msg;
    enum gw_h1_ev pending;     /* event raised by a callback */
    bool in_msg;
    bool head_done;
    bool discard;              /* drop body bytes */
    bool expect_continue;
    bool keep_alive;
};

static int fail(struct gw_h1 *h, int status, const char *msg)
{
    if (!h->err_status) {
        h->err_status = status;
        h->err_msg = msg;
    }
    return -1;
}

static int on_message_begin(http_parser *p)
{
    struct gw_h1 *h = p->data;
    h->in_msg = true;
    return 0;
}

static int head_append(struct gw_h1 *h, const char *at, size_t n)
{
    if (h->head.len + n > h->lim.max_header_bytes || gw_buf_append(&h->head, at, n))
        return fail(h, 431, "request header fields too large");
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct gw_h1 *h = p->data;
    if (h->url_len == 0)
        h->url_off = h->head.len;
    h->url_len += n;
    return head_append(h, at, n);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct gw_h1 *h = p->data;
    if (h->head_done)
        return 0; /* chunked trailers are not headers (RFC 9110 6.5.1): drop them */
    if (h->last_cb != 1) {
        if (h->nhdrs >= h->lim.max_headers)
            return fail(h, 431, "too many request header fields");
        if (h->nhdrs == h->hdrs_alloc) {
            h->hdrs_alloc = h->hdrs_alloc ? h->hdrs_alloc * 2 : 16;
            h->hdrs = gw_realloc(h->hdrs, h->hdrs_alloc * sizeof(*h->hdrs));
        }
        struct hdr *x = &h->hdrs[h->nhdrs++];
        x->name_off = h->head.len;
        x->name_len = 0;
        x->val_off = 0;
        x->val_len = 0;
        h->last_cb = 1;
    }
    h->hdrs[h->nhdrs - 1].name_len += n;
    return head_append(h, at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct gw_h1 *h = p->data;
    if (h->head_done)
        return 0;
    struct hdr *x = &h->hdrs[h->nhdrs - 1];
    if (h->last_cb != 2) {
        x->val_off = h->head.len;
        h->last_cb = 2;
    }
    x->val_len += n;
    return head_append(h, at, n);
}

static int on_headers_complete(http_parser *p)
{
    struct gw_h1 *h = p->data;
    if (p->upgrade)
        return fail(h, 501, "protocol upgrade is not supported");
    if (p->http_major != 1)
        return fail(h, 505, "HTTP version not supported");
    if (h->url_len == 0)
        return fail(h, 400, "empty request target");
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > h->lim.max_body_bytes)
        return fail(h, 413, "request body too large");
    h->keep_alive = http_should_keep_alive(p) != 0;
    gw_str e = gw_h1_header(h, "expect");
    h->expect_continue = gw_str_ieq_c(e, "100-continue");
    h->head_done = true;
    h->pending = GW_H1_HEAD;
    http_parser_pause(p, 1);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct gw_h1 *h = p->data;
    if (h->discard)
        return 0;
    if (h->body.len + n > h->lim.max_body_bytes || gw_buf_append(&h->body, at, n))
        return fail(h, 413, "request body too large");
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct gw_h1 *h = p->data;
    h->pending = GW_H1_DONE;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

struct gw_h1 *gw_h1_new(const struct gw_h1_limits *lim)
{
    struct gw_h1 *h = gw_calloc(1, sizeof(*h));
    h->lim = *lim;
    gw_buf_init(&h->head, 0);
    gw_buf_init(&h->body, 0);
    http_parser_init(&h->p, HTTP_REQUEST);
    h->p.data = h;
    return h;
}

void gw_h1_set_limits(struct gw_h1 *h, const struct gw_h1_limits *lim)
{
    h->lim = *lim;
}

void gw_h1_free(struct gw_h1 *h)
{
    if (!h)
        return;
    gw_buf_free(&h->head);
    gw_buf_free(&h->body);
    free(h->hdrs);
    free(h);
}

void gw_h1_reset(struct gw_h1 *h)
{
    /* keep small buffers for the next request on this connection, give back
     * large ones so an idle keep-alive connection costs little memory */
    if (h->head.alloc > 4096)
        gw_buf_free(&h->head);
    gw_buf_reset(&h->head);
    gw_buf_free(&h->body);
    if (h->hdrs_alloc > 32) {
        free(h->hdrs);
        h->hdrs = NULL;
        h->hdrs_alloc = 0;
    }
    h->nhdrs = 0;
    h->url_off = h->url_len = 0;
    h->last_cb = 0;
    h->pending = GW_H1_NEED_MORE;
    h->in_msg = h->head_done = h->discard = h->expect_continue = false;
    /* the parser is paused after a message; un-pause to parse the next */
    http_parser_pause(&h->p, 0);
}

void gw_h1_discard_body(struct gw_h1 *h)
{
    h->discard = true;
    gw_buf_free(&h->body);
}

enum gw_h1_ev gw_h1_feed(struct gw_h1 *h, const char *data, size_t len, size_t *used)
{
    *used = 0;
    if (h->err_status)
        return GW_H1_ERROR;
    if (h->pending == GW_H1_DONE)
        return GW_H1_DONE;     /* caller must reset before the next message */
    if (h->pending == GW_H1_HEAD) {
        h->pending = GW_H1_NEED_MORE;
        http_parser_pause(&h->p, 0);
    }
    if (len == 0)
        return GW_H1_NEED_MORE; /* http-parser takes 0 bytes as end of input */
    size_t n = http_parser_execute(&h->p, &settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&h->p);
    *used = n;
    if (h->err_status)
        return GW_H1_ERROR;
    if (e == HPE_PAUSED) {
        /* http-parser counts the byte that triggered the pause as consumed
         * when the callback ran on the final byte of a token */
        return h->pending;
    }
    if (e != HPE_OK) {
        fail(h, 400, http_errno_description(e));
        return GW_H1_ERROR;
    }
    return h->pending;
}

bool gw_h1_in_message(const struct gw_h1 *h)
{
    return h->in_msg;
}

int gw_h1_error_status(const struct gw_h1 *h)
{
    return h->err_status;
}

const char *gw_h1_error_msg(const struct gw_h1 *h)
{
    return h->err_msg ? h->err_msg : "bad request";
}

gw_str gw_h1_method(const struct gw_h1 *h)
{
    return gw_str_c(http_method_str((enum http_method)h->p.method));
}

gw_str gw_h1_url(const struct gw_h1 *h)
{
    return (gw_str){h->head.data ? h->head.data + h->url_off : "", h->url_len};
}

size_t gw_h1_header_count(const struct gw_h1 *h)
{
    return h->nhdrs;
}

void gw_h1_header_at(const struct gw_h1 *h, size_t i, gw_str *name, gw_str *value)
{
    const struct hdr *x = &h->hdrs[i];
    *name = (gw_str){h->head.data + x->name_off, x->name_len};
    *value = (gw_str){x->val_len ? h->head.data + x->val_off : "", x->val_len};
}

gw_str gw_h1_header(const struct gw_h1 *h, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < h->nhdrs; i++) {
        const struct hdr *x = &h->hdrs[i];
        if (x->name_len == nl && strncasecmp(h->head.data + x->name_off, name, nl) == 0)
            return (gw_str){x->val_len ? h->head.data + x->val_off : "", x->val_len};
    }
    return GW_STR_NULL;
}

bool gw_h1_keep_alive(const struct gw_h1 *h)
{
    return h->keep_alive;
}

bool gw_h1_expect_continue(const struct gw_h1 *h)
{
    return h->expect_continue;
}

bool gw_h1_has_body(const struct gw_h1 *h)
{
    return (h->p.flags & F_CHUNKED) ||
           ((h->p.flags & F_CONTENTLENGTH) && h->p.content_length > 0);
}

int gw_h1_http_minor(const struct gw_h1 *h)
{
    return h->p.http_minor;
}

gw_str gw_h1_body(const struct gw_h1 *h)
{
    return (gw_str){h->body.data ? h->body.data : "", h->body.len};
}
