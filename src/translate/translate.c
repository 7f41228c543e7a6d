/*
 * translate.c - OpenAI Chat Completions <-> Anthropic Messages for requests,
 * whole responses and errors (streams are in xstream.c). Contract in
 * translate.h; the field mapping follows PROTOCOLS.md section 3.
 *
 * Every function builds a fresh jansson value holding only the fields the
 * target API knows (Anthropic rejects unknown top-level fields), so nothing
 * a client sends passes through unchecked. Input the target cannot express
 * is refused with a 400 naming the field; input that merely has no
 * equivalent is dropped. The decisions, in one place:
 *
 * OpenAI -> Anthropic request
 *  - system/developer messages, wherever they are, become `system`: a
 *    string when there is exactly one such message with string content,
 *    else an array of text blocks (one per message or part). Empty and
 *    whitespace-only texts are dropped everywhere (Anthropic rejects them).
 *  - Consecutive same-role messages are merged; tool messages become
 *    tool_result blocks of a user message, inserted before any text of that
 *    message, so parallel results share ONE user turn.
 *  - tool_calls[].function.arguments that are empty, invalid JSON or not a
 *    JSON object become `input: {}`: the model wrote them, the client cannot
 *    fix them, and the conversation must stay valid; the tool_result that
 *    follows usually carries the tool's complaint anyway.
 *  - Tool call ids are sanitized to [A-Za-z0-9_-] (other bytes -> '_'), the
 *    same way in tool_use and tool_result so they still match.
 *  - temperature: OpenAI allows 0-2, Anthropic 0-1; values above 1 are
 *    clamped to 1.0 (outside 0-2 is a 400, as OpenAI would say).
 *  - top_p is dropped when temperature is also given (newer Claude models
 *    reject both); top_k passes through when a client sends it.
 *  - max_completion_tokens, else max_tokens, else opts->default_max_tokens
 *    (4096 when that is not positive).
 *  - stop: string or array -> stop_sequences without empty/whitespace-only
 *    entries; omitted when none is left.
 *  - user (else safety_identifier) -> metadata.user_id.
 *  - parallel_tool_calls:false -> tool_choice.disable_parallel_tool_use
 *    (tool_choice {type:auto} is added when the client gave none); tools and
 *    tool_choice are dropped when there are no tools. tools[].function.
 *    parameters without "type" get "type":"object" (input_schema needs it).
 *  - A final assistant turn (prefill) loses trailing whitespace, which
 *    Anthropic refuses.
 *  - cache_control on a content part or tool passes through (clients that
 *    know Anthropic use it for prompt caching).
 *  - 400: n > 1, logprobs, audio output, input_audio parts, file parts
 *    other than a base64 data URL (-> document block), response_format
 *    json_schema (a schema guarantee we cannot give), deprecated functions/
 *    function_call and the function role, non-function tools.
 *  - Dropped: response_format text/json_object, seed, penalties,
 *    logit_bias, reasoning_effort, service_tier, store, metadata,
 *    prediction, stream_options (the gateway handles include_usage), name.
 *
 * Anthropic -> OpenAI request (for vLLM and other OpenAI-compatible servers)
 *  - system (string or text blocks joined with a blank line) -> a leading
 *    system message.
 *  - tool_result blocks -> role:"tool" messages, placed before the rest of
 *    that user turn; their content is a string (text blocks joined with
 *    "\n"); is_error:true prefixes "Error: "; images inside a tool result
 *    move to the user message that follows (tool messages carry text only).
 *  - A user turn that is one text block becomes a string, else parts.
 *  - Assistant text blocks are concatenated; tool_use -> tool_calls with
 *    arguments = compact JSON of input; content is null with tool calls and
 *    no text.
 *  - thinking and redacted_thinking blocks and the `thinking` parameter are
 *    dropped (no portable equivalent); cache_control is dropped.
 *  - A final assistant turn without tool calls is a prefill: vLLM continues
 *    it when asked with continue_final_message:true,
 *    add_generation_prompt:false, which we set.
 *  - max_tokens -> max_tokens (vLLM reads max_completion_tokens or
 *    max_tokens; the older name works on every vLLM and llama.cpp); when
 *    absent, opts->default_max_tokens if positive, else left to the server.
 *  - top_k passes through (a vLLM extra); metadata.user_id -> user.
 *  - stream -> stream plus stream_options.include_usage (else the usage of
 *    a stream is unknown).
 *  - 400: server/builtin tools (a `type` other than "custom"), document
 *    blocks other than plain text, unknown block types.
 *
 * Responses: see the comments above each function.
 *
 * Outputs never share objects or arrays with the input (strings and
 * numbers may be shared: jansson treats them as immutable), so a caller may
 * edit the translation in place.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "translate/translate.h"

#define DEFAULT_MAX_TOKENS 4096

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static atomic_llong pinned_clock;

void gw_xlate_set_clock(int64_t unix_seconds)
{
    atomic_store(&pinned_clock, (long long)unix_seconds);
}

int64_t gw_xlate_now(void)
{
    long long t = atomic_load(&pinned_clock);
    return t ? (int64_t)t : (int64_t)time(NULL);
}

static void set_err(struct gw_xlate_err *err, int status, const char *type, const char *param,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void set_err(struct gw_xlate_err *err, int status, const char *type, const char *param,
                    const char *fmt, ...)
{
    if (!err)
        return;
    err->status = status;
    err->type = type;
    err->param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

#define BAD(param, ...) set_err(c->err, 400, "invalid_request_error", (param), __VA_ARGS__)

static const char *str_of(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Present and not null. */
static json_t *given(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_null(v) ? NULL : v;
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i]))
            return false;
    return true;
}

static bool blank_json(json_t *s)
{
    return blank(json_string_value(s), json_string_length(s));
}

/* A tool call id with every byte outside [A-Za-z0-9_-] replaced by '_'. */
static json_t *clean_id(const char *id, size_t n)
{
    char *s = gw_malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)id[i];
        s[i] = (isalnum(ch) && ch < 0x80) || ch == '_' || ch == '-' ? (char)ch : '_';
    }
    s[n] = '\0';
    json_t *v = json_stringn(s, n);
    free(s);
    return v;
}

static json_t *clean_id_json(json_t *s)
{
    return clean_id(json_string_value(s), json_string_length(s));
}

