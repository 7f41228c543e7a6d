/*
 * router.c - the routing stages and constraints (see router.h).
 */
#include <math.h>
#include <stdio.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "gateway/gateway.h"
#include "provider/provider.h"
#include "router/router.h"

/* What the stages look at, extracted from the request once. */
struct features {
    struct gw_cls_input cls;    /* text views for the classifier and regexes */
    size_t chars;               /* all message text (and system) */
    bool images;
    bool tools;
};

enum verdict {
    PASS = 0,     /* no opinion: next stage */
    DECIDED = 1,  /* tier (and maybe backend) chosen */
    FAILED = 2,   /* the request can't be routed */
};

struct ctx {
    const struct gw_route_input *in;
    struct gw_route *r;
    struct features f;
    bool hard;    /* explicit or a rule decided: constraints don't move it */
};

typedef enum verdict (*stage_fn)(struct ctx *x);

static void trace(struct ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void trace(struct ctx *x, const char *fmt, ...)
{
    if (!x->in->trace)
        return;
    va_list ap;
    va_start(ap, fmt);
    gw_buf_vprintf(x->in->trace, fmt, ap);
    va_end(ap);
    gw_buf_puts(x->in->trace, "\n");
}

const struct gw_classifier *gw_route_classifier(const struct gw_config *cfg)
{
    if (cfg->classifier && strcmp(cfg->classifier, "off") == 0)
        return NULL;
    return cfg->classifier_model ? cfg->classifier_model : gw_classifier_builtin();
}

static bool backend_up(const struct ctx *x, const struct gw_backend_conf *b)
{
    return x->in->offline || gw_backend_healthy(b);
}

const struct gw_backend_conf *gw_route_tier_backend(const struct gw_config *cfg, enum gw_tier t)
{
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const struct gw_backend_conf *b = &cfg->backends[i];
        if (b->tier == t && gw_backend_healthy(b))
            return b;
    }
    return NULL;
}

static const struct gw_backend_conf *tier_backend(const struct ctx *x, enum gw_tier t)
{
    const struct gw_config *cfg = x->in->cfg;
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const struct gw_backend_conf *b = &cfg->backends[i];
        if (b->tier == t && backend_up(x, b))
            return b;
    }
    return NULL;
}

/* ---- features ---- */

static size_t text_len(json_t *content, bool *images)
{
    if (json_is_string(content))
        return json_string_length(content);
    size_t n = 0, i;
    json_t *part;
    if (!json_is_array(content))
        return 0;
    json_array_foreach(content, i, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!type)
            continue;
        if (strcmp(type, "text") == 0)
            n += json_string_length(json_object_get(part, "text"));
        else if (strcmp(type, "image_url") == 0 || strcmp(type, "image") == 0)
            *images = true;
        else if (strcmp(type, "tool_result") == 0)
            n += text_len(json_object_get(part, "content"), images);
    }
    return n;
}

static void extract(struct ctx *x)
{
    const struct gw_route_input *in = x->in;
    struct features *f = &x->f;
    memset(f, 0, sizeof(*f));
    if (!in->body) {
        gw_cls_input_from_text(in->text.p, in->text.len, &f->cls);
        f->chars = in->text.len;
        return;
    }
    json_t *msgs = json_object_get(in->body, "messages");
    gw_cls_input_from_messages(msgs, &f->cls);
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) f->chars += text_len(json_object_get(m, "content"), &f->images);
    json_t *sys = json_object_get(in->body, "system"); /* Anthropic */
    if (in->anthropic && sys) {
        f->chars += text_len(sys, &f->images);
        if (json_is_string(sys))
            f->cls.system = (gw_str){json_string_value(sys), json_string_length(sys)};
    }
    json_t *tools = json_object_get(in->body, "tools");
    f->tools = json_is_array(tools) && json_array_size(tools) > 0;
}

/* ---- stages ---- */

