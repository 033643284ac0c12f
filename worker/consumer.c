/*
 * activity-worker: the reliable queue consumer.
 *
 * The Redis "reliable queue" pattern. The module LPUSHes, so the oldest
 * event is at the right end of the queue:
 *
 *   BLMOVE queue processing:<id> RIGHT LEFT 1     wait for a first event
 *   LMOVE  queue processing:<id> RIGHT LEFT  x k  pipelined, fill the batch
 *   EVALSHA <aggregate script> <valid events>      count and publish
 *   hand the batch to the store thread (store.c), collect the next one
 *
 * and the store thread, in the order the batches were taken:
 *
 *   ... store the batch in PostgreSQL, COMMIT ...
 *   MULTI; LPUSH dead <letters>; LTRIM processing:<id> 0 -(n+1); EXEC
 *
 * An event leaves Redis only after the transaction holding it committed,
 * so a crash at any point loses nothing: the next start finds the
 * batches in the processing list and stores them again, which the writer
 * makes idempotent. The processing list, not memory, is the truth: after
 * any Redis error, once the store has finished or dropped what it holds,
 * the whole list is re-read.
 *
 * Dashboards see a batch before PostgreSQL does, and events arriving
 * while a batch is being stored do not wait for it: at most
 * --store-ahead batches are in the store's hands; beyond that this loop
 * takes no new events (they wait in the Redis queue, as while
 * PostgreSQL is down) but keeps the heartbeat and the stats going. The
 * aggregation script remembers the ids it has seen, so a batch handled
 * again (after a crash, a lost connection, a resend by nginx) is stored
 * again, which is harmless, but neither counted nor published twice.
 * While the queue is idle the loop still recomputes the stats about
 * once a second, because the windows slide even when nothing happens.
 * Each worker keeps a heartbeat key and requeues the processing lists of
 * workers whose heartbeat expired (reclaim.c).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "consumer.h"
#include "dlq.h"
#include "../common/activity_event.h"
#include "log.h"
#include "metrics.h"
#include "reclaim.h"
#include "signals.h"
#include "store.h"
#include "timeutil.h"


/* BLMOVE waits at most this long, so a stop request is seen in time */
#define CONSUMER_BLOCK_MS         1000

/* socket timeout: above the longest BLMOVE (a shorter one kills it) */
#define CONSUMER_SOCKET_MS        (CONSUMER_BLOCK_MS + 4000)

/* while a batch waits for PostgreSQL, look after Redis this often */
#define CONSUMER_WAIT_SLICE_MS    250
#define CONSUMER_BACKOFF_MIN_MS   250
#define CONSUMER_BACKOFF_MAX_MS   2000
#define CONSUMER_SUMMARY_MS       (60 * 1000)

/* recompute the stats this often while the queue is idle */
#define CONSUMER_STATS_TICK_MS    1000

/* first pipelined LMOVE round; doubles while the queue keeps giving */
#define CONSUMER_CHUNK_MIN        16
#define CONSUMER_CHUNK_MAX        1024


typedef struct {
    char    *data;
    size_t   len;
} item_t;


typedef struct {
    const settings_t      *settings;
    const redis_target_t  *target;
    aggregate_t           *agg;
    store_t               *store;          /* the store thread */
    int64_t                stats_at;       /* next idle stats tick */
    reclaim_t              live;           /* heartbeat, reclaiming */

    redisContext          *rc;
    char                  *proc_key;
    int                    redis_down;     /* an outage is being logged */
    int                    redis_seen;     /* "connected" was logged */
    int64_t                backoff_ms;

    item_t                *items;          /* oldest first */
    size_t                 n;
    size_t                 cap;

    int64_t                summary_at;
    long                   sum_live;
    store_summary_t        sum;
} consumer_t;