/* Tool arguments (a JSON string) -> an object; anything else -> {}. */
static json_t *parse_args(json_t *args)
{
    if (json_is_object(args))
        return json_deep_copy(args);
    if (!json_is_string(args))
        return json_object();
    json_t *v = json_loadb(json_string_value(args), json_string_length(args),
                           JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    if (json_is_object(v))
        return v;
    json_decref(v);
    return json_object();
}

static void copy_if(json_t *dst, json_t *src, const char *k)
{
    json_t *v = json_object_get(src, k);
    if (v)
        json_object_set_new(dst, k, json_deep_copy(v));
}

static json_t *text_block(json_t *text)
{
    return json_pack("{s:s, s:O}", "type", "text", "text", text);
}

/* ------------------------------------------------------------------ */
/* OpenAI -> Anthropic request                                         */

struct o2a {
    struct gw_xlate_err *err;
    json_t *msgs;       /* Anthropic messages being built */
    json_t *system;     /* text blocks */
    int nsys;           /* system/developer messages seen */
    bool sys_string;    /* the only one had string content */
};

/* "data:<media type>;base64,<data>" -> media type and data slices. */
static bool parse_data_url(const char *u, size_t n, gw_str *mt, gw_str *data)
{
    if (n < 5 || strncasecmp(u, "data:", 5) != 0)
        return false;
    const char *p = u + 5, *end = u + n;
    const char *comma = memchr(p, ',', (size_t)(end - p));
    if (!comma)
        return false;
    const char *semi = memchr(p, ';', (size_t)(comma - p));
    if (!semi || semi == p)
        return false;
    /* parameters may come before ;base64 (e.g. ;charset=...); base64 is last */
    if (comma - 7 < semi || strncasecmp(comma - 7, ";base64", 7) != 0)
        return false;
    *mt = (gw_str){p, (size_t)(semi - p)};
    *data = (gw_str){comma + 1, (size_t)(end - comma - 1)};
    return true;
}

static json_t *image_block(struct o2a *c, json_t *part, int mi)
{
    json_t *iu = json_object_get(part, "image_url");
    json_t *url = json_is_string(iu) ? iu : json_object_get(iu, "url");
    if (!json_is_string(url)) {
        BAD("messages", "messages[%d]: image_url.url must be a string", mi);
        return NULL;
    }
    const char *u = json_string_value(url);
    size_t n = json_string_length(url);
    gw_str mt, data;
    json_t *src;
    if (n >= 5 && strncasecmp(u, "data:", 5) == 0) {
        if (!parse_data_url(u, n, &mt, &data) || data.len == 0) {
            BAD("messages", "messages[%d]: image data URLs must look like "
                "data:<media type>;base64,<data>", mi);
            return NULL;
        }
        src = json_pack("{s:s, s:s%, s:s%}", "type", "base64", "media_type", mt.p, mt.len,
                        "data", data.p, data.len);
    } else if ((n > 8 && strncasecmp(u, "https://", 8) == 0) ||
               (n > 7 && strncasecmp(u, "http://", 7) == 0)) {
        src = json_pack("{s:s, s:O}", "type", "url", "url", url);
    } else {
        BAD("messages", "messages[%d]: image_url must be an http(s) or data: URL", mi);
        return NULL;
    }
    json_t *b = json_pack("{s:s, s:o}", "type", "image", "source", src);
    copy_if(b, part, "cache_control");
    return b;
}

static json_t *file_block(struct o2a *c, json_t *part, int mi)
{
    json_t *f = json_object_get(part, "file");
    json_t *fd = json_object_get(f, "file_data");
    gw_str mt, data;
    if (!json_is_string(fd) ||
        !parse_data_url(json_string_value(fd), json_string_length(fd), &mt, &data)) {
        BAD("messages", "messages[%d]: only file parts with base64 file_data "
            "(a data: URL) are supported, not file_id", mi);
        return NULL;
    }
    json_t *src = json_pack("{s:s, s:s%, s:s%}", "type", "base64", "media_type", mt.p, mt.len,
                            "data", data.p, data.len);
    json_t *b = json_pack("{s:s, s:o}", "type", "document", "source", src);
    copy_if(b, part, "cache_control");
    return b;
}

/* Append the blocks of an OpenAI content value (string, parts or null) to
 * blocks. Returns 0 or -1 (err set). */
static int conv_content(struct o2a *c, json_t *content, int mi, const char *role, json_t *blocks)
{
    bool assistant = strcmp(role, "assistant") == 0;
    bool media = !assistant && strcmp(role, "system") != 0;
    if (!content || json_is_null(content))
        return 0;
    if (json_is_string(content)) {
        if (!blank_json(content))
            json_array_append_new(blocks, text_block(content));
        return 0;
    }
    if (!json_is_array(content)) {
        BAD("messages", "messages[%d].content must be a string or an array of parts", mi);
        return -1;
    }
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part) {
        const char *t = str_of(part, "type");
        json_t *b = NULL;
        if (!t) {
            BAD("messages", "messages[%d].content[%zu] needs a type", mi, i);
            return -1;
        }
        if (strcmp(t, "text") == 0 || (assistant && strcmp(t, "refusal") == 0)) {
            json_t *text = json_object_get(part, t[0] == 't' ? "text" : "refusal");
            if (!json_is_string(text)) {
                BAD("messages", "messages[%d].content[%zu].%s must be a string", mi, i, t);
                return -1;
            }
            if (blank_json(text))
                continue;
            b = text_block(text);
            copy_if(b, part, "cache_control");
        } else if (media && strcmp(t, "image_url") == 0) {
            b = image_block(c, part, mi);
        } else if (media && strcmp(t, "file") == 0) {
            b = file_block(c, part, mi);
        } else if (strcmp(t, "input_audio") == 0) {
            BAD("messages", "messages[%d]: audio input is not supported by this model", mi);
            return -1;
        } else {
            BAD("messages", "messages[%d]: content part type '%s' is not supported for role %s",
                mi, t, role);
            return -1;
        }
        if (!b)
            return -1;
        json_array_append_new(blocks, b);
    }
    return 0;
}

static bool is_tool_result(json_t *b)
{
    const char *t = str_of(b, "type");
    return t && strcmp(t, "tool_result") == 0;
}

/* Add blocks to the conversation as role; merge with the previous message
 * when it has the same role. tool_result blocks go before the first block
 * of another type (Anthropic wants results first). Steals blocks. */
static void push(struct o2a *c, const char *role, json_t *blocks)
{
    if (json_array_size(blocks) == 0) {
        json_decref(blocks);
        return;
    }
    size_t n = json_array_size(c->msgs);
    json_t *last = n ? json_array_get(c->msgs, n - 1) : NULL;
    if (!last || strcmp(str_of(last, "role"), role) != 0) {
        json_array_append_new(c->msgs, json_pack("{s:s, s:o}", "role", role, "content", blocks));
        return;
    }
    json_t *dst = json_object_get(last, "content");
    size_t i;
    json_t *b;
    json_array_foreach(blocks, i, b) {
        if (is_tool_result(b)) {
            size_t at = 0;
            while (at < json_array_size(dst) && is_tool_result(json_array_get(dst, at)))
                at++;
            json_array_insert(dst, at, b);
        } else {
            json_array_append(dst, b);
        }
    }
    json_decref(blocks);
}

static int conv_system(struct o2a *c, json_t *m, int mi)
{
    json_t *content = json_object_get(m, "content");
    c->nsys++;
    c->sys_string = c->nsys == 1 && json_is_string(content);
    return conv_content(c, content, mi, "system", c->system);
}

static int conv_tool_calls(struct o2a *c, json_t *calls, int mi, json_t *blocks)
{
    if (!json_is_array(calls)) {
        BAD("messages", "messages[%d].tool_calls must be an array", mi);
        return -1;
    }
    size_t j;
    json_t *tc;
    json_array_foreach(calls, j, tc) {
        const char *type = str_of(tc, "type");
        json_t *id = json_object_get(tc, "id");
        json_t *fn = json_object_get(tc, "function");
        json_t *name = json_object_get(fn, "name");
        if (type && strcmp(type, "function") != 0) {
            BAD("messages", "messages[%d].tool_calls[%zu]: tool call type '%s' is not supported",
                mi, j, type);
            return -1;
        }
        if (!json_is_string(id) || json_string_length(id) == 0) {
            BAD("messages", "messages[%d].tool_calls[%zu].id is required", mi, j);
            return -1;
        }
        if (!json_is_string(name) || json_string_length(name) == 0) {
            BAD("messages", "messages[%d].tool_calls[%zu].function.name is required", mi, j);
            return -1;
        }
        json_array_append_new(blocks, json_pack("{s:s, s:o, s:O, s:o}", "type", "tool_use", "id",
                                                clean_id_json(id), "name", name, "input",
                                                parse_args(json_object_get(fn, "arguments"))));
    }
    return 0;
}

