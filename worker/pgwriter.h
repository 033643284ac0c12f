/*
 * activity-worker: storing a batch of events in PostgreSQL.
 */

#ifndef ACTIVITY_PGWRITER_H
#define ACTIVITY_PGWRITER_H

#include <stddef.h>

#include "db.h"
#include "../common/activity_event.h"


/*
 * Store n events in one transaction. Idempotent: an event id (with its
 * timestamp) already present is skipped, so a batch may be stored again
 * after a crash. Returns 0 once COMMIT succeeded, with *inserted the rows
 * that were new; -1 with the reason in err and nothing stored.
 */
int pgw_store(db_t *db, event_t *evs, size_t n, long *inserted, char *err,
    size_t errlen);


#endif /* ACTIVITY_PGWRITER_H */
