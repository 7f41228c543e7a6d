/*
 * classifier.c - inference side of the task classifier: the text views of
 * a request, tokenization and feature hashing, the model file reader and
 * prediction. Training, evaluation and the model writer are in cls_train.c;
 * the model compiled into the binary is in cls_builtin.c. The model and its
 * file format are described in cls_internal.h.
 *
 * Tokenization works on UTF-8 bytes without decoding: ASCII letters, digits
 * and '_' are word bytes, every other ASCII byte separates words, a few
 * common Unicode punctuation and space characters (general punctuation,
 * CJK and fullwidth punctuation, no-break space, Arabic and Devanagari
 * stops) separate words too, and every other non-ASCII byte is a word byte.
 * ASCII, Latin-1, Greek and Cyrillic capitals are lowercased. Invalid UTF-8
 * is harmless: it is only ever hashed.
 *
 * Prediction streams features straight into a hidden vector on the stack:
 * nothing is allocated, and the work is bounded by the windows of the model
 * parameters whatever the input size.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/cls_internal.h"

const char *const gw_cls_taxonomy_labels[10] = {
    "code",      "summarization", "extraction", "classification", "rewrite",
    "chat",      "creative",      "reasoning",  "planning",       "judgment",
};

int gw_cls_label_is_frontier(const char *label)
{
    for (size_t i = 0; i < 7; i++)
        if (strcmp(label, gw_cls_taxonomy_labels[i]) == 0)
            return 0;
    return 1;
}

void gw_cls_params_default(struct gw_cls_params *p)
{
    /* Tuned on held-out splits of data/routing/train (random 10% and
     * leave-one-file-out), see docs/classifier.md. */
    memset(p, 0, sizeof(*p));
    p->dim = 16;
    p->bucket_bits = 20;
    p->minn = 4;
    p->maxn = 4;
    p->user_head = 1536;
    p->user_tail = 1024;
    p->char_head = 200;
    p->char_tail = 120;
    p->sys_head = 1024;
    p->sys_tail = 256;
    p->ctx_head = 256;
    p->flags = GW_CLS_F_PUNCT | GW_CLS_F_META | GW_CLS_F_ZONES;
    p->w_ns[GW_CLS_NS_USER] = 1.0f;
    p->w_ns[GW_CLS_NS_SYS] = 2.0f;
    p->w_ns[GW_CLS_NS_CTX] = 0.5f;
    p->w_ns[GW_CLS_NS_META] = 0.3f;
    p->w_char = 0.3f;
    p->w_mid = 0.0f;
}

int gw_cls_params_set(struct gw_cls_params *p, const char *name, const char *value)
{
    static const struct {
        const char *name;
        size_t off;
        int is_float;
        double lo, hi;
    } tab[] = {
        {"user_head", offsetof(struct gw_cls_params, user_head), 0, 0, GW_CLS_MAX_WINDOW},
        {"user_tail", offsetof(struct gw_cls_params, user_tail), 0, 0, GW_CLS_MAX_WINDOW},
        {"char_head", offsetof(struct gw_cls_params, char_head), 0, 0, GW_CLS_MAX_WINDOW},
        {"char_tail", offsetof(struct gw_cls_params, char_tail), 0, 0, GW_CLS_MAX_WINDOW},
        {"sys_head", offsetof(struct gw_cls_params, sys_head), 0, 0, GW_CLS_MAX_WINDOW},
        {"sys_tail", offsetof(struct gw_cls_params, sys_tail), 0, 0, GW_CLS_MAX_WINDOW},
        {"ctx_head", offsetof(struct gw_cls_params, ctx_head), 0, 0, GW_CLS_MAX_WINDOW},
        {"flags", offsetof(struct gw_cls_params, flags), 0, 0, GW_CLS_F_KNOWN},
        {"w_user", offsetof(struct gw_cls_params, w_ns[GW_CLS_NS_USER]), 1, 0, 100},
        {"w_sys", offsetof(struct gw_cls_params, w_ns[GW_CLS_NS_SYS]), 1, 0, 100},
        {"w_ctx", offsetof(struct gw_cls_params, w_ns[GW_CLS_NS_CTX]), 1, 0, 100},
        {"w_meta", offsetof(struct gw_cls_params, w_ns[GW_CLS_NS_META]), 1, 0, 100},
        {"w_char", offsetof(struct gw_cls_params, w_char), 1, 0, 100},
        {"w_mid", offsetof(struct gw_cls_params, w_mid), 1, 0, 100},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(tab); i++) {
        if (strcmp(tab[i].name, name) != 0)
            continue;
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end || !(v >= tab[i].lo && v <= tab[i].hi))
            return -1;
        if (tab[i].is_float) {
            float f = (float)v;
            memcpy((char *)p + tab[i].off, &f, sizeof(f));
        } else {
            if (v != (double)(uint32_t)v)
                return -1;
            uint32_t u = (uint32_t)v;
            memcpy((char *)p + tab[i].off, &u, sizeof(u));
        }
        return 0;
    }
    return -1;
}

