/*
 * store.c - the spend store over either database (store.h): schema
 * migrations, virtual keys and their secrets, team budgets, reservations
 * and the spend ledger.
 *
 * Money is kept in the database as integer nano-dollars (1e-9 USD) in
 * spend_totals and reservations, so "spent + reserved + this request <=
 * budget" is exact: a budget of 1.00 fits ten reservations of 0.10, and
 * one cent over is over. The ledger keeps each request's cost as the
 * double the cost record carries; it is for reports, not for budgets.
 *
 * Budgets are checked against spend_totals (one row per key or team and
 * period: "day:2026-11-27", "month:2026-11", "total") plus the open
 * reservations, so a check is a few indexed reads, never a ledger scan.
 * Settling a reservation adds its real cost to the day and month of the
 * settle time (UTC) and to the total.
 *
 * Concurrency: reserve and settle run in one write transaction. SQLite's
 * BEGIN IMMEDIATE takes the database write lock; PostgreSQL locks the
 * key's and then the team's "total" row of spend_totals (created on demand)
 * with SELECT ... FOR UPDATE, always in that order, so two gateways
 * reserving against one budget take turns and cannot both pass when only
 * one fits.
 *
 * This file does not: batch ledger rows, rate-limit, or decide what to do
 * over budget. Those belong to the request path.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "ledger/store.h"
#include "ledger/store_db.h"

/* ------------------------------------------------------------------ */
/* schema */

/* One statement list per schema version. Versions are never edited once
 * released: a change is a new version appended here. The SQL is the
 * dialect both databases accept (BIGINT, DOUBLE PRECISION, TEXT). */
static const char *const migration_1[] = {
    "CREATE TABLE keys ("
    " id TEXT PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " team TEXT NOT NULL DEFAULT '',"
    " prefix TEXT NOT NULL,"
    " sha256 TEXT NOT NULL UNIQUE,"
    " allowed_models TEXT NOT NULL DEFAULT '',"
    " may_force_tier INTEGER NOT NULL DEFAULT 0,"
    " expires_at BIGINT NOT NULL DEFAULT 0,"
    " created_at BIGINT NOT NULL,"
    " revoked_at BIGINT NOT NULL DEFAULT 0,"
    " metadata TEXT NOT NULL DEFAULT '{}',"
    " rpm BIGINT NOT NULL DEFAULT 0,"
    " tpm BIGINT NOT NULL DEFAULT 0,"
    " max_concurrent BIGINT NOT NULL DEFAULT 0,"
    " budget_day DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " budget_month DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " budget_total DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " downgrade INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX keys_team ON keys (team)",
    "CREATE TABLE teams ("
    " name TEXT PRIMARY KEY,"
    " budget_day DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " budget_month DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " budget_total DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " rpm BIGINT NOT NULL DEFAULT 0,"
    " tpm BIGINT NOT NULL DEFAULT 0,"
    " max_concurrent BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE reservations ("
    " id TEXT PRIMARY KEY,"
    " key_id TEXT NOT NULL,"
    " team TEXT NOT NULL DEFAULT '',"
    " nano_usd BIGINT NOT NULL,"
    " created_at BIGINT NOT NULL)",
    "CREATE INDEX reservations_key ON reservations (key_id)",
    "CREATE INDEX reservations_team ON reservations (team)",
    "CREATE INDEX reservations_created ON reservations (created_at)",
    "CREATE TABLE spend_totals ("
    " scope TEXT NOT NULL,"  /* 'key' (name = key id) or 'team' */
    " name TEXT NOT NULL,"
    " period TEXT NOT NULL," /* 'day:YYYY-MM-DD', 'month:YYYY-MM', 'total' */
    " nano_usd BIGINT NOT NULL DEFAULT 0,"
    " PRIMARY KEY (scope, name, period))",
    "CREATE TABLE spend ("
    " request_id TEXT NOT NULL,"
    " ts_ms BIGINT NOT NULL,"
    " key_id TEXT NOT NULL DEFAULT '',"
    " key_name TEXT NOT NULL DEFAULT '',"
    " team TEXT NOT NULL DEFAULT '',"
    " tier TEXT NOT NULL DEFAULT '',"
    " backend TEXT NOT NULL DEFAULT '',"
    " model TEXT NOT NULL DEFAULT '',"
    " label TEXT NOT NULL DEFAULT '',"
    " status INTEGER NOT NULL DEFAULT 0,"
    " input_tokens BIGINT NOT NULL DEFAULT 0,"
    " output_tokens BIGINT NOT NULL DEFAULT 0,"
    " cached_tokens BIGINT NOT NULL DEFAULT 0,"
    " cache_write_tokens BIGINT NOT NULL DEFAULT 0,"
    " reasoning_tokens BIGINT NOT NULL DEFAULT 0,"
    " cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " counterfactual_usd DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " estimated INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX spend_ts ON spend (ts_ms)",
    "CREATE INDEX spend_request ON spend (request_id)",
    NULL,
};

/* Version 2: rate-limit counts that replicas share (gw_store_rate_sync). */
static const char *const migration_2[] = {
    "CREATE TABLE rate_usage ("
    " subject TEXT NOT NULL,"
    " sec BIGINT NOT NULL,"
    " replica TEXT NOT NULL,"
    " requests BIGINT NOT NULL DEFAULT 0,"
    " tokens BIGINT NOT NULL DEFAULT 0,"
    " PRIMARY KEY (subject, sec, replica))",
    "CREATE INDEX rate_usage_sec ON rate_usage (sec)",
    "CREATE TABLE rate_inflight ("
    " subject TEXT NOT NULL,"
    " replica TEXT NOT NULL,"
    " inflight BIGINT NOT NULL DEFAULT 0,"
    " updated_ms BIGINT NOT NULL,"
    " PRIMARY KEY (subject, replica))",
    NULL,
};

static const char *const *const migrations[] = {
    migration_1,
    migration_2,
};
#define SCHEMA_VERSION ((int)GW_ARRAY_LEN(migrations))

/* ------------------------------------------------------------------ */
/* queries: every statement the store runs, prepared once per connection */

#define KEY_COLS                                                                             \
    "id, name, team, prefix, sha256, allowed_models, may_force_tier, expires_at, created_at," \
    " revoked_at, metadata, rpm, tpm, max_concurrent, budget_day, budget_month, budget_total," \
    " downgrade"
#define TEAM_COLS "name, budget_day, budget_month, budget_total, rpm, tpm, max_concurrent"
#define TAKE_IDS 16
#define INSERT_ROWS 8
#define IDS16                                                                             \
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16"
#define ROWS8                                                                             \
    "($1, $2, $3, $4, $5), ($6, $7, $8, $9, $10), ($11, $12, $13, $14, $15),"           \
    " ($16, $17, $18, $19, $20), ($21, $22, $23, $24, $25), ($26, $27, $28, $29, $30),"  \
    " ($31, $32, $33, $34, $35), ($36, $37, $38, $39, $40)"
#define REPORT(col)                                                                          \
    "SELECT " col ", COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0)," \
    " COALESCE(SUM(cost_usd), 0), COALESCE(SUM(counterfactual_usd), 0) FROM spend"           \
    " WHERE ts_ms >= $1 GROUP BY " col " ORDER BY 5 DESC, 1"

enum {
    Q_MIG_VERSION = 0,
    Q_MIG_INSERT,
    Q_KEY_INSERT,
    Q_KEY_GET,
    Q_KEY_BY_HASH,
    Q_KEY_LIST,
    Q_KEY_REVOKE,
    Q_KEY_EXISTS,
    Q_KEY_ROTATE,
    Q_KEY_UPDATE,
    Q_TEAM_PUT,
    Q_TEAM_GET,
    Q_TEAM_LIST,
    Q_TOTAL_ENSURE,
    Q_TOTAL_LOCK,
    Q_TOTALS_READ,
    Q_TOTAL_ADD,
    Q_RES_SUM_KEY,
    Q_RES_SUM_TEAM,
    Q_RES_INSERT,
    Q_RES_GET,
    Q_RES_DELETE,
    Q_RES_EXPIRE,
    Q_SPEND_INSERT,
    Q_REPORT_KEY,
    Q_REPORT_TEAM,
    Q_REPORT_MODEL,
    Q_REPORT_TIER,
    Q_REPORT_BACKEND,
    Q_RES_TAKE_MANY,
    Q_RES_INSERT_MANY,
    Q_RATE_PUT,
    Q_INFL_PUT,
    Q_RATE_OTHERS,
    Q_INFL_OTHERS,
    Q_RATE_PRUNE,
    Q_INFL_PRUNE,
    Q_COUNT
};

