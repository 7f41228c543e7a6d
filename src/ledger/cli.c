/*
 * cli.c - `hybridgw keys ...` and `hybridgw spend ...` (cli.h): manage
 * virtual keys and team budgets in the spend store, and report spend from
 * the ledger.
 *
 * Options may come in any order, as "--opt value" or "--opt=value". Each
 * subcommand accepts only the options that mean something to it; anything
 * else is a usage error (exit 2), so a typo never silently does nothing.
 * Times are UTC.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "hybridgw/core.h"
#include "ledger/cli.h"
#include "ledger/store.h"

#define EXIT_USAGE 2
#define EXIT_DB 1

/* ------------------------------------------------------------------ */
/* options */

enum {
    O_DB = 1 << 0,    /* --db */
    O_JSON = 1 << 1,  /* --json */
    O_KEY = 1 << 2,   /* key fields: --name --team --models --force-tier --expires --metadata
                       * --downgrade */
    O_LIMIT = 1 << 3, /* --rpm --tpm --concurrency --budget-day/month/total */
    O_SPEND = 1 << 4, /* --by --since */
};

enum opt_id {
    OPT_DB = 0,
    OPT_JSON,
    OPT_NAME,
    OPT_TEAM,
    OPT_MODELS,
    OPT_FORCE_TIER,
    OPT_NO_FORCE_TIER,
    OPT_EXPIRES,
    OPT_METADATA,
    OPT_DOWNGRADE,
    OPT_NO_DOWNGRADE,
    OPT_RPM,
    OPT_TPM,
    OPT_CONCURRENCY,
    OPT_BUDGET_DAY,
    OPT_BUDGET_MONTH,
    OPT_BUDGET_TOTAL,
    OPT_BY,
    OPT_SINCE,
    OPT_COUNT
};

static const struct opt_spec {
    const char *name;
    bool value; /* takes a value */
    int group;  /* O_* */
} opt_specs[OPT_COUNT] = {
    [OPT_DB] = {"db", true, O_DB},
    [OPT_JSON] = {"json", false, O_JSON},
    [OPT_NAME] = {"name", true, O_KEY},
    [OPT_TEAM] = {"team", true, O_KEY},
    [OPT_MODELS] = {"models", true, O_KEY},
    [OPT_FORCE_TIER] = {"force-tier", false, O_KEY},
    [OPT_NO_FORCE_TIER] = {"no-force-tier", false, O_KEY},
    [OPT_EXPIRES] = {"expires", true, O_KEY},
    [OPT_METADATA] = {"metadata", true, O_KEY},
    [OPT_DOWNGRADE] = {"downgrade", false, O_KEY},
    [OPT_NO_DOWNGRADE] = {"no-downgrade", false, O_KEY},
    [OPT_RPM] = {"rpm", true, O_LIMIT},
    [OPT_TPM] = {"tpm", true, O_LIMIT},
    [OPT_CONCURRENCY] = {"concurrency", true, O_LIMIT},
    [OPT_BUDGET_DAY] = {"budget-day", true, O_LIMIT},
    [OPT_BUDGET_MONTH] = {"budget-month", true, O_LIMIT},
    [OPT_BUDGET_TOTAL] = {"budget-total", true, O_LIMIT},
    [OPT_BY] = {"by", true, O_SPEND},
    [OPT_SINCE] = {"since", true, O_SPEND},
};

struct opts {
    const char *cmd;             /* "keys create", for messages */
    const char *val[OPT_COUNT];  /* value, or "" for a given flag; NULL = not given */
    const char *pos[4];          /* positional arguments */
    int npos;
};

