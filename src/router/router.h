/*
 * router.h - per request: which tier, which backend, and why.
 *
 * The decision runs a list of stages; the first decisive one wins and
 * every stage that ran leaves its verdict in the reason string, so the
 * response headers, the access log and `hybridgw route` can say what
 * happened. Stages today:
 *   explicit  the client pinned a model, or named the tier (local/frontier)
 *   default   router.default_tier for "auto"
 * The rules, classifier and constraint stages (load spill, context window,
 * features) plug into the same list.
 */
#ifndef HYBRIDGW_ROUTER_H
#define HYBRIDGW_ROUTER_H

#include "hybridgw/config.h"

struct gw_route {
    enum gw_tier tier;
    const struct gw_backend_conf *backend;
    const char *stage;          /* the stage that decided */
    const char *label;          /* task label when a classifier decided, else NULL */
    double confidence;          /* of the label, 0 when none */
    char reason[192];           /* e.g. "explicit:model=coder" */
    int err_status;             /* 0, or 404 (unknown model) / 503 (nothing healthy) */
    const char *err_code;       /* OpenAI error code for the client */
    char err[256];
};

struct gw_route_input {
    const struct gw_config *cfg;
    gw_str model;               /* the request's "model" */
};

/* Decide. Returns 0, or -1 with out->err_status/err set. */
int gw_route_decide(const struct gw_route_input *in, struct gw_route *out);

/* The healthy backend of a tier to use (config order is priority); NULL
 * when the tier has none healthy. */
const struct gw_backend_conf *gw_route_tier_backend(const struct gw_config *cfg, enum gw_tier t);

#endif
