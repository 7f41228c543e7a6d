/*
 * cls_train.c - training side of the task classifier: JSONL data sets,
 * deterministic random splits, single-threaded SGD with a softmax loss
 * (fastText's supervised model: averaged feature rows, one linear layer),
 * the model writer (int8 rows with a per-row scale, rank directory,
 * checksum), scoring for `hybridgw eval`, and the C-array emitter used to
 * compile the built-in model into the binary.
 *
 * Determinism: one thread, one seeded generator (splitmix64), a fixed order
 * of floating-point operations, and feature rows initialised from a hash of
 * (seed, bucket) rather than from the generator, so the same data, options
 * and build give the same model bytes.
 *
 * Not in here: inference and the file reader (classifier.c).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/cls_internal.h"

/* ---- random numbers ----------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static size_t rng_below(uint64_t *s, size_t n)
{
    return (size_t)(rng_next(s) % (uint64_t)n);
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

void gw_cls_split(size_t n, double holdout, uint64_t seed, size_t **train, size_t *ntrain,
                  size_t **test, size_t *ntest)
{
    size_t *perm = gw_malloc((n ? n : 1) * sizeof(size_t));
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    uint64_t s = seed ^ 0x5851f42d4c957f2dull;
    for (size_t i = n; i > 1; i--) {
        size_t j = rng_below(&s, i);
        size_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
    size_t nt = holdout > 0 ? (size_t)(holdout * (double)n + 0.5) : 0;
    if (nt > n)
        nt = n;
    *test = gw_malloc((nt ? nt : 1) * sizeof(size_t));
    *train = gw_malloc((n - nt ? n - nt : 1) * sizeof(size_t));
    memcpy(*test, perm, nt * sizeof(size_t));
    memcpy(*train, perm + nt, (n - nt) * sizeof(size_t));
    /* back in file order: with holdout 0 the training set is the files as
     * given, exactly what the build-time tool trains on */
    qsort(*test, nt, sizeof(size_t), cmp_size);
    qsort(*train, n - nt, sizeof(size_t), cmp_size);
    *ntest = nt;
    *ntrain = n - nt;
    free(perm);
}

/* ---- data sets ---------------------------------------------------------- */

static int label_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > GW_CLS_MAX_LABEL_LEN)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

int gw_cls_dataset_load(struct gw_cls_dataset *ds, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    uint32_t fidx = (uint32_t)ds->nfiles;
    ds->files = gw_realloc(ds->files, (ds->nfiles + 1) * sizeof(char *));
    ds->files[ds->nfiles++] = gw_strdup(path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    uint32_t lineno = 0;
    int rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t k = 0;
        while (k < (size_t)len && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r' ||
                                   line[k] == '\n'))
            k++;
        if (k == (size_t)len)
            continue;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        if (!o) {
            snprintf(err, errlen, "%s:%u: bad JSON: %s", path, lineno, je.text);
            rc = -1;
            break;
        }
        const char *why = NULL;
        json_t *msgs = json_object_get(o, "messages");
        json_t *lab = json_object_get(o, "label");
        json_t *tier = json_object_get(o, "tier");
        int t = -1;
        if (!json_is_object(o))
            why = "not a JSON object";
        else if (!json_is_array(msgs) || json_array_size(msgs) == 0)
            why = "\"messages\" must be a non-empty array";
        else if (lab && !json_is_null(lab) &&
                 (!json_is_string(lab) || !label_ok(json_string_value(lab))))
            why = "\"label\" must be a short name without spaces, or null";
        else if (tier && !json_is_null(tier)) {
            const char *ts = json_string_value(tier);
            if (ts && strcmp(ts, "local") == 0)
                t = 0;
            else if (ts && strcmp(ts, "frontier") == 0)
                t = 1;
            else
                why = "\"tier\" must be \"local\", \"frontier\" or null";
        }
        if (why) {
            snprintf(err, errlen, "%s:%u: %s", path, lineno, why);
            json_decref(o);
            rc = -1;
            break;
        }
        if (ds->nrows == ds->cap) {
            ds->cap = ds->cap ? ds->cap * 2 : 1024;
            ds->rows = gw_realloc(ds->rows, ds->cap * sizeof(*ds->rows));
        }
        struct gw_cls_row *r = &ds->rows[ds->nrows++];
        r->messages = json_incref(msgs);
        r->label = json_is_string(lab) ? gw_strdup(json_string_value(lab)) : NULL;
        r->tier = t;
        r->file = fidx;
        r->line = lineno;
        json_decref(o);
    }
    if (rc == 0 && ferror(f)) {
        snprintf(err, errlen, "%s: read error", path);
        rc = -1;
    }
    free(line);
    fclose(f);
    return rc;
}

