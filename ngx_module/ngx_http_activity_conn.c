
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
 *
 * This file is the life cycle; reading is ngx_http_activity_conn_read.c,
 * writing and closing ngx_http_activity_conn_write.c (the list is in
 * ngx_http_activity_conn_internal.h).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_sha1.h>

#include "ngx_http_activity_conn_internal.h"
#include "ngx_http_activity_ws.h"


static void ngx_http_activity_conn_detach(ngx_event_t *ev);
static void ngx_http_activity_conn_cleanup(void *data);


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
