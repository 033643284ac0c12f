
/*
 * The dashboard endpoint.
 *
 * The handshake is checked and answered in the content handler.  Right
 * after it, the HTTP request is released (logged and freed, as at the end
 * of any request) and the connection is kept alone: an idle dashboard then
 * costs its connection and a small state, not a whole request pool.  The
 * 101 response is written as raw bytes at the head of the connection's
 * frame queue, so that it always precedes the first frame.  Every close
 * goes through ngx_http_activity_dashboard_finalize(); a cleanup of the
 * connection's pool undoes the rest, also when nginx closes it itself.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_sha1.h>
#include <jansson.h>

#include "ngx_http_activity_module.h"
#include "ngx_http_activity_dashboard.h"
#include "ngx_http_activity_fanout.h"
#include "ngx_http_activity_frame.h"
#include "ngx_http_activity_jwt.h"
#include "ngx_http_activity_sio.h"
#include "ngx_http_activity_status.h"
#include "ngx_http_activity_ws.h"


#define NGX_HTTP_ACTIVITY_MESSAGE_MAX   65536
#define NGX_HTTP_ACTIVITY_INPUT_MIN     512
#define NGX_HTTP_ACTIVITY_LINGER        2000
#define NGX_HTTP_ACTIVITY_MAX_PAYLOAD   1000000


typedef struct {
    ngx_http_activity_listener_t     listener;
    ngx_connection_t                *connection;
    ngx_http_request_t              *request;   /* until detached */
    ngx_http_activity_loc_conf_t    *conf;
    ngx_http_activity_main_conf_t   *amcf;
    ngx_http_activity_fanout_t      *fanout;

    u_char                          *in;
    size_t                           in_len;
    size_t                           in_size;
    u_char                          *msg;
    size_t                           msg_len;
    ngx_uint_t                       msg_opcode;

    ngx_event_t                      ping;
    ngx_event_t                      expiry;
    ngx_event_t                      close_event;
    ngx_event_t                      detach;

    ngx_str_t                        user;
    ngx_str_t                        token;     /* from the handshake */
    time_t                           started;
    ngx_msec_t                       rate_time;
    ngx_msec_t                       rate_debt;
    u_char                           sid[20];

    unsigned                         authed:1;
    unsigned                         awaiting_pong:1;
    unsigned                         closing:1;
    unsigned                         lingering:1;
    unsigned                         nodelay:1;
    unsigned                         finalized:1;
    unsigned                         counted:1;
} ngx_http_activity_dashboard_t;


static ngx_int_t ngx_http_activity_dashboard_refuse(ngx_http_request_t *r,
    ngx_uint_t status, const char *body);
static ngx_int_t ngx_http_activity_dashboard_check_upgrade(
    ngx_http_request_t *r, ngx_str_t *key);
static ngx_table_elt_t *ngx_http_activity_dashboard_header(
    ngx_http_request_t *r, const char *name);
static ngx_int_t ngx_http_activity_dashboard_find_token(ngx_http_request_t *r,
    ngx_str_t *token);
static ngx_int_t ngx_http_activity_dashboard_accept(
    ngx_http_activity_dashboard_t *ctx, ngx_str_t *key);
static void ngx_http_activity_dashboard_cleanup(void *data);
static void ngx_http_activity_dashboard_detach(ngx_event_t *ev);
static void ngx_http_activity_dashboard_read(ngx_event_t *rev);
static void ngx_http_activity_dashboard_write(ngx_event_t *wev);
static ngx_int_t ngx_http_activity_dashboard_input(
    ngx_http_activity_dashboard_t *ctx);
static ngx_int_t ngx_http_activity_dashboard_frame(
    ngx_http_activity_dashboard_t *ctx, ngx_http_activity_ws_frame_t *f,
    u_char *payload);
