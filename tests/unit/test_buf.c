/*
 * test_buf.c - unit tests for the small core modules: the capped buffer
 * (src/core/buf.c), the request arena (src/core/arena.c) and the helpers of
 * src/core/core.c (slices, unit parsing, hex, allocation wrappers).
 *
 * Parsing and escaping are table-driven: each row is an input and the exact
 * result the header promises for it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hybridgw/arena.h"
#include "hybridgw/buf.h"
#include "hybridgw/core.h"

/* ---- gw_buf ------------------------------------------------------------ */

static void test_buf_append(void **state)
{
    (void)state;
    struct gw_buf b;
    gw_buf_init(&b, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.err, 0);
    assert_int_equal(gw_buf_append(&b, "abc", 3), GW_OK);
    assert_int_equal(gw_buf_puts(&b, "def"), GW_OK);
    assert_int_equal(b.len, 6);
    assert_string_equal(b.data, "abcdef");
    /* a zero-length append is fine and keeps the NUL */
    assert_int_equal(gw_buf_append(&b, NULL, 0), GW_OK);
    assert_int_equal(b.len, 6);
    assert_int_equal(b.data[6], '\0');

    /* grow well past the first allocation; contents survive reallocs */
    char chunk[100];
    for (int i = 0; i < 100; i++)
        chunk[i] = (char)('a' + i % 26);
    for (int i = 0; i < 50; i++)
        assert_int_equal(gw_buf_append(&b, chunk, sizeof(chunk)), GW_OK);
    assert_int_equal(b.len, 6 + 5000);
    assert_memory_equal(b.data, "abcdef", 6);
    for (int i = 0; i < 50; i++)
        assert_memory_equal(b.data + 6 + 100 * i, chunk, sizeof(chunk));
    assert_int_equal(b.data[b.len], '\0');
    assert_true(b.alloc > b.len);

    /* reset keeps the memory and forgets the contents */
    size_t alloc = b.alloc;
    gw_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.alloc, alloc);
    assert_string_equal(b.data, "");
    gw_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    /* usable again after free */
    assert_int_equal(gw_buf_puts(&b, "again"), GW_OK);
    assert_string_equal(b.data, "again");
    gw_buf_free(&b);
}

static void test_buf_cap_sticky(void **state)
{
    (void)state;
    struct gw_buf b;
    gw_buf_init(&b, 8);
    assert_int_equal(gw_buf_append(&b, "12345678", 8), GW_OK); /* exactly the cap */
    assert_int_equal(b.len, 8);
    assert_memory_equal(b.data, "12345678", 8);
    assert_int_equal(gw_buf_append(&b, "9", 1), GW_ETOOBIG);
    assert_int_equal(b.err, GW_ETOOBIG);
    assert_int_equal(b.len, 8);
    /* sticky: even an append that would fit fails now */
    assert_int_equal(gw_buf_append(&b, NULL, 0), GW_ETOOBIG);
    assert_int_equal(gw_buf_printf(&b, "%d", 1), GW_ETOOBIG);
    assert_int_equal(gw_buf_json_str(&b, "", 0), GW_ETOOBIG);
    assert_int_equal(b.len, 8);
    /* consume does not clear the error; reset does */
    gw_buf_consume(&b, 4);
    assert_int_equal(b.err, GW_ETOOBIG);
    gw_buf_reset(&b);
    assert_int_equal(b.err, 0);
    assert_int_equal(gw_buf_puts(&b, "abc"), GW_OK);
    assert_string_equal(b.data, "abc");
    gw_buf_free(&b);

    /* one big append over the cap leaves the buffer untouched */
    gw_buf_init(&b, 4);
    assert_int_equal(gw_buf_puts(&b, "ab"), GW_OK);
    assert_int_equal(gw_buf_puts(&b, "cde"), GW_ETOOBIG);
    assert_int_equal(b.len, 2);
    assert_string_equal(b.data, "ab");
    gw_buf_free(&b);

    /* sizes that would overflow len + extra are rejected, not wrapped */
    gw_buf_init(&b, 0);
    assert_int_equal(b.cap, SIZE_MAX);
    assert_int_equal(gw_buf_puts(&b, "x"), GW_OK);
    assert_int_equal(gw_buf_reserve(&b, SIZE_MAX), GW_ETOOBIG);
    assert_int_equal(b.len, 1);
    gw_buf_free(&b);
}

