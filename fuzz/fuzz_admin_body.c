/*
 * fuzz_admin_body.c - the admin API's request bodies (src/api/admin.c):
 * a key to create, the fields of a key to change, a team's limits and
 * budgets. Whatever the bytes, the parsers answer 0 or -1 with a message,
 * and what they accept fits the key's and team's fields: strings
 * terminated inside their buffers, no negative limit or budget, a models
 * list without empty names.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "ledger/store.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void check_str(const char *s, size_t size)
{
    if (!memchr(s, 0, size))
        abort();
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size > 8192)
        return 0;
    char err[256];
    for (int create = 0; create < 2; create++) {
        struct gw_vkey k;
        memset(&k, 0, sizeof(k));
        err[0] = 0;
        int rc = gw_admin_key_body((const char *)data, size, create, &k, err, sizeof(err));
        if (rc != 0) {
            if (rc != -1 || !err[0])
                abort(); /* a refusal always says why */
            continue;
        }
        check_str(k.name, sizeof(k.name));
        check_str(k.team, sizeof(k.team));
        check_str(k.allowed_models, sizeof(k.allowed_models));
        check_str(k.metadata, sizeof(k.metadata));
        if (create && !k.name[0])
            abort();
        if (k.rpm < 0 || k.tpm < 0 || k.max_concurrent < 0 || k.expires_at < 0 ||
            !(k.budget_day >= 0) || !(k.budget_month >= 0) || !(k.budget_total >= 0))
            abort();
        const char *m = k.allowed_models;
        if (*m && (m[0] == ',' || m[strlen(m) - 1] == ',' || strstr(m, ",,")))
            abort();
    }
    struct gw_team t;
    memset(&t, 0, sizeof(t));
    err[0] = 0;
    int rc = gw_admin_team_body((const char *)data, size, &t, err, sizeof(err));
    if (rc != 0 && (rc != -1 || !err[0]))
        abort();
    if (rc == 0 && (t.rpm < 0 || t.tpm < 0 || t.max_concurrent < 0 || !(t.budget_day >= 0) ||
                    !(t.budget_month >= 0) || !(t.budget_total >= 0)))
        abort();
    return 0;
}
