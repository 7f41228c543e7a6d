/*
 * config.c - load the gateway's YAML configuration into an immutable,
 * refcounted snapshot (struct gw_config, see hybridgw/config.h).
 *
 * What it does: parse the file with libyaml's document API, interpolate
 * ${VAR} / ${VAR:-default} in every scalar value it interprets, check every
 * mapping against the schema (unknown keys and duplicate keys are errors, so
 * a typo never silently falls back to a default), validate and normalise
 * each field, resolve provider names and model -> backend references, and
 * hash plain auth keys with SHA-256 so the snapshot never holds them.
 *
 * What it does not do: log (callers decide what to say, e.g. the warning for
 * "no auth keys"), watch the file, or attach runtime state to backends
 * (gw_backend_conf.targets is set by the gateway module, which owns the
 * objects it points to).
 *
 * Every error is one line, "file:line: dotted.field: problem", and never
 * contains a configured value that could be a secret: URLs, keys and
 * api_key values are not echoed, only key names, enum-like words (tiers,
 * provider names) and environment variable names.
 *
 * Sections that are accepted but not active yet (backends.*.price,
 * router.{classifier,min_confidence,routes,rules,spill,fallback}, telemetry,
 * ledger) are only checked for well-formedness (shape, duplicate keys,
 * nesting depth); their scalars are not interpolated, so an unset ${VAR} in
 * an inactive section is not an error yet.
 *
 * Mapping keys are taken literally: interpolation applies to values only.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <yaml.h>

#include "hybridgw/config.h"
#include "provider/provider.h"
#include "router/classifier.h"

/* ------------------------------------------------------------------------
 * Limits of the loader itself
 * ------------------------------------------------------------------------ */

#define MAX_FILE_BYTES (4u << 20)    /* a config file is small; refuse more */
#define MAX_DEPTH 32                 /* nesting inside ignored sections */
#define MAX_VISITS 1000000ul         /* node visits; bounds alias expansion */
#define MAX_NAME 128                 /* backend, model and key names */
#define MAX_VAR_NAME 128             /* ${NAME} */
#define MAX_WORKERS 64
#define MAX_DURATION_MS (24ull * 3600 * 1000)
#define PATH_MAX_LEN 256             /* dotted field paths in messages */

/* Process-wide: every successful load gets the next generation number. */
static atomic_uint_fast64_t g_generation;

/* ------------------------------------------------------------------------
 * Tiers
 * ------------------------------------------------------------------------ */

static const char *const tier_names[] = {"local", "frontier"};
_Static_assert(GW_ARRAY_LEN(tier_names) == GW_TIER_COUNT, "tier names");

const char *gw_tier_str(enum gw_tier t)
{
    return (unsigned)t < GW_TIER_COUNT ? tier_names[t] : "?";
}

int gw_tier_parse(const char *s)
{
    if (!s)
        return -1;
    for (int i = 0; i < GW_TIER_COUNT; i++)
        if (strcmp(s, tier_names[i]) == 0)
            return i;
    return -1;
}

/* ------------------------------------------------------------------------
 * Small string helpers (ASCII only, locale independent)
 * ------------------------------------------------------------------------ */

static bool is_digit(int ch)
{
    return ch >= '0' && ch <= '9';
}