/* Parse argv[from..] into o, accepting the option groups in `allowed`. */
static int parse_opts(struct opts *o, const char *cmd, int argc, char **argv, int from,
                      int allowed)
{
    memset(o, 0, sizeof(*o));
    o->cmd = cmd;
    bool only_pos = false;
    for (int i = from; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || a[0] != '-' || a[1] != '-') {
            if (!only_pos && a[0] == '-' && a[1]) {
                fprintf(stderr, "hybridgw %s: unknown option %s\n", cmd, a);
                return -1;
            }
            if (o->npos == (int)GW_ARRAY_LEN(o->pos)) {
                fprintf(stderr, "hybridgw %s: too many arguments\n", cmd);
                return -1;
            }
            o->pos[o->npos++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        int id = -1;
        for (int j = 0; j < OPT_COUNT; j++) {
            if (strlen(opt_specs[j].name) == nl && memcmp(opt_specs[j].name, name, nl) == 0)
                id = j;
        }
        if (id < 0 || !(opt_specs[id].group & allowed)) {
            fprintf(stderr, "hybridgw %s: unknown option --%.*s\n", cmd, (int)nl, name);
            return -1;
        }
        if (!opt_specs[id].value) {
            if (eq) {
                fprintf(stderr, "hybridgw %s: --%s takes no value\n", cmd, opt_specs[id].name);
                return -1;
            }
            o->val[id] = "";
        } else if (eq) {
            o->val[id] = eq + 1;
        } else if (i + 1 < argc) {
            o->val[id] = argv[++i];
        } else {
            fprintf(stderr, "hybridgw %s: --%s needs a value\n", cmd, opt_specs[id].name);
            return -1;
        }
    }
    return 0;
}

static int usage_err(const struct opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int usage_err(const struct opts *o, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "hybridgw %s: ", o->cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EXIT_USAGE;
}

/* ---- values ---- */

static bool parse_int(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < 0)
        return false;
    *out = v;
    return true;
}

static bool parse_usd(const char *s, double *out)
{
    char *end;
    if (*s == '$')
        s++;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v < 0 || v > 1e9)
        return false;
    *out = v;
    return true;
}

/* "30d", "12h", "90m", "45s", "2w" -> seconds. */
static bool parse_span(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || v < 0 || errno || !end[0] || end[1])
        return false;
    int64_t unit;
    switch (*end) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = 3600; break;
    case 'd': unit = 86400; break;
    case 'w': unit = 7 * 86400; break;
    default: return false;
    }
    if (v > INT64_MAX / unit / 2)
        return false;
    *out = v * unit;
    return true;
}

static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* "YYYY-MM-DD" -> unix time of its first second (UTC). */
static bool parse_date(const char *s, int64_t *out)
{
    int y, m, d, n = 0;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 || s[n] || n != 10 || y < 1970 ||
        m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (m == 2 && d == 29 && !leap)
        return false;
    *out = days_from_civil(y, m, d) * 86400;
    return true;
}

static void fmt_time(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static struct gw_store *open_db(const struct opts *o, int *rc)
{
    char err[512];
    const char *url = o->val[OPT_DB];
    if (!url || !*url)
        url = getenv("HYBRIDGW_DATABASE_URL");
    if (!url || !*url) {
        fprintf(stderr, "hybridgw %s: no database: pass --db URL or set HYBRIDGW_DATABASE_URL\n",
                o->cmd);
        *rc = EXIT_USAGE;
        return NULL;
    }
    struct gw_store *s = gw_store_open(url, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "hybridgw %s: %s\n", o->cmd, err);
        *rc = EXIT_DB;
    }
    return s;
}

static int store_err(const struct opts *o, struct gw_store *s)
{
    fprintf(stderr, "hybridgw %s: %s\n", o->cmd, gw_store_error(s));
    return EXIT_DB;
}

/* ------------------------------------------------------------------ */
/* key and team fields from options */

static bool copy_field(const struct opts *o, char *dst, size_t size, const char *src,
                       const char *what)
{
    if (strlen(src) >= size) {
        fprintf(stderr, "hybridgw %s: %s is longer than %zu bytes\n", o->cmd, what, size - 1);
        return false;
    }
    memcpy(dst, src, strlen(src) + 1);
    return true;
}

/* The O_LIMIT options into the six limit/budget fields. */
static int apply_limits(const struct opts *o, int64_t *rpm, int64_t *tpm, int64_t *conc,
                        double *bday, double *bmonth, double *btotal)
{
    struct {
        int id;
        int64_t *i;
        double *d;
    } map[] = {
        {OPT_RPM, rpm, NULL},           {OPT_TPM, tpm, NULL},
        {OPT_CONCURRENCY, conc, NULL},  {OPT_BUDGET_DAY, NULL, bday},
        {OPT_BUDGET_MONTH, NULL, bmonth}, {OPT_BUDGET_TOTAL, NULL, btotal},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(map); i++) {
        const char *v = o->val[map[i].id];
        if (!v)
            continue;
        if (map[i].i && !parse_int(v, map[i].i)) {
            fprintf(stderr, "hybridgw %s: --%s wants a whole number >= 0 (0 = no limit), not '%s'\n",
                    o->cmd, opt_specs[map[i].id].name, v);
            return EXIT_USAGE;
        }
        if (map[i].d && !parse_usd(v, map[i].d)) {
            fprintf(stderr, "hybridgw %s: --%s wants USD >= 0 (0 = no budget), not '%s'\n", o->cmd,
                    opt_specs[map[i].id].name, v);
            return EXIT_USAGE;
        }
    }
    return 0;
}

