/*
 * cost.c - prices and the cost record (see cost.h).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "hybridgw/cost.h"
#include "gateway/gateway.h"
#include "provider/provider.h"

/* List prices in USD per million tokens as published by the vendors and
 * known to us on 2025-10-01 (input, output, cache read, cache write).
 * Vendors change them: set price.per_mtok in config to be exact. Matched
 * by model-name prefix, longest first, so dated snapshots match too. */
static const struct {
    const char *prefix;
    double in, out, cache_read, cache_write;
} builtin_prices[] = {
    {"claude-opus-4-1", 15.0, 75.0, 1.50, 18.75},
    {"claude-opus-4", 15.0, 75.0, 1.50, 18.75},
    {"claude-sonnet-4-5", 3.0, 15.0, 0.30, 3.75},
    {"claude-sonnet-4", 3.0, 15.0, 0.30, 3.75},
    {"claude-3-7-sonnet", 3.0, 15.0, 0.30, 3.75},
    {"claude-haiku-4-5", 1.0, 5.0, 0.10, 1.25},
    {"claude-3-5-haiku", 0.80, 4.0, 0.08, 1.0},
    {"gpt-5-nano", 0.05, 0.40, 0.005, 0},
    {"gpt-5-mini", 0.25, 2.0, 0.025, 0},
    {"gpt-5", 1.25, 10.0, 0.125, 0},
    {"gpt-4.1-nano", 0.10, 0.40, 0.025, 0},
    {"gpt-4.1-mini", 0.40, 1.60, 0.10, 0},
    {"gpt-4.1", 2.0, 8.0, 0.50, 0},
    {"gpt-4o-mini", 0.15, 0.60, 0.075, 0},
    {"gpt-4o", 2.50, 10.0, 1.25, 0},
    {"o4-mini", 1.10, 4.40, 0.275, 0},
    {"o3", 2.0, 8.0, 0.50, 0},
};

bool gw_cost_price(const struct gw_backend_conf *b, struct gw_price *out)
{
    memset(out, 0, sizeof(*out));
    if (b->price_input >= 0 && b->price_output >= 0) {
        out->input = b->price_input;
        out->output = b->price_output;
        /* unpriced cache kinds cost like input: never cheaper than stated */
        out->cache_read = b->price_cache_read >= 0 ? b->price_cache_read : b->price_input;
        out->cache_write = b->price_cache_write >= 0 ? b->price_cache_write : b->price_input;
        out->source = "config";
        return true;
    }
    if (b->gpu_hourly_usd > 0 || b->tier == GW_TIER_LOCAL)
        return false; /* self-hosted: GPU time, not a list price */
    size_t best = GW_ARRAY_LEN(builtin_prices), best_len = 0;
    for (size_t i = 0; i < GW_ARRAY_LEN(builtin_prices); i++) {
        size_t l = strlen(builtin_prices[i].prefix);
        if (l > best_len && strncmp(b->model, builtin_prices[i].prefix, l) == 0) {
            best = i;
            best_len = l;
        }
    }
    if (best == GW_ARRAY_LEN(builtin_prices))
        return false;
    out->input = builtin_prices[best].in;
    out->output = builtin_prices[best].out;
    out->cache_read = builtin_prices[best].cache_read;
    out->cache_write = builtin_prices[best].cache_write > 0 ? builtin_prices[best].cache_write
                                                            : builtin_prices[best].in;
    out->source = "builtin";
    return true;
}

double gw_cost_of(const struct gw_price *p, const struct gw_usage *u)
{
    double prompt = u->prompt_tokens > 0 ? (double)u->prompt_tokens : 0;
    double cached = u->cached_tokens > 0 ? (double)u->cached_tokens : 0;
    double written = u->cache_write_tokens > 0 ? (double)u->cache_write_tokens : 0;
    double out = u->completion_tokens > 0 ? (double)u->completion_tokens : 0;
    double plain = prompt - cached - written;
    if (plain < 0)
        plain = 0;
    return (plain * p->input + cached * p->cache_read + written * p->cache_write +
            out * p->output) / 1e6;
}

double gw_cost_gpu_share(const struct gw_backend_conf *b, struct gw_target *t,
                         const struct gw_usage *u, uint64_t now_ns)
{
    if (b->gpu_hourly_usd <= 0 || !t)
        return 0;
    double in = u->prompt_tokens > 0 ? (double)u->prompt_tokens : 0;
    double out = u->completion_tokens > 0 ? (double)u->completion_tokens : 0;
    double w = in + b->output_weight * out;
    /* add to this minute's bucket (reset when it holds an older minute;
     * racing workers may lose a few tokens at a minute boundary) */
    uint64_t minute = gw_wall_ns() / 60000000000ull;
    (void)now_ns;
    size_t i = minute % 60;
    if (atomic_load(&t->served[i].minute) != minute) {
        atomic_store(&t->served[i].tokens, 0);
        atomic_store(&t->served[i].minute, minute);
    }
    double cur = atomic_load(&t->served[i].tokens);
    while (!atomic_compare_exchange_weak(&t->served[i].tokens, &cur, cur + w))
        ;
    double hour = 0;
    for (size_t k = 0; k < 60; k++)
        if (minute - atomic_load(&t->served[k].minute) < 60)
            hour += atomic_load(&t->served[k].tokens);
    double floor_tokens = (double)b->min_tokens_per_hour;
    unsigned replicas = b->replicas ? b->replicas : (unsigned)b->nurls;
    double hourly = b->gpu_hourly_usd * replicas / (double)(b->nurls ? b->nurls : 1);
    return w * hourly / fmax(hour, floor_tokens);
}

static const struct gw_backend_conf *reference(const struct gw_config *cfg,
                                               struct gw_price *p)
{
    if (cfg->cost_reference) {
        const struct gw_backend_conf *b = gw_config_backend(cfg, cfg->cost_reference);
        if (b && gw_cost_price(b, p))
            return b;
        return NULL;
    }
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const struct gw_backend_conf *b = &cfg->backends[i];
        if (b->tier == GW_TIER_FRONTIER && gw_cost_price(b, p))
            return b;
    }
    return NULL;
}

void gw_cost_compute(const struct gw_config *cfg, const struct gw_backend_conf *b,
                     struct gw_target *t, const struct gw_usage *u, bool estimated,
                     struct gw_cost_record *out)
{
    memset(out, 0, sizeof(*out));
    out->estimated_usage = estimated;
    struct gw_price p;
    if (gw_cost_price(b, &p)) {
        out->usd = gw_cost_of(&p, u);
        out->known = true;
    } else if (b->gpu_hourly_usd > 0) {
        out->usd = gw_cost_gpu_share(b, t, u, gw_now_ns());
        out->known = true;
    }
    struct gw_price rp;
    const struct gw_backend_conf *ref = reference(cfg, &rp);
    if (ref) {
        /* the same tokens at the reference's prices; a frontier request
         * on the reference itself costs exactly its counterfactual */
        out->counterfactual_usd = ref == b ? out->usd : gw_cost_of(&rp, u);
    } else {
        out->counterfactual_usd = out->usd;
    }
}
