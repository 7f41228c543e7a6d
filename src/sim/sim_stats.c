/*
 * sim_stats.c - shared counters and their renderings (see sim_stats.h).
 */
#include "sim_stats.h"

#include <assert.h>
#include <string.h>

static const char *const ep_names[] = {
    "chat_completions", "messages", "count_tokens", "models", "health", "metrics", "sim", "other",
};
static_assert(sizeof(ep_names) / sizeof(ep_names[0]) == SIM_EP_COUNT, "ep_names out of sync");

static const char *const fin_names[] = {"stop", "length", "abort"};
static_assert(sizeof(fin_names) / sizeof(fin_names[0]) == SIM_FIN_COUNT, "fin_names out of sync");

static const double ttft_le[SIM_TTFT_BUCKETS] = {
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
};

const char *sim_endpoint_str(enum sim_endpoint e)
{
    return (unsigned)e < SIM_EP_COUNT ? ep_names[e] : "?";
}

const char *sim_finish_str(enum sim_finish f)
{
    return (unsigned)f < SIM_FIN_COUNT ? fin_names[f] : "?";
}

double sim_stats_ttft_le(unsigned i)
{
    return i < SIM_TTFT_BUCKETS ? ttft_le[i] : 0;
}

void sim_stats_init(struct sim_stats *s, const char *const *models, unsigned n_models)
{
    memset(s, 0, sizeof(*s));   /* all-zero is a valid atomic state here */
    s->models = models;
    s->n_models = n_models > SIM_MAX_MODELS ? SIM_MAX_MODELS : n_models;
}

void sim_stats_reset(struct sim_stats *s)
{
    for (unsigned i = 0; i < SIM_EP_COUNT; i++)
        atomic_store(&s->c.requests[i], 0);
    atomic_store(&s->c.streams, 0);
    atomic_store(&s->c.completed, 0);
    atomic_store(&s->c.cancelled, 0);
    atomic_store(&s->c.faults, 0);
    atomic_store(&s->c.rejected, 0);
}

unsigned sim_stats_model_index(const struct sim_stats *s, const char *model)
{
    for (unsigned i = 0; i < s->n_models; i++)
        if (strcmp(s->models[i], model) == 0)
            return i;
    return 0;
}

void sim_stats_observe_ttft(struct sim_stats *s, unsigned model, double seconds)
{
    struct sim_model_metrics *m = &s->m[model < s->n_models ? model : 0];
    if (seconds < 0)
        seconds = 0;
    for (unsigned i = 0; i < SIM_TTFT_BUCKETS; i++) {
        if (seconds <= ttft_le[i]) {
            atomic_fetch_add(&m->ttft_bucket[i], 1);
            break;
        }
    }
    atomic_fetch_add(&m->ttft_sum_us, (unsigned long long)(seconds * 1e6 + 0.5));
    atomic_fetch_add(&m->ttft_count, 1);
}

/* `name{model_name="X",engine="0"` without the closing brace. Model names
 * were checked at startup to need no escaping. */
static void series(struct sim_out *o, const char *name, const char *model)
{
    sim_out_puts(o, name);
    sim_out_puts(o, "{model_name=\"");
    sim_out_puts(o, model);
    sim_out_puts(o, "\",engine=\"0\"");
}

