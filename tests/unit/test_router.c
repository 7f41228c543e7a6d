/*
 * test_router.c - unit tests for the router (src/router/router.c, contract
 * in src/router/router.h): the stages in order (explicit, rules,
 * classifier, default), the route table, the constraints that may move a
 * decision (context window, features, local down, spill, frontier down),
 * that they never move explicit or rule decisions, the reason strings and
 * the trace. Health and load are simulated by writing the targets' atomics
 * directly (what the health checker and the /metrics scraper do).
 *
 * Most tests are tables: one row per request, run against one config.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <fnmatch.h>

#include "gateway/gateway.h"
#include "hybridgw/config.h"
#include "router/classifier.h"
#include "router/cls_internal.h"
#include "router/router.h"

/* ---- configs ------------------------------------------------------------ */

/* vl: two vLLM URLs, a 1000-token window at 4 chars per token, no
 * features; fr: a vendor API (images and tools by default). */
#define BACKENDS                                                             \
    "backends:\n"                                                            \
    "  vl:\n"                                                                \
    "    tier: local\n"                                                      \
    "    provider: vllm\n"                                                   \
    "    urls: [\"http://10.0.0.1:8000\", \"http://10.0.0.2:8000\"]\n"       \
    "    model: qwen\n"                                                      \
    "    context_window: 1000\n"                                             \
    "    chars_per_token: 4\n"                                               \
    "  fr:\n"                                                                \
    "    tier: frontier\n"                                                   \
    "    provider: openai\n"                                                 \
    "    url: https://api.example.com/v1\n"                                  \
    "    model: gpt\n"                                                       \
    "models:\n"                                                              \
    "  coder: { backend: vl }\n"

#define RULES                                                                        \
    "  rules:\n"                                                                     \
    "    - { name: restricted, header: \"x-data-class\", equals: restricted, tier: local }\n" \
    "    - { name: research, metadata: team, equals: research, tier: frontier }\n"  \
    "    - { name: confidential, regex: '(?i)\\bconfidential\\b', tier: local }\n"  \
    "    - { name: huge, min_chars: 20000, tier: frontier }\n"                      \
    "    - { name: pictures, has_images: true, backend: fr }\n"

static const char CFG_RULES[] = BACKENDS
    "router:\n"
    "  default_tier: local\n"
    "  classifier: off\n"
    "  spill: { waiting_above: 8, back_below: 4, kv_cache_above: 0.9 }\n" RULES;

static const char CFG_PLAIN[] = BACKENDS
    "router:\n"
    "  default_tier: local\n"
    "  classifier: off\n"
    "  spill: { waiting_above: 8, back_below: 4, kv_cache_above: 0.9 }\n";

static const char CFG_NOSPILL[] = BACKENDS
    "router:\n"
    "  default_tier: local\n"
    "  classifier: off\n";

static const char CFG_DEFAULT_FRONTIER[] = BACKENDS
    "router:\n"
    "  default_tier: frontier\n"
    "  classifier: off\n";

static const char CFG_CLS[] = BACKENDS
    "router:\n"
    "  classifier: builtin\n"
    "  spill: { waiting_above: 8, back_below: 4 }\n" RULES;

static const char CFG_CLS_AMBIGUOUS[] = BACKENDS
    "router:\n"
    "  min_confidence: 1\n";

static const char CFG_CLS_ROUTES[] = BACKENDS
    "router:\n"
    "  routes: { code: frontier }\n";

/* vl with both features and the default chars_per_token (3.0) */
static const char CFG_FEATURES[] =
    "backends:\n"
    "  vl:\n"
    "    tier: local\n"
    "    provider: vllm\n"
    "    url: http://10.0.0.1:8000\n"
    "    model: qwen\n"
    "    context_window: 1000\n"
    "    features: [images, tools]\n"
    "  fr:\n"
    "    tier: frontier\n"
    "    provider: openai\n"
    "    url: https://api.example.com/v1\n"
    "    model: gpt\n"
    "router:\n"
    "  classifier: off\n";

static struct gw_config *g_cfg;

static struct gw_config *load(const char *yaml)
{
    char err[512];
    struct gw_config *c = gw_config_load_string(yaml, strlen(yaml), "t.yaml", err, sizeof(err));
    if (!c)
        fail_msg("config: %s", err);
    gw_backends_attach(c, NULL);
    return c;
}

static void drop(struct gw_config *c)
{
    if (!c)
        return;
    if (atomic_load(&c->refs) == 1 && c->release_runtime)
        c->release_runtime(c);
    gw_config_unref(c);
}

static int teardown(void **state)
{
    (void)state;
    drop(g_cfg);
    g_cfg = NULL;
    return 0;
}

static struct gw_backend_conf *backend(struct gw_config *c, const char *name)
{
    for (size_t i = 0; i < c->nbackends; i++)
        if (strcmp(c->backends[i].name, name) == 0)
            return &c->backends[i];
    fail_msg("no backend %s", name);
    return NULL;
}

/* ---- simulated health and load ------------------------------------------ */

static void reset_state(struct gw_config *c)
{
    for (size_t i = 0; i < c->nbackends; i++)
        for (size_t j = 0; j < c->backends[i].nurls; j++) {
            struct gw_target *t = c->backends[i].targets[j];
            atomic_store(&t->healthy, true);
            atomic_store(&t->spilling, false);
            atomic_store(&t->spill_cause, 0);
            atomic_store(&t->load_waiting, 0.0);
            atomic_store(&t->load_kv, 0.0);
        }
}

static void set_target(struct gw_config *c, const char *b, size_t i, bool healthy, bool spilling,
                       int cause, double waiting, double kv)
{
    struct gw_target *t = backend(c, b)->targets[i];
    atomic_store(&t->healthy, healthy);
    atomic_store(&t->spilling, spilling);
    atomic_store(&t->spill_cause, cause);
    atomic_store(&t->load_waiting, waiting);
    atomic_store(&t->load_kv, kv);
}

