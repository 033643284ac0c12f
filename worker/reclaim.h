/*
 * activity-worker: heartbeat, the registry of workers, the lock on a
 * worker id, and requeueing the batches of dead workers.
 */

#ifndef ACTIVITY_RECLAIM_H
#define ACTIVITY_RECLAIM_H

#include <stdint.h>

#include <hiredis/hiredis.h>

#include "settings.h"


/* the sorted set of worker ids, scored by their last heartbeat (ms) */
#define RECLAIM_REGISTRY      "activity:workers"
#define RECLAIM_PROC_PREFIX   "activity:processing:"
#define RECLAIM_ALIVE_PREFIX  "activity:alive:"


typedef struct {
    const settings_t  *settings;
    const char        *proc_key;      /* our own processing list */
    char              *alive_key;     /* our own heartbeat and id lock */
    char               token[96];     /* this process: host:pid:random */
    int64_t            beat_at;       /* next heartbeat due */
    int64_t            scan_at;       /* next reclaim round due */
    int64_t            held_since;    /* the id was held by another */
    int                held;          /* ... and that was logged */
    int                owned;         /* we hold the id lock */
    int                lost;          /* another process holds our id */
} reclaim_t;


/* 0, or -1 when out of memory. proc_key must outlive r. */
int reclaim_init(reclaim_t *r, const settings_t *settings,
    const char *proc_key);

void reclaim_free(reclaim_t *r);

/*
 * When due (about three times a TTL, at least every second) or when
 * force is set: renew activity:alive:<id> (EX --heartbeat-ttl) if this
 * process holds it or nobody does, and record the time in the registry.
 * 0; 1 when another process holds the id (wait and call again: a
 * crashed previous life's key lapses within a TTL; one still renewed
 * after that is a live twin: r->lost is set); -1 with the reason in err
 * on a Redis error.
 */
int reclaim_heartbeat(reclaim_t *r, redisContext *rc, int force, char *err,
    size_t errlen);

/* Non-zero once another live process holds our id: stop. */
int reclaim_lost(const reclaim_t *r);

/*
 * When due (once a TTL, and at start): for every worker in the registry
 * other than us whose heartbeat has expired, move the events of its
 * processing list back to the head of the queue, oldest next in line,
 * and drop it from the registry once its list is empty. Never scans the
 * keyspace. 0, or -1 on a Redis error.
 */
int reclaim_scan(reclaim_t *r, redisContext *rc, char *err, size_t errlen);

/* At a clean exit: drop our heartbeat (if still ours): others may
 * reclaim at once, and the registry forgets us when our list is empty. */
void reclaim_goodbye(reclaim_t *r, redisContext *rc);


#endif /* ACTIVITY_RECLAIM_H */
