/*
 * admin.c - the admin HTTP API for virtual keys and spend, on admin_listen
 * only, behind auth.admin_key (compared in constant time). It runs on the
 * main thread and uses its store connection; the calls are short and rare.
 *
 *   GET  /admin/keys                     every key (never a secret)
 *   POST /admin/keys                     create: {"name", "team", "models":[..],
 *                                        "force_tier", "expires_at", "rpm", "tpm",
 *                                        "max_concurrent", "budget_day",
 *                                        "budget_month", "budget_total",
 *                                        "downgrade", "metadata":{..}}
 *                                        -> 201 with the secret, shown once
 *   GET  /admin/keys/{id}                one key
 *   PATCH /admin/keys/{id}               change what the body names (the create
 *                                        fields); limits and budgets apply to the
 *                                        next request
 *   POST /admin/keys/{id}/revoke         revoke at once on this replica
 *   POST /admin/keys/{id}/rotate         new secret, shown once
 *   GET  /admin/teams                    every team with a row (limits, budgets)
 *   GET  /admin/teams/{name}             one team
 *   PUT  /admin/teams/{name}             set {"rpm", "tpm", "max_concurrent",
 *                                        "budget_day", "budget_month", "budget_total"}
 *                                        (fields left out keep their value)
 *   GET  /admin/spend?by=team&since=86400   report (since: seconds ago)
 *
 * Bodies with a field the endpoint does not know are refused (400), so a
 * typo never passes for a change.
 *
 * A change re-reads the key set at once, so a revoke through this API
 * takes effect on this replica immediately, on the others within a second.
 */
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <jansson.h>

#include "gateway/gateway.h"
#include "ledger/store.h"

static void send_json(struct gw_http_req *req, int status, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (!s) {
        gw_api_send_error(req, 500, "server_error", NULL, NULL, "could not encode the answer");
    } else {
        gw_http_resp_send(req, status, "application/json", s, strlen(s));
    }
    free(s);
    json_decref(j);
}

static void not_allowed(struct gw_http_req *req, const char *allow)
{
    gw_http_resp_header(req, "Allow", allow);
    gw_api_send_error(req, 405, "invalid_request_error", "method_not_allowed", NULL,
                      "Method not allowed here.");
}

static void send_err(struct gw_http_req *req, int status, const char *msg)
{
    gw_api_send_error(req, status, status == 401 ? "authentication_error" : "invalid_request_error",
                      NULL, NULL, msg);
}

static json_t *models_json(const char *list)
{
    json_t *a = json_array();
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n)
            json_array_append_new(a, json_stringn_nocheck(p, n));
        p += n;
        if (*p == ',')
            p++;
    }
    return a;
}

static json_t *key_json(const struct gw_vkey *k)
{
    json_t *meta = json_loads(k->metadata[0] ? k->metadata : "{}", 0, NULL);
    int64_t now = (int64_t)(gw_wall_ns() / 1000000000ull);
    const char *status = k->revoked_at ? "revoked"
                         : (k->expires_at && k->expires_at <= now) ? "expired"
                                                                   : "active";
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, "
                     "s:f, s:b, s:o, s:s}",
                     "id", k->id, "name", k->name, "team", k->team, "prefix", k->prefix,
                     "models", models_json(k->allowed_models), "force_tier", k->may_force_tier,
                     "expires_at", (json_int_t)k->expires_at, "created_at",
                     (json_int_t)k->created_at, "revoked_at", (json_int_t)k->revoked_at, "rpm",
                     (json_int_t)k->rpm, "tpm", (json_int_t)k->tpm, "max_concurrent",
                     (json_int_t)k->max_concurrent, "budget_day", k->budget_day,
                     "budget_month", k->budget_month, "budget_total", k->budget_total,
                     "downgrade", k->downgrade, "metadata", meta ? meta : json_object(),
                     "status", status);
}

static void on_key(const struct gw_vkey *k, void *ud)
{
    json_array_append_new(ud, key_json(k));
}

static void on_row(const struct gw_spend_row *r, void *ud)
{
    json_array_append_new(ud, json_pack("{s:s, s:I, s:I, s:I, s:f, s:f, s:f}", "group", r->group,
                                        "requests", (json_int_t)r->requests, "input_tokens",
                                        (json_int_t)r->input_tokens, "output_tokens",
                                        (json_int_t)r->output_tokens, "cost_usd", r->cost_usd,
                                        "counterfactual_usd", r->counterfactual_usd, "saved_usd",
                                        r->counterfactual_usd - r->cost_usd));
}