static void test_buf_printf(void **state)
{
    (void)state;
    struct gw_buf b;
    gw_buf_init(&b, 0);
    assert_int_equal(gw_buf_printf(&b, "%s=%d;", "a", 1), GW_OK);
    assert_string_equal(b.data, "a=1;");
    /* longer than the 256-byte stack buffer: the second vsnprintf path */
    char big[1000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(gw_buf_printf(&b, "[%s]", big), GW_OK);
    assert_int_equal(b.len, 4 + 1 + 999 + 1);
    assert_int_equal(b.data[4], '[');
    assert_int_equal(b.data[5], 'z');
    assert_int_equal(b.data[1003], 'z');
    assert_int_equal(b.data[1004], ']');
    assert_int_equal(b.data[1005], '\0');
    gw_buf_free(&b);

    /* printf past the cap: both the short and the long path */
    gw_buf_init(&b, 10);
    assert_int_equal(gw_buf_printf(&b, "%s", "0123456789x"), GW_ETOOBIG);
    assert_int_equal(b.len, 0);
    gw_buf_reset(&b);
    assert_int_equal(gw_buf_printf(&b, "%s", big), GW_ETOOBIG);
    assert_int_equal(b.len, 0);
    gw_buf_free(&b);
}

static void test_buf_json_str(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t len;
        const char *out;
    } cases[] = {
        {"", 0, "\"\""},
        {"plain", 5, "\"plain\""},
        {"a\"b", 3, "\"a\\\"b\""},
        {"a\\b", 3, "\"a\\\\b\""},
        {"l1\nl2\r\tx", 8, "\"l1\\nl2\\r\\tx\""},
        {"\x01\x1f", 2, "\"\\u0001\\u001f\""},
        {"\x7f", 1, "\"\\u007f\""},
        {"nul\0in", 6, "\"nul\\u0000in\""},
        {"caf\xc3\xa9 \xe2\x82\xac", 9, "\"caf\xc3\xa9 \xe2\x82\xac\""}, /* UTF-8 passes */
        {"\"\"", 2, "\"\\\"\\\"\""},
        {"end\\", 4, "\"end\\\\\""},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        struct gw_buf b;
        gw_buf_init(&b, 0);
        assert_int_equal(gw_buf_puts(&b, "<"), GW_OK);
        assert_int_equal(gw_buf_json_str(&b, cases[i].in, cases[i].len), GW_OK);
        assert_int_equal(gw_buf_puts(&b, ">"), GW_OK);
        char want[64];
        snprintf(want, sizeof(want), "<%s>", cases[i].out);
        if (strcmp(b.data, want) != 0)
            fail_msg("case %zu: got %s, want %s", i, b.data, want);
        gw_buf_free(&b);
    }

    /* escaping can grow the output past the cap: a clean error */
    struct gw_buf b;
    gw_buf_init(&b, 8);
    assert_int_equal(gw_buf_json_str(&b, "\n\n\n\n", 4), GW_ETOOBIG);
    assert_int_equal(b.err, GW_ETOOBIG);
    gw_buf_free(&b);
}

static void test_buf_consume(void **state)
{
    (void)state;
    static const struct {
        size_t n;
        const char *left;
    } cases[] = {
        {0, "abcdef"}, {1, "bcdef"}, {5, "f"}, {6, ""}, {100, ""},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        struct gw_buf b;
        gw_buf_init(&b, 0);
        gw_buf_puts(&b, "abcdef");
        gw_buf_consume(&b, cases[i].n);
        assert_int_equal(b.len, strlen(cases[i].left));
        assert_string_equal(b.data, cases[i].left);
        /* appending after a consume continues at the new end */
        gw_buf_puts(&b, "+");
        assert_int_equal(b.data[b.len - 1], '+');
        assert_int_equal(b.len, strlen(cases[i].left) + 1);
        gw_buf_free(&b);
    }
    /* consume on a buffer that never allocated */
    struct gw_buf e;
    gw_buf_init(&e, 0);
    gw_buf_consume(&e, 3);
    assert_int_equal(e.len, 0);
    assert_null(e.data);
    gw_buf_free(&e);
}