static void st_local_down(struct gw_config *c)
{
    set_target(c, "vl", 0, false, false, 0, 0, 0);
    set_target(c, "vl", 1, false, false, 0, 0, 0);
}
static void st_local_half_down(struct gw_config *c)
{
    set_target(c, "vl", 0, false, false, 0, 0, 0);
}
static void st_frontier_down(struct gw_config *c)
{
    set_target(c, "fr", 0, false, false, 0, 0, 0);
}
static void st_all_down(struct gw_config *c)
{
    st_local_down(c);
    st_frontier_down(c);
}
static void st_spill_queue(struct gw_config *c)
{
    set_target(c, "vl", 0, true, true, 1, 14, 0.5);
    set_target(c, "vl", 1, true, true, 1, 11, 0.5);
}
static void st_spill_kv(struct gw_config *c)
{
    set_target(c, "vl", 0, true, true, 2, 1, 0.95);
    set_target(c, "vl", 1, true, true, 2, 0, 0.97);
}
/* one URL over the marks, the other has room: no spill */
static void st_spill_one(struct gw_config *c)
{
    set_target(c, "vl", 0, true, true, 1, 14, 0.5);
}
/* the only healthy URL is over the marks: spill */
static void st_spill_healthy_one(struct gw_config *c)
{
    set_target(c, "vl", 0, false, false, 0, 0, 0);
    set_target(c, "vl", 1, true, true, 1, 12, 0.5);
}
static void st_spill_frontier_down(struct gw_config *c)
{
    st_spill_queue(c);
    st_frontier_down(c);
}
/* the load numbers alone are above the marks, but the scraper has not
 * (or no longer) set spilling: the router acts on the flag only */
static void st_load_without_flag(struct gw_config *c)
{
    set_target(c, "vl", 0, true, false, 0, 50, 0.99);
    set_target(c, "vl", 1, true, false, 0, 50, 0.99);
}
static void st_spill_and_local_down(struct gw_config *c)
{
    st_spill_queue(c);
    st_local_down(c);
}

/* ---- running a decision ------------------------------------------------- */

struct hdrs {
    const char *name, *value;
};

static gw_str header_cb(void *ud, const char *name)
{
    const struct hdrs *h = ud;
    for (; h && h->name; h++)
        if (strcasecmp(h->name, name) == 0)
            return gw_str_c(h->value);
    return GW_STR_NULL;
}

struct rcase {
    const char *name;
    const char *body;           /* a JSON request; NULL: text */
    const char *text;           /* plain text input (route CLI) */
    bool anthropic;
    const char *tier_hdr;
    bool force;
    const char *hname, *hval;   /* one request header */
    void (*state)(struct gw_config *);
    bool offline;
    int rc;
    int err_status;
    enum gw_tier tier;
    const char *backend;        /* NULL: not checked */
    const char *stage, *first;  /* NULL: not checked */
    const char *reason;         /* exact; '*' matches any characters */
    const char *trace;          /* stage of each trace line, comma-joined; NULL: not checked */
    const char *label;          /* NULL: must be NULL; "?" not checked */
};

/* "explicit: ...\nrules: ...\n" -> "explicit,rules" */
static void trace_stages(const char *t, char *out, size_t n)
{
    size_t o = 0;
    out[0] = '\0';
    while (*t) {
        const char *colon = strchr(t, ':'), *nl = strchr(t, '\n');
        if (!nl)
            nl = t + strlen(t);
        size_t l = colon && colon < nl ? (size_t)(colon - t) : (size_t)(nl - t);
        if (o && o + 1 < n)
            out[o++] = ',';
        for (size_t i = 0; i < l && o + 1 < n; i++)
            out[o++] = t[i];
        out[o] = '\0';
        t = *nl ? nl + 1 : nl;
    }
}

/* exact, except that '*' stands for any run of characters */
static bool reason_ok(const char *want, const char *got)
{
    return fnmatch(want, got, 0) == 0;
}

/* Decide for c; the json body is kept alive in *bodyp for the caller. */
static int decide(struct gw_config *c, const struct rcase *k, struct gw_route *r,
                  struct gw_buf *trace, json_t **bodyp)
{
    struct gw_route_input in;
    memset(&in, 0, sizeof(in));
    in.cfg = c;
    json_t *body = NULL;
    if (k->body) {
        json_error_t je;
        body = json_loads(k->body, 0, &je);
        if (!body)
            fail_msg("%s: bad test JSON: %s", k->name, je.text);
        in.body = body;
        in.model = gw_str_c(json_string_value(json_object_get(body, "model")));
    } else {
        in.text = gw_str_c(k->text);
        in.model = GW_STR("auto");
    }
    in.anthropic = k->anthropic;
    in.tier_header = k->tier_hdr ? gw_str_c(k->tier_hdr) : GW_STR_NULL;
    in.may_force_tier = k->force;
    struct hdrs h[2] = {{k->hname, k->hval}, {NULL, NULL}};
    if (k->hname) {
        in.header = header_cb;
        in.header_ud = h;
    }
    in.offline = k->offline;
    in.trace = trace;
    int rc = gw_route_decide(&in, r);
    *bodyp = body;
    return rc;
}

