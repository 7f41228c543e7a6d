/*
 * provider.h - an upstream API as a table of functions (nginx's upstream
 * modules are the model: a protocol plugged into a generic client).
 *
 * The gateway core knows nothing of any vendor. For each request it asks
 * the chosen backend's provider to build the upstream request (path, headers,
 * body), to read usage from a response or a stream event, and to turn an
 * upstream error into a status and message for the client.
 *
 * Implemented: "vllm" (any OpenAI-compatible local server: vLLM, llama.cpp
 * server, Ollama) and "openai" (the vendor API: bearer auth) in
 * openai_compat.c; "anthropic" (the Messages API) in anthropic.c.
 */
#ifndef HYBRIDGW_PROVIDER_H
#define HYBRIDGW_PROVIDER_H

#include <curl/curl.h>
#include <jansson.h>
#include "hybridgw/buf.h"
#include "hybridgw/config.h"

enum gw_dialect {
    GW_DIALECT_OPENAI = 0,     /* Chat Completions */
    GW_DIALECT_ANTHROPIC = 1,  /* Messages */
    GW_DIALECT_COUNT
};

/* Token usage of one request, as reported by the upstream. */
struct gw_usage {
    int64_t prompt_tokens;       /* all input, cached included; -1 unknown */
    int64_t completion_tokens;   /* all output, reasoning included; -1 unknown */
    int64_t cached_tokens;       /* cache reads (subset of prompt) */
    int64_t cache_write_tokens;  /* cache creation (subset of prompt) */
    int64_t reasoning_tokens;    /* subset of completion */
    bool reported;               /* the upstream sent usage */
};

void gw_usage_init(struct gw_usage *u);

/* Client request headers a provider may forward upstream. */
struct gw_up_hints {
    gw_str anthropic_beta;     /* forwarded verbatim to Anthropic */
    gw_str anthropic_version;  /* the client's, else the provider's default */
};

/* An error for the client, in neutral form; the API layer renders it in the
 * client's dialect. */
struct gw_error {
    int status;                  /* HTTP status for the client */
    const char *type;            /* OpenAI error type, e.g. "invalid_request_error" */
    const char *code;            /* OpenAI code or NULL */
    const char *param;           /* or NULL */
    char message[512];
    char retry_after[32];        /* copied from upstream, "" if none */
};

struct gw_provider {
    const char *name;
    enum gw_dialect dialect;     /* what it speaks upstream */
    bool scrape_load;            /* has a vLLM-style /metrics to watch */
    /* Path of the chat endpoint appended to the backend URL. */
    const char *(*chat_path)(const struct gw_backend_conf *b);
    /* Add auth and protocol headers (never log them). hints may be NULL. */
    struct curl_slist *(*add_headers)(const struct gw_backend_conf *b, struct curl_slist *h,
                                      const struct gw_up_hints *hints);
    /* Rewrite the client's request (already validated, same dialect) for
     * this backend: model name, usage in streams. Returns 0 or GW_ERR. */
    int (*prepare_request)(const struct gw_backend_conf *b, json_t *req, bool stream);
    /* Read usage from a non-streaming response body or one stream event's
     * JSON (only called for events that carry usage). Fields present
     * overwrite, absent ones are kept (Anthropic splits usage over
     * message_start and message_delta). */
    void (*read_usage)(json_t *obj, struct gw_usage *u);
    /* Map an upstream error response to a client error. body may be empty
     * and need not be JSON. */
    void (*map_error)(const struct gw_backend_conf *b, int status, const char *body,
                      size_t len, struct gw_error *out);
};

const struct gw_provider *gw_provider_find(const char *name);
/* The headers every JSON upstream call carries, plus "<auth><key>" when key
 * is set; our formatted copy of the secret is wiped before it is freed. */
struct curl_slist *gw_provider_base_headers(struct curl_slist *h, const char *auth,
                                            const char *key);
/* "vllm, openai, anthropic" for messages. */
const char *gw_provider_names(void);

#endif