static bool admin_authorized(const struct gw_config *cfg, struct gw_http_req *req)
{
    gw_str v = gw_http_req_header(req, "authorization");
    gw_str k = GW_STR_NULL;
    if (v.p && v.len > 7 && gw_str_ieq((gw_str){v.p, 7}, GW_STR("Bearer ")))
        k = (gw_str){v.p + 7, v.len - 7};
    else
        k = gw_http_req_header(req, "x-api-key");
    if (!k.p || !k.len)
        return false;
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)k.p, k.len, d);
    return CRYPTO_memcmp(d, cfg->admin_sha256, sizeof(d)) == 0;
}

/* Is every member of j one of names? err names the first that is not. */
static bool only_fields(json_t *j, const char *const *names, size_t n, char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        bool known = false;
        for (size_t i = 0; i < n && !known; i++)
            known = strcmp(key, names[i]) == 0;
        if (!known) {
            snprintf(err, errlen, "unknown field \"%.64s\"", key);
            return false;
        }
    }
    return true;
}

static const char *const key_fields[] = {
    "name", "team", "models", "force_tier", "expires_at", "rpm", "tpm", "max_concurrent",
    "budget_day", "budget_month", "budget_total", "downgrade", "metadata"};

static json_t *team_json(const struct gw_team *t)
{
    return json_pack("{s:s, s:I, s:I, s:I, s:f, s:f, s:f}", "name", t->name, "rpm",
                     (json_int_t)t->rpm, "tpm", (json_int_t)t->tpm, "max_concurrent",
                     (json_int_t)t->max_concurrent, "budget_day", t->budget_day, "budget_month",
                     t->budget_month, "budget_total", t->budget_total);
}

static void on_team(const struct gw_team *t, void *ud)
{
    json_array_append_new(ud, team_json(t));
}

/* Apply a PUT body to team t; false with a message on a bad field. */
static bool team_from_json(json_t *j, struct gw_team *t, char *err, size_t errlen)
{
    static const char *const ints[] = {"rpm", "tpm", "max_concurrent"};
    static const char *const dbl[] = {"budget_day", "budget_month", "budget_total"};
    static const char *const all[] = {"rpm", "tpm", "max_concurrent", "budget_day",
                                      "budget_month", "budget_total"};
    if (!only_fields(j, all, GW_ARRAY_LEN(all), err, errlen))
        return false;
    int64_t *idst[] = {&t->rpm, &t->tpm, &t->max_concurrent};
    double *ddst[] = {&t->budget_day, &t->budget_month, &t->budget_total};
    for (size_t i = 0; i < GW_ARRAY_LEN(ints); i++) {
        json_t *v = json_object_get(j, ints[i]);
        if (!v)
            continue;
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            snprintf(err, errlen, "%s: expected a non-negative integer", ints[i]);
            return false;
        }
        *idst[i] = (int64_t)json_integer_value(v);
    }
    for (size_t i = 0; i < GW_ARRAY_LEN(dbl); i++) {
        json_t *v = json_object_get(j, dbl[i]);
        if (!v)
            continue;
        if (!json_is_number(v) || json_number_value(v) < 0) {
            snprintf(err, errlen, "%s: expected a non-negative number (USD)", dbl[i]);
            return false;
        }
        *ddst[i] = json_number_value(v);
    }
    return true;
}

/* /admin/teams and /admin/teams/{name}. */
static void teams_route(struct gw_http_req *req, struct gw_gateway *gw, gw_str path, bool get,
                        bool put)
{
    char err[256];
    if (path.len == 12) { /* "/admin/teams" */
        if (!get) {
            not_allowed(req, "GET");
            return;
        }
        json_t *arr = json_array();
        if (gw_store_team_list(gw->store, on_team, arr) != GW_STORE_OK) {
            json_decref(arr);
            send_err(req, 503, "the ledger database did not answer");
            return;
        }
        send_json(req, 200, json_pack("{s:o}", "teams", arr));
        return;
    }
    struct gw_team t;
    char name[sizeof(t.name)];
    size_t nl = path.len - 13;
    if (path.p[12] != '/' || nl == 0 || nl >= sizeof(name) || memchr(path.p + 13, '/', nl)) {
        send_err(req, 404, "no such team (names are 1 to 64 bytes)");
        return;
    }
    memcpy(name, path.p + 13, nl);
    name[nl] = '\0';
    if (!get && !put) {
        not_allowed(req, "GET, PUT");
        return;
    }
    int rc = gw_store_team_get(gw->store, name, &t); /* NOT_FOUND: a fresh team */
    if (rc == GW_STORE_ERR) {
        send_err(req, 503, "the ledger database did not answer");
        return;
    }
    if (get) {
        if (rc == GW_STORE_NOT_FOUND)
            send_err(req, 404, "no such team");
        else
            send_json(req, 200, team_json(&t));
        return;
    }
    gw_str body = gw_http_req_body(req);
    if (gw_admin_team_body(body.p, body.len, &t, err, sizeof(err)) < 0) {
        send_err(req, 400, err);
        return;
    }
    if (gw_store_team_put(gw->store, &t) != GW_STORE_OK) {
        send_err(req, 503, "could not store the team");
        return;
    }
    gw_keys_refresh_now();
    send_json(req, rc == GW_STORE_NOT_FOUND ? 201 : 200, team_json(&t));
}