void gw_cls_dataset_free(struct gw_cls_dataset *ds)
{
    for (size_t i = 0; i < ds->nrows; i++) {
        json_decref(ds->rows[i].messages);
        free(ds->rows[i].label);
    }
    for (size_t i = 0; i < ds->nfiles; i++)
        free(ds->files[i]);
    free(ds->rows);
    free(ds->files);
    memset(ds, 0, sizeof(*ds));
}

/* ---- training ----------------------------------------------------------- */

void gw_cls_train_opts_default(struct gw_cls_train_opts *o)
{
    memset(o, 0, sizeof(*o));
    gw_cls_params_default(&o->p);
    o->epochs = 30;
    o->lr = 2.0f;
    o->seed = 1;
    o->max_rows = 100000;
    o->frontier_weight = 1.0f;
    o->tier_weight = 0.0f;
    /* tuned on held-out splits of data/routing/train (docs/classifier.md):
     * dropping 80% of an example's features per step keeps the model from
     * leaning on a few words, and averaging 3 seeds removes most of the
     * variance that adds; +3-6 points label accuracy, same size and cost */
    o->dropout = 0.8f;
    o->ensemble = 3;
    o->progress = NULL;
}

/* growable feature list */
struct fvec {
    uint32_t *b;
    float *w;
    size_t n, cap;
};

static void fvec_emit(void *ud, uint32_t b, float w)
{
    struct fvec *v = ud;
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 256;
        v->b = gw_realloc(v->b, v->cap * sizeof(uint32_t));
        v->w = gw_realloc(v->w, v->cap * sizeof(float));
    }
    v->b[v->n] = b;
    v->w[v->n] = w;
    v->n++;
}

/* growable output */
struct obuf {
    uint8_t *p;
    size_t n, cap;
};

static void ob_put(struct obuf *o, const void *p, size_t n)
{
    if (o->n + n > o->cap) {
        while (o->n + n > o->cap)
            o->cap = o->cap ? o->cap * 2 : 4096;
        o->p = gw_realloc(o->p, o->cap);
    }
    memcpy(o->p + o->n, p, n);
    o->n += n;
}

static void ob_u32(struct obuf *o, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    ob_put(o, b, 4);
}

static void ob_f32(struct obuf *o, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    ob_u32(o, u);
}

struct rownorm {
    uint32_t bucket;
    uint32_t row;
    float norm;
};

static int cmp_rownorm(const void *a, const void *b)
{
    const struct rownorm *x = a, *y = b;
    if (x->norm != y->norm)
        return x->norm > y->norm ? -1 : 1;
    return x->bucket < y->bucket ? -1 : x->bucket > y->bucket;
}

static int cmp_bucket(const void *a, const void *b)
{
    const struct rownorm *x = a, *y = b;
    return x->bucket < y->bucket ? -1 : x->bucket > y->bucket;
}