static enum verdict stage_explicit(struct ctx *x)
{
    const struct gw_route_input *in = x->in;
    struct gw_route *r = x->r;
    gw_str m = in->model;
    if (in->tier_header.p && in->tier_header.len) {
        int t = -1;
        if (gw_str_eq_c(in->tier_header, "local"))
            t = GW_TIER_LOCAL;
        else if (gw_str_eq_c(in->tier_header, "frontier"))
            t = GW_TIER_FRONTIER;
        if (t >= 0 && in->may_force_tier) {
            r->tier = (enum gw_tier)t;
            snprintf(r->reason, sizeof(r->reason), "explicit:header=%s", gw_tier_str(r->tier));
            trace(x, "explicit: x-hybridgw-tier forces %s", gw_tier_str(r->tier));
            x->hard = true;
            return DECIDED;
        }
        trace(x, "explicit: x-hybridgw-tier ignored (%s)",
              t < 0 ? "not local or frontier" : "this key may not force a tier");
    }
    if (gw_str_eq_c(m, "auto") || !m.p) {
        trace(x, "explicit: model auto, router decides");
        return PASS;
    }
    if (gw_str_eq_c(m, "local") || gw_str_eq_c(m, "frontier")) {
        r->tier = gw_str_eq_c(m, "local") ? GW_TIER_LOCAL : GW_TIER_FRONTIER;
        snprintf(r->reason, sizeof(r->reason), "explicit:tier=%s", gw_tier_str(r->tier));
        trace(x, "explicit: model %s forces the tier", gw_tier_str(r->tier));
        x->hard = true;
        return DECIDED;
    }
    const struct gw_backend_conf *b = gw_config_resolve_model(in->cfg, m.p, m.len);
    if (!b) {
        r->err_status = 404;
        r->err_code = "model_not_found";
        snprintf(r->err, sizeof(r->err),
                 "The model `%.*s` does not exist. Use auto, local, frontier or a model "
                 "listed by GET /v1/models.",
                 (int)GW_MIN(m.len, 100), m.p);
        gw_utf8_trim(r->err);
        trace(x, "explicit: unknown model");
        return FAILED;
    }
    r->tier = b->tier;
    r->backend = b;
    snprintf(r->reason, sizeof(r->reason), "explicit:model=%.*s", (int)GW_MIN(m.len, 100), m.p);
    gw_utf8_trim(r->reason);
    trace(x, "explicit: model pinned to backend %s", b->name);
    x->hard = true;
    return DECIDED;
}

static gw_str metadata_value(json_t *body, const char *key)
{
    json_t *v = json_object_get(json_object_get(body, "metadata"), key);
    if (json_is_string(v))
        return (gw_str){json_string_value(v), json_string_length(v)};
    return GW_STR_NULL;
}

/* Back up from p+n to the start of a UTF-8 character. */
static size_t char_start(const char *p, size_t n)
{
    while (n > 0 && ((unsigned char)p[n] & 0xc0) == 0x80)
        n--;
    return n;
}

static bool regex_match(const struct gw_rule *rule, gw_str s)
{
    if (!s.p || !rule->code)
        return false;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(rule->code, NULL);
    if (!md)
        return false;
    /* long pastes: the instruction is at the start or the end; match
     * there so the cost stays bounded whatever the size. The windows end
     * on character boundaries (the text is valid UTF-8: it came from
     * JSON), the head is not an end of subject for $, and the tail is
     * matched in the whole string from an offset, so \A and lookbehinds
     * see the real context. */
    const size_t window = 8192;
    int rc;
    if (s.len <= 2 * window) {
        rc = pcre2_match(rule->code, (PCRE2_SPTR)s.p, s.len, 0, PCRE2_NO_UTF_CHECK, md, NULL);
    } else {
        size_t head = char_start(s.p, window);
        rc = pcre2_match(rule->code, (PCRE2_SPTR)s.p, head, 0, PCRE2_NO_UTF_CHECK | PCRE2_NOTEOL,
                         md, NULL);
        if (rc < 0) {
            size_t from = char_start(s.p, s.len - window);
            rc = pcre2_match(rule->code, (PCRE2_SPTR)s.p, s.len, from, PCRE2_NO_UTF_CHECK, md,
                             NULL);
        }
    }
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* A regex rule looks at every text part of the last user message (a rule
 * that only read the first part could be dodged by splitting the text). */
static bool regex_rule_hit(const struct ctx *x, const struct gw_rule *rule)
{
    const struct gw_route_input *in = x->in;
    if (!in->body)
        return regex_match(rule, in->text);
    json_t *msgs = json_object_get(in->body, "messages");
    json_t *last = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (role && strcmp(role, "user") == 0)
            last = m;
    }
    json_t *content = json_object_get(last, "content");
    if (json_is_string(content))
        return regex_match(rule, (gw_str){json_string_value(content),
                                          json_string_length(content)});
    json_t *part;
    json_array_foreach(content, i, part) {
        json_t *t = json_object_get(part, "text");
        if (json_is_string(t) &&
            regex_match(rule, (gw_str){json_string_value(t), json_string_length(t)}))
            return true;
        /* Anthropic tool results carry text too */
        json_t *tc = json_object_get(part, "content");
        if (json_is_string(tc) &&
            regex_match(rule, (gw_str){json_string_value(tc), json_string_length(tc)}))
            return true;
    }
    return false;
}

