/*
 * test_store.c - the spend store (src/ledger/store.h) against SQLite (a temp
 * file and :memory:) and, when HYBRIDGW_TEST_PG_URL is set, against
 * PostgreSQL: the same test body runs for each backend.
 *
 * HYBRIDGW_TEST_PG_URL must name a disposable database: every test drops
 * the store's tables first (tests/ledger/run-pg starts a throw-away server).
 *
 * Standalone mode for tests/ledger/run-pg:
 *   test_store --concurrency URL [WORKERS] [ATTEMPTS]
 * forks WORKERS processes, each with its own connection, that reserve 0.10
 * USD ATTEMPTS/WORKERS times against one key's budget of 1.00 and settle
 * what they got; exits 0 when exactly 10 got through and the spend is 1.00.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "hybridgw/core.h"
#include "ledger/store.h"

#define CLOSE(a, b) assert_true(fabs((a) - (b)) < 1e-9)

enum backend_kind {
    BK_FILE = 0,
    BK_MEMORY,
    BK_POSTGRES,
};

struct backend {
    enum backend_kind kind;
    char dir[256];  /* temp dir of BK_FILE */
    char url[512];  /* of the current test's database */
    int serial;     /* BK_FILE: one database file per test */
};

/* Unix time of a UTC date, without timegm (days from civil). */
static int64_t utc(int y, int m, int d, int hh, int mm, int ss)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    return days * 86400 + hh * 3600 + mm * 60 + ss;
}

/* Drop the store's tables in the PostgreSQL test database. */
static void pg_wipe(const char *url)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("postgres: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, "SET client_min_messages = warning;"
                            "DROP TABLE IF EXISTS schema_migrations, keys, teams, reservations,"
                            " spend_totals, spend, rate_usage, rate_inflight CASCADE");
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("postgres wipe: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

/* A fresh, empty store for this test; b->url names it (to open it again). */
static struct gw_store *open_fresh(struct backend *b)
{
    char err[512];
    switch (b->kind) {
    case BK_FILE:
        snprintf(b->url, sizeof(b->url), "sqlite://%s/t%d.db", b->dir, ++b->serial);
        break;
    case BK_MEMORY:
        snprintf(b->url, sizeof(b->url), "sqlite::memory:");
        break;
    case BK_POSTGRES:
        snprintf(b->url, sizeof(b->url), "%s", getenv("HYBRIDGW_TEST_PG_URL"));
        pg_wipe(b->url);
        break;
    }
    struct gw_store *s = gw_store_open(b->url, err, sizeof(err));
    if (!s)
        fail_msg("open %s: %s", b->kind == BK_POSTGRES ? "postgres" : b->url, err);
    return s;
}

static struct gw_vkey vkey(const char *name, const char *team)
{
    struct gw_vkey k;
    memset(&k, 0, sizeof(k));
    snprintf(k.name, sizeof(k.name), "%s", name);
    snprintf(k.team, sizeof(k.team), "%s", team);
    return k;
}

static void create_key(struct gw_store *s, struct gw_vkey *k)
{
    char secret[64];
    if (gw_store_key_create(s, k, secret, sizeof(secret)) != GW_STORE_OK)
        fail_msg("key create: %s", gw_store_error(s));
}

/* ------------------------------------------------------------------ */

static void test_open_migrate(void **state)
{
    struct backend *b = *state;
    char err[512];
    struct gw_store *s = open_fresh(b);
    assert_int_equal(gw_store_schema_version(s), 2);
    assert_string_equal(gw_store_kind(s), b->kind == BK_POSTGRES ? "postgres" : "sqlite");
    struct gw_vkey k = vkey("survives", "");
    create_key(s, &k);
    /* a second connection to the same database: migrations are a no-op and
     * the data is still there (an in-memory database is a new one) */
    struct gw_store *s2 = gw_store_open(b->url, err, sizeof(err));
    assert_non_null(s2);
    assert_int_equal(gw_store_schema_version(s2), 2);
    struct gw_vkey got;
    int rc = gw_store_key_get(s2, k.id, &got);
    assert_int_equal(rc, b->kind == BK_MEMORY ? GW_STORE_NOT_FOUND : GW_STORE_OK);
    gw_store_close(s2);
    gw_store_close(s);
    /* and once more after closing everything */
    s = gw_store_open(b->url, err, sizeof(err));
    assert_non_null(s);
    assert_int_equal(gw_store_schema_version(s), 2);
    gw_store_close(s);
}

static void test_key_lifecycle(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    char secret[64], secret2[64];
    unsigned char h[32];
    struct gw_vkey k = vkey("alice", "research"), got;
    snprintf(k.allowed_models, sizeof(k.allowed_models), "gpt-4o, local-coder");
    k.may_force_tier = true;
    k.expires_at = 2000000000;
    k.rpm = 60;
    k.tpm = 100000;
    k.max_concurrent = 4;
    k.budget_day = 1.5;
    k.budget_month = 20;
    k.budget_total = 100.25;
    k.downgrade = true;
    snprintf(k.metadata, sizeof(k.metadata), "{\"owner\":\"a@example.com\"}");
    assert_int_equal(gw_store_key_create(s, &k, secret, sizeof(secret)), GW_STORE_OK);

    /* the secret and the id */
    assert_int_equal(strlen(secret), GW_VKEY_SECRET_LEN);
    assert_true(gw_vkey_secret_valid(secret, strlen(secret)));
    assert_int_equal(strncmp(secret, "hgw-", 4), 0);
    assert_int_equal(strncmp(k.prefix, secret, strlen(k.prefix)), 0);
    assert_int_equal(strlen(k.prefix), 12);
    assert_int_equal(strlen(k.id), 19);
    assert_int_equal(strncmp(k.id, "vk_", 3), 0);
    assert_int_equal(strspn(k.id + 3, "0123456789abcdef"), 16);
    gw_vkey_hash(secret, strlen(secret), h);
    assert_memory_equal(h, k.sha256, 32);
    assert_true(k.created_at > 0);

    /* get and by hash return every field */
    assert_int_equal(gw_store_key_get(s, k.id, &got), GW_STORE_OK);
    assert_string_equal(got.name, "alice");
    assert_string_equal(got.team, "research");
    assert_string_equal(got.prefix, k.prefix);
    assert_memory_equal(got.sha256, k.sha256, 32);
    assert_string_equal(got.allowed_models, "gpt-4o, local-coder");
    assert_true(got.may_force_tier);
    assert_int_equal(got.expires_at, 2000000000);
    assert_int_equal(got.created_at, k.created_at);
    assert_int_equal(got.revoked_at, 0);
    assert_string_equal(got.metadata, "{\"owner\":\"a@example.com\"}");
    assert_int_equal(got.rpm, 60);
    assert_int_equal(got.tpm, 100000);
    assert_int_equal(got.max_concurrent, 4);
    CLOSE(got.budget_day, 1.5);
    CLOSE(got.budget_month, 20);
    CLOSE(got.budget_total, 100.25);
    assert_true(got.downgrade);
    memset(&got, 0, sizeof(got));
    assert_int_equal(gw_store_key_by_hash(s, h, &got), GW_STORE_OK);
    assert_string_equal(got.id, k.id);
    h[0] ^= 1;
    assert_int_equal(gw_store_key_by_hash(s, h, &got), GW_STORE_NOT_FOUND);
    assert_int_equal(gw_store_key_get(s, "vk_0000000000000000", &got), GW_STORE_NOT_FOUND);

    /* defaults */
    struct gw_vkey k2 = vkey("bob", "");
    assert_int_equal(gw_store_key_create(s, &k2, secret2, sizeof(secret2)), GW_STORE_OK);
    assert_string_not_equal(secret, secret2);
    assert_int_equal(gw_store_key_get(s, k2.id, &got), GW_STORE_OK);
    assert_string_equal(got.metadata, "{}");
    assert_string_equal(got.team, "");
    assert_false(got.may_force_tier);

    /* a key needs a name; limits cannot be negative */
    struct gw_vkey bad = vkey("", "");
    assert_int_equal(gw_store_key_create(s, &bad, secret2, sizeof(secret2)), GW_STORE_ERR);
    bad = vkey("neg", "");
    bad.budget_day = -1;
    assert_int_equal(gw_store_key_create(s, &bad, secret2, sizeof(secret2)), GW_STORE_ERR);
    assert_int_equal(gw_store_key_create(s, &k2, secret2, 10), GW_STORE_ERR);

    /* update replaces the mutable fields */
    got = k;
    snprintf(got.name, sizeof(got.name), "alice2");
    got.team[0] = 0;
    got.allowed_models[0] = 0;
    got.may_force_tier = false;
    got.rpm = 0;
    got.budget_day = 0;
    got.downgrade = false;
    got.metadata[0] = 0;
    assert_int_equal(gw_store_key_update(s, &got), GW_STORE_OK);
    memset(&got, 0, sizeof(got));
    assert_int_equal(gw_store_key_get(s, k.id, &got), GW_STORE_OK);
    assert_string_equal(got.name, "alice2");
    assert_string_equal(got.team, "");
    assert_string_equal(got.allowed_models, "");
    assert_false(got.may_force_tier);
    assert_int_equal(got.rpm, 0);
    assert_int_equal(got.tpm, 100000);
    CLOSE(got.budget_day, 0);
    assert_false(got.downgrade);
    assert_string_equal(got.metadata, "{}");
    assert_memory_equal(got.sha256, k.sha256, 32); /* update does not touch the secret */
    struct gw_vkey ghost = vkey("ghost", "");
    snprintf(ghost.id, sizeof(ghost.id), "vk_0000000000000000");
    assert_int_equal(gw_store_key_update(s, &ghost), GW_STORE_NOT_FOUND);

    /* rotate: same id, new secret, the old one stops working at once */
    unsigned char old[32];
    memcpy(old, k.sha256, 32);
    assert_int_equal(gw_store_key_rotate(s, k.id, secret2, sizeof(secret2)), GW_STORE_OK);
    assert_true(gw_vkey_secret_valid(secret2, strlen(secret2)));
    assert_string_not_equal(secret, secret2);
    assert_int_equal(gw_store_key_by_hash(s, old, &got), GW_STORE_NOT_FOUND);
    gw_vkey_hash(secret2, strlen(secret2), h);
    assert_int_equal(gw_store_key_by_hash(s, h, &got), GW_STORE_OK);
    assert_string_equal(got.id, k.id);
    assert_int_equal(strncmp(got.prefix, secret2, strlen(got.prefix)), 0);
    assert_int_equal(gw_store_key_rotate(s, "vk_0000000000000000", secret2, sizeof(secret2)),
                     GW_STORE_NOT_FOUND);

    /* revoke: at once, idempotent, unknown ids are NOT_FOUND */
    assert_true(gw_vkey_usable(&got, 1000));
    assert_int_equal(gw_store_key_revoke(s, k.id, 1234), GW_STORE_OK);
    assert_int_equal(gw_store_key_by_hash(s, h, &got), GW_STORE_OK);
    assert_int_equal(got.revoked_at, 1234);
    assert_false(gw_vkey_usable(&got, 1000));
    assert_int_equal(gw_store_key_revoke(s, k.id, 9999), GW_STORE_OK);
    assert_int_equal(gw_store_key_get(s, k.id, &got), GW_STORE_OK);
    assert_int_equal(got.revoked_at, 1234);
    assert_int_equal(gw_store_key_revoke(s, "vk_0000000000000000", 1), GW_STORE_NOT_FOUND);
    assert_int_equal(gw_store_key_rotate(s, k.id, secret2, sizeof(secret2)), GW_STORE_ERR);
    assert_string_equal(secret2, "");
    gw_store_close(s);
}

struct list_acc {
    int n;
    char ids[8][GW_VKEY_ID_LEN + 1];
    int64_t revoked[8];
};

static void on_key(const struct gw_vkey *k, void *ud)
{
    struct list_acc *a = ud;
    if (a->n < 8) {
        snprintf(a->ids[a->n], sizeof(a->ids[0]), "%s", k->id);
        a->revoked[a->n] = k->revoked_at;
    }
    a->n++;
}

static void test_key_list(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    struct gw_vkey k[3] = {vkey("a", ""), vkey("b", "t"), vkey("c", "")};
    struct list_acc acc = {0};
    assert_int_equal(gw_store_key_list(s, on_key, &acc), GW_STORE_OK);
    assert_int_equal(acc.n, 0);
    for (int i = 0; i < 3; i++)
        create_key(s, &k[i]);
    assert_int_equal(gw_store_key_revoke(s, k[1].id, 5), GW_STORE_OK);
    assert_int_equal(gw_store_key_list(s, on_key, &acc), GW_STORE_OK);
    assert_int_equal(acc.n, 3);
    /* created in one second: oldest first means created_at, then id; check
     * all three are there and the revoked one says so */
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            if (strcmp(acc.ids[i], k[j].id) == 0) {
                seen |= 1 << j;
                assert_int_equal(acc.revoked[i], j == 1 ? 5 : 0);
            }
        }
    }
    assert_int_equal(seen, 7);
    gw_store_close(s);
}

