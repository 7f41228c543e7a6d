/*
 * fuzz_json_check.c - gw_json_valid against jansson: both must agree on
 * what is one valid JSON value (jansson with JSON_DECODE_ANY, and inputs
 * without NUL bytes, which jansson rejects in strings by default).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "hybridgw/json_check.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    if (size > 4096 || memchr(data, 0, size))
        return 0; /* jansson treats a NUL byte as the end of input */
    bool ours = gw_json_valid((const char *)data, size);
    json_error_t err;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    bool theirs = j != NULL;
    /* jansson caps nesting at 2048 and we at 128: only compare below ours */
    size_t depth = 0, maxd = 0;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '[' || data[i] == '{')
            maxd = ++depth > maxd ? depth : maxd;
        else if ((data[i] == ']' || data[i] == '}') && depth)
            depth--;
    }
    /* jansson refuses numbers outside int64/double range; RFC 8259 doesn't */
    bool range = !theirs && (strstr(err.text, "too big") || strstr(err.text, "overflow"));
    if (maxd < 100 && !range && ours != theirs)
        abort();
    json_decref(j);
    return 0;
}