static enum verdict stage_rules(struct ctx *x)
{
    const struct gw_route_input *in = x->in;
    const struct gw_config *cfg = in->cfg;
    for (size_t i = 0; i < cfg->nrules; i++) {
        const struct gw_rule *rule = &cfg->rules[i];
        bool hit = false;
        switch (rule->kind) {
        case GW_RULE_HEADER:
            if (in->header) {
                gw_str v = in->header(in->header_ud, rule->key);
                hit = v.p && gw_str_eq_c(v, rule->equals);
            }
            break;
        case GW_RULE_METADATA:
            hit = in->body && gw_str_eq_c(metadata_value(in->body, rule->key), rule->equals);
            break;
        case GW_RULE_REGEX:
            /* JSON strings are valid UTF-8, so PCRE2's check can be skipped */
            hit = regex_rule_hit(x, rule);
            break;
        case GW_RULE_MIN_CHARS:
            hit = x->f.chars >= rule->min_chars;
            break;
        case GW_RULE_IMAGES:
            hit = x->f.images;
            break;
        default:
            break;
        }
        if (!hit)
            continue;
        struct gw_route *r = x->r;
        r->tier = rule->tier;
        if (rule->backend)
            r->backend = gw_config_backend(cfg, rule->backend);
        snprintf(r->reason, sizeof(r->reason), "rule:%s", rule->name);
        trace(x, "rules: %s matched -> %s", rule->name,
              rule->backend ? rule->backend : gw_tier_str(rule->tier));
        x->hard = true;
        return DECIDED;
    }
    trace(x, "rules: %zu rules, none matched", cfg->nrules);
    return PASS;
}

/* The tier router.routes gives a label (default_tier when it has none). */
static enum gw_tier label_tier(const struct gw_config *cfg, const char *label, bool *routed)
{
    enum gw_tier t = cfg->default_tier;
    if (routed)
        *routed = false;
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (strcmp(cfg->route_labels[i], label) == 0) {
            t = cfg->route_tiers[i];
            if (routed)
                *routed = true;
        }
    return t;
}

