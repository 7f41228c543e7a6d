/*
 * store.h - the spend store: virtual API keys, budgets with reservations,
 * and the spend ledger, in SQLite (embedded default, one file in WAL mode)
 * or PostgreSQL (several gateway replicas share one budget: reservations
 * are atomic in the database).
 *
 * Every call here BLOCKS on the database: call it from a store thread or a
 * CLI, never from an event loop. One gw_store is used by one thread at a
 * time (open one per thread). Schema migrations are versioned and applied
 * at open.
 */
#ifndef HYBRIDGW_STORE_H
#define HYBRIDGW_STORE_H

#include "hybridgw/core.h"

enum {
    GW_STORE_OK = 0,
    GW_STORE_ERR = -1,        /* database error: message in the store (gw_store_error) */
    GW_STORE_NOT_FOUND = -2,
    GW_STORE_OVER_BUDGET = -3,/* the reservation does not fit a budget */
    GW_STORE_EXISTS = -4,
};

struct gw_store;

/* url: "sqlite:///abs/path.db", "sqlite://relative.db", "sqlite::memory:",
 * or "postgres://user:pass@host:port/db" / "postgresql://...". Creates the
 * schema or migrates it. NULL with a message (never the password) in err. */
struct gw_store *gw_store_open(const char *url, char *err, size_t errlen);
void gw_store_close(struct gw_store *s);
const char *gw_store_error(const struct gw_store *s);
const char *gw_store_kind(const struct gw_store *s); /* "sqlite" or "postgres" */
int gw_store_schema_version(struct gw_store *s);

/* ---- virtual keys ---- */
#define GW_VKEY_ID_LEN 24
struct gw_vkey {
    char id[GW_VKEY_ID_LEN + 1];   /* "vk_" + 16 hex; what logs and the API show */
    char name[65];
    char team[65];                 /* "" none */
    char prefix[13];               /* first characters of the secret, for humans */
    unsigned char sha256[32];      /* of the secret; the secret is never stored */
    char allowed_models[512];      /* comma-separated model names / aliases; "" = any */
    bool may_force_tier;           /* may send x-hybridgw-tier / model "frontier" */
    int64_t expires_at;            /* unix seconds, 0 = never */
    int64_t created_at;
    int64_t revoked_at;            /* 0 = active */
    char metadata[1024];           /* a JSON object as text, "{}" default */
    /* limits, 0 = none */
    int64_t rpm, tpm, max_concurrent;
    /* budgets in USD, 0 = none */
    double budget_day, budget_month, budget_total;
    bool downgrade;                /* over budget: go local instead of refusing */
};

/* Create a key from k (id, prefix, sha256, created_at are filled in).
 * The secret ("hgw-" + 40 random base62 chars) is written to secret (size
 * >= 64) and exists nowhere else afterwards. */
int gw_store_key_create(struct gw_store *s, struct gw_vkey *k, char *secret, size_t secret_size);
int gw_store_key_get(struct gw_store *s, const char *id, struct gw_vkey *out);
/* By the SHA-256 of a presented secret. NOT_FOUND when unknown. */
int gw_store_key_by_hash(struct gw_store *s, const unsigned char sha256[32], struct gw_vkey *out);
/* Calls cb for each key (revoked included), oldest first. */
int gw_store_key_list(struct gw_store *s, void (*cb)(const struct gw_vkey *k, void *ud), void *ud);
int gw_store_key_revoke(struct gw_store *s, const char *id, int64_t now);
/* New secret for the same key id (the old one stops working at once). */
int gw_store_key_rotate(struct gw_store *s, const char *id, char *secret, size_t secret_size);
/* Replace the mutable fields (name, team, allowed_models, may_force_tier,
 * expires_at, metadata, limits, budgets, downgrade) of key k->id. */
int gw_store_key_update(struct gw_store *s, const struct gw_vkey *k);

/* ---- team budgets ---- */
struct gw_team {
    char name[65];
    double budget_day, budget_month, budget_total;  /* 0 = none */
    int64_t rpm, tpm, max_concurrent;                /* 0 = none */
};
int gw_store_team_put(struct gw_store *s, const struct gw_team *t);
int gw_store_team_get(struct gw_store *s, const char *name, struct gw_team *out);

