
/*
 * An upgraded dashboard connection.
 *
 * The handshake is checked and answered in the content handler.  Right
 * after it, the HTTP request is released (logged and freed, as at the end
 * of any request) and the connection is kept alone: an idle dashboard then
 * costs its connection and a small state, not a whole request pool.  The
 * 101 response is written as raw bytes at the head of the connection's
 * frame queue, so that it always precedes the first frame.  Every close
 * goes through ngx_http_activity_conn_finalize(); a cleanup of the
 * connection's pool undoes the rest, also when nginx closes it itself.
 *
 * What the messages mean is the protocol's business: it is called through
 * the handlers it gave at accept.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_sha1.h>

#include "ngx_http_activity_conn.h"
#include "ngx_http_activity_status.h"
#include "ngx_http_activity_ws.h"


#define NGX_HTTP_ACTIVITY_INPUT_MIN     512
#define NGX_HTTP_ACTIVITY_LINGER        2000

/* a compressed message counts once per started RATE_UNIT it inflates to */
#define NGX_HTTP_ACTIVITY_RATE_UNIT     4096


static void ngx_http_activity_conn_detach(ngx_event_t *ev);
static void ngx_http_activity_conn_cleanup(void *data);
static void ngx_http_activity_conn_read(ngx_event_t *rev);
static void ngx_http_activity_conn_write(ngx_event_t *wev);
static ngx_int_t ngx_http_activity_conn_input(ngx_http_activity_conn_t *ac);
static ngx_int_t ngx_http_activity_conn_frame(ngx_http_activity_conn_t *ac,
    ngx_http_activity_ws_frame_t *f, u_char *payload);
static ngx_int_t ngx_http_activity_conn_inflate(ngx_http_activity_conn_t *ac,
    u_char **data, size_t *len);
static ngx_int_t ngx_http_activity_conn_message(ngx_http_activity_conn_t *ac,
    u_char *data, size_t len, ngx_uint_t deflated);
static ngx_int_t ngx_http_activity_conn_rate(ngx_http_activity_conn_t *ac,
    ngx_uint_t n);
static void ngx_http_activity_conn_ping(ngx_event_t *ev);
static void ngx_http_activity_conn_fail(ngx_http_activity_listener_t *l,
    ngx_uint_t code);
static void ngx_http_activity_conn_going_away(
    ngx_http_activity_listener_t *l, ngx_uint_t code);
static void ngx_http_activity_conn_close_handler(ngx_event_t *ev);
static void ngx_http_activity_conn_close_within(ngx_http_activity_conn_t *ac,
    ngx_uint_t code, const char *reason, ngx_msec_t wait);
static void ngx_http_activity_conn_linger(ngx_http_activity_conn_t *ac);
#if (NGX_SSL)
static void ngx_http_activity_conn_ssl_closed(ngx_connection_t *c);
#endif


/*
 * ac lives in the connection's pool (zeroed); its pool cleanup is the
 * one place that undoes what the connection holds.
 */

