/*
 * limits.c - requests per minute, tokens per minute and concurrent requests
 * per virtual key and per team.
 *
 * A subject ("key:<id>" or "team:<name>") holds the last 60 seconds in
 * one-second slots, its own counts and, separately, what the other replicas
 * reported for the same seconds. A request is admitted when
 *   requests in the window + 1            <= rpm
 *   tokens in the window + its tokens     <= tpm
 *   requests running + 1                  <= concurrent
 * for its key and its team. Its tokens are the prompt estimate plus the
 * most it may generate (max_tokens, or the backend's default), the way the
 * vendors count; when it ends, the charge is corrected to the tokens it
 * really used, in the second it was counted in.
 *
 * Between replicas (gw_limits_sync_start): every interval each process
 * writes the seconds it changed and its in-flight counts to the ledger
 * database and reads everyone else's. Counts from other replicas are at
 * most one interval old, so N replicas can together pass a limit by what
 * N-1 of them admit in one interval; one replica alone never passes it.
 *
 * One mutex guards everything; the request path does a hash lookup and a
 * few additions under it. Subjects idle for two windows are forgotten.
 */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "hybridgw/core.h"
#include "hybridgw/log.h"
#include "gateway/limits.h"

#define W GW_LIMIT_WINDOW
#define NBUCKETS 1024
#define NO_DIRTY INT64_MAX

struct gw__lim_entry {
    struct gw__lim_entry *next;     /* hash chain */
    uint64_t hash;
    char subject[GW_RATE_SUBJECT_LEN];
    int64_t last_sec;               /* newest second rolled in */
    int64_t req[W], tok[W];         /* this replica, slot = second % W */
    int64_t rreq[W], rtok[W];       /* the other replicas */
    int64_t req_sum, tok_sum, rreq_sum, rtok_sum;
    int64_t inflight, rinflight;
    int64_t dirty_from;             /* oldest second changed since collect */
    bool inflight_dirty;
    int64_t used_sec;               /* last admission (for forgetting) */
};

struct gw_limits {
    uv_mutex_t lock;
    struct gw__lim_entry *buckets[NBUCKETS];
    size_t n;
    bool resend;                    /* a sync failed: publish whole windows next time */
    /* the sync thread */
    bool sync_running;
    uv_thread_t thread;
    uv_mutex_t sync_lock;
    uv_cond_t sync_wake;
    bool stopping;
    char *url;
    int64_t interval_ms;
    char replica[33];
    struct gw_limits_sync_stats stats;  /* under sync_lock */
};

static size_t slot(int64_t sec)
{
    return (size_t)(sec % W);
}

static struct gw__lim_entry *find(struct gw_limits *L, const char *subject, bool create,
                                  int64_t now_sec)
{
    uint64_t h = gw_fnv1a64(subject, strlen(subject));
    struct gw__lim_entry **head = &L->buckets[h % NBUCKETS];
    for (struct gw__lim_entry *e = *head; e; e = e->next)
        if (e->hash == h && strcmp(e->subject, subject) == 0)
            return e;
    if (!create)
        return NULL;
    struct gw__lim_entry *e = gw_calloc(1, sizeof(*e));
    e->hash = h;
    snprintf(e->subject, sizeof(e->subject), "%s", subject);
    e->last_sec = now_sec;
    e->used_sec = now_sec;
    e->dirty_from = NO_DIRTY;
    e->next = *head;
    *head = e;
    L->n++;
    return e;
}

/* Move the window to end at now_sec: seconds that left it are zeroed. */
static void roll(struct gw__lim_entry *e, int64_t now_sec)
{
    if (now_sec <= e->last_sec)
        return;
    if (now_sec - e->last_sec >= W) {
        memset(e->req, 0, sizeof(e->req));
        memset(e->tok, 0, sizeof(e->tok));
        memset(e->rreq, 0, sizeof(e->rreq));
        memset(e->rtok, 0, sizeof(e->rtok));
        e->req_sum = e->tok_sum = e->rreq_sum = e->rtok_sum = 0;
    } else {
        for (int64_t s = e->last_sec + 1; s <= now_sec; s++) {
            size_t i = slot(s);
            e->req_sum -= e->req[i];
            e->tok_sum -= e->tok[i];
            e->rreq_sum -= e->rreq[i];
            e->rtok_sum -= e->rtok[i];
            e->req[i] = e->tok[i] = e->rreq[i] = e->rtok[i] = 0;
        }
    }
    e->last_sec = now_sec;
}

