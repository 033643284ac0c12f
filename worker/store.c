/*
 * activity-worker: the store thread.
 *
 * The consumer counts and publishes a batch as soon as it is in hand,
 * then hands it over here and goes back to the queue: dashboards never
 * wait for PostgreSQL, and neither do the events behind the batch. This
 * thread stores the batches in the order they were taken (retry.c:
 * retries, outages, refused events), and after each COMMIT retires
 * exactly that batch from the processing list:
 *
 *   EVAL: if the batch is the n rightmost elements of processing:<id>,
 *         LPUSH dead <letters>; LTRIM processing:<id> 0 -(n+1)
 *
 * BLMOVE and LMOVE push on the left, so the oldest batch in hand is the
 * n rightmost elements of the list, whatever the consumer has added on
 * the left meanwhile (the script checks both ends of the batch all the
 * same). LTRIM by count is not idempotent, so a retire whose outcome is
 * unknown (Redis failed) is never sent again: the store turns "broken", drops the later batches unretired, and the
 * consumer, once the store is idle, re-reads the whole list, as after a
 * crash. Storing and counting are idempotent by event id, so a batch
 * handled twice is harmless.
 *
 * At most --store-ahead batches are in hand; then the consumer takes no
 * new events (they wait in the Redis queue) but keeps the heartbeat and
 * the stats going. The thread has its own PostgreSQL connection (db.c;
 * partition maintenance has another, on a thread of its own:
 * partitions.c) and its own Redis connection: hiredis contexts are not
 * thread-safe. It tells metrics.c when work waits and when a batch is
 * finished, so /healthz can say "store stalled".
 */

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dlq.h"
#include "log.h"
#include "metrics.h"
#include "retry.h"
#include "signals.h"
#include "store.h"
#include "timeutil.h"


/* Redis socket timeout of the store's own connection */
#define STORE_SOCKET_MS     5000

/* with nothing to store, look at the closing flag this often */
#define STORE_IDLE_MS       1000


struct store_s {
    const settings_t      *settings;
    const redis_target_t  *target;
    db_t                  *db;
    partitions_t          *parts;
    const char            *proc_key;
    redisContext          *rc;            /* the store thread's own */

    pthread_t              thread;
    pthread_mutex_t        lock;
    pthread_cond_t         put;           /* a batch came, or closing */
    pthread_cond_t         done;          /* a batch was finished */

    /* under lock */
    store_batch_t         *head;          /* oldest first; head in work */
    store_batch_t         *tail;
    size_t                 pending;       /* handed over, not finished */
    int                    closing;
    int                    broken;
    store_summary_t        sum;
};


static void *store_thread(void *arg);
static void store_batch(store_t *s, store_batch_t *b);
static int store_retire(store_t *s, store_batch_t *b, char *err,
    size_t errlen);
static void store_lost(store_t *s, const char *what, const char *err);
static int store_wait(void *arg, int64_t ms);
static void store_deadline(struct timespec *ts, int64_t ms);


store_t *
store_start(const settings_t *settings, const redis_target_t *target,
    db_t *db, partitions_t *parts, const char *proc_key, char *err,
    size_t errlen)
{
    pthread_condattr_t   ca;
    store_t             *s;
    int                  rc;

    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    s->settings = settings;
    s->target = target;
    s->db = db;
    s->parts = parts;     /* runs on its own thread: see partitions.c */
    s->proc_key = proc_key;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->put, &ca);
    pthread_cond_init(&s->done, &ca);
    pthread_condattr_destroy(&ca);

    /* signals stay with the main loop */
    rc = signals_thread_create(&s->thread, store_thread, s);

    if (rc != 0) {
        snprintf(err, errlen, "cannot start the store thread: %s",
                 strerror(rc));
        pthread_cond_destroy(&s->done);
        pthread_cond_destroy(&s->put);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }

    return s;
}


void
store_stop(store_t *s, store_summary_t *sum)
{
    store_batch_t  *b;

    pthread_mutex_lock(&s->lock);
    s->closing = 1;
    pthread_cond_signal(&s->put);
    pthread_mutex_unlock(&s->lock);

    pthread_join(s->thread, NULL);

    *sum = s->sum;

    while (s->head != NULL) {
        b = s->head;
        s->head = b->next;
        store_batch_free(b);
    }

    if (s->rc != NULL) {
        redisFree(s->rc);
    }

    pthread_cond_destroy(&s->done);
    pthread_cond_destroy(&s->put);
    pthread_mutex_destroy(&s->lock);
    free(s);
}


void
store_put(store_t *s, store_batch_t *b)
{
    b->next = NULL;

    pthread_mutex_lock(&s->lock);

    if (s->tail != NULL) {
        s->tail->next = b;
    } else {
        s->head = b;
    }

    s->tail = b;
    s->pending++;

    pthread_cond_signal(&s->put);
    pthread_mutex_unlock(&s->lock);
}


