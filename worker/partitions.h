/*
 * activity-worker: daily partition maintenance, on a thread of its own.
 */

#ifndef ACTIVITY_PARTITIONS_H
#define ACTIVITY_PARTITIONS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"


typedef struct {
    db_t             *db;           /* its own connection */
    int               ahead;        /* days of partitions to keep ready */
    int               retain;       /* days of partitions to keep */
    int64_t           next_ms;      /* monotonic time of the next run */
    int               failing;      /* the last run failed (and was logged) */
    int               postponed;    /* the last run met a lock (logged) */
    int64_t           lock_wait_ms; /* the next wait after a busy lock */

    pthread_t         thread;
    pthread_mutex_t   lock;
    pthread_cond_t    wake;
    int               closing;      /* under lock */
    int               running;      /* the thread was started */
} partitions_t;


/*
 * Start maintenance on its own thread and its own connection (conninfo,
 * statement_timeout timeout_ms): at once, then hourly; sooner after a
 * failure. Never fatal: the default partition takes any row a missing
 * partition would have held. -1 with the reason in err.
 */
int partitions_start(partitions_t *p, const char *conninfo, int timeout_ms,
    int ahead, int retain, char *err, size_t errlen);

/* Stop the thread (a statement in progress is cancelled), free it all. */
void partitions_stop(partitions_t *p);


#endif /* ACTIVITY_PARTITIONS_H */
