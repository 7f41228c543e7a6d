/*
 * arena.h - a region allocator for objects that live exactly as long as one
 * request (headers, JSON DOM copies, the routing decision, the translated
 * upstream body, access-log fields). Freeing the arena frees all of it.
 *
 * Built with -DGW_ARENA_MALLOC every allocation is a separate malloc so that
 * ASan and valgrind see each object's bounds (nginx's NGX_DEBUG_PALLOC).
 */
#ifndef HYBRIDGW_ARENA_H
#define HYBRIDGW_ARENA_H

#include "hybridgw/core.h"

struct gw_arena_chunk;

struct gw_arena {
    struct gw_arena_chunk *head;  /* newest chunk, where allocation happens */
    size_t chunk_size;            /* default size of a new chunk */
};

/* Initialise an arena whose chunks are at least chunk_size bytes. */
void gw_arena_init(struct gw_arena *a, size_t chunk_size);
/* Allocate n bytes aligned to 16; aborts on OOM, never returns NULL. */
void *gw_arena_alloc(struct gw_arena *a, size_t n);
char *gw_arena_strndup(struct gw_arena *a, const char *s, size_t n);
char *gw_arena_sprintf(struct gw_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Free everything but the first chunk, which is kept for reuse. */
void gw_arena_reset(struct gw_arena *a);
/* Free everything. The arena may be initialised again afterwards. */
void gw_arena_free(struct gw_arena *a);

#endif