int
store_wait_room(store_t *s, int64_t ms)
{
    struct timespec  ts;
    size_t           ahead;
    int              room;

    ahead = (size_t) s->settings->store_ahead;
    store_deadline(&ts, ms);

    pthread_mutex_lock(&s->lock);

    while (s->pending >= ahead) {
        if (pthread_cond_timedwait(&s->done, &s->lock, &ts) == ETIMEDOUT) {
            break;
        }
    }

    room = s->pending < ahead;

    pthread_mutex_unlock(&s->lock);
    return room;
}


int
store_wait_idle(store_t *s, int64_t ms)
{
    struct timespec  ts;
    int              idle;

    store_deadline(&ts, ms);

    pthread_mutex_lock(&s->lock);

    while (s->pending > 0) {
        if (pthread_cond_timedwait(&s->done, &s->lock, &ts) == ETIMEDOUT) {
            break;
        }
    }

    idle = s->pending == 0;

    pthread_mutex_unlock(&s->lock);
    return idle;
}


int
store_broken(store_t *s)
{
    int  broken;

    pthread_mutex_lock(&s->lock);
    broken = s->broken;
    pthread_mutex_unlock(&s->lock);

    return broken;
}


void
store_resync(store_t *s)
{
    pthread_mutex_lock(&s->lock);
    s->broken = 0;
    pthread_mutex_unlock(&s->lock);
}


void
store_summary(store_t *s, store_summary_t *sum)
{
    pthread_mutex_lock(&s->lock);
    *sum = s->sum;
    memset(&s->sum, 0, sizeof(s->sum));
    pthread_mutex_unlock(&s->lock);
}


void
store_batch_free(store_batch_t *b)
{
    size_t  i;

    if (b == NULL) {
        return;
    }

    for (i = 0; b->events != NULL && i < b->nvalid; i++) {
        /* a tree in the batch's arena goes with it, unwalked */
        if (b->mem != NULL) {
            b->events[i].root = NULL;
        }
        event_free(&b->events[i]);
    }

    evmem_free(b->mem);

    for (i = 0; b->letters != NULL && i < b->ndead; i++) {
        free(b->letters[i]);
    }

    for (i = 0; b->texts != NULL && i < b->n; i++) {
        free(b->texts[i]);
    }

    free(b->events);
    free(b->letters);
    free(b->texts);
    free(b);
}


/*
 * Take the batches in order; a batch stays at the head (and counts as
 * pending) until it is finished. Runs until closing and nothing is left.
 */
static void *
store_thread(void *arg)
{
    struct timespec   ts;
    store_batch_t    *b;
    store_t          *s;
    int               closing;

    s = arg;

    for ( ;; ) {
        pthread_mutex_lock(&s->lock);

        if (s->head == NULL && !s->closing) {
            store_deadline(&ts, STORE_IDLE_MS);
            (void) pthread_cond_timedwait(&s->put, &s->lock, &ts);
        }

        b = s->head;
        closing = s->closing;

        pthread_mutex_unlock(&s->lock);

        if (b == NULL) {
            if (closing) {
                break;
            }
            continue;
        }

        metrics_store_waiting(1);

        store_batch(s, b);

        pthread_mutex_lock(&s->lock);
        s->head = b->next;
        if (s->head == NULL) {
            s->tail = NULL;
        }
        s->pending--;
        metrics_store_waiting(s->pending > 0);
        pthread_cond_broadcast(&s->done);
        pthread_mutex_unlock(&s->lock);

        store_batch_free(b);
    }

    return NULL;
}


/*
 * Store the good events, then retire the batch from Redis together with
 * the dead letters of the bad ones. A batch that cannot be finished is
 * left in the processing list, where the consumer finds it again.
 */
