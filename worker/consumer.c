/*
 * activity-worker: the reliable queue consumer.
 *
 * The Redis "reliable queue" pattern. The module LPUSHes, so the oldest
 * event is at the right end of the queue:
 *
 *   BLMOVE queue processing:<id> RIGHT LEFT 1     wait for a first event
 *   EVAL <take script> 16                          in the same write (fewer
 *                                                  when the batch is nearly
 *                                                  full): Redis runs it as
 *                                                  BLMOVE returns
 *   EVAL <take script> k                           LRANGE, LTRIM, LPUSH:
 *                                                  k more, until the queue
 *                                                  is empty or 500 are in
 *                                                  hand
 *   EVALSHA <aggregate script> <valid events>      count and publish now
 *   ... repeat, adding to the batch being built ...
 *   hand the batch to the store thread (store.c) once it holds --batch
 *   events or --flush-ms passed since its first one
 *
 * and the store thread, in the order the batches were taken:
 *
 *   ... store the batch in PostgreSQL (pgwriter.c), COMMIT ...
 *   EVAL: LPUSH dead <letters>; LTRIM processing:<id> 0 -(n+1)
 *
 * An event leaves Redis only after the transaction holding it committed,
 * so a crash at any point loses nothing: the next start finds the
 * batches in the processing list and stores them again, which the writer
 * makes idempotent. The processing list, not memory, is the truth: after
 * any Redis error, once the store has finished or dropped what it holds,
 * the whole list is re-read.
 *
 * Publishing never waits for a batch to fill: whatever is in hand when
 * the queue is momentarily empty is counted and published at once, and
 * only storage batches (by --batch and --flush-ms). An element that is
 * not a valid event (bad JSON, a NUL byte) leaves the processing list at
 * once, in one script with its dead letter, so it never reaches the
 * store, whose retire compares texts. On start (and after any Redis
 * error) the processing list is re-read from its oldest end in batches
 * of at most --batch.
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

/* while Redis refuses BLMOVE (maxmemory), poll the queue this often */
#define CONSUMER_OOM_POLL_MS      100

/* first take script round; doubles while the queue keeps giving */
#define CONSUMER_CHUNK_MIN        16
#define CONSUMER_CHUNK_MAX        1024

/*
 * Most events taken, and counted and published in one message, at a
 * time: a bigger --batch makes fewer transactions, not bigger messages.
 */
#define CONSUMER_COLLECT_MAX      500


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

    store_batch_t         *pend;           /* published, not yet stored */
    int64_t                pend_due;       /* hand it over by then */

    int                    recovering;     /* re-reading the list */
    long                   rec_hi;         /* next chunk ends here */
    int                    flush_now;      /* a recovered chunk in hand */
    int                    oom_queue;      /* Redis refuses BLMOVE */
    int                    oom_live;       /* ... and the live counters */

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
static int consumer_recover_start(consumer_t *c, char *err, size_t errlen);
static int consumer_recover_chunk(consumer_t *c, char *err, size_t errlen);
static int consumer_collect(consumer_t *c, char *err, size_t errlen);
static int consumer_tick(consumer_t *c, char *err, size_t errlen);
static int consumer_aggregate(consumer_t *c, const event_t *events,
    size_t n, char *err, size_t errlen);
static int consumer_blmove(consumer_t *c, int64_t ms, size_t want, int *got,
    int *drained, char *err, size_t errlen);
static int consumer_take(consumer_t *c, size_t want, int *drained,
    char *err, size_t errlen);
static int consumer_take_append(consumer_t *c, size_t want, char *err,
    size_t errlen);
static int consumer_take_reply(consumer_t *c, size_t want, int *drained,
    char *err, size_t errlen);
static int consumer_is_oom(const char *err);
static int consumer_process(consumer_t *c);
static int consumer_bury(consumer_t *c, const size_t *bad, char **letters,
    size_t nbad, char *err, size_t errlen);
static int consumer_parse(store_batch_t *b, const char *data, size_t len,
    char *err, size_t errlen);