static void run_cases(const char *yaml, const struct rcase *cases, size_t n)
{
    g_cfg = load(yaml);
    for (size_t i = 0; i < n; i++) {
        const struct rcase *k = &cases[i];
        reset_state(g_cfg);
        if (k->state)
            k->state(g_cfg);
        struct gw_route r;
        struct gw_buf trace;
        gw_buf_init(&trace, 0);
        json_t *body;
        int rc = decide(g_cfg, k, &r, &trace, &body);
        const char *tr = trace.data ? trace.data : "";
        char stages[256];
        trace_stages(tr, stages, sizeof(stages));
        char ctx[1024];
        snprintf(ctx, sizeof(ctx), "case \"%s\": rc=%d status=%d tier=%s backend=%s stage=%s "
                 "first=%s reason=\"%s\" err=\"%s\"\ntrace:\n%s", k->name, rc, r.err_status,
                 gw_tier_str(r.tier), r.backend ? r.backend->name : "(none)",
                 r.stage ? r.stage : "(null)", r.first_stage ? r.first_stage : "(null)", r.reason,
                 r.err, tr);
        if (rc != k->rc)
            fail_msg("want rc %d; %s", k->rc, ctx);
        if (k->rc) {
            if (r.err_status != k->err_status)
                fail_msg("want status %d; %s", k->err_status, ctx);
        } else {
            if (r.tier != k->tier)
                fail_msg("want tier %s; %s", gw_tier_str(k->tier), ctx);
            if (!r.backend || r.backend->tier != r.tier)
                fail_msg("backend not of the decided tier; %s", ctx);
        }
        if (k->backend && (!r.backend || strcmp(r.backend->name, k->backend) != 0))
            fail_msg("want backend %s; %s", k->backend, ctx);
        if (k->stage && (!r.stage || strcmp(r.stage, k->stage) != 0))
            fail_msg("want stage %s; %s", k->stage, ctx);
        if (k->first && (!r.first_stage || strcmp(r.first_stage, k->first) != 0))
            fail_msg("want first_stage %s; %s", k->first, ctx);
        if (k->reason && !reason_ok(k->reason, r.reason))
            fail_msg("want reason \"%s\"; %s", k->reason, ctx);
        if (k->trace && strcmp(stages, k->trace) != 0)
            fail_msg("want trace stages \"%s\", got \"%s\"; %s", k->trace, stages, ctx);
        if (!k->label && r.label)
            fail_msg("want no label; %s", ctx);
        if (k->label && strcmp(k->label, "?") != 0 && (!r.label || strcmp(r.label, k->label)))
            fail_msg("want label %s; %s", k->label, ctx);
        gw_buf_free(&trace);
        json_decref(body);
    }
}

#define CHAT(model, content) \
    "{\"model\":\"" model "\",\"messages\":[{\"role\":\"user\",\"content\":\"" content "\"}]}"

#define IMG_CONTENT                                                                  \
    "[{\"type\":\"text\",\"text\":\"what is in this picture?\"},"                     \
    "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]"

#define TOOLS \
    ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}]"

/* ---- explicit ----------------------------------------------------------- */

static void test_explicit(void **state)
{
    (void)state;
    static const struct rcase cases[] = {
        {.name = "pinned backend name", .body = CHAT("vl", "hi"), .tier = GW_TIER_LOCAL,
         .backend = "vl", .stage = "explicit", .first = "explicit",
         .reason = "explicit:model=vl", .trace = "explicit,backend"},
        {.name = "pinned alias", .body = CHAT("coder", "hi"), .tier = GW_TIER_LOCAL,
         .backend = "vl", .stage = "explicit", .reason = "explicit:model=coder",
         .trace = "explicit,backend"},
        {.name = "pinned frontier backend", .body = CHAT("fr", "hi"), .tier = GW_TIER_FRONTIER,
         .backend = "fr", .reason = "explicit:model=fr"},
        {.name = "unknown model", .body = CHAT("gpt-9", "hi"), .rc = -1, .err_status = 404,
         .trace = "explicit"},
        {.name = "tier alias local", .body = CHAT("local", "hi"), .tier = GW_TIER_LOCAL,
         .backend = "vl", .stage = "explicit", .reason = "explicit:tier=local",
         .trace = "explicit,backend"},
        {.name = "tier alias frontier", .body = CHAT("frontier", "hi"), .tier = GW_TIER_FRONTIER,
         .backend = "fr", .stage = "explicit", .reason = "explicit:tier=frontier"},
        {.name = "auto goes on", .body = CHAT("auto", "hi"), .tier = GW_TIER_LOCAL,
         .stage = "default", .first = "default", .reason = "default:local",
         .trace = "explicit,rules,classifier,default,backend"},
        {.name = "tier header without may_force: ignored", .body = CHAT("auto", "hi"),
         .tier_hdr = "frontier", .force = false, .tier = GW_TIER_LOCAL, .stage = "default",
         .reason = "default:local", .trace = "explicit,explicit,rules,classifier,default,backend"},
        {.name = "tier header with may_force", .body = CHAT("auto", "hi"),
         .tier_hdr = "frontier", .force = true, .tier = GW_TIER_FRONTIER, .backend = "fr",
         .stage = "explicit", .first = "explicit", .reason = "explicit:header=frontier",
         .trace = "explicit,backend"},
        {.name = "tier header local with may_force", .body = CHAT("auto", "hi"),
         .tier_hdr = "local", .force = true, .tier = GW_TIER_LOCAL, .backend = "vl",
         .reason = "explicit:header=local"},
        {.name = "tier header not a tier", .body = CHAT("auto", "hi"), .tier_hdr = "banana",
         .force = true, .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "tier header empty", .body = CHAT("auto", "hi"), .tier_hdr = "", .force = true,
         .tier = GW_TIER_LOCAL, .reason = "default:local",
         .trace = "explicit,rules,classifier,default,backend"},
        {.name = "explicit beats a matching rule", .body = CHAT("frontier", "hi"),
         .hname = "x-data-class", .hval = "restricted", .tier = GW_TIER_FRONTIER,
         .reason = "explicit:tier=frontier", .trace = "explicit,backend"},
        {.name = "text input (route CLI)", .text = "hello", .tier = GW_TIER_LOCAL,
         .reason = "default:local"},
    };
    run_cases(CFG_RULES, cases, GW_ARRAY_LEN(cases));
}

/* ---- rules ---------------------------------------------------------------- */

