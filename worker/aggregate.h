/*
 * activity-worker: live counters, the recent-events cache and the
 * dashboard pub/sub feed.
 */

#ifndef ACTIVITY_AGGREGATE_H
#define ACTIVITY_AGGREGATE_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "../common/activity_event.h"
#include "settings.h"


typedef struct aggregate_s  aggregate_t;


typedef struct {
    long     fresh;         /* events counted and published (not seen) */
    int      published;     /* the stats went out on the stats channel */
    int64_t  pending_ms;    /* changed stats held back: call again then */
} aggregate_result_t;


/* NULL when out of memory. settings must outlive the aggregator. */
aggregate_t *aggregate_new(const settings_t *settings);

void aggregate_free(aggregate_t *a);

/*
 * Apply a batch of valid events in one atomic server-side script: skip
 * ids already seen, count the rest, push them onto the recent list,
 * append them to the stream and publish them with their stream ids
 * (the offsets dashboards resume from), recompute the stats, store them, publish them when due.
 * n == 0 only recomputes the stats (windows slide while idle).
 * Returns 0, or -1 with the reason in err; then nothing was applied and
 * the caller keeps the batch (and, as with any Redis error, drops the
 * context).
 */
int aggregate_apply(aggregate_t *a, redisContext *rc, const event_t *events,
    size_t n, aggregate_result_t *res, char *err, size_t errlen);


#endif /* ACTIVITY_AGGREGATE_H */