/* The secret is nowhere in the database, only its hash. */
static void test_secret_not_stored(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    char secret[64];
    struct gw_vkey k = vkey("hidden", "");
    assert_int_equal(gw_store_key_create(s, &k, secret, sizeof(secret)), GW_STORE_OK);
    const char *body = secret + 12; /* past the stored prefix */
    if (b->kind == BK_FILE) {
        gw_store_close(s);
        s = NULL;
        const char *sfx[] = {"", "-wal"};
        for (size_t i = 0; i < 2; i++) {
            char path[600];
            snprintf(path, sizeof(path), "%s%s", b->url + strlen("sqlite://"), sfx[i]);
            FILE *f = fopen(path, "rb");
            if (!f)
                continue;
            static char buf[1 << 20];
            size_t n = fread(buf, 1, sizeof(buf), f);
            fclose(f);
            assert_null(memmem(buf, n, body, strlen(body)));
        }
    } else if (b->kind == BK_POSTGRES) {
        PGconn *c = PQconnectdb(b->url);
        assert_int_equal(PQstatus(c), CONNECTION_OK);
        PGresult *r = PQexec(c, "SELECT k::text FROM keys k");
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        assert_int_equal(PQntuples(r), 1);
        const char *row = PQgetvalue(r, 0, 0);
        assert_null(strstr(row, body));
        char hex[65];
        gw_hex(k.sha256, 32, hex);
        assert_non_null(strstr(row, hex));
        PQclear(r);
        PQfinish(c);
    }
    gw_store_close(s);
}