static void test_rules(void **state)
{
    (void)state;
    static const struct rcase cases[] = {
        {.name = "header rule", .body = CHAT("auto", "hi"), .hname = "x-data-class",
         .hval = "restricted", .tier = GW_TIER_LOCAL, .backend = "vl", .stage = "rules",
         .first = "rules", .reason = "rule:restricted", .trace = "explicit,rules,backend"},
        {.name = "header name is case-insensitive", .body = CHAT("auto", "hi"),
         .hname = "X-Data-Class", .hval = "restricted", .tier = GW_TIER_LOCAL,
         .reason = "rule:restricted"},
        {.name = "header with another value", .body = CHAT("auto", "hi"),
         .hname = "x-data-class", .hval = "public", .tier = GW_TIER_LOCAL,
         .reason = "default:local"},
        {.name = "metadata rule",
         .body = "{\"model\":\"auto\",\"metadata\":{\"team\":\"research\"},"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         .tier = GW_TIER_FRONTIER, .backend = "fr", .stage = "rules",
         .reason = "rule:research", .trace = "explicit,rules,backend"},
        {.name = "metadata other value",
         .body = "{\"model\":\"auto\",\"metadata\":{\"team\":\"sales\"},"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "metadata not a string",
         .body = "{\"model\":\"auto\",\"metadata\":{\"team\":7},"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "regex rule", .body = CHAT("auto", "this is CONFIDENTIAL, keep it here"),
         .tier = GW_TIER_LOCAL, .stage = "rules", .reason = "rule:confidential"},
        {.name = "regex needs a word", .body = CHAT("auto", "nonconfidentiality"),
         .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "regex looks at the last user message",
         .body = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":"
                 "\"confidential\"},{\"role\":\"assistant\",\"content\":\"ok\"},"
                 "{\"role\":\"user\",\"content\":\"and now?\"}]}",
         .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "regex text input", .text = "a confidential note", .tier = GW_TIER_LOCAL,
         .reason = "rule:confidential"},
        {.name = "images rule (backend)",
         .body = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":" IMG_CONTENT
                 "}]}",
         .tier = GW_TIER_FRONTIER, .backend = "fr", .stage = "rules", .reason = "rule:pictures",
         .trace = "explicit,rules,backend"},
        {.name = "anthropic image block",
         .body = "{\"model\":\"auto\",\"max_tokens\":10,\"messages\":[{\"role\":\"user\","
                 "\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"base64\","
                 "\"media_type\":\"image/png\",\"data\":\"AAAA\"}}]}]}",
         .anthropic = true, .tier = GW_TIER_FRONTIER, .reason = "rule:pictures"},
        /* first matching rule wins */
        {.name = "header before metadata",
         .body = "{\"model\":\"auto\",\"metadata\":{\"team\":\"research\"},"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         .hname = "x-data-class", .hval = "restricted", .tier = GW_TIER_LOCAL,
         .reason = "rule:restricted"},
        {.name = "metadata before regex",
         .body = "{\"model\":\"auto\",\"metadata\":{\"team\":\"research\"},"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"confidential\"}]}",
         .tier = GW_TIER_FRONTIER, .reason = "rule:research"},
        {.name = "regex before images",
         .body = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":"
                 "[{\"type\":\"text\",\"text\":\"confidential scan\"},"
                 "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AA\"}}]}]}",
         .tier = GW_TIER_LOCAL, .reason = "rule:confidential"},
        /* rules are hard: constraints don't move them */
        {.name = "rule local while spilling", .body = CHAT("auto", "hi"),
         .hname = "x-data-class", .hval = "restricted", .state = st_spill_queue,
         .tier = GW_TIER_LOCAL, .stage = "rules", .reason = "rule:restricted",
         .trace = "explicit,rules,backend"},
        {.name = "rule local with tools the local model lacks",
         .body = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]" TOOLS
                 "}",
         .hname = "x-data-class", .hval = "restricted", .tier = GW_TIER_LOCAL,
         .reason = "rule:restricted"},
        {.name = "rule local, local down: 503, not frontier", .body = CHAT("auto", "hi"),
         .hname = "x-data-class", .hval = "restricted", .state = st_local_down, .rc = -1,
         .err_status = 503, .first = "rules"},
        {.name = "rule frontier, frontier down: 503, not local",
         .body = "{\"model\":\"auto\",\"metadata\":{\"team\":\"research\"},"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
         .state = st_frontier_down, .rc = -1, .err_status = 503},
    };
    run_cases(CFG_RULES, cases, GW_ARRAY_LEN(cases));
}

/* a user message of n filler bytes with word at the start, middle or end */
static char *long_body(size_t n, const char *word, int where)
{
    size_t wl = strlen(word);
    char *text = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        text[i] = "lorem ipsum dolor sit amet "[i % 27];
    size_t at = where < 0 ? 0 : where == 0 ? n / 2 : n - wl;
    if (at)
        text[at - 1] = ' ';
    memcpy(text + at, word, wl);
    if (at + wl < n)
        text[at + wl] = ' ';
    text[n] = '\0';
    json_t *b = json_pack("{s:s, s:[{s:s, s:s}]}", "model", "auto", "messages", "role", "user",
                          "content", text);
    char *s = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    free(text);
    return s;
}

static void test_rules_long_input(void **state)
{
    (void)state;
    char *end = long_body(100 * 1000, "confidential", 1);
    char *start = long_body(100 * 1000, "confidential", -1);
    char *small = long_body(4000, "x", 1);
    const struct rcase cases[] = {
        /* also over min_chars (huge) and the local window: the regex rule
         * comes first, and a rule is not moved by the context constraint */
        {.name = "100 KB, match at the end", .body = end, .tier = GW_TIER_LOCAL,
         .stage = "rules", .reason = "rule:confidential", .trace = "explicit,rules,backend"},
        {.name = "100 KB, match at the start", .body = start, .tier = GW_TIER_LOCAL,
         .reason = "rule:confidential"},
        {.name = "under min_chars", .body = small, .tier = GW_TIER_LOCAL,
         .reason = "default:local"},
    };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    run_cases(CFG_RULES, cases, GW_ARRAY_LEN(cases));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (ms > 2000)
        fail_msg("4 decisions on 100 KB inputs took %.0f ms", ms);
    drop(g_cfg);
    g_cfg = NULL;

    /* min_chars on its own (no regex hit): 20000+ chars -> frontier */
    char *big = long_body(30 * 1000, "nothing", 1);
    const struct rcase cases2[] = {
        {.name = "min_chars rule", .body = big, .tier = GW_TIER_FRONTIER, .stage = "rules",
         .reason = "rule:huge"},
    };
    run_cases(CFG_RULES, cases2, GW_ARRAY_LEN(cases2));
    free(end);
    free(start);
    free(small);
    free(big);
}

