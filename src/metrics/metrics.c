/*
 * metrics.c - per-worker registries merged at scrape (see metrics.h).
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "hybridgw/metrics.h"

struct gw_series {
    const struct gw_metric_family *fam;
    char *key;                 /* label values joined by \x1f */
    char *values[GW_METRIC_MAX_LABELS];
    _Atomic double value;      /* counter / gauge; histogram sum */
    _Atomic uint64_t count;    /* histogram count */
    _Atomic uint64_t *buckets; /* histogram: per-bucket (non-cumulative) counts */
    uint32_t hash;
};

struct gw_metrics {
    pthread_mutex_t lock;      /* guards the table's shape, not the values */
    struct gw_series **slots;  /* open addressing */
    size_t nslots, nseries;
};

static uint32_t hash_key(const struct gw_metric_family *f, const char *key)
{
    uint32_t h = 2166136261u;
    for (const char *p = f->name; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

struct gw_metrics *gw_metrics_new(void)
{
    struct gw_metrics *m = gw_calloc(1, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    m->nslots = 256;
    m->slots = gw_calloc(m->nslots, sizeof(*m->slots));
    return m;
}

static void series_free(struct gw_series *s)
{
    free(s->key);
    for (size_t i = 0; i < GW_METRIC_MAX_LABELS; i++)
        free(s->values[i]);
    free((void *)s->buckets);
    free(s);
}

void gw_metrics_free(struct gw_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nslots; i++)
        if (m->slots[i])
            series_free(m->slots[i]);
    free(m->slots);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static size_t nlabels(const struct gw_metric_family *f)
{
    size_t n = 0;
    while (n < GW_METRIC_MAX_LABELS && f->labels[n])
        n++;
    return n;
}

static struct gw_series **find_slot(struct gw_series **slots, size_t nslots,
                                    const struct gw_metric_family *f, const char *key,
                                    uint32_t h)
{
    size_t i = h & (nslots - 1);
    for (;;) {
        struct gw_series *s = slots[i];
        if (!s || (s->fam == f && s->hash == h && strcmp(s->key, key) == 0))
            return &slots[i];
        i = (i + 1) & (nslots - 1);
    }
}

struct gw_series *gw_metrics_get(struct gw_metrics *m, const struct gw_metric_family *f,
                                 const char *const *values)
{
    char key[512];
    size_t n = nlabels(f), off = 0;
    for (size_t i = 0; i < n; i++) {
        const char *v = values[i] ? values[i] : "";
        size_t vl = strlen(v);
        if (off + vl + 2 > sizeof(key))
            break; /* label values come from bounded sets; cut, never overflow */
        if (i)
            key[off++] = '\x1f';
        memcpy(key + off, v, vl);
        off += vl;
    }
    key[off] = '\0';
    uint32_t h = hash_key(f, key);
    /* lookups need no lock: only this thread changes the table */
    struct gw_series **slot = find_slot(m->slots, m->nslots, f, key, h);
    if (*slot)
        return *slot;
    struct gw_series *s = gw_calloc(1, sizeof(*s));
    s->fam = f;
    s->key = gw_strdup(key);
    s->hash = h;
    for (size_t i = 0; i < n; i++)
        s->values[i] = gw_strdup(values[i] ? values[i] : "");
    if (f->type == GW_METRIC_HISTOGRAM)
        s->buckets = gw_calloc(f->nbuckets + 1, sizeof(*s->buckets));
    pthread_mutex_lock(&m->lock);
    if ((m->nseries + 1) * 2 > m->nslots) {
        size_t nn = m->nslots * 2;
        struct gw_series **ns = gw_calloc(nn, sizeof(*ns));
        for (size_t i = 0; i < m->nslots; i++) {
            struct gw_series *x = m->slots[i];
            if (x)
                *find_slot(ns, nn, x->fam, x->key, x->hash) = x;
        }
        free(m->slots);
        m->slots = ns;
        m->nslots = nn;
        slot = find_slot(m->slots, m->nslots, f, key, h);
    }
    *slot = s;
    m->nseries++;
    pthread_mutex_unlock(&m->lock);
    return s;
}

struct gw_series *gw_metrics_getv(struct gw_metrics *m, const struct gw_metric_family *f, ...)
{
    const char *vals[GW_METRIC_MAX_LABELS] = {0};
    size_t n = nlabels(f);
    va_list ap;
    va_start(ap, f);
    for (size_t i = 0; i < n; i++)
        vals[i] = va_arg(ap, const char *);
    va_end(ap);
    return gw_metrics_get(m, f, vals);
}

void gw_series_inc(struct gw_series *s, double v)
{
    double cur = atomic_load_explicit(&s->value, memory_order_relaxed);
    atomic_store_explicit(&s->value, cur + v, memory_order_relaxed);
}

void gw_series_set(struct gw_series *s, double v)
{
    atomic_store_explicit(&s->value, v, memory_order_relaxed);
}

void gw_series_observe(struct gw_series *s, double v)
{
    const struct gw_metric_family *f = s->fam;
    size_t i = 0;
    while (i < f->nbuckets && v > f->buckets[i])
        i++;
    uint64_t b = atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    atomic_store_explicit(&s->buckets[i], b + 1, memory_order_relaxed);
    uint64_t c = atomic_load_explicit(&s->count, memory_order_relaxed);
    atomic_store_explicit(&s->count, c + 1, memory_order_relaxed);
    gw_series_inc(s, v);
}

/* ---- rendering ---- */

struct merged {
    const struct gw_series *first;  /* for label values */
    double value;
    uint64_t count;
    uint64_t buckets[GW_METRIC_MAX_BUCKETS + 1];
};

static void put_value(struct gw_buf *out, double v)
{
    if (isnan(v))
        gw_buf_puts(out, "NaN");
    else if (isinf(v))
        gw_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        gw_buf_printf(out, "%.0f", v);
    else
        gw_buf_printf(out, "%.17g", v);
}

static void put_label_value(struct gw_buf *out, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            gw_buf_puts(out, "\\\\");
        else if (*p == '"')
            gw_buf_puts(out, "\\\"");
        else if (*p == '\n')
            gw_buf_puts(out, "\\n");
        else
            gw_buf_append(out, p, 1);
    }
}

static void put_labels(struct gw_buf *out, const struct gw_series *s, const char *le)
{
    const struct gw_metric_family *f = s->fam;
    size_t n = nlabels(f);
    if (n == 0 && !le)
        return;
    gw_buf_puts(out, "{");
    for (size_t i = 0; i < n; i++) {
        gw_buf_printf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
        put_label_value(out, s->values[i]);
        gw_buf_puts(out, "\"");
    }
    if (le)
        gw_buf_printf(out, "%sle=\"%s\"", n ? "," : "", le);
    gw_buf_puts(out, "}");
}

static int cmp_merged(const void *a, const void *b)
{
    const struct merged *x = a, *y = b;
    return strcmp(x->first->key, y->first->key);
}

void gw_metrics_render(struct gw_metrics *const *regs, size_t nregs,
                       const struct gw_metric_family *const *families, size_t nfamilies,
                       struct gw_buf *out)
{
    for (size_t r = 0; r < nregs; r++)
        pthread_mutex_lock(&regs[r]->lock);
    for (size_t fi = 0; fi < nfamilies; fi++) {
        const struct gw_metric_family *f = families[fi];
        static const char *const tnames[] = {"counter", "gauge", "histogram"};
        gw_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                      tnames[f->type]);
        /* collect and merge this family's series across registries */
        size_t cap = 0, n = 0;
        struct merged *ms = NULL;
        for (size_t r = 0; r < nregs; r++) {
            const struct gw_metrics *m = regs[r];
            for (size_t i = 0; i < m->nslots; i++) {
                const struct gw_series *s = m->slots[i];
                if (!s || s->fam != f)
                    continue;
                struct merged *x = NULL;
                for (size_t j = 0; j < n; j++)
                    if (strcmp(ms[j].first->key, s->key) == 0) {
                        x = &ms[j];
                        break;
                    }
                if (!x) {
                    if (n == cap) {
                        cap = cap ? cap * 2 : 16;
                        ms = gw_realloc(ms, cap * sizeof(*ms));
                    }
                    x = &ms[n++];
                    memset(x, 0, sizeof(*x));
                    x->first = s;
                }
                x->value += atomic_load_explicit(&s->value, memory_order_relaxed);
                if (f->type == GW_METRIC_HISTOGRAM) {
                    x->count += atomic_load_explicit(&s->count, memory_order_relaxed);
                    for (size_t b = 0; b <= f->nbuckets && b <= GW_METRIC_MAX_BUCKETS; b++)
                        x->buckets[b] +=
                            atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
                }
            }
        }
        if (n > 1)
            qsort(ms, n, sizeof(*ms), cmp_merged);
        for (size_t j = 0; j < n; j++) {
            const struct merged *x = &ms[j];
            if (f->type != GW_METRIC_HISTOGRAM) {
                gw_buf_puts(out, f->name);
                put_labels(out, x->first, NULL);
                gw_buf_puts(out, " ");
                put_value(out, x->value);
                gw_buf_puts(out, "\n");
                continue;
            }
            uint64_t cum = 0;
            for (size_t b = 0; b < f->nbuckets; b++) {
                char le[32];
                cum += x->buckets[b];
                snprintf(le, sizeof(le), "%g", f->buckets[b]);
                gw_buf_printf(out, "%s_bucket", f->name);
                put_labels(out, x->first, le);
                gw_buf_printf(out, " %llu\n", (unsigned long long)cum);
            }
            gw_buf_printf(out, "%s_bucket", f->name);
            put_labels(out, x->first, "+Inf");
            gw_buf_printf(out, " %llu\n", (unsigned long long)x->count);
            gw_buf_printf(out, "%s_sum", f->name);
            put_labels(out, x->first, NULL);
            gw_buf_puts(out, " ");
            put_value(out, x->value);
            gw_buf_printf(out, "\n%s_count", f->name);
            put_labels(out, x->first, NULL);
            gw_buf_printf(out, " %llu\n", (unsigned long long)x->count);
        }
        free(ms);
    }
    for (size_t r = 0; r < nregs; r++)
        pthread_mutex_unlock(&regs[r]->lock);
}
