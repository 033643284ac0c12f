
/*
 * What goes out on an upgraded dashboard connection: frames made for it
 * alone (the fan-out queues the shared ones itself), the write handler
 * that flushes its queue, the heartbeat, and the end of the connection -
 * the closing handshake, the linger that follows it, and finalizing.
 * Every close goes through ngx_http_activity_conn_finalize().
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_conn_internal.h"
#include "ngx_http_activity_status.h"
#include "ngx_http_activity_ws.h"


#define NGX_HTTP_ACTIVITY_LINGER        2000


static void ngx_http_activity_conn_close_within(ngx_http_activity_conn_t *ac,
    ngx_uint_t code, const char *reason, ngx_msec_t wait);
static void ngx_http_activity_conn_linger(ngx_http_activity_conn_t *ac);
#if (NGX_SSL)
static void ngx_http_activity_conn_ssl_closed(ngx_connection_t *c);
#endif


/* a text frame with this payload */

ngx_int_t
ngx_http_activity_conn_send(ngx_http_activity_conn_t *ac,
    u_char *data, size_t len)
{
    ngx_str_t                   part;
    ngx_http_activity_frame_t  *frame;

    part.data = data;
    part.len = len;

    frame = ngx_http_activity_frame_text(&part, 1, ac->connection->log);

    return ngx_http_activity_conn_send_frame(ac, frame);
}


/* queues a frame made for this connection alone, and lets go of it */

ngx_int_t
ngx_http_activity_conn_send_frame(ngx_http_activity_conn_t *ac,
    ngx_http_activity_frame_t *frame)
{
    ngx_int_t  rc;

    if (frame == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_activity_fanout_send(ac->fanout, &ac->listener, frame);
    ngx_http_activity_frame_release(frame);

    return rc == NGX_OK ? NGX_OK : NGX_ERROR;
}


ngx_int_t
ngx_http_activity_conn_send_control(ngx_http_activity_conn_t *ac,
    ngx_uint_t opcode, u_char *data, size_t len)
{
    ngx_http_activity_frame_t  *frame;

    frame = ngx_http_activity_frame_create(opcode, len,
                                           ac->connection->log);
    if (frame) {
        ngx_memcpy(frame->payload, data, len);
    }

    return ngx_http_activity_conn_send_frame(ac, frame);
}


/* the write handler: the queue goes out as the socket takes it */

void
ngx_http_activity_conn_write(ngx_event_t *wev)
{
    ngx_int_t                  rc;
    ngx_connection_t          *c;
    ngx_http_activity_conn_t  *ac;

    c = wev->data;
    ac = c->data;

    if (ac->finalized) {
        return;
    }

    rc = ngx_http_activity_outq_flush(&ac->listener.out, c);

    /*
     * all written: with poll or select (level-triggered) a write event
     * left registered fires on every loop iteration, a busy loop, so it
     * is deleted; with epoll (edge-triggered) nothing changes
     */

    if (rc == NGX_OK && ngx_handle_write_event(wev, 0) != NGX_OK) {
        rc = NGX_ERROR;
    }

    if (rc == NGX_ERROR) {
        ngx_http_activity_conn_finalize(ac);

    } else if (rc == NGX_OK && ac->closing) {
        ngx_http_activity_conn_linger(ac);
    }
}


/* the heartbeat was answered: the next ping goes a whole interval later */

void
ngx_http_activity_conn_pong(ngx_http_activity_conn_t *ac)
{
    if (!ac->awaiting_pong || ac->closing) {
        return;
    }

    ac->awaiting_pong = 0;

    if (ac->ping.timer_set) {
        ngx_del_timer(&ac->ping);
    }

    ngx_add_timer(&ac->ping, ac->conf->ping_interval);
}


/*
 * Heartbeat: a ping every interval; no answer within the timeout and the
 * connection is dead.  A closing connection's linger also ends here.
 */

void
ngx_http_activity_conn_ping(ngx_event_t *ev)
{
    ngx_http_activity_conn_t  *ac = ev->data;

    ngx_int_t  rc;

    if (ac->closing || ac->awaiting_pong) {
        if (!ac->closing) {
            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "activity: dashboard %V did not answer a ping",
                          &ac->connection->addr_text);
        }

        ngx_http_activity_conn_finalize(ac);
        return;
    }

    rc = ac->handlers->on_ping(ac);

    if (rc != NGX_OK) {
        return;
    }

    ac->awaiting_pong = 1;

    ngx_add_timer(&ac->ping, ac->conf->ping_timeout);
}


