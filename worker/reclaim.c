/*
 * activity-worker: heartbeat, and requeueing the batches of dead workers.
 *
 * Every worker keeps "activity:alive:<id>" set with a TTL while it runs.
 * Once a TTL, each live worker SCANs for "activity:processing:*" lists
 * (never KEYS, which blocks Redis) and, for any whose owner's heartbeat
 * is gone, moves the events back onto the queue:
 *
 *   LMOVE activity:processing:<dead> <queue> LEFT RIGHT    until nil
 *
 * The processing list holds the newest event at its left; each LMOVE
 * takes the newest left and puts it at the right of the queue, the end
 * consumers take from, so the oldest ends up next in line: order is kept.
 * Each move is atomic, so two workers reclaiming the same list cannot
 * duplicate an event, and a crash in the middle loses none.
 *
 * A worker whose heartbeat lapsed while it was only slow gets its batch
 * stored twice at worst, which the writer and the counters make
 * harmless (ids are idempotency keys).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "reclaim.h"
#include "redisconn.h"
#include "timeutil.h"


#define RECLAIM_PROC_PREFIX   "activity:processing:"
#define RECLAIM_ALIVE_PREFIX  "activity:alive:"
#define RECLAIM_CHUNK         64


static int reclaim_key(reclaim_t *r, redisContext *rc, const char *key,
    char *err, size_t errlen);
static int reclaim_move(reclaim_t *r, redisContext *rc, const char *key,
    long *moved, char *err, size_t errlen);


int
reclaim_init(reclaim_t *r, const settings_t *settings, const char *proc_key)
{
    memset(r, 0, sizeof(*r));
    r->settings = settings;
    r->proc_key = proc_key;

    if (asprintf(&r->alive_key, RECLAIM_ALIVE_PREFIX "%s",
                 settings->worker_id) < 0)
    {
        r->alive_key = NULL;
        return -1;
    }

    return 0;
}


void
reclaim_free(reclaim_t *r)
{
    free(r->alive_key);
    r->alive_key = NULL;
}


int
reclaim_heartbeat(reclaim_t *r, redisContext *rc, int force, char *err,
    size_t errlen)
{
    redisReply  *reply;
    int64_t      now, every;
    char         ttl[16], pid[16];

    now = time_mono_ms();

    if (!force && now < r->beat_at) {
        return 0;
    }

    snprintf(ttl, sizeof(ttl), "%d", r->settings->heartbeat_ttl);
    snprintf(pid, sizeof(pid), "%d", (int) getpid());

    reply = redisCommand(rc, "SET %s %s EX %s", r->alive_key, pid, ttl);

    if (redis_reply_check(rc, reply, err, errlen) != 0) {
        if (reply != NULL) {
            freeReplyObject(reply);
        }
        return -1;
    }

    freeReplyObject(reply);

    every = (int64_t) r->settings->heartbeat_ttl * 1000 / 3;
    r->beat_at = now + (every < 1000 ? every : 1000);
    return 0;
}


int
reclaim_scan(reclaim_t *r, redisContext *rc, char *err, size_t errlen)
{
    redisReply  *reply, *keys;
    int64_t      now;
    size_t       i;
    char         cursor[32];
    int          rc2;

    now = time_mono_ms();

    if (now < r->scan_at) {
        return 0;
    }

    snprintf(cursor, sizeof(cursor), "0");

    do {
        reply = redisCommand(rc, "SCAN %s MATCH %s* COUNT 100", cursor,
                             RECLAIM_PROC_PREFIX);

        if (redis_reply_check(rc, reply, err, errlen) != 0
            || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
            || reply->element[0]->type != REDIS_REPLY_STRING
            || reply->element[1]->type != REDIS_REPLY_ARRAY)
        {
            if (reply != NULL && reply->type != REDIS_REPLY_ERROR) {
                snprintf(err, errlen, "SCAN: unexpected reply");
            }
            if (reply != NULL) {
                freeReplyObject(reply);
            }
            return -1;
        }

        snprintf(cursor, sizeof(cursor), "%s", reply->element[0]->str);
        keys = reply->element[1];
        rc2 = 0;

        for (i = 0; i < keys->elements && rc2 == 0; i++) {
            if (keys->element[i]->type != REDIS_REPLY_STRING
                || strcmp(keys->element[i]->str, r->proc_key) == 0)
            {
                continue;
            }
            rc2 = reclaim_key(r, rc, keys->element[i]->str, err, errlen);
        }

        freeReplyObject(reply);

        if (rc2 != 0) {
            return -1;
        }

    } while (strcmp(cursor, "0") != 0);

    r->scan_at = now + (int64_t) r->settings->heartbeat_ttl * 1000;
    return 0;
}


void
reclaim_goodbye(reclaim_t *r, redisContext *rc)
{
    redisReply  *reply;

    reply = redisCommand(rc, "DEL %s", r->alive_key);
    if (reply != NULL) {
        freeReplyObject(reply);
    }
}


/* One processing list: requeue it if its owner's heartbeat is gone. */
static int
reclaim_key(reclaim_t *r, redisContext *rc, const char *key, char *err,
    size_t errlen)
{
    redisReply  *reply;
    long         moved;
    char         q[300];
    int          alive;

    reply = redisCommand(rc, "EXISTS " RECLAIM_ALIVE_PREFIX "%s",
                         key + sizeof(RECLAIM_PROC_PREFIX) - 1);

    if (redis_reply_check(rc, reply, err, errlen) != 0) {
        if (reply != NULL) {
            freeReplyObject(reply);
        }
        return -1;
    }

    alive = reply->type == REDIS_REPLY_INTEGER && reply->integer > 0;
    freeReplyObject(reply);

    if (alive) {
        return 0;
    }

    moved = 0;

    if (reclaim_move(r, rc, key, &moved, err, errlen) != 0) {
        return -1;
    }

    if (moved > 0) {
        log_warn("requeued the batch of a dead worker",
                 "processing=%s events=%ld queue=%s",
                 log_quote(q, sizeof(q), key), moved, r->settings->queue);
    }

    return 0;
}