static ngx_int_t ngx_http_activity_dashboard_message(
    ngx_http_activity_dashboard_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_activity_dashboard_sio(
    ngx_http_activity_dashboard_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_activity_dashboard_sio_connect(
    ngx_http_activity_dashboard_t *ctx, ngx_http_activity_sio_packet_t *pkt);
static ngx_int_t ngx_http_activity_dashboard_sio_event(
    ngx_http_activity_dashboard_t *ctx, ngx_http_activity_sio_packet_t *pkt);
static ngx_int_t ngx_http_activity_dashboard_plain(
    ngx_http_activity_dashboard_t *ctx, u_char *data, size_t len);
static json_t *ngx_http_activity_dashboard_rooms(
    ngx_http_activity_dashboard_t *ctx, json_t *names, ngx_uint_t join);
static json_t *ngx_http_activity_dashboard_reauth(
    ngx_http_activity_dashboard_t *ctx, json_t *arg);
static ngx_int_t ngx_http_activity_dashboard_authenticate(
    ngx_http_activity_dashboard_t *ctx, ngx_str_t *token,
    ngx_http_activity_jwt_claims_t *claims);
static ngx_int_t ngx_http_activity_dashboard_ready(
    ngx_http_activity_dashboard_t *ctx);
static ngx_int_t ngx_http_activity_dashboard_send(
    ngx_http_activity_dashboard_t *ctx, u_char *data, size_t len);
static ngx_int_t ngx_http_activity_dashboard_send_frame(
    ngx_http_activity_dashboard_t *ctx, ngx_http_activity_frame_t *frame);
static ngx_int_t ngx_http_activity_dashboard_send_json(
    ngx_http_activity_dashboard_t *ctx, const char *prefix, json_t *json,
    const char *suffix);
static ngx_int_t ngx_http_activity_dashboard_send_control(
    ngx_http_activity_dashboard_t *ctx, ngx_uint_t opcode, u_char *data,
    size_t len);
static ngx_int_t ngx_http_activity_dashboard_rate(
    ngx_http_activity_dashboard_t *ctx);
static void ngx_http_activity_dashboard_ping(ngx_event_t *ev);
static void ngx_http_activity_dashboard_expired(ngx_event_t *ev);
static void ngx_http_activity_dashboard_fail(ngx_http_activity_listener_t *l,
    ngx_uint_t code);
static void ngx_http_activity_dashboard_going_away(
    ngx_http_activity_listener_t *l, ngx_uint_t code);
static void ngx_http_activity_dashboard_close_handler(ngx_event_t *ev);
static void ngx_http_activity_dashboard_close(
    ngx_http_activity_dashboard_t *ctx, ngx_uint_t code, const char *reason);
static void ngx_http_activity_dashboard_linger(
    ngx_http_activity_dashboard_t *ctx);
static void ngx_http_activity_dashboard_finalize(
    ngx_http_activity_dashboard_t *ctx);


ngx_int_t
ngx_http_activity_dashboard_handler(ngx_http_request_t *r)
{
    ngx_str_t                        key, value, token;
    ngx_atomic_t                    *count;
    ngx_connection_t                *c;
    ngx_pool_cleanup_t              *cln;
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_activity_loc_conf_t    *alcf;
    ngx_http_activity_dashboard_t   *ctx;
    ngx_http_activity_main_conf_t   *amcf;
    ngx_http_activity_jwt_claims_t   claims;

    c = r->connection;
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_activity_module);
    amcf = ngx_http_get_module_main_conf(r, ngx_http_activity_module);

    if (r != r->main || amcf->fanout_state == NULL) {
        return NGX_DECLINED;
    }

    if (r->method != NGX_HTTP_GET) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (alcf->dashboard == NGX_HTTP_ACTIVITY_SOCKETIO) {

        if (ngx_http_arg(r, (u_char *) "transport", 9, &value) == NGX_OK
            && !(value.len == 9
                 && ngx_strncmp(value.data, "websocket", 9) == 0))
        {
            return ngx_http_activity_dashboard_refuse(r,
                       NGX_HTTP_BAD_REQUEST,
                       "{\"code\":3,\"message\":\"Only the websocket "
                       "transport is served here: connect with "
                       "transports: [\\\"websocket\\\"]\"}");
        }

        if (ngx_http_arg(r, (u_char *) "EIO", 3, &value) == NGX_OK
            && !(value.len == 1 && value.data[0] == '4'))
        {
            return ngx_http_activity_dashboard_refuse(r,
                       NGX_HTTP_BAD_REQUEST,
                       "{\"code\":5,\"message\":\"Unsupported protocol "
                       "version: Engine.IO 4 (Socket.IO v3, v4) only\"}");
        }
    }

    if (ngx_http_activity_dashboard_check_upgrade(r, &key) != NGX_OK) {
        return ngx_http_activity_dashboard_refuse(r, NGX_HTTP_BAD_REQUEST,
                                        "{\"message\":\"a WebSocket upgrade "
                                        "(HTTP/1.1, version 13) is "
                                        "expected\"}");
    }

    /* a token given with the handshake is checked before the upgrade */

    ngx_str_null(&token);

    if (ngx_http_activity_dashboard_find_token(r, &token) == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memzero(&claims, sizeof(ngx_http_activity_jwt_claims_t));

    if (token.len || alcf->dashboard == NGX_HTTP_ACTIVITY_WEBSOCKET) {

        switch (ngx_http_activity_jwt_verify(&alcf->jwt, &token,
                                             &alcf->dashboard_role, r->pool,
                                             &claims))
        {
        case NGX_OK:
            break;

        case NGX_DECLINED:
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "activity: dashboard refused %V: %s",
                          &c->addr_text, claims.reason);

            ngx_http_activity_stat_add(amcf->stats,
                                       auth_refused[claims.code], 1);

            return ngx_http_activity_dashboard_refuse(r, claims.status,
                                                      claims.status
                                                      == NGX_HTTP_FORBIDDEN
                                                      ? "{\"message\":"
                                                        "\"forbidden\"}"
                                                      : "{\"message\":"
                                                        "\"unauthorized\"}");

        default:
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    count = &amcf->stats->dashboard_connections;

    if (ngx_atomic_fetch_add(count, 1) >= amcf->max_connections) {
        (void) ngx_atomic_fetch_add(count, -1);

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "activity: dashboard refused %V: %ui connections "
                      "already", &c->addr_text, amcf->max_connections);

        return ngx_http_activity_dashboard_refuse(r,
                                        NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "{\"message\":\"too many dashboard "
                                        "connections\"}");
    }

    /* what outlives the request lives in the connection's pool */

    ctx = ngx_pcalloc(c->pool, sizeof(ngx_http_activity_dashboard_t));
    if (ctx == NULL) {
        (void) ngx_atomic_fetch_add(count, -1);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->counted = 1;
    ngx_http_activity_stat_add(amcf->stats, dashboards[alcf->dashboard], 1);

    cln = ngx_pool_cleanup_add(c->pool, 0);
    if (cln == NULL) {
        ctx->counted = 0;
        (void) ngx_atomic_fetch_add(count, -1);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_activity_dashboard_cleanup;
    cln->data = ctx;

    ctx->connection = c;
    ctx->request = r;
    ctx->conf = alcf;
    ctx->amcf = amcf;
    ctx->fanout = amcf->fanout_state;
    ctx->started = ngx_time();
    ctx->rate_time = ngx_current_msec;

    if (token.len) {
        ctx->token.data = ngx_pnalloc(c->pool, token.len);
        if (ctx->token.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(ctx->token.data, token.data, token.len);
        ctx->token.len = token.len;
    }

    ctx->listener.connection = c;
    ctx->listener.protocol = alcf->dashboard;
    ctx->listener.fail = ngx_http_activity_dashboard_fail;
    ctx->listener.going_away = ngx_http_activity_dashboard_going_away;

    ngx_http_activity_fanout_attach(ctx->fanout, &ctx->listener);

    ngx_http_activity_outq_init(&ctx->listener.out, alcf->dashboard_queue,
                                c->log);

    ctx->ping.handler = ngx_http_activity_dashboard_ping;
    ctx->ping.data = ctx;
    ctx->ping.log = c->log;

    ctx->expiry.handler = ngx_http_activity_dashboard_expired;
    ctx->expiry.data = ctx;
    ctx->expiry.log = c->log;

    ctx->close_event.handler = ngx_http_activity_dashboard_close_handler;
    ctx->close_event.data = ctx;
    ctx->close_event.log = c->log;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);
    ctx->nodelay = clcf->tcp_nodelay;

    ctx->detach.handler = ngx_http_activity_dashboard_detach;
    ctx->detach.data = ctx;
    ctx->detach.log = c->log;

    /* from here on the connection speaks WebSocket */

    if (ngx_http_activity_dashboard_accept(ctx, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (alcf->dashboard == NGX_HTTP_ACTIVITY_WEBSOCKET) {
        if (claims.sub.len) {
            ctx->user.data = ngx_pnalloc(c->pool, claims.sub.len);
            if (ctx->user.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            ngx_memcpy(ctx->user.data, claims.sub.data, claims.sub.len);
            ctx->user.len = claims.sub.len;
        }

        if (claims.exp) {
            ngx_add_timer(&ctx->expiry,
                          (ngx_msec_t) ngx_max(claims.exp - ngx_time(), 1)
                          * 1000);
        }

        if (ngx_http_activity_dashboard_ready(ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

    } else {

        /* a client that never sends CONNECT goes at the expiry timer */

        ngx_add_timer(&ctx->expiry, alcf->ping_timeout);
    }

    ngx_add_timer(&ctx->ping, alcf->ping_interval);

    /*
     * The request is held (one count) until the detach event, right after
     * this handler returns, frees it; meanwhile nothing is read.
     */

    r->main->count++;

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->header_sent = 1;
    r->keepalive = 0;
    r->lingering_close = 0;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_post_event(&ctx->detach, &ngx_posted_events);

    return NGX_DONE;
}


/*
 * The request is logged (status 101) and freed; the connection stays,
 * with these handlers.  Bytes the client sent behind its handshake are
 * taken over first.
 */

static void
ngx_http_activity_dashboard_detach(ngx_event_t *ev)
{
    ngx_http_activity_dashboard_t  *ctx = ev->data;

    size_t               n;
    ngx_buf_t           *b;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ctx->request;
    c = ctx->connection;
    b = r->header_in;

    n = b->last - b->pos;

    if (n) {
        ctx->in_size = ngx_max(n, NGX_HTTP_ACTIVITY_INPUT_MIN);

        ctx->in = ngx_alloc(ctx->in_size, c->log);
        if (ctx->in == NULL) {
            ngx_http_activity_dashboard_finalize(ctx);
            return;
        }

        ngx_memcpy(ctx->in, b->pos, n);
        ctx->in_len = n;
    }

    ctx->request = NULL;

    ngx_http_free_request(r, 0);

    /* ngx_http_free_request() marks the connection as going away */

    c->destroyed = 0;

    /*
     * frames are small and go out as they come: without TCP_NODELAY
     * Nagle holds each behind the previous one's (delayed) ACK, ~40 ms
     */

    if (ctx->nodelay && ngx_tcp_nodelay(c) != NGX_OK) {
        ngx_http_activity_dashboard_finalize(ctx);
        return;
    }

    c->data = ctx;
    c->read->handler = ngx_http_activity_dashboard_read;
    c->write->handler = ngx_http_activity_dashboard_write;

    if (ctx->in_len && ngx_http_activity_dashboard_input(ctx) != NGX_OK) {
        return;
    }

    /* what arrived meanwhile was not read: edge-triggered, look now */

    ngx_http_activity_dashboard_read(c->read);
}


static ngx_int_t
ngx_http_activity_dashboard_refuse(ngx_http_request_t *r, ngx_uint_t status,
    const char *body)
{
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;
    ngx_table_elt_t  *h;

    r->headers_out.status = status;
    r->headers_out.content_length_n = ngx_strlen(body);
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    if (status == NGX_HTTP_UNAUTHORIZED) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "WWW-Authenticate");
#if (nginx_version >= 1023000)
        /* 1.23 chains repeated headers: auth_request follows ->next */
        h->next = NULL;
#endif
        ngx_str_set(&h->value, "Bearer");
        r->headers_out.www_authenticate = h;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = (u_char *) body;
    b->last = b->pos + ngx_strlen(body);
    b->memory = 1;
    b->last_buf = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_activity_dashboard_check_upgrade(ngx_http_request_t *r,
    ngx_str_t *key)
{
    ngx_table_elt_t  *h;

    if (r->http_version != NGX_HTTP_VERSION_11
#if (NGX_HTTP_V2)
        || r->stream
#endif
        )
    {
        return NGX_DECLINED;
    }

    /* nginx 1.22 fills neither r->headers_in.upgrade nor .connection */

    h = ngx_http_activity_dashboard_header(r, "Upgrade");

    if (h == NULL || h->value.len != sizeof("websocket") - 1
        || ngx_strncasecmp(h->value.data, (u_char *) "websocket", 9) != 0)
    {
        return NGX_DECLINED;
    }

    h = ngx_http_activity_dashboard_header(r, "Connection");

    if (h == NULL
        || ngx_strlcasestrn(h->value.data, h->value.data + h->value.len,
                            (u_char *) "upgrade", 7 - 1)
           == NULL)
    {
        return NGX_DECLINED;
    }

    h = ngx_http_activity_dashboard_header(r, "Sec-WebSocket-Version");

    if (h == NULL || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0)
    {
        return NGX_DECLINED;
    }

    /* 16 random bytes, base64: 24 characters */

    h = ngx_http_activity_dashboard_header(r, "Sec-WebSocket-Key");

    if (h == NULL || h->value.len != 24) {
        return NGX_DECLINED;
    }

    *key = h->value;

    return NGX_OK;
}


static ngx_table_elt_t *
ngx_http_activity_dashboard_header(ngx_http_request_t *r, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * ?token= or Authorization: Bearer.  A token in the query string is
 * copied, then blanked in the request line: error and access logs print
 * that line, and a token must never reach a log.
 */

static ngx_int_t
ngx_http_activity_dashboard_find_token(ngx_http_request_t *r,
    ngx_str_t *token)
{
    ngx_str_t  value;

    if (ngx_http_arg(r, (u_char *) "token", 5, &value) == NGX_OK
        && value.len)
    {
        token->data = ngx_pnalloc(r->pool, value.len);
        if (token->data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(token->data, value.data, value.len);
        token->len = value.len;

        ngx_memset(value.data, 'x', value.len);

        return NGX_OK;
    }

    if (ngx_http_activity_jwt_bearer(r, token) == NGX_OK) {
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_activity_dashboard_accept(ngx_http_activity_dashboard_t *ctx,
    ngx_str_t *key)
{
    u_char                      hash[20], accept[28], open[160], *p;
    ngx_str_t                   src, dst;
    ngx_sha1_t                  sha1;
    ngx_http_activity_frame_t  *frame;

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

    frame = ngx_http_activity_frame_raw(sizeof(head) - 1 + dst.len + 4,
                                        ctx->connection->log);
    if (frame == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(frame->data, head, sizeof(head) - 1);
    p = ngx_cpymem(p, dst.data, dst.len);
    *p++ = CR; *p++ = LF; *p++ = CR; *p++ = LF;

    (void) ngx_http_activity_fanout_send(ctx->fanout, &ctx->listener, frame);
    ngx_http_activity_frame_release(frame);

    if (ctx->listener.protocol != NGX_HTTP_ACTIVITY_SOCKETIO) {
        return NGX_OK;
    }

    /* Engine.IO open packet */

    for (p = ctx->sid; p < ctx->sid + sizeof(ctx->sid); p++) {
        *p = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
             "0123456789-_"[ngx_random() & 63];
    }

    p = open;
    src.data = p;
    src.len = ngx_sprintf(p, "0{\"sid\":\"%*s\",\"upgrades\":[],"
                          "\"pingInterval\":%M,\"pingTimeout\":%M,"
                          "\"maxPayload\":%d}",
                          sizeof(ctx->sid), ctx->sid,
                          ctx->conf->ping_interval, ctx->conf->ping_timeout,
                          NGX_HTTP_ACTIVITY_MAX_PAYLOAD)
              - p;

    return ngx_http_activity_dashboard_send(ctx, src.data, src.len);
}


static void
ngx_http_activity_dashboard_cleanup(void *data)
{
    ngx_http_activity_dashboard_t  *ctx = data;

    ngx_http_activity_stats_t  *stats;

    ngx_http_activity_fanout_detach(ctx->fanout, &ctx->listener);
    ngx_http_activity_outq_free(&ctx->listener.out);

    if (ctx->ping.timer_set) {
        ngx_del_timer(&ctx->ping);
    }

    if (ctx->expiry.timer_set) {
        ngx_del_timer(&ctx->expiry);
    }

    if (ctx->close_event.posted) {
        ngx_delete_posted_event(&ctx->close_event);
    }

    if (ctx->detach.posted) {
        ngx_delete_posted_event(&ctx->detach);
    }

    if (ctx->in) {
        ngx_free(ctx->in);
        ctx->in = NULL;
    }

    if (ctx->msg) {
        ngx_free(ctx->msg);
        ctx->msg = NULL;
    }

    if (ctx->counted) {
        stats = ctx->amcf->stats;

        (void) ngx_atomic_fetch_add(&stats->dashboard_connections, -1);
        (void) ngx_atomic_fetch_add(&stats->dashboards[ctx->conf->dashboard],
                                    -1);
        ctx->counted = 0;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "activity: dashboard %V disconnected, user \"%V\", "
                  "%T s", &ctx->connection->addr_text, &ctx->user,
                  ngx_time() - ctx->started);
}


static void
ngx_http_activity_dashboard_read(ngx_event_t *rev)
{
    size_t                          size;
    ssize_t                         n;
    u_char                         *in;
    ngx_connection_t               *c;
    ngx_http_activity_dashboard_t  *ctx;

    c = rev->data;
    ctx = c->data;

    if (ctx->finalized) {
        return;
    }

    /* worker_shutdown_timeout, or an nginx-side close */

    if (c->close) {
        ngx_http_activity_dashboard_finalize(ctx);
        return;
    }

    if (ctx->lingering) {
        u_char  discard[NGX_HTTP_ACTIVITY_INPUT_MIN];

        for ( ;; ) {
            n = c->recv(c, discard, sizeof(discard));

            if (n == NGX_AGAIN) {
                break;
            }

            if (n == 0 || n == NGX_ERROR) {
                ngx_http_activity_dashboard_finalize(ctx);
                return;
            }
        }

        if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
            ngx_http_activity_dashboard_finalize(ctx);
        }

        return;
    }

    for ( ;; ) {

        if (ctx->in_size - ctx->in_len == 0) {
            size = ngx_max(ctx->in_size * 2, NGX_HTTP_ACTIVITY_INPUT_MIN);

            if (size > NGX_HTTP_ACTIVITY_MESSAGE_MAX
                       + NGX_HTTP_ACTIVITY_WS_HEADER_MAX + 4)
            {
                /* a parsed header would have been refused before this */
                ngx_http_activity_dashboard_close(ctx,
                                                NGX_HTTP_ACTIVITY_WS_TOO_BIG,
                                                "message too big");
                return;
            }

            in = ngx_alloc(size, c->log);
            if (in == NULL) {
                ngx_http_activity_dashboard_finalize(ctx);
                return;
            }

            if (ctx->in) {
                ngx_memcpy(in, ctx->in, ctx->in_len);
                ngx_free(ctx->in);
            }

            ctx->in = in;
            ctx->in_size = size;
        }

        n = c->recv(c, ctx->in + ctx->in_len, ctx->in_size - ctx->in_len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {

            /* the peer is gone: nothing to say to it */

            ngx_http_activity_dashboard_finalize(ctx);
            return;
        }

        ctx->in_len += n;

        if (ngx_http_activity_dashboard_input(ctx) != NGX_OK) {
            return;
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_activity_dashboard_finalize(ctx);
    }
}


static void
ngx_http_activity_dashboard_write(ngx_event_t *wev)
{
    ngx_int_t                       rc;
    ngx_connection_t               *c;
    ngx_http_activity_dashboard_t  *ctx;

    c = wev->data;
    ctx = c->data;

    if (ctx->finalized) {
        return;
    }

    rc = ngx_http_activity_outq_flush(&ctx->listener.out, c);

    if (rc == NGX_ERROR) {
        ngx_http_activity_dashboard_finalize(ctx);

    } else if (rc == NGX_OK && ctx->closing) {
        ngx_http_activity_dashboard_linger(ctx);
    }
}


/* every complete frame in the input buffer; NGX_ERROR: connection closed */

static ngx_int_t
ngx_http_activity_dashboard_input(ngx_http_activity_dashboard_t *ctx)
{
    int                           rc;
    size_t                        total;
    ngx_http_activity_ws_frame_t  f;

    while (ctx->in_len && !ctx->closing) {

        rc = ngx_http_activity_ws_parse(ctx->in, ctx->in_len,
                                        NGX_HTTP_ACTIVITY_MESSAGE_MAX, &f);

        if (rc < 0) {
            ngx_http_activity_dashboard_close(ctx, -rc, "protocol error");
            return NGX_ERROR;
        }

        if (rc == 0) {
            break;
        }

        total = f.header + f.len;

        if (ctx->in_len < total) {

            /* the read loop grows the buffer up to one whole frame */

            if (ctx->in_size < total) {
                u_char  *in;

                in = ngx_alloc(total, ctx->connection->log);
                if (in == NULL) {
                    ngx_http_activity_dashboard_finalize(ctx);
                    return NGX_ERROR;
                }

                ngx_memcpy(in, ctx->in, ctx->in_len);
                ngx_free(ctx->in);
                ctx->in = in;
                ctx->in_size = total;
            }

            break;
        }

        ngx_http_activity_ws_unmask(ctx->in + f.header, f.len, f.mask);

        if (ngx_http_activity_dashboard_frame(ctx, &f, ctx->in + f.header)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ctx->finalized) {
            return NGX_ERROR;
        }

        ngx_memmove(ctx->in, ctx->in + total, ctx->in_len - total);
        ctx->in_len -= total;
    }

    /* an idle connection keeps no large buffer */

    if (ctx->in_len == 0 && ctx->in_size > NGX_HTTP_ACTIVITY_INPUT_MIN) {
        ngx_free(ctx->in);
        ctx->in = NULL;
        ctx->in_size = 0;
    }

    return ctx->closing ? NGX_ERROR : NGX_OK;
}


static ngx_int_t
ngx_http_activity_dashboard_frame(ngx_http_activity_dashboard_t *ctx,
    ngx_http_activity_ws_frame_t *f, u_char *payload)
{
    u_char     *msg;
    ngx_int_t   rc;
    ngx_uint_t  code;

    switch (f->opcode) {

    case NGX_HTTP_ACTIVITY_WS_PING:
        return ngx_http_activity_dashboard_send_control(ctx,
                                            NGX_HTTP_ACTIVITY_WS_PONG,
                                            payload, f->len);

    case NGX_HTTP_ACTIVITY_WS_PONG:
        if (ctx->listener.protocol == NGX_HTTP_ACTIVITY_WEBSOCKET) {
            ctx->awaiting_pong = 0;
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

        ngx_http_activity_dashboard_close(ctx, code, NULL);
        return NGX_ERROR;

    case NGX_HTTP_ACTIVITY_WS_CONT:
        if (ctx->msg_opcode == 0) {
            ngx_http_activity_dashboard_close(ctx,
                                              NGX_HTTP_ACTIVITY_WS_PROTOCOL,
                                              "unexpected continuation");
            return NGX_ERROR;
        }

        break;

    default: /* text, binary */
        if (ctx->msg_opcode) {
            ngx_http_activity_dashboard_close(ctx,
                                              NGX_HTTP_ACTIVITY_WS_PROTOCOL,
                                              "unfinished message");
            return NGX_ERROR;
        }

        if (f->opcode == NGX_HTTP_ACTIVITY_WS_BINARY) {
            ngx_http_activity_dashboard_close(ctx,
                                            NGX_HTTP_ACTIVITY_WS_UNSUPPORTED,
                                            "binary messages not accepted");
            return NGX_ERROR;
        }

        if (f->fin) {
            if (!ngx_http_activity_ws_utf8(payload, f->len)) {
                ngx_http_activity_dashboard_close(ctx,
                                               NGX_HTTP_ACTIVITY_WS_BAD_DATA,
                                               "invalid UTF-8");
                return NGX_ERROR;
            }

            return ngx_http_activity_dashboard_message(ctx, payload, f->len);
        }

        ctx->msg_opcode = f->opcode;
        break;
    }

    /* a fragment: gather the message, bounded like a single frame */

    if (ctx->msg_len + f->len > NGX_HTTP_ACTIVITY_MESSAGE_MAX) {
        ngx_http_activity_dashboard_close(ctx, NGX_HTTP_ACTIVITY_WS_TOO_BIG,
                                          "message too big");
        return NGX_ERROR;
    }

    if (ctx->msg == NULL) {
        ctx->msg = ngx_alloc(NGX_HTTP_ACTIVITY_MESSAGE_MAX,
                             ctx->connection->log);
        if (ctx->msg == NULL) {
            ngx_http_activity_dashboard_finalize(ctx);
            return NGX_ERROR;
        }
    }

    ngx_memcpy(ctx->msg + ctx->msg_len, payload, f->len);
    ctx->msg_len += f->len;

    if (!f->fin) {
        return NGX_OK;
    }

    msg = ctx->msg;

    if (!ngx_http_activity_ws_utf8(msg, ctx->msg_len)) {
        ngx_http_activity_dashboard_close(ctx, NGX_HTTP_ACTIVITY_WS_BAD_DATA,
                                          "invalid UTF-8");
        return NGX_ERROR;
    }

    rc = ngx_http_activity_dashboard_message(ctx, msg, ctx->msg_len);

    if (!ctx->finalized) {
        ngx_free(ctx->msg);
        ctx->msg = NULL;
        ctx->msg_len = 0;
        ctx->msg_opcode = 0;
    }

    return rc;
}


static ngx_int_t
ngx_http_activity_dashboard_message(ngx_http_activity_dashboard_t *ctx,
    u_char *data, size_t len)
{
    if (ngx_http_activity_dashboard_rate(ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->listener.protocol == NGX_HTTP_ACTIVITY_SOCKETIO) {
        return ngx_http_activity_dashboard_sio(ctx, data, len);
    }

    return ngx_http_activity_dashboard_plain(ctx, data, len);
}


static ngx_int_t
ngx_http_activity_dashboard_sio(ngx_http_activity_dashboard_t *ctx,
    u_char *data, size_t len)
{
    ngx_http_activity_sio_packet_t  pkt;

    if (len == 0) {
        goto invalid;
    }

    switch (data[0]) {

    case NGX_HTTP_ACTIVITY_EIO_PONG:
        ctx->awaiting_pong = 0;
        return NGX_OK;

    case NGX_HTTP_ACTIVITY_EIO_CLOSE:
        ngx_http_activity_dashboard_close(ctx, NGX_HTTP_ACTIVITY_WS_NORMAL,
                                          NULL);
        return NGX_ERROR;

    case NGX_HTTP_ACTIVITY_EIO_NOOP:
    case NGX_HTTP_ACTIVITY_EIO_UPGRADE:
        return NGX_OK;

    case NGX_HTTP_ACTIVITY_EIO_MESSAGE:
        break;

    default:
        /* "2" from a client is the wrong heartbeat direction in v4 */
        goto invalid;
    }

    if (ngx_http_activity_sio_parse(data + 1, len - 1, &pkt) != 0) {
        goto invalid;
    }

    if (pkt.nsp_len != sizeof(NGX_HTTP_ACTIVITY_SIO_NSP) - 1
        || ngx_strncmp(pkt.nsp, NGX_HTTP_ACTIVITY_SIO_NSP, pkt.nsp_len) != 0)
    {
        if (pkt.type == NGX_HTTP_ACTIVITY_SIO_CONNECT) {
            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "activity: dashboard %V asked for namespace "
                          "\"%*s\"", &ctx->connection->addr_text,
                          pkt.nsp_len, pkt.nsp);

            return ngx_http_activity_dashboard_send(ctx,
                          (u_char *) "44{\"message\":\"Invalid namespace\"}",
                          sizeof("44{\"message\":\"Invalid namespace\"}")
                          - 1);
        }

        return NGX_OK;
    }

    switch (pkt.type) {

    case NGX_HTTP_ACTIVITY_SIO_CONNECT:
        return ngx_http_activity_dashboard_sio_connect(ctx, &pkt);

    case NGX_HTTP_ACTIVITY_SIO_DISCONNECT:
        ngx_http_activity_dashboard_close(ctx, NGX_HTTP_ACTIVITY_WS_NORMAL,
                                          NULL);
        return NGX_ERROR;

    case NGX_HTTP_ACTIVITY_SIO_EVENT:
        if (!ctx->authed) {
            goto invalid;
        }

        return ngx_http_activity_dashboard_sio_event(ctx, &pkt);

    case NGX_HTTP_ACTIVITY_SIO_ACK:
        return NGX_OK;

    default:
        goto invalid;
    }

invalid:

    ngx_http_activity_dashboard_close(ctx, NGX_HTTP_ACTIVITY_WS_PROTOCOL,
                                      "invalid packet");
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_activity_dashboard_sio_connect(ngx_http_activity_dashboard_t *ctx,
    ngx_http_activity_sio_packet_t *pkt)
{
    u_char                          *p, buf[128];
    json_t                          *auth, *error;
    ngx_str_t                        token;
    ngx_int_t                        rc;
    const char                      *s;
    ngx_http_activity_jwt_claims_t   claims;

    if (ctx->authed) {
        goto connected;
    }

    token = ctx->token;
    auth = NULL;

    if (pkt->data_len) {
        auth = json_loadb((const char *) pkt->data, pkt->data_len,
                          JSON_REJECT_DUPLICATES, NULL);

        s = json_string_value(json_object_get(auth, "token"));

        if (s) {
            token.data = (u_char *) s;
            token.len = ngx_strlen(s);
        }
    }

    rc = ngx_http_activity_dashboard_authenticate(ctx, &token, &claims);

    json_decref(auth);

    if (rc == NGX_ERROR) {
        ngx_http_activity_dashboard_finalize(ctx);
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        error = json_pack("{s:s,s:{s:i}}", "message", claims.reason,
                          "data", "status", (int) claims.status);

        rc = ngx_http_activity_dashboard_send_json(ctx,
                                         "44" NGX_HTTP_ACTIVITY_SIO_NSP ",",
                                         error, "");
        json_decref(error);

        if (rc == NGX_OK) {
            ngx_http_activity_dashboard_close(ctx,
                                              NGX_HTTP_ACTIVITY_WS_POLICY,
                                              "unauthorized");
        }

        return NGX_ERROR;
    }

    /* ready() answers CONNECT, then queues the snapshot */

    return ngx_http_activity_dashboard_ready(ctx);

connected:

    p = ngx_sprintf(buf, "40" NGX_HTTP_ACTIVITY_SIO_NSP ",{\"sid\":\"%*s\"}",
                    sizeof(ctx->sid), ctx->sid);

    return ngx_http_activity_dashboard_send(ctx, buf, p - buf);
}


static ngx_int_t
ngx_http_activity_dashboard_sio_event(ngx_http_activity_dashboard_t *ctx,
    ngx_http_activity_sio_packet_t *pkt)
{
    u_char      prefix[64], *p;
    json_t     *args, *result;
    ngx_int_t   rc;
    const char  *name;

    args = json_loadb((const char *) pkt->data, pkt->data_len,
                      JSON_REJECT_DUPLICATES, NULL);

    name = json_string_value(json_array_get(args, 0));

    if (name == NULL) {
        json_decref(args);
        ngx_http_activity_dashboard_close(ctx, NGX_HTTP_ACTIVITY_WS_PROTOCOL,
                                          "invalid event");
        return NGX_ERROR;
    }

    if (ngx_strcmp(name, "subscribe") == 0) {
        result = ngx_http_activity_dashboard_rooms(ctx,
                                                   json_array_get(args, 1), 1);

    } else if (ngx_strcmp(name, "unsubscribe") == 0) {
        result = ngx_http_activity_dashboard_rooms(ctx,
                                                   json_array_get(args, 1), 0);

    } else if (ngx_strcmp(name, "auth") == 0) {
        result = ngx_http_activity_dashboard_reauth(ctx,
                                                    json_array_get(args, 1));

    } else {
        result = json_pack("{s:b,s:s}", "ok", 0, "error", "unknown event");
    }

    json_decref(args);

    if (ctx->finalized || ctx->closing) {
        json_decref(result);
        return NGX_ERROR;
    }

    rc = NGX_OK;

    if (pkt->ack >= 0 && result) {
        p = ngx_sprintf(prefix, "43" NGX_HTTP_ACTIVITY_SIO_NSP ",%l[",
                        pkt->ack);
        *p = '\0';

        rc = ngx_http_activity_dashboard_send_json(ctx, (char *) prefix,
                                                   result, "]");
    }

    json_decref(result);

    return rc;
}


/*
 * {"subscribe":[rooms]}, {"unsubscribe":[rooms]}, {"auth":"token"};
 * each answered with {"event":"subscribed"|"unsubscribed"|"auth",…}.
 */

static ngx_int_t
ngx_http_activity_dashboard_plain(ngx_http_activity_dashboard_t *ctx,
    u_char *data, size_t len)
{
    json_t      *root, *arg, *result;
    ngx_int_t    rc;
    const char  *prefix;

    root = json_loadb((const char *) data, len, JSON_REJECT_DUPLICATES, NULL);

    if (!json_is_object(root)) {
        json_decref(root);
        ngx_http_activity_dashboard_close(ctx, NGX_HTTP_ACTIVITY_WS_BAD_DATA,
                                          "expected a JSON object");
        return NGX_ERROR;
    }

    if ((arg = json_object_get(root, "subscribe")) != NULL) {
        prefix = "{\"event\":\"subscribed\",\"data\":";
        result = ngx_http_activity_dashboard_rooms(ctx, arg, 1);

    } else if ((arg = json_object_get(root, "unsubscribe")) != NULL) {
        prefix = "{\"event\":\"unsubscribed\",\"data\":";
        result = ngx_http_activity_dashboard_rooms(ctx, arg, 0);

    } else if ((arg = json_object_get(root, "auth")) != NULL) {
        prefix = "{\"event\":\"auth\",\"data\":";
        result = ngx_http_activity_dashboard_reauth(ctx, arg);

    } else {
        prefix = "{\"event\":\"error\",\"data\":";
        result = json_pack("{s:b,s:s}", "ok", 0, "error",
                           "expected subscribe, unsubscribe or auth");
    }

    json_decref(root);

    if (ctx->finalized || ctx->closing) {
        json_decref(result);
        return NGX_ERROR;
    }

    rc = ngx_http_activity_dashboard_send_json(ctx, prefix, result, "}");
    json_decref(result);

    return rc;
}


/* names: a room name or an array of them */

static json_t *
ngx_http_activity_dashboard_rooms(ngx_http_activity_dashboard_t *ctx,
    json_t *names, ngx_uint_t join)
{
    size_t       i;
    json_t      *list, *item, *result, *unknown;
    ngx_uint_t   bit;
    const char  *s;

    if (json_is_string(names)) {
        list = json_pack("[O]", names);

    } else if (json_is_array(names) && json_array_size(names) <= 16) {
        list = json_incref(names);

    } else {
        return json_pack("{s:b,s:s}", "ok", 0, "error",
                         "expected a room name or an array of them");
    }

    unknown = json_array();

    json_array_foreach(list, i, item) {
        s = json_string_value(item);
        bit = s ? ngx_http_activity_fanout_room((u_char *) s, ngx_strlen(s))
                : 0;

        if (bit == 0) {
            json_array_append(unknown, item);
            continue;
        }

        if (join) {
            ctx->listener.rooms |= bit;

        } else {
            ctx->listener.rooms &= ~bit;
        }
    }

    json_decref(list);

    result = json_pack("{s:b,s:[]}", "ok", json_array_size(unknown) == 0,
                       "rooms");

    /* the rooms joined now, for the client's records */

    for (bit = 1; result && bit; bit <<= 1) {
        s = ngx_http_activity_fanout_room_name(bit);

        if (s == NULL) {
            break;
        }

        if (ctx->listener.rooms & bit) {
            json_array_append_new(json_object_get(result, "rooms"),
                                  json_string(s));
        }
    }

    if (result && json_array_size(unknown)) {
        json_object_set(result, "unknown", unknown);
    }

    json_decref(unknown);

    return result;
}


/* a fresh token extends the session; a bad one leaves it as it was */

static json_t *
ngx_http_activity_dashboard_reauth(ngx_http_activity_dashboard_t *ctx,
    json_t *arg)
{
    ngx_str_t                        token;
    ngx_int_t                        rc;
    const char                      *s;
    ngx_http_activity_jwt_claims_t   claims;

    s = json_string_value(arg);

    if (s == NULL) {
        s = json_string_value(json_object_get(arg, "token"));
    }

    if (s == NULL) {
        return json_pack("{s:b,s:s}", "ok", 0, "error", "no token");
    }

    token.data = (u_char *) s;
    token.len = ngx_strlen(s);

    rc = ngx_http_activity_dashboard_authenticate(ctx, &token, &claims);

    if (rc == NGX_ERROR) {
        return NULL;
    }

    if (rc == NGX_DECLINED) {
        return json_pack("{s:b,s:s}", "ok", 0, "error", claims.reason);
    }

    return json_pack("{s:b,s:I}", "ok", 1, "exp", (json_int_t) claims.exp);
}


/*
 * Verifies a token with the location's key and role; on success the
 * session lasts until the token's "exp".  Refusals are logged, tokens
 * never.
 */

static ngx_int_t
ngx_http_activity_dashboard_authenticate(ngx_http_activity_dashboard_t *ctx,
    ngx_str_t *token, ngx_http_activity_jwt_claims_t *claims)
{
    u_char      *sub;
    ngx_int_t    rc;
    ngx_pool_t  *pool;

    /*
     * a pool of its own: a long-lived connection may re-authenticate
     * many times, and the request pool only grows
     */

    pool = ngx_create_pool(1024, ctx->connection->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_activity_jwt_verify(&ctx->conf->jwt, token,
                                      &ctx->conf->dashboard_role, pool,
                                      claims);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "activity: dashboard refused %V: %s",
                      &ctx->connection->addr_text, claims->reason);

        ngx_http_activity_stat_add(ctx->amcf->stats,
                                   auth_refused[claims->code], 1);
    }

    if (rc != NGX_OK) {
        ngx_destroy_pool(pool);
        return rc;
    }

    if (ctx->expiry.timer_set) {
        ngx_del_timer(&ctx->expiry);
    }

    if (claims->exp) {
        ngx_add_timer(&ctx->expiry,
                      (ngx_msec_t) ngx_max(claims->exp - ngx_time(), 1)
                      * 1000);
    }

    if (claims->sub.len && ctx->user.len == 0) {

        /* the request pool lives as long as the connection */

        sub = ngx_pnalloc(ctx->connection->pool, claims->sub.len);
        if (sub == NULL) {
            ngx_destroy_pool(pool);
            return NGX_ERROR;
        }

        ngx_memcpy(sub, claims->sub.data, claims->sub.len);
        ctx->user.data = sub;
        ctx->user.len = claims->sub.len;
    }

    ngx_str_null(&claims->sub);
    ngx_destroy_pool(pool);

    return NGX_OK;
}


/* authenticated: broadcasts from now on, and the snapshot first */

static ngx_int_t
ngx_http_activity_dashboard_ready(ngx_http_activity_dashboard_t *ctx)
{
    u_char  buf[128], *p;

    ctx->authed = 1;

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "activity: dashboard %V connected (%s), user \"%V\"",
                  &ctx->connection->addr_text,
                  ctx->listener.protocol == NGX_HTTP_ACTIVITY_SOCKETIO
                  ? "socketio" : "websocket", &ctx->user);

    if (ctx->listener.protocol == NGX_HTTP_ACTIVITY_SOCKETIO) {
        p = ngx_sprintf(buf, "40" NGX_HTTP_ACTIVITY_SIO_NSP
                        ",{\"sid\":\"%*s\"}", sizeof(ctx->sid), ctx->sid);

        if (ngx_http_activity_dashboard_send(ctx, buf, p - buf) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    ngx_http_activity_fanout_join(ctx->fanout, &ctx->listener);

    if (ngx_http_activity_fanout_send_snapshot(ctx->fanout, &ctx->listener)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a text frame with this payload */

static ngx_int_t
ngx_http_activity_dashboard_send(ngx_http_activity_dashboard_t *ctx,
    u_char *data, size_t len)
{
    ngx_str_t                   part;
    ngx_http_activity_frame_t  *frame;

    part.data = data;
    part.len = len;

    frame = ngx_http_activity_frame_text(&part, 1, ctx->connection->log);

    return ngx_http_activity_dashboard_send_frame(ctx, frame);
}


/* queues a frame made for this connection alone, and lets go of it */

static ngx_int_t
ngx_http_activity_dashboard_send_frame(ngx_http_activity_dashboard_t *ctx,
    ngx_http_activity_frame_t *frame)
{
    ngx_int_t  rc;

    if (frame == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_activity_fanout_send(ctx->fanout, &ctx->listener, frame);
    ngx_http_activity_frame_release(frame);

    return rc == NGX_OK ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_activity_dashboard_send_json(ngx_http_activity_dashboard_t *ctx,
    const char *prefix, json_t *json, const char *suffix)
{
    char                       *text;
    ngx_str_t                   parts[3];
    ngx_http_activity_frame_t  *frame;

    if (json == NULL) {
        return NGX_ERROR;
    }

    text = json_dumps(json, JSON_COMPACT);
    if (text == NULL) {
        return NGX_ERROR;
    }

    parts[0].data = (u_char *) prefix;
    parts[0].len = ngx_strlen(prefix);
    parts[1].data = (u_char *) text;
    parts[1].len = ngx_strlen(text);
    parts[2].data = (u_char *) suffix;
    parts[2].len = ngx_strlen(suffix);

    frame = ngx_http_activity_frame_text(parts, 3, ctx->connection->log);
    free(text);

    return ngx_http_activity_dashboard_send_frame(ctx, frame);
}


static ngx_int_t
ngx_http_activity_dashboard_send_control(ngx_http_activity_dashboard_t *ctx,
    ngx_uint_t opcode, u_char *data, size_t len)
{
    ngx_http_activity_frame_t  *frame;

    frame = ngx_http_activity_frame_create(opcode, len,
                                           ctx->connection->log);
    if (frame) {
        ngx_memcpy(frame->payload, data, len);
    }

    return ngx_http_activity_dashboard_send_frame(ctx, frame);
}


/*
 * A leaky bucket: each message adds 1000/rate ms of debt, time pays it
 * back; a burst of up to "rate" messages is allowed.
 */

static ngx_int_t
ngx_http_activity_dashboard_rate(ngx_http_activity_dashboard_t *ctx)
{
    ngx_msec_t  elapsed, cost;

    elapsed = ngx_current_msec - ctx->rate_time;
    ctx->rate_time = ngx_current_msec;

    ctx->rate_debt = (ctx->rate_debt > elapsed) ? ctx->rate_debt - elapsed
                                                : 0;

    cost = 1000 / ctx->conf->dashboard_rate;
    ctx->rate_debt += cost;

    if (ctx->rate_debt > 1000 + cost) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "activity: dashboard %V sent more than %ui messages "
                      "a second, closing",
                      &ctx->connection->addr_text,
                      ctx->conf->dashboard_rate);

        ngx_http_activity_dashboard_close(ctx, NGX_HTTP_ACTIVITY_WS_POLICY,
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
ngx_http_activity_dashboard_ping(ngx_event_t *ev)
{
    ngx_http_activity_dashboard_t  *ctx = ev->data;

    ngx_int_t  rc;

    if (ctx->closing || ctx->awaiting_pong) {
        if (!ctx->closing) {
            ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                          "activity: dashboard %V did not answer a ping",
                          &ctx->connection->addr_text);
        }

        ngx_http_activity_dashboard_finalize(ctx);
        return;
    }

    if (ctx->listener.protocol == NGX_HTTP_ACTIVITY_SOCKETIO) {
        rc = ngx_http_activity_dashboard_send(ctx, (u_char *) "2", 1);

    } else {
        rc = ngx_http_activity_dashboard_send_control(ctx,
                                                  NGX_HTTP_ACTIVITY_WS_PING,
                                                  (u_char *) "", 0);
    }

    if (rc != NGX_OK) {
        return;
    }

    ctx->awaiting_pong = 1;

    ngx_add_timer(&ctx->ping, ctx->conf->ping_timeout);
}


static void
ngx_http_activity_dashboard_expired(ngx_event_t *ev)
{
    ngx_http_activity_dashboard_t  *ctx = ev->data;

    static u_char  sio[] = "44" NGX_HTTP_ACTIVITY_SIO_NSP
                           ",{\"message\":\"token expired\"}";
    static u_char  plain[] = "{\"event\":\"error\",\"data\":"
                             "{\"message\":\"token expired\"}}";

    if (!ctx->authed) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "activity: dashboard %V sent no CONNECT in time",
                      &ctx->connection->addr_text);

        ngx_http_activity_dashboard_close(ctx, NGX_HTTP_ACTIVITY_WS_POLICY,
                                          "no CONNECT");
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "activity: dashboard %V token expired, user \"%V\"",
                  &ctx->connection->addr_text, &ctx->user);

    if (ctx->listener.protocol == NGX_HTTP_ACTIVITY_SOCKETIO) {
        (void) ngx_http_activity_dashboard_send(ctx, sio, sizeof(sio) - 1);

    } else {
        (void) ngx_http_activity_dashboard_send(ctx, plain, sizeof(plain) - 1);
    }

    ngx_http_activity_dashboard_close(ctx, NGX_HTTP_ACTIVITY_WS_POLICY,
                                      "token expired");
}


static void
ngx_http_activity_dashboard_fail(ngx_http_activity_listener_t *l,
    ngx_uint_t code)
{
    ngx_http_activity_dashboard_t  *ctx;

    ctx = (ngx_http_activity_dashboard_t *) l;

    if (code == NGX_HTTP_ACTIVITY_WS_POLICY) {
        ngx_http_activity_stat_add(ctx->amcf->stats, clients_slow, 1);

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "activity: dashboard %V does not read, %ui frames "
                      "queued, closing", &l->connection->addr_text,
                      l->out.count);
    }

    if (!ctx->close_event.posted) {
        ngx_post_event(&ctx->close_event, &ngx_posted_events);
    }
}


static void
ngx_http_activity_dashboard_going_away(ngx_http_activity_listener_t *l,
    ngx_uint_t code)
{
    ngx_http_activity_dashboard_t  *ctx;

    ctx = (ngx_http_activity_dashboard_t *) l;

    ngx_http_activity_dashboard_close(ctx, code, "server shutting down");
}


static void
ngx_http_activity_dashboard_close_handler(ngx_event_t *ev)
{
    ngx_http_activity_dashboard_t  *ctx = ev->data;

    /* its queue is full or its socket broken: no close frame can go */

    ngx_http_activity_dashboard_finalize(ctx);
}


/*
 * The closing handshake: a close frame behind whatever is queued, then the
 * connection ends when it is written, or after a short linger.
 */

static void
ngx_http_activity_dashboard_close(ngx_http_activity_dashboard_t *ctx,
    ngx_uint_t code, const char *reason)
{
    u_char                      buf[2];
    size_t                      len;
    ngx_int_t                   rc;
    ngx_http_activity_frame_t  *frame;

    if (ctx->closing || ctx->finalized) {
        return;
    }

    ctx->closing = 1;

    ngx_http_activity_fanout_leave(ctx->fanout, &ctx->listener);

    len = reason ? ngx_min(ngx_strlen(reason), 123) : 0;

    frame = ngx_http_activity_frame_create(NGX_HTTP_ACTIVITY_WS_CLOSE,
                                           2 + len,
                                           ctx->connection->log);
    if (frame == NULL) {
        ngx_http_activity_dashboard_finalize(ctx);
        return;
    }

    buf[0] = (u_char) (code >> 8);
    buf[1] = (u_char) code;

    ngx_memcpy(frame->payload, buf, 2);
    if (len) {
        ngx_memcpy(frame->payload + 2, reason, len);
    }

    rc = ngx_http_activity_outq_push(&ctx->listener.out, frame);
    ngx_http_activity_frame_release(frame);

    if (rc == NGX_OK) {
        rc = ngx_http_activity_outq_flush(&ctx->listener.out,
                                          ctx->connection);
    }

    if (rc == NGX_OK) {
        ngx_http_activity_dashboard_linger(ctx);
        return;
    }

    if (rc != NGX_AGAIN) {
        ngx_http_activity_dashboard_finalize(ctx);
        return;
    }

    /* the close frame waits for the write event, a linger at most */

    if (ctx->ping.timer_set) {
        ngx_del_timer(&ctx->ping);
    }

    ngx_add_timer(&ctx->ping, NGX_HTTP_ACTIVITY_LINGER);
}


/*
 * The close frame is out: stop writing, and read and drop what the client
 * still sends until it closes, or the linger ends.  Closing with unread
 * input would make the kernel send a reset, which can destroy the close
 * frame (and the last replies) before the client reads them.
 */

static void
ngx_http_activity_dashboard_linger(ngx_http_activity_dashboard_t *ctx)
{
    ngx_connection_t  *c;

    c = ctx->connection;

    if (ctx->lingering || ctx->request) {
        if (ctx->request) {
            ngx_http_activity_dashboard_finalize(ctx);
        }

        return;
    }

    ctx->lingering = 1;

    if (ngx_shutdown_socket(c->fd, NGX_WRITE_SHUTDOWN) == -1) {
        ngx_http_activity_dashboard_finalize(ctx);
        return;
    }

    if (ctx->ping.timer_set) {
        ngx_del_timer(&ctx->ping);
    }

    ngx_add_timer(&ctx->ping, NGX_HTTP_ACTIVITY_LINGER);

    ngx_http_activity_dashboard_read(c->read);
}


static void
ngx_http_activity_dashboard_finalize(ngx_http_activity_dashboard_t *ctx)
{
    ngx_connection_t  *c;

    if (ctx->finalized) {
        return;
    }

    ctx->finalized = 1;

    ngx_http_activity_fanout_leave(ctx->fanout, &ctx->listener);

    if (ctx->ping.timer_set) {
        ngx_del_timer(&ctx->ping);
    }

    if (ctx->expiry.timer_set) {
        ngx_del_timer(&ctx->expiry);
    }

    c = ctx->connection;

    if (ctx->request) {

        /*
         * still in the handshake's loop iteration: the close is a posted
         * request, which no connection handler runs after a timer or a
         * posted event
         */

        if (ctx->detach.posted) {
            ngx_delete_posted_event(&ctx->detach);
        }

        ngx_http_finalize_request(ctx->request, NGX_HTTP_CLOSE);
        ngx_http_run_posted_requests(c);
        return;
    }

    /* the cleanup of c->pool undoes the rest */

    ngx_http_close_connection(c);
}