static int conv_tool_msg(struct o2a *c, json_t *m, int mi, json_t *blocks)
{
    json_t *id = json_object_get(m, "tool_call_id");
    json_t *content = json_object_get(m, "content");
    if (!json_is_string(id) || json_string_length(id) == 0) {
        BAD("messages", "messages[%d].tool_call_id is required for role tool", mi);
        return -1;
    }
    json_t *r = json_pack("{s:s, s:o}", "type", "tool_result", "tool_use_id", clean_id_json(id));
    json_array_append_new(blocks, r);
    if (json_is_string(content)) {
        if (json_string_length(content) > 0)
            json_object_set(r, "content", content);
        return 0;
    }
    json_t *parts = json_array();
    json_object_set_new(r, "content", parts);
    if (conv_content(c, content, mi, "tool", parts) < 0)
        return -1;
    if (json_array_size(parts) == 0)
        json_object_del(r, "content");
    return 0;
}

static int conv_messages(struct o2a *c, json_t *msgs)
{
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        int mi = (int)i;
        const char *role = str_of(m, "role");
        if (!json_is_object(m) || !role) {
            BAD("messages", "messages[%d] must be an object with a role", mi);
            return -1;
        }
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            if (conv_system(c, m, mi) < 0)
                return -1;
            continue;
        }
        json_t *blocks = json_array();
        int rc = 0;
        const char *out_role = "user";
        if (strcmp(role, "user") == 0) {
            rc = conv_content(c, json_object_get(m, "content"), mi, "user", blocks);
        } else if (strcmp(role, "assistant") == 0) {
            out_role = "assistant";
            rc = conv_content(c, json_object_get(m, "content"), mi, "assistant", blocks);
            json_t *calls = given(m, "tool_calls");
            if (rc == 0 && calls)
                rc = conv_tool_calls(c, calls, mi, blocks);
            if (rc == 0 && given(m, "function_call")) {
                BAD("messages", "messages[%d]: function_call is deprecated and not supported; "
                    "use tool_calls", mi);
                rc = -1;
            }
        } else if (strcmp(role, "tool") == 0) {
            rc = conv_tool_msg(c, m, mi, blocks);
        } else if (strcmp(role, "function") == 0) {
            BAD("messages", "messages[%d]: the function role is deprecated and not supported; "
                "use tool", mi);
            rc = -1;
        } else {
            BAD("messages", "messages[%d]: unknown role '%s'", mi, role);
            rc = -1;
        }
        if (rc < 0) {
            json_decref(blocks);
            return -1;
        }
        push(c, out_role, blocks);
    }
    return 0;
}

static int conv_tools(struct o2a *c, json_t *tools, json_t *out)
{
    if (!json_is_array(tools)) {
        BAD("tools", "tools must be an array");
        return -1;
    }
    json_t *res = json_array();
    json_object_set_new(out, "tools", res);
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *type = str_of(t, "type");
        json_t *fn = json_object_get(t, "function");
        json_t *name = json_object_get(fn, "name");
        if (!type || strcmp(type, "function") != 0) {
            BAD("tools", "tools[%zu]: only tools of type function are supported", i);
            return -1;
        }
        if (!json_is_string(name) || json_string_length(name) == 0) {
            BAD("tools", "tools[%zu].function.name is required", i);
            return -1;
        }
        json_t *r = json_pack("{s:O}", "name", name);
        json_t *desc = json_object_get(fn, "description");
        if (json_is_string(desc))
            json_object_set(r, "description", desc);
        json_t *params = json_object_get(fn, "parameters");
        json_t *schema;
        if (json_is_object(params)) {
            schema = json_deep_copy(params);
            if (!json_object_get(schema, "type"))
                json_object_set_new(schema, "type", json_string("object"));
        } else {
            schema = json_pack("{s:s, s:{}}", "type", "object", "properties");
        }
        json_object_set_new(r, "input_schema", schema);
        json_t *strict = json_object_get(fn, "strict");
        if (json_is_boolean(strict))
            json_object_set(r, "strict", strict);
        copy_if(r, t, "cache_control");
        json_array_append_new(res, r);
    }
    return 0;
}

static int conv_tool_choice(struct o2a *c, json_t *req, json_t *out)
{
    json_t *tc = given(req, "tool_choice");
    json_t *ptc = json_object_get(req, "parallel_tool_calls");
    json_t *r = NULL;
    if (!json_array_size(json_object_get(out, "tools")))
        return 0; /* Anthropic refuses tool_choice without tools */
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (strcmp(s, "auto") == 0)
            r = json_pack("{s:s}", "type", "auto");
        else if (strcmp(s, "required") == 0)
            r = json_pack("{s:s}", "type", "any");
        else if (strcmp(s, "none") == 0)
            r = json_pack("{s:s}", "type", "none");
    } else if (json_is_object(tc)) {
        const char *type = str_of(tc, "type");
        json_t *name = json_object_get(json_object_get(tc, "function"), "name");
        if (type && strcmp(type, "function") == 0 && json_is_string(name))
            r = json_pack("{s:s, s:O}", "type", "tool", "name", name);
    } else if (!tc) {
        if (json_is_false(ptc))
            r = json_pack("{s:s}", "type", "auto");
    }
    if (tc && !r) {
        BAD("tool_choice", "tool_choice must be \"auto\", \"required\", \"none\" or "
            "{\"type\":\"function\",\"function\":{\"name\":...}}");
        return -1;
    }
    if (!r)
        return 0;
    if (json_is_false(ptc) && strcmp(str_of(r, "type"), "none") != 0)
        json_object_set_new(r, "disable_parallel_tool_use", json_true());
    json_object_set_new(out, "tool_choice", r);
    return 0;
}

static int conv_stop(struct o2a *c, json_t *stop, json_t *out)
{
    json_t *res = json_array();
    if (json_is_string(stop)) {
        if (!blank_json(stop))
            json_array_append(res, stop);
    } else if (json_is_array(stop)) {
        size_t i;
        json_t *s;
        json_array_foreach(stop, i, s) {
            if (!json_is_string(s)) {
                json_decref(res);
                BAD("stop", "stop must be a string or an array of strings");
                return -1;
            }
            if (!blank_json(s))
                json_array_append(res, s);
        }
    } else {
        json_decref(res);
        BAD("stop", "stop must be a string or an array of strings");
        return -1;
    }
    if (json_array_size(res))
        json_object_set_new(out, "stop_sequences", res);
    else
        json_decref(res);
    return 0;
}

