/*
 * activity-worker: storing a batch through failures.
 */

#ifndef ACTIVITY_RETRY_H
#define ACTIVITY_RETRY_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "../common/activity_event.h"


/*
 * Wait ms milliseconds, keeping the worker alive meanwhile (heartbeat,
 * stats). 0, or -1 when a stop was requested.
 */
typedef int (*retry_wait_pt)(void *arg, int64_t ms);


typedef struct {
    db_t           *db;
    const int      *delays;       /* ms to wait after failure k */
    int             attempts;     /* entries in delays */
    retry_wait_pt   wait;
    void           *arg;
    int            *held;         /* batches held now, shared by the */
                                  /* store threads; NULL: alone */

    long            inserted;     /* out: rows that were new */
    char          **errors;       /* out: per event, NULL or malloc'd */
} retry_t;


/*
 * Store n events. A failure caused by the data (SQLSTATE classes 22, 23,
 * 54) bisects the batch at once, without waiting, until the events
 * PostgreSQL refuses stand alone: errors[i] then holds why event i was
 * refused, every other event is stored. An outage (the server gone,
 * refusing connections, shutting down) is waited out without counting
 * attempts; other failures (locks, serialization, timeouts, resources)
 * are retried after each delay in turn, then at the last delay for as
 * long as they last. Neither produces an error entry.
 * Returns 0 when every event was stored or refused, -1 when a stop was
 * requested first (some parts may be stored: storing is idempotent).
 */
int retry_store(retry_t *r, event_t *evs, size_t n);


#endif /* ACTIVITY_RETRY_H */