/* Milliseconds from now until `need` of the window's counts (requests or
 * tokens: a and b) have left it; a full window when they never do. */
static int64_t time_to_free(const struct gw__lim_entry *e, const int64_t *a, const int64_t *b,
                            int64_t need, int64_t now_ms)
{
    int64_t freed = 0;
    for (int64_t s = e->last_sec - W + 1; s <= e->last_sec; s++) {
        freed += a[slot(s)] + b[slot(s)];
        if (freed >= need)
            return GW_MAX((s + W) * 1000 - now_ms, 1);
    }
    return W * 1000;
}

/* Until everything counted has left the window; 0 when nothing is. */
static int64_t time_to_empty(const struct gw__lim_entry *e, const int64_t *a, const int64_t *b,
                             int64_t now_ms)
{
    for (int64_t s = e->last_sec; s > e->last_sec - W; s--)
        if (a[slot(s)] + b[slot(s)] > 0)
            return GW_MAX((s + W) * 1000 - now_ms, 1);
    return 0;
}

/* Does e (with limits sp) take one more request of `tokens`? */
static enum gw_limit_kind check(const struct gw__lim_entry *e, const struct gw_limit_spec *sp,
                                int64_t tokens, int64_t now_ms, struct gw_limit_verdict *v)
{
    if (sp->tpm > 0 && tokens > sp->tpm) {
        v->limit = sp->tpm;
        v->used = tokens;
        v->retry_after_ms = 0;
        return GW_LIMIT_TOO_LARGE;
    }
    if (sp->concurrent > 0 && e->inflight + e->rinflight + 1 > sp->concurrent) {
        v->limit = sp->concurrent;
        v->used = e->inflight + e->rinflight;
        v->retry_after_ms = 1000;   /* nothing tells when one ends */
        return GW_LIMIT_CONCURRENT;
    }
    int64_t used = e->req_sum + e->rreq_sum;
    if (sp->rpm > 0 && used + 1 > sp->rpm) {
        v->limit = sp->rpm;
        v->used = used;
        v->retry_after_ms = time_to_free(e, e->req, e->rreq, used + 1 - sp->rpm, now_ms);
        return GW_LIMIT_REQUESTS;
    }
    used = e->tok_sum + e->rtok_sum;
    if (sp->tpm > 0 && used + tokens > sp->tpm) {
        v->limit = sp->tpm;
        v->used = used;
        v->retry_after_ms = time_to_free(e, e->tok, e->rtok, used + tokens - sp->tpm, now_ms);
        return GW_LIMIT_TOKENS;
    }
    return GW_LIMIT_OK;
}

/* Keep the tighter of a limit already in the view and this one. */
static void tighter(int64_t *limit, int64_t *remaining, int64_t *reset_ms, int64_t lim,
                    int64_t used, int64_t reset)
{
    int64_t rem = GW_MAX(lim - used, 0);
    if (*limit == 0 || rem < *remaining || (rem == *remaining && reset > *reset_ms)) {
        *limit = lim;
        *remaining = rem;
        *reset_ms = reset;
    }
}

/* Fold e's standing into the header view: the tightest limit wins. */
static void view_add(struct gw_limit_view *vw, const struct gw__lim_entry *e,
                     const struct gw_limit_spec *sp, int64_t now_ms)
{
    if (sp->rpm > 0)
        tighter(&vw->req_limit, &vw->req_remaining, &vw->req_reset_ms, sp->rpm,
                e->req_sum + e->rreq_sum, time_to_empty(e, e->req, e->rreq, now_ms));
    if (sp->tpm > 0)
        tighter(&vw->tok_limit, &vw->tok_remaining, &vw->tok_reset_ms, sp->tpm,
                e->tok_sum + e->rtok_sum, time_to_empty(e, e->tok, e->rtok, now_ms));
}

static void mark_dirty(struct gw__lim_entry *e, int64_t sec)
{
    if (sec < e->dirty_from)
        e->dirty_from = sec;
}

