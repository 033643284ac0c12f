
/*
 * The per-worker event queue.
 *
 * Events wait in one FIFO list until Redis acknowledges them.  "unsent"
 * marks the first event not yet written; everything before it is in
 * flight.  LPUSH replies arrive in order, so a reply always acknowledges
 * the oldest events.  When the connection is lost, whatever was in flight
 * is sent again after the reconnect: the worker stores an event id once,
 * so a resent event is never a duplicate row.
 *
 * One LPUSH round trip at a time: events that arrive while one is in
 * flight wait for its reply and then leave together.  Idle, an event goes
 * out at the end of its loop iteration; busy, batches grow with the load
 * and Redis sees far fewer commands and writes.
 *
 * Replication is asynchronous: a master that dies right after it
 * answered an LPUSH may take the events with it, and the replica that
 * takes over never had them.  With activity_redis_wait_replica (on by
 * default with redis+sentinel://) the LPUSHes of a flush are followed by
 * "WAIT 1 timeout" in the same write, and the events are let go only
 * when a replica has them; until then they count as in flight, so a lost
 * connection sends them again (to the new master, after a failover).
 * When no replica confirms in time (none is connected, or it lags), the
 * events are let go anyway, counted as unreplicated and logged once, and
 * the next flushes do not wait for a while: the queue keeps its pace,
 * the master's copy is all there is.  A refused WAIT (an ACL without it)
 * is the same case, logged once at error: the events are in Redis, sending
 * them again would only push them again.  min-replicas-to-write on the
 * master turns that case into refused writes, which are kept and retried.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_activity_queue.h"
#include "ngx_http_activity_redis.h"
#include "ngx_http_activity_spool.h"
#include "ngx_http_activity_status.h"


/* arguments of one LPUSH; a flush may issue several, in one write */
#define NGX_HTTP_ACTIVITY_LPUSH_MAX     512

/* a Redis that takes longer to answer is treated as gone */
#define NGX_HTTP_ACTIVITY_REPLY_TIMEOUT 5000

/* how often a connected worker looks for spooled events */
#define NGX_HTTP_ACTIVITY_SPOOL_CHECK   1000

/* after a WAIT no replica answered in time, flushes do not wait this long */
#define NGX_HTTP_ACTIVITY_WAIT_PAUSE    5000

/* what was logged about WAIT (unreplicated_logged) */
#define NGX_HTTP_ACTIVITY_WAIT_NO_REPLICA   1
#define NGX_HTTP_ACTIVITY_WAIT_REFUSED      2


typedef struct ngx_http_activity_entry_s  ngx_http_activity_entry_t;

struct ngx_http_activity_entry_s {
    ngx_http_activity_entry_t   *next;
    size_t                       len;
    u_char                       data[1];
};


struct ngx_http_activity_queue_s {
    ngx_http_activity_redis_t    redis;
    ngx_str_t                    key;
    ngx_log_t                   *log;
    ngx_http_activity_stats_t   *stats;

    ngx_http_activity_entry_t   *head;      /* oldest unacknowledged */
    ngx_http_activity_entry_t   *unsent;    /* first not yet written */
    ngx_http_activity_entry_t  **last;
    size_t                       bytes;     /* held, entries included */
    size_t                       limit;
    ngx_uint_t                   held;
    ngx_uint_t                   held_logged;  /* once per outage */
    ngx_uint_t                   in_flight;  /* LPUSH (and WAIT) */

    ngx_msec_t                   wait;       /* WAIT timeout, 0: off */
    ngx_msec_t                   wait_paused;  /* since, while paused */
    ngx_uint_t                   unreplicated_logged;  /* WAIT_* */

    ngx_uint_t                   dropped;   /* not yet reported */
    ngx_uint_t                   dropped_total;
    time_t                       drop_reported;

    ngx_event_t                  flush;
    ngx_event_t                  reply_timer;

    ngx_http_activity_spool_t   *spool;
    ngx_event_t                  replay;
    ngx_event_t                  spool_timer;

    const char                  *argv[NGX_HTTP_ACTIVITY_LPUSH_MAX + 2];
    size_t                       argvlen[NGX_HTTP_ACTIVITY_LPUSH_MAX + 2];

    unsigned                     broken:1;  /* ignore replies until down */
    unsigned                     replay_waits:1;  /* for room */
    unsigned                     waiting:1;  /* a WAIT ends the flight */
    unsigned                     paused:1;   /* no replica confirmed */
};