static const char *const query_sql[Q_COUNT] = {
    [Q_MIG_VERSION] = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
    [Q_MIG_INSERT] = "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
    [Q_KEY_INSERT] = "INSERT INTO keys (" KEY_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
                     " $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    [Q_KEY_GET] = "SELECT " KEY_COLS " FROM keys WHERE id = $1",
    [Q_KEY_BY_HASH] = "SELECT " KEY_COLS " FROM keys WHERE sha256 = $1",
    [Q_KEY_LIST] = "SELECT " KEY_COLS " FROM keys ORDER BY created_at, id",
    [Q_KEY_REVOKE] = "UPDATE keys SET revoked_at = $2 WHERE id = $1 AND revoked_at = 0",
    [Q_KEY_EXISTS] = "SELECT revoked_at FROM keys WHERE id = $1",
    [Q_KEY_ROTATE] = "UPDATE keys SET sha256 = $2, prefix = $3 WHERE id = $1 AND revoked_at = 0",
    [Q_KEY_UPDATE] = "UPDATE keys SET name = $2, team = $3, allowed_models = $4,"
                     " may_force_tier = $5, expires_at = $6, metadata = $7, rpm = $8, tpm = $9,"
                     " max_concurrent = $10, budget_day = $11, budget_month = $12,"
                     " budget_total = $13, downgrade = $14 WHERE id = $1",
    [Q_TEAM_PUT] = "INSERT INTO teams (" TEAM_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
                   " ON CONFLICT (name) DO UPDATE SET budget_day = excluded.budget_day,"
                   " budget_month = excluded.budget_month, budget_total = excluded.budget_total,"
                   " rpm = excluded.rpm, tpm = excluded.tpm,"
                   " max_concurrent = excluded.max_concurrent",
    [Q_TEAM_GET] = "SELECT " TEAM_COLS " FROM teams WHERE name = $1",
    [Q_TEAM_LIST] = "SELECT " TEAM_COLS " FROM teams ORDER BY name",
    [Q_TOTAL_ENSURE] = "INSERT INTO spend_totals (scope, name, period, nano_usd)"
                       " VALUES ($1, $2, 'total', 0) ON CONFLICT (scope, name, period) DO NOTHING",
    [Q_TOTAL_LOCK] = "SELECT nano_usd FROM spend_totals"
                     " WHERE scope = $1 AND name = $2 AND period = 'total' FOR UPDATE",
    [Q_TOTALS_READ] = "SELECT period, nano_usd FROM spend_totals"
                      " WHERE scope = $1 AND name = $2 AND period IN ($3, $4, 'total')",
    [Q_TOTAL_ADD] = "INSERT INTO spend_totals (scope, name, period, nano_usd)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (scope, name, period)"
                    " DO UPDATE SET nano_usd = spend_totals.nano_usd + excluded.nano_usd",
    [Q_RES_SUM_KEY] = "SELECT COALESCE(SUM(nano_usd), 0) FROM reservations WHERE key_id = $1",
    [Q_RES_SUM_TEAM] = "SELECT COALESCE(SUM(nano_usd), 0) FROM reservations WHERE team = $1",
    [Q_RES_INSERT] = "INSERT INTO reservations (id, key_id, team, nano_usd, created_at)"
                     " VALUES ($1, $2, $3, $4, $5)",
    [Q_RES_GET] = "SELECT key_id, team FROM reservations WHERE id = $1",
    [Q_RES_DELETE] = "DELETE FROM reservations WHERE id = $1",
    [Q_RES_EXPIRE] = "DELETE FROM reservations WHERE created_at < $1",
    [Q_SPEND_INSERT] = "INSERT INTO spend (request_id, ts_ms, key_id, key_name, team, tier,"
                       " backend, model, label, status, input_tokens, output_tokens,"
                       " cached_tokens, cache_write_tokens, reasoning_tokens, cost_usd,"
                       " counterfactual_usd, estimated) VALUES ($1, $2, $3, $4, $5, $6, $7,"
                       " $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    [Q_REPORT_KEY] = REPORT("key_name"),
    [Q_REPORT_TEAM] = REPORT("team"),
    [Q_REPORT_MODEL] = REPORT("model"),
    [Q_REPORT_TIER] = REPORT("tier"),
    [Q_REPORT_BACKEND] = REPORT("backend"),
    /* batches: TAKE_IDS ids at once (unused slots are '', which no
     * reservation has), INSERT_ROWS reservations at once (rows with id ''
     * are padding and skipped); casts because PostgreSQL types VALUES
     * parameters as text */
    [Q_RES_TAKE_MANY] = "DELETE FROM reservations WHERE id IN (" IDS16 ")"
                        " RETURNING id, key_id, team",
    [Q_RES_INSERT_MANY] = "INSERT INTO reservations (id, key_id, team, nano_usd, created_at)"
                          " SELECT column1, column2, column3, CAST(column4 AS BIGINT),"
                          " CAST(column5 AS BIGINT) FROM (VALUES " ROWS8 ") AS v"
                          " WHERE column1 <> ''",
    [Q_RATE_PUT] = "INSERT INTO rate_usage (subject, sec, replica, requests, tokens)"
                   " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subject, sec, replica)"
                   " DO UPDATE SET requests = excluded.requests, tokens = excluded.tokens",
    [Q_INFL_PUT] = "INSERT INTO rate_inflight (subject, replica, inflight, updated_ms)"
                   " VALUES ($1, $2, $3, $4) ON CONFLICT (subject, replica)"
                   " DO UPDATE SET inflight = excluded.inflight, updated_ms = excluded.updated_ms",
    [Q_RATE_OTHERS] = "SELECT subject, sec, SUM(requests), SUM(tokens) FROM rate_usage"
                      " WHERE sec > $1 AND replica <> $2 GROUP BY subject, sec",
    [Q_INFL_OTHERS] = "SELECT subject, SUM(inflight) FROM rate_inflight"
                      " WHERE updated_ms > $1 AND replica <> $2 AND inflight > 0"
                      " GROUP BY subject",
    [Q_RATE_PRUNE] = "DELETE FROM rate_usage WHERE sec < $1",
    [Q_INFL_PRUNE] = "DELETE FROM rate_inflight WHERE updated_ms < $1",
};

_Static_assert(Q_COUNT <= GW__DB_MAX_QUERIES, "raise GW__DB_MAX_QUERIES");

#define TXT(x) ((struct gw__dbv){GW__DBV_TEXT, (x), 0, 0})
#define INT(x) ((struct gw__dbv){GW__DBV_INT, NULL, (int64_t)(x), 0})
#define REAL(x) ((struct gw__dbv){GW__DBV_REAL, NULL, 0, (x)})
#define ARGS(...) ((const struct gw__dbv[]){__VA_ARGS__}), \
    (int)(sizeof((const struct gw__dbv[]){__VA_ARGS__}) / sizeof(struct gw__dbv))
#define NOARGS NULL, 0

/* ------------------------------------------------------------------ */
/* helpers */

void gw__store_seterr(struct gw_store *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
}

/* Put "<op>: " in front of the backend's message. */
static int errctx(struct gw_store *s, const char *op, int rc)
{
    size_t ol = strlen(op), el = strlen(s->err);
    if (strncmp(s->err, op, ol) == 0 || ol + 3 >= sizeof(s->err))
        return rc;
    if (ol + 2 + el >= sizeof(s->err))
        el = sizeof(s->err) - ol - 3;
    memmove(s->err + ol + 2, s->err, el);
    memcpy(s->err, op, ol);
    memcpy(s->err + ol, ": ", 2);
    s->err[ol + 2 + el] = 0;
    return rc;
}

