/*
 * trace.c - W3C trace context (traceparent), random trace/span ids, spans
 * and their OTLP/HTTP JSON encoding (PROTOCOLS.md 5.3, 5.4).
 *
 * Everything here is plain data work with no I/O and no shared state except
 * a per-thread random generator, so any thread may call it. The exporter
 * (queue, thread, HTTP) lives in exporter.c.
 *
 * Spans are built by one thread and then handed over whole; a span is not
 * safe to use from two threads at once.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hybridgw/buf.h"
#include "hybridgw/core.h"
#include "telemetry/trace.h"

/* ---- random ids ----------------------------------------------------------
 *
 * xoshiro256** per thread, seeded from getrandom() on first use. Ids only need
 * to be unique and unpredictable enough for sampling; a syscall per id on the
 * request path would cost more than it buys. */

static _Thread_local uint64_t rng_s[4];
static _Thread_local bool rng_seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    if (!rng_seeded) {
        do
            gw_random_bytes(rng_s, sizeof(rng_s));
        while ((rng_s[0] | rng_s[1] | rng_s[2] | rng_s[3]) == 0);
        rng_seeded = true;
    }
    uint64_t r = rotl(rng_s[1] * 5, 7) * 9;
    uint64_t t = rng_s[1] << 17;
    rng_s[2] ^= rng_s[0];
    rng_s[3] ^= rng_s[1];
    rng_s[1] ^= rng_s[2];
    rng_s[0] ^= rng_s[3];
    rng_s[2] ^= t;
    rng_s[3] = rotl(rng_s[3], 45);
    return r;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

void gw_trace_new_id(uint8_t *id, size_t len)
{
    if (!id || len == 0)
        return;
    do {
        for (size_t i = 0; i < len; i += 8) {
            uint64_t r = rng_next();
            size_t n = GW_MIN(len - i, (size_t)8);
            memcpy(id + i, &r, n);
        }
    } while (all_zero(id, len));
}

double gw_trace_random01(void)
{
    /* the top 53 bits give every double in [0, 1) with an equal step */
    return (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- traceparent --------------------------------------------------------- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* uppercase is not allowed by W3C trace context */
}

/* n bytes from 2n lowercase hex chars; false on anything else */
static bool unhex(const char *p, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

/*
 * Only version 00 is accepted: the contract in trace.h says so, and a header
 * we cannot read just starts a new trace. Optional whitespace around the
 * value (HTTP OWS) is skipped; everything else must match exactly
 * "00-<32 hex>-<16 hex>-<2 hex>", lowercase. On failure ctx is zeroed.
 */
bool gw_traceparent_parse(gw_str v, struct gw_trace_ctx *ctx)
{
    struct gw_trace_ctx c;
    memset(&c, 0, sizeof(c));
    if (ctx)
        *ctx = c;
    if (!v.p || !ctx)
        return false;
    const char *p = v.p;
    size_t n = v.len;
    while (n > 0 && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n != 55 || p[2] != '-' || p[35] != '-' || p[52] != '-')
        return false;
    uint8_t version, flags;
    if (!unhex(p, &version, 1) || version != 0)
        return false;
    if (!unhex(p + 3, c.trace_id, 16) || !unhex(p + 36, c.span_id, 8) || !unhex(p + 53, &flags, 1))
        return false;
    if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8))
        return false;
    c.flags = flags;
    c.valid = true;
    *ctx = c;
    return true;
}

void gw_traceparent_format(const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags,
                           char out[56])
{
    memcpy(out, "00-", 3);
    gw_hex(trace_id, 16, out + 3);
    out[35] = '-';
    gw_hex(span_id, 8, out + 36);
    out[52] = '-';
    gw_hex(&flags, 1, out + 53);
}

/* ---- spans --------------------------------------------------------------- */

struct attr {
    char *key;
    enum gw_attr_type type;
    union {
        char *s;      /* GW_ATTR_STR */
        int64_t i;    /* GW_ATTR_INT */
        double d;     /* GW_ATTR_DOUBLE */
        bool b;       /* GW_ATTR_BOOL */
        char **a;     /* GW_ATTR_STR_ARRAY: n strings. trace.h describes the
                       * type as values joined with \x1f; we keep them apart
                       * so that a value containing \x1f (a stop sequence can)
                       * survives unchanged. */
    } v;
    size_t n;         /* items in v.a */
};

/*
 * A span owns copies of everything it was given. Attributes keep the order
 * they were first set in; setting a key again replaces its value (as OTel
 * SDKs do). Past GW_SPAN_MAX_ATTRS distinct keys new keys are dropped and
 * counted (droppedAttributesCount in OTLP).
 */
struct gw_span {
    char *name;
    int kind;                    /* OTLP SpanKind value */
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8];
    bool has_parent;             /* false: a root span */
    uint64_t start_ns, end_ns;   /* unix ns; end 0 until gw_span_end */
    int status_code;             /* 0 unset, 1 ok, 2 error */
    char *status_msg;            /* NULL: none */
    struct attr *attrs;
    size_t nattrs, aattrs;
    uint32_t dropped_attrs;
};

