/*
 * xstream.c - stream translation, one upstream SSE event at a time
 * (contract in translate.h, sequences in PROTOCOLS.md 1.4, 2.4, 3.2, 3.3).
 *
 * Anthropic events -> OpenAI chunks
 *   message_start        -> first chunk, delta {role:"assistant",content:""}
 *   content_block_start  -> tool_use: the call's first fragment {index:k, id,
 *                           type, function{name, arguments:""}}, k counting
 *                           tool calls only; text/thinking: nothing
 *   content_block_delta  -> text_delta: delta.content; input_json_delta:
 *                           tool_calls[{index:k, function{arguments}}];
 *                           thinking_delta: delta.reasoning_content (the
 *                           vLLM/LiteLLM field; SDKs ignore it); empty
 *                           pieces, signature and citations: nothing
 *   message_delta        -> the finish chunk (delta {}, mapped reason), once
 *   message_stop         -> the usage chunk (choices:[]) when the client
 *                           asked for include_usage, then [DONE]
 *   error                -> {"error":{message,type,param:null,code:null}};
 *                           no [DONE] after it (the SDKs throw on the error
 *                           chunk; [DONE] would tell raw clients all is well)
 *   ping, content_block_stop, unknown names -> nothing
 * Every chunk has the same id (chatcmpl-<message id without msg_>), created
 * and model, and "usage":null when include_usage is on, as OpenAI does.
 * Usage: message_start gives input and cache counts, message_delta the
 * output (and, on newer APIs, input/cache again): the latest value wins.
 *
 * OpenAI chunks -> Anthropic events
 *   first chunk          -> message_start (input_tokens from the chunk's usage
 *                           when it has one, else 0; output_tokens 0), ping
 *   reasoning(_content)  -> a thinking block (signature "")
 *   content / refusal    -> a text block (opened on the first non-empty piece)
 *   tool_calls fragment  -> a new OpenAI index closes the open block and
 *                           opens tool_use{id, name, input:{}} at the next
 *                           block index; arguments -> input_json_delta
 *   finish_reason        -> closes the open block; message_delta is HELD
 *                           until usage arrives (the usage-only chunk comes
 *                           after the finish chunk) or the stream ends
 *   [DONE] / clean end   -> whatever is missing: block stop, message_delta,
 *                           message_stop
 *   {"error":...}        -> event error {type:error, error{type,message}};
 *                           type from a vLLM integer code, else api_error
 * Block indexes count every block; tool indexes are the upstream's. A tool
 * call index seen again after its block was closed (no server interleaves
 * calls) is an error, unless the fragment carries no arguments.
 * Tool ids are sanitized to [A-Za-z0-9_-] as Anthropic requires. stop with
 * any tool call -> tool_use (forced tool_choice ends with "stop"); stop with
 * vLLM's string stop_reason -> stop_sequence with that string.
 *
 * After the client stream is closed (message_stop, [DONE] or an error
 * event) further input is ignored, so the invariants hold whatever the
 * upstream sends: OpenAI output never has an event name; Anthropic output
 * starts with message_start, every content_block_start gets its stop, and
 * message_stop comes once, last (or an error event ends it).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translate/translate.h"

#define MAX_BLOCKS 4096   /* tool/text blocks tracked per stream */

enum block_kind {
    BLOCK_NONE = 0,
    BLOCK_TEXT = 1,
    BLOCK_THINKING = 2,
    BLOCK_TOOL = 3,
    BLOCK_OTHER = 4,
};

struct block_map {
    int64_t block;   /* upstream Anthropic block index */
    int tool;        /* OpenAI tool call index, or -1 */
    enum block_kind kind;
};

struct gw_xstream {
    enum gw_xstream_dir dir;
    char *model;             /* reported to the client; NULL: the upstream's */
    bool include_usage;      /* OpenAI client wants the usage-only chunk */
    bool started;            /* first client event sent */
    bool closed;             /* client stream ended (stop, [DONE] or error) */
    bool upstream_done;      /* upstream said it is complete */
    struct gw_usage usage;
    char *id;                /* chatcmpl-... or msg_... */
    int64_t created;

    /* Anthropic -> OpenAI */
    int ntools;              /* tool calls announced so far */
    struct block_map *blocks;
    size_t nblocks, ablocks;
    bool sent_finish;        /* finish chunk sent */