static void cpy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static int64_t to_nano(double usd)
{
    if (!(usd > 0))
        return 0;
    if (usd > 9e9)
        usd = 9e9;
    return (int64_t)llround(usd * 1e9);
}

/* Period names for the UTC day and month of unix time now. */
static void periods(int64_t now, char day[32], char month[32])
{
    time_t t = (time_t)now;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(day, 32, "day:%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    snprintf(month, 32, "month:%04d-%02d", tm.tm_year + 1900, tm.tm_mon + 1);
}

static void random_id(const char *prefix, size_t nbytes, char *out)
{
    unsigned char b[16];
    size_t pl = strlen(prefix);
    gw_random_bytes(b, nbytes);
    memcpy(out, prefix, pl);
    gw_hex(b, nbytes, out + pl);
}

/* ---- running queries ---- */

static int q_start(struct gw_store *s, int qid, const struct gw__dbv *a, int n)
{
    return s->ops->query(s, qid, query_sql[qid], a, n);
}

/* Run a statement to completion; *changes (may be NULL) gets rows changed. */
static int q_exec(struct gw_store *s, int qid, const struct gw__dbv *a, int n, int64_t *changes)
{
    int rc = q_start(s, qid, a, n);
    if (rc == GW_STORE_OK) {
        while ((rc = s->ops->step(s)) == 1)
            ;
        if (rc == 0 && changes)
            *changes = s->ops->changes(s);
    }
    s->ops->end(s);
    return rc < 0 ? rc : GW_STORE_OK;
}

/* Run a query and step to its first row: 1 row (call q_end), 0 none, < 0 error. */
static int q_first(struct gw_store *s, int qid, const struct gw__dbv *a, int n)
{
    int rc = q_start(s, qid, a, n);
    if (rc == GW_STORE_OK)
        rc = s->ops->step(s);
    if (rc != 1)
        s->ops->end(s);
    return rc;
}

static void q_end(struct gw_store *s)
{
    s->ops->end(s);
}

/* A query whose one row has one integer. */
static int q_int(struct gw_store *s, int qid, const struct gw__dbv *a, int n, int64_t *out)
{
    int rc = q_first(s, qid, a, n);
    if (rc < 0)
        return rc;
    *out = 0;
    if (rc == 1) {
        *out = s->ops->col_int(s, 0);
        q_end(s);
    }
    return GW_STORE_OK;
}

/* Run query qid and read every row with read() into a growing array of
 * elem-byte records (read() fills a whole record). GW_STORE_OK with *out
 * (free it; NULL when no rows) and *n, or < 0 with nothing allocated. */
static int q_rows(struct gw_store *s, int qid, const struct gw__dbv *a, int na, size_t elem,
                  void (*read)(struct gw_store *s, void *rec), void **out, size_t *n)
{
    char *v = NULL;
    size_t cnt = 0, cap = 0;
    int rc = q_start(s, qid, a, na);
    while (rc == GW_STORE_OK && (rc = s->ops->step(s)) == 1) {
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            v = gw_realloc(v, cap * elem);
        }
        read(s, v + cnt++ * elem);
        rc = GW_STORE_OK;
    }
    q_end(s);
    if (rc < 0) {
        free(v);
        v = NULL;
        cnt = 0;
    }
    *out = v;
    *n = cnt;
    return rc < 0 ? rc : GW_STORE_OK;
}

static int tx_begin(struct gw_store *s, bool write)
{
    return s->ops->exec(s, write ? s->ops->begin_write : s->ops->begin_read);
}

static int tx_commit(struct gw_store *s)
{
    return s->ops->exec(s, "COMMIT");
}

/* Roll back, keeping the message of the error that caused it. */
static void tx_rollback(struct gw_store *s)
{
    char keep[sizeof(s->err)];
    memcpy(keep, s->err, sizeof(keep));
    s->ops->exec(s, "ROLLBACK");
    memcpy(s->err, keep, sizeof(keep));
}

/* ------------------------------------------------------------------ */
/* open, close, migrations */

static int migrate(struct gw_store *s)
{
    int64_t have = 0;
    bool pg = strcmp(s->ops->kind, "postgres") == 0;
    if (tx_begin(s, true) < 0)
        return GW_STORE_ERR;
    /* two replicas starting at once migrate one after the other */
    if (pg && s->ops->exec(s, "SELECT pg_advisory_xact_lock(7236154001)") < 0)
        goto fail;
    if (s->ops->exec(s, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        " version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)") < 0)
        goto fail;
    if (q_int(s, Q_MIG_VERSION, NOARGS, &have) < 0)
        goto fail;
    if (have > SCHEMA_VERSION) {
        gw__store_seterr(s, "database schema version %lld is newer than this hybridgw knows (%d)",
                         (long long)have, SCHEMA_VERSION);
        goto fail;
    }
    for (int v = (int)have + 1; v <= SCHEMA_VERSION; v++) {
        for (const char *const *st = migrations[v - 1]; *st; st++) {
            if (s->ops->exec(s, *st) < 0)
                goto fail;
        }
        if (q_exec(s, Q_MIG_INSERT, ARGS(INT(v), INT(time(NULL))), NULL) < 0)
            goto fail;
    }
    if (tx_commit(s) < 0)
        goto fail;
    s->schema_version = SCHEMA_VERSION;
    return GW_STORE_OK;
fail:
    tx_rollback(s);
    return errctx(s, "migration", GW_STORE_ERR);
}

struct gw_store *gw_store_open(const char *url, char *err, size_t errlen)
{
    struct gw_store *s = gw_calloc(1, sizeof(*s));
    int rc;
    if (!url || !*url) {
        gw__store_seterr(s, "no database URL");
        rc = GW_STORE_ERR;
    } else if (strcmp(url, "sqlite::memory:") == 0) {
        rc = gw__sqlite_open(s, ":memory:");
    } else if (strncmp(url, "sqlite://", 9) == 0) {
        /* sqlite:///abs/path -> /abs/path, sqlite://rel.db -> rel.db */
        rc = url[9] ? gw__sqlite_open(s, url + 9) : GW_STORE_ERR;
        if (!url[9])
            gw__store_seterr(s, "sqlite URL without a path");
    } else if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) {
        rc = gw__pg_open(s, url);
    } else {
        gw__store_seterr(s, "unknown database URL (want sqlite:///path, sqlite::memory: or "
                            "postgres://...)");
        rc = GW_STORE_ERR;
    }
    if (rc == GW_STORE_OK && migrate(s) < 0) {
        s->ops->close(s);
        rc = GW_STORE_ERR;
    }
    if (rc != GW_STORE_OK) {
        if (err && errlen)
            snprintf(err, errlen, "%s", s->err);
        free(s);
        return NULL;
    }
    return s;
}

void gw_store_close(struct gw_store *s)
{
    if (!s)
        return;
    s->ops->close(s);
    free(s);
}

const char *gw_store_error(const struct gw_store *s)
{
    return s->err;
}

const char *gw_store_kind(const struct gw_store *s)
{
    return s->ops->kind;
}

int gw_store_schema_version(struct gw_store *s)
{
    return s->schema_version;
}

/* ------------------------------------------------------------------ */
/* virtual keys */

void gw_vkey_hash(const char *secret, size_t len, unsigned char out[32])
{
    unsigned int n = 32;
    if (!EVP_Digest(secret, len, out, &n, EVP_sha256(), NULL))
        abort(); /* only fails when OpenSSL is out of memory */
}