ngx_int_t
ngx_http_activity_conn_init(ngx_http_activity_conn_t *ac,
    ngx_http_request_t *r, ngx_http_activity_conn_handlers_t *handlers,
    void *data)
{
    ngx_connection_t              *c;
    ngx_pool_cleanup_t            *cln;
    ngx_http_core_loc_conf_t      *clcf;
    ngx_http_activity_loc_conf_t  *alcf;

    c = r->connection;
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_activity_module);

    cln = ngx_pool_cleanup_add(c->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_http_activity_conn_cleanup;
    cln->data = ac;

    ac->connection = c;
    ac->request = r;
    ac->conf = alcf;
    ac->amcf = ngx_http_get_module_main_conf(r, ngx_http_activity_module);
    ac->fanout = ac->amcf->fanout_state;
    ac->handlers = handlers;
    ac->data = data;
    ac->rate_time = ngx_current_msec;

    ac->listener.connection = c;
    ac->listener.protocol = alcf->dashboard;
    ac->listener.fail = ngx_http_activity_conn_fail;
    ac->listener.going_away = ngx_http_activity_conn_going_away;

    ngx_http_activity_fanout_attach(ac->fanout, &ac->listener);

    ngx_http_activity_outq_init(&ac->listener.out, alcf->dashboard_queue,
                                alcf->dashboard_queue_time, c->log);

    ac->ping.handler = ngx_http_activity_conn_ping;
    ac->ping.data = ac;
    ac->ping.log = c->log;

    ac->close_event.handler = ngx_http_activity_conn_close_handler;
    ac->close_event.data = ac;
    ac->close_event.log = c->log;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    ac->nodelay = clcf->tcp_nodelay;

    ac->detach.handler = ngx_http_activity_conn_detach;
    ac->detach.data = ac;
    ac->detach.log = c->log;

#if (NGX_SSL)

    /*
     * HTTP's TLS connections gather small writes into a 16 KiB buffer
     * until a buffer marked flush or last; frames go out as they come
     */

    if (c->ssl) {
        c->ssl->buffer = 0;
    }

#endif

    return NGX_OK;
}


/*
 * The 101 response, queued ahead of every frame; with the answer to a
 * permessage-deflate offer when the handshake took one (listener's
 * deflate_max set).
 */

ngx_int_t
ngx_http_activity_conn_accept(ngx_http_activity_conn_t *ac, ngx_str_t *key)
{
    u_char                          hash[20], accept[28], *p;
    u_char                          ext[NGX_HTTP_ACTIVITY_WS_ANSWER_MAX];
    size_t                          ext_len;
    ngx_str_t                       src, dst;
    ngx_sha1_t                      sha1;
    ngx_http_activity_frame_t      *frame;
    ngx_http_activity_ws_deflate_t  d;

    static u_char  ext_head[] = CRLF "Sec-WebSocket-Extensions: ";

    static u_char  guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    static u_char  head[] = "HTTP/1.1 101 Switching Protocols" CRLF
                            "Upgrade: websocket" CRLF
                            "Connection: Upgrade" CRLF
                            "Sec-WebSocket-Accept: ";

    ngx_sha1_init(&sha1);
    ngx_sha1_update(&sha1, key->data, key->len);
    ngx_sha1_update(&sha1, guid, sizeof(guid) - 1);
    ngx_sha1_final(hash, &sha1);

    src.data = hash;
    src.len = sizeof(hash);
    dst.data = accept;

    ngx_encode_base64(&dst, &src);

    ext_len = 0;

    if (ac->listener.deflate_max) {
        d.server_max_window_bits = ac->listener.deflate_bits;
        d.client_max_window_bits = 0;

        ext_len = ngx_http_activity_ws_deflate_answer(ext, &d);
    }

    frame = ngx_http_activity_frame_raw(sizeof(head) - 1 + dst.len
                                        + (ext_len ? sizeof(ext_head) - 1
                                                     + ext_len : 0)
                                        + 4,
                                        ac->connection->log);
    if (frame == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(frame->data, head, sizeof(head) - 1);
    p = ngx_cpymem(p, dst.data, dst.len);

    if (ext_len) {
        p = ngx_cpymem(p, ext_head, sizeof(ext_head) - 1);
        p = ngx_cpymem(p, ext, ext_len);
    }

    *p++ = CR; *p++ = LF; *p++ = CR; *p++ = LF;

    (void) ngx_http_activity_fanout_send(ac->fanout, &ac->listener, frame);
    ngx_http_activity_frame_release(frame);

    return NGX_OK;
}


/*
 * The request is held (one count) until the detach event, right after
 * the content handler returns NGX_DONE, frees it; meanwhile nothing is
 * read.
 */

ngx_int_t
ngx_http_activity_conn_hold(ngx_http_activity_conn_t *ac)
{
    ngx_http_request_t  *r;

    r = ac->request;

    ngx_add_timer(&ac->ping, ac->conf->ping_interval);

    r->main->count++;

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->header_sent = 1;
    r->keepalive = 0;
    r->lingering_close = 0;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_post_event(&ac->detach, &ngx_posted_events);

    return NGX_DONE;
}


/*
 * The request is logged (status 101) and freed; the connection stays,
 * with these handlers.  Bytes the client sent behind its handshake are
 * taken over first.
 */

static void
ngx_http_activity_conn_detach(ngx_event_t *ev)
{
    ngx_http_activity_conn_t  *ac = ev->data;

    size_t               n;
    ngx_buf_t           *b;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ac->request;
    c = ac->connection;
    b = r->header_in;

    n = b->last - b->pos;

    if (n) {
        ac->in_size = ngx_max(n, NGX_HTTP_ACTIVITY_INPUT_MIN);

        ac->in = ngx_alloc(ac->in_size, c->log);
        if (ac->in == NULL) {
            ngx_http_activity_conn_finalize(ac);
            return;
        }

        ngx_memcpy(ac->in, b->pos, n);
        ac->in_len = n;
    }

    ac->request = NULL;

    ngx_http_free_request(r, 0);

    /* ngx_http_free_request() marks the connection as going away */

    c->destroyed = 0;

    /*
     * frames are small and go out as they come: without TCP_NODELAY
     * Nagle holds each behind the previous one's (delayed) ACK, ~40 ms
     */

    if (ac->nodelay && ngx_tcp_nodelay(c) != NGX_OK) {
        ngx_http_activity_conn_finalize(ac);
        return;
    }

    c->data = ac;
    c->read->handler = ngx_http_activity_conn_read;
    c->write->handler = ngx_http_activity_conn_write;

    /*
     * a handshake that ended on a worker already shutting down: its
     * dashboards were told to go before this one came, and this one
     * would keep the old worker alive
     */

    if (ngx_exiting || ngx_terminate) {
        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_GOING_AWAY,
                                     "server shutting down");
        return;
    }

    if (ac->in_len && ngx_http_activity_conn_input(ac) != NGX_OK) {
        return;
    }

    /* what arrived meanwhile was not read: edge-triggered, look now */

    ngx_http_activity_conn_read(c->read);
}


