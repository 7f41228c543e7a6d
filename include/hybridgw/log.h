/*
 * log.h - diagnostic logging to stderr, one line per event. The level is
 * checked before any formatting happens. The access log (one JSON object per
 * request) is separate: see access_log.h.
 *
 * Never pass a secret (API key, Authorization header) to these functions.
 */
#ifndef HYBRIDGW_LOG_H
#define HYBRIDGW_LOG_H

enum gw_log_level {
    GW_LOG_ERROR = 0,
    GW_LOG_WARN = 1,
    GW_LOG_INFO = 2,
    GW_LOG_DEBUG = 3,
    GW_LOG_LEVEL_COUNT
};

extern int gw_log_level;

const char *gw_log_level_str(enum gw_log_level l);
int gw_log_level_parse(const char *s); /* -1 if unknown */
void gw_log_set_prefix(const char *prefix);
void gw_log_write(enum gw_log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define gw_log(level, ...) \
    do { \
        if ((int)(level) <= gw_log_level) \
            gw_log_write((level), __VA_ARGS__); \
    } while (0)
#define gw_log_error(...) gw_log(GW_LOG_ERROR, __VA_ARGS__)
#define gw_log_warn(...) gw_log(GW_LOG_WARN, __VA_ARGS__)
#define gw_log_info(...) gw_log(GW_LOG_INFO, __VA_ARGS__)
#define gw_log_debug(...) gw_log(GW_LOG_DEBUG, __VA_ARGS__)

#endif
