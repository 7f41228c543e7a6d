/*
 * xlate_bench.c - micro-benchmark of the OpenAI <-> Anthropic translators
 * (src/translate/translate.h), linked against build/libgwcore.a.
 *
 *   xlate_bench FIXTURE_DIR [SECONDS_PER_CASE]
 *
 * FIXTURE_DIR is tests/golden/translate. Every case runs a fixed operation
 * in a loop for about SECONDS_PER_CASE (default 0.3, at most 5) and at most
 * 50,000,000 iterations, after a short warm-up, on one thread, and prints
 *
 *   RESULT case=NAME iters=N ns_per_op=X [events=E ns_per_event=Y]
 *
 * Cases (the inputs are parsed once, outside the timed loop, unless the
 * case name says "text"):
 *   req_o2a.<fixture>         gw_xlate_req_openai_to_anthropic + json_decref
 *   req_a2o.<fixture>         gw_xlate_req_anthropic_to_openai + json_decref
 *   req_o2a_text.plain        request bytes -> json_loadb -> translate -> json_dumps
 *   req_parse_dump.plain      request bytes -> json_loadb -> json_dumps
 *                             (the same JSON work without the translation)
 *   resp_a2o.sim / resp_o2a.sim  whole-response translation of a response
 *                             shaped like hybridgw-sim's (16 words)
 *   stream_a2o.<fixture> / stream_o2a.<fixture>
 *                             new + feed every event + finish + free; the
 *                             event data are JSON text, as on the wire
 *   stream_a2o.sim256 / stream_o2a.sim256
 *                             a 256-token stream shaped like hybridgw-sim's
 *   event_parse_dump.sim256   json_loadb + json_dumps of each OpenAI chunk
 *                             of sim256 (a floor for any per-event JSON work)
 *
 * Build (bench/run translate does this):
 *   cc -O2 -I include -I src bench/xlate_bench.c build/libgwcore.a \
 *      $(pkg-config --libs libuv libcurl jansson yaml-0.1 libcrypto libpcre2-8) \
 *      -lhttp_parser -lm -lpthread
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "hybridgw/core.h"
#include "translate/translate.h"

#define MAX_ITERS 50000000L

static double secs_per_case = 0.3;
static volatile size_t sink;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------- the timed loop ---------- */

typedef void (*op_fn)(void *ctx);

/* Runs op until secs_per_case passed (checked every `batch` calls) or
 * MAX_ITERS; returns ns per call. */
static double run(op_fn op, void *ctx, long *iters_out) {
    /* warm-up: 1/10 of the time, at most 1,000,000 calls */
    double t0 = now_s(), t;
    long n = 0;
    do {
        op(ctx);
        n++;
    } while (n < 1000000 && now_s() - t0 < secs_per_case / 10);
    long batch = n / 20 > 0 ? n / 20 : 1;
    n = 0;
    t0 = now_s();
    do {
        for (long i = 0; i < batch; i++) op(ctx);
        n += batch;
        t = now_s();
    } while (t - t0 < secs_per_case && n < MAX_ITERS);
    *iters_out = n;
    return (t - t0) * 1e9 / (double)n;
}

static void report(const char *name, op_fn op, void *ctx, int events) {
    long iters;
    double ns = run(op, ctx, &iters);
    printf("RESULT case=%s iters=%ld ns_per_op=%.0f", name, iters, ns);
    if (events > 0) printf(" events=%d ns_per_event=%.1f", events, ns / events);
    printf("\n");
    fflush(stdout);
}

/* ---------- requests ---------- */

struct req_ctx {
    json_t *in;
    struct gw_xlate_opts o;
    char model[128];
    int dir;   /* 0 o2a, 1 a2o */
    const char *text;
    size_t text_len;
};

static void op_req(void *vp) {
    struct req_ctx *c = vp;
    struct gw_xlate_err e;
    json_t *j = c->dir == 0 ? gw_xlate_req_openai_to_anthropic(c->in, &c->o, &e)
                            : gw_xlate_req_anthropic_to_openai(c->in, &c->o, &e);
    sink += (size_t)(j != NULL);
    json_decref(j);
}

static void op_req_text(void *vp) {
    struct req_ctx *c = vp;
    struct gw_xlate_err e;
    json_t *in = json_loadb(c->text, c->text_len, 0, NULL);
    json_t *j = gw_xlate_req_openai_to_anthropic(in, &c->o, &e);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    sink += s ? strlen(s) : 0;
    free(s);
    json_decref(j);
    json_decref(in);
}

