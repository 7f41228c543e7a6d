/*
 * anthropic.c - the Anthropic Messages API as an upstream
 * (PROTOCOLS.md section 2): POST /v1/messages with x-api-key and
 * anthropic-version; anthropic-beta forwarded from the client.
 *
 * The request body is already in the Anthropic dialect when it gets here
 * (from an Anthropic client as is, or translated from OpenAI by
 * src/translate); the provider only sets the model.
 */
#include <stdio.h>
#include <stdlib.h>

#include "provider/provider.h"
#include "translate/translate.h"

#define ANTHROPIC_VERSION "2023-06-01"

static const char *chat_path(const struct gw_backend_conf *b)
{
    return "/v1/messages";
}

static struct curl_slist *add_header_n(struct curl_slist *h, const char *name, gw_str v)
{
    char line[1024];
    if (!v.p || v.len == 0 || v.len > sizeof(line) - 64)
        return h;
    for (size_t i = 0; i < v.len; i++)
        if (v.p[i] == '\r' || v.p[i] == '\n')
            return h;
    snprintf(line, sizeof(line), "%s: %.*s", name, (int)v.len, v.p);
    return curl_slist_append(h, line);
}

static struct curl_slist *add_headers(const struct gw_backend_conf *b, struct curl_slist *h,
                                      const struct gw_up_hints *hints)
{
    h = gw_provider_base_headers(h, "x-api-key: ", b->api_key);
    gw_str ver = hints && hints->anthropic_version.p ? hints->anthropic_version
                                                     : GW_STR(ANTHROPIC_VERSION);
    h = add_header_n(h, "anthropic-version", ver);
    if (hints)
        h = add_header_n(h, "anthropic-beta", hints->anthropic_beta);
    return h;
}

static int prepare_request(const struct gw_backend_conf *b, json_t *req, bool stream)
{
    if (json_object_set_new(req, "model", json_string(b->model)))
        return GW_ERR;
    if (stream)
        json_object_set_new(req, "stream", json_true());
    return GW_OK;
}

/* A response ("usage" at the top), message_start ("message.usage") or
 * message_delta ("usage"). */
static void read_usage(json_t *obj, struct gw_usage *u)
{
    json_t *usage = json_object_get(obj, "usage");
    if (!usage) {
        json_t *msg = json_object_get(obj, "message");
        usage = json_object_get(msg, "usage");
    }
    if (!usage && json_object_get(obj, "input_tokens"))
        usage = obj; /* the usage object itself */
    gw_xlate_anthropic_usage(usage, u);
}

static void map_error(const struct gw_backend_conf *b, int status, const char *body, size_t len,
                      struct gw_error *e)
{
    struct gw_xlate_err x;
    memset(&x, 0, sizeof(x));
    gw_xlate_anthropic_error_to_openai(status, body, len, &x);
    e->param = NULL;
    e->code = NULL;
    e->type = x.type ? x.type : "upstream_error";
    e->status = x.status;
    switch (status) {
    case 401:
    case 403:
        /* the gateway's own credentials: not the client's fault */
        e->status = 502;
        e->type = "upstream_error";
        e->code = "upstream_auth_failed";
        snprintf(e->message, sizeof(e->message),
                 "backend %s rejected the gateway's credentials: %s", b->name, x.message);
        break;
    case 404:
        e->status = 502;
        e->type = "upstream_error";
        e->code = "upstream_not_found";
        snprintf(e->message, sizeof(e->message), "backend %s: %s", b->name, x.message);
        break;
    case 429:
        e->code = "rate_limit_exceeded";
        snprintf(e->message, sizeof(e->message), "backend %s is rate limiting: %s", b->name,
                 x.message);
        break;
    case 529:
    case 503:
        e->status = 503;
        e->code = "upstream_overloaded";
        snprintf(e->message, sizeof(e->message), "backend %s is overloaded: %s", b->name,
                 x.message);
        break;
    default:
        if (status >= 500) {
            e->status = 502;
            e->type = "upstream_error";
            e->code = "upstream_error";
            snprintf(e->message, sizeof(e->message), "backend %s failed with status %d: %s",
                     b->name, status, x.message);
        } else {
            snprintf(e->message, sizeof(e->message), "%s", x.message);
        }
        break;
    }
    gw_utf8_trim(e->message);
}

const struct gw_provider gw_provider_anthropic = {
    .name = "anthropic",
    .dialect = GW_DIALECT_ANTHROPIC,
    .scrape_load = false,
    .chat_path = chat_path,
    .add_headers = add_headers,
    .prepare_request = prepare_request,
    .read_usage = read_usage,
    .map_error = map_error,
};