/* Serialize a trained float model (see the format in cls_internal.h). */
static void serialize(const struct gw_cls_train_opts *o, uint32_t nlabels,
                      char labels[][GW_CLS_MAX_LABEL_LEN + 1], const float *E,
                      const uint32_t *rowb, size_t nt, const float *W, const float *bias,
                      uint8_t **out, size_t *outlen)
{
    const struct gw_cls_params *p = &o->p;
    size_t nb = (size_t)1 << p->bucket_bits;
    uint32_t dim = p->dim;

    /* rows to keep: all, or the max_rows with the largest norm; then in
     * bucket order (the order of the file) */
    struct rownorm *rn = gw_malloc((nt ? nt : 1) * sizeof(*rn));
    for (size_t r = 0; r < nt; r++) {
        double s = 0;
        for (uint32_t d = 0; d < dim; d++)
            s += (double)E[r * dim + d] * E[r * dim + d];
        rn[r].bucket = rowb[r];
        rn[r].row = (uint32_t)r;
        rn[r].norm = (float)s;
    }
    size_t keep = nt;
    if (o->max_rows && keep > o->max_rows) {
        qsort(rn, nt, sizeof(*rn), cmp_rownorm);
        keep = o->max_rows;
    }
    struct rownorm *kb = rn;
    qsort(kb, keep, sizeof(*kb), cmp_bucket);

    struct obuf ob = {0};
    ob_put(&ob, GW_CLS_MAGIC, 8);
    ob_u32(&ob, GW_CLS_FORMAT_VERSION);
    ob_u32(&ob, 4 * 14 + 4 * GW_CLS_NS_COUNT + 8 + 12);
    ob_u32(&ob, nlabels);
    ob_u32(&ob, dim);
    ob_u32(&ob, p->bucket_bits);
    ob_u32(&ob, (uint32_t)keep);
    ob_u32(&ob, p->minn);
    ob_u32(&ob, p->maxn);
    ob_u32(&ob, p->user_head);
    ob_u32(&ob, p->user_tail);
    ob_u32(&ob, p->char_head);
    ob_u32(&ob, p->char_tail);
    ob_u32(&ob, p->sys_head);
    ob_u32(&ob, p->sys_tail);
    ob_u32(&ob, p->ctx_head);
    ob_u32(&ob, p->flags);
    for (int i = 0; i < GW_CLS_NS_COUNT; i++)
        ob_f32(&ob, p->w_ns[i]);
    ob_f32(&ob, p->w_char);
    ob_f32(&ob, p->w_mid);
    ob_u32(&ob, o->epochs);
    ob_u32(&ob, (uint32_t)o->seed);
    ob_f32(&ob, o->lr);
    for (uint32_t l = 0; l < nlabels; l++) {
        uint8_t len = (uint8_t)strlen(labels[l]);
        ob_put(&ob, &len, 1);
        ob_put(&ob, labels[l], len);
    }
    uint8_t *bm = gw_calloc(nb / 8 ? nb / 8 : 1, 1);
    for (size_t i = 0; i < keep; i++)
        bm[kb[i].bucket >> 3] |= (uint8_t)(1u << (kb[i].bucket & 7));
    ob_put(&ob, bm, nb / 8);
    free(bm);
    int8_t q[GW_CLS_MAX_DIM];
    for (size_t i = 0; i < keep; i++) {
        const float *row = E + (size_t)kb[i].row * dim;
        float mx = 0;
        for (uint32_t d = 0; d < dim; d++)
            mx = fmaxf(mx, fabsf(row[d]));
        float sc = mx / 127.0f;
        for (uint32_t d = 0; d < dim; d++) {
            float v = sc > 0 ? roundf(row[d] / sc) : 0.0f;
            q[d] = (int8_t)fmaxf(-127.0f, fminf(127.0f, v));
        }
        ob_f32(&ob, sc);
        ob_put(&ob, q, dim);
    }
    free(rn);
    for (size_t i = 0; i < (size_t)nlabels * dim; i++)
        ob_f32(&ob, W[i]);
    for (uint32_t l = 0; l < nlabels; l++)
        ob_f32(&ob, bias[l]);
    uint64_t h = gw_cls_fnv1a64(ob.p, ob.n);
    ob_u32(&ob, (uint32_t)h);
    ob_u32(&ob, (uint32_t)(h >> 32));
    *out = ob.p;
    *outlen = ob.n;
}

static int params_check(const struct gw_cls_params *p, char *err, size_t errlen)
{
    if (p->dim < 4 || p->dim > GW_CLS_MAX_DIM || p->dim % 4) {
        snprintf(err, errlen, "dim must be a multiple of 4 in 4..%d", GW_CLS_MAX_DIM);
        return -1;
    }
    if (p->bucket_bits < GW_CLS_MIN_BUCKET_BITS || p->bucket_bits > GW_CLS_MAX_BUCKET_BITS) {
        snprintf(err, errlen, "buckets must be a power of two in 2^%d..2^%d",
                 GW_CLS_MIN_BUCKET_BITS, GW_CLS_MAX_BUCKET_BITS);
        return -1;
    }
    if (p->maxn > GW_CLS_MAX_NGRAM || p->minn > p->maxn || (p->minn == 0 && p->maxn != 0)) {
        snprintf(err, errlen, "char n-gram range must be 0-0 or within 1-%d", GW_CLS_MAX_NGRAM);
        return -1;
    }
    return 0;
}