static int apply_key_opts(const struct opts *o, struct gw_vkey *k, int64_t now)
{
    const char *v;
    if ((v = o->val[OPT_NAME])) {
        if (!*v)
            return usage_err(o, "--name must not be empty");
        if (!copy_field(o, k->name, sizeof(k->name), v, "--name"))
            return EXIT_USAGE;
    }
    if ((v = o->val[OPT_TEAM]) && !copy_field(o, k->team, sizeof(k->team), v, "--team"))
        return EXIT_USAGE;
    if ((v = o->val[OPT_MODELS]) &&
        !copy_field(o, k->allowed_models, sizeof(k->allowed_models), v, "--models"))
        return EXIT_USAGE;
    if (o->val[OPT_FORCE_TIER] && o->val[OPT_NO_FORCE_TIER])
        return usage_err(o, "--force-tier and --no-force-tier contradict each other");
    if (o->val[OPT_FORCE_TIER])
        k->may_force_tier = true;
    if (o->val[OPT_NO_FORCE_TIER])
        k->may_force_tier = false;
    if (o->val[OPT_DOWNGRADE] && o->val[OPT_NO_DOWNGRADE])
        return usage_err(o, "--downgrade and --no-downgrade contradict each other");
    if (o->val[OPT_DOWNGRADE])
        k->downgrade = true;
    if (o->val[OPT_NO_DOWNGRADE])
        k->downgrade = false;
    if ((v = o->val[OPT_EXPIRES])) {
        int64_t span, day;
        if (strcmp(v, "never") == 0 || strcmp(v, "0") == 0) {
            k->expires_at = 0;
        } else if (parse_span(v, &span) && span > 0) {
            k->expires_at = now + span;
        } else if (parse_date(v, &day)) {
            /* valid through that date: it expires when the next day starts */
            k->expires_at = day + 86400;
        } else {
            return usage_err(o, "--expires wants 30d, 12h, 2w, YYYY-MM-DD or never, not '%s'", v);
        }
    }
    if ((v = o->val[OPT_METADATA])) {
        json_error_t jerr;
        json_t *j = json_loads(v, 0, &jerr);
        bool obj = j && json_is_object(j);
        json_decref(j);
        if (!obj)
            return usage_err(o, "--metadata wants a JSON object, not '%s'", v);
        if (!copy_field(o, k->metadata, sizeof(k->metadata), v, "--metadata"))
            return EXIT_USAGE;
    }
    return apply_limits(o, &k->rpm, &k->tpm, &k->max_concurrent, &k->budget_day,
                        &k->budget_month, &k->budget_total);
}

/* ------------------------------------------------------------------ */
/* printing */

static const char *key_status(const struct gw_vkey *k, int64_t now)
{
    if (k->revoked_at)
        return "revoked";
    if (k->expires_at && now >= k->expires_at)
        return "expired";
    return "active";
}

static void fmt_usd(double v, char *buf, size_t size)
{
    if (v == 0)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, v >= 0.01 ? "%.2f" : "%.6f", v);
}

static void fmt_int(int64_t v, char *buf, size_t size)
{
    if (v == 0)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%lld", (long long)v);
}

static json_t *limits_json(int64_t rpm, int64_t tpm, int64_t conc, double d, double m, double t)
{
    return json_pack("{s:I, s:I, s:I, s:{s:f, s:f, s:f}}", "rpm", (json_int_t)rpm, "tpm",
                     (json_int_t)tpm, "max_concurrent", (json_int_t)conc, "budget_usd", "day", d,
                     "month", m, "total", t);
}

static json_t *key_json(const struct gw_vkey *k, const struct gw_spend_state *st, int64_t now)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:I, s:I, s:I}", "id", k->id,
                          "name", k->name, "team", k->team, "prefix", k->prefix, "status",
                          key_status(k, now), "allowed_models", k->allowed_models,
                          "may_force_tier", k->may_force_tier, "downgrade", k->downgrade,
                          "created_at", (json_int_t)k->created_at, "expires_at",
                          (json_int_t)k->expires_at, "revoked_at", (json_int_t)k->revoked_at);
    json_t *meta = json_loads(k->metadata, 0, NULL);
    json_object_set_new(j, "metadata", meta ? meta : json_object());
    json_object_set_new(j, "limits",
                        limits_json(k->rpm, k->tpm, k->max_concurrent, k->budget_day,
                                    k->budget_month, k->budget_total));
    if (st)
        json_object_set_new(j, "spend_usd",
                            json_pack("{s:f, s:f, s:f}", "day", st->key_day, "month",
                                      st->key_month, "total", st->key_total));
    return j;
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(12) | JSON_PRESERVE_ORDER);
    if (s)
        puts(s);
    free(s);
    json_decref(j);
}