static int consumer_connect(consumer_t *c);
static void consumer_redis_ok(consumer_t *c);
static void consumer_backoff(consumer_t *c);
static void consumer_redis_lost(consumer_t *c, const char *err);
static int consumer_liveness(consumer_t *c, int force, char *err,
    size_t errlen);
static int consumer_pause(consumer_t *c, int idle, char *err,
    size_t errlen);
static int consumer_recover(consumer_t *c, char *err, size_t errlen);
static int consumer_collect(consumer_t *c, char *err, size_t errlen);
static int consumer_tick(consumer_t *c, char *err, size_t errlen);
static int consumer_aggregate(consumer_t *c, const event_t *events,
    size_t n, char *err, size_t errlen);
static int consumer_blmove(consumer_t *c, int64_t ms, int *got, char *err,
    size_t errlen);
static int consumer_lmove_chunk(consumer_t *c, size_t want, int *drained,
    char *err, size_t errlen);
static int consumer_process(consumer_t *c);
static int consumer_push(consumer_t *c, const char *data, size_t len);
static void consumer_items_clear(consumer_t *c);
static void consumer_summary(consumer_t *c, int force);


int
consumer_run(const settings_t *settings, const redis_target_t *target,
    db_t *db, partitions_t *parts)
{
    store_summary_t  last;
    consumer_t       c;
    char             err[512], q[600];
    int              need_recover, rc;

    memset(&c, 0, sizeof(c));
    c.settings = settings;
    c.target = target;
    c.backoff_ms = CONSUMER_BACKOFF_MIN_MS;
    c.summary_at = time_mono_ms() + CONSUMER_SUMMARY_MS;
    c.stats_at = time_mono_ms();

    c.agg = aggregate_new(settings);

    if (c.agg == NULL
        || asprintf(&c.proc_key, "activity:processing:%s",
                    settings->worker_id) < 0
        || reclaim_init(&c.live, settings, c.proc_key) != 0)
    {
        log_error("out of memory", NULL);
        aggregate_free(c.agg);
        return 1;
    }

    /* from here on db and partition maintenance belong to the store */
    c.store = store_start(settings, target, db, parts, c.proc_key, err,
                          sizeof(err));
    if (c.store == NULL) {
        log_error("cannot start", "err=%s", log_quote(q, sizeof(q), err));
        reclaim_free(&c.live);
        aggregate_free(c.agg);
        free(c.proc_key);
        return 1;
    }

    need_recover = 1;

    while (!signals_stop_requested()) {
        consumer_summary(&c, 0);

        if (c.rc == NULL && consumer_connect(&c) != 0) {
            consumer_backoff(&c);
            continue;
        }

        /* the store could not retire a batch: the list is truth again */
        if (!need_recover && store_broken(c.store)) {
            need_recover = 1;
        }

        err[0] = '\0';

        /*
         * Heartbeat first: a worker (re)starting on its own processing
         * list must look alive before others consider reclaiming it.
         */
        rc = consumer_liveness(&c, need_recover, err, sizeof(err));

        if (rc != 0) {
            /* handled below */

        } else if (need_recover) {
            /* re-read the list only once the store holds nothing */
            if (!store_wait_idle(c.store, 0)) {
                rc = consumer_pause(&c, 1, err, sizeof(err));
                if (rc == 0) {
                    continue;
                }
            } else {
                store_resync(c.store);
                rc = consumer_recover(&c, err, sizeof(err));
            }

        } else {
            rc = consumer_tick(&c, err, sizeof(err));

            if (rc == 0 && !store_wait_room(c.store, 0)) {
                /* PostgreSQL is behind: leave new events in the queue */
                rc = consumer_pause(&c, 0, err, sizeof(err));
                if (rc == 0) {
                    continue;
                }
            } else if (rc == 0) {
                rc = consumer_collect(&c, err, sizeof(err));
            }
        }

        if (rc != 0) {
            consumer_items_clear(&c);
            consumer_redis_lost(&c, err);
            need_recover = 1;
            consumer_backoff(&c);
            continue;
        }

        if (need_recover) {
            /* a command went through: only now is Redis back */
            consumer_redis_ok(&c);
            need_recover = 0;
        }

        if (c.n == 0) {
            continue;
        }

        rc = consumer_process(&c);
        consumer_items_clear(&c);

        if (rc != 0) {
            need_recover = 1;
            consumer_backoff(&c);
        }
    }

    /* SIGTERM: the store finishes what it holds, then we say goodbye */
    consumer_items_clear(&c);
    store_stop(c.store, &last);
    c.store = NULL;
    c.sum.batches += last.batches;
    c.sum.events += last.events;
    c.sum.inserted += last.inserted;
    c.sum.dead += last.dead;
    consumer_summary(&c, 1);

    if (c.rc != NULL) {
        reclaim_goodbye(&c.live, c.rc);
        redisFree(c.rc);
    }

    reclaim_free(&c.live);
    aggregate_free(c.agg);
    free(c.items);
    free(c.proc_key);
    return 0;
}


