/*
 * sim_gen.c - response bodies and stream events (see sim_gen.h).
 */
#include "sim_gen.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "sim_rng.h"

static const char *const phase_names[] = {
    "start", "block_start", "ping", "tokens", "block_stop", "finish", "usage", "stop", "end",
};
static_assert(sizeof(phase_names) / sizeof(phase_names[0]) == SIM_PH_COUNT,
              "phase_names out of sync with enum sim_phase");

const char *sim_phase_str(enum sim_phase p)
{
    return (unsigned)p < SIM_PH_COUNT ? phase_names[p] : "?";
}

static void hex_id(char *out, size_t outlen, const char *prefix, uint64_t a, uint64_t b,
                   unsigned nhex)
{
    static const char hx[] = "0123456789abcdef";
    size_t pl = strlen(prefix), i;
    uint64_t s = sim_mix(a, b);
    if (pl + nhex + 1 > outlen)
        nhex = (unsigned)(outlen - pl - 1);
    memcpy(out, prefix, pl);
    for (i = 0; i < nhex; i++) {
        if (i % 16 == 0)
            s = sim_rng_next(&s);
        out[pl + i] = hx[(s >> ((i % 16) * 4)) & 15];
    }
    out[pl + i] = '\0';
}

/* End of the argument fragment starting at off: SIM_TOOL_FRAG bytes, moved
 * forward so that a UTF-8 sequence is never split. */
static uint32_t frag_end(const char *args, uint32_t len, uint32_t off)
{
    uint32_t e = off + SIM_TOOL_FRAG;
    if (e >= len)
        return len;
    while (e < len && ((unsigned char)args[e] & 0xc0) == 0x80)
        e++;
    return e;
}

void sim_gen_init(struct sim_gen *g, const struct sim_req *rq, uint32_t output_tokens,
                  uint64_t seed, uint64_t seq, uint64_t created)
{
    memset(g, 0, sizeof(*g));
    g->rq = rq;
    g->created = created;
    g->rng = sim_mix(seed, rq->content_hash);
    g->phase = SIM_PH_START;
    if (rq->dialect == SIM_DIALECT_OPENAI) {
        hex_id(g->id, sizeof(g->id), "chatcmpl-", seed, seq, 32);
        snprintf(g->tool_id, sizeof(g->tool_id), "call_%llu", (unsigned long long)seq);
    } else {
        hex_id(g->id, sizeof(g->id), "msg_sim", seed, seq, 24);
        snprintf(g->tool_id, sizeof(g->tool_id), "toolu_%llu", (unsigned long long)seq);
    }
    g->tool = rq->has_tools && rq->dir.tool_call;
    if (g->tool) {
        uint32_t len = (uint32_t)strlen(rq->tool_args), off = 0, n = 1;
        while (off < len) {
            off = frag_end(rq->tool_args, len, off);
            n++;
        }
        g->n_tokens = n;
        return;
    }
    uint64_t want = rq->dir.output_tokens >= 0 ? (uint64_t)rq->dir.output_tokens : output_tokens;
    if (rq->max_tokens >= 0 && want > (uint64_t)rq->max_tokens) {
        want = (uint64_t)rq->max_tokens;
        g->cut = true;
    }
    g->n_tokens = (uint32_t)want;
}

uint32_t sim_gen_completion_tokens(const struct sim_gen *g)
{
    return g->n_tokens;
}

const char *sim_gen_finish_reason(const struct sim_gen *g)
{
    if (g->rq->dialect == SIM_DIALECT_OPENAI)
        return g->tool ? "tool_calls" : g->cut ? "length" : "stop";
    return g->tool ? "tool_use" : g->cut ? "max_tokens" : "end_turn";
}

const char *sim_gen_metric_reason(const struct sim_gen *g)
{
    return g->cut ? "length" : "stop";
}

bool sim_gen_next_is_token(const struct sim_gen *g)
{
    return g->phase == SIM_PH_TOKENS && g->tok < g->n_tokens;
}