static void
ngx_http_activity_conn_cleanup(void *data)
{
    ngx_http_activity_conn_t  *ac = data;

    ngx_http_activity_fanout_detach(ac->fanout, &ac->listener);
    ngx_http_activity_outq_free(&ac->listener.out);

    if (ac->ping.timer_set) {
        ngx_del_timer(&ac->ping);
    }

    if (ac->close_event.posted) {
        ngx_delete_posted_event(&ac->close_event);
    }

    if (ac->detach.posted) {
        ngx_delete_posted_event(&ac->detach);
    }

    if (ac->in) {
        ngx_free(ac->in);
        ac->in = NULL;
    }

    if (ac->msg) {
        ngx_free(ac->msg);
        ac->msg = NULL;
    }

    if (ac->handlers && ac->handlers->on_close) {
        ac->handlers->on_close(ac);
    }
}


static void
ngx_http_activity_conn_read(ngx_event_t *rev)
{
    size_t                          size;
    ssize_t                         n;
    u_char                         *in;
    ngx_connection_t               *c;
    ngx_http_activity_conn_t  *ac;

    c = rev->data;
    ac = c->data;

    if (ac->finalized) {
        return;
    }

    /* worker_shutdown_timeout, or an nginx-side close */

    if (c->close) {
        ngx_http_activity_conn_finalize(ac);
        return;
    }

    if (ac->lingering) {
        u_char  discard[NGX_HTTP_ACTIVITY_INPUT_MIN];

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

        return;
    }

    for ( ;; ) {

        if (ac->in_size - ac->in_len == 0) {
            size = ngx_max(ac->in_size * 2, NGX_HTTP_ACTIVITY_INPUT_MIN);

            if (size > NGX_HTTP_ACTIVITY_MESSAGE_MAX
                       + NGX_HTTP_ACTIVITY_WS_HEADER_MAX + 4)
            {
                /* a parsed header would have been refused before this */
                ngx_http_activity_conn_close(ac,
                                             NGX_HTTP_ACTIVITY_WS_TOO_BIG,
                                             "message too big");
                return;
            }

            in = ngx_alloc(size, c->log);
            if (in == NULL) {
                ngx_http_activity_conn_finalize(ac);
                return;
            }

            if (ac->in) {
                ngx_memcpy(in, ac->in, ac->in_len);
                ngx_free(ac->in);
            }

            ac->in = in;
            ac->in_size = size;
        }

        n = c->recv(c, ac->in + ac->in_len, ac->in_size - ac->in_len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {

            /* the peer is gone: nothing to say to it */

            ngx_http_activity_conn_finalize(ac);
            return;
        }

        ac->in_len += n;

        if (ngx_http_activity_conn_input(ac) != NGX_OK) {
            return;
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_activity_conn_finalize(ac);
    }
}


static void
ngx_http_activity_conn_write(ngx_event_t *wev)
{
    ngx_int_t                       rc;
    ngx_connection_t               *c;
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


/* every complete frame in the input buffer; NGX_ERROR: connection closed */

static ngx_int_t
ngx_http_activity_conn_input(ngx_http_activity_conn_t *ac)
{
    int                           rc;
    size_t                        total;
    ngx_http_activity_ws_frame_t  f;

    while (ac->in_len && !ac->closing) {

        rc = ngx_http_activity_ws_parse_ext(ac->in, ac->in_len,
                                            NGX_HTTP_ACTIVITY_MESSAGE_MAX,
                                            ac->listener.deflate_max != 0,
                                            &f);

        if (rc < 0) {
            ngx_http_activity_conn_close(ac, -rc, "protocol error");
            return NGX_ERROR;
        }

        if (rc == 0) {
            break;
        }

        total = f.header + f.len;

        if (ac->in_len < total) {

            /* the read loop grows the buffer up to one whole frame */

            if (ac->in_size < total) {
                u_char  *in;

                in = ngx_alloc(total, ac->connection->log);
                if (in == NULL) {
                    ngx_http_activity_conn_finalize(ac);
                    return NGX_ERROR;
                }

                ngx_memcpy(in, ac->in, ac->in_len);
                ngx_free(ac->in);
                ac->in = in;
                ac->in_size = total;
            }

            break;
        }

        ngx_http_activity_ws_unmask(ac->in + f.header, f.len, f.mask);

        if (ngx_http_activity_conn_frame(ac, &f, ac->in + f.header)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ac->finalized) {
            return NGX_ERROR;
        }

        ngx_memmove(ac->in, ac->in + total, ac->in_len - total);
        ac->in_len -= total;
    }

    /* an idle connection keeps no large buffer */

    if (ac->in_len == 0 && ac->in_size > NGX_HTTP_ACTIVITY_INPUT_MIN) {
        ngx_free(ac->in);
        ac->in = NULL;
        ac->in_size = 0;
    }

    return ac->closing ? NGX_ERROR : NGX_OK;
}


static ngx_int_t
ngx_http_activity_conn_frame(ngx_http_activity_conn_t *ac,
    ngx_http_activity_ws_frame_t *f, u_char *payload)
{
    u_char     *msg;
    size_t      len;
    ngx_int_t   rc;
    ngx_uint_t  code;

    switch (f->opcode) {

    case NGX_HTTP_ACTIVITY_WS_PING:
        return ngx_http_activity_conn_send_control(ac,
                                                   NGX_HTTP_ACTIVITY_WS_PONG,
                                                   payload, f->len);

    case NGX_HTTP_ACTIVITY_WS_PONG:
        if (ac->listener.protocol == NGX_HTTP_ACTIVITY_WEBSOCKET) {
            ngx_http_activity_conn_pong(ac);
        }

        return NGX_OK;

    case NGX_HTTP_ACTIVITY_WS_CLOSE:
        /* echo the peer's code (7.4), refuse reserved ones */

        code = NGX_HTTP_ACTIVITY_WS_NORMAL;

        if (f->len == 1) {
            code = NGX_HTTP_ACTIVITY_WS_PROTOCOL;

        } else if (f->len >= 2) {
            code = (payload[0] << 8) | payload[1];

            if (!((code >= 1000 && code <= 1003)
                  || (code >= 1007 && code <= 1011)
                  || (code >= 3000 && code <= 4999)))
            {
                code = NGX_HTTP_ACTIVITY_WS_PROTOCOL;

            } else if (!ngx_http_activity_ws_utf8(payload + 2, f->len - 2)) {
                code = NGX_HTTP_ACTIVITY_WS_BAD_DATA;
            }
        }

        ngx_http_activity_conn_close(ac, code, NULL);
        return NGX_ERROR;

    case NGX_HTTP_ACTIVITY_WS_CONT:
        if (ac->msg_opcode == 0) {
            ngx_http_activity_conn_close(ac,
                                         NGX_HTTP_ACTIVITY_WS_PROTOCOL,
                                         "unexpected continuation");
            return NGX_ERROR;
        }

        break;

    default: /* text, binary */
        if (ac->msg_opcode) {
            ngx_http_activity_conn_close(ac,
                                         NGX_HTTP_ACTIVITY_WS_PROTOCOL,
                                         "unfinished message");
            return NGX_ERROR;
        }

        if (f->opcode == NGX_HTTP_ACTIVITY_WS_BINARY) {
            ngx_http_activity_conn_close(ac,
                                         NGX_HTTP_ACTIVITY_WS_UNSUPPORTED,
                                         "binary messages not accepted");
            return NGX_ERROR;
        }

        if (f->fin) {
            len = f->len;

            if (f->rsv1
                && ngx_http_activity_conn_inflate(ac, &payload, &len)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (!ngx_http_activity_ws_utf8(payload, len)) {
                ngx_http_activity_conn_close(ac,
                                             NGX_HTTP_ACTIVITY_WS_BAD_DATA,
                                             "invalid UTF-8");
                return NGX_ERROR;
            }

            return ngx_http_activity_conn_message(ac, payload, len, f->rsv1);
        }

        ac->msg_opcode = f->opcode;
        ac->msg_deflated = f->rsv1;
        break;
    }

    /* a fragment: gather the message, bounded like a single frame */

    if (ac->msg_len + f->len > NGX_HTTP_ACTIVITY_MESSAGE_MAX) {
        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_TOO_BIG,
                                     "message too big");
        return NGX_ERROR;
    }

    if (ac->msg == NULL) {
        ac->msg = ngx_alloc(NGX_HTTP_ACTIVITY_MESSAGE_MAX,
                             ac->connection->log);
        if (ac->msg == NULL) {
            ngx_http_activity_conn_finalize(ac);
            return NGX_ERROR;
        }
    }

    ngx_memcpy(ac->msg + ac->msg_len, payload, f->len);
    ac->msg_len += f->len;

    if (!f->fin) {
        return NGX_OK;
    }

    msg = ac->msg;
    len = ac->msg_len;

    /* the fragments' payloads, gathered, are one compressed message */

    if (ac->msg_deflated
        && ngx_http_activity_conn_inflate(ac, &msg, &len) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!ngx_http_activity_ws_utf8(msg, len)) {
        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_BAD_DATA,
                                     "invalid UTF-8");
        return NGX_ERROR;
    }

    rc = ngx_http_activity_conn_message(ac, msg, len, ac->msg_deflated);

    if (!ac->finalized) {
        ngx_free(ac->msg);
        ac->msg = NULL;
        ac->msg_len = 0;
        ac->msg_opcode = 0;
        ac->msg_deflated = 0;
    }

    return rc;
}


/*
 * A compressed message (RSV1) is inflated into the worker's buffer, no
 * more than the longest message: one that inflates past it closes the
 * connection with 1009 however few bytes it came in (a "zip bomb").
 */

static ngx_int_t
ngx_http_activity_conn_inflate(ngx_http_activity_conn_t *ac, u_char **data,
    size_t *len)
{
    ngx_str_t  out;

    switch (ngx_http_activity_deflate_inflate(
                ngx_http_activity_fanout_deflate(ac->fanout), *data, *len,
                NGX_HTTP_ACTIVITY_MESSAGE_MAX, &out))
    {
    case NGX_OK:
        *data = out.data;
        *len = out.len;
        return NGX_OK;

    case NGX_DECLINED:
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "activity: dashboard %V sent a compressed message of "
                      "more than %uz bytes, closing",
                      &ac->connection->addr_text,
                      (size_t) NGX_HTTP_ACTIVITY_MESSAGE_MAX);

        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_TOO_BIG,
                                     "message too big");
        return NGX_ERROR;

    case NGX_ERROR:
        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_BAD_DATA,
                                     "invalid compressed data");
        return NGX_ERROR;

    default:
        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_INTERNAL,
                                     "internal error");
        return NGX_ERROR;
    }
}