/*
 * Connect. Success is not announced here: a server that accepts the
 * connection and then fails every command (loading, auth, a full disk)
 * must not flap between "connected" and "unavailable" in the log.
 */
static int
consumer_connect(consumer_t *c)
{
    char  err[512];

    c->rc = redis_open(c->target, CONSUMER_SOCKET_MS, err, sizeof(err));

    if (c->rc == NULL) {
        consumer_redis_lost(c, err);
        return -1;
    }

    return 0;
}


/* The first command after a (re)connect succeeded. */
static void
consumer_redis_ok(consumer_t *c)
{
    char  where[300];

    if (c->redis_down || !c->redis_seen) {
        log_info("redis connected", "redis=%s queue=%s processing=%s",
                 redis_target_describe(c->target, where, sizeof(where)),
                 c->settings->queue, c->proc_key);
    }

    c->redis_down = 0;
    c->redis_seen = 1;
    c->backoff_ms = CONSUMER_BACKOFF_MIN_MS;
}


/* Wait before the next attempt: 250 ms doubling up to 2 s. */
static void
consumer_backoff(consumer_t *c)
{
    (void) time_sleep_ms(c->backoff_ms);

    c->backoff_ms = c->backoff_ms * 2 > CONSUMER_BACKOFF_MAX_MS
                    ? CONSUMER_BACKOFF_MAX_MS : c->backoff_ms * 2;
}


/* Log the first failure of an outage only; drop the context. */
static void
consumer_redis_lost(consumer_t *c, const char *err)
{
    char  where[300], qw[320], qe[600];

    if (!c->redis_down) {
        redis_target_describe(c->target, where, sizeof(where));
        log_error("redis unavailable", "redis=%s err=%s",
                  log_quote(qw, sizeof(qw), where),
                  log_quote(qe, sizeof(qe), err));
        c->redis_down = 1;
    }

    if (c->rc != NULL) {
        redisFree(c->rc);
        c->rc = NULL;
    }
}


/* Heartbeat when due (or forced), then a reclaim scan when due. */
static int
consumer_liveness(consumer_t *c, int force, char *err, size_t errlen)
{
    if (reclaim_heartbeat(&c->live, c->rc, force, err, errlen) != 0) {
        return -1;
    }

    return reclaim_scan(&c->live, c->rc, err, errlen);
}


/*
 * The store is full (idle == 0) or, before a re-read of the processing
 * list, not yet idle (idle == 1): wait a slice for it, then let the loop
 * keep the heartbeat and the stats going. Redis was just answering, so
 * an outage it had is over. 0, or -1 on a Redis error.
 */
