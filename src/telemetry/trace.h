/*
 * trace.h - request traces: W3C trace context, spans, and an OTLP/HTTP JSON
 * exporter that runs off the request path.
 *
 * A worker builds its spans when a request finalizes and submits them; the
 * exporter thread batches them and POSTs {"resourceSpans":[...]} to the
 * configured endpoint (PROTOCOLS.md 5.3), with the configured headers
 * (Langfuse: Authorization: Basic ..., x-langfuse-ingestion-version: 4).
 * Submitting never blocks: when the queue is full the spans are dropped and
 * counted. SIGTERM flushes what is queued, within a deadline.
 */
#ifndef HYBRIDGW_TRACE_H
#define HYBRIDGW_TRACE_H

#include "hybridgw/core.h"
#include "hybridgw/config.h"

/* ---- trace context ---- */
struct gw_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];     /* the parent's span id, from traceparent */
    uint8_t flags;          /* 01 = sampled */
    bool valid;
};
/* Parse a traceparent header (version 00; all-zero ids and version ff are
 * invalid). Returns true and fills ctx when valid. */
bool gw_traceparent_parse(gw_str v, struct gw_trace_ctx *ctx);
/* "00-<trace>-<span>-<flags>" into out (56 bytes incl. NUL). */
void gw_traceparent_format(const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags,
                           char out[56]);
/* Random ids (never all zero). */
void gw_trace_new_id(uint8_t *id, size_t len);

/* ---- spans ---- */
enum gw_attr_type {
    GW_ATTR_STR = 0,
    GW_ATTR_INT = 1,
    GW_ATTR_DOUBLE = 2,
    GW_ATTR_BOOL = 3,
    GW_ATTR_STR_ARRAY = 4,  /* values joined with \x1f in s */
    GW_ATTR_TYPE_COUNT
};

struct gw_span;

/* A span with copied name; times in unix ns. kind: 1 internal, 2 server,
 * 3 client (OTLP enum values). parent may be NULL (a root span). */
struct gw_span *gw_span_new(const char *name, int kind, const uint8_t trace_id[16],
                            const uint8_t span_id[8], const uint8_t *parent_span_id,
                            uint64_t start_unix_ns);
void gw_span_end(struct gw_span *s, uint64_t end_unix_ns);
/* status: 0 unset, 1 ok, 2 error; message may be NULL. */
void gw_span_status(struct gw_span *s, int code, const char *message);
void gw_span_str(struct gw_span *s, const char *key, const char *v);
void gw_span_int(struct gw_span *s, const char *key, int64_t v);
void gw_span_double(struct gw_span *s, const char *key, double v);
void gw_span_bool(struct gw_span *s, const char *key, bool v);
/* n strings */
void gw_span_str_array(struct gw_span *s, const char *key, const char *const *v, size_t n);
void gw_span_free(struct gw_span *s);

/* Encode spans as one OTLP/HTTP JSON ExportTraceServiceRequest with the
 * resource attributes service.name (and deployment.environment.name when
 * environment is not NULL). Returns a malloc'd string. */
char *gw_otlp_encode(struct gw_span *const *spans, size_t n, const char *service_name,
                     const char *environment);

/* ---- exporter ---- */
struct gw_tracer;

/* Start the exporter thread for cfg's telemetry.otlp (endpoint, headers,
 * queue, batch, interval, timeout, service_name, environment are copied).
 * NULL when cfg has no endpoint. */
struct gw_tracer *gw_tracer_start(const struct gw_config *cfg);
/* Should a new trace be recorded? (cfg sample rate; a sampled parent is
 * always followed, an unsampled one never.) Thread-safe. */
bool gw_tracer_sample(struct gw_tracer *t, const struct gw_trace_ctx *parent);
/* Hand spans to the exporter (ownership moves, also when dropped).
 * Never blocks on the network. Thread-safe. */
void gw_tracer_submit(struct gw_tracer *t, struct gw_span **spans, size_t n);
struct gw_tracer_stats {
    uint64_t exported;      /* spans the endpoint accepted */
    uint64_t dropped;       /* queue full */
    uint64_t failed;        /* spans in batches the endpoint refused or that timed out */
    uint64_t queued;        /* now */
};
void gw_tracer_stats(struct gw_tracer *t, struct gw_tracer_stats *out);
/* Export what is queued (waiting at most deadline_ms), stop the thread,
 * free everything. */
void gw_tracer_stop(struct gw_tracer *t, uint64_t deadline_ms);

/* ---- additions (telemetry implementation) ---- */

/* Limits that keep one span bounded: a span holds at most GW_SPAN_MAX_ATTRS
 * distinct attribute keys (further keys are dropped and reported as
 * droppedAttributesCount); a string array keeps its first GW_SPAN_MAX_ARRAY
 * items; names, keys, string values, array items and status messages longer
 * than GW_SPAN_MAX_VALUE bytes are cut at a UTF-8 character boundary.
 * Setting a key again replaces its value. A NULL span, a NULL or empty key
 * and a NULL string value are ignored. */
#define GW_SPAN_MAX_ATTRS 128
#define GW_SPAN_MAX_ARRAY 128
#define GW_SPAN_MAX_VALUE (128 * 1024)

/* A uniform random double in [0, 1) from the same per-thread generator as
 * gw_trace_new_id (not for secrets). Thread-safe. */
double gw_trace_random01(void);

/* The gw_tracer_* calls accept t == NULL (tracing off): sample says false,
 * submit frees the spans, stats are all zero, stop does nothing. submit sets
 * each entry of spans it took over or freed to NULL and skips NULL entries.
 * Spans still queued when the stop deadline passes count as dropped; spans
 * whose POST the deadline cut short count as failed. */

#endif
