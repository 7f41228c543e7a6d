/*
 * fuzz_traceparent.c - libFuzzer target for the W3C traceparent parser
 * (src/telemetry/trace.h: gw_traceparent_parse / gw_traceparent_format).
 *
 * Input: the raw header value (not NUL-terminated; the parser must not read
 * past it). Checks: a rejected value leaves the context zeroed; an accepted
 * one has non-zero ids and formats back to exactly the input with optional
 * whitespace trimmed (so only lowercase version-00 values are accepted), and
 * the formatted value parses to the same context.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "telemetry/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) \
    do { \
        if (!(x)) \
            __builtin_trap(); \
    } while (0)

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    /* an exact-size heap copy lets ASan catch any read past the end */
    char *v = malloc(size ? size : 1);
    if (size)
        memcpy(v, data, size);
    struct gw_trace_ctx ctx;
    memset(&ctx, 0x5a, sizeof(ctx));
    bool ok = gw_traceparent_parse((gw_str){v, size}, &ctx);
    CHECK(ok == ctx.valid);
    if (!ok) {
        CHECK(all_zero(ctx.trace_id, 16) && all_zero(ctx.span_id, 8) && ctx.flags == 0);
    } else {
        CHECK(!all_zero(ctx.trace_id, 16) && !all_zero(ctx.span_id, 8));
        size_t b = 0, e = size;
        while (b < e && (v[b] == ' ' || v[b] == '\t'))
            b++;
        while (e > b && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        char out[56];
        gw_traceparent_format(ctx.trace_id, ctx.span_id, ctx.flags, out);
        CHECK(strlen(out) == 55);
        CHECK(e - b == 55 && memcmp(out, v + b, 55) == 0);
        struct gw_trace_ctx again;
        CHECK(gw_traceparent_parse(gw_str_c(out), &again));
        CHECK(memcmp(again.trace_id, ctx.trace_id, 16) == 0);
        CHECK(memcmp(again.span_id, ctx.span_id, 8) == 0);
        CHECK(again.flags == ctx.flags && again.valid);
    }
    free(v);
    return 0;
}