    /* OpenAI -> Anthropic */
    int next_block;          /* next Anthropic content block index */
    enum block_kind open;    /* kind of the open block, BLOCK_NONE if none */
    int64_t open_tool;       /* upstream tool index of the open tool block */
    int64_t *tools_seen;     /* upstream tool indexes that had a block */
    size_t ntools_seen, atools_seen;
    bool saw_finish;
    const char *stop_reason; /* mapped from finish_reason */
    char *stop_seq;          /* vLLM matched stop string or NULL */
};

/* ------------------------------------------------------------------ */

struct gw_xstream *gw_xstream_new(enum gw_xstream_dir dir, const char *model, bool include_usage)
{
    struct gw_xstream *x = gw_calloc(1, sizeof(*x));
    x->dir = dir == GW_XSTREAM_OPENAI_TO_ANTHROPIC ? dir : GW_XSTREAM_ANTHROPIC_TO_OPENAI;
    x->model = model ? gw_strdup(model) : NULL;
    x->include_usage = include_usage;
    x->created = gw_xlate_now();
    gw_usage_init(&x->usage);
    return x;
}

void gw_xstream_free(struct gw_xstream *x)
{
    if (!x)
        return;
    free(x->model);
    free(x->id);
    free(x->blocks);
    free(x->tools_seen);
    free(x->stop_seq);
    free(x);
}

void gw_xstream_usage(const struct gw_xstream *x, struct gw_usage *u)
{
    *u = x->usage;
}

bool gw_xstream_done(const struct gw_xstream *x)
{
    return x->upstream_done;
}

static const char *str_of(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* prefix + id without strip; random hex when id is absent. */
static char *make_id(const char *prefix, const char *id, const char *strip)
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
    size_t n = strlen(prefix) + strlen(id) + 1;
    char *s = gw_malloc(n);
    snprintf(s, n, "%s%s", prefix, id);
    return s;
}

static json_t *clean_id(json_t *id)
{
    if (!json_is_string(id) || json_string_length(id) == 0) {
        char *s = make_id("toolu_", NULL, "");
        json_t *v = json_string(s);
        free(s);
        return v;
    }
    size_t n = json_string_length(id);
    char *s = gw_malloc(n + 1);
    const char *p = json_string_value(id);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        s[i] = (isalnum(ch) && ch < 0x80) || ch == '_' || ch == '-' ? (char)ch : '_';
    }
    json_t *v = json_stringn(s, n);
    free(s);
    return v;
}