/* Fill k's settable fields from a JSON body; message in err on a bad one. */
static bool key_from_json(json_t *j, struct gw_vkey *k, char *err, size_t errlen)
{
    json_t *v;
    static const struct {
        const char *key;
        size_t off, size;
        bool required;
    } strs[] = {
        {"name", offsetof(struct gw_vkey, name), sizeof(((struct gw_vkey *)0)->name), true},
        {"team", offsetof(struct gw_vkey, team), sizeof(((struct gw_vkey *)0)->team), false},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(strs); i++) {
        v = json_object_get(j, strs[i].key);
        if (!v)
            continue;
        if (!json_is_string(v)) {
            snprintf(err, errlen, "%s: expected a string", strs[i].key);
            return false;
        }
        size_t n = json_string_length(v);
        if ((strs[i].required && n == 0) || n >= strs[i].size) {
            snprintf(err, errlen, "%s: 1 to %zu bytes", strs[i].key, strs[i].size - 1);
            return false;
        }
        memcpy((char *)k + strs[i].off, json_string_value(v), n + 1);
    }
    static const char *const bools[] = {"force_tier", "downgrade"};
    for (size_t i = 0; i < GW_ARRAY_LEN(bools); i++) {
        v = json_object_get(j, bools[i]);
        if (v && !json_is_boolean(v)) {
            snprintf(err, errlen, "%s: expected true or false", bools[i]);
            return false;
        }
    }
    if ((v = json_object_get(j, "models"))) {
        if (!json_is_array(v)) {
            snprintf(err, errlen, "models: expected a list of model names");
            return false;
        }
        k->allowed_models[0] = '\0';
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m) {
            if (!json_is_string(m) || json_string_length(m) == 0 ||
                strchr(json_string_value(m), ',')) {
                snprintf(err, errlen, "models[%zu]: expected a model name (no commas)", i);
                return false;
            }
            size_t l = strlen(k->allowed_models);
            if (l + json_string_length(m) + 2 > sizeof(k->allowed_models)) {
                snprintf(err, errlen, "models: at most %zu bytes in all",
                         sizeof(k->allowed_models) - 1);
                return false;
            }
            snprintf(k->allowed_models + l, sizeof(k->allowed_models) - l, "%s%s", l ? "," : "",
                     json_string_value(m));
        }
    }
    if ((v = json_object_get(j, "force_tier")))
        k->may_force_tier = json_is_true(v);
    if ((v = json_object_get(j, "downgrade")))
        k->downgrade = json_is_true(v);
    static const char *const ints[] = {"expires_at", "rpm", "tpm", "max_concurrent"};
    int64_t *idst[] = {&k->expires_at, &k->rpm, &k->tpm, &k->max_concurrent};
    for (size_t i = 0; i < GW_ARRAY_LEN(ints); i++) {
        v = json_object_get(j, ints[i]);
        if (!v)
            continue;
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            snprintf(err, errlen, "%s: expected a non-negative integer", ints[i]);
            return false;
        }
        *idst[i] = (int64_t)json_integer_value(v);
    }
    static const char *const dbl[] = {"budget_day", "budget_month", "budget_total"};
    double *ddst[] = {&k->budget_day, &k->budget_month, &k->budget_total};
    for (size_t i = 0; i < GW_ARRAY_LEN(dbl); i++) {
        v = json_object_get(j, dbl[i]);
        if (!v)
            continue;
        if (!json_is_number(v) || json_number_value(v) < 0) {
            snprintf(err, errlen, "%s: expected a non-negative number (USD)", dbl[i]);
            return false;
        }
        *ddst[i] = json_number_value(v);
    }
    if ((v = json_object_get(j, "metadata"))) {
        if (!json_is_object(v)) {
            snprintf(err, errlen, "metadata: expected an object");
            return false;
        }
        char *s = json_dumps(v, JSON_COMPACT);
        if (!s || strlen(s) >= sizeof(k->metadata)) {
            free(s);
            snprintf(err, errlen, "metadata: at most %zu bytes", sizeof(k->metadata) - 1);
            return false;
        }
        snprintf(k->metadata, sizeof(k->metadata), "%s", s);
        free(s);
    }
    return true;
}