/* The regex sees the whole last user message, whatever its content parts:
 * the keyword in the second text part of the message still matches. */
static void test_rules_regex_text_parts(void **state)
{
    (void)state;
    static const struct rcase cases[] = {
        {.name = "keyword in the second text part",
         .body = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":"
                 "[{\"type\":\"text\",\"text\":\"please review\"},"
                 "{\"type\":\"text\",\"text\":\"the confidential merger memo\"}]}]}",
         .tier = GW_TIER_LOCAL, .reason = "rule:confidential"},
    };
    run_cases(CFG_RULES, cases, GW_ARRAY_LEN(cases));
}

/* A long UTF-8 message whose byte length puts the regex windows in the
 * middle of a character: the rule must still behave as on the valid text
 * (PCRE2 is told to skip the UTF check, so the slices must be valid). A
 * C1 control (U+0080..U+009F) never occurs in a text made of U+20AC only. */
static void test_rules_regex_utf8_window(void **state)
{
    (void)state;
    const char *yaml = BACKENDS
        "router:\n"
        "  classifier: off\n"
        "  rules:\n"
        "    - { name: c1, regex: '[\\x{80}-\\x{9f}]', tier: frontier }\n";
    /* 34000 x U+20AC = 102000 bytes; 102000 - 8192 = 93808 = 3*31269 + 1 */
    size_t n = 34000;
    char *text = malloc(n * 3 + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(text + 3 * i, "\xe2\x82\xac", 3);
    text[n * 3] = '\0';
    json_t *b = json_pack("{s:s, s:[{s:s, s:s}]}", "model", "auto", "messages", "role", "user",
                          "content", text);
    char *body = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    free(text);
    const struct rcase cases[] = {
        /* too big for vl's window: the context constraint moves it, but
         * the rule must not have matched */
        {.name = "window cut mid-character: no false match", .body = body,
         .tier = GW_TIER_FRONTIER, .stage = "constraint", .first = "default",
         .reason = "default:local; constraint:context 25500>1000"},
    };
    run_cases(yaml, cases, GW_ARRAY_LEN(cases));
    free(body);
}

/* ---- classifier ------------------------------------------------------------ */

#define CODE_PROMPT "Write a Python function that merges two sorted lists."
#define PLAN_PROMPT                                                                 \
    "Plan a step-by-step migration of our monolith to microservices, with milestones, " \
    "risks and a rollback strategy for each phase."

static bool builtin_trained(void)
{
    const struct gw_classifier *c = gw_classifier_builtin();
    return c && c->nrows > 0;
}

static void test_classifier_stage(void **state)
{
    (void)state;
    if (!builtin_trained())
        skip();
    static const struct rcase cases[] = {
        {.name = "code -> local", .body = CHAT("auto", CODE_PROMPT), .tier = GW_TIER_LOCAL,
         .backend = "vl", .stage = "classifier", .first = "classifier",
         .reason = "classifier:code p=*", .label = "code",
         .trace = "explicit,rules,classifier,backend"},
        {.name = "planning -> frontier", .body = CHAT("auto", PLAN_PROMPT),
         .tier = GW_TIER_FRONTIER, .backend = "fr", .stage = "classifier",
         .reason = "classifier:planning p=*", .label = "planning",
         .trace = "explicit,rules,classifier,backend"},
        /* rules beat the classifier */
        {.name = "rule before classifier", .body = CHAT("auto", PLAN_PROMPT),
         .hname = "x-data-class", .hval = "restricted", .tier = GW_TIER_LOCAL,
         .stage = "rules", .reason = "rule:restricted", .trace = "explicit,rules,backend"},
        {.name = "explicit before classifier", .body = CHAT("frontier", CODE_PROMPT),
         .tier = GW_TIER_FRONTIER, .reason = "explicit:tier=frontier",
         .trace = "explicit,backend"},
        /* a classifier decision is soft: constraints move it */
        {.name = "code, spilling", .body = CHAT("auto", CODE_PROMPT), .state = st_spill_queue,
         .tier = GW_TIER_FRONTIER, .stage = "spill", .first = "classifier",
         .reason = "classifier:code p=*; spill:local-queue 14>8", .label = "code",
         .trace = "explicit,rules,classifier,constraint,backend"},
        {.name = "planning, frontier down", .body = CHAT("auto", PLAN_PROMPT),
         .state = st_frontier_down, .tier = GW_TIER_LOCAL, .stage = "constraint",
         .first = "classifier", .reason = "classifier:planning p=*; constraint:frontier-down",
         .label = "planning"},
    };
    run_cases(CFG_CLS, cases, GW_ARRAY_LEN(cases));
    /* the exact probability in the reason is the label's */
    reset_state(g_cfg);
    struct gw_route r;
    json_t *body;
    assert_int_equal(decide(g_cfg, &cases[0], &r, NULL, &body), 0);
    char want[64];
    snprintf(want, sizeof(want), "classifier:code p=%.2f", r.confidence);
    assert_string_equal(r.reason, want);
    assert_true(r.confidence >= 0.55 && r.confidence <= 1.0);
    assert_int_equal(r.nprobs, 10);
    float sum = 0;
    for (size_t i = 0; i < r.nprobs; i++)
        sum += r.probs[i];
    assert_true(sum > 0.99f && sum < 1.01f);
    json_decref(body);
}

static void test_classifier_ambiguous(void **state)
{
    (void)state;
    if (!builtin_trained())
        skip();
    static const struct rcase cases[] = {
        {.name = "below min_confidence -> frontier", .body = CHAT("auto", CODE_PROMPT),
         .tier = GW_TIER_FRONTIER, .backend = "fr", .stage = "classifier",
         .reason = "classifier:ambiguous code p=*", .label = "code",
         .trace = "explicit,rules,classifier,backend"},
        /* ambiguous goes frontier; with the frontier down it comes back */
        {.name = "ambiguous, frontier down", .body = CHAT("auto", CODE_PROMPT),
         .state = st_frontier_down, .tier = GW_TIER_LOCAL, .stage = "constraint",
         .reason = "classifier:ambiguous code p=*; constraint:frontier-down", .label = "code"},
    };
    run_cases(CFG_CLS_AMBIGUOUS, cases, GW_ARRAY_LEN(cases));
    reset_state(g_cfg);
    struct gw_route r;
    json_t *body;
    assert_int_equal(decide(g_cfg, &cases[0], &r, NULL, &body), 0);
    assert_non_null(strstr(r.reason, "ambiguous"));
    assert_true(r.confidence < 1.0);
    json_decref(body);
}

static void test_classifier_routes_and_off(void **state)
{
    (void)state;
    if (builtin_trained()) {
        static const struct rcase routes[] = {
            {.name = "routes: code -> frontier", .body = CHAT("auto", CODE_PROMPT),
             .tier = GW_TIER_FRONTIER, .backend = "fr", .stage = "classifier",
             .reason = "classifier:code p=*", .label = "code"},
            /* the other defaults stay */
            {.name = "planning still frontier", .body = CHAT("auto", PLAN_PROMPT),
             .tier = GW_TIER_FRONTIER, .reason = "classifier:planning p=*", .label = "planning"},
            {.name = "summarization still local",
             .body = CHAT("auto", "Summarize this article in three bullet points: Researchers "
                                  "announced a new battery chemistry that charges in minutes."),
             .tier = GW_TIER_LOCAL, .reason = "classifier:summarization p=*",
             .label = "summarization"},
        };
        run_cases(CFG_CLS_ROUTES, routes, GW_ARRAY_LEN(routes));
        drop(g_cfg);
        g_cfg = NULL;
    }
    static const struct rcase off[] = {
        {.name = "classifier off -> default", .body = CHAT("auto", CODE_PROMPT),
         .tier = GW_TIER_LOCAL, .stage = "default", .first = "default",
         .reason = "default:local", .trace = "explicit,rules,classifier,default,backend"},
    };
    run_cases(CFG_PLAIN, off, GW_ARRAY_LEN(off));
    drop(g_cfg);
    g_cfg = NULL;
    static const struct rcase off_fr[] = {
        {.name = "classifier off, default frontier", .body = CHAT("auto", CODE_PROMPT),
         .tier = GW_TIER_FRONTIER, .stage = "default", .reason = "default:frontier",
         .trace = "explicit,rules,classifier,default,backend"},
    };
    run_cases(CFG_DEFAULT_FRONTIER, off_fr, GW_ARRAY_LEN(off_fr));
    /* the trace says the classifier is off */
    reset_state(g_cfg);
    struct gw_buf tr;
    gw_buf_init(&tr, 0);
    struct gw_route r;
    json_t *body;
    assert_int_equal(decide(g_cfg, &off_fr[0], &r, &tr, &body), 0);
    assert_non_null(strstr(tr.data, "classifier: off\n"));
    assert_null(r.label);
    assert_true(r.confidence == 0);
    gw_buf_free(&tr);
    json_decref(body);
}

/* ---- constraints ------------------------------------------------------------ */

static void test_constraints(void **state)
{
    (void)state;
    char *ctx_over = long_body(8000, "x", 1);   /* 8000 / 4 = 2000 tokens > 1000 */
    char *ctx_edge = long_body(4000, "x", 1);   /* exactly 1000: fits */
    char *ctx_over_pin = long_body(8000, "x", 1);
    /* pinned to vl: the same size is not moved */
    char *p = strstr(ctx_over_pin, "\"auto\"");
    assert_non_null(p);
    memcpy(p, "\"vl\"  ", 6); /* JSON whitespace keeps it valid */
    const struct rcase cases[] = {
        {.name = "context window", .body = ctx_over, .tier = GW_TIER_FRONTIER, .backend = "fr",
         .stage = "constraint", .first = "default",
         .reason = "default:local; constraint:context 2000>1000",
         .trace = "explicit,rules,classifier,default,constraint,backend"},
        {.name = "context window, exactly full", .body = ctx_edge, .tier = GW_TIER_LOCAL,
         .reason = "default:local"},
        {.name = "context window, pinned", .body = ctx_over_pin, .tier = GW_TIER_LOCAL,
         .reason = "explicit:model=vl"},
        {.name = "images, no images feature",
         .body = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":" IMG_CONTENT
                 "}]}",
         .tier = GW_TIER_FRONTIER, .stage = "constraint", .first = "default",
         .reason = "default:local; constraint:images"},
        {.name = "images in an anthropic tool_result",
         .body = "{\"model\":\"auto\",\"max_tokens\":9,\"messages\":[{\"role\":\"user\","
                 "\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":"
                 "[{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":"
                 "\"image/png\",\"data\":\"AA\"}}]}]}]}",
         .anthropic = true, .tier = GW_TIER_FRONTIER, .reason = "default:local; constraint:images"},
        {.name = "tools, no tools feature",
         .body = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]" TOOLS
                 "}",
         .tier = GW_TIER_FRONTIER, .stage = "constraint", .reason = "default:local; constraint:tools"},
        {.name = "empty tools list", .body = "{\"model\":\"auto\",\"messages\":[{\"role\":"
                                              "\"user\",\"content\":\"hi\"}],\"tools\":[]}",
         .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "tier alias keeps images local",
         .body = "{\"model\":\"local\",\"messages\":[{\"role\":\"user\",\"content\":" IMG_CONTENT
                 "}]}",
         .tier = GW_TIER_LOCAL, .reason = "explicit:tier=local"},
        {.name = "local down", .body = CHAT("auto", "hi"), .state = st_local_down,
         .tier = GW_TIER_FRONTIER, .backend = "fr", .stage = "constraint", .first = "default",
         .reason = "default:local; constraint:local-down",
         .trace = "explicit,rules,classifier,default,constraint,backend"},
        {.name = "one local URL down", .body = CHAT("auto", "hi"), .state = st_local_half_down,
         .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "local down, offline ignores health", .body = CHAT("auto", "hi"),
         .state = st_local_down, .offline = true, .tier = GW_TIER_LOCAL,
         .reason = "default:local"},
        {.name = "local pinned and down: 503", .body = CHAT("coder", "hi"),
         .state = st_local_down, .rc = -1, .err_status = 503, .first = "explicit"},
        {.name = "tier alias local and down: 503", .body = CHAT("local", "hi"),
         .state = st_local_down, .rc = -1, .err_status = 503},
        {.name = "everything down: 503", .body = CHAT("auto", "hi"), .state = st_all_down,
         .rc = -1, .err_status = 503},
        {.name = "spill (queue)", .body = CHAT("auto", "hi"), .state = st_spill_queue,
         .tier = GW_TIER_FRONTIER, .backend = "fr", .stage = "spill", .first = "default",
         .reason = "default:local; spill:local-queue 14>8",
         .trace = "explicit,rules,classifier,default,constraint,backend"},
        {.name = "spill (kv cache)", .body = CHAT("auto", "hi"), .state = st_spill_kv,
         .tier = GW_TIER_FRONTIER, .stage = "spill",
         .reason = "default:local; spill:local-kv 0.95>0.90"},
        {.name = "one URL spilling, one has room", .body = CHAT("auto", "hi"),
         .state = st_spill_one, .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "the only healthy URL spilling", .body = CHAT("auto", "hi"),
         .state = st_spill_healthy_one, .tier = GW_TIER_FRONTIER,
         .reason = "default:local; spill:local-queue 12>8"},
        {.name = "spilling but the frontier is down", .body = CHAT("auto", "hi"),
         .state = st_spill_frontier_down, .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "spilling, offline", .body = CHAT("auto", "hi"), .state = st_spill_queue,
         .offline = true, .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "load numbers without the spill flag", .body = CHAT("auto", "hi"),
         .state = st_load_without_flag, .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "spilling and down: down wins", .body = CHAT("auto", "hi"),
         .state = st_spill_and_local_down, .tier = GW_TIER_FRONTIER,
         .reason = "default:local; constraint:local-down"},
        {.name = "pinned while spilling", .body = CHAT("vl", "hi"), .state = st_spill_queue,
         .tier = GW_TIER_LOCAL, .stage = "explicit", .reason = "explicit:model=vl",
         .trace = "explicit,backend"},
        {.name = "tier alias while spilling", .body = CHAT("local", "hi"),
         .state = st_spill_queue, .tier = GW_TIER_LOCAL, .reason = "explicit:tier=local"},
        {.name = "forced header while spilling", .body = CHAT("auto", "hi"),
         .tier_hdr = "local", .force = true, .state = st_spill_queue, .tier = GW_TIER_LOCAL,
         .reason = "explicit:header=local"},
        {.name = "frontier alias, frontier down: 503", .body = CHAT("frontier", "hi"),
         .state = st_frontier_down, .rc = -1, .err_status = 503},
    };
    run_cases(CFG_PLAIN, cases, GW_ARRAY_LEN(cases));
    drop(g_cfg);
    g_cfg = NULL;

    static const struct rcase nospill[] = {
        /* no router.spill: the flags set by the scraper are not acted on */
        {.name = "spill not configured", .body = CHAT("auto", "hi"), .state = st_spill_queue,
         .tier = GW_TIER_LOCAL, .reason = "default:local"},
    };
    run_cases(CFG_NOSPILL, nospill, GW_ARRAY_LEN(nospill));
    drop(g_cfg);
    g_cfg = NULL;

    static const struct rcase frontier[] = {
        {.name = "frontier down -> local", .body = CHAT("auto", "hi"), .state = st_frontier_down,
         .tier = GW_TIER_LOCAL, .backend = "vl", .stage = "constraint", .first = "default",
         .reason = "default:frontier; constraint:frontier-down",
         .trace = "explicit,rules,classifier,default,constraint,backend"},
        {.name = "frontier up", .body = CHAT("auto", "hi"), .tier = GW_TIER_FRONTIER,
         .reason = "default:frontier"},
        /* only local is checked for context / features / spill */
        {.name = "frontier, images", .body = "{\"model\":\"auto\",\"messages\":[{\"role\":"
                                              "\"user\",\"content\":" IMG_CONTENT "}]}",
         .state = st_spill_queue, .tier = GW_TIER_FRONTIER, .reason = "default:frontier"},
    };
    run_cases(CFG_DEFAULT_FRONTIER, frontier, GW_ARRAY_LEN(frontier));
    drop(g_cfg);
    g_cfg = NULL;

    char *cpt_over = long_body(3003, "x", 1); /* 3003 / 3.0 = 1001 > 1000 */
    char *cpt_edge = long_body(3000, "x", 1);
    const struct rcase feat[] = {
        {.name = "images with features: [images]",
         .body = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":" IMG_CONTENT
                 "}]}",
         .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "tools with features: [tools]",
         .body = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]" TOOLS
                 "}",
         .tier = GW_TIER_LOCAL, .reason = "default:local"},
        {.name = "default chars_per_token 3", .body = cpt_over, .tier = GW_TIER_FRONTIER,
         .reason = "default:local; constraint:context 1001>1000"},
        {.name = "default chars_per_token 3, fits", .body = cpt_edge, .tier = GW_TIER_LOCAL,
         .reason = "default:local"},
        /* a target without vLLM load (no spill config) is never spilling */
    };
    run_cases(CFG_FEATURES, feat, GW_ARRAY_LEN(feat));
    free(ctx_over);
    free(ctx_edge);
    free(ctx_over_pin);
    free(cpt_over);
    free(cpt_edge);
}

