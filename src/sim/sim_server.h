/*
 * sim_server.h - the simulator's I/O side: one libuv loop and one
 * gw_http_server per worker thread (SO_REUSEPORT on one port), the HTTP
 * handlers, token pacing with uv timers, backpressure, the process-wide
 * FIFO admission queue behind --max-concurrency, and shutdown on
 * SIGINT/SIGTERM.
 */
#ifndef HYBRIDGW_SIM_SERVER_H
#define HYBRIDGW_SIM_SERVER_H

#include "sim.h"

/* Listen as o says, print the `listening on` line, serve until SIGINT or
 * SIGTERM, then close everything. Returns the process exit code: 0 after a
 * clean shutdown, 1 when the server could not start (message on stderr).
 * o must stay valid for the whole call. */
int sim_server_run(const struct sim_opts *o);

#endif