/* Serialize v (stolen) and hand it to the client. */
static int emit_json(const char *event, json_t *v, gw_xstream_emit_cb emit, void *ud)
{
    char *s = json_dumps(v, JSON_COMPACT);
    json_decref(v);
    if (!s)
        abort(); /* out of memory */
    int rc = emit(ud, event, s, strlen(s));
    free(s);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Anthropic -> OpenAI                                                 */

static const char *a2o_model(struct gw_xstream *x)
{
    return x->model ? x->model : "";
}

static json_t *chunk_base(struct gw_xstream *x)
{
    json_t *c = json_pack("{s:s, s:s, s:I, s:s}", "id", x->id, "object", "chat.completion.chunk",
                          "created", (json_int_t)x->created, "model", a2o_model(x));
    return c;
}

/* One chunk with choices[0] = {delta (stolen), finish_reason}. */
static int a2o_chunk(struct gw_xstream *x, json_t *delta, const char *finish,
                     gw_xstream_emit_cb emit, void *ud)
{
    json_t *c = chunk_base(x);
    json_object_set_new(c, "choices",
                        json_pack("[{s:i, s:o, s:n, s:o}]", "index", 0, "delta", delta,
                                  "logprobs", "finish_reason",
                                  finish ? json_string(finish) : json_null()));
    if (x->include_usage)
        json_object_set_new(c, "usage", json_null());
    return emit_json(NULL, c, emit, ud);
}

static int a2o_start(struct gw_xstream *x, json_t *msg, gw_xstream_emit_cb emit, void *ud)
{
    if (x->started)
        return 0;
    x->started = true;
    if (!x->id)
        x->id = make_id("chatcmpl-", str_of(msg, "id"), "msg_");
    if (!x->model)
        x->model = gw_strdup(str_of(msg, "model") ? str_of(msg, "model") : "");
    return a2o_chunk(x, json_pack("{s:s, s:s}", "role", "assistant", "content", ""), NULL, emit,
                     ud);
}

static struct block_map *a2o_block(struct gw_xstream *x, json_t *index)
{
    if (!json_is_integer(index))
        return x->nblocks ? &x->blocks[x->nblocks - 1] : NULL;
    for (size_t i = x->nblocks; i-- > 0;)
        if (x->blocks[i].block == json_integer_value(index))
            return &x->blocks[i];
    return NULL;
}

static int a2o_block_start(struct gw_xstream *x, json_t *ev, gw_xstream_emit_cb emit, void *ud)
{
    json_t *cb = json_object_get(ev, "content_block");
    const char *type = str_of(cb, "type");
    if (!type)
        return GW_EPARSE;
    if (x->nblocks == MAX_BLOCKS)
        return GW_EPARSE;
    if (x->nblocks == x->ablocks) {
        x->ablocks = x->ablocks ? x->ablocks * 2 : 8;
        x->blocks = gw_realloc(x->blocks, x->ablocks * sizeof(*x->blocks));
    }
    json_t *index = json_object_get(ev, "index");
    struct block_map *b = &x->blocks[x->nblocks++];
    b->block = json_is_integer(index) ? (int64_t)json_integer_value(index) : (int64_t)x->nblocks - 1;
    b->tool = -1;
    if (strcmp(type, "text") == 0) {
        b->kind = BLOCK_TEXT;
        json_t *t = json_object_get(cb, "text");
        if (json_is_string(t) && json_string_length(t))
            return a2o_chunk(x, json_pack("{s:O}", "content", t), NULL, emit, ud);
        return 0;
    }
    if (strcmp(type, "thinking") == 0) {
        b->kind = BLOCK_THINKING;
        return 0;
    }
    if (strcmp(type, "tool_use") != 0) {
        b->kind = BLOCK_OTHER; /* server tools, redacted thinking: not for the client */
        return 0;
    }
    b->kind = BLOCK_TOOL;
    b->tool = x->ntools++;
    const char *id = str_of(cb, "id"), *name = str_of(cb, "name");
    json_t *call = json_pack("{s:i, s:s, s:s, s:{s:s, s:s}}", "index", b->tool, "id",
                             id ? id : "", "type", "function", "function", "name",
                             name ? name : "", "arguments", "");
    return a2o_chunk(x, json_pack("{s:[o]}", "tool_calls", call), NULL, emit, ud);
}

static int a2o_block_delta(struct gw_xstream *x, json_t *ev, gw_xstream_emit_cb emit, void *ud)
{
    json_t *d = json_object_get(ev, "delta");
    const char *type = str_of(d, "type");
    if (!type)
        return GW_EPARSE;
    struct block_map *b = a2o_block(x, json_object_get(ev, "index"));
    json_t *v;
    if (strcmp(type, "text_delta") == 0) {
        v = json_object_get(d, "text");
        if (!json_is_string(v) || json_string_length(v) == 0)
            return 0;
        return a2o_chunk(x, json_pack("{s:O}", "content", v), NULL, emit, ud);
    }
    if (strcmp(type, "thinking_delta") == 0) {
        v = json_object_get(d, "thinking");
        if (!json_is_string(v) || json_string_length(v) == 0)
            return 0;
        return a2o_chunk(x, json_pack("{s:O}", "reasoning_content", v), NULL, emit, ud);
    }
    if (strcmp(type, "input_json_delta") == 0) {
        v = json_object_get(d, "partial_json");
        if (!b || b->kind != BLOCK_TOOL || !json_is_string(v) || json_string_length(v) == 0)
            return 0;
        json_t *call = json_pack("{s:i, s:{s:O}}", "index", b->tool, "function", "arguments", v);
        return a2o_chunk(x, json_pack("{s:[o]}", "tool_calls", call), NULL, emit, ud);
    }
    return 0; /* signature_delta, citations_delta, ... */
}

static int a2o_usage_chunk(struct gw_xstream *x, gw_xstream_emit_cb emit, void *ud)
{
    const struct gw_usage *u = &x->usage;
    int64_t p = u->prompt_tokens < 0 ? 0 : u->prompt_tokens;
    int64_t c = u->completion_tokens < 0 ? 0 : u->completion_tokens;
    json_t *ch = chunk_base(x);
    json_object_set_new(ch, "choices", json_array());
    json_object_set_new(ch, "usage",
                        json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)p,
                                  "completion_tokens", (json_int_t)c, "total_tokens",
                                  (json_int_t)(p + c), "prompt_tokens_details", "cached_tokens",
                                  (json_int_t)u->cached_tokens));
    return emit_json(NULL, ch, emit, ud);
}