/* Refuse what Anthropic cannot do. */
static int check_unsupported(struct o2a *c, json_t *req)
{
    json_t *v;
    if ((v = given(req, "n")) && (!json_is_integer(v) || json_integer_value(v) != 1)) {
        BAD("n", "n must be 1: this model returns one choice per request");
        return -1;
    }
    if (json_is_true(json_object_get(req, "logprobs")) || given(req, "top_logprobs")) {
        BAD("logprobs", "logprobs are not supported by this model");
        return -1;
    }
    if (given(req, "audio")) {
        BAD("audio", "audio output is not supported by this model");
        return -1;
    }
    if ((v = given(req, "modalities"))) {
        size_t i;
        if (!json_is_array(v)) {
            BAD("modalities", "modalities must be an array");
            return -1;
        }
        json_t *mod;
        json_array_foreach(v, i, mod) {
            if (!json_is_string(mod) || strcmp(json_string_value(mod), "text") != 0) {
                BAD("modalities", "only the text modality is supported by this model");
                return -1;
            }
        }
    }
    if (given(req, "functions") || given(req, "function_call")) {
        BAD(given(req, "functions") ? "functions" : "function_call",
            "functions and function_call are deprecated and not supported; use tools and "
            "tool_choice");
        return -1;
    }
    const char *rf = str_of(json_object_get(req, "response_format"), "type");
    if (rf && strcmp(rf, "json_schema") == 0) {
        BAD("response_format", "response_format json_schema is not supported by this model");
        return -1;
    }
    return 0;
}

static int conv_sampling(struct o2a *c, json_t *req, json_t *out)
{
    json_t *t = given(req, "temperature");
    json_t *p = given(req, "top_p");
    if (t) {
        if (!json_is_number(t) || json_number_value(t) < 0 || json_number_value(t) > 2) {
            BAD("temperature", "temperature must be a number between 0 and 2");
            return -1;
        }
        if (json_number_value(t) > 1)
            json_object_set_new(out, "temperature", json_real(1.0));
        else
            json_object_set(out, "temperature", t);
    }
    if (p) {
        if (!json_is_number(p) || json_number_value(p) < 0 || json_number_value(p) > 1) {
            BAD("top_p", "top_p must be a number between 0 and 1");
            return -1;
        }
        if (!t)
            json_object_set(out, "top_p", p);
    }
    json_t *k = given(req, "top_k");
    if (k) {
        if (!json_is_integer(k) || json_integer_value(k) < 0) {
            BAD("top_k", "top_k must be a non-negative integer");
            return -1;
        }
        json_object_set(out, "top_k", k);
    }
    return 0;
}

static int conv_max_tokens(struct o2a *c, json_t *req, const struct gw_xlate_opts *o, json_t *out)
{
    const char *name = "max_completion_tokens";
    json_t *v = given(req, name);
    if (!v) {
        name = "max_tokens";
        v = given(req, name);
    }
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            BAD(name, "%s must be a non-negative integer", name);
            return -1;
        }
        json_object_set(out, "max_tokens", v);
        return 0;
    }
    int64_t d = o && o->default_max_tokens > 0 ? o->default_max_tokens : DEFAULT_MAX_TOKENS;
    json_object_set_new(out, "max_tokens", json_integer(d));
    return 0;
}

/* Anthropic refuses a final assistant turn (a prefill) whose text ends
 * with whitespace; trim it, dropping what becomes empty. */
static void trim_prefill(json_t *msgs)
{
    size_t n = json_array_size(msgs);
    json_t *last = json_array_get(msgs, n - 1);
    if (!last || strcmp(str_of(last, "role"), "assistant") != 0)
        return;
    json_t *content = json_object_get(last, "content");
    size_t nb = json_array_size(content);
    json_t *b = json_array_get(content, nb - 1);
    const char *t = str_of(b, "type");
    if (!t || strcmp(t, "text") != 0)
        return;
    json_t *text = json_object_get(b, "text");
    const char *p = json_string_value(text);
    size_t len = json_string_length(text);
    while (len && isspace((unsigned char)p[len - 1]))
        len--;
    if (len == json_string_length(text))
        return;
    json_object_set_new(b, "text", json_stringn(p, len));
    /* blank blocks were never added, so len > 0 here */
}

json_t *gw_xlate_req_openai_to_anthropic(json_t *req, const struct gw_xlate_opts *o,
                                         struct gw_xlate_err *err)
{
    struct o2a cx = {.err = err}, *c = &cx;
    json_t *out = NULL;
    if (!json_is_object(req)) {
        BAD(NULL, "the request body must be a JSON object");
        return NULL;
    }
    const char *model = o && o->model ? o->model : str_of(req, "model");
    json_t *msgs = json_object_get(req, "messages");
    if (!model) {
        BAD("model", "model is required");
        return NULL;
    }
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        BAD("messages", "messages must be a non-empty array");
        return NULL;
    }
    if (check_unsupported(c, req) < 0)
        return NULL;

    c->msgs = json_array();
    c->system = json_array();
    out = json_pack("{s:s}", "model", model);
    if (conv_messages(c, msgs) < 0)
        goto fail;
    trim_prefill(c->msgs);
    if (json_array_size(c->msgs) == 0) {
        BAD("messages", "messages must contain at least one non-empty user or assistant message");
        goto fail;
    }
    if (conv_max_tokens(c, req, o, out) < 0)
        goto fail;
    size_t nsys = json_array_size(c->system);
    if (nsys == 1 && c->sys_string)
        json_object_set(out, "system", json_object_get(json_array_get(c->system, 0), "text"));
    else if (nsys)
        json_object_set(out, "system", c->system);
    json_object_set(out, "messages", c->msgs);

    json_t *v;
    if ((v = given(req, "stop")) && conv_stop(c, v, out) < 0)
        goto fail;
    if (conv_sampling(c, req, out) < 0)
        goto fail;
    json_t *user = given(req, "user");
    if (!user)
        user = given(req, "safety_identifier");
    if (user) {
        if (!json_is_string(user)) {
            BAD("user", "user must be a string");
            goto fail;
        }
        json_object_set_new(out, "metadata", json_pack("{s:O}", "user_id", user));
    }
    if ((v = given(req, "tools")) && (!json_is_array(v) || json_array_size(v)) &&
        conv_tools(c, v, out) < 0)
        goto fail;
    if (conv_tool_choice(c, req, out) < 0)
        goto fail;
    json_object_set_new(out, "stream", json_boolean(o && o->stream));
    json_decref(c->msgs);
    json_decref(c->system);
    return out;
fail:
    json_decref(c->msgs);
    json_decref(c->system);
    json_decref(out);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Anthropic -> OpenAI request                                         */

struct a2o {
    struct gw_xlate_err *err;
    json_t *msgs;   /* OpenAI messages being built */
};

/* Text of a string or an array of text blocks, joined with sep. Returns a
 * new string or NULL (err set) for a non-text block. */
