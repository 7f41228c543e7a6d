/*
 * fuzz_sse.c - libFuzzer target for the server-sent events parser
 * (include/hybridgw/sse.h).
 *
 * Input: byte 0 picks how the stream is cut into pieces (empty pieces
 * included); the rest is the upstream byte stream. The stream is fed once
 * in one piece and once in pieces: the events seen (event, data, id) and
 * whether an unfinished event is left at the end must be the same. The cap
 * on one event is larger than any input, so it never decides the outcome.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "hybridgw/sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) \
    do { \
        if (!(x)) \
            __builtin_trap(); \
    } while (0)

static void put_field(struct gw_buf *out, char tag, gw_str s)
{
    if (!s.p) {
        gw_buf_printf(out, "%c-", tag);
        return;
    }
    gw_buf_printf(out, "%c%zu:", tag, s.len);
    gw_buf_append(out, s.p, s.len);
}

static int on_event(const struct gw_sse_event *ev, void *ud)
{
    struct gw_buf *out = ud;
    CHECK(ev->data.p != NULL);
    /* no line terminator survives in a field; data lines are joined by \n */
    CHECK(!ev->event.p || (!memchr(ev->event.p, '\n', ev->event.len) &&
                           !memchr(ev->event.p, '\r', ev->event.len)));
    CHECK(!ev->id.p || (!memchr(ev->id.p, '\n', ev->id.len) && !memchr(ev->id.p, '\r', ev->id.len)));
    CHECK(!memchr(ev->data.p, '\r', ev->data.len));
    put_field(out, 'e', ev->event);
    put_field(out, 'd', ev->data);
    put_field(out, 'i', ev->id);
    gw_buf_puts(out, ";");
    return 0;
}

static size_t next_piece(uint32_t *st, uint8_t ctl)
{
    static const size_t max_piece[] = {1, 2, 3, 7, 16, 64, 256, 1024};
    *st ^= *st << 13;
    *st ^= *st >> 17;
    *st ^= *st << 5;
    size_t cap = max_piece[ctl & 7];
    /* ctl bit 3: allow empty pieces */
    return (ctl & 8) ? *st % (cap + 1) : 1 + *st % cap;
}

static bool run(const uint8_t *data, size_t size, uint8_t ctl, bool whole, struct gw_buf *out)
{
    struct gw_sse s;
    gw_sse_init(&s, 1 << 20);
    uint32_t st = 0x2545f491u ^ ctl ^ ((uint32_t)size << 8);
    if (!st)
        st = 1; /* xorshift state must not be 0 */
    size_t off = 0;
    while (off < size || (off == 0 && size == 0)) {
        size_t piece = whole ? size - off : next_piece(&st, ctl); /* GW_MIN evaluates twice */
        size_t n = GW_MIN(piece, size - off);
        CHECK(gw_sse_feed(&s, (const char *)data + off, n, on_event, out) == 0);
        off += n;
        if (size == 0)
            break;
    }
    bool unfinished = gw_sse_finish(&s);
    CHECK(!gw_sse_finish(&s));
    gw_sse_free(&s);
    return unfinished;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1 << 16))
        return 0;
    uint8_t ctl = data[0];
    data++;
    size--;
    struct gw_buf a, b;
    gw_buf_init(&a, 0);
    gw_buf_init(&b, 0);
    bool ua = run(data, size, ctl, true, &a);
    bool ub = run(data, size, ctl, false, &b);
    CHECK(a.err == 0 && b.err == 0);
    CHECK(ua == ub);
    CHECK(a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0));
    gw_buf_free(&a);
    gw_buf_free(&b);
    return 0;
}
