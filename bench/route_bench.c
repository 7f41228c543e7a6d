/*
 * route_bench.c - decision latency (classifier + policy) for `bench/classify`.
 *
 *   route_bench [N]
 *
 * Builds chat requests of about 2 KB and 100 KB (an instruction at the
 * start, filler words after it), parses each once, then times
 * gw_route_decide() N times per size with the built-in classifier and, as
 * the baseline in the same run, with `classifier: off` (policy alone).
 * Prints p50/p90/p99/max in microseconds. Single thread, CLOCK_MONOTONIC.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hybridgw/buf.h"
#include "router/router.h"

static const char base_yaml[] =
    "listen: \"127.0.0.1:0\"\n"
    "backends:\n"
    "  l: { tier: local, provider: vllm, url: \"http://127.0.0.1:1\", model: m, context_window: 200000 }\n"
    "  f: { tier: frontier, provider: anthropic, url: \"http://127.0.0.1:1\", model: f }\n"
    "router:\n"
    "  classifier: %s\n"
    "  rules:\n"
    "    - { name: restricted, header: \"x-data-class\", equals: restricted, tier: local }\n"
    "    - { name: secrets, regex: \"(?i)\\\\b(password|api[_ -]?key)\\\\b\", tier: local }\n";

static const char *const words[] = {"the", "quarterly", "report", "shows", "revenue", "growth",
                                    "in", "all", "regions", "while", "costs", "rose", "due",
                                    "to", "supply", "chain", "delays", "and", "new", "hires"};

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static json_t *make_body(size_t size, unsigned seed)
{
    struct gw_buf b;
    gw_buf_init(&b, 0);
    gw_buf_puts(&b, "Summarize the following report in five bullet points:\n");
    while (b.len < size) {
        seed = seed * 1103515245u + 12345u;
        gw_buf_puts(&b, words[(seed >> 16) % GW_ARRAY_LEN(words)]);
        gw_buf_puts(&b, " ");
    }
    json_t *j = json_pack("{s:s, s:[{s:s, s:s}]}", "model", "auto", "messages", "role", "user",
                          "content", b.data);
    gw_buf_free(&b);
    return j;
}

static void run(const char *label, const char *classifier, size_t size, int n)
{
    char yaml[1024], err[256];
    snprintf(yaml, sizeof(yaml), base_yaml, classifier);
    struct gw_config *cfg = gw_config_load_string(yaml, strlen(yaml), "bench", err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "route_bench: %s\n", err);
        exit(1);
    }
    json_t *bodies[16];
    for (unsigned i = 0; i < 16; i++)
        bodies[i] = make_body(size, i + 1);
    double *us = malloc(sizeof(double) * (size_t)n);
    struct gw_route r;
    struct gw_route_input in;
    for (int i = 0; i < n + 200; i++) {
        memset(&in, 0, sizeof(in));
        in.cfg = cfg;
        in.model = GW_STR("auto");
        in.body = bodies[i % 16];
        in.offline = true;
        uint64_t t0 = gw_now_ns();
        gw_route_decide(&in, &r);
        uint64_t t1 = gw_now_ns();
        if (i >= 200) /* warm-up first */
            us[i - 200] = (double)(t1 - t0) / 1e3;
    }
    qsort(us, (size_t)n, sizeof(double), cmp);
    printf("| %-28s | %6zu | %8.2f | %8.2f | %8.2f | %8.2f |\n", label, size, us[n / 2],
           us[(int)(n * 0.90)], us[(int)(n * 0.99)], us[n - 1]);
    free(us);
    for (unsigned i = 0; i < 16; i++)
        json_decref(bodies[i]);
    gw_config_unref(cfg);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 20000;
    if (n < 100)
        n = 100;
    printf("| %-28s | %6s | %8s | %8s | %8s | %8s |\n", "decision", "bytes", "p50 us", "p90 us",
           "p99 us", "max us");
    printf("|------------------------------|-------:|---------:|---------:|---------:|---------:|\n");
    run("policy only (classifier off)", "\"off\"", 2048, n);
    run("classifier + policy", "builtin", 2048, n);
    run("policy only (classifier off)", "\"off\"", 102400, n / 4);
    run("classifier + policy", "builtin", 102400, n / 4);
    return 0;
}
