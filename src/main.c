/*
 * main.c - the hybridgw command line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hybridgw/config.h"
#include "hybridgw/core.h"
#include "hybridgw/log.h"
#include "gateway/serve.h"
#include "ledger/cli.h"
#include "router/cli.h"
#include "router/route_cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "hybridgw %s - hybrid LLM gateway\n"
            "\n"
            "usage:\n"
            "  hybridgw serve -c FILE        run the gateway with config FILE\n"
            "  hybridgw check-config FILE    validate FILE and print a summary\n"
            "  hybridgw route [--config FILE] [--json] < request\n"
            "                                explain the routing decision for a request\n"
            "  hybridgw train --data FILE.jsonl --out MODEL   train the task classifier\n"
            "  hybridgw eval --data FILE.jsonl [--model MODEL] score classifier and router\n"
            "  hybridgw keys create|list|show|update|revoke|rotate|team-set|teams ...\n"
            "                                virtual keys and team budgets (keys help)\n"
            "  hybridgw spend --by key|team|model|tier|backend [--since 7d] [--json]\n"
            "                                spend report from the ledger\n"
            "  hybridgw version              print the version\n"
            "\n"
            "environment:\n"
            "  HYBRIDGW_LOG_LEVEL     error|warn|info|debug (overrides log_level)\n"
            "  HYBRIDGW_DATABASE_URL  the ledger database for keys and spend (or --db URL)\n",
            GW_VERSION);
}

static int check_config(const char *path)
{
    char err[512];
    struct gw_config *c = gw_config_load(path, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("%s: ok\n", path);
    printf("  listen %s%s%s, %u workers\n", c->listen, c->admin_listen ? ", admin " : "",
           c->admin_listen ? c->admin_listen : "", c->workers);
    printf("  %zu keys, %zu backends, %zu models, default tier %s\n", c->nkeys, c->nbackends,
           c->nmodels, gw_tier_str(c->default_tier));
    for (size_t i = 0; i < c->nbackends; i++) {
        const struct gw_backend_conf *b = &c->backends[i];
        printf("  backend %s: tier %s, provider %s, model %s, %zu url(s)\n", b->name,
               gw_tier_str(b->tier), b->provider_name, b->model, b->nurls);
    }
    gw_config_unref(c);
    return 0;
}

int main(int argc, char **argv)
{
    const char *lvl = getenv("HYBRIDGW_LOG_LEVEL");
    if (lvl && gw_log_level_parse(lvl) >= 0)
        gw_log_level = gw_log_level_parse(lvl);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0) {
        const char *path = NULL;
        for (int i = 2; i < argc; i++) {
            if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
                path = argv[++i];
            else {
                fprintf(stderr, "hybridgw serve: unknown argument %s\n", argv[i]);
                return 2;
            }
        }
        if (!path) {
            fprintf(stderr, "hybridgw serve: -c FILE is required\n");
            return 2;
        }
        return gw_serve(path);
    }
    if (strcmp(cmd, "check-config") == 0) {
        if (argc != 3) {
            fprintf(stderr, "usage: hybridgw check-config FILE\n");
            return 2;
        }
        return check_config(argv[2]);
    }
    if (strcmp(cmd, "route") == 0)
        return gw_cmd_route(argc - 1, argv + 1);
    if (strcmp(cmd, "train") == 0)
        return gw_cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0)
        return gw_cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "keys") == 0)
        return gw_cmd_keys(argc - 1, argv + 1);
    if (strcmp(cmd, "spend") == 0)
        return gw_cmd_spend(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("hybridgw %s\n", GW_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "hybridgw: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