/* ------------------------------------------------------------------ */
/* keys create / rotate: the only places a secret is ever printed */

static void print_secret(const char *what, const struct gw_vkey *k, const char *secret,
                         bool json)
{
    if (json) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "id", k->id, "name", k->name, "prefix",
                              k->prefix, "secret", secret);
        char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (s) {
            puts(s);
            OPENSSL_cleanse(s, strlen(s));
        }
        free(s);
        json_decref(j); /* jansson's copy of the secret is freed unwiped */
        return;
    }
    printf("%s key %s (%s%s%s)\n", what, k->id, k->name, k->team[0] ? ", team " : "", k->team);
    printf("secret: %s\n", secret);
    printf("This secret is shown once and cannot be recovered; only its SHA-256 is stored. "
           "Save it now.\n");
}

static int keys_create(int argc, char **argv)
{
    struct opts o;
    struct gw_vkey k;
    char secret[64];
    int rc;
    if (parse_opts(&o, "keys create", argc, argv, 2, O_DB | O_JSON | O_KEY | O_LIMIT) < 0)
        return EXIT_USAGE;
    if (o.npos)
        return usage_err(&o, "unexpected argument '%s'", o.pos[0]);
    if (!o.val[OPT_NAME])
        return usage_err(&o, "--name is required");
    memset(&k, 0, sizeof(k));
    if ((rc = apply_key_opts(&o, &k, (int64_t)time(NULL))) != 0)
        return rc;
    struct gw_store *s = open_db(&o, &rc);
    if (!s)
        return rc;
    if (gw_store_key_create(s, &k, secret, sizeof(secret)) != GW_STORE_OK) {
        rc = store_err(&o, s);
    } else {
        print_secret("created", &k, secret, o.val[OPT_JSON] != NULL);
        rc = 0;
    }
    OPENSSL_cleanse(secret, sizeof(secret));
    gw_store_close(s);
    return rc;
}

static int one_id(const struct opts *o)
{
    if (o->npos != 1) {
        fprintf(stderr, "hybridgw %s: exactly one key id is needed (see `hybridgw keys list`)\n",
                o->cmd);
        return EXIT_USAGE;
    }
    return 0;
}

static int keys_rotate(int argc, char **argv)
{
    struct opts o;
    struct gw_vkey k;
    char secret[64];
    int rc;
    if (parse_opts(&o, "keys rotate", argc, argv, 2, O_DB | O_JSON) < 0 || one_id(&o))
        return EXIT_USAGE;
    struct gw_store *s = open_db(&o, &rc);
    if (!s)
        return rc;
    if (gw_store_key_rotate(s, o.pos[0], secret, sizeof(secret)) != GW_STORE_OK ||
        gw_store_key_get(s, o.pos[0], &k) != GW_STORE_OK) {
        rc = store_err(&o, s);
    } else {
        print_secret("rotated", &k, secret, o.val[OPT_JSON] != NULL);
        if (!o.val[OPT_JSON])
            printf("The previous secret of this key no longer works.\n");
        rc = 0;
    }
    OPENSSL_cleanse(secret, sizeof(secret));
    gw_store_close(s);
    return rc;
}

static int keys_revoke(int argc, char **argv)
{
    struct opts o;
    int rc;
    if (parse_opts(&o, "keys revoke", argc, argv, 2, O_DB) < 0 || one_id(&o))
        return EXIT_USAGE;
    struct gw_store *s = open_db(&o, &rc);
    if (!s)
        return rc;
    if (gw_store_key_revoke(s, o.pos[0], (int64_t)time(NULL)) != GW_STORE_OK) {
        rc = store_err(&o, s);
    } else {
        printf("revoked key %s\n", o.pos[0]);
        rc = 0;
    }
    gw_store_close(s);
    return rc;
}