static void test_reserve_arithmetic(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    struct gw_vkey k = vkey("budgeted", "");
    struct gw_spend_state st;
    char r1[40], r2[40], r3[40];
    int64_t now = utc(2026, 11, 27, 12, 0, 0);
    k.budget_total = 1.00;
    create_key(s, &k);

    /* fits, then fits exactly */
    assert_int_equal(gw_store_reserve(s, &k, 0.60, now, r1, sizeof(r1), &st), GW_STORE_OK);
    assert_int_equal(strncmp(r1, "rs_", 3), 0);
    CLOSE(st.key_total, 0.60);
    assert_int_equal(gw_store_reserve(s, &k, 0.40, now, r2, sizeof(r2), &st), GW_STORE_OK);
    CLOSE(st.key_total, 1.00);
    CLOSE(st.key_day, 1.00);
    assert_string_not_equal(r1, r2);
    /* nothing left: even a cent is over, and nothing is recorded */
    assert_int_equal(gw_store_reserve(s, &k, 0.01, now, r3, sizeof(r3), &st),
                     GW_STORE_OVER_BUDGET);
    assert_string_equal(r3, "");
    CLOSE(st.key_total, 1.00);
    /* a free request still fits when exactly at the budget */
    assert_int_equal(gw_store_reserve(s, &k, 0, now, r3, sizeof(r3), NULL), GW_STORE_OK);
    assert_int_equal(gw_store_release(s, r3), GW_STORE_OK);

    /* release frees the room; over by one cent is refused */
    assert_int_equal(gw_store_release(s, r2), GW_STORE_OK);
    assert_int_equal(gw_store_spend_state(s, &k, now, &st), GW_STORE_OK);
    CLOSE(st.key_total, 0.60);
    assert_int_equal(gw_store_reserve(s, &k, 0.41, now, r3, sizeof(r3), &st),
                     GW_STORE_OVER_BUDGET);
    CLOSE(st.key_total, 0.60);
    assert_int_equal(gw_store_reserve(s, &k, 0.40, now, r3, sizeof(r3), &st), GW_STORE_OK);

    /* 0.1 + 0.2 is not 0.30000000000000004 here: amounts are exact */
    struct gw_vkey k2 = vkey("tenths", "");
    k2.budget_day = 0.3;
    create_key(s, &k2);
    assert_int_equal(gw_store_reserve(s, &k2, 0.1, now, r1, sizeof(r1), NULL), GW_STORE_OK);
    assert_int_equal(gw_store_reserve(s, &k2, 0.2, now, r2, sizeof(r2), NULL), GW_STORE_OK);
    assert_int_equal(gw_store_reserve(s, &k2, 0.000000001, now, r2, sizeof(r2), NULL),
                     GW_STORE_OVER_BUDGET);

    /* a key without budgets takes anything */
    struct gw_vkey free_key = vkey("unlimited", "");
    create_key(s, &free_key);
    assert_int_equal(gw_store_reserve(s, &free_key, 1e6, now, r1, sizeof(r1), &st), GW_STORE_OK);
    CLOSE(st.key_total, 1e6);

    /* bad arguments */
    assert_int_equal(gw_store_reserve(s, &k, -1, now, r1, sizeof(r1), NULL), GW_STORE_ERR);
    assert_int_equal(gw_store_reserve(s, &k, NAN, now, r1, sizeof(r1), NULL), GW_STORE_ERR);
    assert_int_equal(gw_store_reserve(s, &k, 0.1, now, r1, 8, NULL), GW_STORE_ERR);
    gw_store_close(s);
}

static void test_team_budget(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    struct gw_team t, got;
    struct gw_spend_state st;
    char r[40];
    int64_t now = utc(2026, 11, 27, 9, 30, 0);
    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "ml");
    t.budget_day = 1.00;
    t.rpm = 100;
    assert_int_equal(gw_store_team_put(s, &t), GW_STORE_OK);
    assert_int_equal(gw_store_team_get(s, "ml", &got), GW_STORE_OK);
    CLOSE(got.budget_day, 1.00);
    assert_int_equal(got.rpm, 100);
    assert_int_equal(gw_store_team_get(s, "nope", &got), GW_STORE_NOT_FOUND);
    /* put again replaces */
    t.rpm = 200;
    assert_int_equal(gw_store_team_put(s, &t), GW_STORE_OK);
    assert_int_equal(gw_store_team_get(s, "ml", &got), GW_STORE_OK);
    assert_int_equal(got.rpm, 200);

    /* two keys of the team, no budgets of their own */
    struct gw_vkey a = vkey("a", "ml"), bk = vkey("b", "ml"), other = vkey("c", "ops");
    create_key(s, &a);
    create_key(s, &bk);
    create_key(s, &other);
    assert_int_equal(gw_store_reserve(s, &a, 0.70, now, r, sizeof(r), &st), GW_STORE_OK);
    CLOSE(st.team_day, 0.70);
    assert_int_equal(gw_store_settle(s, r, 0.70, now), GW_STORE_OK);
    /* the second key is limited by what the first spent */
    assert_int_equal(gw_store_reserve(s, &bk, 0.31, now, r, sizeof(r), &st), GW_STORE_OVER_BUDGET);
    CLOSE(st.key_day, 0);
    CLOSE(st.team_day, 0.70);
    assert_int_equal(gw_store_reserve(s, &bk, 0.30, now, r, sizeof(r), &st), GW_STORE_OK);
    CLOSE(st.key_day, 0.30);
    CLOSE(st.team_day, 1.00);
    /* another team (no row: no budgets) is not affected */
    assert_int_equal(gw_store_reserve(s, &other, 5, now, r, sizeof(r), &st), GW_STORE_OK);
    CLOSE(st.team_day, 5);
    /* the key's own budget still applies within the team's */
    struct gw_vkey small = vkey("small", "ops");
    small.budget_month = 0.05;
    create_key(s, &small);
    assert_int_equal(gw_store_reserve(s, &small, 0.06, now, r, sizeof(r), NULL),
                     GW_STORE_OVER_BUDGET);
    gw_store_close(s);
}

static void on_team_count(const struct gw_team *t, void *ud)
{
    (void)t;
    (*(int *)ud)++;
}

static void test_team_list(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    struct gw_team t;
    int n = 0;
    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "one");
    assert_int_equal(gw_store_team_put(s, &t), GW_STORE_OK);
    snprintf(t.name, sizeof(t.name), "two");
    assert_int_equal(gw_store_team_put(s, &t), GW_STORE_OK);
    t.name[0] = 0;
    assert_int_equal(gw_store_team_put(s, &t), GW_STORE_ERR);
    assert_int_equal(gw_store_team_list(s, on_team_count, &n), GW_STORE_OK);
    assert_int_equal(n, 2);
    gw_store_close(s);
}

static const struct gw_rate_row *find_row(const struct gw_rate_row *r, size_t n,
                                          const char *subject, int64_t sec)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(r[i].subject, subject) == 0 && r[i].sec == sec)
            return &r[i];
    return NULL;
}

/* Two replicas exchange rate-limit counts through one database: each reads
 * the other's seconds (summed), never its own; rewriting a second replaces
 * it; old seconds and stale in-flight counts are not read. */