/* The system prompt counts towards the size (Anthropic top-level system,
 * OpenAI system message), so does every message of the conversation. */
static void test_constraint_counts_whole_conversation(void **state)
{
    (void)state;
    /* 2 x 2100 chars = 4200 / 4 = 1050 tokens > 1000 */
    char a[2101];
    memset(a, 'a', 2100);
    a[2100] = '\0';
    json_t *oa = json_pack("{s:s, s:[{s:s, s:s}, {s:s, s:s}]}", "model", "auto", "messages",
                           "role", "system", "content", a, "role", "user", "content", a);
    json_t *an = json_pack("{s:s, s:i, s:s, s:[{s:s, s:s}]}", "model", "auto", "max_tokens", 9,
                           "system", a, "messages", "role", "user", "content", a);
    json_t *an_blocks = json_pack("{s:s, s:i, s:[{s:s, s:s}], s:[{s:s, s:s}]}", "model", "auto",
                                  "max_tokens", 9, "system", "type", "text", "text", a,
                                  "messages", "role", "user", "content", a);
    char *s1 = json_dumps(oa, JSON_COMPACT), *s2 = json_dumps(an, JSON_COMPACT),
         *s3 = json_dumps(an_blocks, JSON_COMPACT);
    const struct rcase cases[] = {
        {.name = "openai system + user", .body = s1, .tier = GW_TIER_FRONTIER,
         .reason = "default:local; constraint:context 1050>1000"},
        {.name = "anthropic system string + user", .body = s2, .anthropic = true,
         .tier = GW_TIER_FRONTIER, .reason = "default:local; constraint:context 1050>1000"},
        {.name = "anthropic system blocks + user", .body = s3, .anthropic = true,
         .tier = GW_TIER_FRONTIER, .reason = "default:local; constraint:context 1050>1000"},
    };
    run_cases(CFG_PLAIN, cases, GW_ARRAY_LEN(cases));
    json_decref(oa);
    json_decref(an);
    json_decref(an_blocks);
    free(s1);
    free(s2);
    free(s3);
}