/* The end of a normal stream: whatever of finish chunk, usage chunk and
 * [DONE] is still missing. */
static int a2o_close(struct gw_xstream *x, gw_xstream_emit_cb emit, void *ud)
{
    int rc;
    if (x->closed)
        return 0;
    if ((rc = a2o_start(x, NULL, emit, ud)))
        return rc;
    x->closed = true;
    if (!x->sent_finish) {
        x->sent_finish = true;
        if ((rc = a2o_chunk(x, json_object(), "stop", emit, ud)))
            return rc;
    }
    if (x->include_usage && (rc = a2o_usage_chunk(x, emit, ud)))
        return rc;
    return emit(ud, NULL, "[DONE]", 6);
}

static int a2o_error(struct gw_xstream *x, const char *type, const char *msg,
                     gw_xstream_emit_cb emit, void *ud)
{
    x->closed = true;
    json_t *e = json_pack("{s:{s:s, s:s, s:n, s:n}}", "error", "message", msg ? msg : "error",
                          "type", type ? type : "upstream_error", "param", "code");
    return emit_json(NULL, e, emit, ud);
}

static int a2o_feed(struct gw_xstream *x, const char *name, json_t *ev, gw_xstream_emit_cb emit,
                    void *ud)
{
    int rc;
    if (strcmp(name, "message_start") == 0) {
        json_t *msg = json_object_get(ev, "message");
        gw_xlate_anthropic_usage(json_object_get(msg, "usage"), &x->usage);
        return a2o_start(x, msg, emit, ud);
    }
    if (strcmp(name, "error") == 0) {
        json_t *e = json_object_get(ev, "error");
        x->upstream_done = true;
        return a2o_error(x, str_of(e, "type"), str_of(e, "message"), emit, ud);
    }
    if (strcmp(name, "message_stop") == 0) {
        x->upstream_done = true;
        return a2o_close(x, emit, ud);
    }
    bool bstart = strcmp(name, "content_block_start") == 0;
    bool bdelta = strcmp(name, "content_block_delta") == 0;
    if (!bstart && !bdelta && strcmp(name, "message_delta") != 0)
        return 0; /* ping, content_block_stop, future events */
    if ((rc = a2o_start(x, NULL, emit, ud)))
        return rc;
    if (bstart)
        return a2o_block_start(x, ev, emit, ud);
    if (bdelta)
        return a2o_block_delta(x, ev, emit, ud);
    /* message_delta */
    gw_xlate_anthropic_usage(json_object_get(ev, "usage"), &x->usage);
    if (x->sent_finish)
        return 0;
    x->sent_finish = true;
    const char *sr = str_of(json_object_get(ev, "delta"), "stop_reason");
    return a2o_chunk(x, json_object(), gw_xlate_finish_reason(sr), emit, ud);
}

/* ------------------------------------------------------------------ */
/* OpenAI -> Anthropic                                                 */

static int o2a_event(const char *name, json_t *v, gw_xstream_emit_cb emit, void *ud)
{
    return emit_json(name, v, emit, ud);
}