static void test_rate_sync(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    int64_t now = 1800000000000; /* ms */
    int64_t sec = now / 1000;
    struct gw_rate_row a_rows[] = {
        {"key:vk_a", sec, 3, 300}, {"key:vk_a", sec - 1, 1, 50}, {"team:t", sec, 3, 300},
        {"key:vk_a", sec - 200, 9, 900}, /* long gone */
    };
    struct gw_rate_inflight a_inf[] = {{"key:vk_a", 2}, {"team:t", 0}};
    struct gw_rate_row *o;
    struct gw_rate_inflight *oi;
    size_t no, noi;
    assert_int_equal(gw_store_rate_sync(s, "replica-a", now, a_rows, 4, a_inf, 2, 60, 1500,
                                        false, &o, &no, &oi, &noi),
                     GW_STORE_OK);
    assert_int_equal(no, 0); /* nobody else yet */
    assert_int_equal(noi, 0);
    free(o);
    free(oi);
    /* replica b writes the same second of the team and reads a's */
    struct gw_rate_row b_rows[] = {{"team:t", sec, 2, 100}};
    assert_int_equal(gw_store_rate_sync(s, "replica-b", now + 100, b_rows, 1, NULL, 0, 60, 1500,
                                        false, &o, &no, &oi, &noi),
                     GW_STORE_OK);
    assert_int_equal(no, 3); /* a's three recent seconds, not its own */
    const struct gw_rate_row *r = find_row(o, no, "key:vk_a", sec);
    assert_non_null(r);
    assert_int_equal(r->requests, 3);
    assert_int_equal(r->tokens, 300);
    r = find_row(o, no, "team:t", sec);
    assert_non_null(r);
    assert_int_equal(r->requests, 3);
    assert_null(find_row(o, no, "key:vk_a", sec - 200));
    assert_int_equal(noi, 1); /* a's zero in-flight team row is not reported */
    assert_string_equal(oi[0].subject, "key:vk_a");
    assert_int_equal(oi[0].inflight, 2);
    free(o);
    free(oi);
    /* a rewrites its second (a correction); a third replica reads a + b
     * summed per second; a's in-flight row is stale by then */
    a_rows[0].tokens = 120;
    assert_int_equal(gw_store_rate_sync(s, "replica-a", now + 200, a_rows, 1, NULL, 0, 60, 1500,
                                        false, &o, &no, &oi, &noi),
                     GW_STORE_OK);
    free(o);
    free(oi);
    assert_int_equal(gw_store_rate_sync(s, "replica-c", now + 2000, NULL, 0, NULL, 0, 60, 1500,
                                        true, &o, &no, &oi, &noi),
                     GW_STORE_OK);
    r = find_row(o, no, "team:t", sec);
    assert_non_null(r);
    assert_int_equal(r->requests, 5);
    assert_int_equal(r->tokens, 400);
    r = find_row(o, no, "key:vk_a", sec);
    assert_non_null(r);
    assert_int_equal(r->tokens, 120);
    assert_int_equal(noi, 0);
    free(o);
    free(oi);
    gw_store_close(s);
}

/* Reservations and settles in batches: the same arithmetic as one at a
 * time, key and team budgets seen across the batch, unknown reservations
 * reported, charges without a reservation booked. */
static void test_batches(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    int64_t now = utc(2026, 11, 27, 12, 0, 0);
    struct gw_team t;
    memset(&t, 0, sizeof(t));
    snprintf(t.name, sizeof(t.name), "batch-team");
    t.budget_day = 1.50;
    assert_int_equal(gw_store_team_put(s, &t), GW_STORE_OK);
    struct gw_vkey a = vkey("batch-a", "batch-team"), c = vkey("batch-c", "batch-team");
    a.budget_total = 1.00;
    create_key(s, &a);
    create_key(s, &c);
    /* 12 x 0.10 for a (budget 1.00), then 8 x 0.10 for c: the team's 1.50
     * day budget leaves c 5 */
    struct gw_reserve_req rq[20];
    for (int i = 0; i < 20; i++) {
        rq[i].key = i < 12 ? &a : &c;
        rq[i].max_usd = 0.10;
    }
    assert_int_equal(gw_store_reserve_batch(s, rq, 20, now), GW_STORE_OK);
    int ok_a = 0, ok_c = 0;
    for (int i = 0; i < 20; i++) {
        assert_true(rq[i].rc == GW_STORE_OK || rq[i].rc == GW_STORE_OVER_BUDGET);
        if (rq[i].rc == GW_STORE_OK) {
            assert_true(strncmp(rq[i].rid, "rs_", 3) == 0);
            *(i < 12 ? &ok_a : &ok_c) += 1;
        }
    }
    assert_int_equal(ok_a, 10);
    assert_int_equal(ok_c, 5);
    assert_int_equal(rq[11].rc, GW_STORE_OVER_BUDGET);
    CLOSE(rq[11].state.key_total, 1.00);  /* where it stood */
    CLOSE(rq[9].state.key_total, 1.00);   /* the tenth filled it */
    CLOSE(rq[16].state.team_day, 1.50);
    struct gw_spend_state st;
    assert_int_equal(gw_store_spend_state(s, &a, now, &st), GW_STORE_OK);
    CLOSE(st.key_total, 1.00);
    CLOSE(st.team_day, 1.50);
    /* settle a's ten at 0.04, release c's five, one unknown, and charge
     * c 0.25 without a reservation */
    struct gw_settle_req sr[17];
    memset(sr, 0, sizeof(sr));
    int n = 0;
    for (int i = 0; i < 20; i++) {
        if (rq[i].rc != GW_STORE_OK)
            continue;
        snprintf(sr[n].rid, sizeof(sr[n].rid), "%s", rq[i].rid);
        sr[n].usd = 0.04;
        sr[n].release = i >= 12;
        n++;
    }
    snprintf(sr[n++].rid, sizeof(sr[0].rid), "rs_nosuchreservation");
    snprintf(sr[n].key_id, sizeof(sr[n].key_id), "%s", c.id);
    snprintf(sr[n].team, sizeof(sr[n].team), "batch-team");
    sr[n++].usd = 0.25;
    assert_int_equal(n, 17);
    assert_int_equal(gw_store_settle_batch(s, sr, (size_t)n, now), GW_STORE_OK);
    for (int i = 0; i < n; i++)
        assert_int_equal(sr[i].rc, i == 15 ? GW_STORE_NOT_FOUND : GW_STORE_OK);
    assert_string_equal(sr[0].key_id, a.id); /* filled in from the reservation */
    assert_int_equal(gw_store_spend_state(s, &a, now, &st), GW_STORE_OK);
    CLOSE(st.key_total, 0.40);
    CLOSE(st.team_day, 0.65);
    assert_int_equal(gw_store_spend_state(s, &c, now, &st), GW_STORE_OK);
    CLOSE(st.key_total, 0.25);
    /* settling the same again finds nothing and books nothing */
    assert_int_equal(gw_store_settle_batch(s, sr, 1, now), GW_STORE_OK);
    assert_int_equal(sr[0].rc, GW_STORE_NOT_FOUND);
    assert_int_equal(gw_store_spend_state(s, &a, now, &st), GW_STORE_OK);
    CLOSE(st.key_total, 0.40);
    /* 20 more (two insert statements), settled in one batch that names the
     * first one twice (two take statements): it is taken and booked once */
    struct gw_vkey big = vkey("batch-big", "");
    create_key(s, &big);
    for (int i = 0; i < 20; i++) {
        rq[i].key = &big;
        rq[i].max_usd = 0.01;
    }
    assert_int_equal(gw_store_reserve_batch(s, rq, 20, now), GW_STORE_OK);
    struct gw_settle_req many[21];
    memset(many, 0, sizeof(many));
    for (int i = 0; i < 21; i++) {
        assert_int_equal(rq[i % 20].rc, GW_STORE_OK);
        snprintf(many[i].rid, sizeof(many[i].rid), "%s", rq[i == 20 ? 0 : i].rid);
        many[i].usd = 0.01;
    }
    assert_int_equal(gw_store_spend_state(s, &big, now, &st), GW_STORE_OK);
    CLOSE(st.key_total, 0.20); /* all reserved */
    assert_int_equal(gw_store_settle_batch(s, many, 21, now), GW_STORE_OK);
    for (int i = 0; i < 21; i++)
        assert_int_equal(many[i].rc, i == 20 ? GW_STORE_NOT_FOUND : GW_STORE_OK);
    assert_int_equal(gw_store_spend_state(s, &big, now, &st), GW_STORE_OK);
    CLOSE(st.key_total, 0.20); /* settled, none left open, the twice-named one booked once */
    /* a bad request in a batch fails the batch and records nothing */
    struct gw_vkey nokey = vkey("x", "");
    rq[0].key = &a;
    rq[0].max_usd = 0.10;
    rq[1].key = &nokey;
    rq[1].max_usd = 0.10;
    assert_int_equal(gw_store_reserve_batch(s, rq, 2, now), GW_STORE_ERR);
    assert_int_equal(rq[0].rc, GW_STORE_ERR);
    assert_int_equal(gw_store_spend_state(s, &a, now, &st), GW_STORE_OK);
    CLOSE(st.key_total, 0.40);
    gw_store_close(s);
}

