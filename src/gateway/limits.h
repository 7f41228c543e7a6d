/*
 * limits.h - requests per minute, tokens per minute and concurrent requests
 * per virtual key and per team (see limits.c).
 *
 * The limiter lives in the process, shared by the workers under one mutex:
 * a check costs a hash lookup and a few additions, no database call. Each
 * subject (a key or a team) counts the last 60 seconds in one-second slots,
 * so "per minute" is a sliding window and the time until a refused request
 * would fit is known exactly. Replicas sharing the ledger database swap
 * their counts through it every limits_sync (gw_limits_sync_start): each
 * one adds the others' slots and in-flight counts to its own.
 */
#ifndef HYBRIDGW_LIMITS_H
#define HYBRIDGW_LIMITS_H

#include "ledger/store.h"

#define GW_LIMIT_WINDOW 60          /* seconds */

struct gw_limit_spec {
    int64_t rpm, tpm, concurrent;   /* 0 = none */
};

static inline bool gw_limit_spec_any(const struct gw_limit_spec *s)
{
    return s && (s->rpm > 0 || s->tpm > 0 || s->concurrent > 0);
}

enum gw_limit_kind {
    GW_LIMIT_OK = 0,
    GW_LIMIT_REQUESTS,      /* rpm reached */
    GW_LIMIT_TOKENS,        /* tpm would be passed */
    GW_LIMIT_CONCURRENT,    /* max concurrent requests running */
    GW_LIMIT_TOO_LARGE,     /* the request alone needs more than tpm: waiting won't help */
};

/* What the rate-limit headers report: the tightest of the key's and the
 * team's limits, after this request. limit 0: no such limit. reset_ms: until
 * the window holds nothing counted any more. */
struct gw_limit_view {
    int64_t req_limit, req_remaining, req_reset_ms;
    int64_t tok_limit, tok_remaining, tok_reset_ms;
};

struct gw_limit_verdict {
    enum gw_limit_kind kind;
    const char *scope;              /* "key" or "team": who refused */
    int64_t limit;                  /* the limit that refused */
    int64_t used;                   /* what the window (or in-flight count) held */
    int64_t retry_after_ms;         /* when it would fit; 0 for TOO_LARGE */
    struct gw_limit_view view;
};

struct gw__lim_entry;
/* An admitted request's hold on its subjects, released by gw_limits_finish. */
struct gw_limit_ticket {
    struct gw__lim_entry *e[2];     /* key, team; NULL when unlimited */
    int64_t sec;                    /* unix second it was counted in */
    int64_t tokens;                 /* tokens it was charged */
};

struct gw_limits;

struct gw_limits *gw_limits_new(void);
/* Stops the sync thread first if one runs. */
void gw_limits_free(struct gw_limits *L);

/* Count a request of key_id (its limits kspec) and team ("" none; tspec)
 * that may use `tokens` (prompt estimate + max output). On GW_LIMIT_OK the
 * request is counted and *t must be given back to gw_limits_finish; else
 * nothing is counted and *v says why. v->view is filled either way. A spec
 * without any limit is not counted (its subject is not tracked). */
enum gw_limit_kind gw_limits_admit(struct gw_limits *L, const char *key_id,
                                   const struct gw_limit_spec *kspec, const char *team,
                                   const struct gw_limit_spec *tspec, int64_t tokens,
                                   int64_t now_ms, struct gw_limit_ticket *t,
                                   struct gw_limit_verdict *v);
/* The request ended having used `tokens` (input + output): its charge is
 * corrected in the second it was counted in, and it stops counting as
 * concurrent. */
void gw_limits_finish(struct gw_limits *L, struct gw_limit_ticket *t, int64_t tokens);

/* ---- across replicas ---- */

/* What this replica publishes: the seconds of the window changed since the
 * last collect, and the in-flight count of every subject that has requests
 * running or changed it. Arrays are allocated (free them). Also forgets
 * subjects idle for two windows. */
void gw_limits_collect(struct gw_limits *L, int64_t now_ms, struct gw_rate_row **rows,
                       size_t *nrows, struct gw_rate_inflight **infl, size_t *ninfl);
/* The other replicas' counts: replaces every remote count held before. */
void gw_limits_apply_remote(struct gw_limits *L, int64_t now_ms, const struct gw_rate_row *rows,
                            size_t nrows, const struct gw_rate_inflight *infl, size_t ninfl);
/* Number of subjects tracked (for metrics and tests). */
size_t gw_limits_subjects(struct gw_limits *L);

/* A thread with its own store connection that publishes and fetches the
 * counts every interval_ms (replica: this process's id, made at start).
 * Errors are logged and counted, never fatal: the limiter goes on with
 * its own counts. */
int gw_limits_sync_start(struct gw_limits *L, const char *url, int64_t interval_ms, char *err,
                         size_t errlen);
struct gw_limits_sync_stats {
    uint64_t syncs, errors;
    int64_t last_ok_ms;           /* unix ms of the last good sync, 0 none */
};
void gw_limits_sync_stats(struct gw_limits *L, struct gw_limits_sync_stats *out);

#endif
