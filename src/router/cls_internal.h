/*
 * cls_internal.h - internals of the task classifier shared by inference
 * (classifier.c), training and evaluation (cls_train.c), the built-in model
 * (cls_builtin.c), the build-time training tool (cls_tool.c), the CLI
 * (cli.c), the unit tests and the fuzz target. Not a public API.
 *
 * The model
 * ---------
 * Features are hashed into 2^bucket_bits buckets. Each feature has a weight
 * (its namespace weight: last user turn, system prompt, earlier turns, meta).
 * The hidden vector is the weighted mean of the feature rows (dim floats);
 * logits = W * hidden + bias; softmax over the labels.
 *
 * Only the rows that training touched (at most max_rows of them, those with
 * the largest norm) are stored, int8-quantized with one float scale per row.
 * A bucket's row is found through a rank directory: one block per 64 buckets
 * holding the bucket bitmap and the number of stored rows before the block.
 * A bucket without a row contributes a zero vector (it still counts in the
 * mean, so an input full of unknown n-grams is less confident).
 *
 * File format (all integers and floats little-endian)
 * ---------------------------------------------------
 *   0   magic      8 bytes "HGWCLS\r\n"
 *   8   u32        format version (GW_CLS_FORMAT_VERSION)
 *  12   u32        header bytes that follow (the fields below up to labels)
 *       u32        nlabels, dim, bucket_bits, nrows
 *       u32        minn, maxn, user_head, user_tail, char_head, char_tail,
 *                  sys_head, sys_tail, ctx_head, flags
 *       f32        w_user, w_sys, w_ctx, w_meta, w_char, w_mid
 *       u32        epochs, seed; f32 lr  (training record, informative)
 *       labels     nlabels x (u8 length, bytes)
 *       bitmap     2^bucket_bits / 8 bytes
 *       rows       nrows x (f32 scale, dim x i8)
 *       W          nlabels x dim f32
 *       bias       nlabels f32
 *       u64        FNV-1a 64 of every byte before it
 */
#ifndef HYBRIDGW_CLS_INTERNAL_H
#define HYBRIDGW_CLS_INTERNAL_H

#include <stdint.h>
#include <stdio.h>

#include "router/classifier.h"

#define GW_CLS_MAGIC "HGWCLS\r\n"
#define GW_CLS_FORMAT_VERSION 1u
#define GW_CLS_MAX_DIM 64
#define GW_CLS_MIN_BUCKET_BITS 8
#define GW_CLS_MAX_BUCKET_BITS 24
#define GW_CLS_MAX_LABEL_LEN 31
#define GW_CLS_MAX_NGRAM 6
#define GW_CLS_MAX_WINDOW 16384 /* cap on every window parameter, bytes */

/* Feature namespaces: each has its own hash seed, so the same word in the
 * system prompt and in the user turn are different features. */
enum gw_cls_ns {
    GW_CLS_NS_USER = 0,
    GW_CLS_NS_SYS = 1,
    GW_CLS_NS_CTX = 2,
    GW_CLS_NS_META = 3,
    GW_CLS_NS_COUNT
};

/* flags */
#define GW_CLS_F_SYS_CHARS 0x1u   /* char n-grams in the system prompt too */
#define GW_CLS_F_PUNCT 0x2u       /* one feature per distinct ASCII punctuation char */
#define GW_CLS_F_META 0x4u        /* length / turn-count features */
#define GW_CLS_F_ZONES 0x8u       /* zone-tagged copies of head/tail words */
#define GW_CLS_F_KNOWN 0xfu

/* Everything that decides which features an input has and how they are
 * weighted. Stored in the model file: a model always reads inputs the way
 * it was trained. */