static enum verdict stage_classifier(struct ctx *x)
{
    const struct gw_config *cfg = x->in->cfg;
    const struct gw_classifier *c = gw_route_classifier(cfg);
    if (!c) {
        trace(x, "classifier: off");
        return PASS;
    }
    struct gw_route *r = x->r;
    uint64_t t0 = gw_now_ns();
    int best = gw_classifier_predict(c, &x->f.cls, r->probs);
    r->classify_ns = gw_now_ns() - t0;
    r->nprobs = gw_classifier_nlabels(c);
    if (best < 0) {
        trace(x, "classifier: no prediction");
        return PASS;
    }
    r->label = gw_classifier_label(c, (size_t)best);
    r->confidence = r->probs[best];
    if (r->confidence < cfg->min_confidence) {
        /* ambiguous judgment is frontier work */
        r->tier = GW_TIER_FRONTIER;
        snprintf(r->reason, sizeof(r->reason), "classifier:ambiguous %s p=%.3g<%.3g", r->label,
                 r->confidence, cfg->min_confidence);
        trace(x, "classifier: %s p=%.3f below min_confidence %.2f -> frontier", r->label,
              r->confidence, cfg->min_confidence);
        return DECIDED;
    }
    r->tier = label_tier(cfg, r->label, NULL);
    bool routed;
    label_tier(cfg, r->label, &routed);
    snprintf(r->reason, sizeof(r->reason), "classifier:%s p=%.2f", r->label, r->confidence);
    trace(x, "classifier: %s p=%.3f -> %s%s", r->label, r->confidence, gw_tier_str(r->tier),
          routed ? "" : " (no route for the label: default_tier)");
    if (r->tier == GW_TIER_LOCAL && cfg->frontier_threshold > 0) {
        /* frontier work sent local costs quality, local work sent
         * frontier only money: when the frontier labels together are
         * likely enough, the request goes there */
        double pf = 0;
        for (size_t i = 0; i < r->nprobs; i++)
            if (label_tier(cfg, gw_classifier_label(c, i), NULL) == GW_TIER_FRONTIER)
                pf += r->probs[i];
        if (pf >= cfg->frontier_threshold) {
            r->tier = GW_TIER_FRONTIER;
            size_t n = strlen(r->reason);
            snprintf(r->reason + n, sizeof(r->reason) - n, " frontier=%.2f>=%.2f", pf,
                     cfg->frontier_threshold);
            trace(x, "classifier: frontier labels add up to %.3f >= frontier_threshold %.2f -> "
                     "frontier", pf, cfg->frontier_threshold);
        }
    }
    return DECIDED;
}

static enum verdict stage_default(struct ctx *x)
{
    struct gw_route *r = x->r;
    r->tier = x->in->cfg->default_tier;
    snprintf(r->reason, sizeof(r->reason), "default:%s", gw_tier_str(r->tier));
    trace(x, "default: %s", gw_tier_str(r->tier));
    return DECIDED;
}

struct stage {
    const char *name;
    stage_fn fn;
};

static const struct stage stages[] = {
    {"explicit", stage_explicit},
    {"rules", stage_rules},
    {"classifier", stage_classifier},
    {"default", stage_default},
};

/* ---- constraints ---- */

static void moved(struct ctx *x, enum gw_tier to, const char *stage, const char *why)
{
    struct gw_route *r = x->r;
    size_t n = strlen(r->reason);
    snprintf(r->reason + n, sizeof(r->reason) - n, "; %s", why);
    r->tier = to;
    r->backend = NULL;
    r->stage = stage;
    trace(x, "constraint: %s -> %s", why, gw_tier_str(to));
}

/* Is every healthy target of b over the spill thresholds? why gets the
 * numbers of the first one. */
static bool saturated(const struct gw_config *cfg, const struct gw_backend_conf *b, char *why,
                      size_t whylen)
{
    if (!b->targets || !b->provider->scrape_load)
        return false;
    bool any = false;
    for (size_t i = 0; i < b->nurls; i++) {
        struct gw_target *t = b->targets[i];
        if (!atomic_load(&t->healthy))
            continue;
        if (!atomic_load(&t->spilling))
            return false;
        if (!any) {
            double q = atomic_load(&t->load_waiting), kv = atomic_load(&t->load_kv);
            if (atomic_load(&t->spill_cause) == 2)
                snprintf(why, whylen, "local-kv %.2f>%.2f", kv, cfg->spill_kv_above);
            else if (q > (double)cfg->spill_waiting_above)
                snprintf(why, whylen, "local-queue %.0f>%llu", q,
                         (unsigned long long)cfg->spill_waiting_above);
            else /* between the marks: hysteresis keeps it spilling */
                snprintf(why, whylen, "local-queue %.0f, back at <=%llu", q,
                         (unsigned long long)cfg->spill_back_below);
        }
        any = true;
    }
    return any;
}