static json_t *join_text(struct a2o *c, json_t *v, const char *sep, const char *param,
                         json_t *images)
{
    if (json_is_string(v))
        return json_incref(v);
    if (!v || json_is_null(v))
        return json_string("");
    if (!json_is_array(v)) {
        BAD(param, "%s must be a string or an array of text blocks", param);
        return NULL;
    }
    struct gw_buf b;
    gw_buf_init(&b, 0);
    size_t i, n = 0;
    json_t *blk;
    json_array_foreach(v, i, blk) {
        const char *t = str_of(blk, "type");
        json_t *text = json_object_get(blk, "text");
        if (t && strcmp(t, "text") == 0 && json_is_string(text)) {
            if (n++)
                gw_buf_puts(&b, sep);
            gw_buf_append(&b, json_string_value(text), json_string_length(text));
            continue;
        }
        if (images && t && strcmp(t, "image") == 0) {
            json_array_append(images, blk);
            continue;
        }
        gw_buf_free(&b);
        BAD(param, "%s may only contain text blocks", param);
        return NULL;
    }
    json_t *s = json_stringn(b.len ? b.data : "", b.len);
    gw_buf_free(&b);
    return s;
}

static json_t *image_part(struct a2o *c, json_t *blk, int mi)
{
    json_t *src = json_object_get(blk, "source");
    const char *st = str_of(src, "type");
    json_t *url = NULL;
    if (st && strcmp(st, "base64") == 0) {
        json_t *mt = json_object_get(src, "media_type");
        json_t *data = json_object_get(src, "data");
        if (json_is_string(mt) && json_is_string(data)) {
            struct gw_buf b;
            gw_buf_init(&b, 0);
            gw_buf_printf(&b, "data:%s;base64,", json_string_value(mt));
            gw_buf_append(&b, json_string_value(data), json_string_length(data));
            url = json_stringn(b.data, b.len);
            gw_buf_free(&b);
        }
    } else if (st && strcmp(st, "url") == 0 && json_is_string(json_object_get(src, "url"))) {
        url = json_incref(json_object_get(src, "url"));
    }
    if (!url) {
        BAD("messages", "messages[%d]: image source must be base64 (media_type, data) or url", mi);
        return NULL;
    }
    return json_pack("{s:s, s:{s:o}}", "type", "image_url", "image_url", "url", url);
}

static int conv_user_blocks(struct a2o *c, json_t *content, int mi)
{
    json_t *parts = json_array();
    json_t *images = json_array(); /* from tool results */
    size_t i;
    json_t *blk;
    json_array_foreach(content, i, blk) {
        const char *t = str_of(blk, "type");
        if (!t) {
            BAD("messages", "messages[%d].content[%zu] needs a type", mi, i);
            goto fail;
        }
        if (strcmp(t, "text") == 0) {
            json_t *text = json_object_get(blk, "text");
            if (!json_is_string(text)) {
                BAD("messages", "messages[%d].content[%zu].text must be a string", mi, i);
                goto fail;
            }
            json_array_append_new(parts, text_block(text));
        } else if (strcmp(t, "image") == 0) {
            json_t *p = image_part(c, blk, mi);
            if (!p)
                goto fail;
            json_array_append_new(parts, p);
        } else if (strcmp(t, "document") == 0) {
            json_t *src = json_object_get(blk, "source");
            const char *st = str_of(src, "type");
            json_t *data = json_object_get(src, "data");
            if (!st || strcmp(st, "text") != 0 || !json_is_string(data)) {
                BAD("messages", "messages[%d]: only plain-text document blocks are supported by "
                    "this model", mi);
                goto fail;
            }
            json_array_append_new(parts, text_block(data));
        } else if (strcmp(t, "tool_result") == 0) {
            json_t *id = json_object_get(blk, "tool_use_id");
            if (!json_is_string(id)) {
                BAD("messages", "messages[%d].content[%zu].tool_use_id is required", mi, i);
                goto fail;
            }
            json_t *text = join_text(c, json_object_get(blk, "content"), "\n", "messages", images);
            if (!text)
                goto fail;
            if (json_is_true(json_object_get(blk, "is_error"))) {
                struct gw_buf b;
                gw_buf_init(&b, 0);
                gw_buf_puts(&b, "Error: ");
                gw_buf_append(&b, json_string_value(text), json_string_length(text));
                json_decref(text);
                text = json_stringn(b.data, b.len);
                gw_buf_free(&b);
            }
            json_array_append_new(c->msgs, json_pack("{s:s, s:O, s:o}", "role", "tool",
                                                     "tool_call_id", id, "content", text));
        } else if (strcmp(t, "thinking") == 0 || strcmp(t, "redacted_thinking") == 0) {
            continue;
        } else {
            BAD("messages", "messages[%d]: content block type '%s' is not supported by this model",
                mi, t);
            goto fail;
        }
    }
    json_array_foreach(images, i, blk) {
        json_t *p = image_part(c, blk, mi);
        if (!p)
            goto fail;
        json_array_append_new(parts, p);
    }
    json_decref(images);
    if (json_array_size(parts) == 1 && strcmp(str_of(json_array_get(parts, 0), "type"), "text") == 0)
        json_array_append_new(c->msgs, json_pack("{s:s, s:O}", "role", "user", "content",
                                                 json_object_get(json_array_get(parts, 0), "text")));
    else if (json_array_size(parts))
        json_array_append_new(c->msgs, json_pack("{s:s, s:O}", "role", "user", "content", parts));
    json_decref(parts);
    return 0;
fail:
    json_decref(parts);
    json_decref(images);
    return -1;
}

static int conv_assistant_blocks(struct a2o *c, json_t *content, int mi)
{
    struct gw_buf text;
    gw_buf_init(&text, 0);
    json_t *calls = json_array();
    size_t i;
    json_t *blk;
    json_array_foreach(content, i, blk) {
        const char *t = str_of(blk, "type");
        if (t && strcmp(t, "text") == 0 && json_is_string(json_object_get(blk, "text"))) {
            json_t *s = json_object_get(blk, "text");
            gw_buf_append(&text, json_string_value(s), json_string_length(s));
        } else if (t && strcmp(t, "tool_use") == 0) {
            json_t *id = json_object_get(blk, "id");
            json_t *name = json_object_get(blk, "name");
            json_t *input = json_object_get(blk, "input");
            if (!json_is_string(id) || !json_is_string(name)) {
                BAD("messages", "messages[%d].content[%zu]: tool_use needs id and name", mi, i);
                goto fail;
            }
            char *args = input ? json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            json_array_append_new(calls, json_pack("{s:O, s:s, s:{s:O, s:s}}", "id", id, "type",
                                                   "function", "function", "name", name,
                                                   "arguments", args ? args : "{}"));
            free(args);
        } else if (t && (strcmp(t, "thinking") == 0 || strcmp(t, "redacted_thinking") == 0)) {
            continue;
        } else {
            BAD("messages", "messages[%d]: content block type '%s' is not supported in an "
                "assistant turn", mi, t ? t : "(none)");
            goto fail;
        }
    }
    if (text.len == 0 && json_array_size(calls) == 0)
        goto done; /* nothing left (e.g. only thinking) */
    json_t *m = json_pack("{s:s}", "role", "assistant");
    if (text.len)
        json_object_set_new(m, "content", json_stringn(text.data, text.len));
    else
        json_object_set_new(m, "content", json_null());
    if (json_array_size(calls))
        json_object_set(m, "tool_calls", calls);
    json_array_append_new(c->msgs, m);
done:
    gw_buf_free(&text);
    json_decref(calls);
    return 0;
fail:
    gw_buf_free(&text);
    json_decref(calls);
    return -1;
}

