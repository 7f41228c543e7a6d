/*
 * log.c - diagnostic log lines on stderr:
 *   2026-11-27T02:40:00.123Z info  [w1] message
 * One write(2) per line so lines from several threads never interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "hybridgw/core.h"
#include "hybridgw/log.h"

int gw_log_level = GW_LOG_INFO;
static _Thread_local char log_prefix[16];

static const char *const level_names[] = {"error", "warn", "info", "debug"};
_Static_assert(GW_ARRAY_LEN(level_names) == GW_LOG_LEVEL_COUNT, "log level names");

const char *gw_log_level_str(enum gw_log_level l)
{
    return (unsigned)l < GW_LOG_LEVEL_COUNT ? level_names[l] : "?";
}

int gw_log_level_parse(const char *s)
{
    for (int i = 0; i < GW_LOG_LEVEL_COUNT; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void gw_log_set_prefix(const char *prefix)
{
    snprintf(log_prefix, sizeof(log_prefix), "%s", prefix ? prefix : "");
}

void gw_log_write(enum gw_log_level l, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s%s%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, gw_log_level_str(l),
                     log_prefix[0] ? "[" : "", log_prefix, log_prefix[0] ? "] " : "");
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