static int keys_update(int argc, char **argv)
{
    struct opts o;
    struct gw_vkey k;
    int rc;
    if (parse_opts(&o, "keys update", argc, argv, 2, O_DB | O_KEY | O_LIMIT) < 0 || one_id(&o))
        return EXIT_USAGE;
    bool any = false;
    for (int i = OPT_NAME; i <= OPT_BUDGET_TOTAL; i++)
        any |= o.val[i] != NULL;
    if (!any)
        return usage_err(&o, "nothing to change (give --name, --team, --budget-day, ...)");
    struct gw_store *s = open_db(&o, &rc);
    if (!s)
        return rc;
    if (gw_store_key_get(s, o.pos[0], &k) != GW_STORE_OK) {
        rc = store_err(&o, s);
    } else if ((rc = apply_key_opts(&o, &k, (int64_t)time(NULL))) != 0) {
        /* usage message printed */
    } else if (gw_store_key_update(s, &k) != GW_STORE_OK) {
        rc = store_err(&o, s);
    } else {
        printf("updated key %s\n", k.id);
        rc = 0;
    }
    gw_store_close(s);
    return rc;
}

/* ---- keys list / show ---- */

struct list_ctx {
    struct gw_store *s;
    const struct opts *o;
    const char *only; /* show: this id */
    json_t *arr;      /* --json */
    int64_t now;
    int n, err;
};

static void on_list_key(const struct gw_vkey *k, void *ud)
{
    struct list_ctx *c = ud;
    struct gw_spend_state st;
    char rpm[24], tpm[24], conc[24], bd[24], bm[24], bt[24], sd[24], sm[24], stt[24];
    if (c->only && strcmp(c->only, k->id) != 0)
        return;
    if (gw_store_spend_state(c->s, k, c->now, &st) != GW_STORE_OK) {
        c->err = store_err(c->o, c->s);
        return;
    }
    c->n++;
    if (c->arr) {
        json_array_append_new(c->arr, key_json(k, &st, c->now));
        return;
    }
    fmt_int(k->rpm, rpm, sizeof(rpm));
    fmt_int(k->tpm, tpm, sizeof(tpm));
    fmt_int(k->max_concurrent, conc, sizeof(conc));
    fmt_usd(k->budget_day, bd, sizeof(bd));
    fmt_usd(k->budget_month, bm, sizeof(bm));
    fmt_usd(k->budget_total, bt, sizeof(bt));
    snprintf(sd, sizeof(sd), "%.4f", st.key_day);
    snprintf(sm, sizeof(sm), "%.4f", st.key_month);
    snprintf(stt, sizeof(stt), "%.4f", st.key_total);
    printf("%-19s  %-16s  %-12s  %-12s  %-7s  %6s %8s %4s  %8s %8s %8s  %9s %9s %9s\n", k->id,
           k->name, k->team[0] ? k->team : "-", k->prefix, key_status(k, c->now), rpm, tpm, conc,
           bd, bm, bt, sd, sm, stt);
    if (c->only) {
        char when[40];
        printf("  models: %s\n", k->allowed_models[0] ? k->allowed_models : "any");
        printf("  may force tier: %s, over budget: %s\n", k->may_force_tier ? "yes" : "no",
               k->downgrade ? "downgrade to local" : "refuse");
        fmt_time(k->created_at, when, sizeof(when));
        printf("  created: %s\n", when);
        if (k->expires_at) {
            fmt_time(k->expires_at, when, sizeof(when));
            printf("  expires: %s\n", when);
        }
        if (k->revoked_at) {
            fmt_time(k->revoked_at, when, sizeof(when));
            printf("  revoked: %s\n", when);
        }
        printf("  metadata: %s\n", k->metadata);
    }
}

static int keys_list(int argc, char **argv, bool show)
{
    struct opts o;
    int rc;
    const char *cmd = show ? "keys show" : "keys list";
    if (parse_opts(&o, cmd, argc, argv, 2, O_DB | O_JSON) < 0)
        return EXIT_USAGE;
    if (show ? one_id(&o) != 0 : o.npos != 0)
        return show ? EXIT_USAGE : usage_err(&o, "unexpected argument '%s'", o.pos[0]);
    struct gw_store *s = open_db(&o, &rc);
    if (!s)
        return rc;
    struct list_ctx c = {s, &o, show ? o.pos[0] : NULL, NULL, (int64_t)time(NULL), 0, 0};
    if (o.val[OPT_JSON])
        c.arr = json_array();
    else
        printf("%-19s  %-16s  %-12s  %-12s  %-7s  %6s %8s %4s  %8s %8s %8s  %9s %9s %9s\n", "ID",
               "NAME", "TEAM", "PREFIX", "STATUS", "RPM", "TPM", "CONC", "BUDGET/D", "BUDGET/M",
               "BUDGET", "SPENT/D", "SPENT/M", "SPENT");
    rc = 0;
    if (gw_store_key_list(s, on_list_key, &c) != GW_STORE_OK)
        rc = store_err(&o, s);
    else if (c.err)
        rc = c.err;
    else if (show && c.n == 0) {
        fprintf(stderr, "hybridgw %s: no such key: %s\n", cmd, o.pos[0]);
        rc = EXIT_DB;
    }
    if (c.arr) {
        if (rc == 0)
            print_json(show ? json_incref(json_array_get(c.arr, 0)) : json_incref(c.arr));
        json_decref(c.arr);
    }
    gw_store_close(s);
    return rc;
}

