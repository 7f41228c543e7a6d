/*
 * cli.c - `hybridgw train` and `hybridgw eval`: flag parsing, progress and
 * report printing around the training and scoring code of cls_train.c.
 *
 * train: loads every --data file (a bad line stops with file:line), splits
 * off a deterministic random --holdout share (default 0.1; 0 trains on
 * everything), trains, writes the model atomically (MODEL.tmp + rename),
 * loads it back and scores it on the held-out rows.
 *
 * eval: scores a model (the built-in one unless --model) on labelled JSONL
 * files: label accuracy, macro-F1, confusion matrix, tier metrics under the
 * taxonomy's default label -> tier table, and per-call latency. Rows whose
 * label is null count for the tier metrics when they carry a tier and are
 * skipped otherwise; the report says how many.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/cli.h"
#include "router/cls_internal.h"

#define MAX_DATA 64

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

static void train_usage(FILE *f)
{
    fprintf(f,
            "usage: hybridgw train --data FILE.jsonl [--data FILE2 ...] --out MODEL [options]\n"
            "  --epochs N        passes over the data (default 30)\n"
            "  --dim D           hidden size, multiple of 4, 4..64 (default 16)\n"
            "  --buckets B       hash buckets, a power of two 2^8..2^24 (default 1048576)\n"
            "  --max-rows N      keep at most N feature rows, by norm (default 100000)\n"
            "  --minn N --maxn N char n-gram lengths; 0 0 = none (default 4 4)\n"
            "  --lr X            initial learning rate, decays linearly to 0 (default 2)\n"
            "  --seed S          random seed; same data + options + seed = same bytes (default 1)\n"
            "  --holdout F       random share held out and scored, 0..0.9 (default 0.1;\n"
            "                    the model is trained on the rest, 0 = train on everything)\n"
            "  --frontier-weight X  loss weight of frontier-label examples (default 1)\n"
            "  --tier-weight X   weight of an extra loss on the tier, -log P(gold tier)\n"
            "                    (default 0 = off)\n"
            "  --dropout X       share of features dropped at random per training step,\n"
            "                    0..0.9 (default 0.8)\n"
            "  --ensemble K      average the logits of K models (seeds S..S+K-1), stored\n"
            "                    as one model of the same size and cost (default 3)\n"
            "  --param NAME=VAL  advanced feature parameters (docs/classifier.md): user_head,\n"
            "                    user_tail, char_head, char_tail, sys_head, sys_tail, ctx_head,\n"
            "                    flags, w_user, w_sys, w_ctx, w_meta, w_char, w_mid\n"
            "  --quiet           print only errors\n");
}

int gw_cmd_train(int argc, char **argv)
{
    const char *data[MAX_DATA];
    size_t ndata = 0;
    const char *out = NULL;
    double holdout = 0.1;
    int quiet = 0;
    struct gw_cls_train_opts o;
    gw_cls_train_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint32_t u;
        double d;
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            train_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "hybridgw train: %s: %s\n", a,
                    strncmp(a, "--", 2) == 0 ? "missing value" : "unexpected argument");
            train_usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--data")) {
            if (ndata == MAX_DATA) {
                fprintf(stderr, "hybridgw train: at most %d --data files\n", MAX_DATA);
                return 2;
            }
            data[ndata++] = v;
        } else if (!strcmp(a, "--out")) {
            out = v;
        } else if (!strcmp(a, "--epochs") && parse_u32(v, 1, 10000, &u) == 0) {
            o.epochs = u;
        } else if (!strcmp(a, "--dim") && parse_u32(v, 4, GW_CLS_MAX_DIM, &u) == 0 && u % 4 == 0) {
            o.p.dim = u;
        } else if (!strcmp(a, "--buckets") && parse_u32(v, 1u << GW_CLS_MIN_BUCKET_BITS,
                                                         1u << GW_CLS_MAX_BUCKET_BITS, &u) == 0 &&
                   (u & (u - 1)) == 0) {
            o.p.bucket_bits = 0;
            while ((1u << o.p.bucket_bits) < u)
                o.p.bucket_bits++;
        } else if (!strcmp(a, "--max-rows") && parse_u32(v, 1, 1u << GW_CLS_MAX_BUCKET_BITS,
                                                          &u) == 0) {
            o.max_rows = u;
        } else if (!strcmp(a, "--minn") && parse_u32(v, 0, GW_CLS_MAX_NGRAM, &u) == 0) {
            o.p.minn = u;
        } else if (!strcmp(a, "--maxn") && parse_u32(v, 0, GW_CLS_MAX_NGRAM, &u) == 0) {
            o.p.maxn = u;
        } else if (!strcmp(a, "--lr") && parse_double(v, 1e-6, 100, &d) == 0) {
            o.lr = (float)d;
        } else if (!strcmp(a, "--seed") && parse_u32(v, 0, UINT32_MAX, &u) == 0) {
            o.seed = u;
        } else if (!strcmp(a, "--holdout") && parse_double(v, 0, 0.9, &d) == 0) {
            holdout = d;
        } else if (!strcmp(a, "--frontier-weight") && parse_double(v, 0.01, 100, &d) == 0) {
            o.frontier_weight = (float)d;
        } else if (!strcmp(a, "--tier-weight") && parse_double(v, 0, 100, &d) == 0) {
            o.tier_weight = (float)d;
        } else if (!strcmp(a, "--dropout") && parse_double(v, 0, 0.9, &d) == 0) {
            o.dropout = (float)d;
        } else if (!strcmp(a, "--ensemble") && parse_u32(v, 1, 16, &u) == 0) {
            o.ensemble = u;
        } else if (!strcmp(a, "--param")) {
            char name[32];
            const char *eq = strchr(v, '=');
            size_t nl = eq ? (size_t)(eq - v) : 0;
            if (!eq || nl >= sizeof(name)) {
                fprintf(stderr, "hybridgw train: --param wants NAME=VALUE, got %s\n", v);
                return 2;
            }
            memcpy(name, v, nl);
            name[nl] = '\0';
            if (gw_cls_params_set(&o.p, name, eq + 1) < 0) {
                fprintf(stderr, "hybridgw train: bad --param %s (unknown name or value out of "
                        "range)\n", v);
                return 2;
            }
        } else {
            int known = !strcmp(a, "--epochs") || !strcmp(a, "--dim") ||
                        !strcmp(a, "--buckets") || !strcmp(a, "--max-rows") ||
                        !strcmp(a, "--minn") || !strcmp(a, "--maxn") || !strcmp(a, "--lr") ||
                        !strcmp(a, "--seed") || !strcmp(a, "--holdout") ||
                        !strcmp(a, "--frontier-weight") || !strcmp(a, "--tier-weight") ||
                        !strcmp(a, "--dropout") || !strcmp(a, "--ensemble");
            if (known)
                fprintf(stderr, "hybridgw train: bad value for %s: %s\n", a, v);
            else
                fprintf(stderr, "hybridgw train: unknown flag %s\n", a);
            train_usage(stderr);
            return 2;
        }
    }
    if (!ndata || !out) {
        fprintf(stderr, "hybridgw train: --data and --out are required\n");
        train_usage(stderr);
        return 2;
    }
    if (o.p.maxn > 0 && (o.p.minn == 0 || o.p.minn > o.p.maxn)) {
        fprintf(stderr, "hybridgw train: need 1 <= --minn <= --maxn, or --minn 0 --maxn 0\n");
        return 2;
    }
    if (o.p.maxn == 0)
        o.p.minn = 0;
    o.progress = quiet ? NULL : stdout;

    char err[512];
    struct gw_cls_dataset ds;
    memset(&ds, 0, sizeof(ds));
    for (size_t i = 0; i < ndata; i++) {
        if (gw_cls_dataset_load(&ds, data[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "hybridgw train: %s\n", err);
            gw_cls_dataset_free(&ds);
            return 2;
        }
    }
    size_t *tr, *te, ntr, nte;
    gw_cls_split(ds.nrows, holdout, o.seed, &tr, &ntr, &te, &nte);
    if (!quiet)
        printf("data: %zu rows from %zu file(s); training on %zu, holding out %zu\n", ds.nrows,
               ds.nfiles, ntr, nte);
    uint8_t *model = NULL;
    size_t len = 0;
    int rc = 0;
    struct gw_classifier *c = NULL;
    if (gw_cls_train(&ds, tr, ntr, &o, &model, &len, err, sizeof(err)) < 0) {
        fprintf(stderr, "hybridgw train: %s\n", err);
        rc = 2;
        goto done;
    }
    c = gw_classifier_load_mem(model, len, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "hybridgw train: the written model does not load: %s\n", err);
        rc = 1;
        goto done;
    }
    {
        size_t tl = strlen(out) + 5;
        char *tmp = gw_malloc(tl);
        snprintf(tmp, tl, "%s.tmp", out);
        FILE *f = fopen(tmp, "wb");
        int ok = f && fwrite(model, 1, len, f) == len;
        if (f && fclose(f) != 0)
            ok = 0;
        if (!ok || rename(tmp, out) != 0) {
            fprintf(stderr, "hybridgw train: cannot write %s: %s\n", out, strerror(errno));
            remove(tmp);
            free(tmp);
            rc = 1;
            goto done;
        }
        free(tmp);
    }
    if (!quiet)
        printf("wrote %s (%zu bytes)\n", out, len);
    if (nte > 0 && !quiet) {
        struct gw_cls_scores s;
        gw_cls_score(c, &ds, te, nte, 0, 0, &s);
        printf("held-out (random %.0f%%, %zu rows): label accuracy %.4f, macro-F1 %.4f, tier "
               "accuracy %.4f, frontier work sent local %.4f, local work sent frontier %.4f\n",
               holdout * 100, nte, s.n_label ? (double)s.n_label_correct / (double)s.n_label : 0,
               s.macro_f1, s.n_tier ? (double)s.n_tier_correct / (double)s.n_tier : 0,
               s.n_gold_frontier ? (double)s.n_frontier_sent_local / (double)s.n_gold_frontier
                                 : 0,
               s.n_gold_local ? (double)s.n_local_sent_frontier / (double)s.n_gold_local : 0);
        gw_cls_scores_free(&s);
    }
done:
    gw_classifier_free(c);
    free(model);
    free(tr);
    free(te);
    gw_cls_dataset_free(&ds);
    return rc;
}

/* ---- eval --------------------------------------------------------------- */