static store_batch_t *consumer_batch_new(size_t cap);
static void consumer_flush(consumer_t *c, int force);
static void consumer_pend_drop(consumer_t *c);
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

    while (!signals_stop_requested() && !reclaim_lost(&c.live)) {
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

        if (rc > 0) {
            /* another process holds our id: wait for it to lapse */
            (void) time_sleep_ms(CONSUMER_WAIT_SLICE_MS);
            continue;
        }

        if (rc != 0) {
            /* handled below */

        } else if (need_recover) {
            /* what is being built is in the list: it is read again */
            consumer_pend_drop(&c);

            /* re-read the list only once the store holds nothing */
            if (!store_wait_idle(c.store, 0)) {
                rc = consumer_pause(&c, 1, err, sizeof(err));
                if (rc == 0) {
                    continue;
                }
            } else {
                store_resync(c.store);
                rc = consumer_recover_start(&c, err, sizeof(err));
            }

        } else {
            rc = consumer_tick(&c, err, sizeof(err));

            if (rc == 0 && !store_wait_room(c.store, 0)) {
                /* PostgreSQL is behind: leave new events in the queue */
                rc = consumer_pause(&c, 0, err, sizeof(err));
                if (rc == 0) {
                    continue;
                }
            } else if (rc == 0 && c.recovering) {
                rc = consumer_recover_chunk(&c, err, sizeof(err));
            } else if (rc == 0) {
                /* a batch whose window passed goes before new events */
                consumer_flush(&c, 0);

                if (store_wait_room(c.store, 0)) {
                    rc = consumer_collect(&c, err, sizeof(err));
                }
            }
        }

        if (rc != 0) {
            consumer_items_clear(&c);
            consumer_pend_drop(&c);
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

        if (c.n > 0) {
            rc = consumer_process(&c);
            consumer_items_clear(&c);

            if (rc != 0) {
                consumer_pend_drop(&c);
                need_recover = 1;
                consumer_backoff(&c);
                continue;
            }
        }

        /* a recovered chunk is one batch of its own, stored at once */
        consumer_flush(&c, c.flush_now);
        c.flush_now = 0;
    }

    /* SIGTERM: the store finishes what it holds, then we say goodbye */
    consumer_items_clear(&c);
    consumer_flush(&c, 1);
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

    rc = reclaim_lost(&c.live) ? 1 : 0;

    reclaim_free(&c.live);
    aggregate_free(c.agg);
    free(c.items);
    free(c.proc_key);
    return rc;
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
    char  where[300], peer[300];

    if (c->redis_down || !c->redis_seen) {
        if (c->target->nsentinels > 0) {
            /* which master the sentinels named: it changes on failover */
            log_info("redis connected", "redis=%s master=%s queue=%s"
                     " processing=%s",
                     redis_target_describe(c->target, where, sizeof(where)),
                     redis_peer(c->rc, peer, sizeof(peer)),
                     c->settings->queue, c->proc_key);
        } else {
            log_info("redis connected", "redis=%s queue=%s processing=%s",
                     redis_target_describe(c->target, where, sizeof(where)),
                     c->settings->queue, c->proc_key);
        }
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


/*
 * Heartbeat when due (or forced), then a reclaim round when due. 0; 1
 * while another process holds our worker id; -1 on a Redis error.
 */
static int
consumer_liveness(consumer_t *c, int force, char *err, size_t errlen)
{
    int  rc;

    rc = reclaim_heartbeat(&c->live, c->rc, force, err, errlen);
    if (rc != 0) {
        return rc;
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


/*
 * Start re-reading what a previous life (or a Redis error) left in the
 * processing list. Nothing is added on its left meanwhile (no events are
 * collected) and the store retires from its right, so the index of an
 * element counted from the left stays put: the list is read from its
 * oldest end in chunks of at most --batch (consumer_recover_chunk).
 */
static int
consumer_recover_start(consumer_t *c, char *err, size_t errlen)
{
    redisReply  *r;

    r = redisCommand(c->rc, "LLEN %s", c->proc_key);

    if (redis_reply_check(c->rc, r, err, errlen) != 0
        || r->type != REDIS_REPLY_INTEGER)
    {
        if (r != NULL && r->type != REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "LLEN: unexpected reply type %d",
                     r->type);
        }
        if (r != NULL) {
            freeReplyObject(r);
        }
        return -1;
    }

    c->rec_hi = (long) r->integer - 1;
    c->recovering = r->integer > 0;
    freeReplyObject(r);

    if (c->recovering) {
        log_info("recovering processing list", "processing=%s events=%ld"
                 " batch=%d", c->proc_key, c->rec_hi + 1,
                 c->settings->batch);
    }

    return 0;
}


/* The next (older first) chunk of the list being recovered. */
static int
consumer_recover_chunk(consumer_t *c, char *err, size_t errlen)
{
    redisReply  *r;
    size_t       i;
    long         lo;

    lo = c->rec_hi - c->settings->batch + 1;
    if (lo < 0) {
        lo = 0;
    }

    r = redisCommand(c->rc, "LRANGE %s %ld %ld", c->proc_key, lo,
                     c->rec_hi);

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

    /* newest first in the list: the oldest is the last element */
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

    c->rec_hi = lo - 1;
    c->recovering = c->rec_hi >= 0;
    c->flush_now = 1;

    return 0;
}


/*
 * Take what is there: wait up to CONSUMER_BLOCK_MS (less when the stats
 * or the batch being built are due sooner) for a first event, then move
 * events until the queue is momentarily empty or the batch being built
 * is full. Never waits for more: what is in hand is published now.
 * Returns 0 (c->n may be 0), or -1 on a Redis error.
 */
static int
consumer_collect(consumer_t *c, char *err, size_t errlen)
{
    size_t   room, chunk, want;
    int64_t  now, block;
    int      got, drained;

    room = (size_t) c->settings->batch - (c->pend ? c->pend->n : 0);

    if (room == 0) {
        /* cannot happen: a full batch is handed over at once */
        return 0;
    }

    if (room > CONSUMER_COLLECT_MAX) {
        room = CONSUMER_COLLECT_MAX;
    }

    now = time_mono_ms();

    /* wake up for the next stats tick; 1 ms at least (0 blocks forever) */
    block = c->stats_at - now;
    if (c->pend != NULL && c->pend->n > 0 && c->pend_due - now < block) {
        block = c->pend_due - now;
    }
    block = block < 1 ? 1 : block > CONSUMER_BLOCK_MS ? CONSUMER_BLOCK_MS
                                                      : block;

    /* the take script rides behind BLMOVE; BLMOVE itself may take one */
    want = room - 1 < CONSUMER_CHUNK_MIN ? room - 1 : CONSUMER_CHUNK_MIN;

    if (consumer_blmove(c, block, want, &got, &drained, err, errlen) != 0) {
        if (!consumer_is_oom(err)) {
            return -1;
        }

        /* Redis is full and refuses BLMOVE: poll with the take script */
        if (!c->oom_queue) {
            log_warn("redis OOM: BLMOVE refused, taking events by script",
                     "queue=%s", c->settings->queue);
            c->oom_queue = 1;
        }

        if (want == 0 && consumer_take(c, 1, &drained, err, errlen) != 0) {
            return -1;
        }

        if (c->n == 0) {
            (void) time_sleep_ms(block < CONSUMER_OOM_POLL_MS
                                 ? block : CONSUMER_OOM_POLL_MS);
            return 0;
        }

    } else if (c->oom_queue) {
        log_info("redis accepts BLMOVE again", "queue=%s",
                 c->settings->queue);
        c->oom_queue = 0;
    }

    /* an event may arrive between BLMOVE's timeout and the script */
    if ((!got && c->n == 0) || drained) {
        return 0;
    }

    chunk = CONSUMER_CHUNK_MIN * 2;

    while (c->n < room && !signals_stop_requested()) {
        want = room - c->n < chunk ? room - c->n : chunk;

        if (consumer_take(c, want, &drained, err, errlen) != 0) {
            return -1;
        }

        if (drained) {
            break;
        }

        /* the queue keeps giving: ask for more per round trip */
        chunk = chunk * 2 > CONSUMER_CHUNK_MAX ? CONSUMER_CHUNK_MAX
                                               : chunk * 2;
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
    char                q[600];

    if (aggregate_apply(c->agg, c->rc, events, n, &res, err, errlen) != 0) {
        if (!consumer_is_oom(err)) {
            return -1;
        }

        /* Redis is full: the live side waits, the events are stored */
        if (!c->oom_live) {
            log_error("redis OOM: live counters paused, storing continues",
                      "events_not_published=%zu maxmemory_err=%s", n,
                      log_quote(q, sizeof(q), err));
            c->oom_live = 1;
        }

        c->stats_at = time_mono_ms() + CONSUMER_STATS_TICK_MS;
        return 0;
    }

    /* resumed only once something was written (a no-op passes OOM) */
    if (c->oom_live && (res.fresh > 0 || res.published)) {
        log_info("redis memory available again: live counters resumed",
                 NULL);
        c->oom_live = 0;
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


/*
 * One BLMOVE of at most ms milliseconds, and behind it in the same write
 * the take script for up to want more (0: none): Redis runs the script
 * the moment BLMOVE returns, so a lone event costs one round trip, not
 * two, before it is published. *got: BLMOVE moved one; *drained: the
 * script found the queue empty. When Redis refuses BLMOVE (maxmemory)
 * the script still ran and what it took is in hand; the error is
 * BLMOVE's.
 */
static int
consumer_blmove(consumer_t *c, int64_t ms, size_t want, int *got,
    int *drained, char *err, size_t errlen)
{
    redisReply  *r;
    void        *reply;
    char         timeout[32];
    int          rc;

    *got = 0;
    *drained = 0;

    /* Redis >= 6.2 takes fractional seconds */
    snprintf(timeout, sizeof(timeout), "%.3f", (double) ms / 1000.0);

    if (redisAppendCommand(c->rc, "BLMOVE %s %s RIGHT LEFT %s",
                           c->settings->queue, c->proc_key, timeout)
        != REDIS_OK)
    {
        snprintf(err, errlen, "BLMOVE: %s", c->rc->errstr);
        return -1;
    }

    if (want > 0 && consumer_take_append(c, want, err, errlen) != 0) {
        return -1;
    }

    reply = NULL;
    (void) redisGetReply(c->rc, &reply);
    r = reply;

    if (r == NULL) {
        /* the connection failed: the context is dropped */
        snprintf(err, errlen, "%s", c->rc->err ? c->rc->errstr : "no reply");
        return -1;
    }

    rc = 0;

    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%.*s", (int) r->len, r->str);
        rc = -1;
    } else if (r->type == REDIS_REPLY_STRING) {
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

    if (want == 0 || (rc != 0 && !consumer_is_oom(err))) {
        /* any error but OOM drops the context, the script's reply too */
        return rc;
    }

    if (consumer_take_reply(c, want, drained, err, errlen) != 0) {
        return -1;
    }

    return rc;
}


/*
 * Move up to want events from the queue into the processing list in one
 * script, atomic like LMOVE and in the same order (the oldest is taken
 * first and ends up left of what was taken before), and add each to
 * the batch. Three calls, not two an event: LRANGE reads the oldest
 * (rightmost) k, LTRIM cuts them off, one LPUSH pushes them oldest
 * first. LTRIM is the first write: Redis checks maxmemory only at a
 * script's first write, and LTRIM frees memory (it is no "denyoom"
 * command), so events keep moving (and reach PostgreSQL) when Redis is
 * full and refuses BLMOVE. *drained: the queue ran empty.
 */
static int
consumer_take(consumer_t *c, size_t want, int *drained, char *err,
    size_t errlen)
{
    if (consumer_take_append(c, want, err, errlen) != 0) {
        return -1;
    }

    return consumer_take_reply(c, want, drained, err, errlen);
}


/* Queue the take script for up to want (>= 1) events on the context. */
static int
consumer_take_append(consumer_t *c, size_t want, char *err, size_t errlen)
{
    static const char  script[] =
        "local v = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1)\n"
        "local k = #v\n"
        "if k == 0 then return v end\n"
        "redis.call('LTRIM', KEYS[1], 0, -k - 1)\n"
        "local out = {}\n"
        "for i = 1, k do out[i] = v[k + 1 - i] end\n"
        "redis.call('LPUSH', KEYS[2], unpack(out))\n"
        "return out\n";
    const char  *argv[6];
    size_t       argvlen[6], i;
    char         num[32];

    snprintf(num, sizeof(num), "%zu", want);

    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = "2";
    argv[3] = c->settings->queue;
    argv[4] = c->proc_key;
    argv[5] = num;

    for (i = 0; i < 6; i++) {
        argvlen[i] = strlen(argv[i]);
    }

    if (redisAppendCommandArgv(c->rc, 6, argv, argvlen) != REDIS_OK) {
        snprintf(err, errlen, "take script: %s", c->rc->errstr);
        return -1;
    }

    return 0;
}


/* The take script's answer: its events join the batch. */
static int
consumer_take_reply(consumer_t *c, size_t want, int *drained, char *err,
    size_t errlen)
{
    redisReply  *r;
    void        *reply;
    size_t       i;
    int          rc;

    *drained = 0;

    reply = NULL;
    (void) redisGetReply(c->rc, &reply);
    r = reply;

    if (redis_reply_check(c->rc, r, err, errlen) != 0
        || r->type != REDIS_REPLY_ARRAY)
    {
        if (r != NULL && r->type != REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "take script: unexpected reply type %d",
                     r->type);
        }
        if (r != NULL) {
            freeReplyObject(r);
        }
        /* the context is dropped; the processing list is re-read */
        return -1;
    }

    rc = 0;

    for (i = 0; i < r->elements; i++) {
        if (r->element[i]->type == REDIS_REPLY_STRING
            && consumer_push(c, r->element[i]->str, r->element[i]->len)
               != 0)
        {
            snprintf(err, errlen, "out of memory");
            rc = -1;
            break;
        }
    }

    *drained = r->elements < want;

    freeReplyObject(r);
    return rc;
}


/*
 * Parse what was collected: the valid events join the batch being
 * built and are counted and published now; an element that is not a
 * valid event leaves the processing list at once with its dead letter
 * (consumer_bury). 0, or -1 when Redis failed (the caller drops the
 * batch being built: the processing list is re-read).
 */
static int
consumer_process(consumer_t *c)
{
    store_batch_t  *b;
    size_t          i, first, nbad, *bad;
    char          **letters, err[1024], q[1100], q2[300];
    int             rc;

    if (c->pend == NULL) {
        c->pend = consumer_batch_new((size_t) c->settings->batch);
        if (c->pend == NULL) {
            goto nomem;
        }
    }

    b = c->pend;
    first = b->nvalid;

    bad = calloc(c->n, sizeof(size_t));
    letters = calloc(c->n, sizeof(char *));
    nbad = 0;

    if (bad == NULL || letters == NULL) {
        free(bad);
        free(letters);
        goto nomem;
    }

    rc = 0;

    for (i = 0; i < c->n; i++) {
        if (memchr(c->items[i].data, '\0', c->items[i].len) != NULL) {
            snprintf(err, sizeof(err), "the event holds a NUL byte");

        } else if (consumer_parse(b, c->items[i].data, c->items[i].len,
                                  err, sizeof(err)) == 0)
        {
            /* the text moves into the batch: the event borrows from it */
            if (b->n == 0) {
                c->pend_due = time_mono_ms() + c->settings->flush_ms;
            }
            b->texts[b->n++] = c->items[i].data;
            c->items[i].data = NULL;
            b->nvalid++;
            continue;
        }

        letters[nbad] = dlq_letter(c->items[i].data, c->items[i].len, err,
                                   1);
        if (letters[nbad] == NULL) {
            rc = -2;
            break;
        }
        bad[nbad++] = i;

        log_warn("event dead-lettered", "err=%s bytes=%zu event=%s",
                 log_quote(q, sizeof(q), err), c->items[i].len,
                 log_quote(q2, sizeof(q2), c->items[i].data));
    }

    if (rc == 0 && nbad > 0) {
        rc = consumer_bury(c, bad, letters, nbad, err, sizeof(err));
        if (rc == 0) {
            metrics_poison(nbad);
        }
    }

    for (i = 0; i < nbad; i++) {
        free(letters[i]);
    }
    free(letters);
    free(bad);

    if (rc == -2) {
        goto nomem;
    }

    /*
     * Live first: dashboards must not wait for PostgreSQL. A slice that
     * fails applies nothing; the events stay in the processing list, and
     * the slices before it are not counted again when read again.
     */
    for (i = first; rc == 0 && i < b->nvalid; i += CONSUMER_COLLECT_MAX) {
        /* a recovered chunk may be a whole --batch: messages stay small */
        rc = consumer_aggregate(c, b->events + i,
                                b->nvalid - i < CONSUMER_COLLECT_MAX
                                ? b->nvalid - i : CONSUMER_COLLECT_MAX,
                                err, sizeof(err));
    }

    if (rc != 0) {
        consumer_redis_lost(c, err);
        return -1;
    }

    return 0;

nomem:

    /* like a Redis error: the processing list is re-read */
    log_error("out of memory", "events=%zu", c->n);
    return -1;
}


/*
 * The elements that are not valid events leave the processing list now,
 * each in the same script as its letter, so a poison element can never
 * wedge the batch behind it nor be dead-lettered twice. LREM comes
 * first: Redis checks maxmemory only at a script's first write, and
 * LREM frees memory, so a full Redis still takes the letter (the dead
 * list's type is checked before anything is written). LREM counts
 * from the right (the oldest end): what lies
 * right of the elements in hand is only valid events the store holds.
 * Lengths are passed, never strlen(): the bytes may hold NULs.
 */
static int
consumer_bury(consumer_t *c, const size_t *bad, char **letters,
    size_t nbad, char *err, size_t errlen)
{
    static const char  script[] =
        "local t = redis.call('TYPE', KEYS[2]).ok\n"
        "if t ~= 'list' and t ~= 'none' then\n"
        "  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' is a ' .. t)\n"
        "end\n"
        "for i = 1, #ARGV, 2 do\n"
        "  redis.call('LREM', KEYS[1], -1, ARGV[i])\n"
        "  redis.call('LPUSH', KEYS[2], ARGV[i + 1])\n"
        "end\n"
        "return 1\n";
    redisReply   *r;
    const char  **argv;
    size_t       *argvlen, argc, i;

    argc = 5 + 2 * nbad;
    argv = calloc(argc, sizeof(char *));
    argvlen = calloc(argc, sizeof(size_t));

    if (argv == NULL || argvlen == NULL) {
        free(argv);
        free(argvlen);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = "2";
    argv[3] = c->proc_key;
    argv[4] = c->settings->dead_key;

    for (i = 0; i < 5; i++) {
        argvlen[i] = strlen(argv[i]);
    }

    for (i = 0; i < nbad; i++) {
        argv[5 + 2 * i] = c->items[bad[i]].data;
        argvlen[5 + 2 * i] = c->items[bad[i]].len;
        argv[6 + 2 * i] = letters[i];
        argvlen[6 + 2 * i] = strlen(letters[i]);
    }

    r = redisCommandArgv(c->rc, (int) argc, argv, argvlen);

    free(argv);
    free(argvlen);

    if (redis_reply_check(c->rc, r, err, errlen) != 0) {
        if (r != NULL) {
            freeReplyObject(r);
        }
        return -1;
    }

    freeReplyObject(r);
    return 0;
}


/* Parse into the next event of b, the tree in b's arena. */
static int
consumer_parse(store_batch_t *b, const char *data, size_t len, char *err,
    size_t errlen)
{
    int  rc;

    evmem_use(b->mem);
    rc = event_parse(&b->events[b->nvalid], data, len, err, errlen);
    evmem_use(NULL);

    return rc;
}


/* An empty batch with room for cap events. */
static store_batch_t *
consumer_batch_new(size_t cap)
{
    store_batch_t  *b;

    b = calloc(1, sizeof(store_batch_t));
    if (b == NULL) {
        return NULL;
    }

    b->texts = calloc(cap, sizeof(char *));
    b->events = calloc(cap, sizeof(event_t));
    b->letters = calloc(cap, sizeof(char *));
    b->mem = evmem_new();

    if (b->texts == NULL || b->events == NULL || b->letters == NULL
        || b->mem == NULL)
    {
        store_batch_free(b);
        return NULL;
    }

    return b;
}


/*
 * Hand the batch being built to the store when it is full, its window
 * (--flush-ms after its first event) has passed, or force is set. The
 * caller made sure the store has room.
 */
static void
consumer_flush(consumer_t *c, int force)
{
    store_batch_t  *b;

    b = c->pend;

    if (b == NULL) {
        return;
    }

    if (b->n == 0) {
        if (force) {
            store_batch_free(b);
            c->pend = NULL;
        }
        return;
    }

    if (!force && b->n < (size_t) c->settings->batch
        && time_mono_ms() < c->pend_due)
    {
        return;
    }

    c->pend = NULL;
    store_put(c->store, b);
}


/* Forget the batch being built: its events are in the processing list. */
static void
consumer_pend_drop(consumer_t *c)
{
    store_batch_free(c->pend);
    c->pend = NULL;
}


/* Redis's answer at maxmemory with noeviction: "OOM command not ..." */
static int
consumer_is_oom(const char *err)
{
    return strncmp(err, "OOM ", 4) == 0;
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
