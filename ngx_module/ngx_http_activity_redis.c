
/*
 * hiredis's asynchronous API on nginx's event loop.
 *
 * The hiredis socket is wrapped in an nginx connection whose read and write
 * events call redisAsyncHandleRead/Write; hiredis asks for interest changes
 * through the ev.addRead/delRead/addWrite/delWrite/cleanup hooks.  hiredis
 * 0.14 has no timeouts of its own, so connecting is bounded by an nginx
 * timer, and a lost connection is retried with exponential backoff.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <sys/ioctl.h>

#include "ngx_http_activity_redis.h"


#define NGX_HTTP_ACTIVITY_REDIS_CONNECT_TIMEOUT   3000
#define NGX_HTTP_ACTIVITY_REDIS_BACKOFF_MIN       100
#define NGX_HTTP_ACTIVITY_REDIS_BACKOFF_MAX       3000


static void ngx_http_activity_redis_schedule(ngx_http_activity_redis_t *rd);
static void ngx_http_activity_redis_retry_handler(ngx_event_t *ev);
static void ngx_http_activity_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_activity_redis_failed(ngx_http_activity_redis_t *rd,
    const char *reason);
static void ngx_http_activity_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_activity_redis_on_disconnect(
    const redisAsyncContext *ac, int status);
static void ngx_http_activity_redis_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_activity_redis_read_handler(ngx_event_t *ev);
static void ngx_http_activity_redis_write_handler(ngx_event_t *ev);
static void ngx_http_activity_redis_add_read(void *privdata);
static void ngx_http_activity_redis_del_read(void *privdata);
static void ngx_http_activity_redis_add_write(void *privdata);
static void ngx_http_activity_redis_del_write(void *privdata);
static void ngx_http_activity_redis_cleanup(void *privdata);


void
ngx_http_activity_redis_init(ngx_http_activity_redis_t *rd,
    ngx_http_activity_redis_addr_t *addr, ngx_log_t *log, const char *role)
{
    ngx_memzero(rd, sizeof(ngx_http_activity_redis_t));

    rd->addr = addr;
    rd->log = log;
    rd->role = role;
    rd->backoff = NGX_HTTP_ACTIVITY_REDIS_BACKOFF_MIN;

    /* cancelable: an exiting worker never waits for a reconnect */

    rd->retry.handler = ngx_http_activity_redis_retry_handler;
    rd->retry.data = rd;
    rd->retry.log = log;
    rd->retry.cancelable = 1;

    rd->connect_timer.handler = ngx_http_activity_redis_connect_timeout;
    rd->connect_timer.data = rd;
    rd->connect_timer.log = log;
    rd->connect_timer.cancelable = 1;
}


void
ngx_http_activity_redis_connect(ngx_http_activity_redis_t *rd)
{
    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    if (rd->addr->unix_path.len) {
        ac = redisAsyncConnectUnix((char *) rd->addr->unix_path.data);

    } else {
        ac = redisAsyncConnect((char *) rd->addr->host.data, rd->addr->port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                      "activity: redisAsyncConnect() failed");
        ngx_http_activity_redis_schedule(rd);
        return;
    }

    if (ac->err) {
        ngx_http_activity_redis_failed(rd, ac->errstr);
        redisAsyncFree(ac);
        ngx_http_activity_redis_schedule(rd);
        return;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        redisAsyncFree(ac);
        ngx_http_activity_redis_schedule(rd);
        return;
    }

    c->data = rd;
    c->read->handler = ngx_http_activity_redis_read_handler;
    c->write->handler = ngx_http_activity_redis_write_handler;
    c->read->log = rd->log;
    c->write->log = rd->log;

    rd->conn = c;
    rd->ac = ac;

    ac->data = rd;
    ac->ev.data = rd;
    ac->ev.addRead = ngx_http_activity_redis_add_read;
    ac->ev.delRead = ngx_http_activity_redis_del_read;
    ac->ev.addWrite = ngx_http_activity_redis_add_write;
    ac->ev.delWrite = ngx_http_activity_redis_del_write;
    ac->ev.cleanup = ngx_http_activity_redis_cleanup;

    /*
     * the hooks must be in place first: in hiredis 0.14 setting the
     * connect callback asks for the write event that reports the connect
     */

    redisAsyncSetConnectCallback(ac, ngx_http_activity_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac,
                                    ngx_http_activity_redis_on_disconnect);

    ngx_add_timer(&rd->connect_timer, NGX_HTTP_ACTIVITY_REDIS_CONNECT_TIMEOUT);
}