static bool is_base62(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool gw_vkey_secret_valid(const char *secret, size_t len)
{
    if (len != GW_VKEY_SECRET_LEN || memcmp(secret, "hgw-", 4) != 0)
        return false;
    for (size_t i = 4; i < len; i++) {
        if (!is_base62(secret[i]))
            return false;
    }
    return true;
}

bool gw_vkey_usable(const struct gw_vkey *k, int64_t now)
{
    return k->revoked_at == 0 && (k->expires_at == 0 || now < k->expires_at);
}

bool gw_models_allow(const char *list, const char *model)
{
    const char *p = list;
    size_t ml = strlen(model);
    if (!*p)
        return true;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == ml && ml && memcmp(p, model, ml) == 0)
            return true;
        p = e;
    }
    return false;
}

bool gw_vkey_allows_model(const struct gw_vkey *k, const char *model)
{
    return gw_models_allow(k->allowed_models, model);
}

/* "hgw-" + 40 base62 characters. Rejection sampling keeps them uniform:
 * bytes 248..255 would favour the first 8 symbols, so they are skipped. */
static void make_secret(char out[GW_VKEY_SECRET_LEN + 1])
{
    static const char b62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    unsigned char rnd[64];
    size_t used = sizeof(rnd), n = 4;
    memcpy(out, "hgw-", 4);
    while (n < GW_VKEY_SECRET_LEN) {
        if (used == sizeof(rnd)) {
            gw_random_bytes(rnd, sizeof(rnd));
            used = 0;
        }
        unsigned char b = rnd[used++];
        if (b < 248)
            out[n++] = b62[b % 62];
    }
    out[n] = 0;
    OPENSSL_cleanse(rnd, sizeof(rnd));
}

/* A new secret into secret, its hash and prefix into k. */
static void new_secret(struct gw_vkey *k, char *secret)
{
    make_secret(secret);
    gw_vkey_hash(secret, GW_VKEY_SECRET_LEN, k->sha256);
    cpy(k->prefix, sizeof(k->prefix), secret); /* "hgw-" + 8 */
}

static bool fits(const char *s, size_t size)
{
    return memchr(s, 0, size) != NULL;
}

static int check_key(struct gw_store *s, const struct gw_vkey *k)
{
    if (!fits(k->name, sizeof(k->name)) || !k->name[0]) {
        gw__store_seterr(s, "a key needs a name (at most %zu bytes)", sizeof(k->name) - 1);
        return GW_STORE_ERR;
    }
    if (!fits(k->team, sizeof(k->team)) || !fits(k->allowed_models, sizeof(k->allowed_models)) ||
        !fits(k->metadata, sizeof(k->metadata))) {
        gw__store_seterr(s, "key field not NUL-terminated");
        return GW_STORE_ERR;
    }
    if (k->rpm < 0 || k->tpm < 0 || k->max_concurrent < 0 || !(k->budget_day >= 0) ||
        !(k->budget_month >= 0) || !(k->budget_total >= 0) || k->expires_at < 0) {
        gw__store_seterr(s, "limits, budgets and expiry must be >= 0");
        return GW_STORE_ERR;
    }
    return GW_STORE_OK;
}

static void read_key(struct gw_store *s, void *rec)
{
    struct gw_vkey *k = rec;
    const struct gw__db_ops *o = s->ops;
    memset(k, 0, sizeof(*k));
    cpy(k->id, sizeof(k->id), o->col_text(s, 0));
    cpy(k->name, sizeof(k->name), o->col_text(s, 1));
    cpy(k->team, sizeof(k->team), o->col_text(s, 2));
    cpy(k->prefix, sizeof(k->prefix), o->col_text(s, 3));
    const char *hex = o->col_text(s, 4);
    for (int i = 0; i < 32 && hex[2 * i] && hex[2 * i + 1]; i++) {
        char b[3] = {hex[2 * i], hex[2 * i + 1], 0};
        k->sha256[i] = (unsigned char)strtoul(b, NULL, 16);
    }
    cpy(k->allowed_models, sizeof(k->allowed_models), o->col_text(s, 5));
    k->may_force_tier = o->col_int(s, 6) != 0;
    k->expires_at = o->col_int(s, 7);
    k->created_at = o->col_int(s, 8);
    k->revoked_at = o->col_int(s, 9);
    cpy(k->metadata, sizeof(k->metadata), o->col_text(s, 10));
    k->rpm = o->col_int(s, 11);
    k->tpm = o->col_int(s, 12);
    k->max_concurrent = o->col_int(s, 13);
    k->budget_day = o->col_real(s, 14);
    k->budget_month = o->col_real(s, 15);
    k->budget_total = o->col_real(s, 16);
    k->downgrade = o->col_int(s, 17) != 0;
}

int gw_store_key_create(struct gw_store *s, struct gw_vkey *k, char *secret, size_t secret_size)
{
    char hex[65];
    if (!secret || secret_size < 64) {
        gw__store_seterr(s, "key create: secret buffer too small");
        return GW_STORE_ERR;
    }
    secret[0] = 0;
    if (check_key(s, k) < 0)
        return errctx(s, "key create", GW_STORE_ERR);
    random_id("vk_", 8, k->id);
    new_secret(k, secret);
    gw_hex(k->sha256, 32, hex);
    k->created_at = (int64_t)time(NULL);
    k->revoked_at = 0;
    if (!k->metadata[0])
        cpy(k->metadata, sizeof(k->metadata), "{}");
    int rc = q_exec(s, Q_KEY_INSERT,
                    ARGS(TXT(k->id), TXT(k->name), TXT(k->team), TXT(k->prefix), TXT(hex),
                         TXT(k->allowed_models), INT(k->may_force_tier), INT(k->expires_at),
                         INT(k->created_at), INT(0), TXT(k->metadata), INT(k->rpm), INT(k->tpm),
                         INT(k->max_concurrent), REAL(k->budget_day), REAL(k->budget_month),
                         REAL(k->budget_total), INT(k->downgrade)),
                    NULL);
    if (rc < 0) {
        OPENSSL_cleanse(secret, secret_size);
        secret[0] = 0;
        return errctx(s, "key create", rc);
    }
    return GW_STORE_OK;
}

static int key_lookup(struct gw_store *s, int qid, const char *arg, struct gw_vkey *out)
{
    int rc = q_first(s, qid, ARGS(TXT(arg)));
    if (rc < 0)
        return errctx(s, "key lookup", rc);
    if (rc == 0) {
        if (qid == Q_KEY_GET)
            gw__store_seterr(s, "no such key: %.64s", arg);
        else
            gw__store_seterr(s, "no key has this secret");
        return GW_STORE_NOT_FOUND;
    }
    read_key(s, out);
    q_end(s);
    return GW_STORE_OK;
}

int gw_store_key_get(struct gw_store *s, const char *id, struct gw_vkey *out)
{
    return key_lookup(s, Q_KEY_GET, id, out);
}

int gw_store_key_by_hash(struct gw_store *s, const unsigned char sha256[32], struct gw_vkey *out)
{
    char hex[65];
    gw_hex(sha256, 32, hex);
    return key_lookup(s, Q_KEY_BY_HASH, hex, out);
}

/* The rows are read into memory before any callback runs, so a callback
 * may call the store (the CLI reads each key's spend). */
int gw_store_key_all(struct gw_store *s, struct gw_vkey **out, size_t *n)
{
    int rc = q_rows(s, Q_KEY_LIST, NOARGS, sizeof(**out), read_key, (void **)out, n);
    return rc < 0 ? errctx(s, "key list", rc) : GW_STORE_OK;
}

int gw_store_key_list(struct gw_store *s, void (*cb)(const struct gw_vkey *k, void *ud), void *ud)
{
    struct gw_vkey *v;
    size_t n;
    if (gw_store_key_all(s, &v, &n) != GW_STORE_OK)
        return GW_STORE_ERR;
    for (size_t i = 0; i < n; i++)
        cb(&v[i], ud);
    free(v);
    return GW_STORE_OK;
}