/* ---- gw_arena ---------------------------------------------------------- */

static void test_arena_alloc(void **state)
{
    (void)state;
    struct gw_arena a;
    gw_arena_init(&a, 256);
    enum { N = 200 };
    unsigned char *ptrs[N];
    size_t sizes[N];
    for (size_t i = 0; i < N; i++) {
        /* small, odd, exactly a quarter chunk, and large blocks */
        sizes[i] = (i % 7 == 0) ? 1000 + i : (i % 5 == 0) ? 64 : 1 + (i * 13) % 70;
        ptrs[i] = gw_arena_alloc(&a, sizes[i]);
        assert_non_null(ptrs[i]);
        assert_int_equal((uintptr_t)ptrs[i] % 16, 0);
        memset(ptrs[i], (int)(i & 0xff), sizes[i]);
    }
    /* nothing overlapped: every block still holds its own pattern */
    for (size_t i = 0; i < N; i++)
        for (size_t j = 0; j < sizes[i]; j++)
            if (ptrs[i][j] != (unsigned char)(i & 0xff))
                fail_msg("block %zu byte %zu overwritten", i, j);
    /* zero-size allocations are distinct, aligned, non-NULL pointers */
    void *z1 = gw_arena_alloc(&a, 0), *z2 = gw_arena_alloc(&a, 0);
    assert_non_null(z1);
    assert_non_null(z2);
    assert_ptr_not_equal(z1, z2);
    gw_arena_free(&a);
    assert_null(a.head);

    /* chunk_size 0 picks a default and works */
    gw_arena_init(&a, 0);
    assert_true(a.chunk_size > 0);
    assert_non_null(gw_arena_alloc(&a, 10));
    gw_arena_free(&a);
}

static void test_arena_strings(void **state)
{
    (void)state;
    struct gw_arena a;
    gw_arena_init(&a, 128);
    char *s = gw_arena_strndup(&a, "hello world", 5);
    assert_string_equal(s, "hello");
    char *e = gw_arena_strndup(&a, NULL, 0);
    assert_string_equal(e, "");
    char *f = gw_arena_sprintf(&a, "%s-%d-%c", "x", 42, 'y');
    assert_string_equal(f, "x-42-y");
    /* longer than a chunk */
    char *g = gw_arena_sprintf(&a, "%0300d", 7);
    assert_int_equal(strlen(g), 300);
    assert_int_equal(g[299], '7');
    assert_int_equal(g[0], '0');
    /* earlier strings are untouched */
    assert_string_equal(s, "hello");
    assert_string_equal(f, "x-42-y");
    gw_arena_free(&a);
}

static void test_arena_reset(void **state)
{
    (void)state;
    struct gw_arena a;
    gw_arena_init(&a, 512);
    for (int round = 0; round < 5; round++) {
        char *keep = gw_arena_alloc(&a, 32);
        memset(keep, 'k', 32);
        for (int i = 0; i < 100; i++)
            memset(gw_arena_alloc(&a, 40 + (size_t)i), 'x', 40 + (size_t)i);
        memset(gw_arena_alloc(&a, 4000), 'b', 4000); /* a large block */
        for (int i = 0; i < 32; i++)
            assert_int_equal(keep[i], 'k');
        gw_arena_reset(&a);
        /* what survives a reset is empty and reusable: a chunk-sized
         * allocation fits again and keeps its contents */
        char *again = gw_arena_alloc(&a, 100);
        memset(again, 'a', 100);
        assert_int_equal(again[99], 'a');
        gw_arena_reset(&a);
    }
    /* reset of an empty arena, then free after reset (ASan checks leaks) */
    gw_arena_free(&a);
    gw_arena_reset(&a);
    assert_null(a.head);
    gw_arena_init(&a, 64);
    gw_arena_alloc(&a, 8);
    gw_arena_reset(&a);
    assert_non_null(gw_arena_alloc(&a, 8));
    gw_arena_free(&a);
}

