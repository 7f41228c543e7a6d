/*
 * ledger_writer.h - the spend ledger's writer thread (see ledger_writer.c).
 */
#ifndef HYBRIDGW_LEDGER_WRITER_H
#define HYBRIDGW_LEDGER_WRITER_H

#include <stdatomic.h>
#include "ledger/store.h"

struct gw_ledger;

struct gw_ledger_stats {
    uint64_t written, dropped, failed, queued;
};

/* Open the store at url (migrating it) and start the writer; NULL with a
 * message in err. queue_cap bounds the records held in memory. */
struct gw_ledger *gw_ledger_start(const char *url, size_t queue_cap, char *err, size_t errlen);
const char *gw_ledger_kind(const struct gw_ledger *l);
/* Copy rec into the queue; never blocks on the database; a full queue
 * drops (counted). NULL ledger: nothing. Thread-safe. */
void gw_ledger_submit(struct gw_ledger *l, const struct gw_spend_rec *rec);
void gw_ledger_stats(struct gw_ledger *l, struct gw_ledger_stats *out);
/* Write what is queued within deadline_ms, stop, close, free. */
void gw_ledger_stop(struct gw_ledger *l, uint64_t deadline_ms);

#endif
