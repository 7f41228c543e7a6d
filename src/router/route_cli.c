/*
 * route_cli.c - `hybridgw route`: explain a routing decision offline.
 * Reads a request body (OpenAI or Anthropic JSON) or plain text on stdin
 * and prints every stage's verdict, the decision and the label
 * probabilities. Health and load are assumed fine (offline).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hybridgw/buf.h"
#include "router/route_cli.h"
#include "router/router.h"

static const char default_yaml[] =
    "listen: \"127.0.0.1:0\"\n"
    "backends:\n"
    "  local-model: { tier: local, provider: vllm, url: \"http://127.0.0.1:1\", model: m,"
    " context_window: 32768 }\n"
    "  frontier-model: { tier: frontier, provider: anthropic, url: \"http://127.0.0.1:1\","
    " model: f }\n";

static int usage(void)
{
    fprintf(stderr, "usage: hybridgw route [--config FILE] [--json] [--header NAME:VALUE]... < request\n"
                    "  stdin: a chat completions or messages request body, or plain text\n");
    return 2;
}

struct hdrs {
    char *names[16];
    char *values[16];
    size_t n;
};

static gw_str find_header(void *ud, const char *name)
{
    struct hdrs *h = ud;
    for (size_t i = 0; i < h->n; i++)
        if (strcasecmp(h->names[i], name) == 0)
            return gw_str_c(h->values[i]);
    return GW_STR_NULL;
}

int gw_cmd_route(int argc, char **argv)
{
    const char *cfgpath = NULL;
    bool as_json = false;
    struct hdrs hd = {{0}, {0}, 0};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            cfgpath = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            as_json = true;
        } else if (strcmp(argv[i], "--header") == 0 && i + 1 < argc && hd.n < 16) {
            char *h = argv[++i], *colon = strchr(h, ':');
            if (!colon)
                return usage();
            hd.names[hd.n] = gw_strndup(h, (size_t)(colon - h));
            hd.values[hd.n++] = gw_strdup(colon[1] == ' ' ? colon + 2 : colon + 1);
        } else {
            return usage();
        }
    }
    char err[512];
    struct gw_config *cfg = cfgpath ? gw_config_load(cfgpath, err, sizeof(err))
                                    : gw_config_load_string(default_yaml, strlen(default_yaml),
                                                            "(default)", err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "hybridgw route: %s\n", err);
        return 2;
    }
    struct gw_buf in;
    gw_buf_init(&in, 64u << 20);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
        if (gw_buf_append(&in, chunk, n)) {
            fprintf(stderr, "hybridgw route: input over 64 MiB\n");
            return 2;
        }
    json_t *body = in.len ? json_loadb(in.data, in.len, 0, NULL) : NULL;
    if (body && !json_is_object(json_object_get(body, "messages") ? body : NULL)) {
        json_decref(body);
        body = NULL; /* JSON but not a request: route it as text */
    }
    struct gw_buf tr;
    gw_buf_init(&tr, 0);
    struct gw_route_input ri;
    memset(&ri, 0, sizeof(ri));
    ri.cfg = cfg;
    const char *model = body ? json_string_value(json_object_get(body, "model")) : NULL;
    ri.model = gw_str_c(model ? model : "auto");
    ri.body = body;
    ri.anthropic = body && (json_object_get(body, "system") || json_object_get(body, "max_tokens")) &&
                   !json_object_get(body, "max_completion_tokens");
    ri.text = (gw_str){in.data ? in.data : "", in.len};
    ri.tier_header = find_header(&hd, "x-hybridgw-tier");
    ri.may_force_tier = true;
    ri.header = find_header;
    ri.header_ud = &hd;
    ri.offline = true;
    ri.trace = &tr;
    struct gw_route r;
    int rc = gw_route_decide(&ri, &r);
    const struct gw_classifier *cls = gw_route_classifier(cfg);
    if (as_json) {
        json_t *o = json_object();
        json_object_set_new(o, "ok", json_boolean(rc == 0));
        if (rc == 0) {
            json_object_set_new(o, "tier", json_string(gw_tier_str(r.tier)));
            json_object_set_new(o, "backend", json_string(r.backend->name));
        } else {
            json_object_set_new(o, "status", json_integer(r.err_status));
            json_object_set_new(o, "error", json_string(r.err));
        }
        json_object_set_new(o, "stage", r.stage ? json_string(r.stage) : json_null());
        json_object_set_new(o, "reason", json_string(r.reason));
        json_object_set_new(o, "label", r.label ? json_string(r.label) : json_null());
        json_object_set_new(o, "confidence", json_real(r.confidence));
        json_t *probs = json_object();
        for (size_t i = 0; cls && i < r.nprobs; i++)
            json_object_set_new(probs, gw_classifier_label(cls, i), json_real(r.probs[i]));
        json_object_set_new(o, "probabilities", probs);
        json_object_set_new(o, "classify_us", json_real((double)r.classify_ns / 1e3));
        json_t *lines = json_array();
        char *save, *line = tr.data ? strtok_r(tr.data, "\n", &save) : NULL;
        for (; line; line = strtok_r(NULL, "\n", &save))
            json_array_append_new(lines, json_string(line));
        json_object_set_new(o, "stages", lines);
        char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        free(s);
        json_decref(o);
    } else {
        printf("stages:\n");
        char *save, *line = tr.data ? strtok_r(tr.data, "\n", &save) : NULL;
        for (; line; line = strtok_r(NULL, "\n", &save))
            printf("  %s\n", line);
        if (rc == 0)
            printf("decision: %s, backend %s, stage %s\nreason:   %s\n", gw_tier_str(r.tier),
                   r.backend->name, r.stage, r.reason);
        else
            printf("decision: error %d: %s\n", r.err_status, r.err);
        if (cls && r.nprobs) {
            printf("labels:\n");
            for (size_t i = 0; i < r.nprobs; i++) {
                int bar = (int)(r.probs[i] * 40 + 0.5);
                printf("  %-16s %.3f %.*s\n", gw_classifier_label(cls, i), r.probs[i], bar,
                       "########################################");
            }
            printf("classification: %.1f us\n", (double)r.classify_ns / 1e3);
        }
    }
    gw_buf_free(&tr);
    gw_buf_free(&in);
    json_decref(body);
    for (size_t i = 0; i < hd.n; i++) {
        free(hd.names[i]);
        free(hd.values[i]);
    }
    gw_config_unref(cfg);
    return rc == 0 ? 0 : 1;
}
