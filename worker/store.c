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
 * the stats going. --store-connections threads (2 by default) each
 * store a batch on a PostgreSQL connection of their own (db.c; the
 * first uses the one main() opened), so PostgreSQL stores the next
 * batch while a thread waits for the previous one's COMMIT or retires
 * it; batches are retired strictly in the order they were put, by the
 * thread whose turn it is, on the store's one Redis connection
 * (hiredis contexts are not thread-safe; the consumer has its own).
 * Two transactions storing the same id wait for each other in
 * PostgreSQL, like two workers do, and the second goes the staged path.
 * Partition maintenance has a connection and a thread of its own
 * (partitions.c). The threads tell metrics.c when work waits and when a
 * batch is finished, so /healthz can say "store stalled".
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

#define STORE_MAX_THREADS   8


typedef struct {
    store_t               *store;
    db_t                  *db;            /* this thread's connection */
    int                    own;           /* db made here, freed here */
    int                    started;
    pthread_t              thread;
} store_thread_t;


struct store_s {
    const settings_t      *settings;
    const redis_target_t  *target;
    db_t                  *db;
    partitions_t          *parts;
    const char            *proc_key;
    redisContext          *rc;            /* used by the thread whose */
                                          /* turn it is to retire */
    store_thread_t         threads[STORE_MAX_THREADS];
    int                    nthreads;
    int                    held;          /* retry.c: batches held */
    pthread_mutex_t        lock;
    pthread_cond_t         put;           /* a batch came, or closing */
    pthread_cond_t         done;          /* a batch was finished */

    /* under lock */
    store_batch_t         *head;          /* oldest first, not finished */
    store_batch_t         *next;          /* the next one to take */
    store_batch_t         *tail;
    uint64_t               seq;           /* given to the next put */
    uint64_t               turn;          /* the seq to retire next */
    size_t                 pending;       /* handed over, not finished */
    int                    closing;
    int                    broken;
    store_summary_t        sum;
};


static void *store_thread(void *arg);
static int store_batch(store_t *s, db_t *db, store_batch_t *b,
    long *inserted, size_t *nrefused);
static void store_finish(store_t *s, store_batch_t *b, long inserted,
    size_t nrefused, int64_t t0);
static int store_retire(store_t *s, store_batch_t *b, char *err,
    size_t errlen);
static void store_lost(store_t *s, const char *what, const char *err);
static int store_wait(void *arg, int64_t ms);
static void store_deadline(struct timespec *ts, int64_t ms);
static void store_join(store_t *s);


store_t *
store_start(const settings_t *settings, const redis_target_t *target,
    db_t *db, partitions_t *parts, const char *proc_key, char *err,
    size_t errlen)
{
    pthread_condattr_t   ca;
    store_thread_t      *st;
    store_t             *s;
    int                  i, rc;

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
    s->nthreads = settings->store_connections;

    if (s->nthreads < 1 || s->nthreads > STORE_MAX_THREADS) {
        s->nthreads = 1;
    }

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->put, &ca);
    pthread_cond_init(&s->done, &ca);
    pthread_condattr_destroy(&ca);

    /* the first thread stores on the connection main() opened */
    for (i = 0; i < s->nthreads; i++) {
        st = &s->threads[i];
        st->store = s;
        st->db = db;

        if (i > 0) {
            /* its thread connects it first thing */
            st->db = db_new(settings->pg_conninfo, "activity-worker",
                            settings->pg_timeout * 1000);
            if (st->db == NULL) {
                snprintf(err, errlen, "out of memory");
                goto failed;
            }
            st->own = 1;
            db_share_outage(st->db, db);
        }
    }

    for (i = 0; i < s->nthreads; i++) {
        st = &s->threads[i];

        /* signals stay with the main loop */
        rc = signals_thread_create(&st->thread, store_thread, st);

        if (rc != 0) {
            snprintf(err, errlen, "cannot start the store thread: %s",
                     strerror(rc));
            goto failed;
        }

        st->started = 1;
    }

    return s;

failed:

    store_join(s);
    pthread_cond_destroy(&s->done);
    pthread_cond_destroy(&s->put);
    pthread_mutex_destroy(&s->lock);
    free(s);
    return NULL;
}


