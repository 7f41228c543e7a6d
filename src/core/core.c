/*
 * core.c - allocation wrappers, string helpers, clocks, unit parsing.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/random.h>

#include "hybridgw/core.h"

static void oom(size_t n)
{
    fprintf(stderr, "hybridgw: out of memory allocating %zu bytes\n", n);
    abort();
}

void *gw_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *gw_calloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p)
        oom(n * sz);
    return p;
}

void *gw_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *gw_strndup(const char *s, size_t n)
{
    char *p = gw_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *gw_strdup(const char *s)
{
    return gw_strndup(s, strlen(s));
}

bool gw_str_ieq(gw_str a, gw_str b)
{
    return a.len == b.len && (a.len == 0 || strncasecmp(a.p, b.p, a.len) == 0);
}

bool gw_str_eq_c(gw_str a, const char *c)
{
    return gw_str_eq(a, gw_str_c(c));
}

bool gw_str_ieq_c(gw_str a, const char *c)
{
    return gw_str_ieq(a, gw_str_c(c));
}

uint64_t gw_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t gw_wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void gw_utc_now(char out[64])
{
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
}

/* Parse a non-negative decimal number with an optional fraction; the rest of
 * the string (the unit) is returned in *end. */
static int parse_num(const char *s, double *out, const char **end)
{
    char *e;
    if (!s || !isdigit((unsigned char)*s))
        return GW_EPARSE;
    errno = 0;
    double v = strtod(s, &e);
    if (errno || v < 0)
        return GW_EPARSE;
    while (*e == ' ')
        e++;
    *out = v;
    *end = e;
    return GW_OK;
}

int gw_parse_duration_ms(const char *s, uint64_t *out)
{
    double v;
    const char *u;
    if (parse_num(s, &v, &u))
        return GW_EPARSE;
    double mul;
    if (*u == '\0' || strcmp(u, "s") == 0)
        mul = 1000;
    else if (strcmp(u, "ms") == 0)
        mul = 1;
    else if (strcmp(u, "us") == 0)
        mul = 0.001;
    else if (strcmp(u, "m") == 0 || strcmp(u, "min") == 0)
        mul = 60000;
    else if (strcmp(u, "h") == 0)
        mul = 3600000;
    else
        return GW_EPARSE;
    double ms = v * mul;
    if (ms > 1e15)
        return GW_EPARSE;
    *out = (uint64_t)(ms + 0.5);
    return GW_OK;
}

int gw_parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        double mul;
    } units[] = {
        {"", 1},       {"B", 1},           {"k", 1e3},        {"KB", 1e3},
        {"K", 1024},   {"KiB", 1024},      {"M", 1048576},    {"MiB", 1048576},
        {"MB", 1e6},   {"G", 1073741824.}, {"GiB", 1073741824.}, {"GB", 1e9},
    };
    double v;
    const char *u;
    if (parse_num(s, &v, &u))
        return GW_EPARSE;
    for (size_t i = 0; i < GW_ARRAY_LEN(units); i++) {
        if (strcmp(u, units[i].unit) == 0) {
            double b = v * units[i].mul;
            if (b > 1e15)
                return GW_EPARSE;
            *out = (uint64_t)b;
            return GW_OK;
        }
    }
    return GW_EPARSE;
}

void gw_random_bytes(void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            perror("getrandom");
            abort();
        }
        p += r;
        n -= (size_t)r;
    }
}

uint64_t gw_fnv1a64(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

void gw_hex(const void *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = in;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

size_t gw_utf8_seq_len(const char *p, size_t n)
{
    const unsigned char *u = (const unsigned char *)p;
    if (n == 0)
        return 0;
    if (u[0] < 0x80)
        return 1;
    size_t len;
    unsigned cp, min;
    if (u[0] >= 0xc2 && u[0] <= 0xdf) {
        len = 2; cp = u[0] & 0x1f; min = 0x80;
    } else if (u[0] >= 0xe0 && u[0] <= 0xef) {
        len = 3; cp = u[0] & 0x0f; min = 0x800;
    } else if (u[0] >= 0xf0 && u[0] <= 0xf4) {
        len = 4; cp = u[0] & 0x07; min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((u[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (u[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void gw_utf8_trim(char *s)
{
    size_t n = strlen(s), i = 0, good = 0;
    while (i < n) {
        size_t l = gw_utf8_seq_len(s + i, n - i);
        if (!l)
            break;
        i += l;
        good = i;
    }
    s[good] = '\0';
}