/* LMOVE key queue LEFT RIGHT until nil, RECLAIM_CHUNK per round trip. */
static int
reclaim_move(reclaim_t *r, redisContext *rc, const char *key, long *moved,
    char *err, size_t errlen)
{
    redisReply  *reply;
    const char  *argv[5];
    size_t       argvlen[5], i;
    int          empty, rc2;

    argv[0] = "LMOVE";
    argv[1] = key;
    argv[2] = r->settings->queue;
    argv[3] = "LEFT";
    argv[4] = "RIGHT";

    for (i = 0; i < 5; i++) {
        argvlen[i] = strlen(argv[i]);
    }

    do {
        for (i = 0; i < RECLAIM_CHUNK; i++) {
            if (redisAppendCommandArgv(rc, 5, argv, argvlen) != REDIS_OK) {
                snprintf(err, errlen, "%s", rc->errstr);
                return -1;
            }
        }

        empty = 0;
        rc2 = 0;

        /* every reply must be read, even after an error one */
        for (i = 0; i < RECLAIM_CHUNK; i++) {
            reply = NULL;
            if (redisGetReply(rc, (void **) &reply) != REDIS_OK) {
                snprintf(err, errlen, "%s", rc->errstr);
                return -1;
            }

            if (rc2 == 0 && redis_reply_check(rc, reply, err, errlen) != 0)
            {
                rc2 = -1;
            } else if (reply->type == REDIS_REPLY_STRING) {
                (*moved)++;
            } else {
                empty = 1;
            }

            freeReplyObject(reply);
        }

        if (rc2 != 0) {
            return -1;
        }

    } while (!empty);

    return 0;
}
