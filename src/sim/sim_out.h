/*
 * sim_out.h - a small output buffer for building response bodies and stream
 * events. It works over caller memory (a stack scratch buffer, for stream
 * events) or over heap memory that grows up to a hard cap (for whole
 * non-streaming bodies). Every append past the capacity sets a sticky error
 * and does nothing, so builders append freely and check once at the end.
 */
#ifndef HYBRIDGW_SIM_OUT_H
#define HYBRIDGW_SIM_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sim_out {
    char *p;        /* bytes; NUL-terminated while not in error */
    size_t len;     /* bytes used, without the NUL */
    size_t cap;     /* bytes available in p */
    size_t max;     /* heap mode: never grow past this; 0 = fixed mode */
    bool err;       /* sticky: an append did not fit */
};

/* Use the caller's buf of cap bytes (cap >= 1); the buffer never grows. */
void sim_out_fixed(struct sim_out *o, char *buf, size_t cap);
/* Start an empty heap buffer that may grow up to max bytes. Aborts on OOM. */
void sim_out_heap(struct sim_out *o, size_t max);
/* Free a heap buffer (no-op in fixed mode). */
void sim_out_free(struct sim_out *o);
/* Forget the contents and the error, keep the memory. */
void sim_out_reset(struct sim_out *o);
void sim_out_put(struct sim_out *o, const char *s, size_t n);
void sim_out_puts(struct sim_out *o, const char *s);
void sim_out_printf(struct sim_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void sim_out_u64(struct sim_out *o, uint64_t v);
/* Append s[0..n) as a JSON string literal with its quotes. Control bytes are
 * escaped; bytes >= 0x80 pass through (input was valid UTF-8 JSON). */
void sim_out_json_str(struct sim_out *o, const char *s, size_t n);
/* Append the escaped content only, without the quotes. */
void sim_out_json_esc(struct sim_out *o, const char *s, size_t n);

#endif
