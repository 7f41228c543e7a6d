/* route_cli.h - `hybridgw route`. */
#ifndef HYBRIDGW_ROUTE_CLI_H
#define HYBRIDGW_ROUTE_CLI_H

/* argv[0] is "route". Returns the exit code. */
int gw_cmd_route(int argc, char **argv);

#endif