/* ---- hashing ------------------------------------------------------------ */

#define FNV_BASIS 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

/* Seeds of the namespaces and feature kinds; arbitrary odd constants. */
static const uint64_t ns_seed[GW_CLS_NS_COUNT] = {
    0x8a5cd789635d2dffull, 0x121fd2155c472f96ull, 0x3b6c1f4d9e0a7c35ull, 0xd1b54a32d192ed03ull,
};
enum { K_WORD = 1, K_BIGRAM = 2, K_CHAR = 3, K_PUNCT = 4, K_META = 5, K_HEADW = 6, K_TAILW = 7 };

static inline uint64_t mix64(uint64_t x)
{
    /* splitmix64 finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static inline uint64_t fnv_byte(uint64_t h, uint8_t b)
{
    return (h ^ b) * FNV_PRIME;
}

uint64_t gw_cls_hash_bytes(uint64_t seed, const void *p, size_t n)
{
    return mix64(gw_cls_fnv1a64(p, n) ^ seed);
}

static inline uint64_t feat_hash(enum gw_cls_ns ns, int kind, uint64_t h)
{
    return mix64(h ^ ns_seed[ns] ^ ((uint64_t)kind << 56));
}

/* ---- tokenization ------------------------------------------------------- */

#define WORD_MAX 256 /* bytes of a word that are hashed */

/* Length of the separator at t[i] (1..3), or 0 when t[i] starts word bytes. */
static size_t sep_len(const uint8_t *t, size_t i, size_t n)
{
    uint8_t c = t[i];
    if (c < 0x80) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')
            return 0;
        return 1;
    }
    uint8_t c1 = i + 1 < n ? t[i + 1] : 0;
    uint8_t c2 = i + 2 < n ? t[i + 2] : 0;
    switch (c) {
    case 0xc2: /* nbsp ¡ « · » ¿ */
        return (c1 == 0xa0 || c1 == 0xa1 || c1 == 0xab || c1 == 0xb7 || c1 == 0xbb || c1 == 0xbf)
                   ? 2 : 0;
    case 0xd8: /* Arabic comma, question mark */
        return (c1 == 0x8c || c1 == 0x9f) ? 2 : 0;
    case 0xe0: /* Devanagari danda, double danda */
        return (c1 == 0xa5 && (c2 == 0xa4 || c2 == 0xa5)) ? 3 : 0;
    case 0xe2: /* U+2000..U+206F general punctuation */
        return ((c1 == 0x80 || (c1 == 0x81 && c2 <= 0xaf)) && c2 >= 0x80 && c2 <= 0xbf) ? 3 : 0;
    case 0xe3: /* U+3000..U+303F CJK symbols and punctuation */
        return (c1 == 0x80 && c2 >= 0x80 && c2 <= 0xbf) ? 3 : 0;
    case 0xef: /* fullwidth ASCII punctuation, halfwidth CJK punctuation */
        if (c1 == 0xbc)
            return ((c2 >= 0x81 && c2 <= 0x8f) || (c2 >= 0x9a && c2 <= 0xa0) || c2 >= 0xbb) ? 3 : 0;
        if (c1 == 0xbd)
            return (c2 == 0x80 || (c2 >= 0x9b && c2 <= 0xa5)) ? 3 : 0;
        return 0;
    default:
        return 0;
    }
}

/* Copy the word at t[i..] lowercased into w (at most WORD_MAX bytes);
 * return the number of input bytes the word spans. */