/* In the hysteresis band (spilling, queue between back_below and
 * waiting_above) the request still spills; the reason has the numbers. */
static void test_spill_hysteresis_band(void **state)
{
    (void)state;
    g_cfg = load(CFG_PLAIN);
    reset_state(g_cfg);
    set_target(g_cfg, "vl", 0, true, true, 1, 6, 0.2);
    set_target(g_cfg, "vl", 1, true, true, 1, 5, 0.2);
    const struct rcase k = {.name = "band", .body = CHAT("auto", "hi")};
    struct gw_route r;
    json_t *body;
    assert_int_equal(decide(g_cfg, &k, &r, NULL, &body), 0);
    assert_int_equal(r.tier, GW_TIER_FRONTIER);
    assert_string_equal(r.stage, "spill");
    assert_true(strncmp(r.reason, "default:local; spill:local-queue 6", 34) == 0);
    json_decref(body);
}

/* gw_route_tier_backend: config order is priority, unhealthy skipped. */
static void test_tier_backend(void **state)
{
    (void)state;
    g_cfg = load(CFG_PLAIN);
    reset_state(g_cfg);
    assert_string_equal(gw_route_tier_backend(g_cfg, GW_TIER_LOCAL)->name, "vl");
    assert_string_equal(gw_route_tier_backend(g_cfg, GW_TIER_FRONTIER)->name, "fr");
    st_local_down(g_cfg);
    assert_null(gw_route_tier_backend(g_cfg, GW_TIER_LOCAL));
    st_local_half_down(g_cfg);
    set_target(g_cfg, "vl", 1, true, false, 0, 0, 0);
    assert_string_equal(gw_route_tier_backend(g_cfg, GW_TIER_LOCAL)->name, "vl");
    assert_null(gw_route_classifier(g_cfg)); /* classifier: off */
}