static void ngx_http_activity_queue_flush(ngx_event_t *ev);
static void ngx_http_activity_queue_send(ngx_http_activity_queue_t *q);
static void ngx_http_activity_queue_reply_timeout(ngx_event_t *ev);
static ngx_int_t ngx_http_activity_queue_add(ngx_http_activity_queue_t *q,
    u_char *data, size_t len);
static void ngx_http_activity_queue_replay(ngx_event_t *ev);
static ngx_int_t ngx_http_activity_queue_replay_line(void *data,
    u_char *line, size_t len);
static void ngx_http_activity_queue_spool_timer(ngx_event_t *ev);
static void ngx_http_activity_queue_spool_all(ngx_http_activity_queue_t *q);
static void ngx_http_activity_queue_report_lost(ngx_http_activity_queue_t *q);
static void ngx_http_activity_queue_ack(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_activity_queue_waited(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_uint_t ngx_http_activity_queue_release(
    ngx_http_activity_queue_t *q, uintptr_t n);
static void ngx_http_activity_queue_done(ngx_http_activity_queue_t *q);
static void ngx_http_activity_queue_pong(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_activity_queue_on_ready(ngx_http_activity_redis_t *rd);
static void ngx_http_activity_queue_on_down(ngx_http_activity_redis_t *rd);
static void ngx_http_activity_queue_report_drops(
    ngx_http_activity_queue_t *q);


ngx_http_activity_queue_t *
ngx_http_activity_queue_create(ngx_cycle_t *cycle,
    ngx_http_activity_main_conf_t *amcf)
{
    ngx_http_activity_queue_t  *q;

    q = ngx_pcalloc(cycle->pool, sizeof(ngx_http_activity_queue_t));
    if (q == NULL) {
        return NULL;
    }

    q->key = amcf->queue;
    q->log = cycle->log;
    q->stats = amcf->stats;
    q->limit = amcf->buffer_size;
    q->last = &q->head;
    q->wait = amcf->wait_replica;

    q->flush.handler = ngx_http_activity_queue_flush;
    q->flush.data = q;
    q->flush.log = cycle->log;

    /*
     * not cancelable: a worker that shuts down gracefully waits for the
     * replies to what it sent (at most the reply timeout) before it exits
     */

    q->reply_timer.handler = ngx_http_activity_queue_reply_timeout;
    q->reply_timer.data = q;
    q->reply_timer.log = cycle->log;

    if (amcf->spool_path.len) {
        q->spool = ngx_http_activity_spool_create(cycle, &amcf->spool_path,
                                                  amcf->spool_max,
                                                  amcf->stats);
        if (q->spool == NULL) {
            return NULL;
        }

        q->replay.handler = ngx_http_activity_queue_replay;
        q->replay.data = q;
        q->replay.log = cycle->log;

        q->spool_timer.handler = ngx_http_activity_queue_spool_timer;
        q->spool_timer.data = q;
        q->spool_timer.log = cycle->log;
        q->spool_timer.cancelable = 1;

        ngx_add_timer(&q->spool_timer, NGX_HTTP_ACTIVITY_SPOOL_CHECK);
    }

    ngx_http_activity_redis_init(&q->redis, &amcf->redis, cycle->log,
                                 "event queue");

    q->redis.on_ready = ngx_http_activity_queue_on_ready;
    q->redis.on_down = ngx_http_activity_queue_on_down;
    q->redis.data = q;

    if (q->stats) {
        q->redis.stat_reconnects = &q->stats->queue_reconnects;

        if (ngx_http_activity_status_slot(q->stats, cycle->log)) {
            q->redis.stat_up = &ngx_http_activity_proc_stats->queue_up;
            q->redis.stat_master =
                              ngx_http_activity_proc_stats->queue_master;
        }
    }

    ngx_http_activity_redis_connect(&q->redis);

    return q;
}


/*
 * Called from the log phase: copies the event and returns at once.  All
 * events of one event loop iteration leave in a single write.
 */

ngx_int_t
ngx_http_activity_queue_push(ngx_http_activity_queue_t *q, u_char *data,
    size_t len)
{
    size_t  size;

    size = offsetof(ngx_http_activity_entry_t, data) + len;

    if (q->bytes + size > q->limit) {

        /* beyond memory, the disk, when there is a spool */

        if (q->spool
            && ngx_http_activity_spool_append(q->spool, data, len) == NGX_OK)
        {
            return NGX_OK;
        }

        q->dropped++;
        q->dropped_total++;
        ngx_http_activity_stat_add(q->stats, events_dropped, 1);
        ngx_http_activity_queue_report_drops(q);
        return NGX_DECLINED;
    }

    if (ngx_http_activity_queue_add(q, data, len) != NGX_OK) {
        q->dropped++;
        q->dropped_total++;
        ngx_http_activity_stat_add(q->stats, events_dropped, 1);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_activity_queue_add(ngx_http_activity_queue_t *q, u_char *data,
    size_t len)
{
    size_t                      size;
    ngx_http_activity_entry_t  *e;

    size = offsetof(ngx_http_activity_entry_t, data) + len;

    e = ngx_alloc(size, q->log);
    if (e == NULL) {
        return NGX_ERROR;
    }

    e->next = NULL;
    e->len = len;
    ngx_memcpy(e->data, data, len);

    *q->last = e;
    q->last = &e->next;

    if (q->unsent == NULL) {
        q->unsent = e;
    }

    q->bytes += size;
    q->held++;

    ngx_http_activity_stat_set(buffered, q->held);

    if (!q->flush.posted) {
        ngx_post_event(&q->flush, &ngx_posted_events);
    }

    return NGX_OK;
}


/* bytes that n more events may take before the buffer is full */

size_t
ngx_http_activity_queue_room(ngx_http_activity_queue_t *q, ngx_uint_t n)
{
    size_t  overhead;

    overhead = n * offsetof(ngx_http_activity_entry_t, data);

    if (q->bytes + overhead >= q->limit) {
        return 0;
    }

    return q->limit - q->bytes - overhead;
}


void
ngx_http_activity_queue_destroy(ngx_http_activity_queue_t *q)
{
    ngx_http_activity_entry_t  *e, *next;

    if (q->flush.posted) {
        ngx_delete_posted_event(&q->flush);
    }

    if (q->replay.posted) {
        ngx_delete_posted_event(&q->replay);
    }

    if (q->spool_timer.timer_set) {
        ngx_del_timer(&q->spool_timer);
    }

    /* a last chance for events of the final loop iteration */

    ngx_http_activity_queue_send(q);

    /*
     * whatever Redis has not acknowledged may be lost: spooled (sent
     * again later, the worker stores an id once), or counted in the log
     */

    if (q->held && q->spool) {
        ngx_http_activity_queue_spool_all(q);

    } else if (q->held) {
        ngx_http_activity_queue_report_lost(q);
    }

    if (q->spool) {
        ngx_http_activity_spool_destroy(q->spool);
    }

    ngx_http_activity_queue_report_drops(q);

    if (q->reply_timer.timer_set) {
        ngx_del_timer(&q->reply_timer);
    }

    ngx_http_activity_redis_close(&q->redis);

    for (e = q->head; e; e = next) {
        next = e->next;
        ngx_free(e);
    }

    q->head = NULL;
    q->unsent = NULL;
    q->last = &q->head;
    q->held = 0;
    q->bytes = 0;
}


static void
ngx_http_activity_queue_flush(ngx_event_t *ev)
{
    ngx_http_activity_queue_t  *q = ev->data;

    if (q->in_flight == 0) {
        ngx_http_activity_queue_send(q);
    }
}


static void
ngx_http_activity_queue_send(ngx_http_activity_queue_t *q)
{
    int                         argc;
    uintptr_t                   n;
    ngx_http_activity_entry_t  *e;

    if (!q->redis.ready || q->broken || q->unsent == NULL) {
        return;
    }

    q->argv[0] = "LPUSH";
    q->argvlen[0] = sizeof("LPUSH") - 1;
    q->argv[1] = (const char *) q->key.data;
    q->argvlen[1] = q->key.len;

    while (q->unsent) {
        argc = 2;

        for (e = q->unsent;
             e && argc < NGX_HTTP_ACTIVITY_LPUSH_MAX + 2;
             e = e->next)
        {
            q->argv[argc] = (const char *) e->data;
            q->argvlen[argc] = e->len;
            argc++;
        }

        n = argc - 2;

        /* hiredis copies the arguments into its output buffer */

        if (redisAsyncCommandArgv(q->redis.ac, ngx_http_activity_queue_ack,
                                  (void *) n, argc, q->argv, q->argvlen)
            != REDIS_OK)
        {
            ngx_log_error(NGX_LOG_ERR, q->log, 0,
                          "activity: cannot queue LPUSH of %ui event(s)",
                          (ngx_uint_t) n);
            break;
        }

        q->unsent = e;
        q->in_flight++;
    }

    /* one WAIT for all the LPUSHes of this flush, in the same write */

    if (q->paused
        && ngx_current_msec - q->wait_paused >= NGX_HTTP_ACTIVITY_WAIT_PAUSE)
    {
        q->paused = 0;
    }

    if (q->wait && q->in_flight && !q->waiting && !q->paused
        && redisAsyncCommand(q->redis.ac, ngx_http_activity_queue_waited,
                             NULL, "WAIT 1 %d", (int) q->wait)
           == REDIS_OK)
    {
        q->waiting = 1;
        q->in_flight++;
    }

    if (q->in_flight && !q->reply_timer.timer_set) {
        ngx_add_timer(&q->reply_timer, NGX_HTTP_ACTIVITY_REPLY_TIMEOUT);
    }

    ngx_http_activity_redis_send(&q->redis);
}


static void
ngx_http_activity_queue_reply_timeout(ngx_event_t *ev)
{
    ngx_http_activity_queue_t  *q = ev->data;

    if (q->in_flight == 0 || !q->redis.ready) {
        return;
    }

    ngx_http_activity_redis_error(&q->redis, NGX_HTTP_ACTIVITY_REDIS_TIMEOUT,
                                  "no answer to LPUSH",
                                  "within " ngx_value(
                                      NGX_HTTP_ACTIVITY_REPLY_TIMEOUT) "ms");
}


/* an idle connection is known healthy by its answer to a PING */

static void
ngx_http_activity_queue_pong(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_http_activity_redis_t  *rd = ac->data;

    redisReply  *reply = r;

    if (reply == NULL) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_http_activity_redis_error(rd, NGX_HTTP_ACTIVITY_REDIS_REFUSED,
                                      "PING refused", reply->str);
        return;
    }

    ngx_http_activity_redis_healthy(rd);
}


static void
ngx_http_activity_queue_ack(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_http_activity_redis_t  *rd = ac->data;

    uintptr_t                   n;
    redisReply                 *reply = r;
    ngx_http_activity_queue_t  *q;

    q = rd->data;
    n = (uintptr_t) privdata;

    /* NULL: the connection is going away, the events will be resent */

    if (reply == NULL || q->broken) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        /*
         * keep the events and start over on a new connection after a
         * backoff that grows while the error lasts (WRONGTYPE, OOM, ...);
         * READONLY: the master became a replica, a new connection finds
         * the master again
         */

        q->broken = 1;
        ngx_http_activity_redis_error(rd, NGX_HTTP_ACTIVITY_REDIS_REFUSED,
                                      "LPUSH refused", reply->str);
        return;
    }

    ngx_http_activity_redis_healthy(rd);
    q->held_logged = 0;

    /*
     * with a WAIT behind, the events stay until a replica has them, and
     * are counted then: a lost connection sends them again
     */

    if (!q->waiting) {
        (void) ngx_http_activity_queue_release(q, n);
        ngx_http_activity_stat_add(q->stats, events_queued, n);

        /* sent while no replica confirmed: the master's copy alone */

        if (q->wait && q->paused) {
            ngx_http_activity_stat_add(q->stats, events_unreplicated, n);
        }
    }

    ngx_http_activity_queue_done(q);
}


/* WAIT 1 timeout: how many replicas have everything pushed before it */

static void
ngx_http_activity_queue_waited(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_redis_t  *rd = ac->data;

    ngx_uint_t                  n;
    redisReply                 *reply = r;
    ngx_http_activity_queue_t  *q;

    q = rd->data;

    /* NULL: the connection is going away, the events will be resent */

    if (reply == NULL || q->broken) {
        return;
    }

    q->waiting = 0;

    /* every LPUSH before the WAIT was answered: Redis has the events */

    n = ngx_http_activity_queue_release(q, (uintptr_t) -1);
    ngx_http_activity_stat_add(q->stats, events_queued, n);

    if (reply->type != REDIS_REPLY_INTEGER) {

        /*
         * WAIT itself refused (an ACL without it, a renamed command):
         * sending the events again would only push them again, and
         * again; they are let go like those no replica confirmed
         */

        ngx_http_activity_stat_add(q->stats, events_unreplicated, n);

        q->paused = 1;
        q->wait_paused = ngx_current_msec;

        if (q->unreplicated_logged != NGX_HTTP_ACTIVITY_WAIT_REFUSED) {
            q->unreplicated_logged = NGX_HTTP_ACTIVITY_WAIT_REFUSED;
            ngx_log_error(NGX_LOG_ERR, q->log, 0,
                          "activity: WAIT refused (%s), needed by "
                          "activity_redis_wait_replica; until it is "
                          "answered, events are on the master only",
                          reply->type == REDIS_REPLY_ERROR
                          ? reply->str : "unexpected reply");
        }

        ngx_http_activity_queue_done(q);
        return;
    }

    if (reply->integer > 0) {
        if (q->unreplicated_logged) {
            q->unreplicated_logged = 0;
            ngx_log_error(NGX_LOG_NOTICE, q->log, 0,
                          "activity: a replica confirms the events again");
        }

    } else {

        /*
         * no replica has them: the master's copy is all there is; the
         * next flushes do not wait for a while
         */

        ngx_http_activity_stat_add(q->stats, events_unreplicated, n);

        q->paused = 1;
        q->wait_paused = ngx_current_msec;

        if (q->unreplicated_logged != NGX_HTTP_ACTIVITY_WAIT_NO_REPLICA) {
            q->unreplicated_logged = NGX_HTTP_ACTIVITY_WAIT_NO_REPLICA;
            ngx_log_error(NGX_LOG_WARN, q->log, 0,
                          "activity: no replica confirmed %ui event(s) "
                          "within %M ms (activity_redis_wait_replica); "
                          "until one does, events are on the master only",
                          n, q->wait);
        }
    }

    ngx_http_activity_queue_done(q);
}


/* lets go of the n oldest events written (all: -1); returns how many */

static ngx_uint_t
ngx_http_activity_queue_release(ngx_http_activity_queue_t *q, uintptr_t n)
{
    ngx_uint_t                  released;
    ngx_http_activity_entry_t  *e;

    released = 0;

    while (n-- && q->head && q->head != q->unsent) {
        e = q->head;
        q->head = e->next;

        q->bytes -= offsetof(ngx_http_activity_entry_t, data) + e->len;
        q->held--;
        released++;

        ngx_free(e);
    }

    ngx_http_activity_stat_set(buffered, q->held);

    if (q->head == NULL) {
        q->last = &q->head;
    }

    if (q->replay_waits && q->bytes < q->limit / 2) {
        q->replay_waits = 0;

        if (!q->replay.posted) {
            ngx_post_event(&q->replay, &ngx_posted_events);
        }
    }

    return released;
}


/* one command of the flight answered: the next flush when all are */

static void
ngx_http_activity_queue_done(ngx_http_activity_queue_t *q)
{
    if (--q->in_flight) {
        return;
    }

    if (q->reply_timer.timer_set) {
        ngx_del_timer(&q->reply_timer);
    }

    if (q->unsent && !q->flush.posted) {
        ngx_post_event(&q->flush, &ngx_posted_events);
    }
}


static void
ngx_http_activity_queue_on_ready(ngx_http_activity_redis_t *rd)
{
    ngx_http_activity_queue_t  *q = rd->data;

    q->broken = 0;
    q->in_flight = 0;
    q->waiting = 0;
    q->unsent = q->head;

    /* a Redis that accepts connections but never answers: not each time */

    if (q->held && q->held != q->held_logged) {
        q->held_logged = q->held;
        ngx_log_error(NGX_LOG_NOTICE, q->log, 0,
                      "activity: sending %ui buffered event(s) to redis",
                      q->held);
    }

    ngx_http_activity_queue_report_drops(q);

    if (q->unsent && !q->flush.posted) {
        ngx_post_event(&q->flush, &ngx_posted_events);
    }

    /* with nothing to send, a PING tells that the connection works */

    if (q->unsent == NULL
        && redisAsyncCommand(rd->ac, ngx_http_activity_queue_pong, NULL,
                             "PING")
           != REDIS_OK)
    {
        ngx_http_activity_redis_drop(rd);
        return;
    }

    if (q->spool && !q->replay.posted) {
        ngx_post_event(&q->replay, &ngx_posted_events);
    }
}


/*
 * Spooled events go back through the memory buffer, a chunk per loop
 * iteration, leaving half of it to live traffic.
 */

static void
ngx_http_activity_queue_replay(ngx_event_t *ev)
{
    ngx_http_activity_queue_t  *q = ev->data;

    if (!q->redis.ready || ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    switch (ngx_http_activity_spool_replay(q->spool,
                                           ngx_http_activity_queue_replay_line,
                                           q))
    {
    case NGX_AGAIN:
        ngx_post_event(&q->replay, &ngx_posted_events);
        break;

    case NGX_BUSY:
        q->replay_waits = 1;
        break;

    /* NGX_DECLINED: locked by another process; the spool timer retries */

    default:
        break;
    }
}


static ngx_int_t
ngx_http_activity_queue_replay_line(void *data, u_char *line, size_t len)
{
    ngx_http_activity_queue_t  *q = data;

    /* an event larger than half the buffer goes alone */

    if (q->held
        && q->bytes + offsetof(ngx_http_activity_entry_t, data) + len
           > q->limit / 2)
    {
        return NGX_BUSY;
    }

    if (ngx_http_activity_queue_add(q, line, len) != NGX_OK) {
        return NGX_BUSY;
    }

    return NGX_OK;
}


/* other workers may have spooled, or died leaving a claim */

static void
ngx_http_activity_queue_spool_timer(ngx_event_t *ev)
{
    ngx_http_activity_queue_t  *q = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (q->redis.ready && !q->replay_waits && !q->replay.posted) {
        ngx_post_event(&q->replay, &ngx_posted_events);
    }

    ngx_add_timer(&q->spool_timer, NGX_HTTP_ACTIVITY_SPOOL_CHECK);
}


/*
 * Exiting with events Redis has not acknowledged (away, or no reply yet):
 * nothing held in memory is lost.  Those already written may arrive twice.
 */

static void
ngx_http_activity_queue_spool_all(ngx_http_activity_queue_t *q)
{
    ngx_int_t                   rc;
    ngx_uint_t                  spooled, lost, locked;
    ngx_http_activity_entry_t  *e;

    spooled = 0;
    lost = 0;
    locked = 0;

    for (e = q->head; e; e = e->next) {
        rc = ngx_http_activity_spool_append(q->spool, e->data, e->len);

        /* more than the spool gathers in memory: write that out first */

        if (rc == NGX_DECLINED && !locked) {
            if (ngx_http_activity_spool_sync(q->spool) == NGX_OK) {
                rc = ngx_http_activity_spool_append(q->spool, e->data,
                                                    e->len);

            } else {
                locked = 1;
            }
        }

        if (rc == NGX_OK) {
            spooled++;

        } else {
            lost++;
        }
    }

    ngx_http_activity_stat_add(q->stats, events_dropped, lost);

    if (lost) {
        ngx_log_error(NGX_LOG_ERR, q->log, 0,
                      "activity: exiting: %ui event(s) spooled, %ui lost",
                      spooled, lost);

    } else {
        ngx_log_error(NGX_LOG_NOTICE, q->log, 0,
                      "activity: exiting: %ui event(s) spooled", spooled);
    }
}


static void
ngx_http_activity_queue_report_lost(ngx_http_activity_queue_t *q)
{
    ngx_http_activity_stat_add(q->stats, events_dropped, q->held);

    /* those written on a connection that then went may be stored anyway */

    ngx_log_error(NGX_LOG_ERR, q->log, 0,
                  "activity: exiting: %ui event(s) not acknowledged by "
                  "redis are lost", q->held);
}


static void
ngx_http_activity_queue_on_down(ngx_http_activity_redis_t *rd)
{
    ngx_http_activity_queue_t  *q = rd->data;

    /* whatever was in flight goes again, in order, after the reconnect */

    q->unsent = q->head;
    q->in_flight = 0;
    q->waiting = 0;
    q->broken = 0;

    if (q->reply_timer.timer_set) {
        ngx_del_timer(&q->reply_timer);
    }
}


/* at most one line a second while events are being dropped */

static void
ngx_http_activity_queue_report_drops(ngx_http_activity_queue_t *q)
{
    if (q->dropped == 0 || q->drop_reported == ngx_time()) {
        return;
    }

    q->drop_reported = ngx_time();

    ngx_log_error(NGX_LOG_ERR, q->log, 0,
                  "activity: event buffer full (%uz bytes held), "
                  "%ui event(s) dropped, %ui in all",
                  q->bytes, q->dropped, q->dropped_total);

    q->dropped = 0;
}
