/*
 * activity-worker: the store thread and the batches handed to it.
 */

#ifndef ACTIVITY_STORE_H
#define ACTIVITY_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "evmem.h"
#include "../common/activity_event.h"
#include "partitions.h"
#include "redisconn.h"
#include "settings.h"


typedef struct store_s  store_t;


/*
 * A batch the consumer has counted and published. Everything in it is
 * malloc'd and belongs to the store once handed over.
 */
typedef struct store_batch_s  store_batch_t;

struct store_batch_s {
    store_batch_t   *next;
    uint64_t         seq;        /* order of store_put(), set there */
    char           **texts;      /* the events as queued, oldest first */
    size_t           n;          /* its elements in the processing list */
    event_t         *events;     /* the valid ones; borrow from texts */
    size_t           nvalid;
    evmem_t         *mem;        /* their parse trees (evmem.c) */
    char           **letters;    /* dead letters, room for n */
    size_t           ndead;
};


/* What the store did since the last call, for the summary line. */
typedef struct {
    long    batches;
    long    events;
    long    inserted;
    long    dead;
} store_summary_t;


/*
 * Start the store thread: it owns db (and partition maintenance) from
 * now on and opens a Redis connection of its own. NULL with the reason
 * in err on failure.
 */
store_t *store_start(const settings_t *settings,
    const redis_target_t *target, db_t *db, partitions_t *parts,
    const char *proc_key, char *err, size_t errlen);

/*
 * Drain: store the batches in hand in order (each given up when a
 * failure would need a wait), then join the thread and free everything;
 * sum gets what the store did since the last store_summary().
 */
void store_stop(store_t *s, store_summary_t *sum);

/* Hand over a batch; the caller made room first (store_wait_room). */
void store_put(store_t *s, store_batch_t *b);

/*
 * Wait at most ms for the store to hold fewer than --store-ahead
 * batches. Non-zero when there is room.
 */
int store_wait_room(store_t *s, int64_t ms);

/* Wait at most ms for the store to hold nothing. Non-zero when idle. */
int store_wait_idle(store_t *s, int64_t ms);

/*
 * Non-zero once the store could not retire a batch from the processing
 * list (Redis failed): the later batches in hand are dropped unretired,
 * and the consumer must re-read the list once the store is idle, then
 * call store_resync().
 */
int store_broken(store_t *s);

void store_resync(store_t *s);

void store_summary(store_t *s, store_summary_t *sum);

/* Free a batch that was not handed over. */
void store_batch_free(store_batch_t *b);


#endif /* ACTIVITY_STORE_H */
