/*
 * sim_opts.c - flags, fault specs, directives and /sim/config (see
 * sim_opts.h). Pure: no I/O besides what the caller does with the results.
 */
#include "sim_opts.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Parse a decimal unsigned integer that is exactly s[0..n) into [0, max]. */
static int parse_u64n(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

/* Parse a finite decimal number that is exactly s[0..n) into [lo, hi]. */
static int parse_dbln(const char *s, size_t n, double lo, double hi, double *out)
{
    char tmp[64];
    char *end;
    if (n == 0 || n >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    for (size_t i = 0; i < n; i++) {   /* no hex, inf, nan, spaces */
        char c = tmp[i];
        if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' ||
              c == '+' || c == '-'))
            return -1;
    }
    errno = 0;
    double v = strtod(tmp, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------ faults */

static const char *const kind_names[SIM_FAULT_KIND_COUNT] = {
    "none", "status", "stall", "disconnect", "malformed", "error",
};

bool sim_fault_active(const struct sim_fault *f)
{
    return f->kind != SIM_FAULT_NONE || f->slow_tps > 0;
}

/* Does item (it, n) start with the word w followed by end, '@' or '='? */
static bool word_is(const char *it, size_t n, const char *w, size_t *wl)
{
    size_t l = strlen(w);
    if (n < l || memcmp(it, w, l) != 0)
        return false;
    if (n > l && it[l] != '@' && it[l] != '=')
        return false;
    *wl = l;
    return true;
}

int sim_fault_parse(const char *spec, size_t len, struct sim_fault *f,
                    char *err, size_t errlen)
{
    struct sim_fault r = {SIM_FAULT_NONE, 0, -1, 0, 0};
    bool saw_status = false;
    size_t i = 0;

    while (i < len && (spec[i] == ' ' || spec[i] == '\t'))
        i++;
    while (len > i && (spec[len - 1] == ' ' || spec[len - 1] == '\t'))
        len--;
    if (i == len) {
        *f = r;
        return 0;
    }
    while (i <= len) {
        size_t j = i;
        while (j < len && spec[j] != ',')
            j++;
        const char *it = spec + i;
        size_t n = j - i, wl;
        uint64_t v;
        enum sim_fault_kind k = SIM_FAULT_NONE;
        uint32_t dflt_at = 0;

        if (n == 0) {
            seterr(err, errlen, "fault spec '%.*s': empty item", (int)len, spec);
            return -1;
        }
        if (n == 4 && memcmp(it, "none", 4) == 0) {
            /* explicit no-op */
        } else if (n == 3 && parse_u64n(it, 3, 599, &v) == 0) {
            if (v < 400)
                goto bad_status;
            r.status = (int)v;
            saw_status = true;
        } else if (n > 7 && memcmp(it, "status=", 7) == 0) {
            if (parse_u64n(it + 7, n - 7, 599, &v) != 0 || v < 400)
                goto bad_status;
            r.status = (int)v;
            saw_status = true;
        } else if ((n > 12 && memcmp(it, "retry_after=", 12) == 0) ||
                   (n > 12 && memcmp(it, "retry-after=", 12) == 0)) {
            if (parse_u64n(it + 12, n - 12, 86400, &v) != 0) {
                seterr(err, errlen, "fault spec: retry_after must be 0..86400 seconds, got '%.*s'",
                       (int)(n - 12), it + 12);
                return -1;
            }
            r.retry_after = (int)v;
        } else if (word_is(it, n, "slow", &wl)) {
            r.slow_tps = 2;
            if (n > wl) {
                if (it[wl] != '=' ||
                    parse_dbln(it + wl + 1, n - wl - 1, 0.001, SIM_TPS_MAX, &r.slow_tps) != 0) {
                    seterr(err, errlen, "fault spec: slow=TPS needs a rate in 0.001..1000000, got '%.*s'",
                           (int)n, it);
                    return -1;
                }
            }
        } else if (word_is(it, n, "stall", &wl)) {
            k = SIM_FAULT_STALL;
        } else if (word_is(it, n, "disconnect", &wl)) {
            k = SIM_FAULT_DISCONNECT;
        } else if (word_is(it, n, "malformed", &wl)) {
            k = SIM_FAULT_MALFORMED;
            dflt_at = 1;
        } else if (word_is(it, n, "error", &wl)) {
            k = SIM_FAULT_ERROR;
            dflt_at = 1;
        } else {
            seterr(err, errlen, "fault spec: unknown item '%.*s' (expected status=NNN, "
                   "retry_after=S, stall[@N], disconnect[@N], malformed[@N], error[@N], "
                   "slow[=TPS] or none)", (int)n, it);
            return -1;
        }
        if (k != SIM_FAULT_NONE) {
            if (r.kind != SIM_FAULT_NONE) {
                seterr(err, errlen, "fault spec '%.*s': only one of stall, disconnect, "
                       "malformed, error per fault", (int)len, spec);
                return -1;
            }
            r.kind = k;
            r.at = dflt_at;
            if (n > wl) {
                if (it[wl] != '@' ||
                    parse_u64n(it + wl + 1, n - wl - 1, SIM_STALL_AT_MAX, &v) != 0) {
                    seterr(err, errlen, "fault spec: '%.*s' needs @N with N in 0..%u",
                           (int)n, it, SIM_STALL_AT_MAX);
                    return -1;
                }
                r.at = (uint32_t)v;
            }
        }
        i = j + 1;
    }
    if (saw_status) {
        if (r.kind == SIM_FAULT_NONE) {
            r.kind = SIM_FAULT_STATUS;
        } else if (r.kind != SIM_FAULT_ERROR) {
            seterr(err, errlen, "fault spec '%.*s': status=NNN combines only with error[@N]",
                   (int)len, spec);
            return -1;
        }
    }
    if (r.retry_after >= 0 && r.kind != SIM_FAULT_STATUS) {
        seterr(err, errlen, "fault spec '%.*s': retry_after needs status=NNN", (int)len, spec);
        return -1;
    }
    *f = r;
    return 0;

bad_status:
    seterr(err, errlen, "fault spec '%.*s': status must be 400..599", (int)len, spec);
    return -1;
}

void sim_fault_format(const struct sim_fault *f, char *buf, size_t n)
{
    int w = 0;
    if (n == 0)
        return;
    buf[0] = '\0';
    switch (f->kind) {
    case SIM_FAULT_NONE:
        break;
    case SIM_FAULT_STATUS:
        w = snprintf(buf, n, "status=%d", f->status);
        if (f->retry_after >= 0 && w >= 0 && (size_t)w < n)
            w += snprintf(buf + w, n - (size_t)w, ",retry_after=%d", f->retry_after);
        break;
    case SIM_FAULT_ERROR:
        w = snprintf(buf, n, "error@%u", f->at);
        if (f->status && w >= 0 && (size_t)w < n)
            w += snprintf(buf + w, n - (size_t)w, ",status=%d", f->status);
        break;
    default:
        w = snprintf(buf, n, "%s@%u", kind_names[f->kind], f->at);
        break;
    }
    if (w < 0 || (size_t)w >= n)
        return;
    if (f->slow_tps > 0)
        snprintf(buf + w, n - (size_t)w, "%sslow=%g", w ? "," : "", f->slow_tps);
    else if (w == 0)
        snprintf(buf, n, "none");
}

/* ---------------------------------------------------------------- options */

void sim_opts_default(struct sim_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->listen = "127.0.0.1:8000";
    o->threads = 1;
    o->max_model_len = 32768;
    o->error_shape = SIM_ERROR_NESTED;
    o->knobs.ttft_ms = 0;
    o->knobs.tokens_per_sec = 0;
    o->knobs.output_tokens = 16;
    o->knobs.max_concurrency = 0;
    o->knobs.fault = (struct sim_fault){SIM_FAULT_NONE, 0, -1, 0, 0};
    o->knobs.fault_rate = 1.0;
}

const char *sim_opts_usage(void)
{
    return
"usage: hybridgw-sim [options]\n"
"\n"
"A protocol simulator for vLLM and the OpenAI / Anthropic APIs. Serves\n"
"POST /v1/chat/completions, /v1/messages, /v1/messages/count_tokens,\n"
"GET /v1/models, /health, /metrics and the test controls GET /sim/stats,\n"
"GET|POST /sim/config, POST /sim/reset.\n"
"\n"
"  --listen HOST:PORT     address (default 127.0.0.1:8000; port 0 = any free)\n"
"  --threads N            worker threads, 1..256 (default 1)\n"
"  --model NAME           served model name, repeatable (default sim-model)\n"
"  --strict-models        404 NotFoundError for any other model name\n"
"  --ttft-ms N            time to first token in ms (default 0)\n"
"  --tokens-per-sec X     token pace; 0 = all at once (default 0)\n"
"  --output-tokens N      tokens per answer, capped by max_tokens (default 16)\n"
"  --max-concurrency N    running requests; more wait in a FIFO (0 = no limit)\n"
"  --max-model-len N      context window in tokens (default 32768)\n"
"  --seed N               PRNG seed for text and fault sampling (default 0)\n"
"  --error-shape S        OpenAI-dialect errors: nested (vLLM >= 0.10.1,\n"
"                         default), flat (older vLLM) or openai\n"
"  --fault SPEC           inject a fault, see below\n"
"  --fault-rate P         fraction 0..1 of requests that get it (default 1)\n"
"  --quiet                only errors on stderr\n"
"  --verbose              one line per request on stderr\n"
"  --help, --version\n"
"\n"
"Fault SPEC, comma-separated: status=NNN[,retry_after=S] | stall[@N] |\n"
"disconnect[@N] | malformed[@N] | error[@N][,status=NNN] | slow[=TPS] | none.\n"
"N counts stream events sent before the fault. stall@0 never sends a head.\n"
"\n"
"Per request: header `x-sim-fault: SPEC`, or in the last user message\n"
"`[sim:fault=SPEC]`, `[sim:output_tokens=N]`, `[sim:ttft_ms=N]`,\n"
"`[sim:tokens_per_sec=X]`; `sim:tool_call` (with tools) answers with a tool\n"
"call; `sim:cache` in the system prompt reports it as cached input.\n"
"\n"
"Prints `hybridgw-sim listening on http://HOST:PORT` once listening;\n"
"exits 0 on SIGINT/SIGTERM, 2 on a bad flag.\n";
}

/* Flag table: name, whether it takes a value. */
enum opt_id {
    OPT_LISTEN = 0, OPT_THREADS, OPT_MODEL, OPT_STRICT, OPT_TTFT, OPT_TPS,
    OPT_OUTPUT, OPT_CONC, OPT_MODEL_LEN, OPT_SEED, OPT_SHAPE, OPT_FAULT,
    OPT_FAULT_RATE, OPT_QUIET, OPT_VERBOSE, OPT_HELP, OPT_VERSION, OPT_COUNT
};

static const struct {
    const char *name;
    bool has_value;
} opt_table[OPT_COUNT] = {
    [OPT_LISTEN] = {"listen", true},
    [OPT_THREADS] = {"threads", true},
    [OPT_MODEL] = {"model", true},
    [OPT_STRICT] = {"strict-models", false},
    [OPT_TTFT] = {"ttft-ms", true},
    [OPT_TPS] = {"tokens-per-sec", true},
    [OPT_OUTPUT] = {"output-tokens", true},
    [OPT_CONC] = {"max-concurrency", true},
    [OPT_MODEL_LEN] = {"max-model-len", true},
    [OPT_SEED] = {"seed", true},
    [OPT_SHAPE] = {"error-shape", true},
    [OPT_FAULT] = {"fault", true},
    [OPT_FAULT_RATE] = {"fault-rate", true},
    [OPT_QUIET] = {"quiet", false},
    [OPT_VERBOSE] = {"verbose", false},
    [OPT_HELP] = {"help", false},
    [OPT_VERSION] = {"version", false},
};

/* Validate "HOST:PORT", "[v6]:PORT" or ":PORT" (the address itself is
 * resolved later by the server). */
static int check_listen(const char *s)
{
    const char *colon = strrchr(s, ':');
    uint64_t port;
    if (!colon || strlen(s) > 255)
        return -1;
    if (s[0] == '[' && (colon == s || colon[-1] != ']'))
        return -1;
    return parse_u64n(colon + 1, strlen(colon + 1), 65535, &port);
}

int sim_opts_parse(struct sim_opts *o, int argc, char **argv, char *err, size_t errlen)
{
    bool default_models = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL, *name;
        size_t nlen;
        int id;
        uint64_t u;

        if (strcmp(a, "-h") == 0)
            return 1;
        if (strncmp(a, "--", 2) != 0) {
            seterr(err, errlen, "unexpected argument '%s' (see --help)", a);
            return -1;
        }
        name = a + 2;
        const char *eq = strchr(name, '=');
        nlen = eq ? (size_t)(eq - name) : strlen(name);
        for (id = 0; id < OPT_COUNT; id++)
            if (strlen(opt_table[id].name) == nlen && memcmp(opt_table[id].name, name, nlen) == 0)
                break;
        if (id == OPT_COUNT) {
            seterr(err, errlen, "unknown option '%s' (see --help)", a);
            return -1;
        }
        if (opt_table[id].has_value) {
            if (eq) {
                val = eq + 1;
            } else if (i + 1 < argc) {
                val = argv[++i];
            } else {
                seterr(err, errlen, "--%s needs a value", opt_table[id].name);
                return -1;
            }
        } else if (eq) {
            seterr(err, errlen, "--%s takes no value", opt_table[id].name);
            return -1;
        }
        size_t vlen = val ? strlen(val) : 0;

        switch ((enum opt_id)id) {
        case OPT_LISTEN:
            if (check_listen(val) != 0) {
                seterr(err, errlen, "--listen: expected HOST:PORT with PORT 0..65535, got '%s'", val);
                return -1;
            }
            o->listen = val;
            break;
        case OPT_THREADS:
            if (parse_u64n(val, vlen, SIM_THREADS_MAX, &u) != 0 || u == 0) {
                seterr(err, errlen, "--threads: expected an integer 1..%u, got '%s'",
                       SIM_THREADS_MAX, val);
                return -1;
            }
            o->threads = (unsigned)u;
            break;
        case OPT_MODEL:
            if (default_models) {
                o->n_models = 0;
                default_models = false;
            }
            if (vlen == 0 || vlen >= SIM_MODEL_MAX) {
                seterr(err, errlen, "--model: name must be 1..%d bytes", SIM_MODEL_MAX - 1);
                return -1;
            }
            for (size_t k = 0; k < vlen; k++) {
                unsigned char c = (unsigned char)val[k];
                if (c <= ' ' || c == '"' || c == '\\' || c == '{' || c == '}' || c == 127) {
                    seterr(err, errlen, "--model: '%s' has a character not allowed in a "
                           "metric label (space, quote, backslash, brace or control)", val);
                    return -1;
                }
            }
            if (o->n_models == SIM_MAX_MODELS) {
                seterr(err, errlen, "--model: at most %d models", SIM_MAX_MODELS);
                return -1;
            }
            for (unsigned k = 0; k < o->n_models; k++) {
                if (strcmp(o->models[k], val) == 0) {
                    seterr(err, errlen, "--model: '%s' given twice", val);
                    return -1;
                }
            }
            o->models[o->n_models++] = val;
            break;
        case OPT_STRICT:
            o->strict_models = true;
            break;
        case OPT_TTFT:
            if (parse_u64n(val, vlen, SIM_TTFT_MS_MAX, &u) != 0) {
                seterr(err, errlen, "--ttft-ms: expected an integer 0..%u, got '%s'",
                       SIM_TTFT_MS_MAX, val);
                return -1;
            }
            o->knobs.ttft_ms = (uint32_t)u;
            break;
        case OPT_TPS:
            if (parse_dbln(val, vlen, 0, SIM_TPS_MAX, &o->knobs.tokens_per_sec) != 0) {
                seterr(err, errlen, "--tokens-per-sec: expected a number 0..1000000, got '%s'", val);
                return -1;
            }
            break;
        case OPT_OUTPUT:
            if (parse_u64n(val, vlen, SIM_OUTPUT_TOKENS_MAX, &u) != 0) {
                seterr(err, errlen, "--output-tokens: expected an integer 0..%u, got '%s'",
                       SIM_OUTPUT_TOKENS_MAX, val);
                return -1;
            }
            o->knobs.output_tokens = (uint32_t)u;
            break;
        case OPT_CONC:
            if (parse_u64n(val, vlen, SIM_CONCURRENCY_MAX, &u) != 0) {
                seterr(err, errlen, "--max-concurrency: expected an integer 0..%u, got '%s'",
                       SIM_CONCURRENCY_MAX, val);
                return -1;
            }
            o->knobs.max_concurrency = (uint32_t)u;
            break;
        case OPT_MODEL_LEN:
            if (parse_u64n(val, vlen, SIM_MODEL_LEN_MAX, &u) != 0 || u == 0) {
                seterr(err, errlen, "--max-model-len: expected an integer 1..%u, got '%s'",
                       SIM_MODEL_LEN_MAX, val);
                return -1;
            }
            o->max_model_len = (uint32_t)u;
            break;
        case OPT_SEED:
            if (parse_u64n(val, vlen, UINT64_MAX, &u) != 0) {
                seterr(err, errlen, "--seed: expected an unsigned 64-bit integer, got '%s'", val);
                return -1;
            }
            o->seed = u;
            break;
        case OPT_SHAPE:
            if (strcmp(val, "nested") == 0) {
                o->error_shape = SIM_ERROR_NESTED;
            } else if (strcmp(val, "flat") == 0) {
                o->error_shape = SIM_ERROR_FLAT;
            } else if (strcmp(val, "openai") == 0) {
                o->error_shape = SIM_ERROR_OPENAI;
            } else {
                seterr(err, errlen, "--error-shape: expected nested, flat or openai, got '%s'", val);
                return -1;
            }
            break;
        case OPT_FAULT: {
            char ferr[256];
            if (sim_fault_parse(val, vlen, &o->knobs.fault, ferr, sizeof(ferr)) != 0) {
                seterr(err, errlen, "--fault: %s", ferr);
                return -1;
            }
            break;
        }
        case OPT_FAULT_RATE:
            if (parse_dbln(val, vlen, 0, 1, &o->knobs.fault_rate) != 0) {
                seterr(err, errlen, "--fault-rate: expected a number 0..1, got '%s'", val);
                return -1;
            }
            break;
        case OPT_QUIET:
            o->quiet = true;
            break;
        case OPT_VERBOSE:
            o->verbose = true;
            break;
        case OPT_HELP:
            return 1;
        case OPT_VERSION:
            return 2;
        case OPT_COUNT:
            break;
        }
    }
    if (o->n_models == 0) {
        o->models[0] = "sim-model";
        o->n_models = 1;
    }
    if (o->quiet && o->verbose) {
        seterr(err, errlen, "--quiet and --verbose exclude each other");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------- directives */

void sim_directives_init(struct sim_directives *d)
{
    memset(d, 0, sizeof(*d));
    d->output_tokens = -1;
    d->ttft_ms = -1;
    d->tokens_per_sec = -1;
}

static const char *memfind(const char *h, size_t hl, const char *n, size_t nl)
{
    if (nl == 0 || hl < nl)
        return NULL;
    for (size_t i = 0; i + nl <= hl; i++)
        if (h[i] == n[0] && memcmp(h + i, n, nl) == 0)
            return h + i;
    return NULL;
}

int sim_directives_parse(const char *text, size_t len, struct sim_directives *d,
                         char *err, size_t errlen)
{
    const char *p = text, *end = text + len;
    uint64_t u;

    if (memfind(text, len, "sim:tool_call", 13))
        d->tool_call = true;
    while ((p = memfind(p, (size_t)(end - p), "[sim:", 5)) != NULL) {
        const char *k = p + 5;
        const char *close = memchr(k, ']', (size_t)(end - k));
        if (!close || close - k > 200) {
            seterr(err, errlen, "directive '[sim:' without a closing ']' within 200 bytes");
            return -1;
        }
        const char *eq = memchr(k, '=', (size_t)(close - k));
        size_t kl = (size_t)((eq ? eq : close) - k);
        const char *v = eq ? eq + 1 : close;
        size_t vl = (size_t)(close - v);

        if (kl == 9 && memcmp(k, "tool_call", 9) == 0 && !eq) {
            d->tool_call = true;
        } else if (kl == 5 && memcmp(k, "cache", 5) == 0 && !eq) {
            /* meaningful in the system prompt only; accepted anywhere */
        } else if (!eq) {
            goto unknown;
        } else if (kl == 5 && memcmp(k, "fault", 5) == 0) {
            char ferr[224];
            if (sim_fault_parse(v, vl, &d->fault, ferr, sizeof(ferr)) != 0) {
                seterr(err, errlen, "[sim:fault=...]: %s", ferr);
                return -1;
            }
            d->has_fault = true;
        } else if (kl == 13 && memcmp(k, "output_tokens", 13) == 0) {
            if (parse_u64n(v, vl, SIM_OUTPUT_TOKENS_MAX, &u) != 0) {
                seterr(err, errlen, "[sim:output_tokens=N]: N must be 0..%u, got '%.*s'",
                       SIM_OUTPUT_TOKENS_MAX, (int)vl, v);
                return -1;
            }
            d->output_tokens = (int64_t)u;
        } else if (kl == 7 && memcmp(k, "ttft_ms", 7) == 0) {
            if (parse_u64n(v, vl, SIM_TTFT_MS_MAX, &u) != 0) {
                seterr(err, errlen, "[sim:ttft_ms=N]: N must be 0..%u, got '%.*s'",
                       SIM_TTFT_MS_MAX, (int)vl, v);
                return -1;
            }
            d->ttft_ms = (int64_t)u;
        } else if (kl == 14 && memcmp(k, "tokens_per_sec", 14) == 0) {
            if (parse_dbln(v, vl, 0, SIM_TPS_MAX, &d->tokens_per_sec) != 0) {
                seterr(err, errlen, "[sim:tokens_per_sec=X]: X must be 0..1000000, got '%.*s'",
                       (int)vl, v);
                return -1;
            }
        } else {
            goto unknown;
        }
        p = close + 1;
        continue;
unknown:
        seterr(err, errlen, "unknown directive '[sim:%.*s]' (known: fault, output_tokens, "
               "ttft_ms, tokens_per_sec, tool_call)", (int)(kl < 40 ? kl : 40), k);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- knobs */

int sim_knobs_apply_json(struct sim_knobs *k, const char *body, size_t len,
                         char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    struct sim_knobs n = *k;
    const char *key;
    json_t *v;
    int rc = -1;

    if (!root || !json_is_object(root)) {
        seterr(err, errlen, "body must be a JSON object%s%s", root ? "" : ": ",
               root ? "" : jerr.text);
        goto out;
    }
    json_object_foreach(root, key, v) {
        if (strcmp(key, "ttft_ms") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > SIM_TTFT_MS_MAX) {
                seterr(err, errlen, "ttft_ms must be an integer 0..%u", SIM_TTFT_MS_MAX);
                goto out;
            }
            n.ttft_ms = (uint32_t)json_integer_value(v);
        } else if (strcmp(key, "tokens_per_sec") == 0) {
            if (!json_is_number(v) || json_number_value(v) < 0 ||
                json_number_value(v) > SIM_TPS_MAX) {
                seterr(err, errlen, "tokens_per_sec must be a number 0..1000000");
                goto out;
            }
            n.tokens_per_sec = json_number_value(v);
        } else if (strcmp(key, "output_tokens") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > SIM_OUTPUT_TOKENS_MAX) {
                seterr(err, errlen, "output_tokens must be an integer 0..%u", SIM_OUTPUT_TOKENS_MAX);
                goto out;
            }
            n.output_tokens = (uint32_t)json_integer_value(v);
        } else if (strcmp(key, "max_concurrency") == 0) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > SIM_CONCURRENCY_MAX) {
                seterr(err, errlen, "max_concurrency must be an integer 0..%u (0 = no limit)",
                       SIM_CONCURRENCY_MAX);
                goto out;
            }
            n.max_concurrency = (uint32_t)json_integer_value(v);
        } else if (strcmp(key, "fault") == 0) {
            char ferr[224];
            if (json_is_null(v)) {
                n.fault = (struct sim_fault){SIM_FAULT_NONE, 0, -1, 0, 0};
            } else if (!json_is_string(v)) {
                seterr(err, errlen, "fault must be a fault spec string or null");
                goto out;
            } else if (sim_fault_parse(json_string_value(v), json_string_length(v), &n.fault,
                                       ferr, sizeof(ferr)) != 0) {
                seterr(err, errlen, "fault: %s", ferr);
                goto out;
            }
        } else if (strcmp(key, "fault_rate") == 0) {
            if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1) {
                seterr(err, errlen, "fault_rate must be a number 0..1");
                goto out;
            }
            n.fault_rate = json_number_value(v);
        } else {
            seterr(err, errlen, "unknown key '%.64s' (known: ttft_ms, tokens_per_sec, "
                   "output_tokens, max_concurrency, fault, fault_rate)", key);
            goto out;
        }
    }
    *k = n;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

void sim_knobs_to_json(const struct sim_knobs *k, struct sim_out *o)
{
    char f[96];
    sim_fault_format(&k->fault, f, sizeof(f));
    sim_out_printf(o, "{\"ttft_ms\":%u,\"tokens_per_sec\":%.15g,\"output_tokens\":%u,"
                   "\"max_concurrency\":%u,\"fault\":", k->ttft_ms, k->tokens_per_sec,
                   k->output_tokens, k->max_concurrency);
    sim_out_json_str(o, f, strlen(f));
    sim_out_printf(o, ",\"fault_rate\":%.15g}", k->fault_rate);
}