static void eval_usage(FILE *f)
{
    fprintf(f, "usage: hybridgw eval --data FILE.jsonl [--data FILE2 ...] [--model MODEL]\n"
               "                     [--min-confidence X] [--json]\n"
               "  --model MODEL         a file from `hybridgw train` (default: the built-in model)\n"
               "  --min-confidence X    also report tier metrics where a top probability below X\n"
               "                        is ambiguous -> frontier (0..1)\n"
               "  --frontier-threshold X  the tier is frontier when the frontier labels'\n"
               "                        probabilities add up to X or more (0..1)\n"
               "  --json                one JSON object instead of the text report\n");
}

static double ratio(size_t a, size_t b)
{
    return b ? (double)a / (double)b : 0.0;
}

static json_t *tier_json(const struct gw_cls_scores *s)
{
    return json_pack("{s:f, s:f, s:f, s:f, s:I, s:I, s:I, s:I, s:f}", "tier_accuracy",
                     ratio(s->n_tier_correct, s->n_tier), "share_local",
                     ratio(s->n_local, s->n_calls), "frontier_sent_local",
                     ratio(s->n_frontier_sent_local, s->n_gold_frontier), "local_sent_frontier",
                     ratio(s->n_local_sent_frontier, s->n_gold_local), "gold_frontier",
                     (json_int_t)s->n_gold_frontier, "frontier_sent_local_n",
                     (json_int_t)s->n_frontier_sent_local, "gold_local",
                     (json_int_t)s->n_gold_local, "local_sent_frontier_n",
                     (json_int_t)s->n_local_sent_frontier, "ambiguous_share",
                     ratio(s->n_ambiguous, s->n_calls));
}