int gw_store_key_revoke(struct gw_store *s, const char *id, int64_t now)
{
    int64_t changed = 0, revoked = 0;
    int rc = q_exec(s, Q_KEY_REVOKE, ARGS(TXT(id), INT(now > 0 ? now : 1)), &changed);
    if (rc < 0)
        return errctx(s, "key revoke", rc);
    if (changed)
        return GW_STORE_OK;
    /* already revoked (fine, nothing to do) or unknown */
    rc = q_first(s, Q_KEY_EXISTS, ARGS(TXT(id)));
    if (rc < 0)
        return errctx(s, "key revoke", rc);
    if (rc == 1) {
        revoked = s->ops->col_int(s, 0);
        q_end(s);
    }
    if (rc == 0 || !revoked) {
        gw__store_seterr(s, "no such key: %s", id);
        return GW_STORE_NOT_FOUND;
    }
    return GW_STORE_OK;
}

int gw_store_key_rotate(struct gw_store *s, const char *id, char *secret, size_t secret_size)
{
    struct gw_vkey k;
    char hex[65];
    int64_t changed = 0;
    if (!secret || secret_size < 64) {
        gw__store_seterr(s, "key rotate: secret buffer too small");
        return GW_STORE_ERR;
    }
    secret[0] = 0;
    int rc = gw_store_key_get(s, id, &k);
    if (rc < 0)
        return rc;
    if (k.revoked_at) {
        gw__store_seterr(s, "key rotate: key %s is revoked", id);
        return GW_STORE_ERR;
    }
    new_secret(&k, secret);
    gw_hex(k.sha256, 32, hex);
    rc = q_exec(s, Q_KEY_ROTATE, ARGS(TXT(id), TXT(hex), TXT(k.prefix)), &changed);
    if (rc == GW_STORE_OK && !changed) {
        gw__store_seterr(s, "key rotate: key %s was revoked or removed meanwhile", id);
        rc = GW_STORE_NOT_FOUND;
    }
    if (rc < 0) {
        OPENSSL_cleanse(secret, secret_size);
        secret[0] = 0;
        return errctx(s, "key rotate", rc);
    }
    return GW_STORE_OK;
}

int gw_store_key_update(struct gw_store *s, const struct gw_vkey *k)
{
    int64_t changed = 0;
    const char *meta = k->metadata[0] ? k->metadata : "{}";
    if (check_key(s, k) < 0)
        return errctx(s, "key update", GW_STORE_ERR);
    int rc = q_exec(s, Q_KEY_UPDATE,
                    ARGS(TXT(k->id), TXT(k->name), TXT(k->team), TXT(k->allowed_models),
                         INT(k->may_force_tier), INT(k->expires_at), TXT(meta), INT(k->rpm),
                         INT(k->tpm), INT(k->max_concurrent), REAL(k->budget_day),
                         REAL(k->budget_month), REAL(k->budget_total), INT(k->downgrade)),
                    &changed);
    if (rc < 0)
        return errctx(s, "key update", rc);
    if (!changed) {
        gw__store_seterr(s, "no such key: %s", k->id);
        return GW_STORE_NOT_FOUND;
    }
    return GW_STORE_OK;
}

/* ------------------------------------------------------------------ */
/* teams */

static void read_team(struct gw_store *s, void *rec)
{
    struct gw_team *t = rec;
    const struct gw__db_ops *o = s->ops;
    memset(t, 0, sizeof(*t));
    cpy(t->name, sizeof(t->name), o->col_text(s, 0));
    t->budget_day = o->col_real(s, 1);
    t->budget_month = o->col_real(s, 2);
    t->budget_total = o->col_real(s, 3);
    t->rpm = o->col_int(s, 4);
    t->tpm = o->col_int(s, 5);
    t->max_concurrent = o->col_int(s, 6);
}

int gw_store_team_put(struct gw_store *s, const struct gw_team *t)
{
    if (!fits(t->name, sizeof(t->name)) || !t->name[0]) {
        gw__store_seterr(s, "team put: a team needs a name (at most %zu bytes)",
                         sizeof(t->name) - 1);
        return GW_STORE_ERR;
    }
    if (t->rpm < 0 || t->tpm < 0 || t->max_concurrent < 0 || !(t->budget_day >= 0) ||
        !(t->budget_month >= 0) || !(t->budget_total >= 0)) {
        gw__store_seterr(s, "team put: limits and budgets must be >= 0");
        return GW_STORE_ERR;
    }
    int rc = q_exec(s, Q_TEAM_PUT,
                    ARGS(TXT(t->name), REAL(t->budget_day), REAL(t->budget_month),
                         REAL(t->budget_total), INT(t->rpm), INT(t->tpm), INT(t->max_concurrent)),
                    NULL);
    return rc < 0 ? errctx(s, "team put", rc) : GW_STORE_OK;
}

int gw_store_team_get(struct gw_store *s, const char *name, struct gw_team *out)
{
    int rc = q_first(s, Q_TEAM_GET, ARGS(TXT(name)));
    if (rc < 0)
        return errctx(s, "team get", rc);
    if (rc == 0) {
        char keep[sizeof(out->name)];
        cpy(keep, sizeof(keep), name); /* name may be out->name */
        memset(out, 0, sizeof(*out));
        memcpy(out->name, keep, sizeof(keep));
        gw__store_seterr(s, "no such team: %s", keep);
        return GW_STORE_NOT_FOUND;
    }
    read_team(s, out);
    q_end(s);
    return GW_STORE_OK;
}

int gw_store_team_all(struct gw_store *s, struct gw_team **out, size_t *n)
{
    int rc = q_rows(s, Q_TEAM_LIST, NOARGS, sizeof(**out), read_team, (void **)out, n);
    return rc < 0 ? errctx(s, "team list", rc) : GW_STORE_OK;
}

int gw_store_team_list(struct gw_store *s, void (*cb)(const struct gw_team *t, void *ud), void *ud)
{
    struct gw_team *v;
    size_t n;
    if (gw_store_team_all(s, &v, &n) != GW_STORE_OK)
        return GW_STORE_ERR;
    for (size_t i = 0; i < n; i++)
        cb(&v[i], ud);
    free(v);
    return GW_STORE_OK;
}

/* ------------------------------------------------------------------ */
/* budgets */

/* Where one key or team stands, in nano-USD. */
struct scope_state {
    int64_t spent[3]; /* day, month, total */
    int64_t reserved; /* open reservations (they count in every period) */
};

/* Make sure the scope's "total" row exists and, in PostgreSQL, lock it
 * until the transaction ends: it is the row every writer of this key's
 * (or team's) budget locks first. */
static int lock_scope(struct gw_store *s, const char *scope, const char *name)
{
    int rc = q_exec(s, Q_TOTAL_ENSURE, ARGS(TXT(scope), TXT(name)), NULL);
    if (rc < 0 || !s->ops->row_locks)
        return rc;
    rc = q_first(s, Q_TOTAL_LOCK, ARGS(TXT(scope), TXT(name)));
    if (rc == 1)
        q_end(s);
    return rc < 0 ? rc : GW_STORE_OK;
}

static int read_scope(struct gw_store *s, const char *scope, const char *name, const char *day,
                      const char *month, struct scope_state *st)
{
    memset(st, 0, sizeof(*st));
    int rc = q_start(s, Q_TOTALS_READ, ARGS(TXT(scope), TXT(name), TXT(day), TXT(month)));
    while (rc == GW_STORE_OK && (rc = s->ops->step(s)) == 1) {
        const char *p = s->ops->col_text(s, 0);
        int64_t v = s->ops->col_int(s, 1);
        if (strcmp(p, day) == 0)
            st->spent[0] = v;
        else if (strcmp(p, month) == 0)
            st->spent[1] = v;
        else
            st->spent[2] = v;
        rc = GW_STORE_OK;
    }
    q_end(s);
    if (rc < 0)
        return rc;
    if (strcmp(scope, "key") == 0)
        return q_int(s, Q_RES_SUM_KEY, ARGS(TXT(name)), &st->reserved);
    return q_int(s, Q_RES_SUM_TEAM, ARGS(TXT(name)), &st->reserved);
}