static size_t read_word(const uint8_t *t, size_t i, size_t n, uint8_t *w, size_t *wlen)
{
    size_t j = i, k = 0;
    while (j < n && sep_len(t, j, n) == 0) {
        uint8_t c = t[j];
        if (c < 0x80) {
            if (c >= 'A' && c <= 'Z')
                c = (uint8_t)(c + 32);
            if (k < WORD_MAX)
                w[k++] = c;
            j++;
            continue;
        }
        uint8_t c1 = j + 1 < n ? t[j + 1] : 0;
        uint8_t o0 = c, o1 = c1;
        int two = (c1 & 0xc0) == 0x80 && c >= 0xc2 && c <= 0xdf;
        if (two) {
            if (c == 0xc3 && c1 >= 0x80 && c1 <= 0x9e && c1 != 0x97) {
                o1 = (uint8_t)(c1 + 0x20); /* Latin-1 */
            } else if (c == 0xd0 && c1 >= 0x90 && c1 <= 0x9f) {
                o1 = (uint8_t)(c1 + 0x20); /* Cyrillic А..П */
            } else if (c == 0xd0 && c1 >= 0xa0 && c1 <= 0xaf) {
                o0 = 0xd1; /* Cyrillic Р..Я */
                o1 = (uint8_t)(c1 - 0x20);
            } else if (c == 0xd0 && c1 >= 0x80 && c1 <= 0x8f) {
                o0 = 0xd1; /* Ѐ..Џ */
                o1 = (uint8_t)(c1 + 0x10);
            } else if (c == 0xce && c1 >= 0x91 && c1 <= 0x9f) {
                o1 = (uint8_t)(c1 + 0x20); /* Greek Α..Ο */
            } else if (c == 0xce && c1 >= 0xa0 && c1 <= 0xa9 && c1 != 0xa2) {
                o0 = 0xcf; /* Greek Π..Ω */
                o1 = (uint8_t)(c1 - 0x20);
            }
            if (k + 2 <= WORD_MAX) {
                w[k++] = o0;
                w[k++] = o1;
            }
            j += 2;
            continue;
        }
        if (k < WORD_MAX)
            w[k++] = c;
        j++;
    }
    *wlen = k;
    return j - i;
}

/* ---- feature extraction ------------------------------------------------- */

struct scan {
    const struct gw_cls_params *p;
    gw_cls_emit_fn emit;
    void *ud;
    enum gw_cls_ns ns;
    float w;
    uint64_t prev;      /* hash of the previous word */
    int have_prev;
    uint64_t punct[2];  /* ASCII punctuation already emitted */
    int chars;          /* char n-grams enabled in this view */
    int zones;          /* head/tail zones apply (the user turn) */
};

static void emit_char_ngrams(struct scan *s, const uint8_t *w, size_t wlen)
{
    /* character starts, with virtual '<' at index 0 and '>' at nc+1 */
    uint16_t pos[WORD_MAX + 1];
    size_t nc = 0;
    for (size_t i = 0; i < wlen; i++)
        if ((w[i] & 0xc0) != 0x80)
            pos[nc++] = (uint16_t)i;
    pos[nc] = (uint16_t)wlen;
    size_t total = nc + 2;
    uint32_t minn = s->p->minn, maxn = s->p->maxn;
    uint64_t mask = ((uint64_t)1 << s->p->bucket_bits) - 1;
    float wc = s->w * s->p->w_char;
    for (size_t st = 0; st < total; st++) {
        uint64_t h = FNV_BASIS;
        for (size_t len = 1; len <= maxn && st + len <= total; len++) {
            size_t ci = st + len - 1; /* index in the extended sequence */
            if (ci == 0) {
                h = fnv_byte(h, '<');
            } else if (ci == total - 1) {
                h = fnv_byte(h, '>');
            } else {
                for (size_t b = pos[ci - 1]; b < pos[ci]; b++)
                    h = fnv_byte(h, w[b]);
            }
            if (len >= minn)
                s->emit(s->ud, (uint32_t)(feat_hash(s->ns, K_CHAR, h) & mask), wc);
        }
    }
}

/* Features of t[0..n): words, bigrams (not across segments), punctuation.
 * base is t's offset in the whole view. Words starting at an offset o with
 * o < zone_lo (the head zone) or o >= zone_hi (the tail zone), where the
 * instruction usually is, get the full weight, char n-grams (when the view
 * has them) and, with GW_CLS_F_ZONES, a zone-tagged copy of the word;
 * words in between (pasted material) get weight w * w_mid. */
