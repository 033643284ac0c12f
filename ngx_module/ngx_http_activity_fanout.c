
/*
 * The fan-out's life cycle: one per nginx worker process, created at
 * init with its subscriber, the listeners that attach and join it, and
 * the watch that closes them all when the worker shuts down gracefully.
 * The rest is below it (ngx_http_activity_fanout_internal.h).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_activity_fanout_internal.h"
#include "ngx_http_activity_status.h"
#include "ngx_http_activity_ws.h"


static ngx_int_t ngx_http_activity_fanout_watch(ngx_http_activity_fanout_t *f);
static void ngx_http_activity_fanout_shutdown(ngx_event_t *ev);
static void ngx_http_activity_fanout_unwatch(ngx_http_activity_fanout_t *f);


ngx_http_activity_fanout_t *
ngx_http_activity_fanout_create(ngx_cycle_t *cycle,
    ngx_http_activity_main_conf_t *amcf)
{
    ngx_http_activity_fanout_t  *f;

    f = ngx_pcalloc(cycle->pool, sizeof(ngx_http_activity_fanout_t));
    if (f == NULL) {
        return NULL;
    }

    f->amcf = amcf;
    f->log = cycle->log;
    f->counters = amcf->stats;

    ngx_queue_init(&f->all);
    ngx_queue_init(&f->listeners);
    ngx_queue_init(&f->dirty);

    ngx_http_activity_deflate_init(&f->deflate, cycle->log);

    if (ngx_http_activity_fanout_watch(f) != NGX_OK) {
        return NULL;
    }

    f->flush.handler = ngx_http_activity_fanout_flush;
    f->flush.data = f;
    f->flush.log = cycle->log;

    ngx_http_activity_redis_init(&f->redis, &amcf->redis, cycle->log,
                                 "subscriber");

    f->redis.on_ready = ngx_http_activity_fanout_on_ready;
    f->redis.data = f;
    f->redis.ping_interval = amcf->ping_interval;
    f->redis.ping_timeout = amcf->ping_timeout;

    if (f->counters) {
        f->redis.stat_reconnects = &f->counters->subscriber_reconnects;

        if (ngx_http_activity_status_slot(f->counters, cycle->log)) {
            f->redis.stat_up = &ngx_http_activity_proc_stats->subscriber_up;
            f->redis.stat_master =
                              ngx_http_activity_proc_stats->subscriber_master;
        }
    }

    ngx_http_activity_redis_connect(&f->redis);

    return f;
}


void
ngx_http_activity_fanout_destroy(ngx_http_activity_fanout_t *f)
{
    if (f->flush.posted) {
        ngx_delete_posted_event(&f->flush);
    }

    ngx_http_activity_fanout_unwatch(f);
    ngx_http_activity_redis_close(&f->redis);

    ngx_http_activity_fanout_invalidate(f);
    ngx_http_activity_fanout_forget(f);

    if (f->stats.data) {
        ngx_free(f->stats.data);
        f->stats.data = NULL;
    }

    ngx_http_activity_deflate_done(&f->deflate);
}


void
ngx_http_activity_fanout_attach(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l)
{
    if (!l->attached) {
        ngx_queue_insert_tail(&f->all, &l->all);
        l->attached = 1;
    }
}


void
ngx_http_activity_fanout_detach(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l)
{
    ngx_http_activity_fanout_leave(f, l);

    if (l->attached) {
        ngx_queue_remove(&l->all);
        l->attached = 0;
    }
}


void
ngx_http_activity_fanout_join(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l)
{
    if (l->joined) {
        return;
    }

    ngx_queue_insert_tail(&f->listeners, &l->queue);
    l->joined = 1;
    f->counts[l->protocol]++;
}


void
ngx_http_activity_fanout_leave(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l)
{
    if (l->joined) {
        ngx_queue_remove(&l->queue);
        l->joined = 0;
        f->counts[l->protocol]--;
    }

    if (l->is_dirty) {
        ngx_queue_remove(&l->dirty);
        l->is_dirty = 0;
    }

    if (l->holding) {
        ngx_http_activity_fanout_release(f, l, NULL);
    }

    /* nothing more is queued for it; what is queued may still be written */

    l->failed = 1;
}


/*
 * A graceful shutdown (reload, upgrade, SIGQUIT) stops accepting and calls
 * the read handler of every idle connection.  A fake idle connection (no
 * socket) is how this worker hears of it, as lua-nginx-module does, and
 * then closes its dashboards with 1001 "going away": Socket.IO clients
 * reconnect to a new worker at once, and open sockets never hold up the
 * exit.
 */

static ngx_int_t
ngx_http_activity_fanout_watch(ngx_http_activity_fanout_t *f)
{
    ngx_connection_t  *c, *saved;

    /* ngx_get_connection() would claim files[0] for this fake socket */

    saved = ngx_cycle->files ? ngx_cycle->files[0] : NULL;

    c = ngx_get_connection(0, f->log);

    if (ngx_cycle->files) {
        ngx_cycle->files[0] = saved;
    }

    if (c == NULL) {
        return NGX_ERROR;
    }

    c->fd = (ngx_socket_t) -2;
    c->idle = 1;
    c->data = f;
    c->read->handler = ngx_http_activity_fanout_shutdown;
    c->read->log = f->log;
    c->write->log = f->log;

    f->watcher = c;

    return NGX_OK;
}


static void
ngx_http_activity_fanout_shutdown(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    ngx_queue_t                   *q, *next;
    ngx_http_activity_fanout_t    *f;
    ngx_http_activity_listener_t  *l;

    f = c->data;

    ngx_http_activity_fanout_unwatch(f);

    for (q = ngx_queue_head(&f->all);
         q != ngx_queue_sentinel(&f->all);
         q = next)
    {
        next = ngx_queue_next(q);
        l = ngx_queue_data(q, ngx_http_activity_listener_t, all);

        l->going_away(l, NGX_HTTP_ACTIVITY_WS_GOING_AWAY);
    }
}


static void
ngx_http_activity_fanout_unwatch(ngx_http_activity_fanout_t *f)
{
    ngx_connection_t  *c;

    c = f->watcher;

    if (c == NULL) {
        return;
    }

    f->watcher = NULL;

    /* no socket to close: only the connection slot to give back */

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
}
