/*
 * limits_bench.c - what the rate limiter (src/gateway/limits.c) costs per
 * request, for `bench/keys`.
 *
 *   limits_bench [SECONDS_PER_CASE]
 *
 * Times gw_limits_admit + gw_limits_finish (one request's whole use of the
 * limiter) in a loop, per case:
 *   none        a key without limits: the call returns at once (the baseline)
 *   key         a key with rpm, tpm and concurrency
 *   key+team    the same and its team's limits
 *   2 threads, one key     two threads hammering one key (one mutex)
 *   2 threads, two keys    two threads, a key each (still one mutex)
 * The limits are far above what is reached, so every request is counted.
 * A subject's window rolls every second as on a real clock (the loop uses
 * the wall clock). Prints "RESULT case=... ns_per_req=... mreq_s=..." lines
 * and a table with the ratio to the baseline.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/limits.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct job {
    struct gw_limits *L;
    const char *key, *team;
    struct gw_limit_spec ks, ts;
    double seconds;
    long n;             /* out: requests done */
    double elapsed;     /* out */
};

static void *loop(void *arg)
{
    struct job *j = arg;
    struct gw_limit_ticket t;
    struct gw_limit_verdict v;
    double t0 = now_s(), t1 = t0;
    long n = 0;
    int64_t ms = wall_ms();
    while (t1 - t0 < j->seconds) {
        for (int i = 0; i < 1000; i++) {
            if (gw_limits_admit(j->L, j->key, &j->ks, j->team, &j->ts, 300, ms, &t, &v) !=
                GW_LIMIT_OK) {
                fprintf(stderr, "limits_bench: refused (kind %d): the limits are too low\n",
                        (int)v.kind);
                exit(1);
            }
            gw_limits_finish(j->L, &t, 250);
        }
        n += 1000;
        ms = wall_ms();
        t1 = now_s();
    }
    j->n = n;
    j->elapsed = t1 - t0;
    return NULL;
}

/* Run `threads` jobs at once; ns per request per thread (median thread). */
static double run(const char *name, struct job *jobs, int threads, double base)
{
    pthread_t th[2];
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, loop, &jobs[i]);
    long total = 0;
    double elapsed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        total += jobs[i].n;
        if (jobs[i].elapsed > elapsed)
            elapsed = jobs[i].elapsed;
    }
    /* per request as one thread sees it: elapsed time over its own count */
    double ns = elapsed * 1e9 / ((double)total / threads);
    double mreq = (double)total / elapsed / 1e6;
    printf("RESULT case=\"%s\" threads=%d ns_per_req=%.1f mreq_s=%.2f ratio=%.2f\n", name, threads,
           ns, mreq, base > 0 ? ns / base : 1.0);
    return ns;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 0.5;
    if (!(secs > 0 && secs <= 30)) {
        fprintf(stderr, "usage: limits_bench [SECONDS_PER_CASE (0-30]]\n");
        return 2;
    }
    const struct gw_limit_spec none = {0, 0, 0};
    const struct gw_limit_spec big = {1000000000000ll, 1000000000000000ll, 1000000000};
    struct gw_limits *L = gw_limits_new();
    struct job j[2];
    memset(j, 0, sizeof(j));
    for (int i = 0; i < 2; i++) {
        j[i].L = L;
        j[i].seconds = secs;
        j[i].team = "";
    }
    j[0].key = "vk_bench0000000000";
    j[0].ks = none;
    double base = run("none (key without limits)", j, 1, 0);
    j[0].ks = big;
    run("key: rpm+tpm+concurrency", j, 1, base);
    j[0].team = "bench-team";
    j[0].ts = big;
    run("key+team", j, 1, base);
    j[0].team = "";
    j[0].ts = none;
    j[1] = j[0];
    run("2 threads, one key", j, 2, base);
    j[1].key = "vk_bench0000000001";
    run("2 threads, two keys", j, 2, base);
    gw_limits_free(L);
    return 0;
}
