/*
 * fuzz_vllm_metrics.c - the vLLM /metrics reader over arbitrary text: no
 * crash, no read past the input, results in range.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "router/router.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    /* an exact-size copy so ASan sees any read past the end */
    char *buf = malloc(size ? size : 1);
    if (size)
        memcpy(buf, data, size);
    struct gw_vllm_load l;
    if (gw_vllm_load_parse(buf, size, "m", &l) == 0) {
        if (l.kv_cache < 0 || l.kv_cache > 1 || isnan(l.waiting) || l.waiting < 0)
            abort();
    }
    free(buf);
    return 0;
}