static int conv_a_messages(struct a2o *c, json_t *msgs)
{
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        int mi = (int)i;
        const char *role = str_of(m, "role");
        json_t *content = json_object_get(m, "content");
        bool user = role && strcmp(role, "user") == 0;
        if (!role || (!user && strcmp(role, "assistant") != 0)) {
            BAD("messages", "messages[%d].role must be user or assistant", mi);
            return -1;
        }
        if (json_is_string(content)) {
            json_array_append_new(c->msgs, json_pack("{s:s, s:O}", "role", role, "content",
                                                     content));
            continue;
        }
        if (!json_is_array(content)) {
            BAD("messages", "messages[%d].content must be a string or an array of blocks", mi);
            return -1;
        }
        if ((user ? conv_user_blocks : conv_assistant_blocks)(c, content, mi) < 0)
            return -1;
    }
    return 0;
}

static int conv_a_tools(struct a2o *c, json_t *req, json_t *out)
{
    json_t *tools = given(req, "tools");
    if (!tools)
        return 0;
    if (!json_is_array(tools)) {
        BAD("tools", "tools must be an array");
        return -1;
    }
    if (json_array_size(tools) == 0)
        return 0;
    json_t *res = json_array();
    json_object_set_new(out, "tools", res);
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t) {
        const char *type = str_of(t, "type");
        json_t *name = json_object_get(t, "name");
        if (type && strcmp(type, "custom") != 0) {
            BAD("tools", "tools[%zu]: server tool type '%s' is not supported by this model", i,
                type);
            return -1;
        }
        if (!json_is_string(name) || json_string_length(name) == 0) {
            BAD("tools", "tools[%zu].name is required", i);
            return -1;
        }
        json_t *fn = json_pack("{s:O}", "name", name);
        json_t *desc = json_object_get(t, "description");
        if (json_is_string(desc))
            json_object_set(fn, "description", desc);
        json_t *schema = json_object_get(t, "input_schema");
        if (json_is_object(schema))
            json_object_set_new(fn, "parameters", json_deep_copy(schema));
        else
            json_object_set_new(fn, "parameters",
                                json_pack("{s:s, s:{}}", "type", "object", "properties"));
        json_t *strict = json_object_get(t, "strict");
        if (json_is_boolean(strict))
            json_object_set(fn, "strict", strict);
        json_array_append_new(res, json_pack("{s:s, s:o}", "type", "function", "function", fn));
    }

    json_t *tc = given(req, "tool_choice");
    if (!tc)
        return 0;
    const char *type = str_of(tc, "type");
    json_t *r = NULL;
    if (!type) {
        r = NULL;
    } else if (strcmp(type, "auto") == 0) {
        r = json_string("auto");
    } else if (strcmp(type, "any") == 0) {
        r = json_string("required");
    } else if (strcmp(type, "none") == 0) {
        r = json_string("none");
    } else if (strcmp(type, "tool") == 0 && json_is_string(json_object_get(tc, "name"))) {
        r = json_pack("{s:s, s:{s:O}}", "type", "function", "function", "name",
                      json_object_get(tc, "name"));
    }
    if (!r) {
        BAD("tool_choice", "tool_choice.type must be auto, any, tool (with name) or none");
        return -1;
    }
    json_object_set_new(out, "tool_choice", r);
    if (json_is_true(json_object_get(tc, "disable_parallel_tool_use")))
        json_object_set_new(out, "parallel_tool_calls", json_false());
    return 0;
}

static int conv_a_params(struct a2o *c, json_t *req, const struct gw_xlate_opts *o, json_t *out)
{
    json_t *v = given(req, "max_tokens");
    if (v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0) {
            BAD("max_tokens", "max_tokens must be a non-negative integer");
            return -1;
        }
        json_object_set(out, "max_tokens", v);
    } else if (o && o->default_max_tokens > 0) {
        json_object_set_new(out, "max_tokens", json_integer(o->default_max_tokens));
    }
    if ((v = given(req, "stop_sequences"))) {
        size_t i;
        json_t *s;
        if (!json_is_array(v)) {
            BAD("stop_sequences", "stop_sequences must be an array of strings");
            return -1;
        }
        json_array_foreach(v, i, s) {
            if (!json_is_string(s)) {
                BAD("stop_sequences", "stop_sequences must be an array of strings");
                return -1;
            }
        }
        if (json_array_size(v))
            json_object_set_new(out, "stop", json_deep_copy(v));
    }
    static const char *const nums[] = {"temperature", "top_p", "top_k"};
    for (size_t i = 0; i < GW_ARRAY_LEN(nums); i++) {
        if (!(v = given(req, nums[i])))
            continue;
        if (!json_is_number(v) || (i == 2 && !json_is_integer(v))) {
            BAD(nums[i], "%s must be a number", nums[i]);
            return -1;
        }
        json_object_set(out, nums[i], v);
    }
    json_t *uid = json_object_get(given(req, "metadata"), "user_id");
    if (json_is_string(uid))
        json_object_set(out, "user", uid);
    return 0;
}

json_t *gw_xlate_req_anthropic_to_openai(json_t *req, const struct gw_xlate_opts *o,
                                         struct gw_xlate_err *err)
{
    struct a2o cx = {.err = err}, *c = &cx;
    if (!json_is_object(req)) {
        BAD(NULL, "the request body must be a JSON object");
        return NULL;
    }
    const char *model = o && o->model ? o->model : str_of(req, "model");
    json_t *msgs = json_object_get(req, "messages");
    if (!model) {
        BAD("model", "model: Field required");
        return NULL;
    }
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        BAD("messages", "messages must be a non-empty array");
        return NULL;
    }
    c->msgs = json_array();
    json_t *out = json_pack("{s:s, s:O}", "model", model, "messages", c->msgs);

    json_t *sys = given(req, "system");
    if (sys) {
        json_t *text = join_text(c, sys, "\n\n", "system", NULL);
        if (!text)
            goto fail;
        if (json_string_length(text))
            json_array_append_new(c->msgs, json_pack("{s:s, s:o}", "role", "system", "content",
                                                     text));
        else
            json_decref(text);
    }
    if (conv_a_messages(c, msgs) < 0)
        goto fail;
    json_t *last = json_array_get(c->msgs, json_array_size(c->msgs) - 1);
    if (last && strcmp(str_of(last, "role"), "assistant") == 0 &&
        !json_object_get(last, "tool_calls")) {
        json_object_set_new(out, "continue_final_message", json_true());
        json_object_set_new(out, "add_generation_prompt", json_false());
    }
    if (conv_a_params(c, req, o, out) < 0 || conv_a_tools(c, req, out) < 0)
        goto fail;
    if (o && o->stream) {
        json_object_set_new(out, "stream", json_true());
        json_object_set_new(out, "stream_options", json_pack("{s:b}", "include_usage", 1));
    } else {
        json_object_set_new(out, "stream", json_false());
    }
    json_decref(c->msgs);
    return out;
fail:
    json_decref(c->msgs);
    json_decref(out);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* responses                                                           */

