/*
 * store_sqlite.c - the SQLite backend of the spend store (store_db.h).
 *
 * One file in WAL mode, so readers (reports, key lookups) never wait for
 * the writer, with a busy timeout so that several connections - threads
 * or gateway processes on one host - queue for the write lock instead of
 * failing. Writers that read first (reserve, settle) start with BEGIN
 * IMMEDIATE: they take the write lock up front, so two of them can never
 * both read the old totals, and no transaction has to be retried for
 * SQLITE_BUSY_SNAPSHOT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "ledger/store_db.h"

/* How long a connection waits for another one's write lock. */
#define BUSY_TIMEOUT_MS 10000

struct sqlite_be {
    sqlite3 *db;
    sqlite3_stmt *stmts[GW__DB_MAX_QUERIES]; /* prepared on first use */
    sqlite3_stmt *cur;                         /* the active query */
};

static struct sqlite_be *be(struct gw_store *s)
{
    return s->be;
}

static int db_error(struct gw_store *s, const char *what)
{
    sqlite3 *db = be(s)->db;
    int code = sqlite3_extended_errcode(db);
    gw__store_seterr(s, "sqlite: %s%s%s", what ? what : "", what ? ": " : "", sqlite3_errmsg(db));
    if (code == SQLITE_CONSTRAINT_UNIQUE || code == SQLITE_CONSTRAINT_PRIMARYKEY)
        return GW_STORE_EXISTS;
    return GW_STORE_ERR;
}

static int sq_exec(struct gw_store *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(be(s)->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        gw__store_seterr(s, "sqlite: %s", msg ? msg : sqlite3_errmsg(be(s)->db));
        sqlite3_free(msg);
        return GW_STORE_ERR;
    }
    return GW_STORE_OK;
}

/* "$1" placeholders (store.c writes PostgreSQL's) become "?1": the same
 * parameter numbers, outside of quoted strings. */
static char *rewrite_placeholders(const char *sql)
{
    char *out = gw_strdup(sql);
    bool quoted = false;
    for (char *p = out; *p; p++) {
        if (*p == '\'')
            quoted = !quoted;
        else if (!quoted && *p == '$' && p[1] >= '0' && p[1] <= '9')
            *p = '?';
    }
    return out;
}

static int sq_query(struct gw_store *s, int qid, const char *sql, const struct gw__dbv *args,
                    int nargs)
{
    struct sqlite_be *b = be(s);
    if (qid < 0 || qid >= GW__DB_MAX_QUERIES || nargs > GW__DB_MAX_ARGS) {
        gw__store_seterr(s, "sqlite: bad query id %d", qid);
        return GW_STORE_ERR;
    }
    if (!b->stmts[qid]) {
        char *q = rewrite_placeholders(sql);
        int rc = sqlite3_prepare_v3(b->db, q, -1, SQLITE_PREPARE_PERSISTENT, &b->stmts[qid], NULL);
        free(q);
        if (rc != SQLITE_OK)
            return db_error(s, "prepare");
    }
    sqlite3_stmt *st = b->stmts[qid];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    for (int i = 0; i < nargs; i++) {
        int rc;
        switch (args[i].type) {
        case GW__DBV_INT:
            rc = sqlite3_bind_int64(st, i + 1, args[i].i);
            break;
        case GW__DBV_REAL:
            rc = sqlite3_bind_double(st, i + 1, args[i].d);
            break;
        default:
            rc = sqlite3_bind_text(st, i + 1, args[i].s ? args[i].s : "", -1, SQLITE_STATIC);
            break;
        }
        if (rc != SQLITE_OK)
            return db_error(s, "bind");
    }
    b->cur = st;
    return GW_STORE_OK;
}

static int sq_step(struct gw_store *s)
{
    struct sqlite_be *b = be(s);
    if (!b->cur)
        return 0;
    int rc = sqlite3_step(b->cur);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return db_error(s, NULL);
}

static const char *sq_text(struct gw_store *s, int col)
{
    const unsigned char *t = sqlite3_column_text(be(s)->cur, col);
    return t ? (const char *)t : "";
}

static int64_t sq_int(struct gw_store *s, int col)
{
    return sqlite3_column_int64(be(s)->cur, col);
}

static double sq_real(struct gw_store *s, int col)
{
    return sqlite3_column_double(be(s)->cur, col);
}

static int64_t sq_changes(struct gw_store *s)
{
    return sqlite3_changes(be(s)->db);
}

static void sq_end(struct gw_store *s)
{
    struct sqlite_be *b = be(s);
    if (b->cur) {
        /* reset ends the statement's read transaction in autocommit mode */
        sqlite3_reset(b->cur);
        sqlite3_clear_bindings(b->cur);
        b->cur = NULL;
    }
}

static void sq_close(struct gw_store *s)
{
    struct sqlite_be *b = be(s);
    if (!b)
        return;
    for (int i = 0; i < GW__DB_MAX_QUERIES; i++)
        sqlite3_finalize(b->stmts[i]);
    sqlite3_close(b->db);
    free(b);
    s->be = NULL;
}

static const struct gw__db_ops sqlite_ops = {
    .kind = "sqlite",
    .begin_write = "BEGIN IMMEDIATE",
    .begin_read = "BEGIN",
    .row_locks = false,
    .exec = sq_exec,
    .query = sq_query,
    .step = sq_step,
    .col_text = sq_text,
    .col_int = sq_int,
    .col_real = sq_real,
    .changes = sq_changes,
    .end = sq_end,
    .close = sq_close,
};

int gw__sqlite_open(struct gw_store *s, const char *path)
{
    struct sqlite_be *b = gw_calloc(1, sizeof(*b));
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    s->ops = &sqlite_ops;
    s->be = b;
    if (sqlite3_open_v2(path, &b->db, flags, NULL) != SQLITE_OK) {
        gw__store_seterr(s, "sqlite: cannot open %s: %s", path,
                         b->db ? sqlite3_errmsg(b->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(b->db, BUSY_TIMEOUT_MS);
    /* WAL: readers do not block the writer; NORMAL sync is durable
     * against a crash of the process (not of the machine) at a fraction
     * of FULL's fsyncs. An in-memory database stays "memory". */
    if (sq_exec(s, "PRAGMA journal_mode = WAL") < 0 || sq_exec(s, "PRAGMA synchronous = NORMAL") < 0)
        goto fail;
    return GW_STORE_OK;
fail:
    sq_close(s);
    return GW_STORE_ERR;
}
