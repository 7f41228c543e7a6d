/*
 * router.c - the routing stages (see router.h).
 */
#include <stdio.h>

#include "gateway/gateway.h"
#include "router/router.h"

enum stage_verdict {
    STAGE_PASS = 0,     /* no opinion: next stage */
    STAGE_DECIDED = 1,  /* tier (and maybe backend) chosen */
    STAGE_FAIL = 2,     /* the request can't be routed */
};

typedef enum stage_verdict (*stage_fn)(const struct gw_route_input *in, struct gw_route *r);

struct stage {
    const char *name;
    stage_fn fn;
};

const struct gw_backend_conf *gw_route_tier_backend(const struct gw_config *cfg, enum gw_tier t)
{
    for (size_t i = 0; i < cfg->nbackends; i++) {
        const struct gw_backend_conf *b = &cfg->backends[i];
        if (b->tier == t && gw_backend_healthy(b))
            return b;
    }
    return NULL;
}

static enum stage_verdict stage_explicit(const struct gw_route_input *in, struct gw_route *r)
{
    gw_str m = in->model;
    if (gw_str_eq_c(m, "auto"))
        return STAGE_PASS;
    if (gw_str_eq_c(m, "local") || gw_str_eq_c(m, "frontier")) {
        r->tier = gw_str_eq_c(m, "local") ? GW_TIER_LOCAL : GW_TIER_FRONTIER;
        snprintf(r->reason, sizeof(r->reason), "explicit:tier=%s", gw_tier_str(r->tier));
        return STAGE_DECIDED;
    }
    const struct gw_backend_conf *b = gw_config_resolve_model(in->cfg, m.p, m.len);
    if (!b) {
        r->err_status = 404;
        r->err_code = "model_not_found";
        snprintf(r->err, sizeof(r->err),
                 "The model `%.*s` does not exist. Use auto, local, frontier or a model "
                 "listed by GET /v1/models.",
                 (int)GW_MIN(m.len, 100), m.p);
        return STAGE_FAIL;
    }
    r->tier = b->tier;
    r->backend = b;
    snprintf(r->reason, sizeof(r->reason), "explicit:model=%.*s", (int)GW_MIN(m.len, 100), m.p);
    return STAGE_DECIDED;
}

static enum stage_verdict stage_default(const struct gw_route_input *in, struct gw_route *r)
{
    r->tier = in->cfg->default_tier;
    snprintf(r->reason, sizeof(r->reason), "default:%s", gw_tier_str(r->tier));
    return STAGE_DECIDED;
}

static const struct stage stages[] = {
    {"explicit", stage_explicit},
    {"default", stage_default},
};

int gw_route_decide(const struct gw_route_input *in, struct gw_route *r)
{
    memset(r, 0, sizeof(*r));
    for (size_t i = 0; i < GW_ARRAY_LEN(stages); i++) {
        enum stage_verdict v = stages[i].fn(in, r);
        if (v == STAGE_PASS)
            continue;
        r->stage = stages[i].name;
        if (v == STAGE_FAIL)
            return -1;
        break;
    }
    if (!r->backend) {
        r->backend = gw_route_tier_backend(in->cfg, r->tier);
        if (!r->backend) {
            r->err_status = 503;
            r->err_code = "no_healthy_backend";
            snprintf(r->err, sizeof(r->err), "no healthy backend in the %s tier",
                     gw_tier_str(r->tier));
            return -1;
        }
    } else if (!gw_backend_healthy(r->backend)) {
        r->err_status = 503;
        r->err_code = "no_healthy_backend";
        snprintf(r->err, sizeof(r->err), "backend %s has no healthy upstream",
                 r->backend->name);
        return -1;
    }
    return 0;
}