struct gw_cls_params {
    uint32_t dim;          /* hidden size, 4..GW_CLS_MAX_DIM, multiple of 4 */
    uint32_t bucket_bits;  /* 2^bucket_bits hash buckets */
    uint32_t minn, maxn;   /* char n-gram lengths in characters; minn 0 = none */
    uint32_t user_head;    /* bytes read from the start of the last user turn */
    uint32_t user_tail;    /* ... and from its end */
    uint32_t char_head;    /* head zone of the user turn (bytes): char n-grams, full weight */
    uint32_t char_tail;    /* tail zone (bytes from the end) */
    uint32_t sys_head, sys_tail; /* window of the system prompt */
    uint32_t ctx_head;     /* bytes read from each earlier turn */
    uint32_t flags;        /* GW_CLS_F_* */
    float w_ns[GW_CLS_NS_COUNT]; /* weight of a feature per namespace */
    float w_char;          /* char n-gram weight relative to a word of its namespace */
    float w_mid;           /* weight of user-turn words outside the head/tail zones */
};

/* Set one parameter by name ("char_head", "w_sys", ...) from a string: the
 * advanced `hybridgw train --param name=value`. 0, or -1 if the name is
 * unknown or the value out of range. */
int gw_cls_params_set(struct gw_cls_params *p, const char *name, const char *value);

/* Defaults used by `hybridgw train` and the built-in model. */
void gw_cls_params_default(struct gw_cls_params *p);

/* One block of the rank directory: rows stored before this block, and which
 * of the block's 64 buckets have a row. */
struct gw_cls_block {
    uint32_t rank;
    uint32_t pad;
    uint64_t bits;
};

struct gw_classifier {
    struct gw_cls_params p;
    uint32_t nlabels;
    uint32_t nrows;
    char labels[GW_CLS_MAX_LABELS][GW_CLS_MAX_LABEL_LEN + 1];
    struct gw_cls_block *blocks; /* 2^bucket_bits / 64 (at least 1) */
    uint8_t *rows;               /* nrows x row_bytes: f32 scale, dim x i8 */
    size_t row_bytes;
    float *W;                    /* nlabels x dim */
    float bias[GW_CLS_MAX_LABELS];
    uint32_t epochs, seed;       /* training record */
    float lr;
};

/* Called once per feature: bucket index and weight. */
typedef void (*gw_cls_emit_fn)(void *ud, uint32_t bucket, float weight);

/* Emit every feature of an input under parameters p. Reads at most the
 * windows of p; allocates nothing. */
void gw_cls_features(const struct gw_cls_params *p, const struct gw_cls_input *in,
                     gw_cls_emit_fn emit, void *ud);

/* The hash of one feature before it is reduced to a bucket (exposed for the
 * tests: stable across builds and platforms). kind: 0 word, 1 bigram of
 * (a, b), 2 char n-gram, 3 punctuation, 4 meta. */
uint64_t gw_cls_hash_bytes(uint64_t seed, const void *p, size_t n);

/* FNV-1a 64, the file checksum. */
#define gw_cls_fnv1a64 gw_fnv1a64 /* the model's checksum and word hashes (core.h) */

/* Default label -> tier table of TAXONOMY.md: 1 frontier, 0 local, and
 * 1 (frontier) for a label the taxonomy does not know. */
int gw_cls_label_is_frontier(const char *label);

/* The taxonomy's ten labels in canonical order. */
extern const char *const gw_cls_taxonomy_labels[10];

/* ---- training (cls_train.c) ------------------------------------------- */

/* One labelled example as training sees it: its features, pre-extracted. */
struct gw_cls_example {
    uint32_t *fb;      /* buckets */
    float *fw;         /* weights */
    uint32_t nf;
    int label;         /* index into the label set, -1 = none */
    int tier;          /* gold tier: 0 local, 1 frontier, -1 unknown */
    const char *src;   /* file name (borrowed from the dataset) */
    uint32_t line;     /* line in that file */
};

/* A JSONL data set. Rows keep their messages so that evaluation runs the
 * real input path; training pre-extracts features. */
struct gw_cls_row {
    json_t *messages;
    char *label;       /* NULL when the file has "label": null */
    int tier;          /* 0 local, 1 frontier, -1 none */
    uint32_t file;     /* index into files */
    uint32_t line;
};

