/*
 * json_check.h - a validating JSON scanner: no DOM, no allocation. Used on
 * every relayed stream event, so a malformed upstream event becomes a clean
 * error event for the client instead of a payload its SDK can't parse.
 */
#ifndef HYBRIDGW_JSON_CHECK_H
#define HYBRIDGW_JSON_CHECK_H

#include "hybridgw/core.h"

#define GW_JSON_MAX_DEPTH 128

/* True when p[0..n) is exactly one JSON value (RFC 8259) with optional
 * surrounding white space, nested at most GW_JSON_MAX_DEPTH deep. Strings
 * must be valid UTF-8 and escapes well formed. */
bool gw_json_valid(const char *p, size_t n);

#endif
