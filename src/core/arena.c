/*
 * arena.c - chunked region allocator (see arena.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "hybridgw/arena.h"

struct gw_arena_chunk {
    struct gw_arena_chunk *next;  /* older chunk */
    size_t size;                  /* usable bytes in data[] */
    size_t used;                  /* bytes handed out */
    _Alignas(16) char data[];
};

#define ALIGN16(n) (((n) + 15) & ~(size_t)15)

void gw_arena_init(struct gw_arena *a, size_t chunk_size)
{
    a->head = NULL;
    a->chunk_size = chunk_size ? chunk_size : 4096;
}

static struct gw_arena_chunk *new_chunk(size_t size)
{
    struct gw_arena_chunk *c = gw_malloc(sizeof(*c) + size);
    c->next = NULL;
    c->size = size;
    c->used = 0;
    return c;
}

void *gw_arena_alloc(struct gw_arena *a, size_t n)
{
    if (n > SIZE_MAX / 2) {
        /* callers cap what clients control; this is a bug, not input */
        fprintf(stderr, "hybridgw: arena allocation of %zu bytes\n", n);
        abort();
    }
#ifdef GW_ARENA_MALLOC
    /* one chunk per allocation, exactly sized, so ASan sees the bounds */
    struct gw_arena_chunk *c = new_chunk(n);
    c->used = n;
    c->next = a->head;
    a->head = c;
    return c->data;
#else
    n = ALIGN16(n ? n : 1);
    struct gw_arena_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        if (n > a->chunk_size / 4) {
            /* large block: its own chunk, linked behind the current one so
             * the current chunk's free space stays usable */
            struct gw_arena_chunk *big = new_chunk(n);
            big->used = n;
            if (c) {
                big->next = c->next;
                c->next = big;
            } else {
                a->head = big;
            }
            return big->data;
        }
        c = new_chunk(a->chunk_size);
        c->next = a->head;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
#endif
}

char *gw_arena_strndup(struct gw_arena *a, const char *s, size_t n)
{
    char *p = gw_arena_alloc(a, n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *gw_arena_sprintf(struct gw_arena *a, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    char *p = gw_arena_alloc(a, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

void gw_arena_reset(struct gw_arena *a)
{
    struct gw_arena_chunk *c = a->head, *keep = NULL;
    while (c) {
        struct gw_arena_chunk *next = c->next;
#ifndef GW_ARENA_MALLOC
        if (!next && c->size == a->chunk_size) {
            keep = c;
            break;
        }
#endif
        free(c);
        c = next;
    }
    if (keep)
        keep->used = 0;
    a->head = keep;
}

void gw_arena_free(struct gw_arena *a)
{
    struct gw_arena_chunk *c = a->head;
    while (c) {
        struct gw_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}