static int
consumer_pause(consumer_t *c, int idle, char *err, size_t errlen)
{
    int64_t  slice;

    if (consumer_tick(c, err, errlen) != 0) {
        return -1;
    }

    if (c->redis_down) {
        consumer_redis_ok(c);
    }

    slice = c->stats_at - time_mono_ms();
    slice = slice < 1 ? 1 : slice > CONSUMER_WAIT_SLICE_MS
                            ? CONSUMER_WAIT_SLICE_MS : slice;

    if (idle) {
        (void) store_wait_idle(c->store, slice);
    } else {
        (void) store_wait_room(c->store, slice);
    }

    return 0;
}


/* Read what a previous life left in the processing list (newest first). */
static int
consumer_recover(consumer_t *c, char *err, size_t errlen)
{
    redisReply  *r;
    size_t       i;

    r = redisCommand(c->rc, "LRANGE %s 0 -1", c->proc_key);

    if (redis_reply_check(c->rc, r, err, errlen) != 0
        || r->type != REDIS_REPLY_ARRAY)
    {
        if (r != NULL && r->type != REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "LRANGE: unexpected reply type %d",
                     r->type);
        }
        if (r != NULL) {
            freeReplyObject(r);
        }
        return -1;
    }

    for (i = r->elements; i > 0; i--) {
        if (r->element[i - 1]->type != REDIS_REPLY_STRING) {
            continue;
        }
        if (consumer_push(c, r->element[i - 1]->str,
                          r->element[i - 1]->len) != 0)
        {
            freeReplyObject(r);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }

    freeReplyObject(r);

    if (c->n > 0) {
        log_info("recovering processing list", "processing=%s events=%zu",
                 c->proc_key, c->n);
    }

    return 0;
}


/*
 * Fill a batch: wait up to CONSUMER_BLOCK_MS for a first event, then
 * take what is queued, then keep waiting for more until --flush-ms after
 * the first event or the batch is full. Returns 0 (c->n may be 0), or -1
 * on a Redis error.
 */
static int
consumer_collect(consumer_t *c, char *err, size_t errlen)
{
    size_t   batch, chunk, want;
    int64_t  deadline, left, block;
    int      got, drained;

    batch = (size_t) c->settings->batch;

    /* wake up for the next stats tick; 1 ms at least (0 blocks forever) */
    block = c->stats_at - time_mono_ms();
    block = block < 1 ? 1 : block > CONSUMER_BLOCK_MS ? CONSUMER_BLOCK_MS
                                                      : block;

    if (consumer_blmove(c, block, &got, err, errlen) != 0) {
        return -1;
    }

    if (!got) {
        return 0;
    }

    deadline = time_mono_ms() + c->settings->flush_ms;
    chunk = CONSUMER_CHUNK_MIN;

    while (c->n < batch && !signals_stop_requested()) {
        want = batch - c->n < chunk ? batch - c->n : chunk;

        /* a long --flush-ms must not let the heartbeat lapse */
        if (reclaim_heartbeat(&c->live, c->rc, 0, err, errlen) != 0) {
            return -1;
        }

        if (consumer_lmove_chunk(c, want, &drained, err, errlen) != 0) {
            return -1;
        }

        if (!drained) {
            /* the queue keeps giving: ask for more per round trip */
            chunk = chunk * 2 > CONSUMER_CHUNK_MAX ? CONSUMER_CHUNK_MAX
                                                   : chunk * 2;
            continue;
        }

        /* the queue is empty: wait for stragglers until the deadline */
        left = deadline - time_mono_ms();
        if (left <= 0) {
            break;
        }

        if (consumer_blmove(c, left < CONSUMER_BLOCK_MS
                               ? left : CONSUMER_BLOCK_MS,
                            &got, err, errlen) != 0)
        {
            return -1;
        }

        chunk = CONSUMER_CHUNK_MIN;
    }

    return 0;
}


/*
 * While idle, recompute the stats when due, so that windows that slid
 * and held-back changes reach the dashboards. 0, or -1 on a Redis error.
 */
