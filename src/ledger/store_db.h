/*
 * store_db.h - the database backends behind store.c (internal to src/ledger).
 *
 * store.c holds everything that is the same in both databases: the schema
 * and its migrations, every query, the budget arithmetic and the secrets.
 * A backend only runs SQL: it prepares each query once per connection (by
 * query id), binds parameters, steps through rows and reports errors. The
 * SQL is written once in the dialect both accept, with PostgreSQL-style
 * "$1" placeholders (the SQLite backend turns them into "?1").
 *
 * One query is active at a time: query() starts it, step() walks its rows,
 * end() finishes it. Nothing here is thread-safe; a store is used by one
 * thread at a time (store.h).
 */
#ifndef HYBRIDGW_LEDGER_STORE_DB_H
#define HYBRIDGW_LEDGER_STORE_DB_H

#include <stdarg.h>

#include "ledger/store.h"

/* Upper bound on query ids (the enum in store.c) and on parameters per query. */
#define GW__DB_MAX_QUERIES 64
#define GW__DB_MAX_ARGS 40

enum gw__dbv_type {
    GW__DBV_TEXT = 0,
    GW__DBV_INT,
    GW__DBV_REAL,
};

/* One bound parameter; the text is borrowed for the duration of query(). */
struct gw__dbv {
    enum gw__dbv_type type;
    const char *s;
    int64_t i;
    double d;
};

struct gw__db_ops {
    const char *kind;        /* "sqlite" / "postgres" */
    const char *begin_write; /* starts a transaction that will write */
    const char *begin_read;  /* starts a read-only snapshot */
    bool row_locks;          /* SELECT ... FOR UPDATE is needed (and understood) */
    /* Run statements without parameters or results (DDL, BEGIN, COMMIT). */
    int (*exec)(struct gw_store *s, const char *sql);
    /* Start query qid (sql is the same text every time for one qid). */
    int (*query)(struct gw_store *s, int qid, const char *sql, const struct gw__dbv *args,
                 int nargs);
    /* 1: a row is current, 0: no more rows, GW_STORE_ERR / GW_STORE_EXISTS. */
    int (*step)(struct gw_store *s);
    /* Columns of the current row; text is valid until the next step()/end(),
     * NULL reads as "" / 0. */
    const char *(*col_text)(struct gw_store *s, int col);
    int64_t (*col_int)(struct gw_store *s, int col);
    double (*col_real)(struct gw_store *s, int col);
    /* Rows changed by the last INSERT/UPDATE/DELETE, after its step(). */
    int64_t (*changes)(struct gw_store *s);
    void (*end)(struct gw_store *s);
    void (*close)(struct gw_store *s);
};

struct gw_store {
    const struct gw__db_ops *ops;
    void *be;           /* the backend's connection state */
    int schema_version; /* after migrations */
    char err[512];      /* last error; never holds a password */
};

/* Open a backend into s (ops and be). On failure s->err says why and the
 * backend has released what it allocated. */
int gw__sqlite_open(struct gw_store *s, const char *path);
int gw__pg_open(struct gw_store *s, const char *url);

/* printf into s->err. */
void gw__store_seterr(struct gw_store *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