static int o2a_start(struct gw_xstream *x, json_t *chunk, gw_xstream_emit_cb emit, void *ud)
{
    if (x->started)
        return 0;
    x->started = true;
    x->id = make_id("msg_", str_of(chunk, "id"), "chatcmpl-");
    if (!x->model)
        x->model = gw_strdup(str_of(chunk, "model") ? str_of(chunk, "model") : "");
    json_t *u = json_object_get(chunk, "usage");
    json_t *pt = json_object_get(u, "prompt_tokens");
    json_t *cached = json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
    json_int_t in = json_is_integer(pt) ? json_integer_value(pt) : 0;
    json_int_t cr = json_is_integer(cached) ? json_integer_value(cached) : 0;
    if (cr < 0 || cr > in)
        cr = 0;
    json_t *ev = json_pack(
        "{s:s, s:{s:s, s:s, s:s, s:s, s:[], s:n, s:n, s:{s:I, s:I, s:I, s:I}}}", "type",
        "message_start", "message", "id", x->id, "type", "message", "role", "assistant", "model",
        x->model, "content", "stop_reason", "stop_sequence", "usage", "input_tokens",
        (json_int_t)(in - cr < 0 ? 0 : in - cr), "output_tokens", (json_int_t)0,
        "cache_creation_input_tokens", (json_int_t)0, "cache_read_input_tokens", cr);
    int rc = o2a_event("message_start", ev, emit, ud);
    if (rc)
        return rc;
    return o2a_event("ping", json_pack("{s:s}", "type", "ping"), emit, ud);
}

static int o2a_close_block(struct gw_xstream *x, gw_xstream_emit_cb emit, void *ud)
{
    if (x->open == BLOCK_NONE)
        return 0;
    x->open = BLOCK_NONE;
    return o2a_event("content_block_stop", json_pack("{s:s, s:i}", "type", "content_block_stop",
                                                     "index", x->next_block - 1),
                     emit, ud);
}

/* Close the open block and open one of kind with content_block cb (stolen). */
static int o2a_open_block(struct gw_xstream *x, enum block_kind kind, json_t *cb,
                          gw_xstream_emit_cb emit, void *ud)
{
    int rc = o2a_close_block(x, emit, ud);
    if (rc) {
        json_decref(cb);
        return rc;
    }
    x->open = kind;
    int index = x->next_block++;
    return o2a_event("content_block_start",
                     json_pack("{s:s, s:i, s:o}", "type", "content_block_start", "index", index,
                               "content_block", cb),
                     emit, ud);
}

static int o2a_delta(struct gw_xstream *x, const char *dtype, const char *field, json_t *v,
                     gw_xstream_emit_cb emit, void *ud)
{
    return o2a_event("content_block_delta",
                     json_pack("{s:s, s:i, s:{s:s, s:O}}", "type", "content_block_delta", "index",
                               x->next_block - 1, "delta", "type", dtype, field, v),
                     emit, ud);
}

static bool tool_seen(struct gw_xstream *x, int64_t idx)
{
    for (size_t i = 0; i < x->ntools_seen; i++)
        if (x->tools_seen[i] == idx)
            return true;
    return false;
}

static int o2a_tool(struct gw_xstream *x, json_t *tc, size_t pos, gw_xstream_emit_cb emit,
                    void *ud)
{
    json_t *jidx = json_object_get(tc, "index");
    int64_t idx = json_is_integer(jidx) ? (int64_t)json_integer_value(jidx) : (int64_t)pos;
    json_t *fn = json_object_get(tc, "function");
    json_t *args = json_object_get(fn, "arguments");
    bool has_args = json_is_string(args) && json_string_length(args) > 0;
    int rc;
    if (x->open != BLOCK_TOOL || x->open_tool != idx) {
        if (tool_seen(x, idx))
            return has_args ? GW_EPARSE : 0;
        if (x->ntools_seen == MAX_BLOCKS)
            return GW_EPARSE;
        if (x->ntools_seen == x->atools_seen) {
            x->atools_seen = x->atools_seen ? x->atools_seen * 2 : 8;
            x->tools_seen = gw_realloc(x->tools_seen, x->atools_seen * sizeof(*x->tools_seen));
        }
        x->tools_seen[x->ntools_seen++] = idx;
        const char *name = str_of(fn, "name");
        json_t *cb = json_pack("{s:s, s:o, s:s, s:{}}", "type", "tool_use", "id",
                               clean_id(json_object_get(tc, "id")), "name", name ? name : "",
                               "input");
        if ((rc = o2a_open_block(x, BLOCK_TOOL, cb, emit, ud)))
            return rc;
        x->open_tool = idx;
    }
    if (!has_args)
        return 0;
    return o2a_delta(x, "input_json_delta", "partial_json", args, emit, ud);
}