/* writes what hiredis has buffered now, rather than a loop turn later */

void
ngx_http_activity_redis_send(ngx_http_activity_redis_t *rd)
{
    if (rd->ac && rd->ready) {
        redisAsyncHandleWrite(rd->ac);
    }
}


/*
 * Gives up the connection (a protocol-level error); pending callbacks see
 * NULL replies, and the disconnect callback schedules a reconnect.  Safe
 * inside a reply callback: hiredis then frees after the callback returns.
 */

void
ngx_http_activity_redis_drop(ngx_http_activity_redis_t *rd)
{
    if (rd->ac) {
        redisAsyncFree(rd->ac);
    }
}


void
ngx_http_activity_redis_close(ngx_http_activity_redis_t *rd)
{
    rd->closing = 1;

    if (rd->retry.timer_set) {
        ngx_del_timer(&rd->retry);
    }

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (rd->ac) {
        redisAsyncFree(rd->ac);
    }
}


static void
ngx_http_activity_redis_schedule(ngx_http_activity_redis_t *rd)
{
    if (rd->closing || ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    if (!rd->retry.timer_set) {
        ngx_add_timer(&rd->retry, rd->backoff);
    }

    rd->backoff = ngx_min(rd->backoff * 2,
                          NGX_HTTP_ACTIVITY_REDIS_BACKOFF_MAX);
}


static void
ngx_http_activity_redis_retry_handler(ngx_event_t *ev)
{
    ngx_http_activity_redis_t  *rd = ev->data;

    if (rd->ac == NULL && !rd->closing) {
        if (rd->stat_reconnects) {
            (void) ngx_atomic_fetch_add(rd->stat_reconnects, 1);
        }

        ngx_http_activity_redis_connect(rd);
    }
}


static void
ngx_http_activity_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_activity_redis_t  *rd = ev->data;

    if (rd->ac == NULL || rd->ready) {
        return;
    }

    ngx_http_activity_redis_failed(rd, "connection timed out");

    /* not connected yet: hiredis calls no disconnect callback */

    redisAsyncFree(rd->ac);
    ngx_http_activity_redis_schedule(rd);
}


/* logged once per outage, not once per attempt */

static void
ngx_http_activity_redis_failed(ngx_http_activity_redis_t *rd,
    const char *reason)
{
    if (rd->failures++ == 0) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "activity: cannot connect %s to redis \"%V\": %s, "
                      "retrying", rd->role, &rd->addr->url, reason);
    }
}


static void
ngx_http_activity_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_activity_redis_t  *rd = ac->data;

    redisAsyncContext  *c;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (status != REDIS_OK) {
        ngx_http_activity_redis_failed(rd, ac->errstr);

        /* hiredis frees the context when this callback returns */

        ngx_http_activity_redis_schedule(rd);
        return;
    }

    c = (redisAsyncContext *) ac;

    /* pipelined ahead of everything else on this connection */

    if (rd->addr->password.len) {
        if (rd->addr->username.len) {
            redisAsyncCommand(c, ngx_http_activity_redis_setup_reply,
                              (void *) "AUTH", "AUTH %b %b",
                              rd->addr->username.data, rd->addr->username.len,
                              rd->addr->password.data,
                              rd->addr->password.len);

        } else {
            redisAsyncCommand(c, ngx_http_activity_redis_setup_reply,
                              (void *) "AUTH", "AUTH %b",
                              rd->addr->password.data,
                              rd->addr->password.len);
        }
    }

    if (rd->addr->db >= 0) {
        redisAsyncCommand(c, ngx_http_activity_redis_setup_reply,
                          (void *) "SELECT", "SELECT %d", (int) rd->addr->db);
    }

    if (rd->failures) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "activity: %s reconnected to redis \"%V\"",
                      rd->role, &rd->addr->url);
    }

    rd->ready = 1;
    rd->failures = 0;

    if (rd->stat_up) {
        *rd->stat_up = 1;
    }
    rd->backoff = NGX_HTTP_ACTIVITY_REDIS_BACKOFF_MIN;

    if (rd->on_ready) {
        rd->on_ready(rd);
    }
}