static bool is_alpha(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool is_alnum(int ch)
{
    return is_alpha(ch) || is_digit(ch);
}

static bool is_xdigit(int ch)
{
    return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int hex_val(int ch)
{
    if (is_digit(ch))
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return ch - 'A' + 10;
}

/* Copy at most cap-1 bytes of s[0..len) into buf for an error message:
 * non-printable bytes become '?', and a cut is marked with "...". cap must
 * be at least 4. */
static const char *shown(const char *s, size_t len, char *buf, size_t cap)
{
    size_t o = 0;
    size_t max = cap - 4;
    for (size_t i = 0; i < len; i++) {
        if (o >= max) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        unsigned char ch = (unsigned char)s[i];
        buf[o++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    buf[o] = '\0';
    return buf;
}

static void pathf(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void pathf(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0)
        out[0] = '\0';
}

/* Names that clients send (model), that go into response headers and metric
 * labels (backend), or into logs (key names): 1..128 characters out of
 * letters, digits and "-._:/@+". */
static bool valid_name(const char *s, size_t len)
{
    if (len == 0 || len > MAX_NAME)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!is_alnum(ch) && !strchr("-._:/@+", ch))
            return false;
    }
    return true;
}

/* Levenshtein distance for "did you mean" hints; short strings only. */
static size_t edit_distance(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    size_t row[65];
    if (alen > 64 || blen > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= blen; j++)
        row[j] = j;
    for (size_t i = 1; i <= alen; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= blen; j++) {
            size_t up = row[j];
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = diag + cost;
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[blen];
}

/* ------------------------------------------------------------------------
 * ${VAR} interpolation
 * ------------------------------------------------------------------------ */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        b->p = gw_realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sbuf_wipe(struct sbuf *b)
{
    if (b->p)
        OPENSSL_cleanse(b->p, b->cap);
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static char *interp_fail(struct sbuf *b, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static char *interp_fail(struct sbuf *b, char *err, size_t errlen, const char *fmt, ...)
{
    /* The partial result may already hold a secret from the environment. */
    sbuf_wipe(b);
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

/*
 * Grammar, applied left to right:
 *   $$                  a literal '$'
 *   ${NAME}             the variable's value; an error when it is unset
 *                       (set but empty gives "")
 *   ${NAME:-default}    the value, or default when unset or empty; the
 *                       default is literal text up to the first '}' and may
 *                       not contain "${"
 *   $ followed by anything else is a literal '$'.
 * NAME is [A-Za-z_][A-Za-z0-9_]*. Messages never include the value or the
 * text around the reference. They name the variable when its name is well
 * formed, except that with secret set a broken reference is not named: in a
 * key, "${abc" may be part of the key rather than a reference.
 */
static char *interpolate(const char *s, char *err, size_t errlen, bool secret)
{
    struct sbuf b = {0};
    if (err && errlen)
        err[0] = '\0';
    if (!s)
        return interp_fail(&b, err, errlen, "no string");
    sbuf_add(&b, "", 0);
    const char *p = s;
    while (*p) {
        const char *dollar = strchr(p, '$');
        if (!dollar) {
            sbuf_add(&b, p, strlen(p));
            break;
        }
        sbuf_add(&b, p, (size_t)(dollar - p));
        p = dollar;
        if (p[1] == '$') {
            sbuf_add(&b, "$", 1);
            p += 2;
            continue;
        }
        if (p[1] != '{') {
            sbuf_add(&b, "$", 1);
            p += 1;
            continue;
        }
        const char *name = p + 2;
        const char *q = name;
        if (!is_alpha((unsigned char)*q) && *q != '_')
            return interp_fail(&b, err, errlen,
                               "bad ${...}: expected ${NAME} or ${NAME:-default} "
                               "with NAME made of letters, digits and '_'");
        while (is_alnum((unsigned char)*q) || *q == '_')
            q++;
        size_t nlen = (size_t)(q - name);
        if (nlen > MAX_VAR_NAME)
            return interp_fail(&b, err, errlen, "bad ${...}: variable name longer than %d",
                               MAX_VAR_NAME);
        char vname[MAX_VAR_NAME + 1];
        memcpy(vname, name, nlen);
        vname[nlen] = '\0';

        const char *def = NULL;
        size_t dlen = 0;
        if (secret && *q != '}' && !(q[0] == ':' && q[1] == '-' && strchr(q, '}')))
            return interp_fail(&b, err, errlen,
                               "bad ${...}: expected ${NAME} or ${NAME:-default} (the name is "
                               "not shown in a secret value; write $$ for a literal $)");
        if (*q == '}') {
            q++;
        } else if (q[0] == ':' && q[1] == '-') {
            def = q + 2;
            const char *end = strchr(def, '}');
            if (!end)
                return interp_fail(&b, err, errlen, "bad ${%s:-...}: missing '}'", vname);
            dlen = (size_t)(end - def);
            for (size_t i = 0; i + 1 < dlen; i++)
                if (def[i] == '$' && def[i + 1] == '{')
                    return interp_fail(&b, err, errlen,
                                       "bad ${%s:-...}: nested ${ } is not supported", vname);
            q = end + 1;
        } else if (*q == '\0') {
            return interp_fail(&b, err, errlen, "bad ${%s: missing '}'", vname);
        } else {
            return interp_fail(&b, err, errlen,
                               "bad ${%s...}: expected '}' or ':-default}' after the name",
                               vname);
        }

        const char *val = getenv(vname);
        if (def) {
            if (val && *val)
                sbuf_add(&b, val, strlen(val));
            else
                sbuf_add(&b, def, dlen);
        } else {
            if (!val)
                return interp_fail(&b, err, errlen, "environment variable %s is not set "
                                   "(use ${%s:-} to allow it to be unset)", vname, vname);
            sbuf_add(&b, val, strlen(val));
        }
        p = q;
    }
    return b.p;
}

char *gw_config_interpolate(const char *s, char *err, size_t errlen)
{
    return interpolate(s, err, errlen, false);
}

/* ------------------------------------------------------------------------
 * Address and URL checks. They return NULL when fine, else a problem
 * description that never quotes the input.
 * ------------------------------------------------------------------------ */

/* Parse up to 5 digits as a port in 0..65535. */
static const char *parse_port(const char *s, size_t len, long *port)
{
    long v = 0;
    if (len == 0 || len > 5)
        return "bad port (expected 0..65535)";
    for (size_t i = 0; i < len; i++) {
        if (!is_digit((unsigned char)s[i]))
            return "bad port (expected 0..65535)";
        v = v * 10 + (s[i] - '0');
    }
    if (v > 65535)
        return "bad port (expected 0..65535)";
    *port = v;
    return NULL;
}

static bool host_char(int ch)
{
    return is_alnum(ch) || ch == '-' || ch == '.' || ch == '_';
}

/* "host:port" where host is a name, an IPv4 address or "[IPv6]". On success
 * *hostlen is the length of the host part and *port the port (0 allowed:
 * an ephemeral port, for tests). */
static const char *listen_problem(const char *s, size_t *hostlen, long *port)
{
    const char *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb == s + 1)
            return "bad [IPv6] address (expected host:port)";
        for (const char *p = s + 1; p < rb; p++)
            if (!is_xdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return "bad [IPv6] address (expected host:port)";
        colon = rb + 1;
        if (*colon != ':')
            return "expected host:port";
    } else {
        colon = strrchr(s, ':');
        if (!colon || colon == s)
            return "expected host:port, e.g. 0.0.0.0:8080";
        for (const char *p = s; p < colon; p++)
            if (!host_char((unsigned char)*p))
                return "bad host (expected host:port, e.g. 0.0.0.0:8080)";
    }
    *hostlen = (size_t)(colon - s);
    return parse_port(colon + 1, strlen(colon + 1), port);
}

static bool wildcard_host(const char *s, size_t len)
{
    return (len == 7 && memcmp(s, "0.0.0.0", 7) == 0) || (len == 4 && memcmp(s, "[::]", 4) == 0);
}

/* Would binding both addresses collide? Same string, or same non-zero port
 * with equal hosts or a wildcard on either side. */
static bool listen_conflict(const char *a, const char *b)
{
    size_t alen, blen;
    long aport, bport;
    if (listen_problem(a, &alen, &aport) || listen_problem(b, &blen, &bport))
        return strcmp(a, b) == 0;
    if (aport != bport || aport == 0)
        return false;
    if (alen == blen && strncasecmp(a, b, alen) == 0)
        return true;
    return wildcard_host(a, alen) || wildcard_host(b, blen);
}

/* http(s)://host[:port][/path], no userinfo, query or fragment. Strips
 * trailing slashes in place. */
static const char *url_problem(char *u)
{
    const char *rest;
    if (strncasecmp(u, "http://", 7) == 0)
        rest = u + 7;
    else if (strncasecmp(u, "https://", 8) == 0)
        rest = u + 8;
    else
        return "not an http(s) URL (expected http(s)://host[:port][/path])";
    size_t alen = strcspn(rest, "/");
    const char *path = rest + alen;
    for (const char *p = u; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= 0x20 || ch >= 0x7f)
            return "URL contains spaces or non-ASCII characters";
        if (ch == '?' || ch == '#')
            return "URL must not have a query or fragment";
    }
    if (memchr(rest, '@', alen))
        return "URL must not contain credentials (use api_key)";
    if (alen == 0)
        return "URL has no host";
    const char *hp = rest;
    const char *hend;
    if (*hp == '[') {
        const char *rb = memchr(hp, ']', alen);
        if (!rb || rb == hp + 1)
            return "URL has a bad [IPv6] host";
        for (const char *p = hp + 1; p < rb; p++)
            if (!is_xdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return "URL has a bad [IPv6] host";
        hend = rb + 1;
        if (hend < path && *hend != ':')
            return "URL has a bad [IPv6] host";
    } else {
        hend = hp;
        while (hend < path && *hend != ':')
            hend++;
        if (hend == hp)
            return "URL has no host";
        for (const char *p = hp; p < hend; p++)
            if (!host_char((unsigned char)*p))
                return "URL has a bad host name";
    }
    if (hend < path) { /* ":port" */
        long port;
        if (parse_port(hend + 1, (size_t)(path - hend - 1), &port) || port == 0)
            return "URL has a bad port (expected 1..65535)";
    }
    size_t len = strlen(u);
    while (len > (size_t)(path - u) && u[len - 1] == '/')
        u[--len] = '\0';
    return NULL;
}

/* ------------------------------------------------------------------------
 * Loader state, errors and node helpers
 * ------------------------------------------------------------------------ */

struct ld {
    const char *name;       /* file name for messages */
    yaml_document_t *doc;
    char *err;
    size_t errlen;          /* 0: caller wants no message */
    unsigned long visits;   /* bounded by MAX_VISITS */
    yaml_node_t *fallback_nodes[GW_TIER_COUNT][16]; /* checked once backends are in */
    yaml_node_t *cost_node;
};

static unsigned long node_line(const yaml_node_t *n)
{
    return n ? (unsigned long)n->start_mark.line + 1 : 1;
}

/* Write "name:line: path: problem" and return GW_ERR. An empty path leaves
 * the field out. */
static int fail(struct ld *ld, const yaml_node_t *at, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct ld *ld, const yaml_node_t *at, const char *path, const char *fmt, ...)
{
    if (!ld->errlen)
        return GW_ERR;
    int n;
    if (path && *path)
        n = snprintf(ld->err, ld->errlen, "%s:%lu: %s: ", ld->name, node_line(at), path);
    else
        n = snprintf(ld->err, ld->errlen, "%s:%lu: ", ld->name, node_line(at));
    if (n >= 0 && (size_t)n < ld->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err + n, ld->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return GW_ERR;
}

static yaml_node_t *node_at(struct ld *ld, int idx)
{
    return yaml_document_get_node(ld->doc, idx);
}

static const char *type_name(const yaml_node_t *n)
{
    switch (n ? n->type : YAML_NO_NODE) {
    case YAML_SCALAR_NODE:
        return "a scalar";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_MAPPING_NODE:
        return "a mapping";
    default:
        return "nothing";
    }
}

static bool scalar_is(const yaml_node_t *n, const char *s)
{
    size_t len = strlen(s);
    return n && n->type == YAML_SCALAR_NODE && n->data.scalar.length == len &&
           memcmp(n->data.scalar.value, s, len) == 0;
}

/* A YAML null: an empty or ~/null plain scalar (a missing value). */
static bool is_null(const yaml_node_t *n)
{
    if (!n)
        return true;
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    return n->data.scalar.length == 0 || scalar_is(n, "~") || scalar_is(n, "null") ||
           scalar_is(n, "Null") || scalar_is(n, "NULL");
}

static const char *scalar_ptr(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static size_t npairs(const yaml_node_t *map)
{
    return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

static size_t nitems(const yaml_node_t *seq)
{
    return (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

/* "parent.key" with the key made printable. */
static void path_key(char *out, const char *parent, const yaml_node_t *key)
{
    char k[72];
    shown(scalar_ptr(key), key->data.scalar.length, k, sizeof(k));
    if (parent && *parent)
        pathf(out, PATH_MAX_LEN, "%s.%s", parent, k);
    else
        pathf(out, PATH_MAX_LEN, "%s", k);
}

/* Count work; aliases can make a small document expand exponentially. */
static int visit(struct ld *ld, const yaml_node_t *at, const char *path, size_t n)
{
    ld->visits += n;
    if (ld->visits > MAX_VISITS)
        return fail(ld, at, path, "document too large (aliases expand to more than %lu nodes)",
                    MAX_VISITS);
    return GW_OK;
}

struct keyref {
    const unsigned char *p;
    size_t len;
    size_t idx;  /* position in the mapping */
};

static int keyref_cmp(const void *a, const void *b)
{
    const struct keyref *x = a, *y = b;
    size_t n = GW_MIN(x->len, y->len);
    int c = n ? memcmp(x->p, y->p, n) : 0;
    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : (x->idx > y->idx);
}

/* Duplicate keys are errors (libyaml keeps both). Reports the earliest
 * repetition in document order. Keys are known to be scalars. */
static int check_dups(struct ld *ld, yaml_node_t *map, const char *path)
{
    size_t n = npairs(map);
    if (n < 2)
        return GW_OK;
    struct keyref *v = gw_malloc(n * sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *k = node_at(ld, map->data.mapping.pairs.start[i].key);
        v[i] = (struct keyref){k->data.scalar.value, k->data.scalar.length, i};
    }
    qsort(v, n, sizeof(*v), keyref_cmp);
    size_t dup = SIZE_MAX, first = 0;
    for (size_t i = 1, run = 0; i < n; i++) {
        if (v[i].len == v[run].len && (v[i].len == 0 || !memcmp(v[i].p, v[run].p, v[i].len))) {
            if (v[i].idx < dup) {
                dup = v[i].idx;
                first = v[run].idx;
            }
        } else {
            run = i;
        }
    }
    free(v);
    if (dup == SIZE_MAX)
        return GW_OK;
    const yaml_node_t *k = node_at(ld, map->data.mapping.pairs.start[dup].key);
    const yaml_node_t *k0 = node_at(ld, map->data.mapping.pairs.start[first].key);
    char kp[PATH_MAX_LEN];
    path_key(kp, path, k);
    return fail(ld, k, kp, "duplicate key (first defined on line %lu)", node_line(k0));
}

/* Check that map is a mapping with string keys and no duplicates; when
 * allowed is given, also that every key is one of allowed[]. */
static int check_map(struct ld *ld, yaml_node_t *map, const char *path,
                     const char *const *allowed, size_t nallowed)
{
    if (map->type != YAML_MAPPING_NODE)
        return fail(ld, map, path, "expected a mapping, got %s", type_name(map));
    if (visit(ld, map, path, npairs(map) + 1))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = node_at(ld, p->key);
        if (!k || k->type != YAML_SCALAR_NODE)
            return fail(ld, k, path, "mapping keys must be strings, got %s", type_name(k));
    }
    if (check_dups(ld, map, path))
        return GW_ERR;
    if (!allowed)
        return GW_OK;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        const yaml_node_t *k = node_at(ld, p->key);
        const char *best = NULL;
        size_t best_d = SIZE_MAX;
        bool ok = false;
        for (size_t i = 0; i < nallowed && !ok; i++) {
            if (scalar_is(k, allowed[i])) {
                ok = true;
            } else {
                size_t d = edit_distance(scalar_ptr(k), k->data.scalar.length, allowed[i]);
                if (d < best_d) {
                    best_d = d;
                    best = allowed[i];
                }
            }
        }
        if (ok)
            continue;
        char kp[PATH_MAX_LEN];
        path_key(kp, path, k);
        if (best && best_d <= 2 && best_d < k->data.scalar.length)
            return fail(ld, k, kp, "unknown key (did you mean \"%s\"?)", best);
        return fail(ld, k, kp, "unknown key");
    }
    return GW_OK;
}

/* The interpolated text of scalar v, malloc'd, in *out. secret: the value
 * is a key (see interpolate()). */
static int get_scalar(struct ld *ld, const yaml_node_t *v, const char *path, char **out,
                      bool secret)
{
    *out = NULL;
    if (!v || v->type != YAML_SCALAR_NODE)
        return fail(ld, v, path, "expected a string, got %s", type_name(v));
    if (visit(ld, v, path, 1))
        return GW_ERR;
    if (memchr(v->data.scalar.value, '\0', v->data.scalar.length))
        return fail(ld, v, path, "contains a NUL character");
    char *raw = gw_strndup(scalar_ptr(v), v->data.scalar.length);
    char ierr[256];
    char *s = interpolate(raw, ierr, sizeof(ierr), secret);
    OPENSSL_cleanse(raw, v->data.scalar.length);
    free(raw);
    if (!s)
        return fail(ld, v, path, "%s", ierr);
    *out = s;
    return GW_OK;
}

static int get_str(struct ld *ld, const yaml_node_t *v, const char *path, char **out)
{
    return get_scalar(ld, v, path, out, false);
}

/* Replace *dst with the value of v; empty values are errors unless allowed. */
static int set_str(struct ld *ld, const yaml_node_t *v, const char *path, char **dst,
                   bool allow_empty)
{
    char *s;
    if (get_str(ld, v, path, &s))
        return GW_ERR;
    if (!allow_empty && !*s) {
        free(s);
        return fail(ld, v, path, "must not be empty");
    }
    free(*dst);
    *dst = s;
    return GW_OK;
}

static int get_size(struct ld *ld, const yaml_node_t *v, const char *path, uint64_t *dst)
{
    char *s;
    uint64_t x;
    if (get_str(ld, v, path, &s))
        return GW_ERR;
    int rc = gw_parse_size(s, &x);
    free(s);
    if (rc)
        return fail(ld, v, path, "not a size (use e.g. 8MiB, 32KiB, 1MB or a number of bytes)");
    if (x == 0)
        return fail(ld, v, path, "must be greater than 0");
    *dst = x;
    return GW_OK;
}

static int get_duration(struct ld *ld, const yaml_node_t *v, const char *path, uint64_t *dst,
                        bool allow_zero)
{
    char *s;
    uint64_t x;
    if (get_str(ld, v, path, &s))
        return GW_ERR;
    int rc = gw_parse_duration_ms(s, &x);
    free(s);
    if (rc)
        return fail(ld, v, path, "not a duration (use e.g. 250ms, 10s, 2m, 1h)");
    if (x == 0 && !allow_zero)
        return fail(ld, v, path, "must be greater than 0 (at least 1ms)");
    if (x > MAX_DURATION_MS)
        return fail(ld, v, path, "must be at most 24h");
    *dst = x;
    return GW_OK;
}

static int get_uint(struct ld *ld, const yaml_node_t *v, const char *path, uint64_t *dst,
                    uint64_t min, uint64_t max)
{
    char *s;
    if (get_str(ld, v, path, &s))
        return GW_ERR;
    uint64_t x = 0;
    bool ok = *s != '\0';
    for (const char *p = s; *p && ok; p++) {
        if (!is_digit((unsigned char)*p) || x > (UINT64_MAX - 9) / 10)
            ok = false;
        else
            x = x * 10 + (uint64_t)(*p - '0');
    }
    free(s);
    if (!ok || x < min || x > max)
        return fail(ld, v, path, "must be an integer from %" PRIu64 " to %" PRIu64, min, max);
    *dst = x;
    return GW_OK;
}

static int get_double(struct ld *ld, const yaml_node_t *v, const char *path, double *dst,
                      double min, double max)
{
    char *s, *end;
    if (get_str(ld, v, path, &s))
        return GW_ERR;
    errno = 0;
    double x = strtod(s, &end);
    bool ok = *s && !*end && !errno && x >= min && x <= max;
    free(s);
    if (!ok)
        return fail(ld, v, path, "must be a number from %g to %g", min, max);
    *dst = x;
    return GW_OK;
}

static int get_bool(struct ld *ld, const yaml_node_t *v, const char *path, bool *dst)
{
    char *s;
    if (get_str(ld, v, path, &s))
        return GW_ERR;
    int r = strcmp(s, "true") == 0 ? 1 : strcmp(s, "false") == 0 ? 0 : -1;
    free(s);
    if (r < 0)
        return fail(ld, v, path, "must be true or false");
    *dst = r == 1;
    return GW_OK;
}

/* ------------------------------------------------------------------------
 * Freeing
 * ------------------------------------------------------------------------ */

static void free_secret(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void backend_free(struct gw_backend_conf *b)
{
    free(b->name);
    free(b->provider_name);
    for (size_t i = 0; i < b->nurls; i++)
        free(b->urls[i]);
    free(b->urls);
    /* The targets array is ours once attached, but the gw_target objects
     * belong to the gateway module, which frees them before it drops its
     * reference; only the array of pointers is released here. */
    free(b->targets);
    free(b->model);
    free_secret(b->api_key);
    free(b->health_path);
}

static void config_free(struct gw_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nrules; i++) {
        struct gw_rule *r = &c->rules[i];
        free(r->name);
        free(r->key);
        free(r->equals);
        free(r->regex);
        free(r->backend);
        pcre2_code_free(r->code);
    }
    free(c->rules);
    free(c->cost_reference);
    free_secret(c->ledger_url);
    free(c->otlp_endpoint);
    for (size_t i = 0; i < c->notlp_headers; i++) {
        free(c->otlp_header_names[i]);
        free_secret(c->otlp_header_values[i]);
    }
    free(c->otlp_header_names);
    free(c->otlp_header_values);
    free(c->service_name);
    free(c->environment);
    free(c->classifier);
    gw_classifier_free(c->classifier_model);
    for (size_t i = 0; i < c->nroutes; i++)
        free(c->route_labels[i]);
    free(c->route_labels);
    free(c->route_tiers);
    free(c->path);
    free(c->listen);
    free(c->admin_listen);
    for (size_t i = 0; i < c->nkeys; i++)
        free(c->keys[i].name);
    if (c->keys)
        OPENSSL_cleanse(c->keys, c->nkeys * sizeof(*c->keys));
    free(c->keys);
    for (size_t i = 0; i < c->nbackends; i++)
        backend_free(&c->backends[i]);
    free(c->backends);
    for (size_t i = 0; i < c->nmodels; i++) {
        free(c->models[i].name);
        free(c->models[i].backend_name);
    }
    free(c->models);
    for (int t = 0; t < GW_TIER_COUNT; t++) {
        for (size_t i = 0; i < c->nfallback[t]; i++)
            free(c->fallback[t][i]);
        free(c->fallback[t]);
    }
    free(c->access_log);
    free(c->log_level);
    free(c);
}

/* ------------------------------------------------------------------------
 * Sections
 * ------------------------------------------------------------------------ */

static unsigned auto_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > MAX_WORKERS ? MAX_WORKERS : (unsigned)n;
}

static int parse_workers(struct ld *ld, const yaml_node_t *v, const char *path, unsigned *dst)
{
    char *s;
    if (get_str(ld, v, path, &s))
        return GW_ERR;
    bool is_auto = strcmp(s, "auto") == 0;
    free(s);
    if (is_auto) {
        *dst = auto_workers();
        return GW_OK;
    }
    uint64_t n;
    if (get_uint(ld, v, path, &n, 1, MAX_WORKERS))
        return fail(ld, v, path, "must be auto or an integer from 1 to %d", MAX_WORKERS);
    *dst = (unsigned)n;
    return GW_OK;
}

static int parse_limits(struct ld *ld, yaml_node_t *map, struct gw_config *c)
{
    static const char *const keys[] = {
        "max_body_bytes", "max_header_bytes", "max_headers",      "header_timeout",
        "body_timeout",   "idle_timeout",     "shutdown_timeout", "write_high_water",
    };
    if (check_map(ld, map, "limits", keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char path[PATH_MAX_LEN];
        path_key(path, "limits", k);
        if (is_null(v))
            continue;
        int rc;
        uint64_t n;
        if (scalar_is(k, "max_body_bytes"))
            rc = get_size(ld, v, path, &c->max_body_bytes);
        else if (scalar_is(k, "max_header_bytes"))
            rc = get_size(ld, v, path, &c->max_header_bytes);
        else if (scalar_is(k, "write_high_water"))
            rc = get_size(ld, v, path, &c->write_high_water);
        else if (scalar_is(k, "max_headers")) {
            rc = get_uint(ld, v, path, &n, 1, 10000);
            if (!rc)
                c->max_headers = (unsigned)n;
        } else if (scalar_is(k, "header_timeout"))
            rc = get_duration(ld, v, path, &c->header_timeout_ms, false);
        else if (scalar_is(k, "body_timeout"))
            rc = get_duration(ld, v, path, &c->body_timeout_ms, false);
        else if (scalar_is(k, "idle_timeout"))
            rc = get_duration(ld, v, path, &c->idle_timeout_ms, false);
        else
            rc = get_duration(ld, v, path, &c->shutdown_timeout_ms, false);
        if (rc)
            return GW_ERR;
    }
    return GW_OK;
}

static int parse_sha256_hex(const char *s, unsigned char out[32])
{
    if (strlen(s) != 64)
        return GW_EPARSE;
    for (size_t i = 0; i < 32; i++) {
        int hi = (unsigned char)s[2 * i], lo = (unsigned char)s[2 * i + 1];
        if (!is_xdigit(hi) || !is_xdigit(lo))
            return GW_EPARSE;
        out[i] = (unsigned char)(hex_val(hi) << 4 | hex_val(lo));
    }
    return GW_OK;
}

static int sha256(const char *s, size_t len, unsigned char out[32])
{
    unsigned int olen = 0;
    if (!EVP_Digest(s, len, out, &olen, EVP_sha256(), NULL) || olen != 32)
        return GW_ERR;
    return GW_OK;
}

static int parse_key(struct ld *ld, yaml_node_t *item, const char *path, struct gw_config *c)
{
    static const char *const keys[] = {"name", "key", "sha256", "force_tier"};
    struct gw_key_conf *kc = &c->keys[c->nkeys];
    const yaml_node_t *vkey = NULL, *vhash = NULL, *vname = NULL, *vforce = NULL;
    char sub[PATH_MAX_LEN];

    if (check_map(ld, item, path, keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = item->data.mapping.pairs.start; p < item->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        if (is_null(v))
            continue;
        if (scalar_is(k, "name"))
            vname = v;
        else if (scalar_is(k, "key"))
            vkey = v;
        else if (scalar_is(k, "force_tier"))
            vforce = v;
        else
            vhash = v;
    }
    pathf(sub, sizeof(sub), "%s.name", path);
    if (!vname)
        return fail(ld, item, sub, "missing (every key needs a name for the logs)");
    char *name;
    if (get_str(ld, vname, sub, &name))
        return GW_ERR;
    if (!valid_name(name, strlen(name))) {
        free(name);
        return fail(ld, vname, sub, "must be 1-%d characters of letters, digits and -._:/@+",
                    MAX_NAME);
    }
    for (size_t i = 0; i < c->nkeys; i++) {
        if (strcmp(c->keys[i].name, name) == 0) {
            free(name);
            return fail(ld, vname, sub, "duplicate key name (also auth.keys[%zu])", i);
        }
    }
    if (vkey && vhash) {
        free(name);
        return fail(ld, item, path, "has both key and sha256; give one");
    }
    if (!vkey && !vhash) {
        free(name);
        return fail(ld, item, path, "needs key (plain, hashed at load) or sha256 (64 hex digits)");
    }

    unsigned char digest[32];
    char *s;
    if (vkey) {
        pathf(sub, sizeof(sub), "%s.key", path);
        if (get_scalar(ld, vkey, sub, &s, true)) {
            free(name);
            return GW_ERR;
        }
        size_t len = strlen(s);
        int rc = len ? sha256(s, len, digest) : GW_EPARSE;
        free_secret(s);
        if (rc) {
            free(name);
            return fail(ld, vkey, sub, len ? "cannot hash the key" : "must not be empty");
        }
    } else {
        pathf(sub, sizeof(sub), "%s.sha256", path);
        if (get_str(ld, vhash, sub, &s)) {
            free(name);
            return GW_ERR;
        }
        int rc = parse_sha256_hex(s, digest);
        free_secret(s);
        if (rc) {
            free(name);
            return fail(ld, vhash, sub, "must be 64 hex digits (a SHA-256 digest)");
        }
    }
    for (size_t i = 0; i < c->nkeys; i++) {
        if (memcmp(c->keys[i].sha256, digest, 32) == 0) {
            OPENSSL_cleanse(digest, sizeof(digest));
            free(name);
            return fail(ld, vkey ? vkey : vhash, path, "same key as auth.keys[%zu] (%s)", i,
                        c->keys[i].name);
        }
    }
    if (vforce) {
        pathf(sub, sizeof(sub), "%s.force_tier", path);
        if (get_bool(ld, vforce, sub, &kc->may_force_tier)) {
            OPENSSL_cleanse(digest, sizeof(digest));
            free(name);
            return GW_ERR;
        }
    }
    kc->name = name;
    memcpy(kc->sha256, digest, 32);
    OPENSSL_cleanse(digest, sizeof(digest));
    c->nkeys++;
    return GW_OK;
}

static int parse_auth(struct ld *ld, yaml_node_t *map, struct gw_config *c)
{
    static const char *const keys[] = {"keys", "admin_key", "admin_sha256"};
    if (check_map(ld, map, "auth", keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    yaml_node_t *seq = NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        if (scalar_is(k, "keys")) {
            seq = v;
            continue;
        }
        if (is_null(v))
            continue;
        char path[PATH_MAX_LEN];
        path_key(path, "auth", k);
        char *s;
        if (scalar_is(k, "admin_key")) {
            if (get_scalar(ld, v, path, &s, true))
                return GW_ERR;
            if (*s) {
                if (sha256(s, strlen(s), c->admin_sha256)) {
                    free_secret(s);
                    return fail(ld, v, path, "cannot hash the key");
                }
                c->has_admin_key = true;
            }
            free_secret(s);
        } else {
            if (get_str(ld, v, path, &s))
                return GW_ERR;
            int rc = parse_sha256_hex(s, c->admin_sha256);
            free_secret(s);
            if (rc)
                return fail(ld, v, path, "must be 64 hex digits (a SHA-256 digest)");
            c->has_admin_key = true;
        }
    }
    if (is_null(seq))
        return GW_OK;
    if (seq->type != YAML_SEQUENCE_NODE)
        return fail(ld, seq, "auth.keys", "expected a list, got %s", type_name(seq));
    size_t n = nitems(seq);
    if (visit(ld, seq, "auth.keys", n))
        return GW_ERR;
    c->keys = gw_calloc(n, sizeof(*c->keys));
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX_LEN];
        pathf(path, sizeof(path), "auth.keys[%zu]", i);
        if (parse_key(ld, node_at(ld, seq->data.sequence.items.start[i]), path, c))
            return GW_ERR;
    }
    return GW_OK;
}

static int parse_urls(struct ld *ld, yaml_node_t *k, yaml_node_t *v, const char *path,
                      struct gw_backend_conf *b)
{
    bool list = scalar_is(k, "urls");
    size_t n = 1;
    if (list) {
        if (v->type != YAML_SEQUENCE_NODE)
            return fail(ld, v, path, "expected a list of URLs, got %s", type_name(v));
        n = nitems(v);
        if (n == 0)
            return fail(ld, v, path, "must list at least one URL");
        if (visit(ld, v, path, n))
            return GW_ERR;
    }
    b->urls = gw_calloc(n, sizeof(*b->urls));
    for (size_t i = 0; i < n; i++) {
        char sub[PATH_MAX_LEN];
        const yaml_node_t *item = v;
        if (list) {
            pathf(sub, sizeof(sub), "%s[%zu]", path, i);
            item = node_at(ld, v->data.sequence.items.start[i]);
        } else {
            pathf(sub, sizeof(sub), "%s", path);
        }
        char *u;
        if (get_str(ld, item, sub, &u))
            return GW_ERR;
        const char *problem = url_problem(u);
        if (problem) {
            free(u);
            return fail(ld, item, sub, "%s", problem);
        }
        for (size_t j = 0; j < b->nurls; j++) {
            if (strcmp(b->urls[j], u) == 0) {
                free(u);
                return fail(ld, item, sub, "same URL listed twice");
            }
        }
        b->urls[b->nurls++] = u;
    }
    return GW_OK;
}

static int parse_timeouts(struct ld *ld, yaml_node_t *map, const char *path,
                          struct gw_backend_conf *b)
{
    static const char *const keys[] = {"connect", "first_byte", "stream_idle", "request"};
    bool set[3] = {false, false, false}; /* connect, first_byte, stream_idle */
    if (check_map(ld, map, path, keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, path, k);
        if (is_null(v))
            continue;
        uint64_t *dst = &b->request_timeout_ms;
        if (scalar_is(k, "connect")) {
            dst = &b->connect_timeout_ms;
            set[0] = true;
        } else if (scalar_is(k, "first_byte")) {
            dst = &b->first_byte_timeout_ms;
            set[1] = true;
        } else if (scalar_is(k, "stream_idle")) {
            dst = &b->stream_idle_timeout_ms;
            set[2] = true;
        }
        if (get_duration(ld, v, sub, dst, false))
            return GW_ERR;
    }
    /* A phase longer than the whole request could never fire: that is an
     * error when it was written down, and a default is lowered to fit. */
    static const struct {
        const char *name;
        size_t off;
    } phases[] = {
        {"connect", offsetof(struct gw_backend_conf, connect_timeout_ms)},
        {"first_byte", offsetof(struct gw_backend_conf, first_byte_timeout_ms)},
        {"stream_idle", offsetof(struct gw_backend_conf, stream_idle_timeout_ms)},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(phases); i++) {
        uint64_t ms;
        memcpy(&ms, (const char *)b + phases[i].off, sizeof(ms));
        if (ms > b->request_timeout_ms && !set[i]) {
            ms = b->request_timeout_ms;
            memcpy((char *)b + phases[i].off, &ms, sizeof(ms));
        } else if (ms > b->request_timeout_ms) {
            char sub[PATH_MAX_LEN];
            pathf(sub, sizeof(sub), "%s.%s", path, phases[i].name);
            return fail(ld, map, sub, "longer than %s.request", path);
        }
    }
    return GW_OK;
}

static int parse_health(struct ld *ld, yaml_node_t *map, const char *path,
                        struct gw_backend_conf *b)
{
    static const char *const keys[] = {"path", "interval", "fail_threshold"};
    if (check_map(ld, map, path, keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, path, k);
        if (is_null(v))
            continue;
        if (scalar_is(k, "path")) {
            if (set_str(ld, v, sub, &b->health_path, false))
                return GW_ERR;
            for (const char *q = b->health_path; *q; q++)
                if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
                    return fail(ld, v, sub, "must not contain spaces or non-ASCII characters");
            if (b->health_path[0] != '/')
                return fail(ld, v, sub, "must start with '/'");
        } else if (scalar_is(k, "interval")) {
            if (get_duration(ld, v, sub, &b->health_interval_ms, true))
                return GW_ERR;
        } else {
            uint64_t n;
            if (get_uint(ld, v, sub, &n, 1, 1000))
                return GW_ERR;
            b->fail_threshold = (unsigned)n;
        }
    }
    return GW_OK;
}

/* features: [images, tools] */
static int parse_features(struct ld *ld, yaml_node_t *v, const char *path,
                          struct gw_backend_conf *b)
{
    if (v->type != YAML_SEQUENCE_NODE)
        return fail(ld, v, path, "expected a list of images, tools");
    b->images = b->tools = false;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++) {
        yaml_node_t *n = node_at(ld, *it);
        if (scalar_is(n, "images"))
            b->images = true;
        else if (scalar_is(n, "tools"))
            b->tools = true;
        else
            return fail(ld, n, path, "unknown feature (known: images, tools)");
    }
    return GW_OK;
}

/* price: { per_mtok: { input, output, cache_read, cache_write } } and/or
 * { gpu_hourly_usd, replicas, output_weight, min_tokens_per_hour } */
static int parse_price(struct ld *ld, yaml_node_t *map, const char *path,
                       struct gw_backend_conf *b)
{
    static const char *const keys[] = {"per_mtok", "gpu_hourly_usd", "replicas",
                                       "output_weight", "min_tokens_per_hour"};
    static const char *const mkeys[] = {"input", "output", "cache_read", "cache_write"};
    if (check_map(ld, map, path, keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, path, k);
        if (is_null(v))
            continue;
        int rc = GW_OK;
        if (scalar_is(k, "per_mtok")) {
            if (check_map(ld, v, sub, mkeys, GW_ARRAY_LEN(mkeys)))
                return GW_ERR;
            double *dst[] = {&b->price_input, &b->price_output, &b->price_cache_read,
                             &b->price_cache_write};
            for (yaml_node_pair_t *q = v->data.mapping.pairs.start;
                 q < v->data.mapping.pairs.top; q++) {
                yaml_node_t *mk = node_at(ld, q->key), *mv = node_at(ld, q->value);
                char msub[PATH_MAX_LEN];
                path_key(msub, sub, mk);
                for (size_t i = 0; i < GW_ARRAY_LEN(mkeys); i++)
                    if (scalar_is(mk, mkeys[i]) && get_double(ld, mv, msub, dst[i], 0, 1e6))
                        return GW_ERR;
            }
            if (b->price_input < 0 || b->price_output < 0)
                return fail(ld, v, sub, "needs at least input and output");
        } else if (scalar_is(k, "gpu_hourly_usd")) {
            rc = get_double(ld, v, sub, &b->gpu_hourly_usd, 0, 1e6);
        } else if (scalar_is(k, "replicas")) {
            uint64_t n;
            rc = get_uint(ld, v, sub, &n, 1, 100000);
            b->replicas = (unsigned)n;
        } else if (scalar_is(k, "output_weight")) {
            rc = get_double(ld, v, sub, &b->output_weight, 0, 1000);
        } else {
            rc = get_uint(ld, v, sub, &b->min_tokens_per_hour, 1, UINT64_C(1) << 50);
        }
        if (rc)
            return GW_ERR;
    }
    return GW_OK;
}

static int parse_retry(struct ld *ld, yaml_node_t *map, const char *path,
                       struct gw_backend_conf *b)
{
    static const char *const keys[] = {"attempts", "backoff", "max_backoff"};
    if (check_map(ld, map, path, keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, path, k);
        if (is_null(v))
            continue;
        if (scalar_is(k, "attempts")) {
            uint64_t n;
            if (get_uint(ld, v, sub, &n, 0, 10))
                return GW_ERR;
            b->retry_attempts = (unsigned)n;
        } else if (scalar_is(k, "backoff")) {
            if (get_duration(ld, v, sub, &b->retry_backoff_ms, true))
                return GW_ERR;
        } else if (get_duration(ld, v, sub, &b->retry_max_backoff_ms, true)) {
            return GW_ERR;
        }
    }
    if (b->retry_backoff_ms > b->retry_max_backoff_ms)
        return fail(ld, map, path, "backoff is longer than max_backoff");
    return GW_OK;
}

static int parse_circuit(struct ld *ld, yaml_node_t *map, const char *path,
                         struct gw_backend_conf *b)
{
    static const char *const keys[] = {"failures", "window", "cooldown"};
    if (check_map(ld, map, path, keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, path, k);
        if (is_null(v))
            continue;
        if (scalar_is(k, "failures")) {
            uint64_t n;
            if (get_uint(ld, v, sub, &n, 1, 100000))
                return GW_ERR;
            b->circuit_failures = (unsigned)n;
        } else if (scalar_is(k, "window")) {
            if (get_duration(ld, v, sub, &b->circuit_window_ms, false))
                return GW_ERR;
        } else if (get_duration(ld, v, sub, &b->circuit_cooldown_ms, false)) {
            return GW_ERR;
        }
    }
    return GW_OK;
}

static bool reserved_name(const char *s)
{
    return strcasecmp(s, "auto") == 0 || strcasecmp(s, "local") == 0 ||
           strcasecmp(s, "frontier") == 0;
}

static int parse_backend(struct ld *ld, yaml_node_t *kname, yaml_node_t *map,
                         struct gw_backend_conf *b)
{
    static const char *const keys[] = {
        "tier",           "provider",          "url",      "urls",   "model", "api_key",
        "context_window", "max_response_bytes", "timeouts", "health", "price",
        "default_max_tokens", "retry", "circuit", "features", "chars_per_token",
    };
    char path[PATH_MAX_LEN];
    path_key(path, "backends", kname);

    b->line = (unsigned)node_line(kname);
    b->name = gw_strndup(scalar_ptr(kname), kname->data.scalar.length);
    b->connect_timeout_ms = 2000;
    b->first_byte_timeout_ms = 60000;
    b->stream_idle_timeout_ms = 30000;
    b->request_timeout_ms = 600000;
    b->max_response_bytes = 32ull << 20;
    b->health_path = gw_strdup("/health");
    b->health_interval_ms = 5000;
    b->fail_threshold = 3;
    b->default_max_tokens = 4096;
    b->retry_attempts = 1;
    b->retry_backoff_ms = 100;
    b->retry_max_backoff_ms = 2000;
    b->circuit_failures = 5;
    b->circuit_window_ms = 10000;
    b->circuit_cooldown_ms = 15000;
    b->chars_per_token = 3.0;
    b->price_input = b->price_output = b->price_cache_read = b->price_cache_write = -1;
    b->output_weight = 4;
    b->min_tokens_per_hour = 1000000;
    /* vendor APIs take images and tools; self-hosted servers say so */
    b->images = b->tools = false;

    if (!valid_name(scalar_ptr(kname), kname->data.scalar.length) || strlen(b->name) == 0)
        return fail(ld, kname, path,
                    "backend names must be 1-%d characters of letters, digits and -._:/@+",
                    MAX_NAME);
    if (reserved_name(b->name))
        return fail(ld, kname, path, "\"%s\" is reserved (auto, local and frontier are "
                    "routing aliases)", b->name);
    if (is_null(map))
        return fail(ld, kname, path, "expected a mapping with tier, provider, url and model");
    if (check_map(ld, map, path, keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;

    bool have_tier = false, features_set = false;
    const yaml_node_t *url_key = NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, path, k);
        if (is_null(v)) {
            if (scalar_is(k, "tier") || scalar_is(k, "provider") || scalar_is(k, "model") ||
                scalar_is(k, "url") || scalar_is(k, "urls"))
                return fail(ld, k, sub, "must not be empty");
            continue;
        }
        int rc = GW_OK;
        if (scalar_is(k, "tier")) {
            char *s;
            if (get_str(ld, v, sub, &s))
                return GW_ERR;
            int t = gw_tier_parse(s);
            free(s);
            if (t < 0)
                return fail(ld, v, sub, "must be local or frontier");
            b->tier = (enum gw_tier)t;
            have_tier = true;
        } else if (scalar_is(k, "provider")) {
            if (set_str(ld, v, sub, &b->provider_name, false))
                return GW_ERR;
            b->provider = gw_provider_find(b->provider_name);
            if (!b->provider) {
                char shown_name[72];
                shown(b->provider_name, strlen(b->provider_name), shown_name,
                      sizeof(shown_name));
                return fail(ld, v, sub, "unknown provider \"%s\" (known: %s)", shown_name,
                            gw_provider_names());
            }
        } else if (scalar_is(k, "url") || scalar_is(k, "urls")) {
            if (url_key) {
                char first[PATH_MAX_LEN];
                path_key(first, path, url_key);
                return fail(ld, k, sub, "give either url or urls, not both (%s is on line %lu)",
                            first, node_line(url_key));
            }
            url_key = k;
            rc = parse_urls(ld, k, v, sub, b);
        } else if (scalar_is(k, "model")) {
            rc = set_str(ld, v, sub, &b->model, false);
        } else if (scalar_is(k, "api_key")) {
            char *s;
            if (get_scalar(ld, v, sub, &s, true))
                return GW_ERR;
            if (*s) {
                b->api_key = s;
            } else {
                free(s);
            }
        } else if (scalar_is(k, "context_window")) {
            rc = get_uint(ld, v, sub, &b->context_window, 0, 1000000000);
        } else if (scalar_is(k, "max_response_bytes")) {
            rc = get_size(ld, v, sub, &b->max_response_bytes);
        } else if (scalar_is(k, "timeouts")) {
            rc = parse_timeouts(ld, v, sub, b);
        } else if (scalar_is(k, "health")) {
            rc = parse_health(ld, v, sub, b);
        } else if (scalar_is(k, "default_max_tokens")) {
            rc = get_uint(ld, v, sub, &b->default_max_tokens, 1, 10000000);
        } else if (scalar_is(k, "features")) {
            rc = parse_features(ld, v, sub, b);
            features_set = true;
        } else if (scalar_is(k, "chars_per_token")) {
            rc = get_double(ld, v, sub, &b->chars_per_token, 0.5, 20);
        } else if (scalar_is(k, "retry")) {
            rc = parse_retry(ld, v, sub, b);
        } else if (scalar_is(k, "circuit")) {
            rc = parse_circuit(ld, v, sub, b);
        } else { /* price */
            rc = parse_price(ld, v, sub, b);
        }
        if (rc)
            return GW_ERR;
    }

    if (!features_set && b->provider && strcmp(b->provider_name, "vllm") != 0)
        b->images = b->tools = true; /* vendor APIs have both */
    char sub[PATH_MAX_LEN];
    const char *missing = !have_tier ? "tier" : !b->provider ? "provider" : !b->model ? "model"
                                               : b->nurls == 0 ? "url"
                                                               : NULL;
    if (missing) {
        pathf(sub, sizeof(sub), "%s.%s", path, missing);
        return fail(ld, kname, sub, "missing (required)");
    }
    return GW_OK;
}

static int parse_backends(struct ld *ld, yaml_node_t *k, yaml_node_t *map, struct gw_config *c)
{
    if (is_null(map))
        return fail(ld, k ? k : map, "backends", "at least one backend is required");
    if (check_map(ld, map, "backends", NULL, 0))
        return GW_ERR;
    size_t n = npairs(map);
    if (n == 0)
        return fail(ld, map, "backends", "at least one backend is required");
    c->backends = gw_calloc(n, sizeof(*c->backends));
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *p = &map->data.mapping.pairs.start[i];
        c->nbackends++;
        if (parse_backend(ld, node_at(ld, p->key), node_at(ld, p->value), &c->backends[i]))
            return GW_ERR;
    }
    return GW_OK;
}

static int parse_models(struct ld *ld, yaml_node_t *map, struct gw_config *c)
{
    static const char *const keys[] = {"backend"};
    if (check_map(ld, map, "models", NULL, 0))
        return GW_ERR;
    size_t n = npairs(map);
    c->models = gw_calloc(n ? n : 1, sizeof(*c->models));
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *p = &map->data.mapping.pairs.start[i];
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        struct gw_model_conf *m = &c->models[c->nmodels++];
        char path[PATH_MAX_LEN], sub[PATH_MAX_LEN];
        path_key(path, "models", k);
        m->name = gw_strndup(scalar_ptr(k), k->data.scalar.length);
        if (!valid_name(scalar_ptr(k), k->data.scalar.length) || strlen(m->name) == 0)
            return fail(ld, k, path,
                        "model names must be 1-%d characters of letters, digits and -._:/@+",
                        MAX_NAME);
        if (reserved_name(m->name))
            return fail(ld, k, path, "\"%s\" is reserved (auto, local and frontier are "
                        "routing aliases)", m->name);
        if (gw_config_backend(c, m->name))
            return fail(ld, k, path, "same name as a backend (clients can already use "
                        "backend names as models)");
        if (is_null(v))
            return fail(ld, k, path, "expected a mapping with backend");
        if (check_map(ld, v, path, keys, GW_ARRAY_LEN(keys)))
            return GW_ERR;
        pathf(sub, sizeof(sub), "%s.backend", path);
        yaml_node_t *vb = npairs(v) ? node_at(ld, v->data.mapping.pairs.start[0].value) : NULL;
        if (is_null(vb))
            return fail(ld, vb ? vb : k, sub, "missing (required)");
        if (set_str(ld, vb, sub, &m->backend_name, false))
            return GW_ERR;
        m->backend = (struct gw_backend_conf *)gw_config_backend(c, m->backend_name);
        if (!m->backend) {
            char sn[72];
            shown(m->backend_name, strlen(m->backend_name), sn, sizeof(sn));
            return fail(ld, vb, sub, "unknown backend \"%s\"", sn);
        }
    }
    return GW_OK;
}

/* router.fallback: { local: [frontier], frontier: [local, some-backend] }.
 * Names are checked against tiers and backends after the backends load. */
static int parse_fallback(struct ld *ld, yaml_node_t *map, const char *path, struct gw_config *c)
{
    static const char *const keys[] = {"local", "frontier"};
    if (check_map(ld, map, path, keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, path, k);
        int t = scalar_is(k, "local") ? GW_TIER_LOCAL : GW_TIER_FRONTIER;
        for (size_t i = 0; i < c->nfallback[t]; i++)
            free(c->fallback[t][i]);
        free(c->fallback[t]);
        c->fallback[t] = NULL;
        c->nfallback[t] = 0;
        if (is_null(v))
            continue; /* no fallback for this tier */
        if (v->type != YAML_SEQUENCE_NODE)
            return fail(ld, v, sub, "expected a list of tiers or backend names");
        size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
        if (n > 16)
            return fail(ld, v, sub, "at most 16 entries");
        c->fallback[t] = gw_calloc(n ? n : 1, sizeof(char *));
        for (size_t i = 0; i < n; i++) {
            yaml_node_t *it = node_at(ld, v->data.sequence.items.start[i]);
            char item[PATH_MAX_LEN];
            pathf(item, sizeof(item), "%s[%zu]", sub, i);
            char *name;
            if (get_str(ld, it, item, &name))
                return GW_ERR;
            c->fallback[t][c->nfallback[t]++] = name;
            ld->fallback_nodes[t][i] = it;
        }
    }
    return GW_OK;
}

/* routes: { code: local, reasoning: frontier, ... }: label -> tier.
 * Labels are checked against the classifier's at request time: a label
 * with no route goes to router.default_tier. */
static int parse_routes(struct ld *ld, yaml_node_t *map, const char *path, struct gw_config *c)
{
    if (check_map(ld, map, path, NULL, 0))
        return GW_ERR;
    size_t n = npairs(map);
    c->route_labels = gw_realloc(c->route_labels, (c->nroutes + n + 1) * sizeof(char *));
    c->route_tiers = gw_realloc(c->route_tiers, (c->nroutes + n + 1) * sizeof(enum gw_tier));
    for (size_t i = 0; i < n; i++) {
        yaml_node_pair_t *p = &map->data.mapping.pairs.start[i];
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, path, k);
        char *t;
        if (get_str(ld, v, sub, &t))
            return GW_ERR;
        int tier = gw_tier_parse(t);
        free(t);
        if (tier < 0)
            return fail(ld, v, sub, "must be local or frontier");
        char *label = gw_strndup(scalar_ptr(k), k->data.scalar.length);
        size_t at = c->nroutes;
        for (size_t j = 0; j < c->nroutes; j++)
            if (strcmp(c->route_labels[j], label) == 0)
                at = j; /* overrides the taxonomy's default */
        if (at == c->nroutes) {
            c->route_labels[c->nroutes++] = label;
        } else {
            free(label);
        }
        c->route_tiers[at] = (enum gw_tier)tier;
    }
    return GW_OK;
}

static int parse_spill(struct ld *ld, yaml_node_t *map, const char *path, struct gw_config *c)
{
    static const char *const keys[] = {"waiting_above", "kv_cache_above", "back_below",
                                       "interval"};
    if (check_map(ld, map, path, keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    c->spill = true;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, path, k);
        if (is_null(v))
            continue;
        int rc;
        if (scalar_is(k, "waiting_above"))
            rc = get_uint(ld, v, sub, &c->spill_waiting_above, 0, 1000000);
        else if (scalar_is(k, "kv_cache_above"))
            rc = get_double(ld, v, sub, &c->spill_kv_above, 0, 1);
        else if (scalar_is(k, "back_below"))
            rc = get_uint(ld, v, sub, &c->spill_back_below, 0, 1000000);
        else
            rc = get_duration(ld, v, sub, &c->scrape_interval_ms, false);
        if (rc)
            return GW_ERR;
    }
    if (c->spill_back_below > c->spill_waiting_above)
        return fail(ld, map, path, "back_below is above waiting_above (no hysteresis)");
    return GW_OK;
}

/* One rule: exactly one matcher, and where to send a match. */
static int parse_rule(struct ld *ld, yaml_node_t *item, const char *path, struct gw_rule *r)
{
    static const char *const keys[] = {"name", "header", "metadata", "equals", "regex",
                                       "min_chars", "has_images", "tier", "backend"};
    if (check_map(ld, item, path, keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    r->line = (unsigned)node_line(item);
    int matchers = 0;
    bool have_tier = false;
    yaml_node_t *vequals = NULL;
    for (yaml_node_pair_t *p = item->data.mapping.pairs.start; p < item->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, path, k);
        if (is_null(v))
            return fail(ld, k, sub, "must not be empty");
        if (scalar_is(k, "name")) {
            if (set_str(ld, v, sub, &r->name, false))
                return GW_ERR;
        } else if (scalar_is(k, "header") || scalar_is(k, "metadata")) {
            r->kind = scalar_is(k, "header") ? GW_RULE_HEADER : GW_RULE_METADATA;
            matchers++;
            if (set_str(ld, v, sub, &r->key, false))
                return GW_ERR;
        } else if (scalar_is(k, "equals")) {
            vequals = v;
            if (set_str(ld, v, sub, &r->equals, true))
                return GW_ERR;
        } else if (scalar_is(k, "regex")) {
            r->kind = GW_RULE_REGEX;
            matchers++;
            if (set_str(ld, v, sub, &r->regex, false))
                return GW_ERR;
            int code;
            PCRE2_SIZE off;
            r->code = pcre2_compile((PCRE2_SPTR)r->regex, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code,
                                    &off, NULL);
            if (!r->code) {
                PCRE2_UCHAR msg[160];
                pcre2_get_error_message(code, msg, sizeof(msg));
                return fail(ld, v, sub, "bad regular expression at offset %zu: %s", (size_t)off,
                            (const char *)msg);
            }
            pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE); /* optional speed-up */
        } else if (scalar_is(k, "min_chars")) {
            r->kind = GW_RULE_MIN_CHARS;
            matchers++;
            if (get_uint(ld, v, sub, &r->min_chars, 1, UINT64_C(1) << 40))
                return GW_ERR;
        } else if (scalar_is(k, "has_images")) {
            bool b;
            r->kind = GW_RULE_IMAGES;
            matchers++;
            if (get_bool(ld, v, sub, &b))
                return GW_ERR;
            if (!b)
                return fail(ld, v, sub, "only has_images: true is supported");
        } else if (scalar_is(k, "tier")) {
            char *t;
            if (get_str(ld, v, sub, &t))
                return GW_ERR;
            int tier = gw_tier_parse(t);
            free(t);
            if (tier < 0)
                return fail(ld, v, sub, "must be local or frontier");
            r->tier = (enum gw_tier)tier;
            have_tier = true;
        } else {
            if (set_str(ld, v, sub, &r->backend, false))
                return GW_ERR;
        }
    }
    char sub[PATH_MAX_LEN];
    if (!r->name) {
        pathf(sub, sizeof(sub), "%s.name", path);
        return fail(ld, item, sub, "missing (rules are named in x-hybridgw-reason)");
    }
    if (matchers != 1)
        return fail(ld, item, path, "needs exactly one of header, metadata, regex, min_chars, "
                    "has_images");
    if ((r->kind == GW_RULE_HEADER || r->kind == GW_RULE_METADATA) != (r->equals != NULL))
        return fail(ld, vequals ? vequals : item, path,
                    "equals goes with header or metadata (and they need it)");
    if (!have_tier && !r->backend)
        return fail(ld, item, path, "needs tier (local or frontier) or backend");
    return GW_OK;
}

static int parse_rules(struct ld *ld, yaml_node_t *v, const char *path, struct gw_config *c)
{
    if (v->type != YAML_SEQUENCE_NODE)
        return fail(ld, v, path, "expected a list of rules");
    size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (n > 256)
        return fail(ld, v, path, "at most 256 rules");
    c->rules = gw_calloc(n ? n : 1, sizeof(*c->rules));
    for (size_t i = 0; i < n; i++) {
        char sub[PATH_MAX_LEN];
        pathf(sub, sizeof(sub), "%s[%zu]", path, i);
        c->nrules++;
        if (parse_rule(ld, node_at(ld, v->data.sequence.items.start[i]), sub, &c->rules[i]))
            return GW_ERR;
    }
    return GW_OK;
}

static int parse_otlp(struct ld *ld, yaml_node_t *map, const char *path, struct gw_config *c)
{
    static const char *const keys[] = {"endpoint", "headers", "sample", "queue", "batch",
                                       "interval", "timeout"};
    if (check_map(ld, map, path, keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, path, k);
        if (is_null(v))
            continue;
        int rc = GW_OK;
        if (scalar_is(k, "endpoint")) {
            char *u;
            if (get_str(ld, v, sub, &u))
                return GW_ERR;
            if (!*u) { /* "${OTLP_ENDPOINT:-}" unset: tracing off */
                free(u);
                continue;
            }
            const char *prob = url_problem(u);
            if (prob) {
                free(u);
                return fail(ld, v, sub, "%s", prob);
            }
            free(c->otlp_endpoint);
            c->otlp_endpoint = u;
        } else if (scalar_is(k, "headers")) {
            if (check_map(ld, v, sub, NULL, 0))
                return GW_ERR;
            size_t n = npairs(v);
            c->otlp_header_names = gw_calloc(n ? n : 1, sizeof(char *));
            c->otlp_header_values = gw_calloc(n ? n : 1, sizeof(char *));
            for (size_t i = 0; i < n; i++) {
                yaml_node_pair_t *hp = &v->data.mapping.pairs.start[i];
                yaml_node_t *hk = node_at(ld, hp->key), *hv = node_at(ld, hp->value);
                char hpath[PATH_MAX_LEN];
                path_key(hpath, sub, hk);
                char *name = gw_strndup(scalar_ptr(hk), hk->data.scalar.length), *val;
                for (const char *q = name; *q; q++)
                    if (!(isalnum((unsigned char)*q) || *q == '-' || *q == '_')) {
                        free(name);
                        return fail(ld, hk, hpath, "not a valid header name");
                    }
                if (get_scalar(ld, hv, hpath, &val, true)) {
                    free(name);
                    return GW_ERR;
                }
                if (strpbrk(val, "\r\n")) {
                    free(name);
                    free_secret(val);
                    return fail(ld, hv, hpath, "must not contain a line break");
                }
                c->otlp_header_names[c->notlp_headers] = name;
                c->otlp_header_values[c->notlp_headers++] = val;
            }
        } else if (scalar_is(k, "sample")) {
            rc = get_double(ld, v, sub, &c->otlp_sample, 0, 1);
        } else if (scalar_is(k, "queue")) {
            rc = get_uint(ld, v, sub, &c->otlp_queue, 1, 1000000);
        } else if (scalar_is(k, "batch")) {
            rc = get_uint(ld, v, sub, &c->otlp_batch, 1, 100000);
        } else if (scalar_is(k, "interval")) {
            rc = get_duration(ld, v, sub, &c->otlp_interval_ms, false);
        } else {
            rc = get_duration(ld, v, sub, &c->otlp_timeout_ms, false);
        }
        if (rc)
            return GW_ERR;
    }
    return GW_OK;
}

/* ledger: { database: URL, queue: N, on_error: closed|open, limits_sync: DURATION } */
static int parse_ledger(struct ld *ld, yaml_node_t *map, struct gw_config *c)
{
    static const char *const keys[] = {"database", "queue", "on_error", "limits_sync"};
    if (check_map(ld, map, "ledger", keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, "ledger", k);
        if (is_null(v))
            continue;
        if (scalar_is(k, "database")) {
            char *u;
            if (get_scalar(ld, v, sub, &u, true)) /* may hold a password */
                return GW_ERR;
            if (!*u) {
                free(u);
                continue;
            }
            if (strncmp(u, "sqlite:", 7) != 0 && strncmp(u, "postgres://", 11) != 0 &&
                strncmp(u, "postgresql://", 13) != 0) {
                free_secret(u);
                return fail(ld, v, sub, "must start with sqlite: or postgres://");
            }
            free_secret(c->ledger_url);
            c->ledger_url = u;
        } else if (scalar_is(k, "on_error")) {
            char *m;
            if (get_str(ld, v, sub, &m))
                return GW_ERR;
            bool ok = strcmp(m, "closed") == 0 || strcmp(m, "open") == 0;
            c->ledger_fail_open = strcmp(m, "open") == 0;
            free(m);
            if (!ok)
                return fail(ld, v, sub, "must be closed (refuse with 503) or open (serve "
                            "without budget checks)");
        } else if (scalar_is(k, "limits_sync")) {
            if (get_duration(ld, v, sub, &c->limits_sync_ms, true))
                return GW_ERR;
        } else if (get_uint(ld, v, sub, &c->ledger_queue, 1, 10000000)) {
            return GW_ERR;
        }
    }
    return GW_OK;
}

static int parse_cost(struct ld *ld, yaml_node_t *map, struct gw_config *c)
{
    static const char *const keys[] = {"reference"};
    if (check_map(ld, map, "cost", keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *v = node_at(ld, p->value);
        if (!is_null(v) && set_str(ld, v, "cost.reference", &c->cost_reference, false))
            return GW_ERR;
        ld->cost_node = v;
    }
    return GW_OK;
}

static int parse_telemetry(struct ld *ld, yaml_node_t *map, struct gw_config *c)
{
    static const char *const keys[] = {"otlp", "service_name", "environment"};
    if (check_map(ld, map, "telemetry", keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char sub[PATH_MAX_LEN];
        path_key(sub, "telemetry", k);
        if (is_null(v))
            continue;
        int rc;
        if (scalar_is(k, "otlp"))
            rc = parse_otlp(ld, v, sub, c);
        else if (scalar_is(k, "service_name"))
            rc = set_str(ld, v, sub, &c->service_name, false);
        else
            rc = set_str(ld, v, sub, &c->environment, true);
        if (rc)
            return GW_ERR;
    }
    return GW_OK;
}

static int parse_router(struct ld *ld, yaml_node_t *map, struct gw_config *c)
{
    static const char *const keys[] = {
        "default_tier", "classifier", "min_confidence", "routes", "rules", "spill", "fallback",
        "deadline", "frontier_threshold",
    };
    if (check_map(ld, map, "router", keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char path[PATH_MAX_LEN];
        path_key(path, "router", k);
        if (is_null(v))
            continue;
        if (scalar_is(k, "default_tier")) {
            char *s;
            if (get_str(ld, v, path, &s))
                return GW_ERR;
            int t = gw_tier_parse(s);
            free(s);
            if (t < 0)
                return fail(ld, v, path, "must be local or frontier");
            c->default_tier = (enum gw_tier)t;
        } else if (scalar_is(k, "classifier")) {
            if (set_str(ld, v, path, &c->classifier, false))
                return GW_ERR;
            if (strcmp(c->classifier, "builtin") != 0 && strcmp(c->classifier, "off") != 0) {
                char err[256];
                c->classifier_model = gw_classifier_load(c->classifier, err, sizeof(err));
                if (!c->classifier_model)
                    return fail(ld, v, path, "%s", err);
            }
        } else if (scalar_is(k, "min_confidence")) {
            if (get_double(ld, v, path, &c->min_confidence, 0, 1))
                return GW_ERR;
        } else if (scalar_is(k, "frontier_threshold")) {
            if (get_double(ld, v, path, &c->frontier_threshold, 0, 1))
                return GW_ERR;
        } else if (scalar_is(k, "routes")) {
            if (parse_routes(ld, v, path, c))
                return GW_ERR;
        } else if (scalar_is(k, "rules")) {
            if (parse_rules(ld, v, path, c))
                return GW_ERR;
        } else if (scalar_is(k, "spill")) {
            if (parse_spill(ld, v, path, c))
                return GW_ERR;
        } else if (scalar_is(k, "deadline")) {
            if (get_duration(ld, v, path, &c->retry_deadline_ms, false))
                return GW_ERR;
        } else if (scalar_is(k, "fallback")) {
            if (parse_fallback(ld, v, path, c))
                return GW_ERR;
        }
    }
    return GW_OK;
}

static int parse_root(struct ld *ld, yaml_node_t *root, struct gw_config *c)
{
    static const char *const keys[] = {
        "listen", "admin_listen", "workers", "log_level", "access_log", "limits",
        "auth",   "backends",     "models",  "router",    "telemetry",  "ledger", "cost",
    };
    if (!root || is_null(root))
        return fail(ld, root, "backends", "at least one backend is required (the document "
                    "is empty)");
    if (root->type != YAML_MAPPING_NODE)
        return fail(ld, root, "", "the top level must be a mapping, got %s", type_name(root));
    if (check_map(ld, root, "", keys, GW_ARRAY_LEN(keys)))
        return GW_ERR;

    yaml_node_t *kback = NULL, *vback = NULL, *vmodels = NULL, *kadmin = NULL;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = node_at(ld, p->key), *v = node_at(ld, p->value);
        char path[PATH_MAX_LEN];
        path_key(path, "", k);
        if (scalar_is(k, "backends")) {
            kback = k;
            vback = v;
            continue;
        }
        if (is_null(v)) {
            if (scalar_is(k, "listen") || scalar_is(k, "log_level") ||
                scalar_is(k, "access_log") || scalar_is(k, "workers"))
                return fail(ld, k, path, "must not be empty");
            continue;
        }
        int rc = GW_OK;
        if (scalar_is(k, "listen")) {
            size_t hl;
            long port;
            const char *problem;
            if (set_str(ld, v, path, &c->listen, false))
                return GW_ERR;
            if ((problem = listen_problem(c->listen, &hl, &port)))
                return fail(ld, v, path, "%s", problem);
        } else if (scalar_is(k, "admin_listen")) {
            size_t hl;
            long port;
            const char *problem;
            if (set_str(ld, v, path, &c->admin_listen, true))
                return GW_ERR;
            if (!*c->admin_listen) {
                free(c->admin_listen);
                c->admin_listen = NULL;
            } else if ((problem = listen_problem(c->admin_listen, &hl, &port))) {
                return fail(ld, v, path, "%s", problem);
            }
            kadmin = v;
        } else if (scalar_is(k, "workers")) {
            rc = parse_workers(ld, v, path, &c->workers);
        } else if (scalar_is(k, "log_level")) {
            if (set_str(ld, v, path, &c->log_level, false))
                return GW_ERR;
            if (strcmp(c->log_level, "error") && strcmp(c->log_level, "warn") &&
                strcmp(c->log_level, "info") && strcmp(c->log_level, "debug"))
                return fail(ld, v, path, "must be error, warn, info or debug");
        } else if (scalar_is(k, "access_log")) {
            rc = set_str(ld, v, path, &c->access_log, false);
        } else if (scalar_is(k, "limits")) {
            rc = parse_limits(ld, v, c);
        } else if (scalar_is(k, "auth")) {
            rc = parse_auth(ld, v, c);
        } else if (scalar_is(k, "models")) {
            vmodels = v; /* needs the backends first */
        } else if (scalar_is(k, "router")) {
            rc = parse_router(ld, v, c);
        } else if (scalar_is(k, "telemetry")) {
            rc = parse_telemetry(ld, v, c);
        } else if (scalar_is(k, "cost")) {
            rc = parse_cost(ld, v, c);
        } else {
            rc = parse_ledger(ld, v, c);
        }
        if (rc)
            return GW_ERR;
    }

    if (parse_backends(ld, kback, vback, c))
        return GW_ERR;
    if (c->cost_reference && !gw_config_backend(c, c->cost_reference)) {
        char sn[72];
        shown(c->cost_reference, strlen(c->cost_reference), sn, sizeof(sn));
        return fail(ld, ld->cost_node, "cost.reference", "unknown backend \"%s\"", sn);
    }
    for (size_t i = 0; i < c->nrules; i++) {
        struct gw_rule *r = &c->rules[i];
        const struct gw_backend_conf *b = r->backend ? gw_config_backend(c, r->backend) : NULL;
        if (r->backend && !b) {
            char sn[72];
            shown(r->backend, strlen(r->backend), sn, sizeof(sn));
            snprintf(ld->err, ld->errlen, "%s:%u: router.rules[%zu].backend: unknown backend "
                     "\"%s\"", ld->name, r->line, i, sn);
            return GW_ERR;
        }
        if (b)
            r->tier = b->tier;
    }
    for (int t = 0; t < GW_TIER_COUNT; t++) {
        for (size_t i = 0; i < c->nfallback[t]; i++) {
            const char *n = c->fallback[t][i];
            if (gw_tier_parse(n) >= 0 || gw_config_backend(c, n))
                continue;
            char sub[PATH_MAX_LEN], sn[72];
            pathf(sub, sizeof(sub), "router.fallback.%s[%zu]", gw_tier_str((enum gw_tier)t), i);
            shown(n, strlen(n), sn, sizeof(sn));
            return fail(ld, ld->fallback_nodes[t][i], sub,
                        "\"%s\" is neither a tier (local, frontier) nor a backend", sn);
        }
    }
    if (vmodels && parse_models(ld, vmodels, c))
        return GW_ERR;
    if (c->admin_listen && listen_conflict(c->listen, c->admin_listen))
        return fail(ld, kadmin, "admin_listen", "same address and port as listen (leave it "
                    "out to serve admin endpoints on listen)");
    return GW_OK;
}

/* ------------------------------------------------------------------------
 * Public API
 * ------------------------------------------------------------------------ */

static struct gw_config *config_new(const char *name)
{
    struct gw_config *c = gw_calloc(1, sizeof(*c));
    atomic_init(&c->refs, 1);
    c->path = gw_strdup(name);
    c->listen = gw_strdup("0.0.0.0:8080");
    c->workers = auto_workers();
    c->max_body_bytes = 8ull << 20;
    c->max_header_bytes = 32ull << 10;
    c->max_headers = 100;
    c->header_timeout_ms = 10000;
    c->body_timeout_ms = 30000;
    c->idle_timeout_ms = 75000;
    c->shutdown_timeout_ms = 30000;
    c->write_high_water = 64ull << 10;
    c->default_tier = GW_TIER_LOCAL;
    c->retry_deadline_ms = 30000;
    c->classifier = gw_strdup("builtin");
    /* the taxonomy's default label -> tier table (data/routing/TAXONOMY.md) */
    static const char *const local_labels[] = {"code", "summarization", "extraction",
                                               "classification", "rewrite", "chat", "creative"};
    static const char *const frontier_labels[] = {"reasoning", "planning", "judgment"};
    size_t nl = GW_ARRAY_LEN(local_labels), nf = GW_ARRAY_LEN(frontier_labels);
    c->route_labels = gw_calloc(nl + nf, sizeof(char *));
    c->route_tiers = gw_calloc(nl + nf, sizeof(enum gw_tier));
    for (size_t i = 0; i < nl + nf; i++) {
        c->route_labels[i] = gw_strdup(i < nl ? local_labels[i] : frontier_labels[i - nl]);
        c->route_tiers[i] = i < nl ? GW_TIER_LOCAL : GW_TIER_FRONTIER;
    }
    c->nroutes = nl + nf;
    c->min_confidence = 0.55;
    c->otlp_sample = 1.0;
    c->otlp_queue = 4096;
    c->otlp_batch = 256;
    c->otlp_interval_ms = 1000;
    c->otlp_timeout_ms = 5000;
    c->service_name = gw_strdup("hybridgw");
    c->ledger_queue = 10000;
    c->limits_sync_ms = 500;
    c->frontier_threshold = 0.3;
    c->spill_waiting_above = 8;
    c->spill_kv_above = 0.9;
    c->spill_back_below = 4;
    c->scrape_interval_ms = 1000;
    c->fallback[GW_TIER_LOCAL] = gw_calloc(1, sizeof(char *));
    c->fallback[GW_TIER_LOCAL][0] = gw_strdup("frontier");
    c->nfallback[GW_TIER_LOCAL] = 1;
    c->fallback[GW_TIER_FRONTIER] = gw_calloc(1, sizeof(char *));
    c->fallback[GW_TIER_FRONTIER][0] = gw_strdup("local");
    c->nfallback[GW_TIER_FRONTIER] = 1;
    c->access_log = gw_strdup("stdout");
    c->log_level = gw_strdup("info");
    return c;
}

/* Line (1-based) of byte offset off in s. */
static unsigned long line_of(const char *s, size_t len, size_t off)
{
    unsigned long line = 1;
    for (size_t i = 0; i < off && i < len; i++)
        if (s[i] == '\n')
            line++;
    return line;
}

static void yaml_fail(struct ld *ld, const yaml_parser_t *ps, const char *yaml, size_t len)
{
    if (!ld->errlen)
        return;
    const char *problem = ps->problem ? ps->problem : "cannot parse";
    switch (ps->error) {
    case YAML_MEMORY_ERROR:
        snprintf(ld->err, ld->errlen, "%s: out of memory while parsing", ld->name);
        break;
    case YAML_READER_ERROR:
        snprintf(ld->err, ld->errlen, "%s:%lu: invalid input: %s (byte %zu)", ld->name,
                 line_of(yaml, len, ps->problem_offset), problem, ps->problem_offset);
        break;
    default:
        if (ps->context)
            snprintf(ld->err, ld->errlen, "%s:%lu:%lu: YAML syntax error: %s (%s on line %lu)",
                     ld->name, (unsigned long)ps->problem_mark.line + 1,
                     (unsigned long)ps->problem_mark.column + 1, problem, ps->context,
                     (unsigned long)ps->context_mark.line + 1);
        else
            snprintf(ld->err, ld->errlen, "%s:%lu:%lu: YAML syntax error: %s", ld->name,
                     (unsigned long)ps->problem_mark.line + 1,
                     (unsigned long)ps->problem_mark.column + 1, problem);
        break;
    }
}

struct gw_config *gw_config_load_string(const char *yaml, size_t len, const char *name,
                                        char *err, size_t errlen)
{
    struct ld ld = {
        .name = name ? name : "<string>",
        .err = err,
        .errlen = err ? errlen : 0,
    };
    yaml_parser_t parser;
    yaml_document_t doc, extra;

    if (ld.errlen)
        err[0] = '\0';
    if (!yaml) {
        yaml = "";
        len = 0;
    }
    if (!yaml_parser_initialize(&parser)) {
        if (ld.errlen)
            snprintf(err, errlen, "%s: out of memory", ld.name);
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&parser, &doc)) {
        yaml_fail(&ld, &parser, yaml, len);
        yaml_parser_delete(&parser);
        return NULL;
    }
    /* One document per file: a stray "---" would otherwise hide the rest. */
    if (!yaml_parser_load(&parser, &extra)) {
        yaml_fail(&ld, &parser, yaml, len);
        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
        return NULL;
    }
    yaml_node_t *extra_root = yaml_document_get_root_node(&extra);
    if (extra_root) {
        unsigned long line = node_line(extra_root);
        yaml_document_delete(&extra);
        yaml_document_delete(&doc);
        yaml_parser_delete(&parser);
        if (ld.errlen)
            snprintf(err, errlen, "%s:%lu: a second YAML document; the file must hold one",
                     ld.name, line);
        return NULL;
    }
    yaml_document_delete(&extra);

    struct gw_config *c = config_new(ld.name);
    ld.doc = &doc;
    int rc = parse_root(&ld, yaml_document_get_root_node(&doc), c);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (rc) {
        config_free(c);
        return NULL;
    }
    c->generation = atomic_fetch_add(&g_generation, 1) + 1;
    return c;
}

struct gw_config *gw_config_load(const char *path, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!path) {
        if (err && errlen)
            snprintf(err, errlen, "no configuration file given");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 16384, len = 0;
    char *buf = gw_malloc(cap);
    for (;;) {
        if (len == cap) {
            if (cap > MAX_FILE_BYTES)
                break;
            cap *= 2;
            buf = gw_realloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    struct gw_config *c = NULL;
    if (rerr) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(rerr));
    } else if (len > MAX_FILE_BYTES) {
        if (err && errlen)
            snprintf(err, errlen, "%s: larger than %u bytes; not a configuration file?", path,
                     MAX_FILE_BYTES);
    } else {
        c = gw_config_load_string(buf, len, path, err, errlen);
    }
    /* The text may hold plain keys. */
    OPENSSL_cleanse(buf, cap);
    free(buf);
    return c;
}

struct gw_config *gw_config_ref(struct gw_config *c)
{
    if (c)
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void gw_config_unref(struct gw_config *c)
{
    if (!c)
        return;
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
        if (c->release_runtime)
            c->release_runtime(c);
        config_free(c);
    }
}

const struct gw_backend_conf *gw_config_backend(const struct gw_config *c, const char *name)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->nbackends; i++)
        if (c->backends[i].name && strcmp(c->backends[i].name, name) == 0)
            return &c->backends[i];
    return NULL;
}

const struct gw_backend_conf *gw_config_resolve_model(const struct gw_config *c,
                                                      const char *name, size_t len)
{
    if (!c || !name)
        return NULL;
    for (size_t i = 0; i < c->nmodels; i++) {
        const struct gw_model_conf *m = &c->models[i];
        if (strlen(m->name) == len && memcmp(m->name, name, len) == 0)
            return m->backend;
    }
    for (size_t i = 0; i < c->nbackends; i++) {
        const struct gw_backend_conf *b = &c->backends[i];
        if (strlen(b->name) == len && memcmp(b->name, name, len) == 0)
            return b;
    }
    return NULL;
}