const char *gw_xlate_finish_reason(const char *sr)
{
    if (!sr)
        return "stop";
    if (strcmp(sr, "max_tokens") == 0 || strcmp(sr, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(sr, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(sr, "refusal") == 0)
        return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn, unknown */
}

const char *gw_xlate_stop_reason(const char *fr)
{
    if (!fr)
        return "end_turn";
    if (strcmp(fr, "length") == 0)
        return "max_tokens";
    if (strcmp(fr, "tool_calls") == 0 || strcmp(fr, "function_call") == 0)
        return "tool_use";
    if (strcmp(fr, "content_filter") == 0)
        return "refusal";
    return "end_turn";
}

static int64_t int_of(json_t *o, const char *k, int64_t dflt)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (int64_t)json_integer_value(v) : dflt;
}

/* Set *v from obj[k] when it is a non-negative integer. */
static bool take(json_t *obj, const char *k, int64_t *v)
{
    json_t *x = json_object_get(obj, k);
    if (!json_is_integer(x) || json_integer_value(x) < 0)
        return false;
    *v = (int64_t)json_integer_value(x);
    return true;
}

void gw_xlate_anthropic_usage(json_t *obj, struct gw_usage *u)
{
    if (!json_is_object(obj))
        return;
    /* u keeps the parts apart: input = prompt - cache reads - cache writes */
    int64_t cr = u->cached_tokens, cw = u->cache_write_tokens, out = u->completion_tokens;
    int64_t in = u->prompt_tokens >= 0 ? u->prompt_tokens - cr - cw : 0;
    bool any = take(obj, "input_tokens", &in);
    any |= take(obj, "cache_read_input_tokens", &cr);
    any |= take(obj, "cache_creation_input_tokens", &cw);
    any |= take(obj, "output_tokens", &out);
    if (!any)
        return;
    u->cached_tokens = cr;
    u->cache_write_tokens = cw;
    u->prompt_tokens = in + cr + cw;
    u->completion_tokens = out;
    u->reported = true;
}

static json_t *openai_usage(const struct gw_usage *u)
{
    int64_t p = u->prompt_tokens < 0 ? 0 : u->prompt_tokens;
    int64_t c = u->completion_tokens < 0 ? 0 : u->completion_tokens;
    return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)p,
                     "completion_tokens", (json_int_t)c, "total_tokens", (json_int_t)(p + c),
                     "prompt_tokens_details", "cached_tokens", (json_int_t)u->cached_tokens);
}

/* "prefix" + id without its other-dialect prefix; a random id when absent. */
static json_t *derive_id(const char *prefix, const char *id, const char *strip)
{
    char rnd[25];
    if (!id || !id[0]) {
        unsigned char b[12];
        gw_random_bytes(b, sizeof(b));
        gw_hex(b, sizeof(b), rnd);
        id = rnd;
    } else if (strncmp(id, strip, strlen(strip)) == 0 && id[strlen(strip)]) {
        id += strlen(strip);
    }
    struct gw_buf b;
    gw_buf_init(&b, 0);
    gw_buf_printf(&b, "%s%s", prefix, id);
    json_t *s = json_stringn(b.data, b.len);
    gw_buf_free(&b);
    return s;
}

static void bad_upstream(struct gw_xlate_err *err, const char *what)
{
    set_err(err, 502, "upstream_error", NULL, "the upstream returned an invalid response: %s",
            what);
}

/*
 * Anthropic message -> chat.completion. Text blocks are concatenated into
 * message.content (null when there is none but there are tool calls, ""
 * when there is nothing); thinking blocks go to message.reasoning_content
 * (the field vLLM and LiteLLM use; SDKs ignore it); other block types
 * (server tools, redacted thinking) are dropped.
 */
json_t *gw_xlate_resp_anthropic_to_openai(json_t *resp, const char *model,
                                          struct gw_usage *usage, struct gw_xlate_err *err)
{
    json_t *content = json_object_get(resp, "content");
    if (!json_is_object(resp) || !json_is_array(content)) {
        bad_upstream(err, "no content array");
        return NULL;
    }
    struct gw_buf text, think;
    gw_buf_init(&text, 0);
    gw_buf_init(&think, 0);
    json_t *calls = json_array();
    size_t i;
    json_t *blk;
    json_array_foreach(content, i, blk) {
        const char *t = str_of(blk, "type");
        if (!t)
            continue;
        if (strcmp(t, "text") == 0) {
            json_t *s = json_object_get(blk, "text");
            gw_buf_append(&text, json_string_value(s) ? json_string_value(s) : "",
                          json_string_length(s));
        } else if (strcmp(t, "thinking") == 0) {
            json_t *s = json_object_get(blk, "thinking");
            gw_buf_append(&think, json_string_value(s) ? json_string_value(s) : "",
                          json_string_length(s));
        } else if (strcmp(t, "tool_use") == 0) {
            json_t *id = json_object_get(blk, "id");
            json_t *name = json_object_get(blk, "name");
            json_t *input = json_object_get(blk, "input");
            char *args = input ? json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            json_array_append_new(
                calls, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id",
                                 json_is_string(id) ? json_string_value(id) : "", "type",
                                 "function", "function", "name",
                                 json_is_string(name) ? json_string_value(name) : "",
                                 "arguments", args ? args : "{}"));
            free(args);
        }
    }
    json_t *msg = json_pack("{s:s}", "role", "assistant");
    if (text.len || json_array_size(calls) == 0)
        json_object_set_new(msg, "content", json_stringn(text.len ? text.data : "", text.len));
    else
        json_object_set_new(msg, "content", json_null());
    json_object_set_new(msg, "refusal", json_null());
    if (think.len)
        json_object_set_new(msg, "reasoning_content", json_stringn(think.data, think.len));
    if (json_array_size(calls))
        json_object_set(msg, "tool_calls", calls);
    json_decref(calls);
    gw_buf_free(&text);
    gw_buf_free(&think);

    struct gw_usage u;
    gw_usage_init(&u);
    gw_xlate_anthropic_usage(json_object_get(resp, "usage"), &u);
    const char *fr = gw_xlate_finish_reason(str_of(resp, "stop_reason"));
    if (!model)
        model = str_of(resp, "model");
    json_t *out = json_pack("{s:o, s:s, s:I, s:s, s:[{s:i, s:o, s:n, s:s}]}", "id",
                            derive_id("chatcmpl-", str_of(resp, "id"), "msg_"), "object",
                            "chat.completion", "created", (json_int_t)gw_xlate_now(), "model",
                            model ? model : "", "choices", "index", 0, "message", msg, "logprobs",
                            "finish_reason", fr);
    json_object_set_new(out, "usage", openai_usage(&u));
    if (usage)
        *usage = u;
    return out;
}

/*
 * chat.completion -> Anthropic message. Only choices[0] is used.
 * reasoning/reasoning_content (vLLM, llama.cpp) -> a thinking block first
 * (signature ""), then text (content parts and refusal joined), then one
 * tool_use per tool call (input parsed from arguments; invalid -> {}).
 * finish "stop" with a string vLLM stop_reason -> stop_sequence; any tool
 * call -> tool_use (forced tool_choice ends with "stop" on OpenAI/vLLM).
 * usage: input_tokens = prompt - cached, cache_read_input_tokens = cached.
 */
