/*
 * json_check.c - validating JSON scanner (see json_check.h).
 *
 * Iterative over an explicit stack of container kinds so hostile nesting
 * can't overflow the C stack; the depth cap makes the stack a fixed array.
 */
#include "hybridgw/json_check.h"

struct scan {
    const unsigned char *p, *end;
};

static void ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool hex4(struct scan *s, unsigned *out)
{
    unsigned v = 0;
    if (s->end - s->p < 4)
        return false;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s->p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return false;
        v = v << 4 | d;
    }
    s->p += 4;
    *out = v;
    return true;
}

/* \uXXXX after the 'u': surrogates must come as a high-low pair. */
static bool uescape(struct scan *s)
{
    unsigned v, lo;
    if (!hex4(s, &v))
        return false;
    if (v >= 0xdc00 && v <= 0xdfff)
        return false;
    if (v >= 0xd800 && v <= 0xdbff) {
        if (s->end - s->p < 2 || s->p[0] != '\\' || s->p[1] != 'u')
            return false;
        s->p += 2;
        if (!hex4(s, &lo) || lo < 0xdc00 || lo > 0xdfff)
            return false;
    }
    return true;
}

/* One UTF-8 sequence starting at a byte >= 0x80. */
static bool utf8(struct scan *s)
{
    unsigned char c = *s->p;
    size_t n;
    unsigned min;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 1; cp = c & 0x1f; min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2; cp = c & 0x0f; min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3; cp = c & 0x07; min = 0x10000;
    } else {
        return false;
    }
    if ((size_t)(s->end - s->p) <= n)
        return false;
    for (size_t i = 1; i <= n; i++) {
        if ((s->p[i] & 0xc0) != 0x80)
            return false;
        cp = (cp << 6) | (s->p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return false;
    s->p += n + 1;
    return true;
}

static bool string(struct scan *s)
{
    s->p++; /* opening quote */
    while (s->p < s->end) {
        unsigned char c = *s->p;
        if (c == '"') {
            s->p++;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c == '\\') {
            s->p++;
            if (s->p >= s->end)
                return false;
            c = *s->p++;
            if (c == 'u') {
                if (!uescape(s))
                    return false;
            } else if (!(c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                         c == 'r' || c == 't')) {
                return false;
            }
            continue;
        }
        if (c >= 0x80) {
            if (!utf8(s))
                return false;
            continue;
        }
        s->p++;
    }
    return false;
}

static bool digits(struct scan *s)
{
    const unsigned char *start = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > start;
}

static bool number(struct scan *s)
{
    if (*s->p == '-')
        s->p++;
    if (s->p >= s->end)
        return false;
    if (*s->p == '0')
        s->p++;
    else if (!digits(s))
        return false;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!digits(s))
            return false;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!digits(s))
            return false;
    }
    return true;
}

static bool literal(struct scan *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return false;
    s->p += n;
    return true;
}

bool gw_json_valid(const char *p, size_t n)
{
    struct scan s = {(const unsigned char *)p, (const unsigned char *)p + n};
    char stack[GW_JSON_MAX_DEPTH]; /* '{' or '[' */
    size_t depth = 0;
    ws(&s);
    for (;;) {
        /* a value is expected here */
        if (s.p >= s.end)
            return false;
        unsigned char c = *s.p;
        if (c == '{' || c == '[') {
            if (depth == GW_JSON_MAX_DEPTH)
                return false;
            stack[depth++] = (char)c;
            s.p++;
            ws(&s);
            if (s.p < s.end && *s.p == (c == '{' ? '}' : ']')) {
                s.p++;
                depth--;
            } else {
                if (c == '{') {
                    if (s.p >= s.end || *s.p != '"' || !string(&s))
                        return false;
                    ws(&s);
                    if (s.p >= s.end || *s.p != ':')
                        return false;
                    s.p++;
                    ws(&s);
                }
                continue; /* the first element's value */
            }
        } else if (c == '"') {
            if (!string(&s))
                return false;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            if (!number(&s))
                return false;
        } else if (!(literal(&s, "true", 4) || literal(&s, "false", 5) || literal(&s, "null", 4))) {
            return false;
        }
        /* after a value: close containers or go to the next element */
        for (;;) {
            ws(&s);
            if (depth == 0)
                return s.p == s.end;
            if (s.p >= s.end)
                return false;
            char top = stack[depth - 1];
            if (*s.p == ',') {
                s.p++;
                ws(&s);
                if (top == '{') {
                    if (s.p >= s.end || *s.p != '"' || !string(&s))
                        return false;
                    ws(&s);
                    if (s.p >= s.end || *s.p != ':')
                        return false;
                    s.p++;
                    ws(&s);
                }
                break; /* next value */
            }
            if (*s.p == (top == '{' ? '}' : ']')) {
                s.p++;
                depth--;
                continue;
            }
            return false;
        }
    }
}