static int o2a_choice(struct gw_xstream *x, json_t *choice, gw_xstream_emit_cb emit, void *ud)
{
    json_t *d = json_object_get(choice, "delta");
    int rc;
    json_t *r = json_object_get(d, "reasoning_content");
    if (!json_is_string(r))
        r = json_object_get(d, "reasoning");
    if (json_is_string(r) && json_string_length(r)) {
        if (x->open != BLOCK_THINKING &&
            (rc = o2a_open_block(x, BLOCK_THINKING,
                                 json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "",
                                           "signature", ""),
                                 emit, ud)))
            return rc;
        if ((rc = o2a_delta(x, "thinking_delta", "thinking", r, emit, ud)))
            return rc;
    }
    static const char *const text_fields[] = {"content", "refusal"};
    for (size_t i = 0; i < GW_ARRAY_LEN(text_fields); i++) {
        json_t *t = json_object_get(d, text_fields[i]);
        if (!json_is_string(t) || json_string_length(t) == 0)
            continue;
        if (x->open != BLOCK_TEXT &&
            (rc = o2a_open_block(x, BLOCK_TEXT, json_pack("{s:s, s:s}", "type", "text", "text", ""),
                                 emit, ud)))
            return rc;
        if ((rc = o2a_delta(x, "text_delta", "text", t, emit, ud)))
            return rc;
    }
    json_t *calls = json_object_get(d, "tool_calls");
    size_t i;
    json_t *tc;
    json_array_foreach(calls, i, tc) {
        if (!json_is_object(tc))
            return GW_EPARSE;
        if ((rc = o2a_tool(x, tc, i, emit, ud)))
            return rc;
    }
    const char *fr = str_of(choice, "finish_reason");
    if (fr && !x->saw_finish) {
        x->saw_finish = true;
        x->stop_reason = gw_xlate_stop_reason(fr);
        json_t *vsr = json_object_get(choice, "stop_reason");
        if (strcmp(fr, "stop") == 0 && json_is_string(vsr)) {
            x->stop_reason = "stop_sequence";
            x->stop_seq = gw_strdup(json_string_value(vsr));
        }
        return o2a_close_block(x, emit, ud);
    }
    return 0;
}

static void o2a_usage(struct gw_xstream *x, json_t *u)
{
    json_t *pt = json_object_get(u, "prompt_tokens");
    json_t *ct = json_object_get(u, "completion_tokens");
    if (!json_is_integer(pt) && !json_is_integer(ct))
        return;
    struct gw_usage *g = &x->usage;
    g->reported = true;
    g->prompt_tokens = json_is_integer(pt) && json_integer_value(pt) >= 0 ? json_integer_value(pt)
                                                                          : 0;
    g->completion_tokens =
        json_is_integer(ct) && json_integer_value(ct) >= 0 ? json_integer_value(ct) : 0;
    json_t *cached = json_object_get(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
    g->cached_tokens = json_is_integer(cached) && json_integer_value(cached) >= 0 &&
                               json_integer_value(cached) <= g->prompt_tokens
                           ? json_integer_value(cached)
                           : 0;
    json_t *rt = json_object_get(json_object_get(u, "completion_tokens_details"),
                                 "reasoning_tokens");
    g->reasoning_tokens = json_is_integer(rt) && json_integer_value(rt) >= 0
                              ? json_integer_value(rt) : 0;
}

/* message_delta + message_stop, after closing the open block. */
static int o2a_close(struct gw_xstream *x, gw_xstream_emit_cb emit, void *ud)
{
    int rc;
    if (x->closed)
        return 0;
    if ((rc = o2a_start(x, NULL, emit, ud)) || (rc = o2a_close_block(x, emit, ud)))
        return rc;
    x->closed = true;
    const char *sr = x->stop_reason ? x->stop_reason : "end_turn";
    if (x->ntools_seen && strcmp(sr, "end_turn") == 0)
        sr = "tool_use";
    json_t *usage;
    const struct gw_usage *u = &x->usage;
    if (u->reported)
        usage = json_pack("{s:I, s:I, s:I}", "input_tokens",
                          (json_int_t)(u->prompt_tokens - u->cached_tokens),
                          "cache_read_input_tokens", (json_int_t)u->cached_tokens,
                          "output_tokens", (json_int_t)u->completion_tokens);
    else
        usage = json_pack("{s:i}", "output_tokens", 0);
    json_t *md = json_pack("{s:s, s:{s:s, s:o}, s:o}", "type", "message_delta", "delta",
                           "stop_reason", sr, "stop_sequence",
                           x->stop_seq && strcmp(sr, "stop_sequence") == 0
                               ? json_string(x->stop_seq) : json_null(),
                           "usage", usage);
    if ((rc = o2a_event("message_delta", md, emit, ud)))
        return rc;
    return o2a_event("message_stop", json_pack("{s:s}", "type", "message_stop"), emit, ud);
}

static int o2a_error(struct gw_xstream *x, const char *type, const char *msg,
                     gw_xstream_emit_cb emit, void *ud)
{
    x->closed = true;
    json_t *e = json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                          type ? type : "api_error", "message", msg && msg[0] ? msg : "error");
    return o2a_event("error", e, emit, ud);
}