static void op_parse_dump(void *vp) {
    struct req_ctx *c = vp;
    json_t *in = json_loadb(c->text, c->text_len, 0, NULL);
    char *s = in ? json_dumps(in, JSON_COMPACT) : NULL;
    sink += s ? strlen(s) : 0;
    free(s);
    json_decref(in);
}

static int bench_req_fixture(const char *dir, const char *file) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    json_error_t jerr;
    json_t *f = json_load_file(path, 0, &jerr);
    if (!f) {
        fprintf(stderr, "xlate_bench: %s: %s\n", path, jerr.text);
        return -1;
    }
    const char *kind = json_string_value(json_object_get(f, "kind"));
    struct req_ctx c;
    memset(&c, 0, sizeof c);
    c.in = json_object_get(f, "input");
    c.dir = kind && strcmp(kind, "req_anthropic_to_openai") == 0 ? 1 : 0;
    json_t *o = json_object_get(f, "opts");
    const char *m = json_string_value(json_object_get(o, "model"));
    snprintf(c.model, sizeof c.model, "%s", m ? m : "sim-model");
    c.o.model = c.model;
    json_t *mt = json_object_get(o, "default_max_tokens");
    c.o.default_max_tokens = json_is_integer(mt) ? json_integer_value(mt) : 4096;
    c.o.stream = json_is_true(json_object_get(o, "stream"));
    /* check that it translates at all before timing it */
    struct gw_xlate_err e;
    json_t *t = c.dir == 0 ? gw_xlate_req_openai_to_anthropic(c.in, &c.o, &e)
                           : gw_xlate_req_anthropic_to_openai(c.in, &c.o, &e);
    if (!t) {
        fprintf(stderr, "xlate_bench: %s does not translate (%d %s)\n", file, e.status, e.message);
        json_decref(f);
        return -1;
    }
    json_decref(t);
    char name[256];
    snprintf(name, sizeof name, "%s.%.*s", c.dir == 0 ? "req_o2a" : "req_a2o",
             (int)(strlen(file) - 5 - 8), file + 8);   /* strip "req_xxx_" and ".json" */
    report(name, op_req, &c, 0);
    json_decref(f);
    return 0;
}

/* ---------- whole responses ---------- */

static const char SIM_ANTHROPIC_RESP[] =
    "{\"id\":\"msg_simc5c11d47b53c496431178d37\",\"type\":\"message\",\"role\":\"assistant\","
    "\"model\":\"sim-model\",\"content\":[{\"type\":\"text\",\"text\":\"more on reasoning cost "
    "and more see limit see while reached gateway until while to here\"}],\"stop_reason\":"
    "\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":6,"
    "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":16}}";
static const char SIM_OPENAI_RESP[] =
    "{\"id\":\"chatcmpl-00c73c0f97e37b64e281e1ca208eba08\",\"object\":\"chat.completion\","
    "\"created\":1795751601,\"model\":\"sim-model\",\"choices\":[{\"index\":0,\"message\":"
    "{\"role\":\"assistant\",\"content\":\"more on reasoning cost and more see limit see while "
    "reached gateway until while to here\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":16,\"total_tokens\":22}}";

struct resp_ctx {
    json_t *in;
    int dir;   /* 0 a2o, 1 o2a */
};

static void op_resp(void *vp) {
    struct resp_ctx *c = vp;
    struct gw_usage u;
    struct gw_xlate_err e;
    gw_usage_init(&u);
    json_t *j = c->dir == 0 ? gw_xlate_resp_anthropic_to_openai(c->in, "sim-model", &u, &e)
                            : gw_xlate_resp_openai_to_anthropic(c->in, "sim-model", &u, &e);
    sink += (size_t)(j != NULL);
    json_decref(j);
}

/* ---------- streams ---------- */

struct ev {
    char *event;   /* "" for OpenAI chunks */
    char *data;
    size_t len;
};

struct stream_ctx {
    enum gw_xstream_dir dir;
    bool include_usage;
    struct ev *ev;
    int n;
    size_t emitted;
};

static int emit_cb(void *ud, const char *event, const char *data, size_t len) {
    struct stream_ctx *c = ud;
    (void)event;
    (void)data;
    c->emitted += len + 1;
    return 0;
}