int gw_cls_train(const struct gw_cls_dataset *ds, const size_t *idx, size_t n,
                 const struct gw_cls_train_opts *o, uint8_t **out, size_t *outlen,
                 char *err, size_t errlen)
{
    const struct gw_cls_params *p = &o->p;
    if (params_check(p, err, errlen) < 0)
        return -1;
    if (o->epochs == 0 || !(o->lr > 0)) {
        snprintf(err, errlen, "epochs and lr must be positive");
        return -1;
    }
    uint64_t t0 = gw_now_ns();

    /* label set: the taxonomy first, then others in order of appearance */
    char labels[GW_CLS_MAX_LABELS][GW_CLS_MAX_LABEL_LEN + 1];
    uint32_t nlabels = 0;
    for (size_t i = 0; i < GW_ARRAY_LEN(gw_cls_taxonomy_labels); i++)
        snprintf(labels[nlabels++], sizeof(labels[0]), "%s", gw_cls_taxonomy_labels[i]);
    struct gw_cls_example *ex = gw_calloc(n ? n : 1, sizeof(*ex));
    size_t nex = 0;
    for (size_t i = 0; i < n; i++) {
        const struct gw_cls_row *r = &ds->rows[idx[i]];
        if (!r->label)
            continue;
        int li = -1;
        for (uint32_t l = 0; l < nlabels; l++)
            if (strcmp(labels[l], r->label) == 0)
                li = (int)l;
        if (li < 0) {
            if (nlabels == GW_CLS_MAX_LABELS) {
                snprintf(err, errlen, "%s:%u: more than %d distinct labels", ds->files[r->file],
                         r->line, GW_CLS_MAX_LABELS);
                for (size_t j = 0; j < nex; j++) {
                    free(ex[j].fb);
                    free(ex[j].fw);
                }
                free(ex);
                return -1;
            }
            snprintf(labels[nlabels], sizeof(labels[0]), "%s", r->label);
            li = (int)nlabels++;
        }
        struct gw_cls_input in;
        gw_cls_input_from_messages(r->messages, &in);
        struct fvec v = {0};
        gw_cls_features(p, &in, fvec_emit, &v);
        ex[nex].fb = v.b;
        ex[nex].fw = v.w;
        ex[nex].nf = (uint32_t)v.n;
        ex[nex].label = li;
        ex[nex].tier = r->tier;
        ex[nex].src = ds->files[r->file];
        ex[nex].line = r->line;
        nex++;
    }
    if (nex == 0) {
        snprintf(err, errlen, "no labelled rows to train on");
        free(ex);
        return -1;
    }

    /* Rows are dense, in order of first appearance (common features first,
     * which keeps the hot rows together), and initialised from (seed, bucket)
     * so that the values do not depend on that order. */
    size_t nb = (size_t)1 << p->bucket_bits;
    uint32_t dim = p->dim;
    uint32_t *map = gw_calloc(nb, sizeof(uint32_t)); /* bucket -> row + 1 */
    uint32_t *rowb = NULL;                            /* row -> bucket */
    size_t nrows = 0, rcap = 0;
    float *E = NULL;
    float *W = gw_calloc((size_t)nlabels * dim, sizeof(float));
    float bias[GW_CLS_MAX_LABELS];
    size_t nfeat = 0;
    for (size_t e = 0; e < nex; e++) {
        nfeat += ex[e].nf;
        for (uint32_t j = 0; j < ex[e].nf; j++) {
            uint32_t b = ex[e].fb[j];
            if (!map[b]) {
                if (nrows == rcap) {
                    rcap = rcap ? rcap * 2 : 65536;
                    rowb = gw_realloc(rowb, rcap * sizeof(uint32_t));
                    E = gw_realloc(E, rcap * dim * sizeof(float));
                }
                rowb[nrows] = b;
                map[b] = (uint32_t)++nrows;
            }
            ex[e].fb[j] = map[b] - 1;
        }
    }
    free(map);
    if (o->progress)
        fprintf(o->progress, "train: %zu examples, %u labels, %.1f features/example, dim %u, "
                "2^%u buckets\n", nex, nlabels, (double)nfeat / (double)nex, dim,
                p->bucket_bits);

    size_t *order = gw_malloc(nex * sizeof(size_t));
    int lfront[GW_CLS_MAX_LABELS];
    for (uint32_t l = 0; l < nlabels; l++)
        lfront[l] = gw_cls_label_is_frontier(labels[l]);
    uint64_t drop_cut = o->dropout > 0 ? (uint64_t)((double)o->dropout * 9007199254740992.0) : 0;
    uint8_t *keepf = NULL;
    size_t keepcap = 0;
    /* An ensemble of K members (seeds seed .. seed+K-1) averages their
     * logits. Each member's logits are bias + W (sum w_j E_j) / wsum, so the
     * average is itself such a model: rows P_j = mean_k W_k E_kj (one value
     * per label, padded to a multiple of 4), W = identity, bias = mean b_k.
     * Same file format, same prediction cost. */
    uint32_t nens = o->ensemble > 1 ? o->ensemble : 1;
    uint32_t pdim = (nlabels + 3) & ~3u;
    float *P = NULL;
    float pbias[GW_CLS_MAX_LABELS] = {0};
    if (nens > 1)
        P = gw_calloc(nrows * pdim, sizeof(float));
    for (uint32_t k = 0; k < nens; k++) {
        uint64_t seed = o->seed + k;
        for (size_t r = 0; r < nrows; r++) {
            uint64_t s = seed * 0x2545f4914f6cdd1dull + rowb[r];
            for (uint32_t d = 0; d < dim; d++) {
                double u = (double)(rng_next(&s) >> 11) / 9007199254740992.0;
                E[r * dim + d] = (float)((2 * u - 1) / dim);
            }
        }
        memset(W, 0, (size_t)nlabels * dim * sizeof(float));
        memset(bias, 0, sizeof(bias));
        for (size_t i = 0; i < nex; i++)
            order[i] = i;
        /* a separate stream for dropout: without it the shuffles (and the
         * model bytes) are those of plain training */
        uint64_t ds_rng = seed ^ 0xd1342543de82ef95ull;
        uint64_t rs = seed;
        uint64_t total = (uint64_t)o->epochs * nex, step = 0;
        float h[GW_CLS_MAX_DIM], gh[GW_CLS_MAX_DIM], z[GW_CLS_MAX_LABELS];
        for (uint32_t ep = 0; ep < o->epochs; ep++) {
            for (size_t i = nex; i > 1; i--) {
                size_t j = rng_below(&rs, i);
                size_t t = order[i - 1];
                order[i - 1] = order[j];
                order[j] = t;
            }
            double loss = 0;
            size_t correct = 0;
            for (size_t oi = 0; oi < nex; oi++, step++) {
                const struct gw_cls_example *x = &ex[order[oi]];
                float lr = o->lr * (1.0f - (float)step / (float)total);
                memset(h, 0, sizeof(float) * dim);
                float wsum = 0;
                if (drop_cut) {
                    if (x->nf > keepcap) {
                        keepcap = x->nf;
                        keepf = gw_realloc(keepf, keepcap);
                    }
                    for (uint32_t j = 0; j < x->nf; j++)
                        keepf[j] = (rng_next(&ds_rng) >> 11) >= drop_cut;
                }
                for (uint32_t j = 0; j < x->nf; j++) {
                    if (drop_cut && !keepf[j])
                        continue;
                    const float *row = E + (size_t)x->fb[j] * dim;
                    float w = x->fw[j];
                    wsum += w;
                    for (uint32_t d = 0; d < dim; d++)
                        h[d] += w * row[d];
                }
                float inv = wsum > 0 ? 1.0f / wsum : 0.0f;
                for (uint32_t d = 0; d < dim; d++)
                    h[d] *= inv;
                float zmax = -INFINITY;
                uint32_t best = 0;
                for (uint32_t l = 0; l < nlabels; l++) {
                    float s = bias[l];
                    for (uint32_t d = 0; d < dim; d++)
                        s += W[l * dim + d] * h[d];
                    z[l] = s;
                    if (s > zmax) {
                        zmax = s;
                        best = l;
                    }
                }
                float sum = 0;
                for (uint32_t l = 0; l < nlabels; l++) {
                    z[l] = expf(z[l] - zmax);
                    sum += z[l];
                }
                correct += best == (uint32_t)x->label;
                memset(gh, 0, sizeof(float) * dim);
                /* cost-sensitive loss: frontier examples weigh frontier_weight;
                 * plus tier_weight x -log P(gold tier), P(tier) the sum of its
                 * labels' probabilities (gradient p_l - [l in tier] p_l / P) */
                int gt = lfront[x->label];
                float cw = gt == 1 ? o->frontier_weight : 1.0f;
                float pt = 0;
                if (o->tier_weight > 0) {
                    for (uint32_t l = 0; l < nlabels; l++)
                        if (lfront[l] == gt)
                            pt += z[l] / sum;
                    if (pt < 1e-30f)
                        pt = 1e-30f;
                    loss -= o->tier_weight * log(pt);
                }
                for (uint32_t l = 0; l < nlabels; l++) {
                    float pl = z[l] / sum;
                    if (l == (uint32_t)x->label)
                        loss -= cw * log(pl > 1e-30f ? pl : 1e-30f);
                    float g = cw * (pl - (l == (uint32_t)x->label ? 1.0f : 0.0f));
                    if (o->tier_weight > 0)
                        g += o->tier_weight * (pl - (lfront[l] == gt ? pl / pt : 0.0f));
                    for (uint32_t d = 0; d < dim; d++) {
                        gh[d] += g * W[l * dim + d];
                        W[l * dim + d] -= lr * g * h[d];
                    }
                    bias[l] -= lr * g;
                }
                for (uint32_t j = 0; j < x->nf; j++) {
                    if (drop_cut && !keepf[j])
                        continue;
                    float *row = E + (size_t)x->fb[j] * dim;
                    float s = lr * x->fw[j] * inv;
                    for (uint32_t d = 0; d < dim; d++)
                        row[d] -= s * gh[d];
                }
            }
            if (o->progress)
                fprintf(o->progress, "epoch %2u/%u  loss %.4f  train acc %.4f  %.2f s\n", ep + 1,
                        o->epochs, loss / (double)nex, (double)correct / (double)nex,
                        (double)(gw_now_ns() - t0) / 1e9);
        }
        if (nens > 1) {
            for (size_t r = 0; r < nrows; r++)
                for (uint32_t l = 0; l < nlabels; l++) {
                    float v = 0;
                    for (uint32_t d = 0; d < dim; d++)
                        v += W[l * dim + d] * E[r * dim + d];
                    P[r * pdim + l] += v / (float)nens;
                }
            for (uint32_t l = 0; l < nlabels; l++)
                pbias[l] += bias[l] / (float)nens;
        }
    }
    free(order);
    free(keepf);

    if (nens > 1) {
        struct gw_cls_train_opts po = *o;
        po.p.dim = pdim;
        float *I = gw_calloc((size_t)nlabels * pdim, sizeof(float));
        for (uint32_t l = 0; l < nlabels; l++)
            I[l * pdim + l] = 1.0f;
        serialize(&po, nlabels, labels, P, rowb, nrows, I, pbias, out, outlen);
        free(I);
        free(P);
    } else {
        serialize(o, nlabels, labels, E, rowb, nrows, W, bias, out, outlen);
    }
    if (o->progress)
        fprintf(o->progress, "model: %zu bytes, %zu feature rows touched (cap %u), %.2f s\n",
                *outlen, nrows, o->max_rows, (double)(gw_now_ns() - t0) / 1e9);
    free(E);
    free(rowb);
    free(W);
    for (size_t e = 0; e < nex; e++) {
        free(ex[e].fb);
        free(ex[e].fw);
    }
    free(ex);
    return 0;
}

