/*
 * cls_tool.c - main() of hybridgw-train-builtin, the build-time tool that
 * trains the built-in model and writes it as C source:
 *
 *   hybridgw-train-builtin OUT.c TRAIN.jsonl...
 *
 * It is built from the classifier's own sources (not from gwcore, which
 * contains the generated file: no dependency cycle). The whole file is
 * empty unless GW_CLS_BUILD_TOOL is defined, so the src/router glob that
 * feeds gwcore does not pick up a second main().
 *
 * Training is deterministic (fixed seed, all rows, default parameters), so
 * a build is reproducible. The written model is loaded back and checked on
 * two obvious prompts before the C file is written; a model that fails the
 * check fails the build.
 */
#ifdef GW_CLS_BUILD_TOOL
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/cls_internal.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: hybridgw-train-builtin OUT.c TRAIN.jsonl...\n");
        return 2;
    }
    char err[512];
    struct gw_cls_dataset ds;
    memset(&ds, 0, sizeof(ds));
    for (int i = 2; i < argc; i++) {
        if (gw_cls_dataset_load(&ds, argv[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "hybridgw-train-builtin: %s\n", err);
            return 2;
        }
    }
    struct gw_cls_train_opts o;
    gw_cls_train_opts_default(&o);
    o.seed = 1;
    size_t *idx = gw_malloc(ds.nrows * sizeof(size_t));
    for (size_t i = 0; i < ds.nrows; i++)
        idx[i] = i;
    uint8_t *model;
    size_t len;
    uint64_t t0 = gw_now_ns();
    if (gw_cls_train(&ds, idx, ds.nrows, &o, &model, &len, err, sizeof(err)) < 0) {
        fprintf(stderr, "hybridgw-train-builtin: %s\n", err);
        return 1;
    }
    free(idx);
    struct gw_classifier *c = gw_classifier_load_mem(model, len, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "hybridgw-train-builtin: model does not load back: %s\n", err);
        return 1;
    }
    static const struct {
        const char *text, *label;
    } checks[] = {
        {"write a python function that reverses a linked list", "code"},
        {"summarize this article in three bullet points: the city council met on tuesday to "
         "discuss the new budget for parks and libraries", "summarization"},
    };
    for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        struct gw_cls_input in;
        float probs[GW_CLS_MAX_LABELS];
        gw_cls_input_from_text(checks[i].text, strlen(checks[i].text), &in);
        int p = gw_classifier_predict(c, &in, probs);
        if (strcmp(gw_classifier_label(c, (size_t)p), checks[i].label) != 0) {
            fprintf(stderr, "hybridgw-train-builtin: sanity check failed: \"%s\" -> %s\n",
                    checks[i].text, gw_classifier_label(c, (size_t)p));
            return 1;
        }
    }
    gw_classifier_free(c);
    FILE *f = fopen(argv[1], "w");
    if (!f || gw_cls_write_c_array(f, model, len) < 0 || fclose(f) != 0) {
        fprintf(stderr, "hybridgw-train-builtin: cannot write %s\n", argv[1]);
        return 1;
    }
    printf("hybridgw-train-builtin: %zu rows, model %zu bytes, %.1f s\n", ds.nrows, len,
           (double)(gw_now_ns() - t0) / 1e9);
    free(model);
    gw_cls_dataset_free(&ds);
    return 0;
}
#else
/* ISO C wants at least one declaration in a translation unit. */
typedef int gw__cls_tool_unused;
#endif