/* Ledger rows of keys without budgets carry a charge: appending them books
 * it to the key's and team's totals in the same transaction; rows without
 * the flag (reserved and settled elsewhere) book nothing. */
static void test_append_charges(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    struct gw_vkey k = vkey("charged", "charge-team");
    create_key(s, &k);
    struct gw_spend_rec r[3];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 3; i++) {
        snprintf(r[i].request_id, sizeof(r[i].request_id), "req-%d", i);
        r[i].ts_ms = (int64_t)time(NULL) * 1000;
        snprintf(r[i].key_id, sizeof(r[i].key_id), "%s", k.id);
        snprintf(r[i].team, sizeof(r[i].team), "charge-team");
        r[i].cost_usd = 0.125 * (i + 1);
        r[i].charge = i != 1;
        r[i].status = 200;
    }
    assert_int_equal(gw_store_append(s, r, 3), GW_STORE_OK);
    struct gw_spend_state st;
    assert_int_equal(gw_store_spend_state(s, &k, (int64_t)time(NULL), &st), GW_STORE_OK);
    CLOSE(st.key_total, 0.125 + 0.375);
    CLOSE(st.key_day, 0.125 + 0.375);
    CLOSE(st.key_month, 0.125 + 0.375);
    CLOSE(st.team_total, 0.125 + 0.375);
    /* a row without a key id, or with no cost, books nothing */
    memset(r, 0, sizeof(r));
    snprintf(r[0].request_id, sizeof(r[0].request_id), "req-static");
    r[0].cost_usd = 1;
    r[0].charge = true;
    snprintf(r[1].request_id, sizeof(r[1].request_id), "req-free");
    snprintf(r[1].key_id, sizeof(r[1].key_id), "%s", k.id);
    r[1].charge = true;
    assert_int_equal(gw_store_append(s, r, 2), GW_STORE_OK);
    assert_int_equal(gw_store_spend_state(s, &k, (int64_t)time(NULL), &st), GW_STORE_OK);
    CLOSE(st.key_total, 0.5);
    gw_store_close(s);
}

static void test_settle_release(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    struct gw_vkey k = vkey("settler", "team-s");
    struct gw_spend_state st;
    char r1[40], r2[40];
    int64_t now = utc(2026, 11, 27, 12, 0, 0);
    k.budget_total = 2;
    create_key(s, &k);
    assert_int_equal(gw_store_reserve(s, &k, 0.50, now, r1, sizeof(r1), NULL), GW_STORE_OK);
    /* settle the real (smaller) cost: the rest of the reservation is free again */
    assert_int_equal(gw_store_settle(s, r1, 0.20, now + 5), GW_STORE_OK);
    assert_int_equal(gw_store_spend_state(s, &k, now + 5, &st), GW_STORE_OK);
    CLOSE(st.key_day, 0.20);
    CLOSE(st.key_month, 0.20);
    CLOSE(st.key_total, 0.20);
    CLOSE(st.team_total, 0.20);
    /* once only */
    assert_int_equal(gw_store_settle(s, r1, 0.20, now + 5), GW_STORE_NOT_FOUND);
    assert_int_equal(gw_store_release(s, r1), GW_STORE_NOT_FOUND);
    /* a stream may cost more than it reserved: the real cost counts */
    assert_int_equal(gw_store_reserve(s, &k, 0.50, now, r2, sizeof(r2), NULL), GW_STORE_OK);
    assert_int_equal(gw_store_settle(s, r2, 0.80, now + 6), GW_STORE_OK);
    assert_int_equal(gw_store_spend_state(s, &k, now + 6, &st), GW_STORE_OK);
    CLOSE(st.key_total, 1.00);
    CLOSE(st.team_total, 1.00);
    /* release: nothing is spent */
    assert_int_equal(gw_store_reserve(s, &k, 0.70, now, r2, sizeof(r2), &st), GW_STORE_OK);
    CLOSE(st.key_total, 1.70);
    assert_int_equal(gw_store_release(s, r2), GW_STORE_OK);
    assert_int_equal(gw_store_spend_state(s, &k, now + 6, &st), GW_STORE_OK);
    CLOSE(st.key_total, 1.00);
    assert_int_equal(gw_store_settle(s, "rs_nope", 1, now), GW_STORE_NOT_FOUND);
    /* a zero-cost settle only drops the reservation */
    assert_int_equal(gw_store_reserve(s, &k, 0.10, now, r2, sizeof(r2), NULL), GW_STORE_OK);
    assert_int_equal(gw_store_settle(s, r2, 0, now), GW_STORE_OK);
    assert_int_equal(gw_store_spend_state(s, &k, now + 6, &st), GW_STORE_OK);
    CLOSE(st.key_total, 1.00);
    gw_store_close(s);
}

static void spend(struct gw_store *s, const struct gw_vkey *k, double usd, int64_t now)
{
    char r[40];
    if (gw_store_reserve(s, k, usd, now, r, sizeof(r), NULL) != GW_STORE_OK)
        fail_msg("reserve %.2f: %s", usd, gw_store_error(s));
    if (gw_store_settle(s, r, usd, now) != GW_STORE_OK)
        fail_msg("settle: %s", gw_store_error(s));
}

