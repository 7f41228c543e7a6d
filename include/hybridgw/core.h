/*
 * core.h - types and helpers every module uses: error codes, string slices,
 * allocation wrappers that abort on OOM, assertions for "impossible" cases.
 *
 * Small internal allocations abort on failure (as redis and h2o do); sizes an
 * attacker controls are capped before any allocation, so an abort here means
 * the machine is out of memory, not that a client sent something large.
 */
#ifndef HYBRIDGW_CORE_H
#define HYBRIDGW_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>

#define GW_VERSION "0.1.0"

/* Return codes: 0 is success, negative values are errors. */
enum {
    GW_OK = 0,
    GW_ERR = -1,       /* generic failure; details were logged or put in errbuf */
    GW_AGAIN = -2,     /* need more input / would block */
    GW_ETOOBIG = -3,   /* a capped buffer would exceed its cap */
    GW_ENOMEM = -4,
    GW_EPARSE = -5,    /* malformed input */
};

#define GW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define GW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define GW_MAX(a, b) ((a) > (b) ? (a) : (b))
#define GW_UNUSED(x) ((void)(x))

/* GW_ALWAYS/GW_NEVER: assert in debug builds, still branch in release builds
 * so that an "impossible" case degrades gracefully instead of crashing. */
#ifdef NDEBUG
#define GW_ALWAYS(x) (x)
#define GW_NEVER(x) (x)
#else
#include <assert.h>
#define GW_ALWAYS(x) ((x) ? 1 : (assert(0 && #x), 0))
#define GW_NEVER(x) ((x) ? (assert(!#x), 1) : 0)
#endif

/* A borrowed slice of bytes. It does not own its memory: each API that
 * returns one says how long the memory stays valid. */
typedef struct gw_str {
    const char *p;
    size_t len;
} gw_str;

#define GW_STR(lit) ((gw_str){(lit), sizeof(lit) - 1})
#define GW_STR_NULL ((gw_str){NULL, 0})

static inline gw_str gw_str_c(const char *s)
{
    return (gw_str){s, s ? strlen(s) : 0};
}

static inline bool gw_str_eq(gw_str a, gw_str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

bool gw_str_ieq(gw_str a, gw_str b);
bool gw_str_eq_c(gw_str a, const char *c);
bool gw_str_ieq_c(gw_str a, const char *c);

void *gw_malloc(size_t n);
void *gw_calloc(size_t n, size_t sz);
void *gw_realloc(void *p, size_t n);
char *gw_strdup(const char *s);
char *gw_strndup(const char *s, size_t n);

/* Monotonic clock in nanoseconds / microseconds; wall clock in ns. */
uint64_t gw_now_ns(void);
uint64_t gw_wall_ns(void);

/* The current UTC time as ISO-8601 with milliseconds ("2026-11-27T04:40:00.123Z")
 * into out. */
void gw_utc_now(char out[64]);

/* Parse "10s", "250ms", "2m", "1h", bare number = seconds; -> ms. */
int gw_parse_duration_ms(const char *s, uint64_t *out);
/* Parse "8MiB", "32KiB", "1MB", "1024"; -> bytes. */
int gw_parse_size(const char *s, uint64_t *out);

/* Length of the valid UTF-8 sequence at p (1-4), or 0 when p[0] does not
 * start one (bad lead byte, truncated, overlong, surrogate, > U+10FFFF). */
size_t gw_utf8_seq_len(const char *p, size_t n);

/* Cut a NUL-terminated string back to its last complete UTF-8 character
 * (after snprintf may have truncated inside one). */
void gw_utf8_trim(char *s);

/* Fill buf with n random bytes from the OS; never fails (aborts). */
void gw_random_bytes(void *buf, size_t n);
/* FNV-1a 64 of n bytes (hash tables, checksums; not for secrets). */
uint64_t gw_fnv1a64(const void *p, size_t n);
/* Write 2*n lowercase hex chars + NUL into out. */
void gw_hex(const void *in, size_t n, char *out);

#endif