/* ---- core.c helpers ---------------------------------------------------- */

static void test_parse_duration(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        uint64_t ms;
    } cases[] = {
        {"10s", GW_OK, 10000},
        {"250ms", GW_OK, 250},
        {"2m", GW_OK, 120000},
        {"2min", GW_OK, 120000},
        {"1h", GW_OK, 3600000},
        {"5", GW_OK, 5000},          /* bare number = seconds */
        {"0", GW_OK, 0},
        {"1.5s", GW_OK, 1500},
        {"0.5ms", GW_OK, 1},         /* rounded to the nearest ms */
        {"1500us", GW_OK, 2},
        {"10 s", GW_OK, 10000},      /* spaces before the unit */
        {"", GW_EPARSE, 0},
        {"s", GW_EPARSE, 0},
        {"ms", GW_EPARSE, 0},
        {"-1s", GW_EPARSE, 0},
        {" 1s", GW_EPARSE, 0},
        {"10x", GW_EPARSE, 0},
        {"10S", GW_EPARSE, 0},       /* units are case-sensitive */
        {"10 s ", GW_EPARSE, 0},
        {"1d", GW_EPARSE, 0},
        {"1e400", GW_EPARSE, 0},     /* out of range for a double */
        {"99999999999999h", GW_EPARSE, 0},
        {".5s", GW_EPARSE, 0},
        {"inf", GW_EPARSE, 0},
        {"nan", GW_EPARSE, 0},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        uint64_t out = 12345;
        int rc = gw_parse_duration_ms(cases[i].in, &out);
        if (rc != cases[i].rc)
            fail_msg("\"%s\": rc %d, want %d", cases[i].in, rc, cases[i].rc);
        if (rc == GW_OK && out != cases[i].ms)
            fail_msg("\"%s\": %llu ms, want %llu", cases[i].in, (unsigned long long)out,
                     (unsigned long long)cases[i].ms);
        if (rc != GW_OK && out != 12345)
            fail_msg("\"%s\": output written on error", cases[i].in);
    }
    uint64_t out;
    assert_int_equal(gw_parse_duration_ms(NULL, &out), GW_EPARSE);
}

static void test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        uint64_t bytes;
    } cases[] = {
        {"1024", GW_OK, 1024},
        {"0", GW_OK, 0},
        {"10B", GW_OK, 10},
        {"1k", GW_OK, 1000},
        {"1KB", GW_OK, 1000},
        {"1K", GW_OK, 1024},
        {"32KiB", GW_OK, 32768},
        {"1.5KiB", GW_OK, 1536},
        {"8MiB", GW_OK, 8388608},
        {"2M", GW_OK, 2097152},
        {"1MB", GW_OK, 1000000},
        {"1G", GW_OK, 1073741824ull},
        {"1GiB", GW_OK, 1073741824ull},
        {"3GB", GW_OK, 3000000000ull},
        {"64 KiB", GW_OK, 65536},
        {"", GW_EPARSE, 0},
        {"KiB", GW_EPARSE, 0},
        {"-1", GW_EPARSE, 0},
        {"1TB", GW_EPARSE, 0},
        {"1kib", GW_EPARSE, 0},
        {"1 KiB ", GW_EPARSE, 0},
        {"1e16", GW_EPARSE, 0},      /* over the 1e15 sanity cap */
        {"2000000GiB", GW_EPARSE, 0},
        {"abc", GW_EPARSE, 0},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        uint64_t out = 777;
        int rc = gw_parse_size(cases[i].in, &out);
        if (rc != cases[i].rc)
            fail_msg("\"%s\": rc %d, want %d", cases[i].in, rc, cases[i].rc);
        if (rc == GW_OK && out != cases[i].bytes)
            fail_msg("\"%s\": %llu bytes, want %llu", cases[i].in, (unsigned long long)out,
                     (unsigned long long)cases[i].bytes);
        if (rc != GW_OK && out != 777)
            fail_msg("\"%s\": output written on error", cases[i].in);
    }
    uint64_t out;
    assert_int_equal(gw_parse_size(NULL, &out), GW_EPARSE);
}