static void print_tier(const struct gw_cls_scores *s)
{
    printf("tier accuracy             %.4f  (%zu rows)\n", ratio(s->n_tier_correct, s->n_tier),
           s->n_tier);
    printf("share routed local        %.4f\n", ratio(s->n_local, s->n_calls));
    printf("frontier work sent local  %.4f  (%zu of %zu)\n",
           ratio(s->n_frontier_sent_local, s->n_gold_frontier), s->n_frontier_sent_local,
           s->n_gold_frontier);
    printf("local work sent frontier  %.4f  (%zu of %zu)\n",
           ratio(s->n_local_sent_frontier, s->n_gold_local), s->n_local_sent_frontier,
           s->n_gold_local);
}

int gw_cmd_eval(int argc, char **argv)
{
    const char *data[MAX_DATA];
    size_t ndata = 0;
    const char *model = NULL;
    int as_json = 0;
    double min_conf = 0;
    double frontier_threshold = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            as_json = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            eval_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "hybridgw eval: %s: %s\n", a,
                    strncmp(a, "--", 2) == 0 ? "missing value" : "unexpected argument");
            eval_usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--data")) {
            if (ndata == MAX_DATA) {
                fprintf(stderr, "hybridgw eval: at most %d --data files\n", MAX_DATA);
                return 2;
            }
            data[ndata++] = v;
        } else if (!strcmp(a, "--model")) {
            model = v;
        } else if (!strcmp(a, "--min-confidence")) {
            if (parse_double(v, 0, 1, &min_conf) < 0) {
                fprintf(stderr, "hybridgw eval: bad value for --min-confidence: %s\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--frontier-threshold")) {
            if (parse_double(v, 0, 1, &frontier_threshold) < 0) {
                fprintf(stderr, "hybridgw eval: bad value for --frontier-threshold: %s\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "hybridgw eval: unknown flag %s\n", a);
            eval_usage(stderr);
            return 2;
        }
    }
    if (!ndata) {
        fprintf(stderr, "hybridgw eval: --data is required\n");
        eval_usage(stderr);
        return 2;
    }
    char err[512];
    struct gw_classifier *owned = NULL;
    const struct gw_classifier *c;
    if (model) {
        owned = gw_classifier_load(model, err, sizeof(err));
        if (!owned) {
            fprintf(stderr, "hybridgw eval: %s\n", err);
            return 2;
        }
        c = owned;
    } else {
        c = gw_classifier_builtin();
    }
    struct gw_cls_dataset ds;
    memset(&ds, 0, sizeof(ds));
    for (size_t i = 0; i < ndata; i++) {
        if (gw_cls_dataset_load(&ds, data[i], err, sizeof(err)) < 0) {
            fprintf(stderr, "hybridgw eval: %s\n", err);
            gw_cls_dataset_free(&ds);
            gw_classifier_free(owned);
            return 2;
        }
    }
    struct gw_cls_scores s, sc;
    gw_cls_score(c, &ds, NULL, 0, 0, (float)frontier_threshold, &s);
    if (min_conf > 0)
        gw_cls_score(c, &ds, NULL, 0, (float)min_conf, (float)frontier_threshold, &sc);
    double p50 = gw_cls_scores_latency(&s, 0.50), p99 = gw_cls_scores_latency(&s, 0.99);
    size_t nl = gw_classifier_nlabels(c);
    const char *mname = model ? model : "builtin";

    if (as_json) {
        json_t *labels = json_array(), *conf = json_array();
        for (size_t g = 0; g < nl; g++) {
            json_array_append_new(labels, json_string(gw_classifier_label(c, g)));
            json_t *row = json_array();
            for (size_t p = 0; p < nl; p++)
                json_array_append_new(row, json_integer((json_int_t)s.confusion[g][p]));
            json_array_append_new(conf, row);
        }
        json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:o, s:o, s:o, "
                              "s:{s:f, s:f}}",
                              "model", mname, "rows", (json_int_t)ds.nrows, "scored",
                              (json_int_t)s.n_calls, "label_rows", (json_int_t)s.n_label,
                              "null_label_rows", (json_int_t)s.n_null_label, "skipped_rows",
                              (json_int_t)s.n_skipped, "unknown_label_rows",
                              (json_int_t)s.n_unknown_label, "label_accuracy",
                              ratio(s.n_label_correct, s.n_label), "macro_f1", s.macro_f1,
                              "labels", labels, "confusion", conf, "tier", tier_json(&s),
                              "latency_us", "p50", p50, "p99", p99);
        if (o && min_conf > 0)
            json_object_set_new(o, "min_confidence",
                                json_pack("{s:f, s:o}", "threshold", min_conf, "tier",
                                          tier_json(&sc)));
        char *txt = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        if (txt)
            printf("%s\n", txt);
        free(txt);
        json_decref(o);
    } else {
        printf("eval: %zu rows from %zu file(s), model %s (%zu labels)\n", ds.nrows, ds.nfiles,
               mname, nl);
        if (s.n_null_label || s.n_skipped)
            printf("rows with label null: %zu scored on tier only (they carry a tier), %zu "
                   "skipped (no tier either)\n",
                   s.n_null_label, s.n_skipped);
        if (s.n_unknown_label)
            printf("rows whose label the model does not know: %zu (scored on tier only)\n",
                   s.n_unknown_label);
        printf("label accuracy            %.4f  (%zu rows)\n", ratio(s.n_label_correct, s.n_label),
               s.n_label);
        printf("macro-F1                  %.4f\n", s.macro_f1);
        printf("confusion matrix (rows: gold label, columns: predicted):\n%-15s", "");
        for (size_t p = 0; p < nl; p++)
            printf(" %6.6s", gw_classifier_label(c, p));
        printf("\n");
        for (size_t g = 0; g < nl; g++) {
            printf("%-15.15s", gw_classifier_label(c, g));
            for (size_t p = 0; p < nl; p++)
                printf(" %6zu", s.confusion[g][p]);
            printf("\n");
        }
        print_tier(&s);
        printf("latency per call          p50 %.2f us, p99 %.2f us  (%zu calls)\n", p50, p99,
               s.n_calls);
        if (min_conf > 0) {
            printf("with --min-confidence %.2f (below it: ambiguous -> frontier; %.4f of rows):\n",
                   min_conf, ratio(sc.n_ambiguous, sc.n_calls));
            print_tier(&sc);
        }
    }
    gw_cls_scores_free(&s);
    if (min_conf > 0)
        gw_cls_scores_free(&sc);
    gw_cls_dataset_free(&ds);
    gw_classifier_free(owned);
    return 0;
}