static void test_period_rollover(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    struct gw_vkey k = vkey("periodic", "p-team");
    struct gw_spend_state st;
    char r[40];
    k.budget_day = 1.00;
    k.budget_month = 2.50;
    create_key(s, &k);

    int64_t d1 = utc(2026, 11, 29, 23, 59, 59);
    spend(s, &k, 0.90, d1);
    assert_int_equal(gw_store_reserve(s, &k, 0.20, d1, r, sizeof(r), &st), GW_STORE_OVER_BUDGET);
    CLOSE(st.key_day, 0.90);

    /* one second later is a new UTC day: the day starts from zero, the month
     * keeps counting */
    int64_t d2 = utc(2026, 11, 30, 0, 0, 0);
    assert_int_equal(gw_store_spend_state(s, &k, d2, &st), GW_STORE_OK);
    CLOSE(st.key_day, 0);
    CLOSE(st.key_month, 0.90);
    CLOSE(st.key_total, 0.90);
    CLOSE(st.team_day, 0);
    CLOSE(st.team_month, 0.90);
    spend(s, &k, 1.00, d2);
    /* the month (1.90) has 0.60 left, the day none */
    assert_int_equal(gw_store_reserve(s, &k, 0.01, d2 + 3600, r, sizeof(r), NULL),
                     GW_STORE_OVER_BUDGET);
    /* looking back at the first day still shows its spend */
    assert_int_equal(gw_store_spend_state(s, &k, d1, &st), GW_STORE_OK);
    CLOSE(st.key_day, 0.90);

    /* a reservation made before midnight and settled after counts on the
     * day it is settled */
    int64_t late = utc(2026, 11, 30, 23, 59, 0);
    int64_t d3 = utc(2026, 12, 1, 0, 0, 30);
    assert_int_equal(gw_store_spend_state(s, &k, late, &st), GW_STORE_OK);
    CLOSE(st.key_day, 1.00);
    /* new month: day and month from zero, total keeps counting */
    assert_int_equal(gw_store_spend_state(s, &k, d3, &st), GW_STORE_OK);
    CLOSE(st.key_day, 0);
    CLOSE(st.key_month, 0);
    CLOSE(st.key_total, 1.90);
    CLOSE(st.team_total, 1.90);
    assert_int_equal(gw_store_reserve(s, &k, 0.60, d3, r, sizeof(r), &st), GW_STORE_OK);
    CLOSE(st.key_day, 0.60);
    CLOSE(st.key_month, 0.60);
    CLOSE(st.key_total, 2.50);
    assert_int_equal(gw_store_settle(s, r, 0.60, d3), GW_STORE_OK);

    /* month limit without hitting a day limit: 0.9 a day through December */
    struct gw_vkey m = vkey("monthly", "");
    m.budget_day = 1.00;
    m.budget_month = 2.50;
    create_key(s, &m);
    spend(s, &m, 0.90, utc(2026, 12, 1, 10, 0, 0));
    spend(s, &m, 0.90, utc(2026, 12, 2, 10, 0, 0));
    assert_int_equal(gw_store_reserve(s, &m, 0.90, utc(2026, 12, 3, 10, 0, 0), r, sizeof(r), &st),
                     GW_STORE_OVER_BUDGET);
    CLOSE(st.key_day, 0);
    CLOSE(st.key_month, 1.80);
    assert_int_equal(gw_store_reserve(s, &m, 0.70, utc(2026, 12, 3, 10, 0, 0), r, sizeof(r), &st),
                     GW_STORE_OK);
    assert_int_equal(gw_store_release(s, r), GW_STORE_OK);
    /* January: the month budget is back (year roll-over too) */
    assert_int_equal(gw_store_reserve(s, &m, 0.90, utc(2027, 1, 1, 0, 0, 0), r, sizeof(r), &st),
                     GW_STORE_OK);
    CLOSE(st.key_month, 0.90);
    CLOSE(st.key_total, 2.70);
    gw_store_close(s);
}

static void test_expire(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    struct gw_vkey k = vkey("crashy", "");
    struct gw_spend_state st;
    char old[40], young[40], r[40];
    k.budget_total = 1;
    create_key(s, &k);
    assert_int_equal(gw_store_reserve(s, &k, 0.5, 1000, old, sizeof(old), NULL), GW_STORE_OK);
    assert_int_equal(gw_store_reserve(s, &k, 0.5, 2000, young, sizeof(young), NULL), GW_STORE_OK);
    /* a replica crashed holding both: the budget is full */
    assert_int_equal(gw_store_reserve(s, &k, 0.1, 2100, r, sizeof(r), NULL), GW_STORE_OVER_BUDGET);
    assert_int_equal(gw_store_expire_reservations(s, 2500, 1000), GW_STORE_OK);
    assert_int_equal(gw_store_spend_state(s, &k, 2500, &st), GW_STORE_OK);
    CLOSE(st.key_total, 0.5);
    assert_int_equal(gw_store_settle(s, old, 0.5, 2500), GW_STORE_NOT_FOUND);
    assert_int_equal(gw_store_settle(s, young, 0.5, 2500), GW_STORE_OK);
    /* nothing left to expire */
    assert_int_equal(gw_store_expire_reservations(s, 99999, 0), GW_STORE_OK);
    assert_int_equal(gw_store_spend_state(s, &k, 2500, &st), GW_STORE_OK);
    CLOSE(st.key_total, 0.5);
    gw_store_close(s);
}

struct report_acc {
    int n;
    struct gw_spend_row rows[8];
};

static void on_row(const struct gw_spend_row *r, void *ud)
{
    struct report_acc *a = ud;
    if (a->n < 8)
        a->rows[a->n] = *r;
    a->n++;
}

static struct gw_spend_rec rec(const char *id, int64_t ts, const char *key, const char *team,
                               const char *tier, const char *model, int64_t in, int64_t out,
                               double cost, double cf)
{
    struct gw_spend_rec r;
    memset(&r, 0, sizeof(r));
    snprintf(r.request_id, sizeof(r.request_id), "%s", id);
    r.ts_ms = ts * 1000;
    snprintf(r.key_name, sizeof(r.key_name), "%s", key);
    snprintf(r.team, sizeof(r.team), "%s", team);
    snprintf(r.tier, sizeof(r.tier), "%s", tier);
    snprintf(r.backend, sizeof(r.backend), "%s-backend", tier);
    snprintf(r.model, sizeof(r.model), "%s", model);
    r.status = 200;
    r.input_tokens = in;
    r.output_tokens = out;
    r.cost_usd = cost;
    r.counterfactual_usd = cf;
    return r;
}

static void test_append_report(void **state)
{
    struct backend *b = *state;
    struct gw_store *s = open_fresh(b);
    struct report_acc acc;
    int64_t t0 = utc(2026, 11, 1, 0, 0, 0);
    struct gw_spend_rec recs[] = {
        rec("r1", t0 - 10, "alice", "ml", "frontier", "gpt-4o", 100, 50, 0.50, 0.50),
        rec("r2", t0 + 10, "alice", "ml", "local", "qwen", 1000, 500, 0.01, 0.40),
        rec("r3", t0 + 20, "bob", "ml", "frontier", "gpt-4o", 200, 100, 1.00, 1.00),
        rec("r4", t0 + 30, "bob", "", "local", "qwen", 300, 30, 0.02, 0.30),
        rec("r5", t0 + 40, "carol", "ops", "local", "llama", 10, 1, 0.005, 0.05),
    };
    recs[3].estimated = true;
    snprintf(recs[0].key_id, sizeof(recs[0].key_id), "vk_00112233aabbccdd");
    assert_int_equal(gw_store_append(s, recs, GW_ARRAY_LEN(recs)), GW_STORE_OK);
    assert_int_equal(gw_store_append(s, recs, 0), GW_STORE_OK);

    /* by model since t0: r1 is older and left out; highest cost first */
    memset(&acc, 0, sizeof(acc));
    assert_int_equal(gw_store_spend_report(s, "model", t0, on_row, &acc), GW_STORE_OK);
    assert_int_equal(acc.n, 3);
    assert_string_equal(acc.rows[0].group, "gpt-4o");
    assert_int_equal(acc.rows[0].requests, 1);
    CLOSE(acc.rows[0].cost_usd, 1.00);
    assert_string_equal(acc.rows[1].group, "qwen");
    assert_int_equal(acc.rows[1].requests, 2);
    assert_int_equal(acc.rows[1].input_tokens, 1300);
    assert_int_equal(acc.rows[1].output_tokens, 530);
    CLOSE(acc.rows[1].cost_usd, 0.03);
    CLOSE(acc.rows[1].counterfactual_usd, 0.70);
    assert_string_equal(acc.rows[2].group, "llama");

    /* everything, by key */
    memset(&acc, 0, sizeof(acc));
    assert_int_equal(gw_store_spend_report(s, "key", 0, on_row, &acc), GW_STORE_OK);
    assert_int_equal(acc.n, 3);
    assert_string_equal(acc.rows[0].group, "bob");
    CLOSE(acc.rows[0].cost_usd, 1.02);
    assert_string_equal(acc.rows[1].group, "alice");
    assert_int_equal(acc.rows[1].requests, 2);
    CLOSE(acc.rows[1].cost_usd, 0.51);

    /* by team: the empty team is a group of its own */
    memset(&acc, 0, sizeof(acc));
    assert_int_equal(gw_store_spend_report(s, "team", t0, on_row, &acc), GW_STORE_OK);
    assert_int_equal(acc.n, 3);
    assert_string_equal(acc.rows[0].group, "ml");
    CLOSE(acc.rows[0].cost_usd, 1.01);
    assert_string_equal(acc.rows[1].group, "");
    assert_string_equal(acc.rows[2].group, "ops");

    /* by tier and backend */
    memset(&acc, 0, sizeof(acc));
    assert_int_equal(gw_store_spend_report(s, "tier", 0, on_row, &acc), GW_STORE_OK);
    assert_int_equal(acc.n, 2);
    assert_string_equal(acc.rows[0].group, "frontier");
    assert_int_equal(acc.rows[0].requests, 2);
    CLOSE(acc.rows[0].cost_usd, 1.50);
    assert_string_equal(acc.rows[1].group, "local");
    assert_int_equal(acc.rows[1].requests, 3);
    memset(&acc, 0, sizeof(acc));
    assert_int_equal(gw_store_spend_report(s, "backend", 0, on_row, &acc), GW_STORE_OK);
    assert_int_equal(acc.n, 2);
    assert_string_equal(acc.rows[0].group, "frontier-backend");

    /* the future is empty; unknown groupings are refused */
    memset(&acc, 0, sizeof(acc));
    assert_int_equal(gw_store_spend_report(s, "model", t0 + 41, on_row, &acc), GW_STORE_OK);
    assert_int_equal(acc.n, 0);
    assert_int_equal(gw_store_spend_report(s, "model; DROP TABLE spend", 0, on_row, &acc),
                     GW_STORE_ERR);
    assert_non_null(strstr(gw_store_error(s), "cannot group"));
    gw_store_close(s);
}

