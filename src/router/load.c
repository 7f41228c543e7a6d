/*
 * load.c - read vLLM's load from its Prometheus /metrics text: the queue
 * (vllm:num_requests_waiting), what is running, and the KV cache use
 * (vllm:kv_cache_usage_perc, or the older vllm:gpu_cache_usage_perc).
 *
 * Only these lines are looked at; everything else on the page is skipped
 * without being parsed. A line is `name{labels} value [timestamp]`.
 */
#include <math.h>
#include <stdlib.h>

#include "router/router.h"

/* Does the label set {…} (without braces) say model_name="model", or not
 * name a model at all? Pairs are parsed, so another label that ends in
 * model_name, or a value that contains it, can't fool it. */
static bool labels_match(const char *p, size_t n, const char *model)
{
    const char *end = p + n;
    bool named = false, same = false;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ','))
            p++;
        const char *k = p;
        while (p < end && *p != '=')
            p++;
        if (p >= end)
            break;
        size_t kl = (size_t)(p - k);
        p++; /* = */
        if (p >= end || *p != '"')
            return false; /* not the exposition format */
        const char *v = ++p;
        while (p < end && *p != '"') {
            if (*p == '\\' && p + 1 < end)
                p++;
            p++;
        }
        if (p >= end)
            return false;
        size_t vl = (size_t)(p - v);
        p++; /* closing quote */
        if (kl == 10 && memcmp(k, "model_name", 10) == 0) {
            named = true;
            same = vl == strlen(model) && memcmp(v, model, vl) == 0;
        }
    }
    return !named || same;
}

int gw_vllm_load_parse(const char *text, size_t len, const char *model, struct gw_vllm_load *out)
{
    static const struct {
        const char *name;
        int which; /* 0 waiting, 1 running, 2 kv */
    } names[] = {
        {"vllm:num_requests_waiting", 0},
        {"vllm:num_requests_running", 1},
        {"vllm:kv_cache_usage_perc", 2},
        {"vllm:gpu_cache_usage_perc", 3}, /* deprecated name, used when the new one is absent */
    };
    memset(out, 0, sizeof(*out));
    double old_kv = 0;
    bool have_old_kv = false;
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (p < le && *p == 'v') {
            for (size_t i = 0; i < GW_ARRAY_LEN(names); i++) {
                size_t nlen = strlen(names[i].name);
                if ((size_t)(le - p) <= nlen || memcmp(p, names[i].name, nlen) != 0)
                    continue;
                const char *q = p + nlen;
                if (*q == '{') {
                    const char *close = memchr(q, '}', (size_t)(le - q));
                    if (!close || !labels_match(q + 1, (size_t)(close - q - 1), model))
                        break;
                    q = close + 1;
                } else if (*q != ' ') {
                    break; /* a longer name that starts the same */
                }
                while (q < le && *q == ' ')
                    q++;
                char num[64];
                size_t nn = 0;
                while (q < le && *q != ' ' && nn < sizeof(num) - 1)
                    num[nn++] = *q++;
                num[nn] = '\0';
                if (q < le && *q != ' ')
                    break; /* a value too long to be a count: skip the line */
                char *e;
                double v = strtod(num, &e);
                if (nn == 0 || *e || isnan(v) || v < 0)
                    break;
                switch (names[i].which) {
                case 0: out->waiting += v; out->have_waiting = true; break;
                case 1: out->running += v; out->have_running = true; break;
                case 2:
                    out->kv_cache = out->have_kv ? fmax(out->kv_cache, v) : v;
                    out->have_kv = true;
                    break;
                default:
                    old_kv = have_old_kv ? fmax(old_kv, v) : v;
                    have_old_kv = true;
                    break;
                }
                break;
            }
        }
        p = le + 1;
    }
    if (!out->have_kv && have_old_kv) {
        out->kv_cache = old_kv;
        out->have_kv = true;
    }
    if (out->kv_cache > 1)
        out->kv_cache = 1;
    return out->have_waiting || out->have_running || out->have_kv ? GW_OK : GW_EPARSE;
}