static void op_stream(void *vp) {
    struct stream_ctx *c = vp;
    struct gw_xstream *x = gw_xstream_new(c->dir, "sim-model", c->include_usage);
    for (int i = 0; i < c->n; i++) {
        gw_str e = {c->ev[i].event, strlen(c->ev[i].event)};
        gw_str d = {c->ev[i].data, c->ev[i].len};
        if (gw_xstream_feed(x, e, d, emit_cb, c) != 0) break;
    }
    gw_xstream_finish(x, NULL, emit_cb, c);
    gw_xstream_free(x);
}

static void op_event_parse_dump(void *vp) {
    struct stream_ctx *c = vp;
    for (int i = 0; i < c->n; i++) {
        json_t *j = json_loadb(c->ev[i].data, c->ev[i].len, 0, NULL);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        sink += s ? strlen(s) : 0;
        free(s);
        json_decref(j);
    }
}

static void add_ev(struct stream_ctx *c, int *cap, const char *event, char *data) {
    if (c->n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        c->ev = realloc(c->ev, (size_t)*cap * sizeof *c->ev);
        if (!c->ev) abort();
    }
    c->ev[c->n].event = strdup(event ? event : "");
    c->ev[c->n].data = data;
    c->ev[c->n].len = strlen(data);
    c->n++;
}

static void free_events(struct stream_ctx *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->ev[i].event);
        free(c->ev[i].data);
    }
    free(c->ev);
    c->ev = NULL;
    c->n = 0;
}

static int bench_stream_fixture(const char *dir, const char *file) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    json_error_t jerr;
    json_t *f = json_load_file(path, 0, &jerr);
    if (!f) {
        fprintf(stderr, "xlate_bench: %s: %s\n", path, jerr.text);
        return -1;
    }
    const char *kind = json_string_value(json_object_get(f, "kind"));
    struct stream_ctx c;
    memset(&c, 0, sizeof c);
    c.dir = kind && strcmp(kind, "stream_openai_to_anthropic") == 0 ? GW_XSTREAM_OPENAI_TO_ANTHROPIC
                                                                   : GW_XSTREAM_ANTHROPIC_TO_OPENAI;
    c.include_usage = json_is_true(json_object_get(f, "include_usage"));
    int cap = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(f, "input"), i, e) {
        json_t *d = json_object_get(e, "data");
        char *s = json_is_string(d) ? strdup(json_string_value(d)) : json_dumps(d, JSON_COMPACT);
        if (!s) abort();
        add_ev(&c, &cap, json_string_value(json_object_get(e, "event")), s);
    }
    char name[256];
    snprintf(name, sizeof name, "%s.%.*s", c.dir == GW_XSTREAM_OPENAI_TO_ANTHROPIC ? "stream_o2a" : "stream_a2o",
             (int)(strlen(file) - 5 - 11), file + 11);   /* strip "stream_xxx_" and ".json" */
    report(name, op_stream, &c, c.n);
    free_events(&c);
    json_decref(f);
    return 0;
}

static char *xstrdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xstrdup_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) abort();
    va_end(ap);
    return s;
}

static const char *const WORDS[] = {" simple", " tokens", " quickly", " gateway", " reasoning",
                                    " cost", " limit", " while"};

