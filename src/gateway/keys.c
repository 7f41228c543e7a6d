/*
 * keys.c - virtual API keys on the request path.
 *
 * Keys live in the ledger database (`hybridgw keys ...`). The main thread
 * reads them all every ledger.key_refresh (1 s by default) into an
 * immutable set sorted by the secret's SHA-256, and hands the set to the
 * workers the way a config reload does; a request looks its key up in
 * memory with no database call. A key revoked on any replica stops working
 * everywhere within one refresh; one revoked through this process's
 * command line or database is seen at the next read.
 */
#include <stdlib.h>
#include <string.h>

#include "hybridgw/log.h"
#include "gateway/gateway.h"
#include "gateway/keys.h"

static int by_hash(const void *a, const void *b)
{
    return memcmp(((const struct gw_vkey *)a)->sha256, ((const struct gw_vkey *)b)->sha256, 32);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct gw_team *)a)->name, ((const struct gw_team *)b)->name);
}

struct gw_keyset *gw_keyset_load(struct gw_store *s)
{
    struct gw_keyset *ks = gw_calloc(1, sizeof(*ks));
    atomic_init(&ks->refs, 1);
    if (gw_store_key_all(s, &ks->k, &ks->n) != GW_STORE_OK ||
        gw_store_team_all(s, &ks->teams, &ks->nteams) != GW_STORE_OK) {
        free(ks->k);
        free(ks);
        return NULL;
    }
    if (ks->n > 1)
        qsort(ks->k, ks->n, sizeof(*ks->k), by_hash);
    if (ks->nteams > 1) /* by bytes: a database collation may order names otherwise */
        qsort(ks->teams, ks->nteams, sizeof(*ks->teams), by_name);
    return ks;
}

bool gw_keyset_same(const struct gw_keyset *a, const struct gw_keyset *b)
{
    return a && b && a->n == b->n && a->nteams == b->nteams &&
           (a->n == 0 || memcmp(a->k, b->k, a->n * sizeof(*a->k)) == 0) &&
           (a->nteams == 0 || memcmp(a->teams, b->teams, a->nteams * sizeof(*a->teams)) == 0);
}

const struct gw_team *gw_keyset_team(const struct gw_keyset *ks, const char *name)
{
    if (!ks || ks->nteams == 0 || !name || !*name)
        return NULL;
    struct gw_team probe;
    snprintf(probe.name, sizeof(probe.name), "%s", name);
    return bsearch(&probe, ks->teams, ks->nteams, sizeof(*ks->teams), by_name);
}

const struct gw_vkey *gw_keyset_find(const struct gw_keyset *ks, const unsigned char sha256[32])
{
    if (!ks || ks->n == 0)
        return NULL;
    struct gw_vkey probe;
    memcpy(probe.sha256, sha256, 32);
    return bsearch(&probe, ks->k, ks->n, sizeof(*ks->k), by_hash);
}

struct gw_keyset *gw_keyset_ref(struct gw_keyset *ks)
{
    if (ks)
        atomic_fetch_add(&ks->refs, 1);
    return ks;
}

void gw_keyset_unref(struct gw_keyset *ks)
{
    if (ks && atomic_fetch_sub(&ks->refs, 1) == 1) {
        free(ks->k);
        free(ks->teams);
        free(ks);
    }
}
