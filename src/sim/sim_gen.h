/*
 * sim_gen.h - everything the simulator writes: non-streaming response
 * bodies, stream events one at a time, error bodies and error events in
 * both dialects, and the /v1/models and count_tokens bodies.
 *
 * A stream is a struct sim_gen walked by sim_gen_next(), which writes one
 * complete SSE event per call into a caller buffer. The event sequences are
 *   OpenAI:    role chunk, N token chunks, finish chunk, [usage chunk],
 *              data: [DONE]
 *   Anthropic: message_start, content_block_start, ping, N deltas,
 *              content_block_stop, message_delta, message_stop
 * where a "token" is one vocabulary word, or for a tool call one fragment
 * of the arguments (the first fragment carries id/type/name for OpenAI, an
 * empty partial_json for Anthropic). The I/O layer paces the token events
 * and writes the others as soon as the one before them.
 *
 * Nothing here allocates, except the heap-mode sim_out the caller passes for
 * a whole body.
 */
#ifndef HYBRIDGW_SIM_GEN_H
#define HYBRIDGW_SIM_GEN_H

#include "sim.h"
#include "sim_out.h"

/* Largest single stream event (model and tool names are escaped, at most
 * six bytes per input byte). A scratch buffer of this size always fits. */
#define SIM_EVENT_MAX 8192
/* Bytes of tool arguments per fragment. */
#define SIM_TOOL_FRAG 8

enum sim_phase {
    SIM_PH_START = 0,     /* OpenAI role chunk / Anthropic message_start */
    SIM_PH_BLOCK_START,   /* Anthropic only */
    SIM_PH_PING,          /* Anthropic only */
    SIM_PH_TOKENS,
    SIM_PH_BLOCK_STOP,    /* Anthropic only */
    SIM_PH_FINISH,        /* OpenAI finish chunk / Anthropic message_delta */
    SIM_PH_USAGE,         /* OpenAI usage chunk (include_usage) */
    SIM_PH_STOP,          /* OpenAI [DONE] / Anthropic message_stop */
    SIM_PH_END,
    SIM_PH_COUNT
};

const char *sim_phase_str(enum sim_phase p);

/* What sim_gen_next() wrote. */
enum sim_ev {
    SIM_EV_END = 0,   /* nothing: the stream is complete */
    SIM_EV_META = 1,  /* an event that is not a token */
    SIM_EV_TOKEN = 2, /* a token event (paced) */
};

struct sim_gen {
    const struct sim_req *rq;  /* borrowed; must outlive the generator */
    char id[48];               /* chatcmpl-... / msg_... */
    char tool_id[32];          /* call_N / toolu_N */
    uint64_t created;          /* unix seconds, same on every chunk */
    uint64_t rng;              /* word stream */
    uint32_t n_tokens;         /* token events to produce */
    uint32_t tok;              /* token events produced so far */
    uint32_t args_off;         /* tool arguments consumed so far */
    bool tool;                 /* answer with a tool call */
    bool cut;                  /* stopped by max_tokens */
    enum sim_phase phase;
};

/* Plan the answer to rq: output_tokens is the configured default (a
 * directive in the request overrides it), capped by the request's
 * max_tokens; seed and rq's content hash pick the words; seq (a process-wide
 * request number) makes ids unique; created is the unix time to report. */
void sim_gen_init(struct sim_gen *g, const struct sim_req *rq, uint32_t output_tokens,
                  uint64_t seed, uint64_t seq, uint64_t created);

/* Reported usage. */
uint32_t sim_gen_completion_tokens(const struct sim_gen *g);
/* The finish reason in the request's dialect ("stop", "length",
 * "tool_calls" / "end_turn", "max_tokens", "tool_use"). */
const char *sim_gen_finish_reason(const struct sim_gen *g);
/* The vLLM finished_reason label for metrics: "stop" or "length". */
const char *sim_gen_metric_reason(const struct sim_gen *g);

/* Would the next sim_gen_next() write a token event? */
bool sim_gen_next_is_token(const struct sim_gen *g);
/* Write the next event into o (reset first by the caller; SIM_EVENT_MAX
 * bytes always suffice). */
enum sim_ev sim_gen_next(struct sim_gen *g, struct sim_out *o);

/* Write the whole non-streaming body into o. Uses the same word stream as
 * the events, so it must be called on a fresh generator. */
void sim_gen_body(struct sim_gen *g, struct sim_out *o);

/* An event whose data is not valid JSON (the `malformed` fault). */
void sim_gen_malformed_event(const struct sim_gen *g, struct sim_out *o);
/* The mid-stream error: Anthropic `event: error`, OpenAI `data: {"error"}`
 * followed by `data: [DONE]`. status 0 picks the dialect default (529 /
 * 500). */
void sim_gen_error_event(const struct sim_gen *g, int status, enum sim_error_shape shape,
                         struct sim_out *o);

/* A complete error body for status in the dialect (and, for OpenAI, the
 * shape). param may be NULL or empty (-> null). request_id is used by the
 * Anthropic body only (may be NULL). */
void sim_gen_error_body(struct sim_out *o, enum sim_dialect d, enum sim_error_shape shape,
                        int status, const char *msg, const char *param,
                        const char *request_id);
/* The default message for a fault status ("Overloaded" for 529, ...). */
const char *sim_status_message(int status);
/* Anthropic error type for a status (invalid_request_error, ...). */
const char *sim_anthropic_error_type(int status);

/* GET /v1/models: OpenAI list of vLLM-style cards, or the Anthropic list
 * shape when anthropic is true. */
void sim_gen_models(struct sim_out *o, const char *const *models, unsigned n,
                    uint32_t max_model_len, uint64_t created, bool anthropic);
/* GET /v1/models/{id}: one card. */
void sim_gen_model_card(struct sim_out *o, const char *model, uint32_t max_model_len,
                        uint64_t created);

#endif