json_t *gw_xlate_resp_openai_to_anthropic(json_t *resp, const char *model,
                                          struct gw_usage *usage, struct gw_xlate_err *err)
{
    json_t *choice = json_array_get(json_object_get(resp, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    if (!json_is_object(resp) || !json_is_object(msg)) {
        bad_upstream(err, "no choices[0].message");
        return NULL;
    }
    json_t *content = json_array();
    json_t *r = json_object_get(msg, "reasoning_content");
    if (!json_is_string(r))
        r = json_object_get(msg, "reasoning");
    if (json_is_string(r) && json_string_length(r))
        json_array_append_new(content, json_pack("{s:s, s:O, s:s}", "type", "thinking",
                                                 "thinking", r, "signature", ""));
    struct gw_buf text;
    gw_buf_init(&text, 0);
    json_t *c = json_object_get(msg, "content");
    if (json_is_string(c)) {
        gw_buf_append(&text, json_string_value(c), json_string_length(c));
    } else if (json_is_array(c)) {
        size_t i;
        json_t *p;
        json_array_foreach(c, i, p) {
            json_t *s = json_object_get(p, "text");
            if (!json_is_string(s))
                s = json_object_get(p, "refusal");
            if (json_is_string(s))
                gw_buf_append(&text, json_string_value(s), json_string_length(s));
        }
    }
    json_t *refusal = json_object_get(msg, "refusal");
    if (json_is_string(refusal))
        gw_buf_append(&text, json_string_value(refusal), json_string_length(refusal));
    if (text.len)
        json_array_append_new(content, json_pack("{s:s, s:s%}", "type", "text", "text",
                                                 text.data, text.len));
    gw_buf_free(&text);

    json_t *calls = json_object_get(msg, "tool_calls");
    size_t i, ncalls = 0;
    json_t *tc;
    json_array_foreach(calls, i, tc) {
        json_t *fn = json_object_get(tc, "function");
        json_t *id = json_object_get(tc, "id");
        const char *name = str_of(fn, "name");
        json_t *idv = json_is_string(id) && json_string_length(id) ? clean_id_json(id)
                                                                     : derive_id("toolu_", NULL, "");
        json_array_append_new(content, json_pack("{s:s, s:o, s:s, s:o}", "type", "tool_use", "id",
                                                 idv, "name", name ? name : "", "input",
                                                 parse_args(json_object_get(fn, "arguments"))));
        ncalls++;
    }

    const char *fr = str_of(choice, "finish_reason");
    const char *sr = gw_xlate_stop_reason(fr);
    json_t *seq = json_null();
    json_t *vsr = json_object_get(choice, "stop_reason");
    if (ncalls && strcmp(sr, "end_turn") == 0)
        sr = "tool_use";
    else if (!ncalls && fr && strcmp(fr, "stop") == 0 && json_is_string(vsr)) {
        sr = "stop_sequence";
        seq = json_incref(vsr);
    }

    struct gw_usage u;
    gw_usage_init(&u);
    json_t *ou = json_object_get(resp, "usage");
    int64_t pt = int_of(ou, "prompt_tokens", -1), ct = int_of(ou, "completion_tokens", -1);
    if (pt >= 0 || ct >= 0) {
        u.reported = true;
        u.prompt_tokens = pt;
        u.completion_tokens = ct;
        u.cached_tokens = int_of(json_object_get(ou, "prompt_tokens_details"), "cached_tokens", 0);
        json_t *cd = json_object_get(ou, "completion_tokens_details");
        u.reasoning_tokens = int_of(cd, "reasoning_tokens", 0);
    }
    int64_t in = u.prompt_tokens < 0 ? 0 : u.prompt_tokens - u.cached_tokens;
    if (!model)
        model = str_of(resp, "model");
    json_t *out = json_pack(
        "{s:o, s:s, s:s, s:s, s:o, s:s, s:o, s:{s:I, s:I, s:I, s:I}}", "id",
        derive_id("msg_", str_of(resp, "id"), "chatcmpl-"), "type", "message", "role",
        "assistant", "model", model ? model : "", "content", content, "stop_reason", sr,
        "stop_sequence", seq, "usage", "input_tokens", (json_int_t)(in < 0 ? 0 : in),
        "cache_creation_input_tokens", (json_int_t)0, "cache_read_input_tokens",
        (json_int_t)u.cached_tokens, "output_tokens",
        (json_int_t)(u.completion_tokens < 0 ? 0 : u.completion_tokens));
    if (usage)
        *usage = u;
    return out;
}

/* ------------------------------------------------------------------ */
/* errors                                                              */

const char *gw_xlate_anthropic_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: return "overloaded_error";
    case 504: return "timeout_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* Returns a malloc'd NUL-terminated string; free() it. */
char *gw_xlate_anthropic_error_body(int status, const char *message)
{
    json_t *e = json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                          gw_xlate_anthropic_error_type(status), "message",
                          message && message[0] ? message : "error");
    char *s = json_dumps(e, JSON_COMPACT);
    json_decref(e);
    if (!s)
        abort(); /* out of memory: as gw_malloc does */
    return s;
}

/*
 * Anthropic error -> OpenAI error. Status is kept except 529 -> 503 (an
 * OpenAI client knows 503 as "try later"). Types: invalid_request_error,
 * authentication_error, permission_error, not_found_error and
 * rate_limit_error keep their names; request_too_large ->
 * invalid_request_error (413); api_error -> server_error;
 * overloaded_error -> upstream_overloaded (503); timeout_error ->
 * upstream_timeout (504); billing_error -> insufficient_quota. The message
 * is error.message; a body that is not an Anthropic error gives a message
 * with the status and a printable snippet of the body.
 */
void gw_xlate_anthropic_error_to_openai(int status, const char *body, size_t len,
                                        struct gw_xlate_err *out)
{
    json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    json_t *e = json_object_get(root, "error");
    const char *type = str_of(e, "type");
    const char *msg = str_of(e, "message");
    if (!type)
        type = gw_xlate_anthropic_error_type(status);
    static const struct {
        const char *in, *out;
        int status;
    } map[] = {
        {"invalid_request_error", "invalid_request_error", 0},
        {"authentication_error", "authentication_error", 0},
        {"permission_error", "permission_error", 0},
        {"not_found_error", "not_found_error", 0},
        {"request_too_large", "invalid_request_error", 413},
        {"rate_limit_error", "rate_limit_error", 0},
        {"billing_error", "insufficient_quota", 0},
        {"api_error", "server_error", 0},
        {"overloaded_error", "upstream_overloaded", 503},
        {"timeout_error", "upstream_timeout", 504},
    };
    const char *otype = status >= 500 ? "server_error" : "invalid_request_error";
    int ostatus = status == 529 ? 503 : status;
    for (size_t i = 0; i < GW_ARRAY_LEN(map); i++) {
        if (strcmp(type, map[i].in) == 0) {
            otype = map[i].out;
            if (map[i].status)
                ostatus = map[i].status;
            break;
        }
    }
    if (ostatus < 400 || ostatus > 599)
        ostatus = 502;
    out->status = ostatus;
    out->type = otype;
    out->param = NULL;
    if (msg && msg[0]) {
        snprintf(out->message, sizeof(out->message), "%s", msg);
    } else {
        char snippet[160];
        size_t n = 0;
        for (size_t i = 0; body && i < len && n < sizeof(snippet) - 1; i++)
            snippet[n++] = (body[i] >= 0x20 && body[i] < 0x7f) ? body[i] : ' ';
        snippet[n] = '\0';
        snprintf(out->message, sizeof(out->message), "upstream returned status %d%s%s", status,
                 n ? ": " : "", snippet);
    }
    json_decref(root);
}