void
ngx_http_activity_conn_fail(ngx_http_activity_listener_t *l,
    ngx_uint_t code)
{
    ngx_http_activity_conn_t  *ac;

    ac = (ngx_http_activity_conn_t *) l;

    if (code == NGX_HTTP_ACTIVITY_WS_POLICY) {
        ngx_http_activity_stat_add(ac->amcf->stats, clients_slow, 1);

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "activity: dashboard %V does not read, %uz bytes "
                      "queued, the oldest for %M ms, closing",
                      &l->connection->addr_text, l->out.bytes,
                      l->out.count
                      ? ngx_current_msec - l->out.slots[l->out.head].queued
                      : 0);
    }

    if (!ac->close_event.posted) {
        ngx_post_event(&ac->close_event, &ngx_posted_events);
    }
}


void
ngx_http_activity_conn_going_away(ngx_http_activity_listener_t *l,
    ngx_uint_t code)
{
    ngx_http_activity_conn_t  *ac;

    ac = (ngx_http_activity_conn_t *) l;

    ngx_http_activity_conn_close(ac, code, "server shutting down");
}


void
ngx_http_activity_conn_close_handler(ngx_event_t *ev)
{
    ngx_http_activity_conn_t  *ac = ev->data;

    if (ac->listener.fail_code != NGX_HTTP_ACTIVITY_WS_POLICY) {

        /* its socket is broken: no close frame can go */

        ngx_http_activity_conn_finalize(ac);
        return;
    }

    /*
     * too slow: what it has not begun to get is dropped, and the close
     * frame waits behind the rest of a frame half sent, for as long as
     * a ping's answer would
     */

    ngx_http_activity_outq_trim(&ac->listener.out);

    ngx_http_activity_conn_close_within(ac, NGX_HTTP_ACTIVITY_WS_POLICY,
                                        "too slow", ac->conf->ping_timeout);
}


/*
 * The closing handshake: a close frame behind whatever is queued, then the
 * connection ends when it is written, or after a short linger.
 */

void
ngx_http_activity_conn_close(ngx_http_activity_conn_t *ac, ngx_uint_t code,
    const char *reason)
{
    ngx_http_activity_conn_close_within(ac, code, reason,
                                        NGX_HTTP_ACTIVITY_LINGER);
}


static void
ngx_http_activity_conn_close_within(ngx_http_activity_conn_t *ac,
    ngx_uint_t code, const char *reason, ngx_msec_t wait)
{
    u_char                      buf[2];
    size_t                      len;
    ngx_int_t                   rc;
    ngx_http_activity_frame_t  *frame;

    if (ac->closing || ac->finalized) {
        return;
    }

    ac->closing = 1;

    ngx_http_activity_fanout_leave(ac->fanout, &ac->listener);

    len = reason ? ngx_min(ngx_strlen(reason), 123) : 0;

    frame = ngx_http_activity_frame_create(NGX_HTTP_ACTIVITY_WS_CLOSE,
                                           2 + len,
                                           ac->connection->log);
    if (frame == NULL) {
        ngx_http_activity_conn_finalize(ac);
        return;
    }

    buf[0] = (u_char) (code >> 8);
    buf[1] = (u_char) code;

    ngx_memcpy(frame->payload, buf, 2);
    if (len) {
        ngx_memcpy(frame->payload + 2, reason, len);
    }

    rc = ngx_http_activity_outq_push_last(&ac->listener.out, frame);
    ngx_http_activity_frame_release(frame);

    if (rc == NGX_OK) {
        rc = ngx_http_activity_outq_flush(&ac->listener.out,
                                          ac->connection);
    }

    if (rc == NGX_OK) {
        ngx_http_activity_conn_linger(ac);
        return;
    }

    if (rc != NGX_AGAIN) {
        ngx_http_activity_conn_finalize(ac);
        return;
    }

    /* the close frame waits for the write event, "wait" at most */

    if (ac->ping.timer_set) {
        ngx_del_timer(&ac->ping);
    }

    ngx_add_timer(&ac->ping, wait);
}


