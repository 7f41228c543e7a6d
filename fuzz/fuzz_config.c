/*
 * fuzz_config.c - libFuzzer target for the configuration loader: arbitrary
 * bytes go through gw_config_load_string (libyaml, schema checks, ${VAR}
 * interpolation, URL and key parsing) and, NUL-terminated, straight through
 * gw_config_interpolate. Nothing may crash, leak or read out of bounds.
 *
 * A few variables are set once so that interpolation takes both the "set"
 * and the "unset" paths; FUZZ_UNSET is never set.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hybridgw/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setenv("FUZZ_HOST", "127.0.0.1", 1);
    setenv("FUZZ_KEY", "test", 1);
    setenv("FUZZ_EMPTY", "", 1);
    setenv("FUZZ_URL", "http://10.0.0.1:8000/v1/", 1);
    unsetenv("FUZZ_UNSET");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[512];
    struct gw_config *c = gw_config_load_string((const char *)data, size, "fuzz", err,
                                                 sizeof(err));
    if (c) {
        /* Exercise the lookups on whatever loaded. */
        for (size_t i = 0; i < c->nmodels; i++)
            gw_config_resolve_model(c, c->models[i].name, strlen(c->models[i].name));
        gw_config_resolve_model(c, (const char *)data, size < 64 ? size : 64);
        gw_config_unref(gw_config_ref(c));
        gw_config_unref(c);
    } else if (memchr(err, '\0', sizeof(err)) == NULL) {
        abort(); /* the message must always be terminated */
    }

    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    free(gw_config_interpolate(s, err, sizeof(err)));
    free(s);
    return 0;
}