static int
consumer_tick(consumer_t *c, char *err, size_t errlen)
{
    if (time_mono_ms() < c->stats_at) {
        return 0;
    }

    return consumer_aggregate(c, NULL, 0, err, errlen);
}


/* Count and publish valid events (none: stats only); plan the next tick. */
static int
consumer_aggregate(consumer_t *c, const event_t *events, size_t n,
    char *err, size_t errlen)
{
    aggregate_result_t  res;

    if (aggregate_apply(c->agg, c->rc, events, n, &res, err, errlen) != 0) {
        return -1;
    }

    c->sum_live += res.fresh;

    c->stats_at = time_mono_ms()
                  + (res.pending_ms > 0 && res.pending_ms
                     < CONSUMER_STATS_TICK_MS
                     ? res.pending_ms : CONSUMER_STATS_TICK_MS);

    if (n > 0) {
        log_debug("batch published", "events=%zu new=%ld stats=%s", n,
                  res.fresh, res.published ? "published"
                  : res.pending_ms > 0 ? "held" : "unchanged");
    }

    return 0;
}


/* One BLMOVE of at most ms milliseconds; *got says whether it moved one. */
static int
consumer_blmove(consumer_t *c, int64_t ms, int *got, char *err,
    size_t errlen)
{
    redisReply  *r;
    char         timeout[32];
    int          rc;

    *got = 0;

    /* Redis >= 6.2 takes fractional seconds */
    snprintf(timeout, sizeof(timeout), "%.3f", (double) ms / 1000.0);

    r = redisCommand(c->rc, "BLMOVE %s %s RIGHT LEFT %s",
                     c->settings->queue, c->proc_key, timeout);

    if (redis_reply_check(c->rc, r, err, errlen) != 0) {
        if (r != NULL) {
            freeReplyObject(r);
        }
        return -1;
    }

    rc = 0;

    if (r->type == REDIS_REPLY_STRING) {
        if (consumer_push(c, r->str, r->len) != 0) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        } else {
            *got = 1;
        }
    } else if (r->type != REDIS_REPLY_NIL) {
        snprintf(err, errlen, "BLMOVE: unexpected reply type %d", r->type);
        rc = -1;
    }

    freeReplyObject(r);
    return rc;
}


/*
 * Pipeline want LMOVEs and read every reply: each non-nil one is an
 * event now in the processing list and must join the batch (a producer
 * may refill the queue between two nils). *drained: some LMOVE found the
 * queue empty.
 */
static int
consumer_lmove_chunk(consumer_t *c, size_t want, int *drained, char *err,
    size_t errlen)
{
    redisReply  *r;
    const char  *argv[5];
    size_t       argvlen[5], i;
    int          rc;

    *drained = 0;

    argv[0] = "LMOVE";
    argv[1] = c->settings->queue;
    argv[2] = c->proc_key;
    argv[3] = "RIGHT";
    argv[4] = "LEFT";

    for (i = 0; i < 5; i++) {
        argvlen[i] = strlen(argv[i]);
    }

    for (i = 0; i < want; i++) {
        if (redisAppendCommandArgv(c->rc, 5, argv, argvlen) != REDIS_OK) {
            snprintf(err, errlen, "%s", c->rc->errstr);
            return -1;
        }
    }

    rc = 0;

    for (i = 0; i < want; i++) {
        r = NULL;
        if (redisGetReply(c->rc, (void **) &r) != REDIS_OK
            || redis_reply_check(c->rc, r, err, errlen) != 0)
        {
            if (r == NULL) {
                snprintf(err, errlen, "%s", c->rc->errstr);
            } else {
                freeReplyObject(r);
            }
            /* the context is dropped; the processing list is re-read */
            return -1;
        }

        if (r->type == REDIS_REPLY_STRING) {
            if (rc == 0 && consumer_push(c, r->str, r->len) != 0) {
                snprintf(err, errlen, "out of memory");
                rc = -1;
            }
        } else {
            *drained = 1;
        }

        freeReplyObject(r);
    }

    return rc;
}