static void scan_segment(struct scan *s, const uint8_t *t, size_t n, size_t base,
                         size_t zone_lo, size_t zone_hi)
{
    uint64_t mask = ((uint64_t)1 << s->p->bucket_bits) - 1;
    uint8_t w[WORD_MAX];
    size_t i = 0;
    int zones = (s->p->flags & GW_CLS_F_ZONES) != 0;
    float wmid = s->w * s->p->w_mid;
    s->have_prev = 0;
    while (i < n) {
        size_t sl = sep_len(t, i, n);
        if (sl) {
            uint8_t c = t[i];
            if ((s->p->flags & GW_CLS_F_PUNCT) && c < 0x80 && c > ' ' && c != 0x7f) {
                uint64_t bit = (uint64_t)1 << (c & 63);
                if (!(s->punct[c >> 6] & bit)) {
                    s->punct[c >> 6] |= bit;
                    s->emit(s->ud, (uint32_t)(feat_hash(s->ns, K_PUNCT, c) & mask), s->w);
                }
            }
            i += sl;
            continue;
        }
        size_t wlen;
        size_t span = read_word(t, i, n, w, &wlen);
        uint64_t h = gw_cls_fnv1a64(w, wlen);
        size_t off = base + i;
        int zone = off < zone_lo ? K_HEADW : off >= zone_hi ? K_TAILW : 0;
        float ww = zone ? s->w : wmid;
        s->emit(s->ud, (uint32_t)(feat_hash(s->ns, K_WORD, h) & mask), ww);
        if (s->have_prev)
            s->emit(s->ud,
                    (uint32_t)(feat_hash(s->ns, K_BIGRAM, s->prev * 0x9e3779b97f4a7c15ull + h) &
                               mask),
                    ww);
        if (zone && zones)
            s->emit(s->ud, (uint32_t)(feat_hash(s->ns, zone, h) & mask), ww);
        s->prev = h;
        s->have_prev = 1;
        if (zone && s->chars && s->p->minn > 0)
            emit_char_ngrams(s, w, wlen);
        i += span;
    }
}

/* Move a head cut back to a separator (or a UTF-8 boundary). */
static size_t cut_head(const uint8_t *t, size_t n, size_t h)
{
    if (h >= n)
        return n;
    for (size_t k = 0; k < 64 && h - k > 0; k++)
        if (t[h - k] < 0x80 && sep_len(t, h - k, n))
            return h - k;
    while (h > 0 && (t[h] & 0xc0) == 0x80)
        h--;
    return h;
}

/* Move a tail cut forward to a separator (or a UTF-8 boundary). */
static size_t cut_tail(const uint8_t *t, size_t n, size_t s)
{
    for (size_t k = 0; k < 64 && s + k < n; k++)
        if (t[s + k] < 0x80 && sep_len(t, s + k, n))
            return s + k;
    while (s < n && (t[s] & 0xc0) == 0x80)
        s++;
    return s;
}

/* One view: the head (and, when the text is longer, the tail) window. */
static void scan_view(struct scan *s, gw_str v, size_t head, size_t tail, size_t char_head,
                      size_t char_tail)
{
    const uint8_t *t = (const uint8_t *)v.p;
    size_t n = v.len;
    if (!t || n == 0)
        return;
    size_t chars_lo = char_head, chars_hi = n > char_tail ? n - char_tail : 0;
    if (!s->zones) {
        chars_lo = SIZE_MAX;
        chars_hi = 0;
    } else if (s->p->w_mid <= 0) {
        /* words between the zones weigh nothing: do not read them at all */
        head = GW_MIN(head, char_head);
        tail = GW_MIN(tail, char_tail);
    }
    if (n <= head + tail) {
        scan_segment(s, t, n, 0, chars_lo, chars_hi);
        return;
    }
    size_t he = cut_head(t, n, head);
    size_t ts = cut_tail(t, n, n - tail);
    scan_segment(s, t, he, 0, chars_lo, chars_hi);
    if (ts < n)
        scan_segment(s, t + ts, n - ts, ts, chars_lo, chars_hi);
}

static void meta_feature(const struct gw_cls_params *p, gw_cls_emit_fn emit, void *ud,
                         uint64_t what, uint64_t value)
{
    uint64_t mask = ((uint64_t)1 << p->bucket_bits) - 1;
    emit(ud, (uint32_t)(feat_hash(GW_CLS_NS_META, K_META, what * 1000003u + value) & mask),
         p->w_ns[GW_CLS_NS_META]);
}