/* ------------------------------------------------------------------ */
/* concurrency: separate processes, separate connections, one budget */

struct race_result {
    int granted, over, errors;
    double total;
};

/* Reserve and settle `batch` at a time (gw_store_reserve_batch and
 * gw_store_settle_batch); counts as in race_worker. */
static void race_batches(struct gw_store *s, const struct gw_vkey *k, int attempts, int batch,
                         int counts[3])
{
    struct gw_reserve_req rq[8];
    struct gw_settle_req st[8];
    for (int done = 0; done < attempts; done += batch) {
        int n = attempts - done < batch ? attempts - done : batch;
        int64_t now = (int64_t)time(NULL);
        for (int i = 0; i < n; i++) {
            rq[i].key = k;
            rq[i].max_usd = 0.10;
        }
        if (gw_store_reserve_batch(s, rq, (size_t)n, now) != GW_STORE_OK) {
            fprintf(stderr, "worker reserve batch: %s\n", gw_store_error(s));
            counts[2] += n;
            continue;
        }
        int ns = 0;
        for (int i = 0; i < n; i++) {
            if (rq[i].rc != GW_STORE_OK) {
                counts[1]++;
                continue;
            }
            counts[0]++;
            memset(&st[ns], 0, sizeof(st[ns]));
            snprintf(st[ns].rid, sizeof(st[ns].rid), "%s", rq[i].rid);
            st[ns++].usd = 0.10;
        }
        if (gw_store_settle_batch(s, st, (size_t)ns, now) != GW_STORE_OK) {
            fprintf(stderr, "worker settle batch: %s\n", gw_store_error(s));
            counts[2]++;
        }
        for (int i = 0; i < ns; i++)
            if (st[i].rc != GW_STORE_OK)
                counts[2]++;
    }
}

/* Odd workers go in batches of 3, even ones one at a time: both paths
 * race for one budget. */
static void race_worker(const char *url, const struct gw_vkey *k, int attempts, int go_fd,
                        int out_fd, int w)
{
    char err[512], r[40], c;
    int counts[3] = {0, 0, 0};
    struct gw_store *s = gw_store_open(url, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "worker: %s\n", err);
        _exit(3);
    }
    /* wait for the parent to release every worker at once */
    if (read(go_fd, &c, 1) < 0)
        _exit(3);
    if (w % 2)
        race_batches(s, k, attempts, 3, counts);
    for (int i = 0; i < attempts && w % 2 == 0; i++) {
        int64_t now = (int64_t)time(NULL);
        int rc = gw_store_reserve(s, k, 0.10, now, r, sizeof(r), NULL);
        if (rc == GW_STORE_OK) {
            counts[0]++;
            if (gw_store_settle(s, r, 0.10, now) != GW_STORE_OK) {
                fprintf(stderr, "worker settle: %s\n", gw_store_error(s));
                counts[2]++;
            }
        } else if (rc == GW_STORE_OVER_BUDGET) {
            counts[1]++;
        } else {
            fprintf(stderr, "worker reserve: %s\n", gw_store_error(s));
            counts[2]++;
        }
    }
    gw_store_close(s);
    if (write(out_fd, counts, sizeof(counts)) != (ssize_t)sizeof(counts))
        _exit(3);
    _exit(0);
}

/* Budget 1.00, reservations of 0.10, attempts spread over workers. */
static int race(const char *url, int workers, int attempts, struct race_result *res)
{
    char err[512];
    int go[2], out[2];
    memset(res, 0, sizeof(*res));
    struct gw_store *s = gw_store_open(url, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "race: %s\n", err);
        return -1;
    }
    struct gw_vkey k = vkey("race", "race-team");
    k.budget_total = 1.00;
    create_key(s, &k);
    gw_store_close(s);
    if (pipe(go) < 0 || pipe(out) < 0)
        return -1;
    fflush(NULL);
    for (int w = 0; w < workers; w++) {
        int n = attempts / workers + (w < attempts % workers);
        pid_t pid = fork();
        if (pid < 0)
            return -1;
        if (pid == 0) {
            close(go[1]);
            close(out[0]);
            race_worker(url, &k, n, go[0], out[1], w);
        }
    }
    close(go[0]);
    close(out[1]);
    usleep(200 * 1000); /* let every worker connect */
    close(go[1]);       /* EOF: everyone starts */
    int counts[3];
    while (read(out[0], counts, sizeof(counts)) == (ssize_t)sizeof(counts)) {
        res->granted += counts[0];
        res->over += counts[1];
        res->errors += counts[2];
    }
    close(out[0]);
    int status, bad = 0;
    while (wait(&status) > 0) {
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bad++;
    }
    s = gw_store_open(url, err, sizeof(err));
    if (!s)
        return -1;
    struct gw_spend_state st;
    if (gw_store_spend_state(s, &k, (int64_t)time(NULL), &st) != GW_STORE_OK)
        bad++;
    res->total = st.key_total;
    gw_store_close(s);
    res->errors += bad;
    return 0;
}

static void test_concurrent_reserve(void **state)
{
    struct backend *b = *state;
    struct race_result res;
    gw_store_close(open_fresh(b)); /* fresh database, migrated */
    assert_int_equal(race(b->url, 2, 40, &res), 0);
    print_message("    %s: 2 workers x 20 reservations of 0.10 on a 1.00 budget: %d granted, "
                  "%d refused, spent %.2f\n",
                  b->kind == BK_POSTGRES ? "postgres" : "sqlite", res.granted, res.over,
                  res.total);
    assert_int_equal(res.errors, 0);
    assert_int_equal(res.granted, 10);
    assert_int_equal(res.over, 30);
    assert_true(res.total <= 1.00 + 0.10 + 1e-9);
    CLOSE(res.total, 1.00);
}