/* ---- teams ---- */

static int keys_team_set(int argc, char **argv)
{
    struct opts o;
    struct gw_team t;
    int rc;
    if (parse_opts(&o, "keys team-set", argc, argv, 2, O_DB | O_LIMIT) < 0)
        return EXIT_USAGE;
    if (o.npos != 1)
        return usage_err(&o, "exactly one team name is needed");
    if (!*o.pos[0] || strlen(o.pos[0]) >= sizeof(t.name))
        return usage_err(&o, "bad team name '%s' (1-64 bytes)", o.pos[0]);
    struct gw_store *s = open_db(&o, &rc);
    if (!s)
        return rc;
    rc = gw_store_team_get(s, o.pos[0], &t); /* NOT_FOUND: t is a fresh team */
    if (rc == GW_STORE_ERR) {
        rc = store_err(&o, s);
    } else if ((rc = apply_limits(&o, &t.rpm, &t.tpm, &t.max_concurrent, &t.budget_day,
                                  &t.budget_month, &t.budget_total)) != 0) {
        /* usage message printed */
    } else if (gw_store_team_put(s, &t) != GW_STORE_OK) {
        rc = store_err(&o, s);
    } else {
        char bd[24], bm[24], bt[24], rpm[24], tpm[24], conc[24];
        fmt_usd(t.budget_day, bd, sizeof(bd));
        fmt_usd(t.budget_month, bm, sizeof(bm));
        fmt_usd(t.budget_total, bt, sizeof(bt));
        fmt_int(t.rpm, rpm, sizeof(rpm));
        fmt_int(t.tpm, tpm, sizeof(tpm));
        fmt_int(t.max_concurrent, conc, sizeof(conc));
        printf("team %s: budget day %s, month %s, total %s USD; rpm %s, tpm %s, concurrency %s\n",
               t.name, bd, bm, bt, rpm, tpm, conc);
        rc = 0;
    }
    gw_store_close(s);
    return rc;
}

struct teams_ctx {
    struct gw_store *s;
    const struct opts *o;
    json_t *arr;
    int64_t now;
    int err;
};

static void on_team(const struct gw_team *t, void *ud)
{
    struct teams_ctx *c = ud;
    struct gw_vkey probe;
    struct gw_spend_state st;
    /* the team's spend, through a key that is in the team and spent nothing */
    memset(&probe, 0, sizeof(probe));
    memcpy(probe.team, t->name, sizeof(probe.team));
    if (gw_store_spend_state(c->s, &probe, c->now, &st) != GW_STORE_OK) {
        c->err = store_err(c->o, c->s);
        return;
    }
    if (c->arr) {
        json_t *j = json_pack("{s:s}", "name", t->name);
        json_object_set_new(j, "limits",
                            limits_json(t->rpm, t->tpm, t->max_concurrent, t->budget_day,
                                        t->budget_month, t->budget_total));
        json_object_set_new(j, "spend_usd",
                            json_pack("{s:f, s:f, s:f}", "day", st.team_day, "month",
                                      st.team_month, "total", st.team_total));
        json_array_append_new(c->arr, j);
        return;
    }
    char rpm[24], tpm[24], conc[24], bd[24], bm[24], bt[24];
    fmt_int(t->rpm, rpm, sizeof(rpm));
    fmt_int(t->tpm, tpm, sizeof(tpm));
    fmt_int(t->max_concurrent, conc, sizeof(conc));
    fmt_usd(t->budget_day, bd, sizeof(bd));
    fmt_usd(t->budget_month, bm, sizeof(bm));
    fmt_usd(t->budget_total, bt, sizeof(bt));
    printf("%-16s  %6s %8s %4s  %8s %8s %8s  %9.4f %9.4f %9.4f\n", t->name, rpm, tpm, conc, bd,
           bm, bt, st.team_day, st.team_month, st.team_total);
}