void
store_stop(store_t *s, store_summary_t *sum)
{
    store_batch_t  *b;

    store_join(s);

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


/* Close: the threads finish what was put, then end; their own dbs go. */
static void
store_join(store_t *s)
{
    store_thread_t  *st;
    int              i;

    pthread_mutex_lock(&s->lock);
    s->closing = 1;
    pthread_cond_broadcast(&s->put);
    pthread_mutex_unlock(&s->lock);

    for (i = 0; i < s->nthreads; i++) {
        st = &s->threads[i];

        if (st->started) {
            pthread_join(st->thread, NULL);
            st->started = 0;
        }

        if (st->own) {
            db_free(st->db);
            st->own = 0;
        }
    }
}


void
store_put(store_t *s, store_batch_t *b)
{
    b->next = NULL;

    pthread_mutex_lock(&s->lock);

    b->seq = s->seq++;

    if (s->tail != NULL) {
        s->tail->next = b;
    } else {
        s->head = b;
    }

    if (s->next == NULL) {
        s->next = b;
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
 * Take the batches in order, store one on this thread's connection
 * while the other threads store the next ones, then wait for its turn:
 * batches are retired in the order they were put, since each must be
 * the oldest in the processing list when it leaves. A batch stays in
 * the list (and counts as pending) until it is retired or given up.
 * Runs until closing and nothing is left to take.
 */
static void *
store_thread(void *arg)
{
    struct timespec   ts;
    store_thread_t   *st;
    store_batch_t    *b;
    store_t          *s;
    size_t            nrefused;
    int64_t           t0;
    long              inserted;
    int               closing, stored;

    st = arg;
    s = st->store;

    if (st->own) {
        /* connected before the first batch, like the first thread's */
        (void) db_get(st->db);
    }

    for ( ;; ) {
        pthread_mutex_lock(&s->lock);

        if (s->next == NULL && !s->closing) {
            store_deadline(&ts, STORE_IDLE_MS);
            (void) pthread_cond_timedwait(&s->put, &s->lock, &ts);
        }

        b = s->next;
        if (b != NULL) {
            s->next = b->next;
        }
        closing = s->closing;

        pthread_mutex_unlock(&s->lock);

        if (b == NULL) {
            if (closing) {
                break;
            }
            continue;
        }

        metrics_store_waiting(1);

        t0 = time_mono_us();
        stored = store_batch(s, st->db, b, &inserted, &nrefused) == 0;

        /* the batches before this one leave the list first */
        pthread_mutex_lock(&s->lock);
        while (s->turn != b->seq) {
            (void) pthread_cond_wait(&s->done, &s->lock);
        }
        pthread_mutex_unlock(&s->lock);

        if (stored) {
            store_finish(s, b, inserted, nrefused, t0);
        }

        pthread_mutex_lock(&s->lock);
        /* the oldest: every batch put before it is finished */
        s->head = b->next;
        if (s->head == NULL) {
            s->tail = NULL;
        }
        s->turn++;
        s->pending--;
        metrics_store_waiting(s->pending > 0);
        pthread_cond_broadcast(&s->done);
        pthread_mutex_unlock(&s->lock);

        store_batch_free(b);
    }

    return NULL;
}


/*
 * Store the good events; the events PostgreSQL refused become dead
 * letters of the batch. 0 when the batch may be retired, -1 when it
 * must stay in the processing list, where the consumer finds it again.
 */
static int
store_batch(store_t *s, db_t *db, store_batch_t *b, long *inserted,
    size_t *nrefused)
{
    retry_t   rt;
    size_t    i;
    char      q[300];
    int       rc;

    *inserted = 0;
    *nrefused = 0;

    if (store_broken(s)) {
        /* an earlier batch was not retired: the consumer re-reads */
        return -1;
    }

    memset(&rt, 0, sizeof(rt));
    rt.db = db;
    rt.delays = s->settings->retry_ms;
    rt.attempts = s->settings->retry_attempts;
    rt.wait = store_wait;
    rt.arg = s;
    rt.held = &s->held;
    rt.errors = calloc(b->nvalid ? b->nvalid : 1, sizeof(char *));

    if (rt.errors == NULL) {
        store_lost(s, "out of memory", "out of memory");
        return -1;
    }

    rc = -1;

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
        (*nrefused)++;
    }

    *inserted = rt.inserted;
    rc = 0;

done:

    for (i = 0; i < b->nvalid; i++) {
        free(rt.errors[i]);
    }

    free(rt.errors);

    return rc;
}


/*
 * Retire a stored batch from Redis together with its dead letters: on
 * the thread whose turn it is, so the one Redis connection is its alone.
 */
static void
store_finish(store_t *s, store_batch_t *b, long inserted, size_t nrefused,
    int64_t t0)
{
    char  err[1024], q[300];

    if (store_broken(s)) {
        /* an earlier batch was not retired: this one must wait too */
        return;
    }

    if (s->rc == NULL) {
        s->rc = redis_open(s->target, STORE_SOCKET_MS, err, sizeof(err));
        if (s->rc == NULL) {
            store_lost(s, "redis", err);
            return;
        }
    }

    if (store_retire(s, b, err, sizeof(err)) != 0) {
        redisFree(s->rc);
        s->rc = NULL;
        store_lost(s, "redis", err);
        return;
    }

    if (nrefused > 0) {
        log_warn("batch stored without refused events",
                 "events=%zu inserted=%ld refused=%zu dead=%s", b->n,
                 inserted, nrefused,
                 log_quote(q, sizeof(q), s->settings->dead_key));
    }

    log_debug("batch stored", "events=%zu inserted=%ld dead=%zu ms=%.1f",
              b->n, inserted, b->ndead,
              (double) (time_mono_us() - t0) / 1000.0);

    pthread_mutex_lock(&s->lock);
    s->sum.batches++;
    s->sum.events += (long) b->n;
    s->sum.inserted += inserted;
    s->sum.dead += (long) b->ndead;
    pthread_mutex_unlock(&s->lock);

    metrics_batch(b->n, inserted, b->ndead, time_mono_us() - t0);
    metrics_store_progress();
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
