/*
 * sim.h - types shared by the parts of hybridgw-sim, the protocol simulator
 * that stands in for vLLM and for the OpenAI / Anthropic vendor APIs in
 * integration tests, benchmarks and the README quick start.
 *
 * The simulator is split into pure modules (no I/O, unit-tested on their
 * own) and one I/O module:
 *   sim_out.c    bounded output buffer, JSON string escaping
 *   sim_rng.c    PRNG, content hash, fixed vocabulary
 *   sim_opts.c   CLI flags, fault specs, in-prompt directives, /sim/config
 *   sim_req.c    request JSON (both dialects) -> struct sim_req
 *   sim_gen.c    response bodies, stream events, error bodies, model lists
 *   sim_stats.c  counters shared by all workers, /metrics and /sim/stats text
 *   sim_server.c the HTTP handlers, pacing timers, admission queue (I/O)
 *   main.c       process setup: flags, worker threads, signals
 */
#ifndef HYBRIDGW_SIM_H
#define HYBRIDGW_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_MAX_MODELS 16          /* --model may be repeated this often */
#define SIM_MODEL_MAX 256          /* longest model name accepted, with NUL */
#define SIM_TOOL_NAME_MAX 128      /* longest tool name echoed, with NUL */
#define SIM_TOOL_ARGS_MAX 512      /* generated tool arguments, with NUL */
#define SIM_ERRMSG_MAX 320         /* error message text, with NUL */
#define SIM_OUTPUT_TOKENS_MAX 1000000u
#define SIM_TTFT_MS_MAX 3600000u   /* one hour */
#define SIM_TPS_MAX 1000000.0
#define SIM_CONCURRENCY_MAX 1000000u
#define SIM_MODEL_LEN_MAX 100000000u
#define SIM_THREADS_MAX 256u
#define SIM_STALL_AT_MAX 1000000u

/* Which API a request speaks, which decides every body and error shape. */
enum sim_dialect {
    SIM_DIALECT_OPENAI = 0,      /* /v1/chat/completions (OpenAI and vLLM) */
    SIM_DIALECT_ANTHROPIC = 1,   /* /v1/messages, /v1/messages/count_tokens */
    SIM_DIALECT_COUNT
};

/* Error body shape for the OpenAI dialect (PROTOCOLS.md 1.6 and 4.4). */
enum sim_error_shape {
    SIM_ERROR_NESTED = 0,   /* vLLM >= 0.10.1: {"error":{...,"code":400}} */
    SIM_ERROR_FLAT = 1,     /* vLLM < 0.10.1: {"object":"error",...} */
    SIM_ERROR_OPENAI = 2,   /* OpenAI proper: snake_case types, string codes */
    SIM_ERROR_SHAPE_COUNT
};

/* What a fault does to a request. Only one kind per fault; `slow` is a
 * modifier that combines with any kind (or with none). */
enum sim_fault_kind {
    SIM_FAULT_NONE = 0,
    SIM_FAULT_STATUS = 1,      /* answer at once with status + error body */
    SIM_FAULT_STALL = 2,       /* after `at` events stop writing forever */
    SIM_FAULT_DISCONNECT = 3,  /* after `at` events drop the connection */
    SIM_FAULT_MALFORMED = 4,   /* after `at` events send one non-JSON event */
    SIM_FAULT_ERROR = 5,       /* after `at` events send an error event, end */
    SIM_FAULT_KIND_COUNT
};

struct sim_fault {
    enum sim_fault_kind kind;
    int status;           /* STATUS: the status; ERROR: picks the error type */
    int retry_after;      /* seconds for the retry-after header; -1 = none */
    uint32_t at;          /* events sent before the fault strikes */
    double slow_tps;      /* > 0: tokens_per_sec override (the `slow` fault) */
};

/* The knobs a running simulator may change through POST /sim/config. */
struct sim_knobs {
    uint32_t ttft_ms;          /* delay before the head and first token */
    double tokens_per_sec;     /* 0 = no pacing, everything at once */
    uint32_t output_tokens;    /* tokens per answer before max_tokens caps */
    uint32_t max_concurrency;  /* 0 = unlimited; past it requests queue */
    struct sim_fault fault;    /* fault injected into a fraction of requests */
    double fault_rate;         /* that fraction, 0..1 */
};

/* Everything set on the command line. Model names point into argv. */
struct sim_opts {
    const char *listen;                    /* "HOST:PORT" */
    unsigned threads;                      /* worker loops */
    const char *models[SIM_MAX_MODELS];    /* served model names */
    unsigned n_models;
    bool strict_models;                    /* 404 for other model names */
    uint32_t max_model_len;                /* context window in tokens */
    uint64_t seed;                         /* PRNG seed for text and faults */
    enum sim_error_shape error_shape;
    bool quiet;                            /* no diagnostics but errors */
    bool verbose;                          /* one line per request */
    struct sim_knobs knobs;                /* initial runtime knobs */
};

/* Per-request directives found in the last user message text
 * (`[sim:key=value]`) or implied by marker words (`sim:tool_call`). */
struct sim_directives {
    bool has_fault;
    struct sim_fault fault;
    int64_t output_tokens;     /* -1 = not given */
    int64_t ttft_ms;           /* -1 = not given */
    double tokens_per_sec;     /* < 0 = not given */
    bool tool_call;            /* `sim:tool_call` seen */
};

/* A parsed and validated generation request (either dialect). Plain data:
 * it owns no heap memory and may be copied. */
struct sim_req {
    enum sim_dialect dialect;
    char model[SIM_MODEL_MAX];
    bool stream;
    bool include_usage;            /* OpenAI: usage chunk before [DONE] */
    int64_t max_tokens;            /* -1 when absent */
    bool has_tools;
    char tool_name[SIM_TOOL_NAME_MAX];   /* first tool's name */
    char tool_args[SIM_TOOL_ARGS_MAX];   /* generated arguments, JSON text */
    uint32_t prompt_tokens;        /* estimate over all input text */
    uint32_t system_tokens;        /* the part that came from the system prompt */
    bool cache_hint;               /* the system prompt contains `sim:cache` */
    uint64_t content_hash;         /* hash of all input text and the model */
    struct sim_directives dir;
};

/* Why a request was refused: the HTTP status, the message, and for OpenAI
 * bodies the `param` (may be empty). */
struct sim_err {
    int status;
    char param[32];
    char msg[SIM_ERRMSG_MAX];
};

#endif