/* Would amount more break one of the (non-zero) budgets? */
static bool over(const struct scope_state *st, int64_t amount, double day, double month,
                 double total)
{
    const double b[3] = {day, month, total};
    for (int i = 0; i < 3; i++) {
        if (b[i] > 0 && st->spent[i] + st->reserved + amount > to_nano(b[i]))
            return true;
    }
    return false;
}

static void fill_state(struct gw_spend_state *out, const struct scope_state *ks,
                       const struct scope_state *ts, int64_t extra)
{
    if (!out)
        return;
    out->key_day = (double)(ks->spent[0] + ks->reserved + extra) / 1e9;
    out->key_month = (double)(ks->spent[1] + ks->reserved + extra) / 1e9;
    out->key_total = (double)(ks->spent[2] + ks->reserved + extra) / 1e9;
    if (ts) {
        out->team_day = (double)(ts->spent[0] + ts->reserved + extra) / 1e9;
        out->team_month = (double)(ts->spent[1] + ts->reserved + extra) / 1e9;
        out->team_total = (double)(ts->spent[2] + ts->reserved + extra) / 1e9;
    } else {
        out->team_day = out->team_month = out->team_total = 0;
    }
}

int gw_store_reserve(struct gw_store *s, const struct gw_vkey *k, double max_usd, int64_t now,
                     char *rid, size_t rid_size, struct gw_spend_state *state)
{
    char day[32], month[32];
    struct scope_state ks, ts;
    struct gw_team team;
    bool has_team = k->team[0] != 0;
    int rc;
    if (!rid || rid_size < 40 || !(max_usd >= 0) || !k->id[0]) {
        gw__store_seterr(s, "reserve: bad arguments (amount must be >= 0, rid size >= 40)");
        return GW_STORE_ERR;
    }
    rid[0] = 0;
    int64_t amount = to_nano(max_usd);
    periods(now, day, month);
    if (tx_begin(s, true) < 0)
        return errctx(s, "reserve", GW_STORE_ERR);
    if ((rc = lock_scope(s, "key", k->id)) < 0)
        goto fail;
    if (has_team && (rc = lock_scope(s, "team", k->team)) < 0)
        goto fail;
    if ((rc = read_scope(s, "key", k->id, day, month, &ks)) < 0)
        goto fail;
    memset(&team, 0, sizeof(team));
    if (has_team) {
        if ((rc = read_scope(s, "team", k->team, day, month, &ts)) < 0)
            goto fail;
        rc = gw_store_team_get(s, k->team, &team);
        if (rc == GW_STORE_ERR)
            goto fail;
    }
    if (over(&ks, amount, k->budget_day, k->budget_month, k->budget_total) ||
        (has_team && over(&ts, amount, team.budget_day, team.budget_month, team.budget_total))) {
        tx_rollback(s);
        fill_state(state, &ks, has_team ? &ts : NULL, 0);
        gw__store_seterr(s, "over budget");
        return GW_STORE_OVER_BUDGET;
    }
    char id[40];
    random_id("rs_", 16, id);
    rc = q_exec(s, Q_RES_INSERT, ARGS(TXT(id), TXT(k->id), TXT(k->team), INT(amount), INT(now)),
                NULL);
    if (rc < 0)
        goto fail;
    if ((rc = tx_commit(s)) < 0)
        goto fail;
    cpy(rid, rid_size, id);
    fill_state(state, &ks, has_team ? &ts : NULL, amount);
    return GW_STORE_OK;
fail:
    tx_rollback(s);
    return errctx(s, "reserve", rc < 0 ? rc : GW_STORE_ERR);
}

int gw_store_settle(struct gw_store *s, const char *rid, double actual_usd, int64_t now)
{
    char day[32], month[32], key_id[GW_VKEY_ID_LEN + 1], team[65];
    int64_t changed = 0, amount = to_nano(actual_usd);
    int rc;
    periods(now, day, month);
    if (tx_begin(s, true) < 0)
        return errctx(s, "settle", GW_STORE_ERR);
    rc = q_first(s, Q_RES_GET, ARGS(TXT(rid)));
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        tx_rollback(s);
        gw__store_seterr(s, "settle: no such reservation: %s", rid);
        return GW_STORE_NOT_FOUND;
    }
    cpy(key_id, sizeof(key_id), s->ops->col_text(s, 0));
    cpy(team, sizeof(team), s->ops->col_text(s, 1));
    q_end(s);
    /* same lock order as reserve: key, then team */
    if ((rc = lock_scope(s, "key", key_id)) < 0)
        goto fail;
    if (team[0] && (rc = lock_scope(s, "team", team)) < 0)
        goto fail;
    if ((rc = q_exec(s, Q_RES_DELETE, ARGS(TXT(rid)), &changed)) < 0)
        goto fail;
    if (!changed) {
        /* another replica settled or expired it between our read and lock */
        tx_rollback(s);
        gw__store_seterr(s, "settle: no such reservation: %s", rid);
        return GW_STORE_NOT_FOUND;
    }
    if (amount > 0) {
        const char *scopes[2] = {"key", "team"};
        const char *names[2] = {key_id, team};
        const char *pers[3] = {day, month, "total"};
        for (int i = 0; i < 2; i++) {
            if (!names[i][0])
                continue;
            for (int j = 0; j < 3; j++) {
                rc = q_exec(s, Q_TOTAL_ADD,
                            ARGS(TXT(scopes[i]), TXT(names[i]), TXT(pers[j]), INT(amount)), NULL);
                if (rc < 0)
                    goto fail;
            }
        }
    }
    if ((rc = tx_commit(s)) < 0)
        goto fail;
    return GW_STORE_OK;
fail:
    tx_rollback(s);
    return errctx(s, "settle", rc < 0 ? rc : GW_STORE_ERR);
}

/* ---- batches ---- */

/* One key or team a batch touches: locked once, read once, then tracked in
 * memory (nobody else can change it while we hold its lock). */
struct batch_scope {
    const char *scope;              /* "key" / "team" */
    const char *name;
    struct scope_state st;
    struct gw_team team;            /* a team's budgets */
    int64_t add;                    /* settle: spend to book */
};

static int scope_cmp(const void *a, const void *b)
{
    const struct batch_scope *x = a, *y = b;
    int c = strcmp(x->scope, y->scope); /* "key" < "team": keys first, as in reserve */
    return c ? c : strcmp(x->name, y->name);
}

static struct batch_scope *scope_add(struct batch_scope *v, size_t *n, const char *scope,
                                     const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(v[i].scope, scope) == 0 && strcmp(v[i].name, name) == 0)
            return &v[i];
    memset(&v[*n], 0, sizeof(v[*n]));
    v[*n].scope = scope;
    v[*n].name = name;
    return &v[(*n)++];
}

static struct batch_scope *scope_find(struct batch_scope *v, size_t n, const char *scope,
                                      const char *name)
{
    struct batch_scope probe = {.scope = scope, .name = name};
    return bsearch(&probe, v, n, sizeof(*v), scope_cmp);
}

/* Add each scope's `add` to its day, month and total, locking the scopes
 * first in one order (as reserve does), inside the caller's transaction. */
static int book(struct gw_store *s, struct batch_scope *sc, size_t nsc, const char *day,
                const char *month)
{
    int rc = GW_STORE_OK;
    qsort(sc, nsc, sizeof(*sc), scope_cmp);
    for (size_t i = 0; i < nsc && rc == GW_STORE_OK; i++)
        rc = lock_scope(s, sc[i].scope, sc[i].name);
    const char *pers[3] = {day, month, "total"};
    for (size_t i = 0; i < nsc && rc == GW_STORE_OK; i++)
        for (int j = 0; j < 3 && rc == GW_STORE_OK; j++)
            rc = q_exec(s, Q_TOTAL_ADD,
                        ARGS(TXT(sc[i].scope), TXT(sc[i].name), TXT(pers[j]), INT(sc[i].add)),
                        NULL);
    return rc;
}