static int keys_teams(int argc, char **argv)
{
    struct opts o;
    int rc;
    if (parse_opts(&o, "keys teams", argc, argv, 2, O_DB | O_JSON) < 0)
        return EXIT_USAGE;
    if (o.npos)
        return usage_err(&o, "unexpected argument '%s'", o.pos[0]);
    struct gw_store *s = open_db(&o, &rc);
    if (!s)
        return rc;
    struct teams_ctx c = {s, &o, o.val[OPT_JSON] ? json_array() : NULL, (int64_t)time(NULL), 0};
    if (!c.arr)
        printf("%-16s  %6s %8s %4s  %8s %8s %8s  %9s %9s %9s\n", "TEAM", "RPM", "TPM", "CONC",
               "BUDGET/D", "BUDGET/M", "BUDGET", "SPENT/D", "SPENT/M", "SPENT");
    rc = gw_store_team_list(s, on_team, &c) != GW_STORE_OK ? store_err(&o, s) : c.err;
    if (c.arr) {
        if (rc == 0)
            print_json(json_incref(c.arr));
        json_decref(c.arr);
    }
    gw_store_close(s);
    return rc;
}

static void keys_usage(FILE *f)
{
    fprintf(f,
            "usage:\n"
            "  hybridgw keys create --name N [--team T] [--models a,b] [--force-tier]\n"
            "        [--expires 30d|YYYY-MM-DD] [--rpm N] [--tpm N] [--concurrency N]\n"
            "        [--budget-day USD] [--budget-month USD] [--budget-total USD]\n"
            "        [--downgrade] [--metadata JSON] [--json]\n"
            "                                   print a new key's secret (once) and id\n"
            "  hybridgw keys list [--json]      keys with status, limits, budgets and spend\n"
            "  hybridgw keys show ID [--json]   one key in full\n"
            "  hybridgw keys update ID [create's options, --no-force-tier, --no-downgrade,\n"
            "        --expires never]           change a key (0 = no limit / no budget)\n"
            "  hybridgw keys revoke ID          the key stops working at once\n"
            "  hybridgw keys rotate ID [--json] a new secret for the key; the old one stops\n"
            "  hybridgw keys team-set NAME [--budget-day USD] [--budget-month USD]\n"
            "        [--budget-total USD] [--rpm N] [--tpm N] [--concurrency N]\n"
            "                                   set a team's budgets and limits\n"
            "  hybridgw keys teams [--json]     teams with budgets and spend\n"
            "\n"
            "Every command takes --db URL (sqlite:///path.db, postgres://user:pass@host/db)\n"
            "or reads HYBRIDGW_DATABASE_URL. Budgets are USD per UTC day, month and in total.\n");
}

int gw_cmd_keys(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : NULL;
    if (!sub) {
        keys_usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(sub, "create") == 0)
        return keys_create(argc, argv);
    if (strcmp(sub, "list") == 0)
        return keys_list(argc, argv, false);
    if (strcmp(sub, "show") == 0)
        return keys_list(argc, argv, true);
    if (strcmp(sub, "update") == 0)
        return keys_update(argc, argv);
    if (strcmp(sub, "revoke") == 0)
        return keys_revoke(argc, argv);
    if (strcmp(sub, "rotate") == 0)
        return keys_rotate(argc, argv);
    if (strcmp(sub, "team-set") == 0)
        return keys_team_set(argc, argv);
    if (strcmp(sub, "teams") == 0)
        return keys_teams(argc, argv);
    if (strcmp(sub, "help") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        keys_usage(stdout);
        return 0;
    }
    fprintf(stderr, "hybridgw keys: unknown subcommand '%s'\n\n", sub);
    keys_usage(stderr);
    return EXIT_USAGE;
}

/* ------------------------------------------------------------------ */
/* spend */

struct spend_ctx {
    json_t *arr;
    struct gw_spend_row total;
};