struct gw_cls_dataset {
    struct gw_cls_row *rows;
    size_t nrows, cap;
    char **files;
    size_t nfiles;
};

/* Append the rows of a JSONL file. 0, or -1 with "file:line: why" in err. */
int gw_cls_dataset_load(struct gw_cls_dataset *ds, const char *path, char *err, size_t errlen);
void gw_cls_dataset_free(struct gw_cls_dataset *ds);

struct gw_cls_train_opts {
    struct gw_cls_params p;
    uint32_t epochs;
    float lr;
    uint64_t seed;
    uint32_t max_rows;   /* cap on stored rows (model size) */
    float frontier_weight; /* loss weight of examples with a frontier label (1 = plain) */
    float tier_weight;   /* weight of the auxiliary tier loss -log P(gold tier) (0 = off) */
    float dropout;       /* share of an example's features dropped per step (0 = off) */
    uint32_t ensemble;   /* members (seeds seed, seed+1, ...) whose logits are averaged
                          * into one model of dim nlabels rounded up to 4; 1 = plain */
    FILE *progress;      /* NULL = quiet */
};
void gw_cls_train_opts_default(struct gw_cls_train_opts *o);

/* Train on rows[idx[0..n)] of ds and return the serialized model file in
 * *out (gw_malloc'ed, *outlen bytes). Labels are the taxonomy's ten in order,
 * followed by any other label the rows use (at most GW_CLS_MAX_LABELS).
 * 0, or -1 with a message. Deterministic for equal inputs and options. */
int gw_cls_train(const struct gw_cls_dataset *ds, const size_t *idx, size_t n,
                 const struct gw_cls_train_opts *o, uint8_t **out, size_t *outlen,
                 char *err, size_t errlen);

/* Scores of a model on rows of a data set (see `hybridgw eval`). */
struct gw_cls_scores {
    size_t n_label;          /* rows scored on labels */
    size_t n_label_correct;
    size_t n_tier;           /* rows with a gold tier */
    size_t n_tier_correct;
    size_t n_local;          /* rows routed local */
    size_t n_gold_frontier, n_frontier_sent_local;
    size_t n_gold_local, n_local_sent_frontier;
    size_t n_ambiguous;      /* below min_confidence (counted frontier) */
    size_t n_skipped;        /* no usable label and no tier */
    size_t n_unknown_label;  /* gold label not among the model's labels */
    size_t n_null_label;     /* label null but a tier */
    size_t confusion[GW_CLS_MAX_LABELS][GW_CLS_MAX_LABELS]; /* [gold][pred] */
    double macro_f1;
    double *lat_us;          /* per-call latency, n_calls entries (gw_malloc'ed) */
    size_t n_calls;
};
/* Score rows[idx[0..n)] (idx NULL = all rows). min_conf 0 = off. */
/* frontier_threshold > 0: the predicted tier is frontier also when the
 * probabilities of the frontier labels add up to at least it (the router's
 * router.frontier_threshold). */
void gw_cls_score(const struct gw_classifier *c, const struct gw_cls_dataset *ds,
                  const size_t *idx, size_t n, float min_conf, float frontier_threshold,
                  struct gw_cls_scores *s);
void gw_cls_scores_free(struct gw_cls_scores *s);
/* Quantile q in [0,1] of the latencies (sorts them). */
double gw_cls_scores_latency(struct gw_cls_scores *s, double q);

/* Deterministic random split: fill train/test index arrays (gw_malloc'ed). */
void gw_cls_split(size_t n, double holdout, uint64_t seed, size_t **train, size_t *ntrain,
                  size_t **test, size_t *ntest);

/* Write a model as a C source defining gw__cls_builtin_model[] and
 * gw__cls_builtin_model_len. 0 or -1 (errno set). */
int gw_cls_write_c_array(FILE *f, const uint8_t *p, size_t n);

#endif
