/*
 * fuzz_translate_stream.c - libFuzzer target for the stream translators
 * (src/translate/xstream.c). The input is read as SSE-ish text: events are
 * separated by a blank line ("\n\n"); an event may start with a line
 * "event: NAME"; the rest, without a leading "data: ", is the data. The
 * events go through both directions, then gw_xstream_finish (clean or with
 * an error, chosen by the last input byte). Invariants checked on what is
 * emitted:
 *  - every data payload is one line of valid JSON (or [DONE] on the OpenAI
 *    side);
 *  - OpenAI side: never an event name; nothing after [DONE] or an error
 *    chunk; a clean finish always ends with [DONE] or an error chunk;
 *  - Anthropic side: every event's JSON type repeats its name;
 *    message_start comes first (unless the stream is only an error);
 *    message_stop at most once and last; nothing after an error event;
 *    content_block_start/delta/stop indexes nest properly (one block open at
 *    a time, indexes 0, 1, 2, ...) and every started block is stopped before
 *    message_stop; a clean finish always ends with message_stop or error.
 */
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

struct check {
    enum gw_xstream_dir dir;
    int nemit;
    bool ended;          /* [DONE], message_stop or an error was emitted */
    bool started;        /* message_start seen */
    int open;            /* open block index or -1 */
    int next;            /* next expected block index */
};

static int on_emit(void *ud, const char *event, const char *data, size_t len)
{
    struct check *c = ud;
    if (c->ended || strlen(data) != len || memchr(data, '\n', len))
        abort();
    c->nemit++;
    if (c->dir == GW_XSTREAM_ANTHROPIC_TO_OPENAI) {
        if (event)
            abort();
        if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
            c->ended = true;
            return 0;
        }
        json_t *v = json_loadb(data, len, 0, NULL);
        if (!json_is_object(v))
            abort();
        if (json_object_get(v, "error"))
            c->ended = true;
        else if (!json_is_array(json_object_get(v, "choices")))
            abort();
        json_decref(v);
        return 0;
    }
    if (!event)
        abort();
    json_t *v = json_loadb(data, len, 0, NULL);
    const char *type = json_string_value(json_object_get(v, "type"));
    if (!type || strcmp(type, event) != 0)
        abort();
    json_t *jidx = json_object_get(v, "index");
    int idx = json_is_integer(jidx) ? (int)json_integer_value(jidx) : -2;
    if (strcmp(event, "error") == 0) {
        c->ended = true;
    } else if (strcmp(event, "message_start") == 0) {
        if (c->started)
            abort();
        c->started = true;
    } else if (!c->started) {
        abort();
    } else if (strcmp(event, "content_block_start") == 0) {
        if (c->open != -1 || idx != c->next)
            abort();
        c->open = idx;
        c->next++;
    } else if (strcmp(event, "content_block_delta") == 0) {
        if (c->open == -1 || idx != c->open)
            abort();
    } else if (strcmp(event, "content_block_stop") == 0) {
        if (c->open == -1 || idx != c->open)
            abort();
        c->open = -1;
    } else if (strcmp(event, "message_stop") == 0) {
        if (c->open != -1)
            abort();
        c->ended = true;
    } else if (strcmp(event, "message_delta") != 0 && strcmp(event, "ping") != 0) {
        abort();
    }
    json_decref(v);
    return 0;
}

static void run(enum gw_xstream_dir dir, const char *p, size_t n, bool usage, bool fail)
{
    struct check c = {.dir = dir, .open = -1};
    struct gw_xstream *x = gw_xstream_new(dir, usage ? "client-model" : NULL, usage);
    const char *end = p + n;
    while (p < end) {
        const char *sep = memmem(p, (size_t)(end - p), "\n\n", 2);
        const char *ev_end = sep ? sep : end;
        gw_str name = GW_STR_NULL;
        if ((size_t)(ev_end - p) > 7 && memcmp(p, "event: ", 7) == 0) {
            const char *nl = memchr(p, '\n', (size_t)(ev_end - p));
            const char *ne = nl ? nl : ev_end;
            name = (gw_str){p + 7, (size_t)(ne - p - 7)};
            p = nl ? nl + 1 : ev_end;
        }
        if ((size_t)(ev_end - p) >= 6 && memcmp(p, "data: ", 6) == 0)
            p += 6;
        /* the data slice is not NUL-terminated: the translator must not care */
        int rc = gw_xstream_feed(x, name, (gw_str){p, (size_t)(ev_end - p)}, on_emit, &c);
        if (rc != 0 && rc != GW_EPARSE)
            abort();
        p = sep ? sep + 2 : end;
    }
    bool done = gw_xstream_done(x);
    if (gw_xstream_finish(x, fail ? "upstream failed" : NULL, on_emit, &c) != 0)
        abort();
    if (!c.ended)
        abort(); /* finish always leaves a closed stream */
    if (done && !c.ended)
        abort();
    struct gw_usage u;
    gw_xstream_usage(x, &u);
    if (u.reported && (u.prompt_tokens < 0 || u.cached_tokens > u.prompt_tokens))
        abort();
    gw_xstream_free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool fail = size && (data[size - 1] & 1);
    bool usage = size && (data[0] & 1);
    run(GW_XSTREAM_ANTHROPIC_TO_OPENAI, (const char *)data, size, usage, fail);
    run(GW_XSTREAM_OPENAI_TO_ANTHROPIC, (const char *)data, size, !usage, fail);
    return 0;
}