void gw_cls_features(const struct gw_cls_params *p, const struct gw_cls_input *in,
                     gw_cls_emit_fn emit, void *ud)
{
    struct scan s;
    memset(&s, 0, sizeof(s));
    s.p = p;
    s.emit = emit;
    s.ud = ud;

    s.ns = GW_CLS_NS_USER;
    s.w = p->w_ns[GW_CLS_NS_USER];
    s.chars = 1;
    s.zones = 1;
    scan_view(&s, in->last_user, p->user_head, p->user_tail, p->char_head, p->char_tail);

    if (in->system.len && p->w_ns[GW_CLS_NS_SYS] > 0) {
        memset(s.punct, 0, sizeof(s.punct));
        s.ns = GW_CLS_NS_SYS;
        s.w = p->w_ns[GW_CLS_NS_SYS];
        s.chars = (p->flags & GW_CLS_F_SYS_CHARS) != 0;
        s.zones = 0;
        scan_view(&s, in->system, p->sys_head, p->sys_tail, p->char_head, p->char_tail);
    }
    if (p->w_ns[GW_CLS_NS_CTX] > 0) {
        memset(s.punct, 0, sizeof(s.punct));
        s.ns = GW_CLS_NS_CTX;
        s.w = p->w_ns[GW_CLS_NS_CTX];
        s.chars = 0;
        s.zones = 0;
        size_t nctx = GW_MIN(in->ncontext, GW_ARRAY_LEN(in->context));
        for (size_t i = 0; i < nctx; i++)
            scan_view(&s, in->context[i], p->ctx_head, 0, 0, 0);
    }
    if ((p->flags & GW_CLS_F_META) && p->w_ns[GW_CLS_NS_META] > 0) {
        size_t len = in->last_user.len;
        uint64_t lb = 0;
        while (len) {
            lb++;
            len >>= 1;
        }
        meta_feature(p, emit, ud, 1, lb);
        meta_feature(p, emit, ud, 2, GW_MIN(in->ncontext, 4));
        meta_feature(p, emit, ud, 3, in->system.len > 0);
    }
}

/* ---- input views -------------------------------------------------------- */

/* The text of a message: a string, or the first text part of an array. When
 * extra is given, the text parts after the first are put there (up to
 * *nextra < max). */
static gw_str msg_text(json_t *m, gw_str *extra, size_t *nextra, size_t max)
{
    json_t *c = json_object_get(m, "content");
    if (json_is_string(c))
        return (gw_str){json_string_value(c), json_string_length(c)};
    gw_str first = GW_STR_NULL;
    if (!json_is_array(c))
        return first;
    size_t i;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *type = json_object_get(part, "type");
        json_t *text = json_object_get(part, "text");
        if (!json_is_string(text))
            continue;
        if (json_is_string(type) && strcmp(json_string_value(type), "text") != 0 &&
            strcmp(json_string_value(type), "input_text") != 0)
            continue;
        gw_str t = {json_string_value(text), json_string_length(text)};
        if (!first.p)
            first = t;
        else if (extra && *nextra < max)
            extra[(*nextra)++] = t;
    }
    return first;
}

static const char *msg_role(json_t *m)
{
    const char *r = json_string_value(json_object_get(m, "role"));
    return r ? r : "";
}

void gw_cls_input_from_messages(json_t *messages, struct gw_cls_input *in)
{
    memset(in, 0, sizeof(*in));
    if (!json_is_array(messages))
        return;
    size_t n = json_array_size(messages);
    size_t sys_idx = (size_t)-1, user_idx = (size_t)-1;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(messages, i);
        const char *r = msg_role(m);
        if (sys_idx == (size_t)-1 && (!strcmp(r, "system") || !strcmp(r, "developer")))
            sys_idx = i;
        if (!strcmp(r, "user"))
            user_idx = i;
    }
    if (user_idx == (size_t)-1) {
        /* no user turn: the last message that is not the system prompt */
        for (size_t i = n; i-- > 0;)
            if (i != sys_idx) {
                user_idx = i;
                break;
            }
    }
    if (sys_idx != (size_t)-1)
        in->system = msg_text(json_array_get(messages, sys_idx), NULL, NULL, 0);
    if (user_idx == (size_t)-1)
        return;
    const size_t max = GW_ARRAY_LEN(in->context);
    in->last_user = msg_text(json_array_get(messages, user_idx), in->context, &in->ncontext, max);
    for (size_t i = user_idx; i-- > 0 && in->ncontext < max;) {
        if (i == sys_idx)
            continue;
        gw_str t = msg_text(json_array_get(messages, i), NULL, NULL, 0);
        if (t.len)
            in->context[in->ncontext++] = t;
    }
}

