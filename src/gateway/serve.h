/* serve.h - `hybridgw serve`. */
#ifndef HYBRIDGW_SERVE_H
#define HYBRIDGW_SERVE_H

/* Run the gateway until SIGTERM/SIGINT; returns the process exit code. */
int gw_serve(const char *config_path);

#endif
