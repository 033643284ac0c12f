/*
 * activity-worker: heartbeat, and requeueing the batches of dead workers.
 */

#ifndef ACTIVITY_RECLAIM_H
#define ACTIVITY_RECLAIM_H

#include <stdint.h>

#include <hiredis/hiredis.h>

#include "settings.h"


typedef struct {
    const settings_t  *settings;
    const char        *proc_key;      /* our own processing list */
    char              *alive_key;     /* our own heartbeat */
    int64_t            beat_at;       /* next heartbeat due */
    int64_t            scan_at;       /* next scan due */
} reclaim_t;


/* 0, or -1 when out of memory. proc_key must outlive r. */
int reclaim_init(reclaim_t *r, const settings_t *settings,
    const char *proc_key);

void reclaim_free(reclaim_t *r);

/*
 * SET activity:alive:<id> EX --heartbeat-ttl, when due (about three
 * times a TTL, at least every second) or when force is set. 0, or -1
 * with the reason in err on a Redis error.
 */
int reclaim_heartbeat(reclaim_t *r, redisContext *rc, int force, char *err,
    size_t errlen);

/*
 * When due (once a TTL): find every activity:processing:<id> whose
 * heartbeat has expired, other than ours, and move its events back to
 * the head of the queue, oldest next in line. 0, or -1 on a Redis error.
 */
int reclaim_scan(reclaim_t *r, redisContext *rc, char *err, size_t errlen);

/* Remove our heartbeat at a clean exit: others may reclaim at once. */
void reclaim_goodbye(reclaim_t *r, redisContext *rc);


#endif /* ACTIVITY_RECLAIM_H */