int gw_store_reserve_batch(struct gw_store *s, struct gw_reserve_req *r, size_t n, int64_t now)
{
    char day[32], month[32];
    int rc = GW_STORE_OK;
    if (n == 0)
        return GW_STORE_OK;
    periods(now, day, month);
    struct batch_scope *sc = gw_calloc(2 * n, sizeof(*sc));
    size_t nsc = 0;
    for (size_t i = 0; i < n; i++) {
        r[i].rc = GW_STORE_ERR;
        r[i].rid[0] = 0;
        if (!r[i].key->id[0] || !(r[i].max_usd >= 0)) {
            gw__store_seterr(s, "reserve: bad arguments (a key id and an amount >= 0)");
            free(sc);
            return GW_STORE_ERR;
        }
        scope_add(sc, &nsc, "key", r[i].key->id);
        if (r[i].key->team[0])
            scope_add(sc, &nsc, "team", r[i].key->team);
    }
    qsort(sc, nsc, sizeof(*sc), scope_cmp);
    if (tx_begin(s, true) < 0) {
        free(sc);
        return errctx(s, "reserve", GW_STORE_ERR);
    }
    for (size_t i = 0; i < nsc && rc == GW_STORE_OK; i++)
        rc = lock_scope(s, sc[i].scope, sc[i].name);
    for (size_t i = 0; i < nsc && rc == GW_STORE_OK; i++) {
        rc = read_scope(s, sc[i].scope, sc[i].name, day, month, &sc[i].st);
        if (rc == GW_STORE_OK && strcmp(sc[i].scope, "team") == 0 &&
            gw_store_team_get(s, sc[i].name, &sc[i].team) == GW_STORE_ERR)
            rc = GW_STORE_ERR;
    }
    for (size_t i = 0; i < n && rc == GW_STORE_OK; i++) {
        const struct gw_vkey *k = r[i].key;
        int64_t amount = to_nano(r[i].max_usd);
        struct batch_scope *ks = scope_find(sc, nsc, "key", k->id);
        struct batch_scope *ts = k->team[0] ? scope_find(sc, nsc, "team", k->team) : NULL;
        if (over(&ks->st, amount, k->budget_day, k->budget_month, k->budget_total) ||
            (ts && over(&ts->st, amount, ts->team.budget_day, ts->team.budget_month,
                        ts->team.budget_total))) {
            r[i].rc = GW_STORE_OVER_BUDGET;
            fill_state(&r[i].state, &ks->st, ts ? &ts->st : NULL, 0);
            continue;
        }
        random_id("rs_", 16, r[i].rid);
        ks->st.reserved += amount;
        if (ts)
            ts->st.reserved += amount;
        r[i].rc = GW_STORE_OK;
        fill_state(&r[i].state, &ks->st, ts ? &ts->st : NULL, 0);
    }
    free(sc);
    /* the reservations that fit, INSERT_ROWS per statement */
    for (size_t i = 0; i < n && rc == GW_STORE_OK;) {
        struct gw__dbv a[5 * INSERT_ROWS];
        size_t m = 0;
        for (; i < n && m < INSERT_ROWS; i++) {
            if (r[i].rc != GW_STORE_OK)
                continue;
            a[5 * m] = TXT(r[i].rid);
            a[5 * m + 1] = TXT(r[i].key->id);
            a[5 * m + 2] = TXT(r[i].key->team);
            a[5 * m + 3] = INT(to_nano(r[i].max_usd));
            a[5 * m + 4] = INT(now);
            m++;
        }
        if (m == 0)
            break;
        for (size_t j = m; j < INSERT_ROWS; j++) {
            a[5 * j] = a[5 * j + 1] = a[5 * j + 2] = TXT("");
            a[5 * j + 3] = a[5 * j + 4] = INT(0);
        }
        rc = q_exec(s, Q_RES_INSERT_MANY, a, 5 * INSERT_ROWS, NULL);
    }
    if (rc == GW_STORE_OK && (rc = tx_commit(s)) == GW_STORE_OK)
        return GW_STORE_OK;
    tx_rollback(s);
    for (size_t i = 0; i < n; i++) {
        r[i].rc = GW_STORE_ERR;
        r[i].rid[0] = 0;
    }
    return errctx(s, "reserve", GW_STORE_ERR);
}

int gw_store_settle_batch(struct gw_store *s, struct gw_settle_req *r, size_t n, int64_t now)
{
    char day[32], month[32];
    int rc = GW_STORE_OK;
    if (n == 0)
        return GW_STORE_OK;
    periods(now, day, month);
    struct batch_scope *sc = gw_calloc(2 * n, sizeof(*sc));
    size_t nsc = 0;
    if (tx_begin(s, true) < 0) {
        free(sc);
        return errctx(s, "settle", GW_STORE_ERR);
    }
    /* take the reservations, TAKE_IDS per statement (the deletes are
     * invisible to others until we commit, and we commit only after locking
     * what we book to). A reservation not found was settled, released or
     * expired already; one named twice in a batch is taken once. */
    for (size_t i = 0; i < n; i++)
        r[i].rc = r[i].rid[0] ? GW_STORE_NOT_FOUND : GW_STORE_OK;
    for (size_t i = 0; i < n && rc == GW_STORE_OK;) {
        struct gw__dbv a[TAKE_IDS];
        size_t first = i, m = 0;
        for (; i < n && m < TAKE_IDS; i++)
            if (r[i].rid[0])
                a[m++] = TXT(r[i].rid);
        if (m == 0)
            break;
        for (size_t j = m; j < TAKE_IDS; j++)
            a[j] = TXT("");
        rc = q_start(s, Q_RES_TAKE_MANY, a, TAKE_IDS);
        while (rc == GW_STORE_OK && (rc = s->ops->step(s)) == 1) {
            const char *id = s->ops->col_text(s, 0);
            for (size_t j = first; j < i; j++) {
                if (r[j].rc == GW_STORE_NOT_FOUND && strcmp(r[j].rid, id) == 0) {
                    r[j].rc = GW_STORE_OK;
                    cpy(r[j].key_id, sizeof(r[j].key_id), s->ops->col_text(s, 1));
                    cpy(r[j].team, sizeof(r[j].team), s->ops->col_text(s, 2));
                    break;
                }
            }
            rc = GW_STORE_OK;
        }
        q_end(s);
    }
    for (size_t i = 0; i < n && rc == GW_STORE_OK; i++) {
        if (r[i].rc != GW_STORE_OK)
            continue;
        int64_t amount = r[i].release ? 0 : to_nano(r[i].usd);
        if (amount <= 0 || !r[i].key_id[0])
            continue;
        scope_add(sc, &nsc, "key", r[i].key_id)->add += amount;
        if (r[i].team[0])
            scope_add(sc, &nsc, "team", r[i].team)->add += amount;
    }
    if (rc == GW_STORE_OK)
        rc = book(s, sc, nsc, day, month);
    free(sc);
    if (rc == GW_STORE_OK && (rc = tx_commit(s)) == GW_STORE_OK)
        return GW_STORE_OK;
    tx_rollback(s);
    return errctx(s, "settle", GW_STORE_ERR);
}

int gw_store_release(struct gw_store *s, const char *rid)
{
    int64_t changed = 0;
    int rc = q_exec(s, Q_RES_DELETE, ARGS(TXT(rid)), &changed);
    if (rc < 0)
        return errctx(s, "release", rc);
    if (!changed) {
        gw__store_seterr(s, "release: no such reservation: %s", rid);
        return GW_STORE_NOT_FOUND;
    }
    return GW_STORE_OK;
}

int gw_store_expire_reservations(struct gw_store *s, int64_t now, int64_t max_age_s)
{
    int rc = q_exec(s, Q_RES_EXPIRE, ARGS(INT(now - max_age_s)), NULL);
    return rc < 0 ? errctx(s, "expire reservations", rc) : GW_STORE_OK;
}