static void
store_batch(store_t *s, store_batch_t *b)
{
    retry_t   rt;
    size_t    i, nrefused;
    int64_t   t0;
    char      err[1024], q[300];

    if (store_broken(s)) {
        /* an earlier batch was not retired: the consumer re-reads */
        return;
    }

    t0 = time_mono_us();
    nrefused = 0;

    memset(&rt, 0, sizeof(rt));
    rt.db = s->db;
    rt.delays = s->settings->retry_ms;
    rt.attempts = s->settings->retry_attempts;
    rt.wait = store_wait;
    rt.arg = s;
    rt.errors = calloc(b->nvalid ? b->nvalid : 1, sizeof(char *));

    if (rt.errors == NULL) {
        store_lost(s, "out of memory", "out of memory");
        return;
    }

    if (b->nvalid > 0 && retry_store(&rt, b->events, b->nvalid) != 0) {
        /* the batch stays in the processing list: safe to leave */
        log_warn("stopping with batch unstored",
                 "events=%zu processing=%s", b->n,
                 log_quote(q, sizeof(q), s->proc_key));
        pthread_mutex_lock(&s->lock);
        s->broken = 1;
        pthread_mutex_unlock(&s->lock);
        goto done;
    }

    /* the events PostgreSQL refused join the dead letters */
    for (i = 0; i < b->nvalid; i++) {
        if (rt.errors[i] == NULL) {
            continue;
        }

        /* refused for its data: never retried, so one attempt */
        b->letters[b->ndead] = dlq_letter(b->events[i].text,
                                          strlen(b->events[i].text),
                                          rt.errors[i], 1);
        if (b->letters[b->ndead] == NULL) {
            store_lost(s, "out of memory", "out of memory");
            goto done;
        }
        b->ndead++;
        nrefused++;
    }

    if (s->rc == NULL) {
        s->rc = redis_open(s->target, STORE_SOCKET_MS, err, sizeof(err));
        if (s->rc == NULL) {
            store_lost(s, "redis", err);
            goto done;
        }
    }

    if (store_retire(s, b, err, sizeof(err)) != 0) {
        store_lost(s, "redis", err);
        goto done;
    }

    if (nrefused > 0) {
        log_warn("batch stored without refused events",
                 "events=%zu inserted=%ld refused=%zu dead=%s", b->n,
                 rt.inserted, nrefused,
                 log_quote(q, sizeof(q), s->settings->dead_key));
    }

    log_debug("batch stored", "events=%zu inserted=%ld dead=%zu ms=%.1f",
              b->n, rt.inserted, b->ndead,
              (double) (time_mono_us() - t0) / 1000.0);

    pthread_mutex_lock(&s->lock);
    s->sum.batches++;
    s->sum.events += (long) b->n;
    s->sum.inserted += rt.inserted;
    s->sum.dead += (long) b->ndead;
    pthread_mutex_unlock(&s->lock);

    metrics_batch(b->n, rt.inserted, b->ndead, time_mono_us() - t0);
    metrics_store_progress();

done:

    for (i = 0; i < b->nvalid; i++) {
        free(rt.errors[i]);
    }

    free(rt.errors);
}


/*
 * One script, so a letter is pushed exactly when its batch leaves the
 * processing list: a crash before it replays the batch and pushes the
 * letters then, never twice. The batch must still be the n rightmost
 * elements (its oldest event at -1, its newest at -n); a list changed
 * under us (requeued by another worker while we were stalled beyond
 * the heartbeat) is left alone. LTRIM to an empty range deletes the key.
 */
static int
store_retire(store_t *s, store_batch_t *b, char *err, size_t errlen)
{
    static const char  script[] =
        "local n = tonumber(ARGV[1])\n"
        "if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[2]\n"
        "   or redis.call('LINDEX', KEYS[1], -n) ~= ARGV[3] then\n"
        "  return 0\n"
        "end\n"
        "for i = 4, #ARGV do redis.call('LPUSH', KEYS[2], ARGV[i]) end\n"
        "redis.call('LTRIM', KEYS[1], 0, -n - 1)\n"
        "return 1\n";
    redisReply   *r;
    const char  **argv;
    size_t       *argvlen, argc, i;
    char          count[32];
    int           rc;

    argc = 8 + b->ndead;
    argv = calloc(argc, sizeof(char *));
    argvlen = calloc(argc, sizeof(size_t));

    if (argv == NULL || argvlen == NULL) {
        free(argv);
        free(argvlen);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    snprintf(count, sizeof(count), "%zu", b->n);

    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = "2";
    argv[3] = s->proc_key;
    argv[4] = s->settings->dead_key;
    argv[5] = count;
    argv[6] = b->texts[0];
    argv[7] = b->texts[b->n - 1];

    for (i = 0; i < b->ndead; i++) {
        argv[8 + i] = b->letters[i];
    }

    argc = 8 + b->ndead;

    for (i = 0; i < argc; i++) {
        argvlen[i] = strlen(argv[i]);
    }

    r = redisCommandArgv(s->rc, (int) argc, argv, argvlen);

    free(argv);
    free(argvlen);

    if (redis_reply_check(s->rc, r, err, errlen) != 0) {
        if (r != NULL) {
            freeReplyObject(r);
        }
        return -1;
    }

    rc = 0;

    if (r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
        snprintf(err, errlen, "the batch is no longer at the end of the"
                 " processing list");
        rc = -1;
    }

    freeReplyObject(r);
    return rc;
}


/*
 * The batch cannot be retired: leave it (and every later one) in the
 * processing list for the consumer to re-read. The consumer logs Redis
 * outages; this says what happened to the batch.
 */
static void
store_lost(store_t *s, const char *what, const char *err)
{
    char  q[600], qp[300];

    log_warn("batch left in processing list", "processing=%s cause=%s"
             " err=%s", log_quote(qp, sizeof(qp), s->proc_key), what,
             log_quote(q, sizeof(q), err));

    if (s->rc != NULL) {
        redisFree(s->rc);
        s->rc = NULL;
    }

    pthread_mutex_lock(&s->lock);
    s->broken = 1;
    pthread_mutex_unlock(&s->lock);
}


/*
 * The wait of retry.c: the consumer thread keeps the heartbeat and the
 * stats going meanwhile. 0, or -1 on a stop request.
 */
static int
store_wait(void *arg, int64_t ms)
{
    (void) arg;

    return time_sleep_ms(ms);
}


static void
store_deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);

    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long) (ms % 1000) * 1000000L;

    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}