/*
 * A compressed message is charged for what it costs to read, not to
 * send: once per started 4 KiB it inflated to, so that a few bytes that
 * inflate to the message bound cannot buy its work at the message rate.
 */

static ngx_int_t
ngx_http_activity_conn_message(ngx_http_activity_conn_t *ac,
    u_char *data, size_t len, ngx_uint_t deflated)
{
    ngx_uint_t  n;

    n = 1;

    if (deflated && len > NGX_HTTP_ACTIVITY_RATE_UNIT) {
        n = (len + NGX_HTTP_ACTIVITY_RATE_UNIT - 1)
            / NGX_HTTP_ACTIVITY_RATE_UNIT;
    }

    if (ngx_http_activity_conn_rate(ac, n) != NGX_OK) {
        return NGX_ERROR;
    }

    return ac->handlers->on_message(ac, data, len);
}


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
 * A leaky bucket: each message adds 1000/rate ms of debt (n times that
 * when it counts as n), time pays it back; a burst of up to "rate"
 * messages is allowed, and one message whatever it counts as.
 */

static ngx_int_t
ngx_http_activity_conn_rate(ngx_http_activity_conn_t *ac, ngx_uint_t n)
{
    ngx_msec_t  elapsed, cost;

    elapsed = ngx_current_msec - ac->rate_time;
    ac->rate_time = ngx_current_msec;

    ac->rate_debt = (ac->rate_debt > elapsed) ? ac->rate_debt - elapsed
                                                : 0;

    cost = n * (1000 / ac->conf->dashboard_rate);
    ac->rate_debt += cost;

    if (ac->rate_debt > 1000 + cost) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "activity: dashboard %V sent more than %ui messages "
                      "a second, closing",
                      &ac->connection->addr_text,
                      ac->conf->dashboard_rate);

        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_POLICY,
                                     "rate limit");
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * Heartbeat: a ping every interval; no answer within the timeout and the
 * connection is dead.  A closing connection's linger also ends here.
 */

static void
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


static void
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


static void
ngx_http_activity_conn_going_away(ngx_http_activity_listener_t *l,
    ngx_uint_t code)
{
    ngx_http_activity_conn_t  *ac;

    ac = (ngx_http_activity_conn_t *) l;

    ngx_http_activity_conn_close(ac, code, "server shutting down");
}


static void
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

    ngx_http_activity_conn_read(c->read);
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
