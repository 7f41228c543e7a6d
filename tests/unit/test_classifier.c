/*
 * test_classifier.c - unit tests for the task classifier (src/router/
 * classifier.c, cls_train.c, cls_builtin.c): feature hashing, input views,
 * deterministic training, the model file (round trip and every kind of
 * corruption) and the built-in model on obvious prompts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "router/classifier.h"
#include "router/cls_internal.h"

/* ---- helpers ------------------------------------------------------------ */

struct fset {
    uint32_t b[8192];
    float w[8192];
    size_t n;
};

static void fset_emit(void *ud, uint32_t b, float w)
{
    struct fset *s = ud;
    if (s->n < GW_ARRAY_LEN(s->b)) {
        s->b[s->n] = b;
        s->w[s->n] = w;
    }
    s->n++;
}

static int fset_has(const struct fset *s, uint32_t b)
{
    for (size_t i = 0; i < s->n && i < GW_ARRAY_LEN(s->b); i++)
        if (s->b[i] == b)
            return 1;
    return 0;
}

/* A tiny labelled data set, in memory. */
static const char *const tiny_rows[] = {
    "{\"label\":\"code\",\"messages\":[{\"role\":\"user\",\"content\":\"write a python function "
    "to parse a csv file\"}]}",
    "{\"label\":\"code\",\"messages\":[{\"role\":\"user\",\"content\":\"fix this javascript bug "
    "in my function\"}]}",
    "{\"label\":\"code\",\"messages\":[{\"role\":\"user\",\"content\":\"sql query to count "
    "users per day\"}]}",
    "{\"label\":\"summarization\",\"messages\":[{\"role\":\"user\",\"content\":\"summarize "
    "this article: the council met on monday\"}]}",
    "{\"label\":\"summarization\",\"messages\":[{\"role\":\"user\",\"content\":\"give me a "
    "short summary of these meeting notes\"}]}",
    "{\"label\":\"summarization\",\"messages\":[{\"role\":\"system\",\"content\":\"You "
    "summarize documents.\"},{\"role\":\"user\",\"content\":\"tl;dr of the report below\"}]}",
    "{\"label\":\"reasoning\",\"messages\":[{\"role\":\"user\",\"content\":\"prove that the "
    "square root of two is irrational\"}]}",
    "{\"label\":\"reasoning\",\"messages\":[{\"role\":\"user\",\"content\":\"a train leaves at "
    "3pm at 60 mph, when does it catch up? show the steps\"}]}",
    "{\"label\":null,\"tier\":\"frontier\",\"messages\":[{\"role\":\"user\",\"content\":\"is "
    "this ethical?\"}]}",
};

static void tiny_dataset(struct gw_cls_dataset *ds)
{
    memset(ds, 0, sizeof(*ds));
    ds->files = gw_malloc(sizeof(char *));
    ds->files[0] = gw_strdup("tiny");
    ds->nfiles = 1;
    ds->cap = GW_ARRAY_LEN(tiny_rows);
    ds->rows = gw_calloc(ds->cap, sizeof(*ds->rows));
    for (size_t i = 0; i < GW_ARRAY_LEN(tiny_rows); i++) {
        json_t *o = json_loads(tiny_rows[i], 0, NULL);
        assert_non_null(o);
        struct gw_cls_row *r = &ds->rows[ds->nrows++];
        r->messages = json_incref(json_object_get(o, "messages"));
        const char *l = json_string_value(json_object_get(o, "label"));
        r->label = l ? gw_strdup(l) : NULL;
        r->tier = l ? -1 : 1;
        r->line = (uint32_t)i + 1;
        json_decref(o);
    }
}

static void tiny_opts(struct gw_cls_train_opts *o)
{
    gw_cls_train_opts_default(o);
    o->p.bucket_bits = 12;
    o->p.dim = 8;
    o->epochs = 20;
    o->lr = 0.5f;
    o->seed = 7;
}