/* ---- budgets: reserve, settle, release ---- */
/* Spent plus reserved in the current day (UTC), month (UTC) and in total,
 * for a key and for its team. */
struct gw_spend_state {
    double key_day, key_month, key_total;
    double team_day, team_month, team_total;
};
/* Atomically (one transaction; in PostgreSQL with row locks, so several
 * gateways see one budget): check that spent + reserved + max_usd stays
 * within every budget of the key and of its team, and if so record a
 * reservation. OVER_BUDGET otherwise (nothing recorded; *state tells
 * where it stands). rid receives the reservation id (size >= 40). */
int gw_store_reserve(struct gw_store *s, const struct gw_vkey *k, double max_usd, int64_t now,
                     char *rid, size_t rid_size, struct gw_spend_state *state);
/* Turn the reservation into spend of actual_usd (may exceed max_usd). */
int gw_store_settle(struct gw_store *s, const char *rid, double actual_usd, int64_t now);
/* Drop the reservation (the request failed before costing anything). */
int gw_store_release(struct gw_store *s, const char *rid);
/* Reservations older than max_age_s are released (a crashed replica's). */
int gw_store_expire_reservations(struct gw_store *s, int64_t now, int64_t max_age_s);
int gw_store_spend_state(struct gw_store *s, const struct gw_vkey *k, int64_t now,
                         struct gw_spend_state *state);

/* ---- the ledger: one row per request ---- */
struct gw_spend_rec {
    char request_id[68];
    int64_t ts_ms;                 /* unix ms */
    char key_id[GW_VKEY_ID_LEN + 1];  /* "" for static keys */
    char key_name[65];
    char team[65];
    char tier[16];
    char backend[129];
    char model[129];               /* the upstream model */
    char label[33];                /* task label, "" none */
    int status;
    int64_t input_tokens, output_tokens, cached_tokens, cache_write_tokens, reasoning_tokens;
    double cost_usd, counterfactual_usd;
    bool estimated;
    bool charge;                   /* also book cost_usd to the key's (and team's) spend
                                    * totals: a key without budgets, never reserved for */
};
/* Append rows in one transaction (with the charges they carry). */
int gw_store_append(struct gw_store *s, const struct gw_spend_rec *recs, size_t n);

/* Spend report: rows grouped by `by` ("key", "team", "model", "tier",
 * "backend") since unix seconds `since`; cb per group, highest cost first. */
struct gw_spend_row {
    char group[129];
    int64_t requests, input_tokens, output_tokens;
    double cost_usd, counterfactual_usd;
};
int gw_store_spend_report(struct gw_store *s, const char *by, int64_t since,
                          void (*cb)(const struct gw_spend_row *r, void *ud), void *ud);

/* ---- additions (src/ledger) ----
 *
 * Notes on the calls above:
 * - Amounts are kept as integer nano-dollars in the database, so budget
 *   checks are exact: a budget of 1.00 takes ten reservations of 0.10.
 * - gw_store_reserve: on OK, *state (may be NULL) includes the new
 *   reservation; on OVER_BUDGET it is where things stand without it. A
 *   team without a gw_store_team_put row has no budgets but its spend is
 *   still counted. Budgets of the key are taken from *k as passed.
 * - gw_store_settle books actual_usd on the UTC day and month of `now` and
 *   in the total, for the key and for the team recorded at reserve time.
 *   NOT_FOUND when the reservation was settled, released or expired.
 * - gw_store_key_revoke of an already revoked key is OK; NOT_FOUND for an
 *   unknown id. gw_store_key_rotate of a revoked key is GW_STORE_ERR.
 * - gw_store_key_list / gw_store_spend_report read all rows before the
 *   first callback, so a callback may call the store. Keys created in the
 *   same second are listed by id.
 * - "key" in gw_store_spend_report groups by key name.
 */

/* Length of a secret: "hgw-" + 40 base62 characters. */
#define GW_VKEY_SECRET_LEN 44

/* SHA-256 of a presented secret, as gw_store_key_by_hash wants it. */
void gw_vkey_hash(const char *secret, size_t len, unsigned char out[32]);
/* Has the shape of a virtual key secret ("hgw-" + 40 base62)? Lets the
 * request path tell virtual keys from static ones without a lookup. */
