/*
 * store_pg.c - the PostgreSQL backend of the spend store (store_db.h), over
 * libpq's blocking API.
 *
 * Each query is prepared on the server once per connection ("gw<id>") and
 * run with text parameters; PostgreSQL infers their types from the SQL.
 * Transactions run at READ COMMITTED: store.c serialises the writers of one
 * budget with SELECT ... FOR UPDATE on the budget's row, so every read
 * that follows the lock sees what the previous holder committed.
 *
 * A dropped connection is re-established (PQreset) at the next query; its
 * prepared statements are prepared again. Error messages never carry the
 * password: the URL is shown with "***" in its place, and libpq's own
 * messages are scrubbed of it in case a server echoes it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <openssl/crypto.h>

#include "ledger/store_db.h"

struct pg_be {
    PGconn *conn;
    PGresult *res;                      /* the active query's result */
    int row, nrows;                     /* row = index of the current row */
    bool prepared[GW__DB_MAX_QUERIES];  /* on this connection */
    char url[256];                      /* redacted, for messages */
    char pw[128], pw_dec[128];          /* to scrub from messages (raw, %-decoded) */
};

static struct pg_be *be(struct gw_store *s)
{
    return s->be;
}

/* Replace every occurrence of needle in s (in place) with "***". */
static void scrub(char *s, size_t size, const char *needle)
{
    size_t nl = strlen(needle);
    char *p;
    if (nl == 0)
        return;
    while ((p = strstr(s, needle)) != NULL) {
        size_t tail = strlen(p + nl);
        if (nl >= 3) {
            memcpy(p, "***", 3);
            memmove(p + 3, p + nl, tail + 1);
        } else if (strlen(s) + 3 - nl < size) {
            memmove(p + 3, p + nl, tail + 1);
            memcpy(p, "***", 3);
        } else {
            memset(p, '*', nl);
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void pct_decode(const char *in, size_t n, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < size; i++) {
        if (in[i] == '%' && i + 2 < n && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
            out[o++] = (char)(hexval(in[i + 1]) * 16 + hexval(in[i + 2]));
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    out[o] = 0;
}

/* Note the password of url (userinfo or ?password=) in b, and a copy of
 * url with "***" in its place in b->url. */
static void redact_url(struct pg_be *b, const char *url)
{
    const char *auth = strstr(url, "://");
    char out[sizeof(b->url)];
    auth = auth ? auth + 3 : url;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++) {
        if (*p == '@')
            at = p;
    }
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (colon) {
        size_t n = (size_t)(at - colon - 1);
        snprintf(b->pw, sizeof(b->pw), "%.*s", (int)n, colon + 1);
        pct_decode(colon + 1, n, b->pw_dec, sizeof(b->pw_dec));
        snprintf(out, sizeof(out), "%.*s:***%s", (int)(colon - url), url, at);
    } else {
        snprintf(out, sizeof(out), "%s", url);
    }
    /* password=... in the query string */
    char *q = strstr(out, "password=");
    if (q) {
        const char *v = strstr(url, "password=") + 9;
        size_t n = strcspn(v, "&#");
        if (!b->pw[0]) {
            snprintf(b->pw, sizeof(b->pw), "%.*s", (int)n, v);
            pct_decode(v, n, b->pw_dec, sizeof(b->pw_dec));
        }
        char *vend = q + 9 + strcspn(q + 9, "&#");
        char rest[sizeof(out)];
        snprintf(rest, sizeof(rest), "%s", vend);
        snprintf(q + 9, sizeof(out) - (size_t)(q + 9 - out), "***%s", rest);
    }
    snprintf(b->url, sizeof(b->url), "%s", out);
    OPENSSL_cleanse(out, sizeof(out));
}

/* libpq's message, on one line, without the password. */
static int set_error(struct gw_store *s, const char *what, const char *msg)
{
    struct pg_be *b = be(s);
    char m[sizeof(s->err)];
    snprintf(m, sizeof(m), "%s", msg ? msg : "");
    /* one line: every run of white space becomes one space */
    char *w = m;
    for (const char *p = m; *p; p++) {
        bool space = *p == '\n' || *p == '\t' || *p == '\r' || *p == ' ';
        if (!space)
            *w++ = *p;
        else if (w > m && w[-1] != ' ')
            *w++ = ' ';
    }
    *w = 0;
    size_t n = strlen(m);
    while (n && m[n - 1] == ' ')
        m[--n] = 0;
    scrub(m, sizeof(m), b->pw);
    scrub(m, sizeof(m), b->pw_dec);
    gw__store_seterr(s, "postgres: %s%s%s", what ? what : "", what ? ": " : "", m);
    return GW_STORE_ERR;
}

static int result_error(struct gw_store *s, PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    set_error(s, NULL, msg ? msg : PQerrorMessage(be(s)->conn));
    if (state && strcmp(state, "23505") == 0) /* unique_violation */
        return GW_STORE_EXISTS;
    return GW_STORE_ERR;
}

/* Reconnect after the connection dropped; prepared statements are gone. */
static int ensure_conn(struct gw_store *s)
{
    struct pg_be *b = be(s);
    if (PQstatus(b->conn) == CONNECTION_OK)
        return GW_STORE_OK;
    PQreset(b->conn);
    memset(b->prepared, 0, sizeof(b->prepared));
    if (PQstatus(b->conn) != CONNECTION_OK)
        return set_error(s, b->url, PQerrorMessage(b->conn));
    return GW_STORE_OK;
}

static void clear_result(struct pg_be *b)
{
    if (b->res)
        PQclear(b->res);
    b->res = NULL;
    b->row = -1;
    b->nrows = 0;
}

static int pg_exec(struct gw_store *s, const char *sql)
{
    struct pg_be *b = be(s);
    clear_result(b);
    if (ensure_conn(s) < 0)
        return GW_STORE_ERR;
    PGresult *r = PQexec(b->conn, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = GW_STORE_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = result_error(s, r);
    PQclear(r);
    return rc;
}

static int pg_query(struct gw_store *s, int qid, const char *sql, const struct gw__dbv *args,
                    int nargs)
{
    struct pg_be *b = be(s);
    char name[16], buf[GW__DB_MAX_ARGS][32];
    const char *values[GW__DB_MAX_ARGS];
    clear_result(b);
    if (qid < 0 || qid >= GW__DB_MAX_QUERIES || nargs > GW__DB_MAX_ARGS) {
        gw__store_seterr(s, "postgres: bad query id %d", qid);
        return GW_STORE_ERR;
    }
    if (ensure_conn(s) < 0)
        return GW_STORE_ERR;
    snprintf(name, sizeof(name), "gw%d", qid);
    if (!b->prepared[qid]) {
        PGresult *r = PQprepare(b->conn, name, sql, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            int rc = result_error(s, r);
            PQclear(r);
            return rc;
        }
        PQclear(r);
        b->prepared[qid] = true;
    }
    for (int i = 0; i < nargs; i++) {
        switch (args[i].type) {
        case GW__DBV_INT:
            snprintf(buf[i], sizeof(buf[i]), "%lld", (long long)args[i].i);
            values[i] = buf[i];
            break;
        case GW__DBV_REAL:
            snprintf(buf[i], sizeof(buf[i]), "%.17g", args[i].d);
            values[i] = buf[i];
            break;
        default:
            values[i] = args[i].s ? args[i].s : "";
            break;
        }
    }
    b->res = PQexecPrepared(b->conn, name, nargs, values, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(b->res);
    if (st == PGRES_TUPLES_OK) {
        b->nrows = PQntuples(b->res);
    } else if (st != PGRES_COMMAND_OK) {
        int rc = result_error(s, b->res);
        clear_result(b);
        return rc;
    }
    b->row = -1;
    return GW_STORE_OK;
}

static int pg_step(struct gw_store *s)
{
    struct pg_be *b = be(s);
    if (!b->res || b->row + 1 >= b->nrows)
        return 0;
    b->row++;
    return 1;
}

static const char *pg_text(struct gw_store *s, int col)
{
    struct pg_be *b = be(s);
    if (!b->res || b->row < 0 || b->row >= b->nrows || col >= PQnfields(b->res) ||
        PQgetisnull(b->res, b->row, col))
        return "";
    return PQgetvalue(b->res, b->row, col);
}

static int64_t pg_int(struct gw_store *s, int col)
{
    /* SUM(bigint) is numeric: "123" parses the same */
    return strtoll(pg_text(s, col), NULL, 10);
}

static double pg_real(struct gw_store *s, int col)
{
    return strtod(pg_text(s, col), NULL);
}

static int64_t pg_changes(struct gw_store *s)
{
    struct pg_be *b = be(s);
    return b->res ? strtoll(PQcmdTuples(b->res), NULL, 10) : 0;
}

static void pg_end(struct gw_store *s)
{
    clear_result(be(s));
}

static void pg_close(struct gw_store *s)
{
    struct pg_be *b = be(s);
    if (!b)
        return;
    clear_result(b);
    PQfinish(b->conn);
    OPENSSL_cleanse(b, sizeof(*b));
    free(b);
    s->be = NULL;
}

static void on_notice(void *arg, const char *message)
{
    /* "relation already exists, skipping" and the like: not for stderr */
    (void)arg;
    (void)message;
}

static const struct gw__db_ops pg_ops = {
    .kind = "postgres",
    .begin_write = "BEGIN",
    .begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    .row_locks = true,
    .exec = pg_exec,
    .query = pg_query,
    .step = pg_step,
    .col_text = pg_text,
    .col_int = pg_int,
    .col_real = pg_real,
    .changes = pg_changes,
    .end = pg_end,
    .close = pg_close,
};

int gw__pg_open(struct gw_store *s, const char *url)
{
    struct pg_be *b = gw_calloc(1, sizeof(*b));
    b->row = -1;
    s->ops = &pg_ops;
    s->be = b;
    redact_url(b, url);
    /* connect_timeout first: a value in the URL overrides it */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {"10", "hybridgw", url, NULL};
    b->conn = PQconnectdbParams(keys, vals, 1);
    if (!b->conn) {
        gw__store_seterr(s, "postgres: out of memory");
        goto fail;
    }
    if (PQstatus(b->conn) != CONNECTION_OK) {
        set_error(s, b->url, PQerrorMessage(b->conn));
        goto fail;
    }
    PQsetNoticeProcessor(b->conn, on_notice, NULL);
    return GW_STORE_OK;
fail:
    pg_close(s);
    return GW_STORE_ERR;
}
