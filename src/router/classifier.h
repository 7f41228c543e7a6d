/*
 * classifier.h - the task classifier: a fastText-style linear model over
 * hashed word n-grams and character n-grams of a conversation, with a
 * softmax over the task labels of the taxonomy
 * (code, summarization, extraction, classification, rewrite, chat,
 * creative, reasoning, planning, judgment).
 *
 * A model is immutable once loaded and may be shared by every worker
 * thread. Prediction allocates nothing on the heap and reads at most a
 * bounded part of a long input (the instruction parts at the start and end
 * of the last user turn), so its cost is bounded whatever the input size.
 */
#ifndef HYBRIDGW_CLASSIFIER_H
#define HYBRIDGW_CLASSIFIER_H

#include <jansson.h>
#include "hybridgw/core.h"

#define GW_CLS_MAX_LABELS 16

struct gw_classifier;

/* The model compiled into the binary (trained at build time from
 * data/routing/train). Never NULL; never freed. */
const struct gw_classifier *gw_classifier_builtin(void);
/* Load a model file written by `hybridgw train` (versioned, checksummed).
 * NULL with a message in err when the file is missing, corrupt or of an
 * unknown version. */
struct gw_classifier *gw_classifier_load(const char *path, char *err, size_t errlen);
/* Same from memory (fuzzed). */
struct gw_classifier *gw_classifier_load_mem(const void *p, size_t n, char *err, size_t errlen);
void gw_classifier_free(struct gw_classifier *c);

size_t gw_classifier_nlabels(const struct gw_classifier *c);
const char *gw_classifier_label(const struct gw_classifier *c, size_t i);
/* Index of a label name, or -1. */
int gw_classifier_label_index(const struct gw_classifier *c, const char *name);

/* The text views the model reads, taken from an OpenAI-style messages array
 * (string or text-part content; other parts ignored). Slices borrow from
 * the JSON. */
struct gw_cls_input {
    gw_str system;      /* the first system/developer message, or empty */
    gw_str last_user;   /* the last user turn */
    gw_str context[4];  /* up to 4 earlier turns, most recent first */
    size_t ncontext;
};
void gw_cls_input_from_messages(json_t *messages, struct gw_cls_input *in);
/* Plain text as a single user turn. */
void gw_cls_input_from_text(const char *text, size_t len, struct gw_cls_input *in);

/* Fill probs[0..nlabels) (summing to 1); return the index of the best label. */
int gw_classifier_predict(const struct gw_classifier *c, const struct gw_cls_input *in,
                          float *probs);

#endif
