/*
 * sim_opts.h - everything that turns text into simulator settings: command
 * line flags, fault specs (`--fault`, `x-sim-fault`, `[sim:fault=...]`),
 * in-prompt directives, and the JSON body of POST /sim/config.
 *
 * Fault spec grammar (comma-separated items, at most one kind):
 *   none                   no fault
 *   NNN | status=NNN       answer NNN (400..599) with a dialect error body
 *   retry_after=S          with a status: add `retry-after: S`
 *   stall[@N]              send the head and N events, then stop writing
 *                          forever (N defaults to 0: not even the head)
 *   disconnect[@N]         drop the connection after N events (default 0)
 *   malformed[@N]          after N events send one event that is not JSON,
 *                          then go on (default 1)
 *   error[@N]              after N events send a dialect error event and
 *                          end the stream (default 1); with status=NNN the
 *                          status picks the error type (default 500 for
 *                          OpenAI, 529 overloaded_error for Anthropic)
 *   slow[=TPS]             pace at TPS tokens/s (default 2); combines with
 *                          any of the above
 * For non-streaming requests an "event" is half of the body: stall@1 and
 * disconnect@1 send the head and a partial body, malformed sends a broken
 * body.
 */
#ifndef HYBRIDGW_SIM_OPTS_H
#define HYBRIDGW_SIM_OPTS_H

#include "sim.h"
#include "sim_out.h"

/* Parse spec[0..len) into *f. Returns 0, or -1 with a message in err. */
int sim_fault_parse(const char *spec, size_t len, struct sim_fault *f,
                    char *err, size_t errlen);
/* Write the canonical text of a fault ("none", "status=429,retry_after=2"). */
void sim_fault_format(const struct sim_fault *f, char *buf, size_t n);
/* True when the fault changes anything. */
bool sim_fault_active(const struct sim_fault *f);

/* Defaults for every flag (see sim_opts_usage()). */
void sim_opts_default(struct sim_opts *o);
/* Parse argv into *o (which holds defaults). Returns 0 to run, 1 for
 * --help, 2 for --version (the caller prints), or -1 on a bad flag or value
 * with a one-line message in err. Model names keep pointing into argv. */
int sim_opts_parse(struct sim_opts *o, int argc, char **argv, char *err, size_t errlen);
/* The --help text. */
const char *sim_opts_usage(void);

/* Scan the last user message text for `[sim:key=value]` directives and the
 * `sim:tool_call` marker. Returns 0, or -1 with a message in err for an
 * unknown key or a bad value (the request then gets a 400). */
int sim_directives_parse(const char *text, size_t len, struct sim_directives *d,
                         char *err, size_t errlen);
void sim_directives_init(struct sim_directives *d);

/* Apply a POST /sim/config JSON object to *k. All-or-nothing: on any
 * unknown key or bad value *k is untouched and -1 is returned with a
 * message in err. */
int sim_knobs_apply_json(struct sim_knobs *k, const char *body, size_t len,
                         char *err, size_t errlen);
/* Render the knobs as a JSON object. */
void sim_knobs_to_json(const struct sim_knobs *k, struct sim_out *o);

#endif
