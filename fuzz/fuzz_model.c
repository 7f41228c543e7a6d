/*
 * fuzz_model.c - libFuzzer target for the classifier model reader:
 * arbitrary bytes go through gw_classifier_load_mem; when a model loads,
 * it predicts on a few fixed inputs (the probabilities must be finite and
 * sum to 1). Nothing may crash, leak or read out of bounds.
 *
 * A checksum mismatch stops almost every mutation at the first check, so
 * when the first input byte is odd the harness rewrites the trailing 8
 * bytes with the correct FNV-1a 64 before loading: those inputs reach the
 * header, label, bitmap and weight checks behind it.
 *
 * Seed corpus: fuzz/corpus/model/ (a tiny valid model trained by
 * `hybridgw train --buckets 256 --dim 4` and corrupted copies of it).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router/classifier.h"
#include "router/cls_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void predict_some(const struct gw_classifier *c)
{
    static const char *const texts[] = {
        "write a python function that parses a date",
        "Summarize this article: the council met on Tuesday.",
        "",
        "\xe4\xbd\xa0\xe5\xa5\xbd\xe3\x80\x82 \xff\xfe broken utf-8 \xc3",
    };
    size_t n = gw_classifier_nlabels(c);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct gw_cls_input in;
        float p[GW_CLS_MAX_LABELS];
        gw_cls_input_from_text(texts[i], strlen(texts[i]), &in);
        in.system = GW_STR("You are a helpful assistant. Reply in JSON.");
        in.context[0] = GW_STR("earlier turn");
        in.ncontext = 1;
        int best = gw_classifier_predict(c, &in, p);
        if (best < 0 || (size_t)best >= n)
            abort();
        float sum = 0;
        for (size_t l = 0; l < n; l++) {
            if (!isfinite(p[l]))
                abort();
            sum += p[l];
        }
        if (!(sum > 0.99f && sum < 1.01f))
            abort();
        if (!gw_classifier_label(c, (size_t)best))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    uint8_t *copy = NULL;
    const uint8_t *p = data;
    if (size >= 24 && (data[0] & 1) == 0 && size <= (1u << 22)) {
        /* even first byte: plain input. odd: fix up the checksum */
    } else if (size >= 24 && size <= (1u << 22)) {
        copy = malloc(size);
        if (!copy)
            return 0;
        memcpy(copy, data, size);
        memcpy(copy, GW_CLS_MAGIC, 8); /* the path was chosen; restore the magic */
        uint64_t h = gw_cls_fnv1a64(copy, size - 8);
        for (int i = 0; i < 8; i++)
            copy[size - 8 + i] = (uint8_t)(h >> (8 * i));
        p = copy;
    }
    struct gw_classifier *c = gw_classifier_load_mem(p, size, err, sizeof(err));
    if (c) {
        predict_some(c);
        gw_classifier_free(c);
    } else if (memchr(err, '\0', sizeof(err)) == NULL || err[0] == '\0') {
        abort(); /* a rejection always says why */
    }
    free(copy);
    return 0;
}