int gw_store_spend_state(struct gw_store *s, const struct gw_vkey *k, int64_t now,
                         struct gw_spend_state *state)
{
    char day[32], month[32];
    struct scope_state ks, ts;
    bool has_team = k->team[0] != 0;
    int rc;
    periods(now, day, month);
    if (tx_begin(s, false) < 0)
        return errctx(s, "spend state", GW_STORE_ERR);
    rc = read_scope(s, "key", k->id, day, month, &ks);
    if (rc == GW_STORE_OK && has_team)
        rc = read_scope(s, "team", k->team, day, month, &ts);
    if (rc == GW_STORE_OK)
        rc = tx_commit(s);
    if (rc < 0) {
        tx_rollback(s);
        return errctx(s, "spend state", rc);
    }
    fill_state(state, &ks, has_team ? &ts : NULL, 0);
    return GW_STORE_OK;
}

/* ------------------------------------------------------------------ */
/* ledger */

static double finite_or_zero(double d)
{
    return isfinite(d) ? d : 0;
}

int gw_store_append(struct gw_store *s, const struct gw_spend_rec *recs, size_t n)
{
    int rc = GW_STORE_OK;
    if (n == 0)
        return GW_STORE_OK;
    if (tx_begin(s, true) < 0)
        return errctx(s, "append", GW_STORE_ERR);
    for (size_t i = 0; i < n && rc == GW_STORE_OK; i++) {
        const struct gw_spend_rec *r = &recs[i];
        rc = q_exec(s, Q_SPEND_INSERT,
                    ARGS(TXT(r->request_id), INT(r->ts_ms), TXT(r->key_id), TXT(r->key_name),
                         TXT(r->team), TXT(r->tier), TXT(r->backend), TXT(r->model),
                         TXT(r->label), INT(r->status), INT(r->input_tokens),
                         INT(r->output_tokens), INT(r->cached_tokens),
                         INT(r->cache_write_tokens), INT(r->reasoning_tokens),
                         REAL(finite_or_zero(r->cost_usd)),
                         REAL(finite_or_zero(r->counterfactual_usd)), INT(r->estimated)),
                    NULL);
    }
    /* records of keys without budgets carry their charge: book it in the
     * same transaction, so spend totals and the ledger agree */
    struct batch_scope *sc = NULL;
    size_t nsc = 0;
    for (size_t i = 0; i < n && rc == GW_STORE_OK; i++) {
        const struct gw_spend_rec *r = &recs[i];
        int64_t amount = to_nano(finite_or_zero(r->cost_usd));
        if (!r->charge || !r->key_id[0] || amount <= 0)
            continue;
        if (!sc)
            sc = gw_calloc(2 * n, sizeof(*sc));
        scope_add(sc, &nsc, "key", r->key_id)->add += amount;
        if (r->team[0])
            scope_add(sc, &nsc, "team", r->team)->add += amount;
    }
    if (rc == GW_STORE_OK && nsc > 0) {
        char day[32], month[32];
        periods((int64_t)time(NULL), day, month);
        rc = book(s, sc, nsc, day, month);
    }
    free(sc);
    if (rc == GW_STORE_OK)
        rc = tx_commit(s);
    if (rc < 0) {
        tx_rollback(s);
        return errctx(s, "append", rc);
    }
    return GW_STORE_OK;
}

static void read_report_row(struct gw_store *s, void *rec)
{
    struct gw_spend_row *r = rec;
    memset(r, 0, sizeof(*r));
    cpy(r->group, sizeof(r->group), s->ops->col_text(s, 0));
    r->requests = s->ops->col_int(s, 1);
    r->input_tokens = s->ops->col_int(s, 2);
    r->output_tokens = s->ops->col_int(s, 3);
    r->cost_usd = s->ops->col_real(s, 4);
    r->counterfactual_usd = s->ops->col_real(s, 5);
}

int gw_store_spend_report(struct gw_store *s, const char *by, int64_t since,
                          void (*cb)(const struct gw_spend_row *r, void *ud), void *ud)
{
    static const struct {
        const char *by;
        int qid;
    } groups[] = {
        {"key", Q_REPORT_KEY},     {"team", Q_REPORT_TEAM},       {"model", Q_REPORT_MODEL},
        {"tier", Q_REPORT_TIER},   {"backend", Q_REPORT_BACKEND},
    };
    int qid = -1;
    for (size_t i = 0; i < GW_ARRAY_LEN(groups); i++) {
        if (by && strcmp(by, groups[i].by) == 0)
            qid = groups[i].qid;
    }
    if (qid < 0) {
        gw__store_seterr(s, "spend report: cannot group by '%s' (key, team, model, tier, backend)",
                         by ? by : "");
        return GW_STORE_ERR;
    }
    struct gw_spend_row *v;
    size_t n;
    int rc = q_rows(s, qid, ARGS(INT(since * 1000)), sizeof(*v), read_report_row, (void **)&v,
                    &n);
    if (rc < 0)
        return errctx(s, "spend report", rc);
    for (size_t i = 0; i < n; i++)
        cb(&v[i], ud);
    free(v);
    return GW_STORE_OK;
}

/* ------------------------------------------------------------------ */
/* rate-limit counts between replicas */

static void read_rate_row(struct gw_store *s, void *rec)
{
    struct gw_rate_row *r = rec;
    cpy(r->subject, sizeof(r->subject), s->ops->col_text(s, 0));
    r->sec = s->ops->col_int(s, 1);
    r->requests = s->ops->col_int(s, 2);
    r->tokens = s->ops->col_int(s, 3);
}

static void read_inflight_row(struct gw_store *s, void *rec)
{
    struct gw_rate_inflight *r = rec;
    cpy(r->subject, sizeof(r->subject), s->ops->col_text(s, 0));
    r->inflight = s->ops->col_int(s, 1);
}

int gw_store_rate_sync(struct gw_store *s, const char *replica, int64_t now_ms,
                       const struct gw_rate_row *mine, size_t n,
                       const struct gw_rate_inflight *infl, size_t ninfl, int64_t window_s,
                       int64_t stale_ms, bool prune, struct gw_rate_row **others,
                       size_t *nothers, struct gw_rate_inflight **oinfl, size_t *noinfl)
{
    *others = NULL;
    *oinfl = NULL;
    *nothers = *noinfl = 0;
    int64_t now_s = now_ms / 1000;
    if (tx_begin(s, true) < 0)
        return errctx(s, "rate sync", GW_STORE_ERR);
    int rc = GW_STORE_OK;
    for (size_t i = 0; i < n && rc == GW_STORE_OK; i++)
        rc = q_exec(s, Q_RATE_PUT,
                    ARGS(TXT(mine[i].subject), INT(mine[i].sec), TXT(replica),
                         INT(mine[i].requests), INT(mine[i].tokens)),
                    NULL);
    for (size_t i = 0; i < ninfl && rc == GW_STORE_OK; i++)
        rc = q_exec(s, Q_INFL_PUT,
                    ARGS(TXT(infl[i].subject), TXT(replica), INT(infl[i].inflight), INT(now_ms)),
                    NULL);
    if (rc == GW_STORE_OK && prune) {
        /* a second leaves everyone's window after window_s; keep one more
         * window for clocks that disagree a little */
        rc = q_exec(s, Q_RATE_PRUNE, ARGS(INT(now_s - 2 * window_s)), NULL);
        if (rc == GW_STORE_OK)
            rc = q_exec(s, Q_INFL_PRUNE, ARGS(INT(now_ms - 10 * stale_ms)), NULL);
    }
    if (rc == GW_STORE_OK)
        rc = q_rows(s, Q_RATE_OTHERS, ARGS(INT(now_s - window_s), TXT(replica)),
                    sizeof(**others), read_rate_row, (void **)others, nothers);
    if (rc == GW_STORE_OK)
        rc = q_rows(s, Q_INFL_OTHERS, ARGS(INT(now_ms - stale_ms), TXT(replica)),
                    sizeof(**oinfl), read_inflight_row, (void **)oinfl, noinfl);
    if (rc == GW_STORE_OK && tx_commit(s) == GW_STORE_OK)
        return GW_STORE_OK;
    tx_rollback(s);
    free(*others);
    free(*oinfl);
    *others = NULL;
    *oinfl = NULL;
    *nothers = *noinfl = 0;
    return errctx(s, "rate sync", GW_STORE_ERR);
}
