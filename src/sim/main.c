/*
 * main.c - hybridgw-sim entry point: parse the flags (a bad value exits 2
 * with a one-line message), ignore SIGPIPE, and hand over to the server.
 */
#include <signal.h>
#include <stdio.h>

#include "hybridgw/core.h"
#include "sim.h"
#include "sim_opts.h"
#include "sim_server.h"

int main(int argc, char **argv)
{
    struct sim_opts o;
    char err[320];
    int rc;

    sim_opts_default(&o);
    rc = sim_opts_parse(&o, argc, argv, err, sizeof(err));
    if (rc == 1) {
        fputs(sim_opts_usage(), stdout);
        return 0;
    }
    if (rc == 2) {
        printf("hybridgw-sim %s\n", GW_VERSION);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "hybridgw-sim: %s\n", err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    return sim_server_run(&o);
}