enum gw_limit_kind gw_limits_admit(struct gw_limits *L, const char *key_id,
                                   const struct gw_limit_spec *kspec, const char *team,
                                   const struct gw_limit_spec *tspec, int64_t tokens,
                                   int64_t now_ms, struct gw_limit_ticket *t,
                                   struct gw_limit_verdict *v)
{
    memset(t, 0, sizeof(*t));
    memset(v, 0, sizeof(*v));
    if (tokens < 0)
        tokens = 0;
    int64_t now_sec = now_ms / 1000;
    const struct gw_limit_spec *sp[2] = {kspec, tspec};
    static const char *const scope[2] = {"key", "team"};
    char subj[2][GW_RATE_SUBJECT_LEN];
    bool want[2] = {gw_limit_spec_any(kspec) && key_id && *key_id,
                    gw_limit_spec_any(tspec) && team && *team};
    if (want[0])
        snprintf(subj[0], sizeof(subj[0]), "key:%s", key_id);
    if (want[1])
        snprintf(subj[1], sizeof(subj[1]), "team:%s", team);
    if (!want[0] && !want[1])
        return GW_LIMIT_OK;

    uv_mutex_lock(&L->lock);
    struct gw__lim_entry *e[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++)
        if (want[i]) {
            e[i] = find(L, subj[i], true, now_sec);
            /* a clock that stepped back counts in the newest second seen */
            if (e[i]->last_sec > now_sec)
                now_sec = e[i]->last_sec;
        }
    enum gw_limit_kind kind = GW_LIMIT_OK;
    for (int i = 0; i < 2; i++) {
        if (!e[i])
            continue;
        roll(e[i], now_sec);
        if (kind == GW_LIMIT_OK) {
            kind = check(e[i], sp[i], tokens, now_ms, v);
            if (kind != GW_LIMIT_OK)
                v->scope = scope[i];
        }
    }
    if (kind == GW_LIMIT_OK) {
        size_t s = slot(now_sec);
        for (int i = 0; i < 2; i++) {
            if (!e[i])
                continue;
            e[i]->req[s]++;
            e[i]->req_sum++;
            e[i]->tok[s] += tokens;
            e[i]->tok_sum += tokens;
            e[i]->inflight++;
            e[i]->inflight_dirty = true;
            e[i]->used_sec = now_sec;
            mark_dirty(e[i], now_sec);
            t->e[i] = e[i];
        }
        t->sec = now_sec;
        t->tokens = tokens;
    }
    v->kind = kind;
    for (int i = 0; i < 2; i++)
        if (e[i])
            view_add(&v->view, e[i], sp[i], now_ms);
    uv_mutex_unlock(&L->lock);
    return kind;
}

void gw_limits_finish(struct gw_limits *L, struct gw_limit_ticket *t, int64_t tokens)
{
    if (!t->e[0] && !t->e[1])
        return;
    if (tokens < 0)
        tokens = 0;
    uv_mutex_lock(&L->lock);
    for (int i = 0; i < 2; i++) {
        struct gw__lim_entry *e = t->e[i];
        if (!e)
            continue;
        if (t->sec > e->last_sec - W && t->sec <= e->last_sec && tokens != t->tokens) {
            size_t s = slot(t->sec);
            int64_t nv = GW_MAX(e->tok[s] + tokens - t->tokens, 0);
            e->tok_sum += nv - e->tok[s];
            e->tok[s] = nv;
            mark_dirty(e, t->sec);
        }
        e->inflight--;
        e->inflight_dirty = true;
    }
    uv_mutex_unlock(&L->lock);
    t->e[0] = t->e[1] = NULL;
}

struct gw_limits *gw_limits_new(void)
{
    struct gw_limits *L = gw_calloc(1, sizeof(*L));
    uv_mutex_init(&L->lock);
    uv_mutex_init(&L->sync_lock);
    uv_cond_init(&L->sync_wake);
    return L;
}

size_t gw_limits_subjects(struct gw_limits *L)
{
    uv_mutex_lock(&L->lock);
    size_t n = L->n;
    uv_mutex_unlock(&L->lock);
    return n;
}

/* ---- across replicas ---- */

static bool idle(const struct gw__lim_entry *e, int64_t now_sec)
{
    return e->inflight == 0 && e->rinflight == 0 && e->req_sum == 0 && e->tok_sum == 0 &&
           e->rreq_sum == 0 && e->rtok_sum == 0 && e->dirty_from == NO_DIRTY &&
           !e->inflight_dirty && e->used_sec < now_sec - 2 * W;
}