/* ---- scoring ------------------------------------------------------------ */

void gw_cls_score(const struct gw_classifier *c, const struct gw_cls_dataset *ds,
                  const size_t *idx, size_t n, float min_conf, float frontier_threshold,
                  struct gw_cls_scores *s)
{
    memset(s, 0, sizeof(*s));
    if (!idx)
        n = ds->nrows;
    s->lat_us = gw_malloc((n ? n : 1) * sizeof(double));
    size_t nl = gw_classifier_nlabels(c);
    float probs[GW_CLS_MAX_LABELS];
    for (size_t i = 0; i < n; i++) {
        const struct gw_cls_row *r = &ds->rows[idx ? idx[i] : i];
        int gold = r->label ? gw_classifier_label_index(c, r->label) : -1;
        int gold_tier = r->tier;
        if (gold_tier < 0 && r->label)
            gold_tier = gw_cls_label_is_frontier(r->label);
        if (!r->label && gold_tier < 0) {
            s->n_skipped++;
            continue;
        }
        uint64_t t0 = gw_now_ns();
        struct gw_cls_input in;
        gw_cls_input_from_messages(r->messages, &in);
        int pred = gw_classifier_predict(c, &in, probs);
        uint64_t t1 = gw_now_ns();
        s->lat_us[s->n_calls++] = (double)(t1 - t0) / 1000.0;

        if (r->label && gold < 0)
            s->n_unknown_label++;
        if (!r->label)
            s->n_null_label++;
        if (gold >= 0) {
            s->n_label++;
            s->n_label_correct += gold == pred;
            s->confusion[gold][pred]++;
        }
        int ptier = gw_cls_label_is_frontier(gw_classifier_label(c, (size_t)pred));
        if (frontier_threshold > 0 && ptier == 0) {
            float pf = 0;
            for (size_t k = 0; k < nl; k++)
                if (gw_cls_label_is_frontier(gw_classifier_label(c, k)) == 1)
                    pf += probs[k];
            if (pf >= frontier_threshold)
                ptier = 1;
        }
        if (min_conf > 0 && probs[pred] < min_conf) {
            s->n_ambiguous++;
            ptier = 1;
        }
        s->n_local += ptier == 0;
        if (gold_tier >= 0) {
            s->n_tier++;
            s->n_tier_correct += ptier == gold_tier;
            if (gold_tier == 1) {
                s->n_gold_frontier++;
                s->n_frontier_sent_local += ptier == 0;
            } else {
                s->n_gold_local++;
                s->n_local_sent_frontier += ptier == 1;
            }
        }
    }
    /* macro-F1 over the labels that occur as gold or prediction */
    double f1sum = 0;
    size_t nf1 = 0;
    for (size_t l = 0; l < nl; l++) {
        size_t tp = s->confusion[l][l], gold = 0, pred = 0;
        for (size_t m = 0; m < nl; m++) {
            gold += s->confusion[l][m];
            pred += s->confusion[m][l];
        }
        if (gold == 0 && pred == 0)
            continue;
        nf1++;
        if (tp)
            f1sum += 2.0 * (double)tp / (double)(gold + pred);
    }
    s->macro_f1 = nf1 ? f1sum / (double)nf1 : 0;
}