bool gw_vkey_secret_valid(const char *secret, size_t len);
/* Neither revoked nor expired at unix time now. */
bool gw_vkey_usable(const struct gw_vkey *k, int64_t now);
/* model is in k->allowed_models (exact names, comma-separated, spaces
 * ignored), or the list is empty. */
bool gw_vkey_allows_model(const struct gw_vkey *k, const char *model);
/* The same test on a list alone ("" allows any model). */
bool gw_models_allow(const char *list, const char *model);

/* Calls cb for each team that has a row (gw_store_team_put), by name. */
int gw_store_team_list(struct gw_store *s, void (*cb)(const struct gw_team *t, void *ud),
                       void *ud);
/* Every key (as gw_store_key_list) / every team row, into one allocated
 * array (*out, NULL when none; free it). */
int gw_store_key_all(struct gw_store *s, struct gw_vkey **out, size_t *n);
int gw_store_team_all(struct gw_store *s, struct gw_team **out, size_t *n);

/* ---- budgets in batches (the request path's store thread) ----
 *
 * The same operations as gw_store_reserve / _settle / _release, many in one
 * transaction: under load a store thread has dozens queued, and one commit
 * (and, in PostgreSQL, one lock and one read per key or team instead of per
 * request) serves them all. Scopes are locked in one order (keys by id, then
 * teams by name) so batches of several replicas never deadlock. */
struct gw_reserve_req {
    const struct gw_vkey *key;      /* id, team, the key's budgets */
    double max_usd;
    int rc;                         /* out: GW_STORE_OK or GW_STORE_OVER_BUDGET */
    char rid[40];                   /* out: the reservation when OK */
    struct gw_spend_state state;    /* out: as gw_store_reserve's */
};
/* In order, each seeing the reservations before it. GW_STORE_OK: committed
 * (every req->rc says how it went); GW_STORE_ERR: nothing was recorded. */
int gw_store_reserve_batch(struct gw_store *s, struct gw_reserve_req *r, size_t n, int64_t now);

struct gw_settle_req {
    char rid[40];                   /* the reservation; "" for a charge without one */
    char key_id[GW_VKEY_ID_LEN + 1];/* a charge's key (with a reservation: filled in) */
    char team[65];                  /* a charge's team, "" none */
    double usd;                     /* booked as spent (0 for a release) */
    bool release;                   /* drop the reservation, book nothing */
    int rc;                         /* out: GW_STORE_OK or GW_STORE_NOT_FOUND */
};
/* Settle, release and charge in one transaction. GW_STORE_OK: committed;
 * GW_STORE_ERR: nothing changed. */
int gw_store_settle_batch(struct gw_store *s, struct gw_settle_req *r, size_t n, int64_t now);

/* ---- rate-limit counts shared between replicas (src/gateway/limits.c) ---- */
#define GW_RATE_SUBJECT_LEN 80      /* "key:" + key id or "team:" + name, NUL included */
/* One second of one subject's counts. */
struct gw_rate_row {
    char subject[GW_RATE_SUBJECT_LEN];
    int64_t sec, requests, tokens;
};
/* One subject's requests running now. */
struct gw_rate_inflight {
    char subject[GW_RATE_SUBJECT_LEN];
    int64_t inflight;
};
/* One round of the exchange, in one transaction: write this replica's rows
 * (absolute values per second, replacing what it wrote before) and in-flight
 * counts (stamped now_ms), then read the other replicas' seconds newer than
 * now - window_s, summed per subject and second, and their in-flight counts
 * stamped within stale_ms, summed per subject. *others / *oinfl are
 * allocated (free them). prune: also delete rows too old to matter. */
int gw_store_rate_sync(struct gw_store *s, const char *replica, int64_t now_ms,
                       const struct gw_rate_row *mine, size_t n,
                       const struct gw_rate_inflight *infl, size_t ninfl, int64_t window_s,
                       int64_t stale_ms, bool prune, struct gw_rate_row **others,
                       size_t *nothers, struct gw_rate_inflight **oinfl, size_t *noinfl);

#endif