static void constraints(struct ctx *x)
{
    const struct gw_route_input *in = x->in;
    const struct gw_config *cfg = in->cfg;
    struct gw_route *r = x->r;
    if (x->hard)
        return;
    char why[128];
    if (r->tier == GW_TIER_LOCAL) {
        /* the first local backend (config order) that is up, fits the
         * prompt, has the features and is not saturated takes it; when none
         * does, the reason of the first one that is up moves it frontier */
        const struct gw_backend_conf *pick = NULL;
        const char *stage = NULL;
        size_t nlocal = 0;
        for (size_t i = 0; i < cfg->nbackends; i++)
            nlocal += cfg->backends[i].tier == GW_TIER_LOCAL;
        why[0] = '\0';
        for (size_t i = 0; i < cfg->nbackends && !pick; i++) {
            const struct gw_backend_conf *b = &cfg->backends[i];
            if (b->tier != GW_TIER_LOCAL || !backend_up(x, b))
                continue;
            char w[128];
            const char *st = "constraint";
            double cpt = b->chars_per_token > 0 ? b->chars_per_token : 3.0;
            double tokens = (double)x->f.chars / cpt;
            char sw[96];
            if (b->context_window && tokens > (double)b->context_window)
                snprintf(w, sizeof(w), "constraint:context %.0f>%llu", tokens,
                         (unsigned long long)b->context_window);
            else if (x->f.images && !b->images)
                snprintf(w, sizeof(w), "constraint:images");
            else if (x->f.tools && !b->tools)
                snprintf(w, sizeof(w), "constraint:tools");
            else if (cfg->spill && !in->offline && saturated(cfg, b, sw, sizeof(sw))) {
                snprintf(w, sizeof(w), "spill:%s", sw);
                st = "spill";
            } else {
                pick = b;
                break;
            }
            if (!why[0]) {
                snprintf(why, sizeof(why), "%s", w);
                stage = st;
            }
            if (nlocal > 1)
                trace(x, "constraint: %s rules out %s", w, b->name);
        }
        if (pick) {
            r->backend = pick;
            return;
        }
        if (!why[0]) {
            if (tier_backend(x, GW_TIER_FRONTIER))
                moved(x, GW_TIER_FRONTIER, "constraint", "constraint:local-down");
            return;
        }
        if (tier_backend(x, GW_TIER_FRONTIER))
            moved(x, GW_TIER_FRONTIER, stage, why);
        return;
    }
    if (!tier_backend(x, GW_TIER_FRONTIER) && tier_backend(x, GW_TIER_LOCAL))
        moved(x, GW_TIER_LOCAL, "constraint", "constraint:frontier-down");
}

int gw_route_decide(const struct gw_route_input *in, struct gw_route *r)
{
    struct ctx x;
    memset(&x, 0, sizeof(x));
    x.in = in;
    x.r = r;
    memset(r, 0, sizeof(*r));
    extract(&x);
    for (size_t i = 0; i < GW_ARRAY_LEN(stages); i++) {
        enum verdict v = stages[i].fn(&x);
        if (v == PASS)
            continue;
        r->stage = r->first_stage = stages[i].name;
        if (v == FAILED)
            return -1;
        break;
    }
    constraints(&x);
    if (!r->backend) {
        r->backend = tier_backend(&x, r->tier);
        if (!r->backend) {
            r->err_status = 503;
            r->err_code = "no_healthy_backend";
            snprintf(r->err, sizeof(r->err), "no healthy backend in the %s tier",
                     gw_tier_str(r->tier));
            trace(&x, "backend: none healthy in %s", gw_tier_str(r->tier));
            return -1;
        }
    } else if (!backend_up(&x, r->backend)) {
        r->err_status = 503;
        r->err_code = "no_healthy_backend";
        snprintf(r->err, sizeof(r->err), "backend %s has no healthy upstream",
                 r->backend->name);
        trace(&x, "backend: %s is down", r->backend->name);
        return -1;
    }
    trace(&x, "backend: %s (%s)", r->backend->name, gw_tier_str(r->tier));
    return 0;
}