/* ------------------------------------------------------------ OpenAI */

static void oa_usage(const struct sim_gen *g, struct sim_out *o)
{
    const struct sim_req *rq = g->rq;
    sim_out_printf(o, "{\"prompt_tokens\":%u,\"completion_tokens\":%u,\"total_tokens\":%llu",
                   rq->prompt_tokens, g->n_tokens,
                   (unsigned long long)rq->prompt_tokens + g->n_tokens);
    if (rq->cache_hint)
        sim_out_printf(o, ",\"prompt_tokens_details\":{\"cached_tokens\":%u}", rq->system_tokens);
    sim_out_puts(o, "}");
}

/* `data: {"id":...,"choices":[` - everything before the choices. */
static void oa_chunk_head(const struct sim_gen *g, struct sim_out *o)
{
    sim_out_puts(o, "data: {\"id\":\"");
    sim_out_puts(o, g->id);
    sim_out_printf(o, "\",\"object\":\"chat.completion.chunk\",\"created\":%llu,\"model\":",
                   (unsigned long long)g->created);
    sim_out_json_str(o, g->rq->model, strlen(g->rq->model));
    sim_out_puts(o, ",\"choices\":[");
}

static void oa_chunk_tail(const struct sim_gen *g, struct sim_out *o, const char *finish)
{
    sim_out_puts(o, "},\"logprobs\":null,\"finish_reason\":");
    if (finish)
        sim_out_printf(o, "\"%s\"", finish);
    else
        sim_out_puts(o, "null");
    sim_out_puts(o, g->rq->include_usage ? "}],\"usage\":null}\n\n" : "}]}\n\n");
}

static void oa_word(struct sim_gen *g, struct sim_out *o)
{
    const char *w = sim_vocab_draw(&g->rng);
    if (g->tok)
        sim_out_put(o, " ", 1);
    sim_out_puts(o, w);
}

static enum sim_ev oa_next(struct sim_gen *g, struct sim_out *o)
{
    const struct sim_req *rq = g->rq;
    switch (g->phase) {
    case SIM_PH_START:
        oa_chunk_head(g, o);
        sim_out_puts(o, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"");
        oa_chunk_tail(g, o, NULL);
        g->phase = SIM_PH_TOKENS;
        return SIM_EV_META;
    case SIM_PH_TOKENS:
        if (g->tok >= g->n_tokens) {
            g->phase = SIM_PH_FINISH;
            return oa_next(g, o);
        }
        oa_chunk_head(g, o);
        if (g->tool && g->tok == 0) {
            sim_out_printf(o, "{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"%s\","
                           "\"type\":\"function\",\"function\":{\"name\":", g->tool_id);
            sim_out_json_str(o, rq->tool_name, strlen(rq->tool_name));
            sim_out_puts(o, ",\"arguments\":\"\"}}]");
        } else if (g->tool) {
            uint32_t len = (uint32_t)strlen(rq->tool_args);
            uint32_t e = frag_end(rq->tool_args, len, g->args_off);
            sim_out_puts(o, "{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
                         "\"function\":{\"arguments\":");
            sim_out_json_str(o, rq->tool_args + g->args_off, e - g->args_off);
            sim_out_puts(o, "}}]");
            g->args_off = e;
        } else {
            sim_out_puts(o, "{\"index\":0,\"delta\":{\"content\":\"");
            oa_word(g, o);
            sim_out_puts(o, "\"");
        }
        oa_chunk_tail(g, o, NULL);
        g->tok++;
        return SIM_EV_TOKEN;
    case SIM_PH_FINISH:
        oa_chunk_head(g, o);
        sim_out_puts(o, "{\"index\":0,\"delta\":{");
        oa_chunk_tail(g, o, sim_gen_finish_reason(g));
        g->phase = rq->include_usage ? SIM_PH_USAGE : SIM_PH_STOP;
        return SIM_EV_META;
    case SIM_PH_USAGE:
        sim_out_puts(o, "data: {\"id\":\"");
        sim_out_puts(o, g->id);
        sim_out_printf(o, "\",\"object\":\"chat.completion.chunk\",\"created\":%llu,\"model\":",
                       (unsigned long long)g->created);
        sim_out_json_str(o, rq->model, strlen(rq->model));
        sim_out_puts(o, ",\"choices\":[],\"usage\":");
        oa_usage(g, o);
        sim_out_puts(o, "}\n\n");
        g->phase = SIM_PH_STOP;
        return SIM_EV_META;
    case SIM_PH_STOP:
        sim_out_puts(o, "data: [DONE]\n\n");
        g->phase = SIM_PH_END;
        return SIM_EV_META;
    default:
        g->phase = SIM_PH_END;
        return SIM_EV_END;
    }
}

