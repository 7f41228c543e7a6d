/*
 * auth.c - client API keys and request ids.
 *
 * Keys are kept only as SHA-256 digests. A presented key is hashed once and
 * compared with every configured digest using CRYPTO_memcmp, always walking
 * the whole list, so timing tells nothing about which key (or how much of
 * one) matched.
 */
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "gateway/gateway.h"
#include "gateway/keys.h"

static gw_str presented_key(struct gw_http_req *req)
{
    gw_str v = gw_http_req_header(req, "authorization");
    if (v.p) {
        if (v.len > 7 && gw_str_ieq((gw_str){v.p, 7}, GW_STR("Bearer ")))
            return (gw_str){v.p + 7, v.len - 7};
        return GW_STR_NULL;
    }
    return gw_http_req_header(req, "x-api-key");
}

int gw_auth_check(const struct gw_config *cfg, const struct gw_keyset *ks,
                  struct gw_http_req *req, struct gw_auth *out)
{
    memset(out, 0, sizeof(*out));
    bool open = cfg->nkeys == 0 && (!ks || ks->n == 0) && !cfg->ledger_url;
    if (open) {
        out->name = "";
        out->may_force_tier = true; /* an open gateway trusts everyone */
        return 0;
    }
    gw_str k = presented_key(req);
    if (!k.p || k.len == 0) {
        out->why = "Missing API key: send Authorization: Bearer <key> or x-api-key.";
        return 401;
    }
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)k.p, k.len, d);
    for (size_t i = 0; i < cfg->nkeys; i++) {
        int diff = CRYPTO_memcmp(d, cfg->keys[i].sha256, sizeof(d));
        if (diff == 0 && !out->name) {
            out->name = cfg->keys[i].name;
            out->may_force_tier = cfg->keys[i].may_force_tier;
        }
    }
    if (out->name)
        return 0;
    const struct gw_vkey *vk = gw_keyset_find(ks, d);
    if (!vk) {
        out->why = "Incorrect API key provided.";
        return 401;
    }
    int64_t now = (int64_t)(gw_wall_ns() / 1000000000ull);
    if (vk->revoked_at) {
        out->why = "This API key has been revoked.";
        return 401;
    }
    if (vk->expires_at && vk->expires_at <= now) {
        out->why = "This API key has expired.";
        return 401;
    }
    out->name = vk->name;
    out->may_force_tier = vk->may_force_tier;
    out->vkey = vk;
    return 0;
}

static bool id_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == ':';
}

void gw_request_id(struct gw_worker *w, struct gw_http_req *req, char *out)
{
    gw_str v = gw_http_req_header(req, "x-request-id");
    if (v.p && v.len > 0 && v.len <= 64) {
        bool ok = true;
        for (size_t i = 0; i < v.len && ok; i++)
            ok = id_char_ok(v.p[i]);
        if (ok) {
            memcpy(out, v.p, v.len);
            out[v.len] = '\0';
            return;
        }
    }
    /* xorshift64*: request ids need uniqueness, not secrecy */
    uint64_t x = w->rng;
    unsigned char raw[12];
    for (size_t i = 0; i < sizeof(raw); i += 4) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t r = x * 0x2545F4914F6CDD1Dull;
        memcpy(raw + i, &r, 4);
    }
    w->rng = x;
    memcpy(out, "hgw-", 4);
    gw_hex(raw, sizeof(raw), out + 4);
}