void gw_cls_scores_free(struct gw_cls_scores *s)
{
    free(s->lat_us);
    s->lat_us = NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double gw_cls_scores_latency(struct gw_cls_scores *s, double q)
{
    if (!s->n_calls)
        return 0;
    qsort(s->lat_us, s->n_calls, sizeof(double), cmp_double);
    size_t i = (size_t)(q * (double)(s->n_calls - 1) + 0.5);
    return s->lat_us[i < s->n_calls ? i : s->n_calls - 1];
}

/* ---- C array ------------------------------------------------------------ */

int gw_cls_write_c_array(FILE *f, const uint8_t *p, size_t n)
{
    fprintf(f, "/* Generated by hybridgw-train-builtin from data/routing/train: do not edit. */\n"
               "#include <stddef.h>\n"
               "extern const unsigned char gw__cls_builtin_model[];\n"
               "extern const size_t gw__cls_builtin_model_len;\n"
               "const size_t gw__cls_builtin_model_len = %zu;\n"
               "const unsigned char gw__cls_builtin_model[] =\n\"",
            n);
    size_t col = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = p[i];
        if (b >= 0x20 && b < 0x7f && b != '"' && b != '\\' && b != '?') {
            fputc(b, f);
            col++;
        } else {
            fprintf(f, "\\%03o", b);
            col += 4;
        }
        if (col >= 96 && i + 1 < n) {
            fputs("\"\n\"", f);
            col = 0;
        }
    }
    fputs("\";\n", f);
    return ferror(f) ? -1 : 0;
}