int gw_admin_key_body(const char *body, size_t len, bool create, struct gw_vkey *k, char *err,
                      size_t errlen)
{
    json_t *j = json_loadb(body ? body : "", body ? len : 0, 0, NULL);
    bool ok = json_is_object(j) && (!create || json_is_string(json_object_get(j, "name")));
    if (!ok)
        snprintf(err, errlen, create ? "expected a JSON object with at least a name"
                                     : "expected a JSON object of the fields to change");
    ok = ok && only_fields(j, key_fields, GW_ARRAY_LEN(key_fields), err, errlen) &&
         key_from_json(j, k, err, errlen);
    json_decref(j);
    return ok ? 0 : -1;
}

int gw_admin_team_body(const char *body, size_t len, struct gw_team *t, char *err,
                       size_t errlen)
{
    json_t *j = json_loadb(body ? body : "", body ? len : 0, 0, NULL);
    bool ok = json_is_object(j);
    if (!ok)
        snprintf(err, errlen, "expected a JSON object of limits and budgets");
    ok = ok && team_from_json(j, t, err, errlen);
    json_decref(j);
    return ok ? 0 : -1;
}

void gw_admin_keys_handle(struct gw_http_req *req, struct gw_gateway *gw)
{
    const struct gw_config *cfg = gw->cfg;
    if (!cfg->has_admin_key || !gw->store) {
        send_err(req, 404, "The admin API is off: it needs auth.admin_key and ledger.database.");
        return;
    }
    if (!admin_authorized(cfg, req)) {
        send_err(req, 401, "Admin API key missing or incorrect.");
        return;
    }
    gw_str path = gw_http_req_path(req);
    gw_str m = gw_http_req_method(req);
    bool get = gw_str_eq_c(m, "GET"), post = gw_str_eq_c(m, "POST");
    bool put = gw_str_eq_c(m, "PUT"), patch = gw_str_eq_c(m, "PATCH");
    char secret[96];
    char err[256];
    if (gw_str_eq_c(path, "/admin/keys")) {
        if (get) {
            json_t *arr = json_array();
            if (gw_store_key_list(gw->store, on_key, arr) != GW_STORE_OK) {
                json_decref(arr);
                send_err(req, 503, "the ledger database did not answer");
                return;
            }
            send_json(req, 200, json_pack("{s:o}", "keys", arr));
            return;
        }
        if (!post) {
            gw_http_resp_header(req, "Allow", "GET, POST");
            send_err(req, 405, "Use GET or POST.");
            return;
        }
        gw_str body = gw_http_req_body(req);
        struct gw_vkey k;
        memset(&k, 0, sizeof(k));
        snprintf(k.metadata, sizeof(k.metadata), "{}");
        if (gw_admin_key_body(body.p, body.len, true, &k, err, sizeof(err)) < 0) {
            send_err(req, 400, err);
            return;
        }
        if (gw_store_key_create(gw->store, &k, secret, sizeof(secret)) != GW_STORE_OK) {
            send_err(req, 503, "could not create the key");
            return;
        }
        json_t *out = key_json(&k);
        json_object_set_new(out, "secret", json_string(secret));
        OPENSSL_cleanse(secret, sizeof(secret));
        gw_keys_refresh_now();
        send_json(req, 201, out);
        return;
    }
    const char *prefix = "/admin/keys/";
    size_t pl = strlen(prefix);
    if (path.len > pl && memcmp(path.p, prefix, pl) == 0) {
        char id[64], action[32] = "";
        gw_str rest = {path.p + pl, path.len - pl};
        const char *slash = memchr(rest.p, '/', rest.len);
        size_t idl = slash ? (size_t)(slash - rest.p) : rest.len;
        if (idl == 0 || idl >= sizeof(id)) {
            send_err(req, 404, "no such key");
            return;
        }
        memcpy(id, rest.p, idl);
        id[idl] = '\0';
        if (slash)
            snprintf(action, sizeof(action), "%.*s", (int)(rest.len - idl - 1), slash + 1);
        struct gw_vkey k;
        int rc = gw_store_key_get(gw->store, id, &k);
        if (rc == GW_STORE_NOT_FOUND) {
            send_err(req, 404, "no such key");
            return;
        }
        if (rc != GW_STORE_OK) {
            send_err(req, 503, "the ledger database did not answer");
            return;
        }
        if (!action[0] && patch) {
            gw_str body = gw_http_req_body(req);
            if (gw_admin_key_body(body.p, body.len, false, &k, err, sizeof(err)) < 0) {
                send_err(req, 400, err);
                return;
            }
            if (k.revoked_at) {
                send_err(req, 409, "the key is revoked");
                return;
            }
            if (gw_store_key_update(gw->store, &k) != GW_STORE_OK) {
                send_err(req, 503, "could not update the key");
                return;
            }
            gw_keys_refresh_now();
            gw_store_key_get(gw->store, id, &k);
            send_json(req, 200, key_json(&k));
            return;
        }
        if (!action[0]) {
            if (get)
                send_json(req, 200, key_json(&k));
            else
                not_allowed(req, "GET, PATCH");
            return;
        }
        if (!post && (strcmp(action, "revoke") == 0 || strcmp(action, "rotate") == 0)) {
            not_allowed(req, "POST");
            return;
        }
        if (post && strcmp(action, "revoke") == 0) {
            if (gw_store_key_revoke(gw->store, id, (int64_t)(gw_wall_ns() / 1000000000ull)) !=
                GW_STORE_OK) {
                send_err(req, 503, "could not revoke the key");
                return;
            }
            gw_keys_refresh_now();
            gw_store_key_get(gw->store, id, &k);
            send_json(req, 200, key_json(&k));
            return;
        }
        if (post && strcmp(action, "rotate") == 0) {
            if (gw_store_key_rotate(gw->store, id, secret, sizeof(secret)) != GW_STORE_OK) {
                send_err(req, 409, "could not rotate the key (is it revoked?)");
                return;
            }
            gw_keys_refresh_now();
            gw_store_key_get(gw->store, id, &k);
            json_t *out = key_json(&k);
            json_object_set_new(out, "secret", json_string(secret));
            OPENSSL_cleanse(secret, sizeof(secret));
            send_json(req, 200, out);
            return;
        }
        send_err(req, 404, "unknown admin action");
        return;
    }
    if (path.len >= 12 && memcmp(path.p, "/admin/teams", 12) == 0 &&
        (path.len == 12 || path.p[12] == '/')) {
        teams_route(req, gw, path, get, put);
        return;
    }
    if (gw_str_eq_c(path, "/admin/spend") && !get) {
        not_allowed(req, "GET");
        return;
    }
    if (gw_str_eq_c(path, "/admin/spend")) {
        char by[16] = "key";
        int64_t since_s = 86400;
        gw_str q = gw_http_req_query(req);
        char qs[256];
        snprintf(qs, sizeof(qs), "%.*s", (int)GW_MIN(q.len, sizeof(qs) - 1), q.p ? q.p : "");
        char *save, *kv = strtok_r(qs, "&", &save);
        for (; kv; kv = strtok_r(NULL, "&", &save)) {
            if (strncmp(kv, "by=", 3) == 0)
                snprintf(by, sizeof(by), "%s", kv + 3);
            else if (strncmp(kv, "since=", 6) == 0) {
                char *end;
                errno = 0;
                since_s = strtoll(kv + 6, &end, 10);
                if (errno || *end || end == kv + 6 || since_s > 100LL * 365 * 86400)
                    since_s = -1; /* refused below */
            }
        }
        static const char *const groups[] = {"key", "team", "model", "tier", "backend"};
        bool ok = false;
        for (size_t i = 0; i < GW_ARRAY_LEN(groups); i++)
            ok = ok || strcmp(by, groups[i]) == 0;
        if (!ok || since_s < 0) {
            send_err(req, 400, "by must be key, team, model, tier or backend; since a number of "
                               "seconds (0 to 100 years)");
            return;
        }
        json_t *rows = json_array();
        int64_t since = (int64_t)(gw_wall_ns() / 1000000000ull) - since_s;
        if (gw_store_spend_report(gw->store, by, since, on_row, rows) != GW_STORE_OK) {
            json_decref(rows);
            send_err(req, 503, "the ledger database did not answer");
            return;
        }
        send_json(req, 200, json_pack("{s:s, s:I, s:o}", "by", by, "since", (json_int_t)since,
                                      "rows", rows));
        return;
    }
    send_err(req, 404, "Not found. The admin API serves /admin/keys, /admin/teams and /admin/spend.");
}
