/*
 * fuzz_translate_req.c - libFuzzer target for the request and whole-response
 * translators (src/translate/translate.c): arbitrary bytes are parsed with
 * json_loadb and, when they are JSON, go through both request translators
 * (streaming and not, with and without a model override) and both response
 * translators. Nothing may crash or leak, and:
 *  - a refusal has a 4xx/5xx status, a type and a NUL-terminated message;
 *  - the input value is never modified;
 *  - an Anthropic request has a model, max_tokens, a non-empty messages
 *    array that alternates roles, and no empty or whitespace-only text block;
 *  - every output serializes.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "translate/translate.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    gw_xlate_set_clock(1755000000);
    return 0;
}

static void check_err(const struct gw_xlate_err *e)
{
    if (e->status < 400 || e->status > 599 || !e->type ||
        !memchr(e->message, '\0', sizeof(e->message)) || e->message[0] == '\0')
        abort();
}

static void check_serializes(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT);
    if (!s)
        abort();
    free(s);
}

static bool blank(json_t *s)
{
    const char *p = json_string_value(s);
    for (size_t i = 0; i < json_string_length(s); i++)
        if (!isspace((unsigned char)p[i]))
            return false;
    return true;
}

static void check_text_blocks(json_t *blocks)
{
    size_t i;
    json_t *b;
    json_array_foreach(blocks, i, b) {
        const char *t = json_string_value(json_object_get(b, "type"));
        if (!t)
            abort();
        if (strcmp(t, "text") == 0 && blank(json_object_get(b, "text")))
            abort();
    }
}

static void check_anthropic_req(json_t *out)
{
    json_t *msgs = json_object_get(out, "messages");
    if (!json_is_string(json_object_get(out, "model")) ||
        !json_is_integer(json_object_get(out, "max_tokens")) || json_array_size(msgs) == 0)
        abort();
    const char *prev = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || (prev && strcmp(prev, role) == 0))
            abort(); /* same-role turns must have been merged */
        json_t *content = json_object_get(m, "content");
        if (json_array_size(content) == 0)
            abort();
        check_text_blocks(content);
        /* tool_result blocks come first in a user turn */
        bool other = false;
        size_t j;
        json_t *b;
        json_array_foreach(content, j, b) {
            bool tr = strcmp(json_string_value(json_object_get(b, "type")), "tool_result") == 0;
            if (tr && other)
                abort();
            other |= !tr;
        }
        prev = role;
    }
    json_t *sys = json_object_get(out, "system");
    if (json_is_array(sys))
        check_text_blocks(sys);
    else if (sys && (!json_is_string(sys) || blank(sys)))
        abort();
    json_t *stops = json_object_get(out, "stop_sequences");
    json_array_foreach(stops, i, m) {
        if (blank(m))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the error mappers take any bytes */
    struct gw_xlate_err err = {0};
    int status = size ? 400 + data[0] % 200 : 529;
    gw_xlate_anthropic_error_to_openai(status, (const char *)data, size, &err);
    check_err(&err);
    free(gw_xlate_anthropic_error_body(status, size ? "m" : NULL));

    json_t *in = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (!in)
        return 0;
    json_t *copy = json_deep_copy(in);
    static const struct gw_xlate_opts opts[] = {
        {.model = "claude-sonnet-4-5", .default_max_tokens = 1024, .stream = false},
        {.model = NULL, .default_max_tokens = 0, .stream = true},
    };
    for (size_t i = 0; i < 2; i++) {
        memset(&err, 0, sizeof(err));
        json_t *out = gw_xlate_req_openai_to_anthropic(in, &opts[i], &err);
        if (out) {
            check_anthropic_req(out);
            check_serializes(out);
            json_decref(out);
        } else {
            check_err(&err);
        }
        memset(&err, 0, sizeof(err));
        out = gw_xlate_req_anthropic_to_openai(in, &opts[i], &err);
        if (out) {
            if (json_array_size(json_object_get(out, "messages")) == 0 &&
                json_array_size(json_object_get(in, "messages")) == 0)
                abort();
            check_serializes(out);
            json_decref(out);
        } else {
            check_err(&err);
        }
    }
    struct gw_usage u;
    memset(&err, 0, sizeof(err));
    json_t *out = gw_xlate_resp_anthropic_to_openai(in, size & 1 ? "m" : NULL, &u, &err);
    if (out) {
        if (u.reported && u.prompt_tokens < u.cached_tokens)
            abort();
        check_serializes(out);
        json_decref(out);
    } else {
        check_err(&err);
    }
    out = gw_xlate_resp_openai_to_anthropic(in, size & 1 ? "m" : NULL, &u, &err);
    if (out) {
        check_serializes(out);
        json_decref(out);
    } else {
        check_err(&err);
    }
    if (!json_equal(in, copy))
        abort(); /* translators must not modify their input */
    json_decref(copy);
    json_decref(in);

    return 0;
}