static int o2a_feed(struct gw_xstream *x, json_t *chunk, gw_xstream_emit_cb emit, void *ud)
{
    int rc;
    json_t *e = json_object_get(chunk, "error");
    if (e && !json_is_null(e) && !json_is_false(e)) {
        /* vLLM puts the HTTP status in code as an integer */
        json_t *code = json_object_get(e, "code");
        const char *type = json_is_integer(code)
                               ? gw_xlate_anthropic_error_type((int)json_integer_value(code))
                               : "api_error";
        const char *msg = json_is_string(e) ? json_string_value(e) : str_of(e, "message");
        x->upstream_done = true;
        return o2a_error(x, type, msg, emit, ud);
    }
    if ((rc = o2a_start(x, chunk, emit, ud)))
        return rc;
    json_t *choices = json_object_get(chunk, "choices");
    json_t *choice = json_array_get(choices, 0);
    if (choice && !json_is_object(choice))
        return GW_EPARSE;
    if (choice && (rc = o2a_choice(x, choice, emit, ud)))
        return rc;
    json_t *u = json_object_get(chunk, "usage");
    if (json_is_object(u))
        o2a_usage(x, u);
    if (x->saw_finish && x->usage.reported) {
        x->upstream_done = true; /* only [DONE] may follow */
        return o2a_close(x, emit, ud);
    }
    return 0;
}

/* ------------------------------------------------------------------ */

static bool is_done_marker(gw_str d)
{
    while (d.len && isspace((unsigned char)d.p[d.len - 1]))
        d.len--;
    while (d.len && isspace((unsigned char)d.p[0])) {
        d.p++;
        d.len--;
    }
    return d.len == 6 && memcmp(d.p, "[DONE]", 6) == 0;
}

int gw_xstream_feed(struct gw_xstream *x, gw_str event, gw_str data, gw_xstream_emit_cb emit,
                    void *ud)
{
    if (x->closed)
        return 0;
    if (x->dir == GW_XSTREAM_OPENAI_TO_ANTHROPIC && is_done_marker(data)) {
        x->upstream_done = true;
        return o2a_close(x, emit, ud);
    }
    json_t *ev = data.len ? json_loadb(data.p, data.len, 0, NULL) : NULL;
    if (!json_is_object(ev)) {
        json_decref(ev);
        return GW_EPARSE;
    }
    int rc;
    if (x->dir == GW_XSTREAM_OPENAI_TO_ANTHROPIC) {
        rc = o2a_feed(x, ev, emit, ud);
    } else {
        /* dispatch on the SSE name, as the SDKs do; the JSON type if none */
        char name[32];
        const char *t = str_of(ev, "type");
        size_t n = event.p && event.len ? event.len : (t ? strlen(t) : 0);
        const char *src = event.p && event.len ? event.p : t;
        if (n >= sizeof(name))
            n = 0;
        if (n)
            memcpy(name, src, n);
        name[n] = '\0';
        rc = a2o_feed(x, name, ev, emit, ud);
    }
    json_decref(ev);
    return rc;
}

int gw_xstream_finish(struct gw_xstream *x, const char *error, gw_xstream_emit_cb emit, void *ud)
{
    if (x->closed)
        return 0;
    if (x->dir == GW_XSTREAM_OPENAI_TO_ANTHROPIC)
        return error ? o2a_error(x, "api_error", error, emit, ud) : o2a_close(x, emit, ud);
    return error ? a2o_error(x, "upstream_error", error, emit, ud) : a2o_close(x, emit, ud);
}
