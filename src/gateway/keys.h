/* keys.h - the in-memory set of virtual keys (see keys.c). */
#ifndef HYBRIDGW_KEYS_H
#define HYBRIDGW_KEYS_H

#include <stdatomic.h>
#include "ledger/store.h"

struct gw_keyset {
    atomic_int refs;
    size_t n;
    struct gw_vkey *k;      /* sorted by sha256 */
    size_t nteams;
    struct gw_team *teams;  /* teams with a row (budgets, limits), sorted by name */
};

/* Read every key and team from the store; NULL on a database error. refs == 1. */
struct gw_keyset *gw_keyset_load(struct gw_store *s);
/* Same keys, same fields? (to skip needless swaps) */
bool gw_keyset_same(const struct gw_keyset *a, const struct gw_keyset *b);
const struct gw_vkey *gw_keyset_find(const struct gw_keyset *ks, const unsigned char sha256[32]);
/* A team's row by name; NULL when it has none. */
const struct gw_team *gw_keyset_team(const struct gw_keyset *ks, const char *name);
struct gw_keyset *gw_keyset_ref(struct gw_keyset *ks);
void gw_keyset_unref(struct gw_keyset *ks);

#endif