static void
ngx_http_activity_redis_on_disconnect(const redisAsyncContext *ac,
    int status)
{
    ngx_http_activity_redis_t  *rd = ac->data;

    rd->ready = 0;
    rd->ac = NULL;

    if (rd->stat_up) {
        *rd->stat_up = 0;
    }

    if (rd->closing) {
        return;
    }

    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "activity: %s lost redis \"%V\": %s, reconnecting",
                      rd->role, &rd->addr->url, ac->errstr);

        /* the next failure starts a new outage in the log */

        rd->failures = 1;
    }

    if (rd->on_down) {
        rd->on_down(rd);
    }

    ngx_http_activity_redis_schedule(rd);
}


static void
ngx_http_activity_redis_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_redis_t  *rd = ac->data;
    redisReply                 *reply = r;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "activity: redis \"%V\" refused %s: %s",
                  &rd->addr->url, (char *) privdata, reply->str);

    ngx_http_activity_redis_drop(rd);
}


static void
ngx_http_activity_redis_read_handler(ngx_event_t *ev)
{
    int                         n;
    ngx_socket_t                fd;
    ngx_connection_t           *c;
    ngx_http_activity_redis_t  *rd;

    c = ev->data;
    rd = c->data;
    fd = c->fd;

    /*
     * hiredis reads at most 16K a call; with edge-triggered events the
     * rest would never be reported again, so read while bytes are waiting.
     * The context may be freed inside a reply callback: rd->ac says so.
     */

    do {
        if (rd->ac == NULL) {
            return;
        }

        redisAsyncHandleRead(rd->ac);

        if (rd->ac == NULL) {
            return;
        }

    } while (ioctl(fd, FIONREAD, &n) == 0 && n > 0);
}


static void
ngx_http_activity_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t           *c;
    ngx_http_activity_redis_t  *rd;

    c = ev->data;
    rd = c->data;

    if (rd->ac) {
        redisAsyncHandleWrite(rd->ac);
    }
}


static void
ngx_http_activity_redis_add_read(void *privdata)
{
    ngx_http_activity_redis_t  *rd = privdata;

    ngx_event_t  *ev;

    ev = rd->conn->read;

    if (!ev->active
        && ngx_add_event(ev, NGX_READ_EVENT,
                         (ngx_event_flags & NGX_USE_CLEAR_EVENT)
                         ? NGX_CLEAR_EVENT : NGX_LEVEL_EVENT)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                      "activity: cannot watch redis connection for reading");
    }
}


static void
ngx_http_activity_redis_del_read(void *privdata)
{
    ngx_http_activity_redis_t  *rd = privdata;

    if (rd->conn->read->active) {
        (void) ngx_del_event(rd->conn->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_activity_redis_add_write(void *privdata)
{
    ngx_http_activity_redis_t  *rd = privdata;

    ngx_event_t  *ev;

    ev = rd->conn->write;

    if (!ev->active
        && ngx_add_event(ev, NGX_WRITE_EVENT,
                         (ngx_event_flags & NGX_USE_CLEAR_EVENT)
                         ? NGX_CLEAR_EVENT : NGX_LEVEL_EVENT)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                      "activity: cannot watch redis connection for writing");
    }
}


static void
ngx_http_activity_redis_del_write(void *privdata)
{
    ngx_http_activity_redis_t  *rd = privdata;

    /*
     * an edge-triggered write event reports only changes, so it may stay
     * registered: that saves two epoll_ctl() calls per flush
     */

    if (ngx_event_flags & NGX_USE_CLEAR_EVENT) {
        return;
    }

    if (rd->conn->write->active) {
        (void) ngx_del_event(rd->conn->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis closes the socket itself right after this hook */

static void
ngx_http_activity_redis_cleanup(void *privdata)
{
    ngx_http_activity_redis_t  *rd = privdata;

    ngx_connection_t  *c;

    c = rd->conn;

    rd->ac = NULL;
    rd->conn = NULL;
    rd->ready = 0;

    if (c == NULL) {
        return;
    }

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);

    c->fd = (ngx_socket_t) -1;
}
