/*
 * sim_req.h - turn a request body of either dialect into a struct sim_req:
 * validation with the errors the real servers give (vLLM for the OpenAI
 * dialect, the Anthropic API for Messages), the prompt token estimate, the
 * system-prompt share of it, the content hash that seeds the generated text,
 * the first tool's name and generated arguments, and the directives found in
 * the last user message.
 *
 * Token estimate: ceil(characters of all message text / 4) + 4 per message
 * (the Anthropic `system` prompt counts as one message). Characters are
 * UTF-8 code points. Text is: string contents, text parts/blocks,
 * tool_result contents, tool call arguments and tool_use inputs (the
 * characters of their string values).
 */
#ifndef HYBRIDGW_SIM_REQ_H
#define HYBRIDGW_SIM_REQ_H

#include "sim.h"

/* Parse body[0..len) as a request of dialect d. With count_only (the
 * Anthropic count_tokens endpoint) max_tokens and stream are not required
 * or used. seed feeds the generated tool arguments. Returns 0, or -1 with
 * *e filled (status 400 and a message in the dialect's wording). */
int sim_req_parse(struct sim_req *rq, enum sim_dialect d, const char *body, size_t len,
                  bool count_only, uint64_t seed, struct sim_err *e);

/* Check the request against the context window max_model_len. Returns 0, or
 * -1 with *e filled (400, vLLM or Anthropic wording). */
int sim_req_check_len(const struct sim_req *rq, uint32_t max_model_len, struct sim_err *e);

/* Number of UTF-8 code points in s[0..n) (bytes that are not continuation
 * bytes). */
size_t sim_utf8_len(const char *s, size_t n);

#endif
