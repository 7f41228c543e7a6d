/*
 * openai_compat.c - providers that speak OpenAI Chat Completions upstream:
 * "vllm" (vLLM, llama.cpp server, Ollama: self-hosted, no auth or a bearer
 * token, vLLM-style /metrics) and "openai" (the vendor API, bearer auth).
 *
 * Same-dialect traffic is passed through with the least rewriting: the
 * model name, and stream_options.include_usage forced on for streams so
 * usage is always captured (the chat handler strips the usage-only chunk
 * again when the client did not ask for it).
 */
#include <stdio.h>
#include <stdlib.h>

#include "provider/provider.h"

void gw_usage_init(struct gw_usage *u)
{
    memset(u, 0, sizeof(*u));
    u->prompt_tokens = -1;
    u->completion_tokens = -1;
}

static const char *chat_path(const struct gw_backend_conf *b)
{
    return "/v1/chat/completions";
}

struct curl_slist *gw_provider_base_headers(struct curl_slist *h, const char *auth,
                                            const char *key)
{
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Accept: application/json, text/event-stream");
    /* curl would otherwise wait for 100-continue on bodies over 1 MiB */
    h = curl_slist_append(h, "Expect:");
    if (key && key[0]) {
        size_t n = strlen(auth) + strlen(key) + 1;
        char *v = gw_malloc(n);
        snprintf(v, n, "%s%s", auth, key);
        h = curl_slist_append(h, v);
        /* wipe our copy; curl keeps its own in the list */
        memset(v, 0, n);
        free(v);
    }
    return h;
}

static struct curl_slist *add_headers(const struct gw_backend_conf *b, struct curl_slist *h,
                                      const struct gw_up_hints *hints)
{
    (void)hints;
    return gw_provider_base_headers(h, "Authorization: Bearer ", b->api_key);
}

static int prepare_request(const struct gw_backend_conf *b, json_t *req, bool stream)
{
    if (json_object_set_new(req, "model", json_string(b->model)))
        return GW_ERR;
    if (stream) {
        json_t *so = json_object_get(req, "stream_options");
        if (!json_is_object(so)) {
            so = json_object();
            json_object_set_new(req, "stream_options", so);
        }
        json_object_set_new(so, "include_usage", json_true());
    }
    return GW_OK;
}