/* Copy at most GW_SPAN_MAX_VALUE bytes of s, cut back to a UTF-8 character
 * boundary so a long value does not end in half a character. */
static char *copy_value(const char *s)
{
    size_t n = strlen(s);
    if (n > GW_SPAN_MAX_VALUE) {
        n = GW_SPAN_MAX_VALUE;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    return gw_strndup(s, n);
}

struct gw_span *gw_span_new(const char *name, int kind, const uint8_t trace_id[16],
                            const uint8_t span_id[8], const uint8_t *parent_span_id,
                            uint64_t start_unix_ns)
{
    struct gw_span *s = gw_calloc(1, sizeof(*s));
    s->name = copy_value(name ? name : "");
    s->kind = kind >= 0 && kind <= 5 ? kind : 0;
    if (trace_id)
        memcpy(s->trace_id, trace_id, 16);
    if (span_id)
        memcpy(s->span_id, span_id, 8);
    if (parent_span_id && !all_zero(parent_span_id, 8)) {
        memcpy(s->parent_id, parent_span_id, 8);
        s->has_parent = true;
    }
    s->start_ns = start_unix_ns;
    return s;
}

void gw_span_end(struct gw_span *s, uint64_t end_unix_ns)
{
    if (s)
        s->end_ns = end_unix_ns;
}

void gw_span_status(struct gw_span *s, int code, const char *message)
{
    if (!s)
        return;
    s->status_code = code >= 0 && code <= 2 ? code : 0;
    free(s->status_msg);
    s->status_msg = message ? copy_value(message) : NULL;
}

static void attr_clear(struct attr *a)
{
    if (a->type == GW_ATTR_STR) {
        free(a->v.s);
    } else if (a->type == GW_ATTR_STR_ARRAY) {
        for (size_t i = 0; i < a->n; i++)
            free(a->v.a[i]);
        free(a->v.a);
    }
    memset(&a->v, 0, sizeof(a->v));
    a->n = 0;
}

/* The slot for key (its old value released), or NULL when key is unusable
 * or the span is full. */
static struct attr *attr_slot(struct gw_span *s, const char *key)
{
    if (!s || !key || !key[0])
        return NULL;
    for (size_t i = 0; i < s->nattrs; i++) {
        if (strcmp(s->attrs[i].key, key) == 0) {
            attr_clear(&s->attrs[i]);
            return &s->attrs[i];
        }
    }
    if (s->nattrs >= GW_SPAN_MAX_ATTRS) {
        s->dropped_attrs++;
        return NULL;
    }
    if (s->nattrs == s->aattrs) {
        s->aattrs = s->aattrs ? 2 * s->aattrs : 8;
        s->attrs = gw_realloc(s->attrs, s->aattrs * sizeof(*s->attrs));
    }
    struct attr *a = &s->attrs[s->nattrs++];
    memset(a, 0, sizeof(*a));
    a->key = copy_value(key);
    return a;
}

void gw_span_str(struct gw_span *s, const char *key, const char *v)
{
    if (!v)
        return;
    struct attr *a = attr_slot(s, key);
    if (!a)
        return;
    a->type = GW_ATTR_STR;
    a->v.s = copy_value(v);
}

void gw_span_int(struct gw_span *s, const char *key, int64_t v)
{
    struct attr *a = attr_slot(s, key);
    if (!a)
        return;
    a->type = GW_ATTR_INT;
    a->v.i = v;
}

void gw_span_double(struct gw_span *s, const char *key, double v)
{
    struct attr *a = attr_slot(s, key);
    if (!a)
        return;
    a->type = GW_ATTR_DOUBLE;
    a->v.d = v;
}

void gw_span_bool(struct gw_span *s, const char *key, bool v)
{
    struct attr *a = attr_slot(s, key);
    if (!a)
        return;
    a->type = GW_ATTR_BOOL;
    a->v.b = v;
}

void gw_span_str_array(struct gw_span *s, const char *key, const char *const *v, size_t n)
{
    if (!v && n > 0)
        return;
    struct attr *a = attr_slot(s, key);
    if (!a)
        return;
    a->type = GW_ATTR_STR_ARRAY;
    n = GW_MIN(n, (size_t)GW_SPAN_MAX_ARRAY);
    a->v.a = gw_calloc(n ? n : 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        a->v.a[a->n++] = copy_value(v[i] ? v[i] : "");
}

void gw_span_free(struct gw_span *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nattrs; i++) {
        attr_clear(&s->attrs[i]);
        free(s->attrs[i].key);
    }
    free(s->attrs);
    free(s->name);
    free(s->status_msg);
    free(s);
}

/* ---- OTLP/HTTP JSON ------------------------------------------------------ */

static void put_str(struct gw_buf *b, const char *s)
{
    gw_buf_json_str(b, s, strlen(s));
}

static void put_hex_field(struct gw_buf *b, const char *key, const uint8_t *id, size_t n)
{
    char hex[2 * 16 + 1];
    gw_hex(id, n, hex);
    gw_buf_printf(b, "\"%s\":\"%s\"", key, hex);
}

/* A double as JSON. Protobuf's JSON mapping spells the non-finite values as
 * strings; finite ones use the shortest %g form that reads back exactly. */
static void put_double(struct gw_buf *b, double d)
{
    if (isnan(d)) {
        gw_buf_puts(b, "\"NaN\"");
        return;
    }
    if (isinf(d)) {
        gw_buf_puts(b, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    char tmp[40];
    snprintf(tmp, sizeof(tmp), "%.15g", d);
    if (strtod(tmp, NULL) != d)
        snprintf(tmp, sizeof(tmp), "%.17g", d);
    gw_buf_puts(b, tmp);
}

static void put_kv_str(struct gw_buf *b, const char *key, const char *v)
{
    gw_buf_puts(b, "{\"key\":");
    put_str(b, key);
    gw_buf_puts(b, ",\"value\":{\"stringValue\":");
    put_str(b, v);
    gw_buf_puts(b, "}}");
}

static void put_attr(struct gw_buf *b, const struct attr *a)
{
    gw_buf_puts(b, "{\"key\":");
    put_str(b, a->key);
    gw_buf_puts(b, ",\"value\":{");
    switch (a->type) {
    case GW_ATTR_STR:
        gw_buf_puts(b, "\"stringValue\":");
        put_str(b, a->v.s);
        break;
    case GW_ATTR_INT:
        gw_buf_printf(b, "\"intValue\":\"%" PRId64 "\"", a->v.i);
        break;
    case GW_ATTR_DOUBLE:
        gw_buf_puts(b, "\"doubleValue\":");
        put_double(b, a->v.d);
        break;
    case GW_ATTR_BOOL:
        gw_buf_puts(b, a->v.b ? "\"boolValue\":true" : "\"boolValue\":false");
        break;
    case GW_ATTR_STR_ARRAY:
        gw_buf_puts(b, "\"arrayValue\":{\"values\":[");
        for (size_t i = 0; i < a->n; i++) {
            gw_buf_puts(b, i ? ",{\"stringValue\":" : "{\"stringValue\":");
            put_str(b, a->v.a[i]);
            gw_buf_puts(b, "}");
        }
        gw_buf_puts(b, "]}");
        break;
    default:
        /* only the typed setters above create attributes */
        if (GW_NEVER(true))
            gw_buf_puts(b, "\"stringValue\":\"\"");
        break;
    }
    gw_buf_puts(b, "}}");
}

static void put_span(struct gw_buf *b, const struct gw_span *s)
{
    gw_buf_puts(b, "{");
    put_hex_field(b, "traceId", s->trace_id, 16);
    gw_buf_puts(b, ",");
    put_hex_field(b, "spanId", s->span_id, 8);
    if (s->has_parent) {
        gw_buf_puts(b, ",");
        put_hex_field(b, "parentSpanId", s->parent_id, 8);
    }
    gw_buf_puts(b, ",\"name\":");
    put_str(b, s->name);
    /* an unended span (or a clock step) must not end before it started */
    uint64_t end = GW_MAX(s->end_ns, s->start_ns);
    gw_buf_printf(b, ",\"kind\":%d,\"startTimeUnixNano\":\"%" PRIu64 "\",\"endTimeUnixNano\":\"%" PRIu64
                     "\",\"attributes\":[",
                  s->kind, s->start_ns, end);
    for (size_t i = 0; i < s->nattrs; i++) {
        if (i)
            gw_buf_puts(b, ",");
        put_attr(b, &s->attrs[i]);
    }
    gw_buf_puts(b, "]");
    if (s->dropped_attrs)
        gw_buf_printf(b, ",\"droppedAttributesCount\":%" PRIu32, s->dropped_attrs);
    gw_buf_printf(b, ",\"status\":{\"code\":%d", s->status_code);
    if (s->status_msg) {
        gw_buf_puts(b, ",\"message\":");
        put_str(b, s->status_msg);
    }
    gw_buf_puts(b, "}}");
}

char *gw_otlp_encode(struct gw_span *const *spans, size_t n, const char *service_name,
                     const char *environment)
{
    struct gw_buf b;
    gw_buf_init(&b, 0);
    gw_buf_puts(&b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    put_kv_str(&b, "service.name", service_name ? service_name : "hybridgw");
    if (environment) {
        gw_buf_puts(&b, ",");
        put_kv_str(&b, "deployment.environment.name", environment);
    }
    gw_buf_puts(&b, "]},\"scopeSpans\":[{\"scope\":{\"name\":\"hybridgw\",\"version\":");
    put_str(&b, GW_VERSION);
    gw_buf_puts(&b, "},\"spans\":[");
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (!spans || !spans[i])
            continue;
        if (!first)
            gw_buf_puts(&b, ",");
        first = false;
        put_span(&b, spans[i]);
    }
    gw_buf_puts(&b, "]}]}]}");
    if (b.err) {
        gw_buf_free(&b);
        return NULL;
    }
    return b.data; /* gw_buf memory is plain malloc memory */
}