static void on_spend_row(const struct gw_spend_row *r, void *ud)
{
    struct spend_ctx *c = ud;
    const char *g = r->group[0] ? r->group : "(none)";
    double saved = r->counterfactual_usd - r->cost_usd;
    c->total.requests += r->requests;
    c->total.input_tokens += r->input_tokens;
    c->total.output_tokens += r->output_tokens;
    c->total.cost_usd += r->cost_usd;
    c->total.counterfactual_usd += r->counterfactual_usd;
    if (c->arr) {
        json_array_append_new(
            c->arr, json_pack("{s:s, s:I, s:I, s:I, s:f, s:f, s:f}", "group", r->group,
                              "requests", (json_int_t)r->requests, "input_tokens",
                              (json_int_t)r->input_tokens, "output_tokens",
                              (json_int_t)r->output_tokens, "cost_usd", r->cost_usd,
                              "counterfactual_usd", r->counterfactual_usd, "saved_usd", saved));
        return;
    }
    printf("%-32s %9lld %13lld %13lld %12.6f %15.6f %12.6f\n", g, (long long)r->requests,
           (long long)r->input_tokens, (long long)r->output_tokens, r->cost_usd,
           r->counterfactual_usd, saved);
}

static void spend_usage(FILE *f)
{
    fprintf(f, "usage: hybridgw spend --by key|team|model|tier|backend [--since 24h|7d|YYYY-MM-DD|all]\n"
               "                      [--json] [--db URL]\n"
               "Spend from the ledger per group, highest cost first (default --since 30d).\n"
               "saved = what the frontier would have cost (counterfactual) - what it cost.\n");
}

int gw_cmd_spend(int argc, char **argv)
{
    struct opts o;
    int rc;
    int64_t now = (int64_t)time(NULL), since, span;
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        spend_usage(stdout);
        return 0;
    }
    if (parse_opts(&o, "spend", argc, argv, 1, O_DB | O_JSON | O_SPEND) < 0) {
        spend_usage(stderr);
        return EXIT_USAGE;
    }
    if (o.npos)
        return usage_err(&o, "unexpected argument '%s'", o.pos[0]);
    const char *by = o.val[OPT_BY];
    static const char *const groups[] = {"key", "team", "model", "tier", "backend"};
    bool ok = false;
    for (size_t i = 0; by && i < GW_ARRAY_LEN(groups); i++)
        ok |= strcmp(by, groups[i]) == 0;
    if (!ok) {
        fprintf(stderr, "hybridgw spend: %s\n",
                by ? "--by wants key, team, model, tier or backend" : "--by is required");
        spend_usage(stderr);
        return EXIT_USAGE;
    }
    const char *sv = o.val[OPT_SINCE] ? o.val[OPT_SINCE] : "30d";
    if (strcmp(sv, "all") == 0)
        since = 0;
    else if (parse_span(sv, &span))
        since = now - span;
    else if (!parse_date(sv, &since))
        return usage_err(&o, "--since wants 24h, 7d, YYYY-MM-DD or all, not '%s'", sv);
    struct gw_store *s = open_db(&o, &rc);
    if (!s)
        return rc;
    struct spend_ctx c;
    memset(&c, 0, sizeof(c));
    char from[40];
    fmt_time(since, from, sizeof(from));
    if (o.val[OPT_JSON]) {
        c.arr = json_array();
    } else {
        printf("spend by %s since %s\n", by, since ? from : "the beginning");
        printf("%-32s %9s %13s %13s %12s %15s %12s\n", by, "REQUESTS", "INPUT_TOKENS",
               "OUTPUT_TOKENS", "COST_USD", "COUNTERFACT_USD", "SAVED_USD");
    }
    if (gw_store_spend_report(s, by, since, on_spend_row, &c) != GW_STORE_OK) {
        rc = store_err(&o, s);
    } else if (c.arr) {
        json_t *j = json_pack("{s:s, s:I, s:o}", "by", by, "since", (json_int_t)since, "rows",
                              json_incref(c.arr));
        json_object_set_new(
            j, "total",
            json_pack("{s:I, s:I, s:I, s:f, s:f, s:f}", "requests", (json_int_t)c.total.requests,
                      "input_tokens", (json_int_t)c.total.input_tokens, "output_tokens",
                      (json_int_t)c.total.output_tokens, "cost_usd", c.total.cost_usd,
                      "counterfactual_usd", c.total.counterfactual_usd, "saved_usd",
                      c.total.counterfactual_usd - c.total.cost_usd));
        print_json(j);
        rc = 0;
    } else {
        printf("%-32s %9lld %13lld %13lld %12.6f %15.6f %12.6f\n", "TOTAL",
               (long long)c.total.requests, (long long)c.total.input_tokens,
               (long long)c.total.output_tokens, c.total.cost_usd, c.total.counterfactual_usd,
               c.total.counterfactual_usd - c.total.cost_usd);
        rc = 0;
    }
    json_decref(c.arr);
    gw_store_close(s);
    return rc;
}