static void oa_body(struct sim_gen *g, struct sim_out *o)
{
    const struct sim_req *rq = g->rq;
    sim_out_puts(o, "{\"id\":\"");
    sim_out_puts(o, g->id);
    sim_out_printf(o, "\",\"object\":\"chat.completion\",\"created\":%llu,\"model\":",
                   (unsigned long long)g->created);
    sim_out_json_str(o, rq->model, strlen(rq->model));
    sim_out_puts(o, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    if (g->tool) {
        sim_out_printf(o, "null,\"tool_calls\":[{\"id\":\"%s\",\"type\":\"function\","
                       "\"function\":{\"name\":", g->tool_id);
        sim_out_json_str(o, rq->tool_name, strlen(rq->tool_name));
        sim_out_puts(o, ",\"arguments\":");
        sim_out_json_str(o, rq->tool_args, strlen(rq->tool_args));
        sim_out_puts(o, "}}]");
    } else {
        sim_out_puts(o, "\"");
        for (g->tok = 0; g->tok < g->n_tokens; g->tok++)
            oa_word(g, o);
        sim_out_puts(o, "\"");
    }
    sim_out_printf(o, "},\"logprobs\":null,\"finish_reason\":\"%s\"}],\"usage\":",
                   sim_gen_finish_reason(g));
    oa_usage(g, o);
    sim_out_puts(o, "}");
    g->tok = g->n_tokens;
    g->phase = SIM_PH_END;
}

/* ---------------------------------------------------------- Anthropic */

static void an_event(struct sim_out *o, const char *name)
{
    sim_out_printf(o, "event: %s\ndata: {\"type\":\"%s\"", name, name);
}

static void an_usage_in(const struct sim_req *rq, struct sim_out *o)
{
    uint32_t cached = rq->cache_hint ? rq->system_tokens : 0;
    sim_out_printf(o, "\"input_tokens\":%u,\"cache_creation_input_tokens\":0,"
                   "\"cache_read_input_tokens\":%u", rq->prompt_tokens - cached, cached);
}

static enum sim_ev an_next(struct sim_gen *g, struct sim_out *o)
{
    const struct sim_req *rq = g->rq;
    switch (g->phase) {
    case SIM_PH_START:
        an_event(o, "message_start");
        sim_out_printf(o, ",\"message\":{\"id\":\"%s\",\"type\":\"message\",\"role\":\"assistant\","
                       "\"model\":", g->id);
        sim_out_json_str(o, rq->model, strlen(rq->model));
        sim_out_puts(o, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{");
        an_usage_in(rq, o);
        sim_out_puts(o, ",\"output_tokens\":1}}}\n\n");
        g->phase = SIM_PH_BLOCK_START;
        return SIM_EV_META;
    case SIM_PH_BLOCK_START:
        an_event(o, "content_block_start");
        if (g->tool) {
            sim_out_printf(o, ",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"%s\","
                           "\"name\":", g->tool_id);
            sim_out_json_str(o, rq->tool_name, strlen(rq->tool_name));
            sim_out_puts(o, ",\"input\":{}}}\n\n");
        } else {
            sim_out_puts(o, ",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        }
        g->phase = SIM_PH_PING;
        return SIM_EV_META;
    case SIM_PH_PING:
        sim_out_puts(o, "event: ping\ndata: {\"type\": \"ping\"}\n\n");
        g->phase = SIM_PH_TOKENS;
        return SIM_EV_META;
    case SIM_PH_TOKENS:
        if (g->tok >= g->n_tokens) {
            g->phase = SIM_PH_BLOCK_STOP;
            return an_next(g, o);
        }
        an_event(o, "content_block_delta");
        if (g->tool) {
            uint32_t len = (uint32_t)strlen(rq->tool_args);
            uint32_t e = g->tok == 0 ? 0 : frag_end(rq->tool_args, len, g->args_off);
            sim_out_puts(o, ",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":");
            sim_out_json_str(o, rq->tool_args + g->args_off, e - g->args_off);
            g->args_off = e;
        } else {
            sim_out_puts(o, ",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"");
            oa_word(g, o);
            sim_out_puts(o, "\"");
        }
        sim_out_puts(o, "}}\n\n");
        g->tok++;
        return SIM_EV_TOKEN;
    case SIM_PH_BLOCK_STOP:
        an_event(o, "content_block_stop");
        sim_out_puts(o, ",\"index\":0}\n\n");
        g->phase = SIM_PH_FINISH;
        return SIM_EV_META;
    case SIM_PH_FINISH:
        an_event(o, "message_delta");
        sim_out_printf(o, ",\"delta\":{\"stop_reason\":\"%s\",\"stop_sequence\":null},"
                       "\"usage\":{\"output_tokens\":%u}}\n\n", sim_gen_finish_reason(g),
                       g->n_tokens);
        g->phase = SIM_PH_STOP;
        return SIM_EV_META;
    case SIM_PH_STOP:
        an_event(o, "message_stop");
        sim_out_puts(o, "}\n\n");
        g->phase = SIM_PH_END;
        return SIM_EV_META;
    default:
        g->phase = SIM_PH_END;
        return SIM_EV_END;
    }
}

static void an_body(struct sim_gen *g, struct sim_out *o)
{
    const struct sim_req *rq = g->rq;
    sim_out_printf(o, "{\"id\":\"%s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":", g->id);
    sim_out_json_str(o, rq->model, strlen(rq->model));
    sim_out_puts(o, ",\"content\":[");
    if (g->tool) {
        sim_out_printf(o, "{\"type\":\"tool_use\",\"id\":\"%s\",\"name\":", g->tool_id);
        sim_out_json_str(o, rq->tool_name, strlen(rq->tool_name));
        sim_out_printf(o, ",\"input\":%s}", rq->tool_args);
    } else {
        sim_out_puts(o, "{\"type\":\"text\",\"text\":\"");
        for (g->tok = 0; g->tok < g->n_tokens; g->tok++)
            oa_word(g, o);
        sim_out_puts(o, "\"}");
    }
    sim_out_printf(o, "],\"stop_reason\":\"%s\",\"stop_sequence\":null,\"usage\":{",
                   sim_gen_finish_reason(g));
    an_usage_in(rq, o);
    sim_out_printf(o, ",\"output_tokens\":%u}}", g->n_tokens);
    g->tok = g->n_tokens;
    g->phase = SIM_PH_END;
}

enum sim_ev sim_gen_next(struct sim_gen *g, struct sim_out *o)
{
    if (g->phase == SIM_PH_END)
        return SIM_EV_END;
    return g->rq->dialect == SIM_DIALECT_OPENAI ? oa_next(g, o) : an_next(g, o);
}

void sim_gen_body(struct sim_gen *g, struct sim_out *o)
{
    if (g->rq->dialect == SIM_DIALECT_OPENAI)
        oa_body(g, o);
    else
        an_body(g, o);
}

void sim_gen_malformed_event(const struct sim_gen *g, struct sim_out *o)
{
    if (g->rq->dialect == SIM_DIALECT_OPENAI) {
        sim_out_puts(o, "data: {\"id\":\"");
        sim_out_puts(o, g->id);
        sim_out_puts(o, "\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
                     "\"delta\":{\"content\":\n\n");
    } else {
        an_event(o, "content_block_delta");
        sim_out_puts(o, ",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\n\n");
    }
}

/* ------------------------------------------------------------- errors */

const char *sim_status_message(int status)
{
    switch (status) {
    case 400: return "Simulated bad request";
    case 401: return "Simulated authentication failure";
    case 403: return "Simulated permission denied";
    case 404: return "Simulated not found";
    case 408: return "Simulated request timeout";
    case 413: return "Simulated request too large";
    case 429: return "Simulated rate limit: too many requests";
    case 500: return "Simulated internal server error";
    case 502: return "Simulated bad gateway";
    case 503: return "Simulated service unavailable";
    case 504: return "Simulated gateway timeout";
    case 529: return "Overloaded";
    default: return "Simulated error";
    }
}

const char *sim_anthropic_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 500: return "api_error";
    case 504: return "timeout_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* vLLM's exception-style type names. */
static const char *vllm_error_type(int status)
{
    switch (status) {
    case 400: return "BadRequestError";
    case 401: return "AuthenticationError";
    case 403: return "PermissionDeniedError";
    case 404: return "NotFoundError";
    case 408: return "RequestTimeoutError";
    case 409: return "ConflictError";
    case 413: return "RequestEntityTooLargeError";
    case 422: return "UnprocessableEntityError";
    case 429: return "RateLimitError";
    case 501: return "NotImplementedError";
    case 503: return "ServiceUnavailableError";
    case 504: return "GatewayTimeoutError";
    default: return status >= 500 ? "InternalServerError" : "BadRequestError";
    }
}

/* OpenAI's own (type, code) pairs; code NULL means JSON null. */
static void openai_error_type(int status, const char **type, const char **code)
{
    *code = NULL;
    switch (status) {
    case 401: *type = "invalid_request_error"; *code = "invalid_api_key"; break;
    case 403: *type = "invalid_request_error"; *code = "unsupported_country_region_territory"; break;
    case 404: *type = "invalid_request_error"; *code = "model_not_found"; break;
    case 429: *type = "requests"; *code = "rate_limit_exceeded"; break;
    case 503: *type = "server_error"; *code = "slow_down"; break;
    default: *type = status >= 500 ? "server_error" : "invalid_request_error"; break;
    }
}

static void param_json(struct sim_out *o, const char *param)
{
    if (param && *param)
        sim_out_json_str(o, param, strlen(param));
    else
        sim_out_puts(o, "null");
}

/* The inner object of an OpenAI-dialect error (nested or openai shape). */
static void oa_error_obj(struct sim_out *o, enum sim_error_shape shape, int status,
                         const char *msg, const char *param)
{
    sim_out_puts(o, "{\"message\":");
    sim_out_json_str(o, msg, strlen(msg));
    if (shape == SIM_ERROR_OPENAI) {
        const char *type, *code;
        openai_error_type(status, &type, &code);
        sim_out_printf(o, ",\"type\":\"%s\",\"param\":", type);
        param_json(o, param);
        sim_out_puts(o, ",\"code\":");
        param_json(o, code);
    } else {
        sim_out_printf(o, ",\"type\":\"%s\",\"param\":", vllm_error_type(status));
        param_json(o, param);
        sim_out_printf(o, ",\"code\":%d", status);
    }
    sim_out_puts(o, "}");
}

void sim_gen_error_body(struct sim_out *o, enum sim_dialect d, enum sim_error_shape shape,
                        int status, const char *msg, const char *param,
                        const char *request_id)
{
    if (!msg)
        msg = sim_status_message(status);
    if (d == SIM_DIALECT_ANTHROPIC) {
        sim_out_printf(o, "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":",
                       sim_anthropic_error_type(status));
        sim_out_json_str(o, msg, strlen(msg));
        sim_out_puts(o, "}");
        if (request_id) {
            sim_out_puts(o, ",\"request_id\":");
            sim_out_json_str(o, request_id, strlen(request_id));
        }
        sim_out_puts(o, "}");
        return;
    }
    if (shape == SIM_ERROR_FLAT) {
        sim_out_puts(o, "{\"object\":\"error\",\"message\":");
        sim_out_json_str(o, msg, strlen(msg));
        sim_out_printf(o, ",\"type\":\"%s\",\"param\":", vllm_error_type(status));
        param_json(o, param);
        sim_out_printf(o, ",\"code\":%d}", status);
        return;
    }
    sim_out_puts(o, "{\"error\":");
    oa_error_obj(o, shape, status, msg, param);
    sim_out_puts(o, "}");
}

void sim_gen_error_event(const struct sim_gen *g, int status, enum sim_error_shape shape,
                         struct sim_out *o)
{
    if (g->rq->dialect == SIM_DIALECT_ANTHROPIC) {
        if (!status)
            status = 529;
        sim_out_printf(o, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"%s\","
                       "\"message\":", sim_anthropic_error_type(status));
        const char *m = sim_status_message(status);
        sim_out_json_str(o, m, strlen(m));
        sim_out_puts(o, "}}\n\n");
        return;
    }
    if (!status)
        status = 500;
    /* a stream error always needs the truthy top-level "error" key */
    sim_out_puts(o, "data: {\"error\":");
    oa_error_obj(o, shape == SIM_ERROR_OPENAI ? shape : SIM_ERROR_NESTED, status,
                 sim_status_message(status), NULL);
    sim_out_puts(o, "}\n\ndata: [DONE]\n\n");
}

/* ------------------------------------------------------------- models */

void sim_gen_model_card(struct sim_out *o, const char *model, uint32_t max_model_len,
                        uint64_t created)
{
    unsigned long long c = (unsigned long long)created;
    sim_out_puts(o, "{\"id\":");
    sim_out_json_str(o, model, strlen(model));
    sim_out_printf(o, ",\"object\":\"model\",\"created\":%llu,\"owned_by\":\"vllm\",\"root\":", c);
    sim_out_json_str(o, model, strlen(model));
    sim_out_printf(o, ",\"parent\":null,\"max_model_len\":%u,\"permission\":[{\"id\":"
                   "\"modelperm-sim\",\"object\":\"model_permission\",\"created\":%llu,"
                   "\"allow_create_engine\":false,\"allow_sampling\":true,\"allow_logprobs\":true,"
                   "\"allow_search_indices\":false,\"allow_view\":true,\"allow_fine_tuning\":false,"
                   "\"organization\":\"*\",\"group\":null,\"is_blocking\":false}]}",
                   max_model_len, c);
}

void sim_gen_models(struct sim_out *o, const char *const *models, unsigned n,
                    uint32_t max_model_len, uint64_t created, bool anthropic)
{
    if (anthropic) {
        sim_out_puts(o, "{\"data\":[");
        for (unsigned i = 0; i < n; i++) {
            if (i)
                sim_out_puts(o, ",");
            sim_out_puts(o, "{\"type\":\"model\",\"id\":");
            sim_out_json_str(o, models[i], strlen(models[i]));
            sim_out_puts(o, ",\"display_name\":");
            sim_out_json_str(o, models[i], strlen(models[i]));
            sim_out_puts(o, ",\"created_at\":\"2025-01-01T00:00:00Z\"}");
        }
        sim_out_puts(o, "],\"has_more\":false,\"first_id\":");
        sim_out_json_str(o, models[0], strlen(models[0]));
        sim_out_puts(o, ",\"last_id\":");
        sim_out_json_str(o, models[n - 1], strlen(models[n - 1]));
        sim_out_puts(o, "}");
        return;
    }
    sim_out_puts(o, "{\"object\":\"list\",\"data\":[");
    for (unsigned i = 0; i < n; i++) {
        if (i)
            sim_out_puts(o, ",");
        sim_gen_model_card(o, models[i], max_model_len, created);
    }
    sim_out_puts(o, "]}");
}
