/*
 * sim_req.c - request parsing and validation (see sim_req.h).
 */
#include "sim_req.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "sim_opts.h"
#include "sim_out.h"
#include "sim_rng.h"

#define JSON_DEPTH_MAX 64   /* recursion bound when counting nested input */

static int reject(struct sim_err *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int reject(struct sim_err *e, const char *param, const char *fmt, ...)
{
    va_list ap;
    e->status = 400;
    snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return -1;
}

size_t sim_utf8_len(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* Walk state while reading the messages of one request. */
struct acc {
    uint64_t chars;        /* all message text */
    uint64_t sys_chars;    /* system prompt text */
    uint32_t n_msgs;
    uint32_t n_sys;
    uint64_t hash;
    bool cache_hint;
    bool in_system;        /* the text being added is system text */
    bool in_last_user;     /* the text being added is the last user message */
    struct sim_directives *dir;
    struct sim_err *e;
    int rc;
};

static void add_text(struct acc *a, const char *s, size_t n)
{
    size_t c = sim_utf8_len(s, n);
    a->chars += c;
    a->hash = sim_hash(a->hash, s, n);
    a->hash = sim_hash(a->hash, "\x1f", 1);
    if (a->in_system) {
        a->sys_chars += c;
        if (n >= 9 && memmem(s, n, "sim:cache", 9))
            a->cache_hint = true;
    }
    if (a->in_last_user && a->rc == 0) {
        char err[SIM_ERRMSG_MAX - 32];
        if (sim_directives_parse(s, n, a->dir, err, sizeof(err)) != 0)
            a->rc = reject(a->e, "messages", "%s", err);
    }
}

/* Add the characters of every string value in v (tool inputs, arguments). */
static void add_json_strings(struct acc *a, const json_t *v, int depth)
{
    const char *k;
    json_t *x;
    size_t i;
    if (depth > JSON_DEPTH_MAX)
        return;
    switch (json_typeof(v)) {
    case JSON_STRING:
        add_text(a, json_string_value(v), json_string_length(v));
        break;
    case JSON_OBJECT:
        json_object_foreach((json_t *)v, k, x) {
            add_text(a, k, strlen(k));
            add_json_strings(a, x, depth + 1);
        }
        break;
    case JSON_ARRAY:
        json_array_foreach(v, i, x)
            add_json_strings(a, x, depth + 1);
        break;
    default:
        break;
    }
}

/* Content of one message: a string, or an array of parts/blocks whose text
 * we take (text, tool_result contents, tool_use inputs). Other part types
 * (images, audio) add nothing. */
static void add_content(struct acc *a, const json_t *c, int depth)
{
    size_t i;
    json_t *part;
    if (json_is_string(c)) {
        add_text(a, json_string_value(c), json_string_length(c));
        return;
    }
    if (!json_is_array(c) || depth > 2)
        return;
    json_array_foreach(c, i, part) {
        json_t *t;
        if (!json_is_object(part))
            continue;
        if ((t = json_object_get(part, "text")) && json_is_string(t))
            add_text(a, json_string_value(t), json_string_length(t));
        if ((t = json_object_get(part, "content")))
            add_content(a, t, depth + 1);
        if ((t = json_object_get(part, "input")))
            add_json_strings(a, t, 0);
    }
}

static const char *role_of(const json_t *m)
{
    const json_t *r = json_object_get(m, "role");
    return json_is_string(r) ? json_string_value(r) : NULL;
}

/* Generate arguments that fit the first tool's JSON schema: up to four of
 * its properties, each with a value of the declared type (the first enum
 * value when there is one). Always a JSON object. */
static void gen_tool_args(struct sim_req *rq, const json_t *schema, uint64_t seed)
{
    struct sim_out o;
    uint64_t rng = sim_mix(seed ^ 0x7431u, rq->content_hash);
    const json_t *props = json_is_object(schema) ? json_object_get(schema, "properties") : NULL;
    const char *key;
    json_t *p;
    int n = 0;

    sim_out_fixed(&o, rq->tool_args, sizeof(rq->tool_args));
    sim_out_puts(&o, "{");
    if (json_is_object(props)) {
        json_object_foreach((json_t *)props, key, p) {
            size_t mark = o.len;
            const json_t *ty = json_is_object(p) ? json_object_get(p, "type") : NULL;
            const json_t *en = json_is_object(p) ? json_object_get(p, "enum") : NULL;
            const char *t = json_is_string(ty) ? json_string_value(ty) : "string";
            if (n == 4)
                break;
            if (n)
                sim_out_puts(&o, ",");
            sim_out_json_str(&o, key, strlen(key));
            sim_out_puts(&o, ":");
            if (json_is_array(en) && json_array_size(en) > 0 &&
                json_is_string(json_array_get(en, 0))) {
                const json_t *e0 = json_array_get(en, 0);
                sim_out_json_str(&o, json_string_value(e0), json_string_length(e0));
            } else if (strcmp(t, "integer") == 0) {
                sim_out_u64(&o, sim_rng_next(&rng) % 100);
            } else if (strcmp(t, "number") == 0) {
                uint64_t x = sim_rng_next(&rng) % 1000;
                sim_out_printf(&o, "%u.%u", (unsigned)(x / 10), (unsigned)(x % 10));
            } else if (strcmp(t, "boolean") == 0) {
                sim_out_puts(&o, sim_rng_next(&rng) & 1 ? "true" : "false");
            } else if (strcmp(t, "array") == 0) {
                sim_out_puts(&o, "[]");
            } else if (strcmp(t, "object") == 0) {
                sim_out_puts(&o, "{}");
            } else if (strcmp(t, "null") == 0) {
                sim_out_puts(&o, "null");
            } else {
                const char *w = sim_vocab_draw(&rng);
                sim_out_json_str(&o, w, strlen(w));
            }
            /* leave room for the closing brace; drop a property that
             * does not fit */
            if (o.err || o.len + 2 > sizeof(rq->tool_args)) {
                o.err = false;
                o.len = mark;
                o.p[o.len] = '\0';
                break;
            }
            n++;
        }
    }
    sim_out_puts(&o, "}");
}

/* Take the first tool's name and schema; `tool_choice: none` disables the
 * tool call. */
static int take_tools(struct sim_req *rq, const json_t *root, uint64_t seed, struct sim_err *e)
{
    const json_t *tools = json_object_get(root, "tools");
    const json_t *choice = json_object_get(root, "tool_choice");
    const json_t *t0, *name, *schema;

    if (!tools || json_is_null(tools))
        return 0;
    if (!json_is_array(tools))
        return reject(e, "tools", "tools: must be an array");
    if (json_array_size(tools) == 0)
        return 0;
    if (json_is_string(choice) && strcmp(json_string_value(choice), "none") == 0)
        return 0;
    if (json_is_object(choice)) {
        const json_t *ct = json_object_get(choice, "type");
        if (json_is_string(ct) && strcmp(json_string_value(ct), "none") == 0)
            return 0;
    }
    t0 = json_array_get(tools, 0);
    if (!json_is_object(t0))
        return reject(e, "tools", "tools.0: must be an object");
    if (rq->dialect == SIM_DIALECT_OPENAI) {
        const json_t *fn = json_object_get(t0, "function");
        if (!json_is_object(fn))
            return reject(e, "tools", "tools.0.function: Field required");
        name = json_object_get(fn, "name");
        schema = json_object_get(fn, "parameters");
    } else {
        name = json_object_get(t0, "name");
        schema = json_object_get(t0, "input_schema");
    }
    if (!json_is_string(name) || json_string_length(name) == 0)
        return reject(e, "tools", "tools.0: name: Field required");
    if (json_string_length(name) >= sizeof(rq->tool_name))
        return reject(e, "tools", "tools.0: name longer than %zu bytes", sizeof(rq->tool_name) - 1);
    memcpy(rq->tool_name, json_string_value(name), json_string_length(name) + 1);
    rq->has_tools = true;
    gen_tool_args(rq, schema, seed);
    return 0;
}

static int parse_openai(struct sim_req *rq, const json_t *root, struct acc *a, struct sim_err *e)
{
    const json_t *msgs = json_object_get(root, "messages");
    const json_t *v, *m;
    size_t i, last_user = SIZE_MAX;

    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return reject(e, "messages", "messages: must be a non-empty array");
    json_array_foreach(msgs, i, m) {
        const char *role;
        if (!json_is_object(m) || !(role = role_of(m)))
            return reject(e, "messages", "messages.%zu: must be an object with a role", i);
        if (strcmp(role, "user") == 0)
            last_user = i;
    }
    json_array_foreach(msgs, i, m) {
        const char *role = role_of(m);
        const json_t *tc;
        size_t k;
        json_t *call;
        a->in_system = strcmp(role, "system") == 0 || strcmp(role, "developer") == 0;
        a->in_last_user = i == last_user;
        a->hash = sim_hash(a->hash, role, strlen(role));
        add_content(a, json_object_get(m, "content"), 0);
        tc = json_object_get(m, "tool_calls");
        if (json_is_array(tc)) {
            json_array_foreach(tc, k, call) {
                const json_t *fn = json_object_get(call, "function");
                const json_t *args = json_is_object(fn) ? json_object_get(fn, "arguments") : NULL;
                if (json_is_string(args))
                    add_text(a, json_string_value(args), json_string_length(args));
            }
        }
        a->n_msgs++;
        if (a->in_system)
            a->n_sys++;
        if (a->rc)
            return a->rc;
    }
    a->in_system = a->in_last_user = false;

    v = json_object_get(root, "stream");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return reject(e, "stream", "stream: Input should be a valid boolean");
        rq->stream = json_is_true(v);
    }
    v = json_object_get(root, "stream_options");
    if (v && !json_is_null(v)) {
        const json_t *iu;
        if (!json_is_object(v))
            return reject(e, "stream_options", "stream_options: Input should be an object");
        if (!rq->stream)
            return reject(e, "stream_options",
                        "Stream options can only be defined when `stream=True`.");
        iu = json_object_get(v, "include_usage");
        if (iu && !json_is_null(iu) && !json_is_boolean(iu))
            return reject(e, "stream_options",
                        "stream_options.include_usage: Input should be a valid boolean");
        rq->include_usage = !iu || json_is_null(iu) || json_is_true(iu);
    }
    static const char *const mt_keys[2] = {"max_completion_tokens", "max_tokens"};
    for (int k = 0; k < 2 && rq->max_tokens < 0; k++) {
        v = json_object_get(root, mt_keys[k]);
        if (!v || json_is_null(v))
            continue;
        if (!json_is_integer(v) || json_integer_value(v) < 1)
            return reject(e, mt_keys[k], "%s: must be an integer >= 1", mt_keys[k]);
        rq->max_tokens = json_integer_value(v);
    }
    return 0;
}

static int parse_anthropic(struct sim_req *rq, const json_t *root, bool count_only,
                           struct acc *a, struct sim_err *e)
{
    const json_t *msgs = json_object_get(root, "messages");
    const json_t *sys = json_object_get(root, "system");
    const json_t *v, *m;
    size_t i, last_user = SIZE_MAX;

    if (!json_is_array(msgs))
        return reject(e, "messages", "messages: Field required");
    if (json_array_size(msgs) == 0)
        return reject(e, "messages", "messages: at least one message is required");
    json_array_foreach(msgs, i, m) {
        const char *role;
        if (!json_is_object(m) || !(role = role_of(m)))
            return reject(e, "messages", "messages.%zu: must be an object with a role", i);
        if (strcmp(role, "user") == 0)
            last_user = i;
        else if (strcmp(role, "assistant") != 0)
            return reject(e, "messages", "messages.%zu.role: Input should be 'user' or 'assistant'", i);
    }
    if (sys && !json_is_null(sys)) {
        if (!json_is_string(sys) && !json_is_array(sys))
            return reject(e, "system", "system: Input should be a valid string or list of blocks");
        a->in_system = true;
        add_content(a, sys, 0);
        a->in_system = false;
        a->n_msgs++;
        a->n_sys++;
    }
    json_array_foreach(msgs, i, m) {
        const char *role = role_of(m);
        a->in_last_user = i == last_user;
        a->hash = sim_hash(a->hash, role, strlen(role));
        add_content(a, json_object_get(m, "content"), 0);
        a->n_msgs++;
        if (a->rc)
            return a->rc;
    }
    a->in_last_user = false;
    if (count_only)
        return 0;

    v = json_object_get(root, "max_tokens");
    if (!v || json_is_null(v))
        return reject(e, "max_tokens", "max_tokens: Field required");
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return reject(e, "max_tokens", "max_tokens: Input should be a valid integer >= 0");
    rq->max_tokens = json_integer_value(v);
    v = json_object_get(root, "stream");
    if (v && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return reject(e, "stream", "stream: Input should be a valid boolean");
        rq->stream = json_is_true(v);
    }
    return 0;
}

int sim_req_parse(struct sim_req *rq, enum sim_dialect d, const char *body, size_t len,
                  bool count_only, uint64_t seed, struct sim_err *e)
{
    json_error_t jerr;
    json_t *root;
    const json_t *model;
    struct acc a;
    int rc = -1;

    memset(rq, 0, sizeof(*rq));
    rq->dialect = d;
    rq->max_tokens = -1;
    sim_directives_init(&rq->dir);
    memset(&a, 0, sizeof(a));
    a.dir = &rq->dir;
    a.e = e;

    root = json_loadb(body, len, 0, &jerr);
    if (!root)
        return reject(e, NULL, "Invalid JSON body: %s (line %d, column %d)", jerr.text,
                    jerr.line, jerr.column);
    if (!json_is_object(root)) {
        reject(e, NULL, "The request body must be a JSON object");
        goto out;
    }
    model = json_object_get(root, "model");
    if (!json_is_string(model) || json_string_length(model) == 0) {
        reject(e, "model", "model: Field required");
        goto out;
    }
    if (json_string_length(model) >= sizeof(rq->model)) {
        reject(e, "model", "model: longer than %zu bytes", sizeof(rq->model) - 1);
        goto out;
    }
    memcpy(rq->model, json_string_value(model), json_string_length(model) + 1);
    a.hash = sim_hash(SIM_FNV_OFFSET, rq->model, strlen(rq->model));

    if (d == SIM_DIALECT_OPENAI)
        rc = parse_openai(rq, root, &a, e);
    else
        rc = parse_anthropic(rq, root, count_only, &a, e);
    if (rc)
        goto out;

    uint64_t pt = (a.chars + 3) / 4 + 4ull * a.n_msgs;
    uint64_t st = (a.sys_chars + 3) / 4 + 4ull * a.n_sys;
    rq->prompt_tokens = pt > UINT32_MAX ? UINT32_MAX : (uint32_t)pt;
    rq->system_tokens = st > rq->prompt_tokens ? rq->prompt_tokens : (uint32_t)st;
    rq->cache_hint = a.cache_hint;
    rq->content_hash = a.hash;
    rc = count_only ? 0 : take_tools(rq, root, seed, e);
out:
    json_decref(root);
    return rc;
}

int sim_req_check_len(const struct sim_req *rq, uint32_t max_model_len, struct sim_err *e)
{
    uint64_t p = rq->prompt_tokens, n = max_model_len;
    if (rq->dialect == SIM_DIALECT_ANTHROPIC) {
        if (p > n)
            return reject(e, NULL, "prompt is too long: %llu tokens > %llu maximum",
                        (unsigned long long)p, (unsigned long long)n);
        return 0;
    }
    if (p > n)
        return reject(e, "messages", "This model's maximum context length is %llu tokens. "
                    "However, your request has %llu input tokens. Please reduce the length "
                    "of the input messages.", (unsigned long long)n, (unsigned long long)p);
    if (rq->max_tokens > 0 && p + (uint64_t)rq->max_tokens > n)
        return reject(e, "max_tokens", "'max_tokens' or 'max_completion_tokens' is too large: "
                    "%lld. This model's maximum context length is %llu tokens and your "
                    "request has %llu input tokens (%lld > %llu - %llu).",
                    (long long)rq->max_tokens, (unsigned long long)n, (unsigned long long)p,
                    (long long)rq->max_tokens, (unsigned long long)n, (unsigned long long)p);
    return 0;
}
