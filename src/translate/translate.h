/*
 * translate.h - OpenAI Chat Completions <-> Anthropic Messages, both
 * directions, for requests, whole responses, streams and errors.
 * (PROTOCOLS.md sections 1-3.)
 *
 * Pure functions over jansson values: no I/O, no globals, safe to call from
 * any thread. Inputs are the parsed JSON the client or upstream sent;
 * outputs are new values the caller owns (json_decref). Input that can't be
 * translated gives NULL and a client-facing error (status 400 for a bad
 * client request, 502 for a bad upstream response).
 *
 * Streams are state machines fed one upstream SSE event at a time; each
 * feed emits zero or more client events through a callback. They keep the
 * numbering straight (OpenAI tool_calls[].index counts tool calls only;
 * Anthropic content block indexes count every block), put role on the
 * first delta, id/type/name on a tool call's first fragment, map stop and
 * finish reasons, carry usage (cache reads and writes included), and close
 * a stream correctly when the upstream ends early or fails.
 */
#ifndef HYBRIDGW_TRANSLATE_H
#define HYBRIDGW_TRANSLATE_H

#include <jansson.h>
#include "hybridgw/core.h"
#include "provider/provider.h"   /* struct gw_usage */

struct gw_xlate_err {
    int status;             /* HTTP status for the client */
    const char *type;       /* OpenAI error type, e.g. "invalid_request_error" */
    const char *param;      /* offending field or NULL */
    char message[256];
};

struct gw_xlate_opts {
    const char *model;            /* model name to put in the translated request */
    int64_t default_max_tokens;   /* Anthropic needs max_tokens; used when absent */
    bool stream;                  /* set "stream" in the translated request */
};

/* ---- requests ---- */
json_t *gw_xlate_req_openai_to_anthropic(json_t *req, const struct gw_xlate_opts *o,
                                         struct gw_xlate_err *err);
json_t *gw_xlate_req_anthropic_to_openai(json_t *req, const struct gw_xlate_opts *o,
                                         struct gw_xlate_err *err);

/* ---- whole (non-streamed) responses ---- */
/* model: the name to report to the client (e.g. what it asked for). */
json_t *gw_xlate_resp_anthropic_to_openai(json_t *resp, const char *model,
                                          struct gw_usage *usage, struct gw_xlate_err *err);
json_t *gw_xlate_resp_openai_to_anthropic(json_t *resp, const char *model,
                                          struct gw_usage *usage, struct gw_xlate_err *err);

/* ---- streams ---- */
enum gw_xstream_dir {
    GW_XSTREAM_ANTHROPIC_TO_OPENAI = 0,  /* upstream Anthropic events -> OpenAI chunks */
    GW_XSTREAM_OPENAI_TO_ANTHROPIC = 1,  /* upstream OpenAI chunks -> Anthropic events */
    GW_XSTREAM_DIR_COUNT
};

/* One client event. OpenAI chunks have event == NULL (never send an
 * `event:` line for them); Anthropic events have their name. data is one
 * line of JSON (or "[DONE]"). Return 0 to go on, non-zero to stop. */
typedef int (*gw_xstream_emit_cb)(void *ud, const char *event, const char *data, size_t len);

struct gw_xstream;

/* include_usage: the OpenAI client asked for the usage-only final chunk.
 * model: the model name to report to the client. */
struct gw_xstream *gw_xstream_new(enum gw_xstream_dir dir, const char *model, bool include_usage);
void gw_xstream_free(struct gw_xstream *x);
/* Feed one upstream event (event name may be empty for OpenAI chunks).
 * Returns 0, the callback's non-zero value, or GW_EPARSE when the upstream
 * event is malformed (the caller then ends the stream with an error). */
int gw_xstream_feed(struct gw_xstream *x, gw_str event, gw_str data, gw_xstream_emit_cb emit,
                    void *ud);
/* The upstream stream ended. error == NULL: ended normally (emit any
 * missing closing events: content_block_stop/message_delta/message_stop or
 * finish chunk/usage chunk/[DONE]). error != NULL: it failed; emit the error
 * event of the client dialect with that message (then nothing else). */
int gw_xstream_finish(struct gw_xstream *x, const char *error, gw_xstream_emit_cb emit, void *ud);
/* Usage seen so far (prompt_tokens includes cache reads and writes). */
void gw_xstream_usage(const struct gw_xstream *x, struct gw_usage *u);
/* True once the upstream said the stream is complete. */
bool gw_xstream_done(const struct gw_xstream *x);

/* ---- errors ---- */
/* Anthropic error body for a client of the Anthropic dialect, from an
 * OpenAI-style type and message: {"type":"error","error":{"type":..,"message":..}}.
 * Maps invalid_request_error/authentication_error/permission_error/
 * not_found_error/rate_limit_error/api_error/overloaded_error by status. */
char *gw_xlate_anthropic_error_body(int status, const char *message);
/* Map an Anthropic error response (status + body) to the OpenAI shape for
 * an OpenAI client: fills status, type, message (529 -> 503 overloaded). */
void gw_xlate_anthropic_error_to_openai(int status, const char *body, size_t len,
                                        struct gw_xlate_err *out);

/* ---- helpers (added with the implementation; shared by the translators
 * and usable by providers) ---- */

/* Notes on the declarations above: gw_xlate_anthropic_error_body returns
 * malloc'd memory (free() it; it never returns NULL). A NULL err is
 * allowed everywhere. Translations never share objects or arrays with
 * their input, so they may be edited in place. The mapping decisions
 * (dropped fields, clamps, 400s) are listed at the top of translate.c and
 * xstream.c. */

/* Test hook: pin the clock used for OpenAI "created" timestamps; 0 goes
 * back to the real time. This is the one piece of global state: set it
 * once before translating (golden tests do), never while other threads
 * translate. */
void gw_xlate_set_clock(int64_t unix_seconds);
/* The clock for "created": the pinned value, else the wall clock (s). */
int64_t gw_xlate_now(void);
/* Anthropic stop_reason -> OpenAI finish_reason: end_turn, stop_sequence,
 * pause_turn -> "stop"; max_tokens, model_context_window_exceeded ->
 * "length"; tool_use -> "tool_calls"; refusal -> "content_filter";
 * NULL or anything else -> "stop". Never NULL; a static string. */
const char *gw_xlate_finish_reason(const char *stop_reason);
/* OpenAI finish_reason -> Anthropic stop_reason: stop -> end_turn,
 * length -> max_tokens, tool_calls/function_call -> tool_use,
 * content_filter -> refusal, NULL or anything else -> end_turn. */
const char *gw_xlate_stop_reason(const char *finish_reason);
/* Read an Anthropic usage object (input_tokens excludes the cache) into
 * u: prompt_tokens = input + cache reads + cache writes. Fields absent
 * from obj leave u unchanged, so it can be applied to message_start and
 * then message_delta usage (the later value wins). No-op if obj is not an
 * object. */
void gw_xlate_anthropic_usage(json_t *obj, struct gw_usage *u);
/* Anthropic error type for an HTTP status (400 invalid_request_error, 401
 * authentication_error, 402 billing_error, 403 permission_error, 404
 * not_found_error, 413 request_too_large, 429 rate_limit_error, 503/529
 * overloaded_error, 504 timeout_error, other 5xx api_error, other 4xx
 * invalid_request_error). A static string. */
const char *gw_xlate_anthropic_error_type(int status);

#endif