static uint8_t *tiny_model(size_t *len)
{
    struct gw_cls_dataset ds;
    tiny_dataset(&ds);
    struct gw_cls_train_opts o;
    tiny_opts(&o);
    size_t idx[GW_ARRAY_LEN(tiny_rows)];
    for (size_t i = 0; i < ds.nrows; i++)
        idx[i] = i;
    uint8_t *m = NULL;
    char err[256];
    assert_int_equal(gw_cls_train(&ds, idx, ds.nrows, &o, &m, len, err, sizeof(err)), 0);
    gw_cls_dataset_free(&ds);
    return m;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void fix_checksum(uint8_t *m, size_t len)
{
    uint64_t h = gw_cls_fnv1a64(m, len - 8);
    put_u32(m + len - 8, (uint32_t)h);
    put_u32(m + len - 4, (uint32_t)(h >> 32));
}

/* ---- hashing and features ----------------------------------------------- */

static void test_hash_stable(void **state)
{
    (void)state;
    /* FNV-1a 64 reference values */
    assert_true(gw_cls_fnv1a64("", 0) == 0xcbf29ce484222325ull);
    assert_true(gw_cls_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull);
    assert_true(gw_cls_fnv1a64("foobar", 6) == 0x85944171f73967e8ull);
    /* the seeded feature hash is a pure function of its input */
    assert_true(gw_cls_hash_bytes(1, "summarize", 9) == gw_cls_hash_bytes(1, "summarize", 9));
    assert_true(gw_cls_hash_bytes(1, "summarize", 9) != gw_cls_hash_bytes(2, "summarize", 9));

    /* the same text gives the same buckets, run after run */
    struct gw_cls_params p;
    gw_cls_params_default(&p);
    struct gw_cls_input in;
    static struct fset a, b;
    a.n = b.n = 0;
    gw_cls_input_from_text("Write a Python function", 23, &in);
    gw_cls_features(&p, &in, fset_emit, &a);
    gw_cls_input_from_text("write a python function", 23, &in);
    gw_cls_features(&p, &in, fset_emit, &b);
    assert_true(a.n > 0);
    assert_int_equal(a.n, b.n); /* lowercased: same features */
    assert_memory_equal(a.b, b.b, a.n * sizeof(uint32_t));
    for (size_t i = 0; i < a.n; i++)
        assert_true(a.b[i] < (1u << p.bucket_bits));
}

static void test_namespaces_differ(void **state)
{
    (void)state;
    struct gw_cls_params p;
    gw_cls_params_default(&p);
    p.flags &= ~GW_CLS_F_META;
    static struct fset user, sys;
    user.n = sys.n = 0;
    struct gw_cls_input in;
    memset(&in, 0, sizeof(in));
    in.last_user = GW_STR("summarize");
    gw_cls_features(&p, &in, fset_emit, &user);
    memset(&in, 0, sizeof(in));
    in.system = GW_STR("summarize");
    gw_cls_features(&p, &in, fset_emit, &sys);
    assert_true(user.n > 0 && sys.n > 0);
    for (size_t i = 0; i < sys.n; i++)
        assert_false(fset_has(&user, sys.b[i]));
    /* and the system namespace has its own weight */
    assert_true(sys.w[0] == p.w_ns[GW_CLS_NS_SYS]);
}

static void test_long_input_bounded(void **state)
{
    (void)state;
    struct gw_cls_params p;
    gw_cls_params_default(&p);
    size_t n1 = 100 * 1024, n2 = 400 * 1024;
    char *t = gw_malloc(n2);
    for (size_t i = 0; i < n2; i++)
        t[i] = "lorem ipsum dolor sit amet, consectetur "[i % 40];
    memcpy(t, "Summarize this:", 15);
    static struct fset a, b;
    a.n = b.n = 0;
    struct gw_cls_input in;
    gw_cls_input_from_text(t, n1, &in);
    gw_cls_features(&p, &in, fset_emit, &a);
    gw_cls_input_from_text(t, n2, &in);
    gw_cls_features(&p, &in, fset_emit, &b);
    /* only the head and tail windows are read: same count, and small */
    assert_int_equal(a.n, b.n);
    assert_true(a.n < 2000);
    /* a whole-text word of 100 KB (no separators) is bounded too */
    memset(t, 'x', n2);
    a.n = 0;
    gw_cls_input_from_text(t, n2, &in);
    gw_cls_features(&p, &in, fset_emit, &a);
    assert_true(a.n < 2000);
    free(t);
}

static void test_input_from_messages(void **state)
{
    (void)state;
    json_t *m = json_loads("[{\"role\":\"system\",\"content\":\"be brief\"},"
                           "{\"role\":\"user\",\"content\":\"first\"},"
                           "{\"role\":\"assistant\",\"content\":\"answer\"},"
                           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"last\"},"
                           "{\"type\":\"image_url\",\"image_url\":{}},"
                           "{\"type\":\"text\",\"text\":\"more\"}]}]",
                           0, NULL);
    assert_non_null(m);
    struct gw_cls_input in;
    gw_cls_input_from_messages(m, &in);
    assert_true(gw_str_eq_c(in.system, "be brief"));
    assert_true(gw_str_eq_c(in.last_user, "last"));
    assert_int_equal(in.ncontext, 3);
    assert_true(gw_str_eq_c(in.context[0], "more"));
    assert_true(gw_str_eq_c(in.context[1], "answer"));
    assert_true(gw_str_eq_c(in.context[2], "first"));
    json_decref(m);
    /* not an array: empty views, no crash */
    gw_cls_input_from_messages(NULL, &in);
    assert_int_equal(in.last_user.len, 0);
}

/* ---- training and the model file ---------------------------------------- */

static void test_train_deterministic(void **state)
{
    (void)state;
    size_t l1, l2;
    uint8_t *m1 = tiny_model(&l1);
    uint8_t *m2 = tiny_model(&l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(m1, m2, l1);
    free(m1);
    free(m2);
}

static void test_round_trip(void **state)
{
    (void)state;
    size_t len;
    uint8_t *m = tiny_model(&len);
    char err[256];
    struct gw_classifier *a = gw_classifier_load_mem(m, len, err, sizeof(err));
    assert_non_null(a);
    char path[] = "/tmp/test_classifier_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, m, len), (ssize_t)len);
    close(fd);
    struct gw_classifier *b = gw_classifier_load(path, err, sizeof(err));
    unlink(path);
    assert_non_null(b);
    assert_int_equal(gw_classifier_nlabels(a), 10);
    assert_string_equal(gw_classifier_label(a, 0), "code");
    assert_int_equal(gw_classifier_label_index(a, "summarization"), 1);
    assert_int_equal(gw_classifier_label_index(a, "nope"), -1);
    assert_null(gw_classifier_label(a, 10));
    static const char *const texts[] = {"write a python function", "summarize this article",
                                        "prove it step by step", ""};
    for (size_t i = 0; i < GW_ARRAY_LEN(texts); i++) {
        struct gw_cls_input in;
        float pa[GW_CLS_MAX_LABELS], pb[GW_CLS_MAX_LABELS];
        gw_cls_input_from_text(texts[i], strlen(texts[i]), &in);
        int ia = gw_classifier_predict(a, &in, pa);
        int ib = gw_classifier_predict(b, &in, pb);
        assert_int_equal(ia, ib);
        assert_memory_equal(pa, pb, 10 * sizeof(float));
        float sum = 0;
        for (size_t l = 0; l < 10; l++)
            sum += pa[l];
        assert_true(sum > 0.999f && sum < 1.001f);
    }
    /* the tiny model learned its own training rows */
    struct gw_cls_input in;
    float pr[GW_CLS_MAX_LABELS];
    gw_cls_input_from_text("write a python function to parse a csv file", 43, &in);
    assert_string_equal(gw_classifier_label(a, (size_t)gw_classifier_predict(a, &in, pr)),
                        "code");
    gw_classifier_free(a);
    gw_classifier_free(b);
    free(m);
}

static void expect_reject(const uint8_t *m, size_t len, const char *why)
{
    char err[256];
    struct gw_classifier *c = gw_classifier_load_mem(m, len, err, sizeof(err));
    if (c)
        fail_msg("model accepted, expected: %s", why);
    if (!strstr(err, why))
        fail_msg("error \"%s\" does not mention \"%s\"", err, why);
}

static void test_corrupt_rejected(void **state)
{
    (void)state;
    size_t len;
    uint8_t *m = tiny_model(&len);
    uint8_t *c = gw_malloc(len);

    /* a flipped byte anywhere: the checksum catches it */
    for (size_t off = 8 + 4; off < len; off += len / 37 + 1) {
        memcpy(c, m, len);
        c[off] ^= 0x40;
        expect_reject(c, len, "checksum");
    }
    /* truncated at many lengths */
    for (size_t n = 0; n < len; n += n < 64 ? 1 : len / 29 + 1)
        expect_reject(m, n, n < 16 ? "truncated" : "");
    expect_reject(m, len - 1, "checksum");
    /* wrong magic */
    memcpy(c, m, len);
    c[0] = 'X';
    expect_reject(c, len, "magic");
    /* wrong version, even with a valid checksum */
    memcpy(c, m, len);
    put_u32(c + 8, 99);
    fix_checksum(c, len);
    expect_reject(c, len, "version 99");
    /* structural errors behind a valid checksum */
    memcpy(c, m, len);
    put_u32(c + 16, 1000); /* nlabels */
    fix_checksum(c, len);
    expect_reject(c, len, "label count");
    memcpy(c, m, len);
    put_u32(c + 20, 7); /* dim not a multiple of 4 */
    fix_checksum(c, len);
    expect_reject(c, len, "dimension");
    memcpy(c, m, len);
    put_u32(c + 28, 3); /* row count does not match the bitmap */
    fix_checksum(c, len);
    expect_reject(c, len, "rows");
    /* trailing garbage */
    uint8_t *big = gw_malloc(len + 4);
    memcpy(big, m, len - 8);
    memset(big + len - 8, 0, 4);
    fix_checksum(big, len + 4);
    expect_reject(big, len + 4, "unexpected bytes");
    free(big);
    /* a missing file */
    char err[256];
    assert_null(gw_classifier_load("/nonexistent/model.bin", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/model.bin"));
    free(c);
    free(m);
}

/* ---- the built-in model ------------------------------------------------- */

static void test_builtin_obvious(void **state)
{
    (void)state;
    const struct gw_classifier *c = gw_classifier_builtin();
    assert_non_null(c);
    assert_true(c == gw_classifier_builtin());
    assert_int_equal(gw_classifier_nlabels(c), 10);
    if (c->nrows == 0)
        skip(); /* built without cmake/classifier.cmake: uniform fallback */
    static const struct {
        const char *text, *label;
    } cases[] = {
        {"write a python function that checks whether a number is prime", "code"},
        {"Write a Python function that merges two sorted lists.", "code"},
        {"summarize this article: The city council voted on Tuesday to expand the bike lane "
         "network downtown, after months of debate between residents and shop owners.",
         "summarization"},
        {"Summarize this article in three bullet points: Researchers announced a new battery "
         "chemistry that charges in minutes.", "summarization"},
    };
    for (size_t i = 0; i < GW_ARRAY_LEN(cases); i++) {
        struct gw_cls_input in;
        float p[GW_CLS_MAX_LABELS];
        gw_cls_input_from_text(cases[i].text, strlen(cases[i].text), &in);
        int best = gw_classifier_predict(c, &in, p);
        if (strcmp(gw_classifier_label(c, (size_t)best), cases[i].label) != 0)
            fail_msg("\"%s\" -> %s (%.2f), want %s", cases[i].text,
                     gw_classifier_label(c, (size_t)best), p[best], cases[i].label);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_stable),
        cmocka_unit_test(test_namespaces_differ),
        cmocka_unit_test(test_long_input_bounded),
        cmocka_unit_test(test_input_from_messages),
        cmocka_unit_test(test_train_deterministic),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_corrupt_rejected),
        cmocka_unit_test(test_builtin_obvious),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
