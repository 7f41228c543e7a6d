/*
 * metrics.h - Prometheus metrics with one registry per worker thread.
 *
 * A worker updates only its own registry, with no locks and no atomic
 * read-modify-write: values are stored with relaxed atomic stores by their
 * single writer and read with relaxed loads by the scraper. Creating a new
 * series (a new label combination) takes the registry's mutex, which the
 * scraper also takes while it walks the table. A scrape merges all
 * registries by series key, so counters are exact sums across workers.
 *
 * Families are static tables (name, help, type, label names, buckets).
 * Label values must come from bounded sets (config names, status codes),
 * never from raw client input.
 */
#ifndef HYBRIDGW_METRICS_H
#define HYBRIDGW_METRICS_H

#include "hybridgw/buf.h"

enum gw_metric_type {
    GW_METRIC_COUNTER = 0,
    GW_METRIC_GAUGE = 1,
    GW_METRIC_HISTOGRAM = 2,
    GW_METRIC_TYPE_COUNT
};

#define GW_METRIC_MAX_LABELS 6
#define GW_METRIC_MAX_BUCKETS 24

struct gw_metric_family {
    const char *name;
    const char *help;
    enum gw_metric_type type;
    const char *labels[GW_METRIC_MAX_LABELS]; /* NULL-terminated */
    const double *buckets;                    /* histograms: upper bounds, ascending */
    size_t nbuckets;
};

struct gw_metrics;
struct gw_series;

struct gw_metrics *gw_metrics_new(void);
void gw_metrics_free(struct gw_metrics *m);

/* Find or create the series for label values (as many as the family has
 * labels). The pointer stays valid for the registry's life. */
struct gw_series *gw_metrics_get(struct gw_metrics *m, const struct gw_metric_family *f,
                                 const char *const *values);
/* Convenience for up to 6 label values given inline. */
struct gw_series *gw_metrics_getv(struct gw_metrics *m, const struct gw_metric_family *f, ...);

void gw_series_inc(struct gw_series *s, double v);   /* counters and gauges */
void gw_series_set(struct gw_series *s, double v);   /* gauges */
void gw_series_observe(struct gw_series *s, double v); /* histograms */

/* Render families in the text exposition format, merging the registries.
 * Families with no series get HELP and TYPE only (so names are stable). */
void gw_metrics_render(struct gw_metrics *const *regs, size_t nregs,
                       const struct gw_metric_family *const *families, size_t nfamilies,
                       struct gw_buf *out);

#endif
