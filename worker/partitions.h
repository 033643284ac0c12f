/*
 * activity-worker: daily partition maintenance.
 */

#ifndef ACTIVITY_PARTITIONS_H
#define ACTIVITY_PARTITIONS_H

#include <stdint.h>

#include "db.h"


typedef struct {
    db_t     *db;
    int       ahead;        /* days of partitions to keep ready */
    int       retain;       /* days of partitions to keep */
    int64_t   next_ms;      /* monotonic time of the next run */
    int       failing;      /* the last run failed (and was logged) */
} partitions_t;


void partitions_init(partitions_t *p, db_t *db, int ahead, int retain);

/*
 * Run maintenance when due: at the first call, then hourly; a minute
 * after a failure. Never fatal: the default partition takes any row a
 * missing partition would have held.
 */
void partitions_tick(partitions_t *p);


#endif /* ACTIVITY_PARTITIONS_H */