static void test_hex(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"", 0, ""},
        {"\x00", 1, "00"},
        {"\xff", 1, "ff"},
        {"\x01\x23\x45\x67\x89\xab\xcd\xef", 8, "0123456789abcdef"},
        {"\x10\x0f\xa0", 3, "100fa0"},
        {"AZ", 2, "415a"},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        char out[40];
        memset(out, '#', sizeof(out));
        gw_hex(cases[i].in, cases[i].n, out);
        assert_string_equal(out, cases[i].out);
        /* exactly 2n + 1 bytes written */
        assert_int_equal(out[2 * cases[i].n + 1], '#');
    }
}

static void test_str_helpers(void **state)
{
    (void)state;
    static const struct {
        const char *a, *b;
        bool eq, ieq;
    } cases[] = {
        {"abc", "abc", true, true},
        {"abc", "ABC", false, true},
        {"Content-Type", "content-type", false, true},
        {"abc", "abd", false, false},
        {"abc", "ab", false, false},
        {"", "", true, true},
        {"", "x", false, false},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        gw_str a = gw_str_c(cases[i].a), b = gw_str_c(cases[i].b);
        assert_int_equal(gw_str_eq(a, b), cases[i].eq);
        assert_int_equal(gw_str_eq_c(a, cases[i].b), cases[i].eq);
        assert_int_equal(gw_str_ieq(a, b), cases[i].ieq);
        assert_int_equal(gw_str_ieq_c(a, cases[i].b), cases[i].ieq);
    }
    /* NULL slices compare equal to empty ones */
    gw_str n = gw_str_c(NULL);
    assert_null(n.p);
    assert_int_equal(n.len, 0);
    assert_true(gw_str_eq(n, GW_STR("")));
    assert_true(gw_str_eq(GW_STR_NULL, GW_STR("")));
    /* a slice is compared by its length, not up to a NUL */
    gw_str part = {"abcdef", 3};
    assert_true(gw_str_eq_c(part, "abc"));
    assert_false(gw_str_eq_c(part, "abcdef"));
}

static void test_alloc_wrappers(void **state)
{
    (void)state;
    char *s = gw_strdup("hybrid");
    assert_string_equal(s, "hybrid");
    free(s);
    s = gw_strndup("gateway", 4);
    assert_string_equal(s, "gate");
    free(s);
    s = gw_strndup("", 0);
    assert_string_equal(s, "");
    free(s);
    /* zero sizes still give a freeable, non-NULL pointer */
    void *p = gw_malloc(0);
    assert_non_null(p);
    p = gw_realloc(p, 0);
    assert_non_null(p);
    free(p);
    unsigned char *z = gw_calloc(16, 4);
    for (int i = 0; i < 64; i++)
        assert_int_equal(z[i], 0);
    z = gw_realloc(z, 128);
    for (int i = 0; i < 64; i++)
        assert_int_equal(z[i], 0);
    free(z);
    p = gw_calloc(0, 0);
    assert_non_null(p);
    free(p);
}

static void test_random_and_clock(void **state)
{
    (void)state;
    unsigned char a[32], b[32];
    gw_random_bytes(a, sizeof(a));
    gw_random_bytes(b, sizeof(b));
    /* equal only with probability 2^-256 */
    assert_memory_not_equal(a, b, sizeof(a));
    gw_random_bytes(a, 0);
    uint64_t t1 = gw_now_ns(), t2 = gw_now_ns();
    assert_true(t2 >= t1);
    assert_true(gw_wall_ns() > 1500000000ull * 1000000000ull); /* after 2017 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_append),
        cmocka_unit_test(test_buf_cap_sticky),
        cmocka_unit_test(test_buf_printf),
        cmocka_unit_test(test_buf_json_str),
        cmocka_unit_test(test_buf_consume),
        cmocka_unit_test(test_arena_alloc),
        cmocka_unit_test(test_arena_strings),
        cmocka_unit_test(test_arena_reset),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_str_helpers),
        cmocka_unit_test(test_alloc_wrappers),
        cmocka_unit_test(test_random_and_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
