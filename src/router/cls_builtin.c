/*
 * cls_builtin.c - the model compiled into the binary.
 *
 * cmake/classifier.cmake trains it at build time (hybridgw-train-builtin,
 * fixed seed, data/routing/train/ *.jsonl), writes it as a C byte array to
 * ${CMAKE_BINARY_DIR}/generated/classifier_builtin.c, adds that file to
 * gwcore and defines GW_CLS_HAVE_BUILTIN. The array is parsed once, on first
 * use, under pthread_once; the model is never freed.
 *
 * A build without the generated file (or a built-in model that fails to
 * load, which the build's own check makes impossible) gets a fallback with
 * all-zero weights: every label has the same probability, so any
 * min_confidence above 1/nlabels makes every request "ambiguous -> frontier",
 * the safe direction. A warning is logged once.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "hybridgw/log.h"
#include "router/cls_internal.h"

#ifdef GW_CLS_HAVE_BUILTIN
extern const unsigned char gw__cls_builtin_model[];
extern const size_t gw__cls_builtin_model_len;
#endif

static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;
static struct gw_classifier *builtin_model;

/* All-zero model over the taxonomy labels. */
static struct gw_classifier *fallback_model(void)
{
    struct gw_classifier *c = gw_calloc(1, sizeof(*c));
    gw_cls_params_default(&c->p);
    c->p.dim = 4;
    c->p.bucket_bits = GW_CLS_MIN_BUCKET_BITS;
    c->nlabels = (uint32_t)GW_ARRAY_LEN(gw_cls_taxonomy_labels);
    for (uint32_t l = 0; l < c->nlabels; l++)
        snprintf(c->labels[l], sizeof(c->labels[l]), "%s", gw_cls_taxonomy_labels[l]);
    c->blocks = gw_calloc(((size_t)1 << c->p.bucket_bits) / 64, sizeof(*c->blocks));
    c->rows = gw_malloc(1);
    c->row_bytes = 4 + c->p.dim;
    c->W = gw_calloc((size_t)c->nlabels * c->p.dim, sizeof(float));
    return c;
}

static void load_builtin(void)
{
#ifdef GW_CLS_HAVE_BUILTIN
    char err[256];
    builtin_model = gw_classifier_load_mem(gw__cls_builtin_model, gw__cls_builtin_model_len, err,
                                           sizeof(err));
    if (builtin_model)
        return;
    gw_log_error("classifier: built-in model does not load (%s); using a uniform fallback", err);
#else
    gw_log_warn("classifier: built without a built-in model; every request is ambiguous");
#endif
    builtin_model = fallback_model();
}

const struct gw_classifier *gw_classifier_builtin(void)
{
    pthread_once(&builtin_once, load_builtin);
    return builtin_model;
}