/* With two local backends, the second one is used when the first is down;
 * and a spilling first backend does not send work to the frontier while
 * the second local backend has room. */
static void test_two_local_backends(void **state)
{
    (void)state;
    const char *yaml =
        "backends:\n"
        "  a:\n"
        "    tier: local\n"
        "    provider: vllm\n"
        "    url: http://10.0.0.1:8000\n"
        "    model: qwen\n"
        "  b:\n"
        "    tier: local\n"
        "    provider: vllm\n"
        "    url: http://10.0.0.2:8000\n"
        "    model: qwen\n"
        "  fr:\n"
        "    tier: frontier\n"
        "    provider: openai\n"
        "    url: https://api.example.com/v1\n"
        "    model: gpt\n"
        "router:\n"
        "  classifier: off\n"
        "  spill: { waiting_above: 8, back_below: 4 }\n";
    g_cfg = load(yaml);
    reset_state(g_cfg);
    const struct rcase k = {.name = "auto", .body = CHAT("auto", "hi")};
    struct gw_route r;
    json_t *body;
    set_target(g_cfg, "a", 0, false, false, 0, 0, 0);
    assert_int_equal(decide(g_cfg, &k, &r, NULL, &body), 0);
    json_decref(body);
    assert_int_equal(r.tier, GW_TIER_LOCAL);
    assert_string_equal(r.backend->name, "b");
    assert_string_equal(r.reason, "default:local");

    reset_state(g_cfg);
    set_target(g_cfg, "a", 0, true, true, 1, 20, 0.5);
    assert_int_equal(decide(g_cfg, &k, &r, NULL, &body), 0);
    json_decref(body);
    if (r.tier != GW_TIER_LOCAL)
        fail_msg("backend a spilling, b idle: went %s (%s), want local on b",
                 gw_tier_str(r.tier), r.reason);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_explicit, teardown),
        cmocka_unit_test_teardown(test_rules, teardown),
        cmocka_unit_test_teardown(test_rules_long_input, teardown),
        cmocka_unit_test_teardown(test_rules_regex_text_parts, teardown),
        cmocka_unit_test_teardown(test_rules_regex_utf8_window, teardown),
        cmocka_unit_test_teardown(test_classifier_stage, teardown),
        cmocka_unit_test_teardown(test_classifier_ambiguous, teardown),
        cmocka_unit_test_teardown(test_classifier_routes_and_off, teardown),
        cmocka_unit_test_teardown(test_constraints, teardown),
        cmocka_unit_test_teardown(test_constraint_counts_whole_conversation, teardown),
        cmocka_unit_test_teardown(test_spill_hysteresis_band, teardown),
        cmocka_unit_test_teardown(test_tier_backend, teardown),
        cmocka_unit_test_teardown(test_two_local_backends, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