void gw_cls_input_from_text(const char *text, size_t len, struct gw_cls_input *in)
{
    memset(in, 0, sizeof(*in));
    in->last_user = (gw_str){text, text ? len : 0};
}

/* ---- prediction --------------------------------------------------------- */

struct acc {
    const struct gw_classifier *c;
    float wsum;
    float h[GW_CLS_MAX_DIM];
};

static inline uint32_t popcount64(uint64_t x)
{
    return (uint32_t)__builtin_popcountll(x);
}

static void acc_emit(void *ud, uint32_t b, float w)
{
    struct acc *a = ud;
    const struct gw_classifier *c = a->c;
    a->wsum += w;
    const struct gw_cls_block *blk = &c->blocks[b >> 6];
    uint64_t bit = (uint64_t)1 << (b & 63);
    if (!(blk->bits & bit))
        return;
    uint32_t r = blk->rank + popcount64(blk->bits & (bit - 1));
    const uint8_t *row = c->rows + (size_t)r * c->row_bytes;
    float sc;
    memcpy(&sc, row, sizeof(sc));
    sc *= w;
    const int8_t *q = (const int8_t *)(row + 4);
    uint32_t dim = c->p.dim;
    for (uint32_t k = 0; k < dim; k++)
        a->h[k] += sc * (float)q[k];
}

int gw_classifier_predict(const struct gw_classifier *c, const struct gw_cls_input *in,
                          float *probs)
{
    struct acc a;
    a.c = c;
    a.wsum = 0;
    memset(a.h, 0, sizeof(a.h));
    gw_cls_features(&c->p, in, acc_emit, &a);
    uint32_t dim = c->p.dim;
    /* a vanishing weight sum (no features, or weights that round to
     * nothing) is an empty input: 1/wsum would overflow */
    float inv = a.wsum > 1e-6f ? 1.0f / a.wsum : 0.0f;
    float z[GW_CLS_MAX_LABELS];
    float zmax = -INFINITY;
    int best = 0;
    for (uint32_t l = 0; l < c->nlabels; l++) {
        const float *wl = c->W + (size_t)l * dim;
        float s = 0;
        for (uint32_t k = 0; k < dim; k++)
            s += wl[k] * a.h[k];
        z[l] = c->bias[l] + s * inv;
        if (z[l] > zmax) {
            zmax = z[l];
            best = (int)l;
        }
    }
    float sum = 0;
    for (uint32_t l = 0; l < c->nlabels; l++) {
        z[l] = expf(z[l] - zmax);
        sum += z[l];
    }
    for (uint32_t l = 0; l < c->nlabels; l++)
        probs[l] = z[l] / sum;
    return best;
}

size_t gw_classifier_nlabels(const struct gw_classifier *c)
{
    return c->nlabels;
}

const char *gw_classifier_label(const struct gw_classifier *c, size_t i)
{
    return i < c->nlabels ? c->labels[i] : NULL;
}

int gw_classifier_label_index(const struct gw_classifier *c, const char *name)
{
    for (uint32_t i = 0; i < c->nlabels; i++)
        if (strcmp(c->labels[i], name) == 0)
            return (int)i;
    return -1;
}

/* ---- loading ------------------------------------------------------------ */

struct rd {
    const uint8_t *p;
    size_t n, off;
    int bad;
};

static const uint8_t *rd_take(struct rd *r, size_t k)
{
    if (r->bad || k > r->n - r->off) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *q = r->p + r->off;
    r->off += k;
    return q;
}