void gw_limits_collect(struct gw_limits *L, int64_t now_ms, struct gw_rate_row **rows,
                       size_t *nrows, struct gw_rate_inflight **infl, size_t *ninfl)
{
    int64_t now_sec = now_ms / 1000;
    size_t nr = 0, cr = 0, ni = 0, ci = 0;
    struct gw_rate_row *r = NULL;
    struct gw_rate_inflight *in = NULL;
    uv_mutex_lock(&L->lock);
    bool all = L->resend;
    L->resend = false;
    for (size_t b = 0; b < NBUCKETS; b++) {
        struct gw__lim_entry **pp = &L->buckets[b];
        while (*pp) {
            struct gw__lim_entry *e = *pp;
            roll(e, now_sec);
            if (idle(e, now_sec)) {
                *pp = e->next;
                free(e);
                L->n--;
                continue;
            }
            int64_t from = all ? e->last_sec - W + 1 : e->dirty_from;
            for (int64_t s = GW_MAX(from, e->last_sec - W + 1); s <= e->last_sec; s++) {
                if (all && e->req[slot(s)] == 0 && e->tok[slot(s)] == 0)
                    continue;
                if (nr == cr) {
                    cr = cr ? cr * 2 : 64;
                    r = gw_realloc(r, cr * sizeof(*r));
                }
                memcpy(r[nr].subject, e->subject, sizeof(e->subject));
                r[nr].sec = s;
                r[nr].requests = e->req[slot(s)];
                r[nr].tokens = e->tok[slot(s)];
                nr++;
            }
            e->dirty_from = NO_DIRTY;
            if (e->inflight > 0 || e->inflight_dirty || all) {
                if (ni == ci) {
                    ci = ci ? ci * 2 : 16;
                    in = gw_realloc(in, ci * sizeof(*in));
                }
                memcpy(in[ni].subject, e->subject, sizeof(e->subject));
                in[ni].inflight = e->inflight;
                ni++;
                e->inflight_dirty = false;
            }
            pp = &e->next;
        }
    }
    uv_mutex_unlock(&L->lock);
    *rows = r;
    *nrows = nr;
    *infl = in;
    *ninfl = ni;
}

void gw_limits_apply_remote(struct gw_limits *L, int64_t now_ms, const struct gw_rate_row *rows,
                            size_t nrows, const struct gw_rate_inflight *infl, size_t ninfl)
{
    int64_t now_sec = now_ms / 1000;
    uv_mutex_lock(&L->lock);
    for (size_t b = 0; b < NBUCKETS; b++)
        for (struct gw__lim_entry *e = L->buckets[b]; e; e = e->next) {
            memset(e->rreq, 0, sizeof(e->rreq));
            memset(e->rtok, 0, sizeof(e->rtok));
            e->rreq_sum = e->rtok_sum = 0;
            e->rinflight = 0;
        }
    for (size_t i = 0; i < nrows; i++) {
        const struct gw_rate_row *r = &rows[i];
        if (r->sec > now_sec || r->sec <= now_sec - W || (r->requests <= 0 && r->tokens <= 0))
            continue;
        struct gw__lim_entry *e = find(L, r->subject, true, now_sec);
        roll(e, now_sec);
        if (r->sec <= e->last_sec - W)
            continue;
        size_t s = slot(r->sec);
        e->rreq[s] += GW_MAX(r->requests, 0);
        e->rtok[s] += GW_MAX(r->tokens, 0);
        e->rreq_sum += GW_MAX(r->requests, 0);
        e->rtok_sum += GW_MAX(r->tokens, 0);
    }
    for (size_t i = 0; i < ninfl; i++) {
        if (infl[i].inflight <= 0)
            continue;
        struct gw__lim_entry *e = find(L, infl[i].subject, true, now_sec);
        e->rinflight += infl[i].inflight;
    }
    uv_mutex_unlock(&L->lock);
}

static int64_t wall_ms(void)
{
    return (int64_t)(gw_wall_ns() / 1000000);
}