/*
 * The close frame is out: stop writing, and read and drop what the client
 * still sends until it closes, or the linger ends.  Closing with unread
 * input would make the kernel send a reset, which can destroy the close
 * frame (and the last replies) before the client reads them.
 */

static void
ngx_http_activity_conn_linger(ngx_http_activity_conn_t *ac)
{
#if (NGX_SSL)
    ngx_int_t          rc;
#endif
    ngx_connection_t  *c;

    c = ac->connection;

    if (ac->lingering || ac->request) {
        if (ac->request) {
            ngx_http_activity_conn_finalize(ac);
        }

        return;
    }

    ac->lingering = 1;

    if (ac->ping.timer_set) {
        ngx_del_timer(&ac->ping);
    }

    ngx_add_timer(&ac->ping, NGX_HTTP_ACTIVITY_LINGER);

#if (NGX_SSL)

    /*
     * TLS: close_notify first, then the same as plain TCP on the bare
     * socket; the client's close_notify is not awaited
     */

    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->handler = ngx_http_activity_conn_ssl_closed;

        rc = ngx_ssl_shutdown(c);

        if (rc == NGX_AGAIN) {
            /* nginx's handlers finish it; the linger timer bounds it */
            return;
        }

        if (rc != NGX_OK || c->ssl) {
            ngx_http_activity_conn_finalize(ac);
            return;
        }
    }

#endif

    if (ngx_shutdown_socket(c->fd, NGX_WRITE_SHUTDOWN) == -1) {
        ngx_http_activity_conn_finalize(ac);
        return;
    }

    ngx_http_activity_conn_drain(ac);
}


/*
 * A lingering connection's input, read and dropped until the client
 * closes; its read handler comes here too.
 */

void
ngx_http_activity_conn_drain(ngx_http_activity_conn_t *ac)
{
    ssize_t            n;
    u_char             discard[NGX_HTTP_ACTIVITY_INPUT_MIN];
    ngx_connection_t  *c;

    c = ac->connection;

    /* worker_shutdown_timeout, or an nginx-side close */

    if (c->close) {
        ngx_http_activity_conn_finalize(ac);
        return;
    }

    for ( ;; ) {
        n = c->recv(c, discard, sizeof(discard));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_http_activity_conn_finalize(ac);
            return;
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_activity_conn_finalize(ac);
    }
}


#if (NGX_SSL)

/* ngx_ssl_shutdown() that had to wait is over */

static void
ngx_http_activity_conn_ssl_closed(ngx_connection_t *c)
{
    ngx_http_activity_conn_finalize(c->data);
}

#endif


void
ngx_http_activity_conn_finalize(ngx_http_activity_conn_t *ac)
{
    ngx_connection_t  *c;

    if (ac->finalized) {
        return;
    }

    ac->finalized = 1;

    ngx_http_activity_fanout_leave(ac->fanout, &ac->listener);

    if (ac->ping.timer_set) {
        ngx_del_timer(&ac->ping);
    }

    c = ac->connection;

#if (NGX_SSL)

    /*
     * frames still queued: a TLS write may wait for its retry, and
     * SSL_shutdown() must not write behind it ("bad write retry")
     */

    if (c->ssl && ac->listener.out.count) {
        c->error = 1;
    }

#endif

    if (ac->request) {

        /*
         * still in the handshake's loop iteration: the close is a posted
         * request, which no connection handler runs after a timer or a
         * posted event
         */

        if (ac->detach.posted) {
            ngx_delete_posted_event(&ac->detach);
        }

        ngx_http_finalize_request(ac->request, NGX_HTTP_CLOSE);
        ngx_http_run_posted_requests(c);
        return;
    }

    /* the cleanup of c->pool undoes the rest */

    ngx_http_close_connection(c);
}
