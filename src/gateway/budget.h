/*
 * budget.h - budget reservations off the event loop (see budget.c).
 */
#ifndef HYBRIDGW_BUDGET_H
#define HYBRIDGW_BUDGET_H

#include <uv.h>
#include "ledger/store.h"

struct gw_budget;
struct gw_worker;

/* Called on the submitting worker's loop. rc: GW_STORE_OK (rid holds the
 * reservation), GW_STORE_OVER_BUDGET, or GW_STORE_ERR (database trouble). */
typedef void (*gw_budget_cb)(void *ctx, int rc, const char *rid, const char *why);

struct gw_budget *gw_budget_start(const char *url, char *err, size_t errlen);
void gw_budget_stop(struct gw_budget *b);
/* Per worker: the async handle results come back through. */
int gw_budget_attach(struct gw_budget *b, struct gw_worker *w, uv_loop_t *loop);
void gw_budget_detach(struct gw_budget *b, struct gw_worker *w);
/* Reserve max_usd for key k (its budgets, and its team's in the store). */
void gw_budget_reserve(struct gw_budget *b, struct gw_worker *w, const struct gw_vkey *k,
                       double max_usd, gw_budget_cb cb, void *ctx);
/* Fire and forget. */
void gw_budget_settle(struct gw_budget *b, const char *rid, double usd);
void gw_budget_release(struct gw_budget *b, const char *rid);

#endif