static void sync_run(void *arg)
{
    struct gw_limits *L = arg;
    struct gw_store *st = NULL;
    int64_t last_prune = 0, last_log = 0;
    uint64_t failed_since_log = 0;
    uv_mutex_lock(&L->sync_lock);
    while (!L->stopping) {
        uv_cond_timedwait(&L->sync_wake, &L->sync_lock, (uint64_t)L->interval_ms * 1000000ull);
        if (L->stopping)
            break;
        uv_mutex_unlock(&L->sync_lock);
        char err[256] = "";
        int64_t now = wall_ms();
        if (!st)
            st = gw_store_open(L->url, err, sizeof(err));
        struct gw_rate_row *mine, *others = NULL;
        struct gw_rate_inflight *minf, *oinf = NULL;
        size_t nm, nmi, no = 0, noi = 0;
        gw_limits_collect(L, now, &mine, &nm, &minf, &nmi);
        int rc = GW_STORE_ERR;
        if (st) {
            bool prune = now - last_prune >= 10000;
            /* in-flight rows live three intervals (and at least two seconds)
             * after their replica last wrote them: a replica that died stops
             * counting soon */
            int64_t stale = GW_MAX(3 * L->interval_ms, 2000);
            rc = gw_store_rate_sync(st, L->replica, now, mine, nm, minf, nmi, W, stale, prune,
                                    &others, &no, &oinf, &noi);
            if (rc == GW_STORE_OK && prune)
                last_prune = now;
            if (rc != GW_STORE_OK) {
                snprintf(err, sizeof(err), "%s", gw_store_error(st));
                gw_store_close(st);   /* a new connection next time */
                st = NULL;
            }
        }
        if (rc == GW_STORE_OK)
            gw_limits_apply_remote(L, wall_ms(), others, no, oinf, noi);
        free(mine);
        free(minf);
        free(others);
        free(oinf);
        uv_mutex_lock(&L->sync_lock);
        L->stats.syncs++;
        if (rc == GW_STORE_OK) {
            L->stats.last_ok_ms = now;
            if (failed_since_log) {
                gw_log_info("rate limits: sharing counts with other replicas again");
                failed_since_log = 0;
            }
        } else {
            L->stats.errors++;
            failed_since_log++;
            /* what was not written goes again, whole, next time */
            uv_mutex_lock(&L->lock);
            L->resend = true;
            uv_mutex_unlock(&L->lock);
            if (now - last_log >= 60000) {
                gw_log_warn("rate limits: cannot share counts with other replicas (%s); "
                            "each replica limits on its own counts until the database answers",
                            err[0] ? err : "unknown error");
                last_log = now;
            }
        }
    }
    uv_mutex_unlock(&L->sync_lock);
    gw_store_close(st);
}

int gw_limits_sync_start(struct gw_limits *L, const char *url, int64_t interval_ms, char *err,
                         size_t errlen)
{
    if (L->sync_running)
        return 0;
    unsigned char rnd[8];
    gw_random_bytes(rnd, sizeof(rnd));
    gw_hex(rnd, sizeof(rnd), L->replica);
    L->url = gw_strdup(url);
    L->interval_ms = interval_ms > 0 ? interval_ms : 500;
    L->stopping = false;
    if (uv_thread_create(&L->thread, sync_run, L) != 0) {
        snprintf(err, errlen, "cannot start the rate-limit sync thread");
        free(L->url);
        L->url = NULL;
        return -1;
    }
    L->sync_running = true;
    return 0;
}

void gw_limits_sync_stats(struct gw_limits *L, struct gw_limits_sync_stats *out)
{
    uv_mutex_lock(&L->sync_lock);
    *out = L->stats;
    uv_mutex_unlock(&L->sync_lock);
}

void gw_limits_free(struct gw_limits *L)
{
    if (!L)
        return;
    if (L->sync_running) {
        uv_mutex_lock(&L->sync_lock);
        L->stopping = true;
        uv_cond_signal(&L->sync_wake);
        uv_mutex_unlock(&L->sync_lock);
        uv_thread_join(&L->thread);
        L->sync_running = false;
    }
    for (size_t b = 0; b < NBUCKETS; b++) {
        struct gw__lim_entry *e = L->buckets[b];
        while (e) {
            struct gw__lim_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    /* the url may hold a password */
    if (L->url) {
        memset(L->url, 0, strlen(L->url));
        free(L->url);
    }
    uv_cond_destroy(&L->sync_wake);
    uv_mutex_destroy(&L->sync_lock);
    uv_mutex_destroy(&L->lock);
    free(L);
}