/*
 * Parse the batch, dead-letter the invalid events, count and publish the
 * valid ones, and hand the batch to the store. 0, or -1 when Redis
 * failed (nothing was applied: the batch stays in the processing list).
 */
static int
consumer_process(consumer_t *c)
{
    store_batch_t  *b;
    size_t          i;
    char            err[1024], q[1100], q2[300];

    b = calloc(1, sizeof(store_batch_t));
    if (b == NULL) {
        goto nomem;
    }

    b->texts = calloc(c->n, sizeof(char *));
    b->events = calloc(c->n, sizeof(event_t));
    b->letters = calloc(c->n, sizeof(char *));

    if (b->texts == NULL || b->events == NULL || b->letters == NULL) {
        goto nomem;
    }

    /* the texts move into the batch: events borrow from them */
    for (i = 0; i < c->n; i++) {
        b->texts[i] = c->items[i].data;
        c->items[i].data = NULL;
    }
    b->n = c->n;

    for (i = 0; i < b->n; i++) {
        if (event_parse(&b->events[b->nvalid], b->texts[i],
                        c->items[i].len, err, sizeof(err)) == 0)
        {
            b->nvalid++;
            continue;
        }

        b->letters[b->ndead] = dlq_letter(b->texts[i], c->items[i].len,
                                          err, 1);
        if (b->letters[b->ndead] == NULL) {
            goto nomem;
        }
        b->ndead++;

        log_warn("event dead-lettered", "err=%s event=%s",
                 log_quote(q, sizeof(q), err),
                 log_quote(q2, sizeof(q2), b->texts[i]));
    }

    /*
     * Live first: dashboards must not wait for PostgreSQL. Nothing is
     * applied when this fails; the batch stays in the processing list.
     */
    if (b->nvalid > 0
        && consumer_aggregate(c, b->events, b->nvalid, err, sizeof(err))
           != 0)
    {
        consumer_redis_lost(c, err);
        store_batch_free(b);
        return -1;
    }

    store_put(c->store, b);
    return 0;

nomem:

    /* like a Redis error: the processing list is re-read */
    log_error("out of memory", "events=%zu", c->n);
    store_batch_free(b);
    return -1;
}


static int
consumer_push(consumer_t *c, const char *data, size_t len)
{
    item_t  *grown;
    char    *copy;

    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        grown = realloc(c->items, c->cap * sizeof(item_t));
        if (grown == NULL) {
            return -1;
        }
        c->items = grown;
    }

    copy = malloc(len + 1);
    if (copy == NULL) {
        return -1;
    }

    memcpy(copy, data, len);
    copy[len] = '\0';

    c->items[c->n].data = copy;
    c->items[c->n].len = len;
    c->n++;
    return 0;
}


static void
consumer_items_clear(consumer_t *c)
{
    size_t  i;

    for (i = 0; i < c->n; i++) {
        free(c->items[i].data);
    }

    c->n = 0;
}


/* Every minute with traffic, and at exit: one info line. */
static void
consumer_summary(consumer_t *c, int force)
{
    store_summary_t  got;
    int64_t          now;

    now = time_mono_ms();

    if (!force && now < c->summary_at) {
        return;
    }

    c->summary_at = now + CONSUMER_SUMMARY_MS;

    if (c->store != NULL) {
        store_summary(c->store, &got);
        c->sum.batches += got.batches;
        c->sum.events += got.events;
        c->sum.inserted += got.inserted;
        c->sum.dead += got.dead;
    }

    if (c->sum.batches == 0 && !force) {
        return;
    }

    log_info("summary", "batches=%ld events=%ld inserted=%ld live=%ld"
             " dead=%ld", c->sum.batches, c->sum.events, c->sum.inserted,
             c->sum_live, c->sum.dead);

    memset(&c->sum, 0, sizeof(c->sum));
    c->sum_live = 0;
}