/* ------------------------------------------------------------------ */
/* backend-independent */

static void test_vkey_helpers(void **state)
{
    (void)state;
    struct gw_vkey k = vkey("h", "");
    assert_true(gw_vkey_allows_model(&k, "anything"));
    snprintf(k.allowed_models, sizeof(k.allowed_models), " gpt-4o ,local-coder,, claude ");
    assert_true(gw_vkey_allows_model(&k, "gpt-4o"));
    assert_true(gw_vkey_allows_model(&k, "local-coder"));
    assert_true(gw_vkey_allows_model(&k, "claude"));
    assert_false(gw_vkey_allows_model(&k, "gpt-4"));
    assert_false(gw_vkey_allows_model(&k, "claude "));
    assert_false(gw_vkey_allows_model(&k, ""));
    k.expires_at = 100;
    assert_true(gw_vkey_usable(&k, 99));
    assert_false(gw_vkey_usable(&k, 100));
    k.expires_at = 0;
    k.revoked_at = 5;
    assert_false(gw_vkey_usable(&k, 1));
    const char *ok = "hgw-0123456789abcdefghijABCDEFGHIJ0123456789";
    assert_true(gw_vkey_secret_valid(ok, strlen(ok)));
    assert_false(gw_vkey_secret_valid(ok, strlen(ok) - 1));
    assert_false(gw_vkey_secret_valid("sk-0123456789abcdefghijABCDEFGHIJ0123456789", 44));
    assert_false(gw_vkey_secret_valid("hgw-0123456789abcdefghijABCDEFGHIJ012345678_", 44));
}

static void test_open_errors(void **state)
{
    (void)state;
    char err[512];
    assert_null(gw_store_open("mysql://x", err, sizeof(err)));
    assert_non_null(strstr(err, "unknown database URL"));
    assert_null(gw_store_open("", err, sizeof(err)));
    assert_null(gw_store_open("sqlite://", err, sizeof(err)));
    assert_null(gw_store_open("sqlite:///nonexistent-dir/x/y.db", err, sizeof(err)));
    assert_non_null(strstr(err, "sqlite"));
    /* nothing listens on port 1: the message names the place, not the
     * password (in the userinfo or in the query string) */
    assert_null(gw_store_open("postgres://gw:Sup3rS3cretPw@127.0.0.1:1/ledger?connect_timeout=2",
                              err, sizeof(err)));
    assert_null(strstr(err, "Sup3rS3cretPw"));
    assert_non_null(strstr(err, "postgres://gw:***@127.0.0.1:1/ledger"));
    assert_null(gw_store_open("postgresql://127.0.0.1:1/ledger?user=gw&password=An0therPw%21",
                              err, sizeof(err)));
    assert_null(strstr(err, "An0therPw"));
    assert_non_null(strstr(err, "password=***"));
}

/* A real server refuses a wrong password; the message must not echo it. */
static void test_pg_wrong_password(void **state)
{
    struct backend *b = *state;
    char err[512], url[600];
    const char *u = getenv("HYBRIDGW_TEST_PG_URL");
    const char *scheme = strstr(u, "://");
    const char *at = strchr(u, '@');
    if (!scheme || !at) {
        print_message("    (no user in HYBRIDGW_TEST_PG_URL: wrong-password case skipped)\n");
        return;
    }
    const char *colon = memchr(scheme + 3, ':', (size_t)(at - scheme - 3));
    const char *user_end = colon ? colon : at;
    snprintf(url, sizeof(url), "%.*s:Wr0ngPassw0rd%s", (int)(user_end - u), u, at);
    (void)b;
    assert_null(gw_store_open(url, err, sizeof(err)));
    assert_null(strstr(err, "Wr0ngPassw0rd"));
    print_message("    wrong password: %s\n", err);
}

/* ------------------------------------------------------------------ */

static struct backend file_backend = {.kind = BK_FILE};
static struct backend mem_backend = {.kind = BK_MEMORY};
static struct backend pg_backend = {.kind = BK_POSTGRES};

static int setup_file(void **state)
{
    snprintf(file_backend.dir, sizeof(file_backend.dir), "/tmp/hgw-store-test.XXXXXX");
    if (!mkdtemp(file_backend.dir))
        return -1;
    *state = &file_backend;
    return 0;
}

static int teardown_file(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", file_backend.dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int setup_mem(void **state)
{
    *state = &mem_backend;
    return 0;
}

static int setup_pg(void **state)
{
    *state = &pg_backend;
    return 0;
}

/* The body every backend runs. */
#define STORE_TESTS                                                                     \
    cmocka_unit_test(test_open_migrate), cmocka_unit_test(test_key_lifecycle),          \
        cmocka_unit_test(test_key_list), cmocka_unit_test(test_secret_not_stored),      \
        cmocka_unit_test(test_reserve_arithmetic), cmocka_unit_test(test_team_budget),  \
        cmocka_unit_test(test_team_list), cmocka_unit_test(test_settle_release),        \
        cmocka_unit_test(test_period_rollover), cmocka_unit_test(test_expire),          \
        cmocka_unit_test(test_append_report), cmocka_unit_test(test_rate_sync),         \
        cmocka_unit_test(test_batches), cmocka_unit_test(test_append_charges)

static int concurrency_main(int argc, char **argv)
{
    struct race_result res;
    const char *url = argv[2];
    int workers = argc > 3 ? atoi(argv[3]) : 2;
    int attempts = argc > 4 ? atoi(argv[4]) : 40;
    if (workers < 1 || attempts < workers) {
        fprintf(stderr, "usage: test_store --concurrency URL [WORKERS] [ATTEMPTS]\n");
        return 2;
    }
    if (race(url, workers, attempts, &res) < 0)
        return 1;
    bool ok = res.errors == 0 && res.granted == 10 && fabs(res.total - 1.00) < 1e-9;
    printf("concurrency: %d workers, %d reservations of 0.10 USD on a 1.00 USD budget: "
           "%d granted, %d refused, %d errors; spent %.9f USD (allowed up to 1.10): %s\n",
           workers, attempts, res.granted, res.over, res.errors, res.total, ok ? "ok" : "FAIL");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--concurrency") == 0)
        return concurrency_main(argc, argv);
    const struct CMUnitTest common[] = {
        cmocka_unit_test(test_vkey_helpers),
        cmocka_unit_test(test_open_errors),
    };
    const struct CMUnitTest file_tests[] = {STORE_TESTS, cmocka_unit_test(test_concurrent_reserve)};
    const struct CMUnitTest mem_tests[] = {STORE_TESTS};
    const struct CMUnitTest pg_tests[] = {STORE_TESTS, cmocka_unit_test(test_concurrent_reserve),
                                          cmocka_unit_test(test_pg_wrong_password)};
    int failed = 0;
    failed += cmocka_run_group_tests_name("store", common, NULL, NULL);
    failed += cmocka_run_group_tests_name("store/sqlite-file", file_tests, setup_file,
                                          teardown_file);
    failed += cmocka_run_group_tests_name("store/sqlite-memory", mem_tests, setup_mem, NULL);
    if (getenv("HYBRIDGW_TEST_PG_URL") && *getenv("HYBRIDGW_TEST_PG_URL")) {
        failed += cmocka_run_group_tests_name("store/postgres", pg_tests, setup_pg, NULL);
    } else {
        printf("[  SKIPPED ] store/postgres: %zu tests not run; set HYBRIDGW_TEST_PG_URL "
               "(tests/ledger/run-pg starts a server)\n",
               GW_ARRAY_LEN(pg_tests));
    }
    return failed ? 1 : 0;
}