static int64_t get_int(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

static void read_usage(json_t *obj, struct gw_usage *u)
{
    json_t *usage = json_object_get(obj, "usage");
    if (!json_is_object(usage))
        usage = obj; /* called with the usage object itself */
    int64_t p = get_int(usage, "prompt_tokens");
    int64_t c = get_int(usage, "completion_tokens");
    if (p < 0 && c < 0)
        return;
    u->reported = true;
    u->prompt_tokens = p;
    u->completion_tokens = c;
    json_t *pd = json_object_get(usage, "prompt_tokens_details");
    if (json_is_object(pd)) {
        int64_t ct = get_int(pd, "cached_tokens");
        u->cached_tokens = ct > 0 ? ct : 0;
    }
    json_t *cd = json_object_get(usage, "completion_tokens_details");
    if (json_is_object(cd)) {
        int64_t rt = get_int(cd, "reasoning_tokens");
        u->reasoning_tokens = rt > 0 ? rt : 0;
    }
}

static void set_msg(struct gw_error *e, const char *fmt, const char *a, const char *b)
{
    snprintf(e->message, sizeof(e->message), fmt, a, b);
    gw_utf8_trim(e->message);
}

/* Find the message in the shapes upstreams use: nested OpenAI/vLLM >= 0.10.1
 * {"error":{"message":..}}, flat vLLM < 0.10.1 {"object":"error","message":..},
 * vLLM's auth failure {"error":"Unauthorized"}, or {"detail":..} (FastAPI). */
static const char *upstream_message(json_t *root)
{
    if (!json_is_object(root))
        return NULL;
    json_t *err = json_object_get(root, "error");
    if (json_is_object(err)) {
        json_t *m = json_object_get(err, "message");
        if (json_is_string(m))
            return json_string_value(m);
    }
    if (json_is_string(err))
        return json_string_value(err);
    json_t *m = json_object_get(root, "message");
    if (json_is_string(m))
        return json_string_value(m);
    json_t *d = json_object_get(root, "detail");
    if (json_is_string(d))
        return json_string_value(d);
    return NULL;
}

static void map_error(const struct gw_backend_conf *b, int status, const char *body, size_t len,
                      struct gw_error *e)
{
    json_t *root = len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *m = upstream_message(root);
    char snippet[160];
    if (!m) {
        /* not JSON: quote the start of it, printable bytes only */
        size_t n = 0;
        for (size_t i = 0; i < len && n < sizeof(snippet) - 1; i++)
            snippet[n++] = (body[i] >= 0x20 && body[i] < 0x7f) ? body[i] : ' ';
        snippet[n] = '\0';
        m = n ? snippet : "no error body";
    }
    e->param = NULL;
    e->code = NULL;
    switch (status) {
    case 400:
    case 422:
        e->status = status;
        e->type = "invalid_request_error";
        if (strncmp(m, "This model's maximum context length", 35) == 0)
            e->code = "context_length_exceeded";
        set_msg(e, "%s%s", m, "");
        break;
    case 401:
    case 403:
        /* the gateway's credentials for the upstream are wrong: not the
         * client's fault, and its own key must not look rejected */
        e->status = 502;
        e->type = "upstream_error";
        e->code = "upstream_auth_failed";
        set_msg(e, "backend %s rejected the gateway's credentials: %s", b->name, m);
        break;
    case 404:
        e->status = 502;
        e->type = "upstream_error";
        e->code = "upstream_not_found";
        set_msg(e, "backend %s: %s", b->name, m);
        break;
    case 408:
        e->status = 504;
        e->type = "upstream_error";
        e->code = "upstream_timeout";
        set_msg(e, "backend %s timed out: %s", b->name, m);
        break;
    case 413:
        e->status = 413;
        e->type = "invalid_request_error";
        set_msg(e, "%s%s", m, "");
        break;
    case 429:
        e->status = 429;
        e->type = "rate_limit_error";
        e->code = "rate_limit_exceeded";
        set_msg(e, "backend %s is rate limiting: %s", b->name, m);
        break;
    case 503:
    case 529:
        e->status = 503;
        e->type = "upstream_error";
        e->code = "upstream_overloaded";
        set_msg(e, "backend %s is overloaded: %s", b->name, m);
        break;
    default:
        e->status = 502;
        e->type = "upstream_error";
        e->code = "upstream_error";
        snprintf(e->message, sizeof(e->message), "backend %s failed with status %d: %s",
                 b->name, status, m);
        gw_utf8_trim(e->message);
        break;
    }
    json_decref(root);
}

static const struct gw_provider vllm_provider = {
    .name = "vllm",
    .dialect = GW_DIALECT_OPENAI,
    .scrape_load = true,
    .chat_path = chat_path,
    .add_headers = add_headers,
    .prepare_request = prepare_request,
    .read_usage = read_usage,
    .map_error = map_error,
};

static const struct gw_provider openai_provider = {
    .name = "openai",
    .dialect = GW_DIALECT_OPENAI,
    .scrape_load = false,
    .chat_path = chat_path,
    .add_headers = add_headers,
    .prepare_request = prepare_request,
    .read_usage = read_usage,
    .map_error = map_error,
};

extern const struct gw_provider gw_provider_anthropic;

static const struct gw_provider *const providers[] = {&vllm_provider, &openai_provider,
                                                      &gw_provider_anthropic};

const struct gw_provider *gw_provider_find(const char *name)
{
    for (size_t i = 0; i < GW_ARRAY_LEN(providers); i++)
        if (strcmp(providers[i]->name, name) == 0)
            return providers[i];
    return NULL;
}

const char *gw_provider_names(void)
{
    return "vllm, openai, anthropic";
}
