/*
 * activity-worker: the reliable queue consumer.
 */

#ifndef ACTIVITY_CONSUMER_H
#define ACTIVITY_CONSUMER_H

#include "db.h"
#include "partitions.h"
#include "redisconn.h"
#include "settings.h"


/*
 * Consume the queue until a stop is requested: move events into this
 * worker's processing list, count and publish them, and hand them to
 * the store thread (store.c), which stores them and only then deletes
 * them from Redis; db and parts belong to that thread from the start.
 * Starts by finishing whatever the processing list holds from a
 * previous life; a stop drains the store. Returns the process exit
 * status (0).
 */
int consumer_run(const settings_t *settings, const redis_target_t *target,
    db_t *db, partitions_t *parts);


#endif /* ACTIVITY_CONSUMER_H */