static uint32_t rd_u32(struct rd *r)
{
    const uint8_t *q = rd_take(r, 4);
    if (!q)
        return 0;
    return (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
}

static float u32_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

static float rd_f32(struct rd *r)
{
    return u32_float(rd_u32(r));
}

static uint64_t rd_u64(struct rd *r)
{
    uint64_t lo = rd_u32(r);
    uint64_t hi = rd_u32(r);
    return lo | hi << 32;
}

void gw_classifier_free(struct gw_classifier *c)
{
    if (!c)
        return;
    free(c->blocks);
    free(c->rows);
    free(c->W);
    free(c);
}

#define LOAD_FAIL(...) \
    do { \
        if (errlen) \
            snprintf(err, errlen, __VA_ARGS__); \
        goto fail; \
    } while (0)

struct gw_classifier *gw_classifier_load_mem(const void *data, size_t n, char *err, size_t errlen)
{
    struct gw_classifier *c = NULL;
    struct rd r = {data, n, 0, 0};
    if (errlen)
        err[0] = '\0';
    if (!data || n < 16)
        LOAD_FAIL("model: truncated (%zu bytes)", n);
    if (memcmp(data, GW_CLS_MAGIC, 8) != 0)
        LOAD_FAIL("model: not a hybridgw classifier model (bad magic)");
    r.off = 8;
    uint32_t version = rd_u32(&r);
    if (version != GW_CLS_FORMAT_VERSION)
        LOAD_FAIL("model: unsupported format version %u (this build reads %u)", version,
                  GW_CLS_FORMAT_VERSION);
    if (n < 8 + 4 + 4 + 8)
        LOAD_FAIL("model: truncated (%zu bytes)", n);
    {
        struct rd t = {data, n, n - 8, 0};
        uint64_t want = rd_u64(&t);
        uint64_t got = gw_cls_fnv1a64(data, n - 8);
        if (want != got)
            LOAD_FAIL("model: checksum mismatch (file corrupt or truncated)");
    }
    r.n = n - 8; /* the checksum is not part of the body */
    uint32_t hdr = rd_u32(&r);
    size_t hdr_start = r.off;
    c = gw_calloc(1, sizeof(*c));
    struct gw_cls_params *p = &c->p;
    c->nlabels = rd_u32(&r);
    p->dim = rd_u32(&r);
    p->bucket_bits = rd_u32(&r);
    c->nrows = rd_u32(&r);
    p->minn = rd_u32(&r);
    p->maxn = rd_u32(&r);
    p->user_head = rd_u32(&r);
    p->user_tail = rd_u32(&r);
    p->char_head = rd_u32(&r);
    p->char_tail = rd_u32(&r);
    p->sys_head = rd_u32(&r);
    p->sys_tail = rd_u32(&r);
    p->ctx_head = rd_u32(&r);
    p->flags = rd_u32(&r);
    for (int i = 0; i < GW_CLS_NS_COUNT; i++)
        p->w_ns[i] = rd_f32(&r);
    p->w_char = rd_f32(&r);
    p->w_mid = rd_f32(&r);
    c->epochs = rd_u32(&r);
    c->seed = rd_u32(&r);
    c->lr = rd_f32(&r);
    if (r.bad || r.off - hdr_start != hdr)
        LOAD_FAIL("model: bad header size %u", hdr);
    if (c->nlabels < 2 || c->nlabels > GW_CLS_MAX_LABELS)
        LOAD_FAIL("model: bad label count %u", c->nlabels);
    if (p->dim < 4 || p->dim > GW_CLS_MAX_DIM || p->dim % 4)
        LOAD_FAIL("model: bad dimension %u", p->dim);
    if (p->bucket_bits < GW_CLS_MIN_BUCKET_BITS || p->bucket_bits > GW_CLS_MAX_BUCKET_BITS)
        LOAD_FAIL("model: bad bucket bits %u", p->bucket_bits);
    if (c->nrows > (1u << p->bucket_bits))
        LOAD_FAIL("model: bad row count %u", c->nrows);
    if (p->maxn > GW_CLS_MAX_NGRAM || p->minn > p->maxn || (p->minn == 0 && p->maxn != 0))
        LOAD_FAIL("model: bad char n-gram range %u-%u", p->minn, p->maxn);
    if (p->user_head > GW_CLS_MAX_WINDOW || p->user_tail > GW_CLS_MAX_WINDOW ||
        p->char_head > GW_CLS_MAX_WINDOW || p->char_tail > GW_CLS_MAX_WINDOW ||
        p->sys_head > GW_CLS_MAX_WINDOW || p->sys_tail > GW_CLS_MAX_WINDOW ||
        p->ctx_head > GW_CLS_MAX_WINDOW)
        LOAD_FAIL("model: window larger than %u bytes", GW_CLS_MAX_WINDOW);
    if (p->flags & ~GW_CLS_F_KNOWN)
        LOAD_FAIL("model: unknown flags 0x%x", p->flags);
    for (int i = 0; i < GW_CLS_NS_COUNT; i++)
        if (!(p->w_ns[i] >= 0 && p->w_ns[i] <= 100))
            LOAD_FAIL("model: bad namespace weight");
    if (!(p->w_char >= 0 && p->w_char <= 100) || !(p->w_mid >= 0 && p->w_mid <= 100))
        LOAD_FAIL("model: bad char n-gram weight");
    for (uint32_t l = 0; l < c->nlabels; l++) {
        const uint8_t *q = rd_take(&r, 1);
        if (!q)
            LOAD_FAIL("model: truncated in label names");
        uint8_t len = q[0];
        if (len == 0 || len > GW_CLS_MAX_LABEL_LEN)
            LOAD_FAIL("model: bad label name length %u", len);
        const uint8_t *s = rd_take(&r, len);
        if (!s)
            LOAD_FAIL("model: truncated in label names");
        for (uint8_t k = 0; k < len; k++)
            if (s[k] <= ' ' || s[k] >= 0x7f)
                LOAD_FAIL("model: bad character in label name");
        memcpy(c->labels[l], s, len);
        c->labels[l][len] = '\0';
        for (uint32_t m = 0; m < l; m++)
            if (strcmp(c->labels[m], c->labels[l]) == 0)
                LOAD_FAIL("model: duplicate label %s", c->labels[l]);
    }
    size_t nbuckets = (size_t)1 << p->bucket_bits;
    size_t nblocks = (nbuckets + 63) / 64;
    const uint8_t *bm = rd_take(&r, nbuckets / 8);
    if (!bm)
        LOAD_FAIL("model: truncated in bucket map");
    c->blocks = gw_calloc(nblocks, sizeof(*c->blocks));
    uint32_t rank = 0;
    for (size_t b = 0; b < nblocks; b++) {
        uint64_t bits = 0;
        for (size_t k = 0; k < 8 && b * 8 + k < nbuckets / 8; k++)
            bits |= (uint64_t)bm[b * 8 + k] << (8 * k);
        c->blocks[b].rank = rank;
        c->blocks[b].bits = bits;
        rank += popcount64(bits);
    }
    if (rank != c->nrows)
        LOAD_FAIL("model: bucket map has %u rows, header says %u", rank, c->nrows);
    c->row_bytes = 4 + p->dim;
    size_t rows_len = (size_t)c->nrows * c->row_bytes;
    const uint8_t *rows = rd_take(&r, rows_len);
    if (!rows)
        LOAD_FAIL("model: truncated in rows");
    c->rows = gw_malloc(rows_len ? rows_len : 1);
    for (size_t i = 0; i < c->nrows; i++) {
        const uint8_t *q = rows + i * c->row_bytes;
        uint32_t u = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
                     (uint32_t)q[3] << 24;
        float sc = u32_float(u);
        if (!isfinite(sc) || fabsf(sc) > 1e6f)
            LOAD_FAIL("model: bad row scale");
        uint8_t *d = c->rows + i * c->row_bytes;
        memcpy(d, &sc, 4);
        memcpy(d + 4, q + 4, p->dim);
    }
    c->W = gw_malloc((size_t)c->nlabels * p->dim * sizeof(float));
    for (size_t i = 0; i < (size_t)c->nlabels * p->dim; i++) {
        c->W[i] = rd_f32(&r);
        if (!isfinite(c->W[i]) || fabsf(c->W[i]) > 1e6f)
            LOAD_FAIL("model: bad weight");
    }
    for (uint32_t l = 0; l < c->nlabels; l++) {
        c->bias[l] = rd_f32(&r);
        if (!isfinite(c->bias[l]) || fabsf(c->bias[l]) > 1e6f)
            LOAD_FAIL("model: bad bias");
    }
    if (r.bad)
        LOAD_FAIL("model: truncated");
    if (r.off != r.n)
        LOAD_FAIL("model: %zu unexpected bytes before the checksum", r.n - r.off);
    return c;
fail:
    gw_classifier_free(c);
    return NULL;
}

struct gw_classifier *gw_classifier_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = gw_malloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap >= (size_t)256 << 20) {
                snprintf(err, errlen, "%s: larger than 256 MiB, not a model", path);
                fclose(f);
                free(buf);
                return NULL;
            }
            cap *= 2;
            buf = gw_realloc(buf, cap);
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0)
            break;
    }
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        snprintf(err, errlen, "%s: read error", path);
        free(buf);
        return NULL;
    }
    char e[256];
    struct gw_classifier *c = gw_classifier_load_mem(buf, n, e, sizeof(e));
    free(buf);
    if (!c)
        snprintf(err, errlen, "%s: %s", path, e);
    return c;
}