static void family(struct sim_out *o, const char *name, const char *type, const char *help)
{
    sim_out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void sim_stats_render_prom(struct sim_stats *s, uint32_t max_concurrency, struct sim_out *o)
{
    double slots = max_concurrency ? (double)max_concurrency : 256.0;
    unsigned i, b;

    family(o, "vllm:num_requests_running", "gauge", "Number of requests in model execution batches.");
    for (i = 0; i < s->n_models; i++) {
        series(o, "vllm:num_requests_running", s->models[i]);
        sim_out_printf(o, "} %lld\n", (long long)atomic_load(&s->m[i].running));
    }
    family(o, "vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.");
    for (i = 0; i < s->n_models; i++) {
        series(o, "vllm:num_requests_waiting", s->models[i]);
        sim_out_printf(o, "} %lld\n", (long long)atomic_load(&s->m[i].waiting));
    }
    family(o, "vllm:kv_cache_usage_perc", "gauge",
           "KV-cache usage. 1 means 100 percent usage (simulated: running / max concurrency).");
    for (i = 0; i < s->n_models; i++) {
        double u = (double)atomic_load(&s->m[i].running) / slots;
        series(o, "vllm:kv_cache_usage_perc", s->models[i]);
        sim_out_printf(o, "} %.6g\n", u > 1 ? 1.0 : u < 0 ? 0.0 : u);
    }
    family(o, "vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.");
    for (i = 0; i < s->n_models; i++) {
        series(o, "vllm:prompt_tokens_total", s->models[i]);
        sim_out_printf(o, "} %llu\n", (unsigned long long)atomic_load(&s->m[i].prompt_tokens));
    }
    family(o, "vllm:generation_tokens_total", "counter", "Number of generation tokens processed.");
    for (i = 0; i < s->n_models; i++) {
        series(o, "vllm:generation_tokens_total", s->models[i]);
        sim_out_printf(o, "} %llu\n", (unsigned long long)atomic_load(&s->m[i].generation_tokens));
    }
    family(o, "vllm:request_success_total", "counter", "Count of successfully processed requests.");
    for (i = 0; i < s->n_models; i++) {
        for (unsigned f = 0; f < SIM_FIN_COUNT; f++) {
            series(o, "vllm:request_success_total", s->models[i]);
            sim_out_printf(o, ",finished_reason=\"%s\"} %llu\n", fin_names[f],
                           (unsigned long long)atomic_load(&s->m[i].success[f]));
        }
    }
    family(o, "vllm:time_to_first_token_seconds", "histogram",
           "Histogram of time to first token in seconds.");
    for (i = 0; i < s->n_models; i++) {
        struct sim_model_metrics *m = &s->m[i];
        unsigned long long cum = 0, count = atomic_load(&m->ttft_count);
        for (b = 0; b < SIM_TTFT_BUCKETS; b++) {
            cum += atomic_load(&m->ttft_bucket[b]);
            if (cum > count)   /* a concurrent observe; keep buckets monotone */
                cum = count;
            series(o, "vllm:time_to_first_token_seconds_bucket", s->models[i]);
            sim_out_printf(o, ",le=\"%g\"} %llu\n", ttft_le[b], cum);
        }
        series(o, "vllm:time_to_first_token_seconds_bucket", s->models[i]);
        sim_out_printf(o, ",le=\"+Inf\"} %llu\n", count);
        series(o, "vllm:time_to_first_token_seconds_sum", s->models[i]);
        sim_out_printf(o, "} %.6f\n", (double)atomic_load(&m->ttft_sum_us) / 1e6);
        series(o, "vllm:time_to_first_token_seconds_count", s->models[i]);
        sim_out_printf(o, "} %llu\n", count);
    }
}

void sim_stats_render_json(struct sim_stats *s, struct sim_out *o)
{
    unsigned long long total = 0;
    long long running = 0, waiting = 0;
    for (unsigned i = 0; i < SIM_EP_COUNT; i++)
        if (i != SIM_EP_SIM)
            total += atomic_load(&s->c.requests[i]);
    for (unsigned i = 0; i < s->n_models; i++) {
        running += atomic_load(&s->m[i].running);
        waiting += atomic_load(&s->m[i].waiting);
    }
    sim_out_printf(o, "{\"requests_total\":%llu,\"requests\":{", total);
    for (unsigned i = 0; i < SIM_EP_COUNT; i++)
        sim_out_printf(o, "%s\"%s\":%llu", i ? "," : "", ep_names[i],
                       (unsigned long long)atomic_load(&s->c.requests[i]));
    sim_out_printf(o, "},\"active\":%lld,\"running\":%lld,\"waiting\":%lld,\"streams\":%llu,"
                   "\"completed\":%llu,\"cancelled\":%llu,\"faults_injected\":%llu,"
                   "\"rejected\":%llu}",
                   running + waiting, running, waiting,
                   (unsigned long long)atomic_load(&s->c.streams),
                   (unsigned long long)atomic_load(&s->c.completed),
                   (unsigned long long)atomic_load(&s->c.cancelled),
                   (unsigned long long)atomic_load(&s->c.faults),
                   (unsigned long long)atomic_load(&s->c.rejected));
}