/* A 256-token stream shaped like hybridgw-sim's, in one dialect. */
static void sim_stream(struct stream_ctx *c, enum gw_xstream_dir dir, int tokens) {
    int cap = 0;
    memset(c, 0, sizeof *c);
    c->dir = dir;
    c->include_usage = false;
    if (dir == GW_XSTREAM_OPENAI_TO_ANTHROPIC) {
        const char *id = "chatcmpl-simc210b36c6a7e3d31239858ec";
        add_ev(c, &cap, "", xstrdup_printf(
            "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":1795751601,\"model\":"
            "\"sim-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
            "\"logprobs\":null,\"finish_reason\":null}]}", id));
        for (int t = 0; t < tokens; t++)
            add_ev(c, &cap, "", xstrdup_printf(
                "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":1795751601,\"model\":"
                "\"sim-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"},\"logprobs\":null,"
                "\"finish_reason\":null}]}", id, WORDS[t % 8]));
        add_ev(c, &cap, "", xstrdup_printf(
            "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":1795751601,\"model\":"
            "\"sim-model\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":"
            "\"stop\"}]}", id));
        add_ev(c, &cap, "", xstrdup_printf(
            "{\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":1795751601,\"model\":"
            "\"sim-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":%d,"
            "\"total_tokens\":%d}}", id, tokens, tokens + 11));
        add_ev(c, &cap, "", strdup("[DONE]"));
    } else {
        add_ev(c, &cap, "message_start", xstrdup_printf(
            "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_d5cd7df3206129a69cd749c8055c1710\","
            "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"sim-model\",\"content\":[],"
            "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":11,"
            "\"output_tokens\":0,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}}}"));
        add_ev(c, &cap, "ping", strdup("{\"type\":\"ping\"}"));
        add_ev(c, &cap, "content_block_start", strdup(
            "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"));
        for (int t = 0; t < tokens; t++)
            add_ev(c, &cap, "content_block_delta", xstrdup_printf(
                "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                "\"text\":\"%s\"}}", WORDS[t % 8]));
        add_ev(c, &cap, "content_block_stop", strdup("{\"type\":\"content_block_stop\",\"index\":0}"));
        add_ev(c, &cap, "message_delta", xstrdup_printf(
            "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},"
            "\"usage\":{\"output_tokens\":%d}}", tokens));
        add_ev(c, &cap, "message_stop", strdup("{\"type\":\"message_stop\"}"));
    }
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: xlate_bench FIXTURE_DIR [SECONDS_PER_CASE]\n");
        return 2;
    }
    const char *dir = argv[1];
    if (argc == 3) {
        secs_per_case = atof(argv[2]);
        if (!(secs_per_case > 0.001 && secs_per_case <= 5)) {
            fprintf(stderr, "xlate_bench: SECONDS_PER_CASE must be in (0.001, 5]\n");
            return 2;
        }
    }
    gw_xlate_set_clock(1795751601);   /* no time() call per chunk: same for every case */
    int bad = 0;

    /* requests: a plain one, a multi-turn one, one with tools, each way */
    static const char *const reqs[] = {
        "req_o2a_plain_text.json", "req_o2a_multi_turn_merge.json",
        "req_o2a_parallel_tools_and_results.json", "req_a2o_plain_stream.json",
        "req_a2o_tools_and_results.json", "req_a2o_system_blocks_prefill.json",
    };
    for (size_t i = 0; i < sizeof reqs / sizeof *reqs; i++)
        if (bench_req_fixture(dir, reqs[i]) != 0) bad++;

    /* the bench request as bytes, through parse + translate + serialize vs parse + serialize */
    static const char body[] = "{\"model\":\"sim-model\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}";
    struct req_ctx rc;
    memset(&rc, 0, sizeof rc);
    rc.o.model = "sim-model";
    rc.o.default_max_tokens = 4096;
    rc.text = body;
    rc.text_len = sizeof body - 1;
    report("req_o2a_text.plain", op_req_text, &rc, 0);
    report("req_parse_dump.plain", op_parse_dump, &rc, 0);

    /* whole responses shaped like the sim's */
    struct resp_ctx pc;
    pc.in = json_loads(SIM_ANTHROPIC_RESP, 0, NULL);
    pc.dir = 0;
    report("resp_a2o.sim", op_resp, &pc, 0);
    json_decref(pc.in);
    pc.in = json_loads(SIM_OPENAI_RESP, 0, NULL);
    pc.dir = 1;
    report("resp_o2a.sim", op_resp, &pc, 0);
    json_decref(pc.in);

    /* streams from the golden fixtures */
    static const char *const streams[] = {
        "stream_a2o_text_usage.json", "stream_a2o_parallel_tools.json",
        "stream_o2a_text_usage.json", "stream_o2a_parallel_tools.json",
    };
    for (size_t i = 0; i < sizeof streams / sizeof *streams; i++)
        if (bench_stream_fixture(dir, streams[i]) != 0) bad++;

    /* 256-token streams shaped like the sim's */
    struct stream_ctx sc;
    sim_stream(&sc, GW_XSTREAM_ANTHROPIC_TO_OPENAI, 256);
    report("stream_a2o.sim256", op_stream, &sc, sc.n);
    free_events(&sc);
    sim_stream(&sc, GW_XSTREAM_OPENAI_TO_ANTHROPIC, 256);
    report("stream_o2a.sim256", op_stream, &sc, sc.n);
    report("event_parse_dump.sim256", op_event_parse_dump, &sc, sc.n);
    free_events(&sc);
    return bad ? 1 : 0;
}
