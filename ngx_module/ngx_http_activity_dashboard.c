
/*
 * The dashboard endpoint: the handshake is checked here (method, protocol
 * version, upgrade headers, a token if one came with it, the connection
 * limit) and answered with 101; the session and its connection take over
 * from there (ngx_http_activity_session.c, ngx_http_activity_conn.c).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_module.h"
#include "ngx_http_activity_dashboard.h"
#include "ngx_http_activity_admit.h"
#include "ngx_http_activity_conn.h"
#include "ngx_http_activity_fanout.h"
#include "ngx_http_activity_jwt.h"
#include "ngx_http_activity_session.h"
#include "ngx_http_activity_sio_session.h"
#include "ngx_http_activity_status.h"
#include "ngx_http_activity_ws.h"
#include "ngx_http_activity_ws_session.h"


static ngx_int_t ngx_http_activity_dashboard_refuse(ngx_http_request_t *r,
    ngx_uint_t status, const char *body);
static ngx_int_t ngx_http_activity_dashboard_check_upgrade(
    ngx_http_request_t *r, ngx_str_t *key);
static ngx_table_elt_t *ngx_http_activity_dashboard_header(
    ngx_http_request_t *r, const char *name);
static ngx_int_t ngx_http_activity_dashboard_find_token(ngx_http_request_t *r,
    ngx_str_t *token);
static void ngx_http_activity_dashboard_deflate(ngx_http_request_t *r,
    ngx_http_activity_listener_t *l);
static void ngx_http_activity_dashboard_undo(
    ngx_http_activity_main_conf_t *amcf, ngx_str_t *addr, ngx_uint_t counted,
    ngx_uint_t pending, ngx_uint_t addressed);


ngx_int_t
ngx_http_activity_dashboard_handler(ngx_http_request_t *r)
{
    ngx_int_t                        rc;
    ngx_str_t                        key, value, token;
    u_char                           addr[NGX_HTTP_ACTIVITY_ADMIT_ADDR_LEN];
    ngx_str_t                        akey;
    ngx_uint_t                       authed, addressed;
    ngx_atomic_t                    *count;
    ngx_connection_t                *c;
    ngx_http_activity_session_t     *s;
    ngx_http_activity_loc_conf_t    *alcf;
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

    /*
     * The places: sockets of one address (activity_dashboard_max_per_ip),
     * then authenticated dashboards (activity_dashboard_max_connections)
     * or, apart, those still to send their token
     * (activity_dashboard_max_pending), which cannot crowd out the
     * others.
     */

    authed = (token.len || alcf->dashboard == NGX_HTTP_ACTIVITY_WEBSOCKET);
    addressed = 0;
    ngx_str_null(&akey);

    if (amcf->max_per_ip
        && ngx_http_activity_admit_key(c, addr, &akey) == NGX_OK)
    {
        rc = ngx_http_activity_admit_address(amcf->admit_zone, &akey,
                                             amcf->max_per_ip, c->log);

        if (rc == NGX_DECLINED) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "activity: dashboard refused %V: %ui connections "
                          "from this address already", &c->addr_text,
                          amcf->max_per_ip);

            return ngx_http_activity_dashboard_refuse(r,
                                        NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "{\"message\":\"too many dashboard "
                                        "connections from this address\"}");
        }

        addressed = 1;
    }

    count = &amcf->stats->dashboard_connections;

    if (authed) {

        if (ngx_atomic_fetch_add(count, 1) >= amcf->max_connections) {
            (void) ngx_atomic_fetch_add(count, -1);

            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "activity: dashboard refused %V: %ui connections "
                          "already", &c->addr_text, amcf->max_connections);

            ngx_http_activity_dashboard_undo(amcf, &akey, 0, 0, addressed);

            return ngx_http_activity_dashboard_refuse(r,
                                        NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "{\"message\":\"too many dashboard "
                                        "connections\"}");
        }

        ngx_http_activity_stat_mine(connections, 1);

    } else if (ngx_http_activity_admit_pending(amcf->admit_zone,
                                               amcf->max_pending)
               != NGX_OK)
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "activity: dashboard refused %V: %ui connections "
                      "waiting to authenticate already", &c->addr_text,
                      amcf->max_pending);

        ngx_http_activity_dashboard_undo(amcf, &akey, 0, 0, addressed);

        return ngx_http_activity_dashboard_refuse(r,
                                        NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "{\"message\":\"too many dashboard "
                                        "connections waiting to "
                                        "authenticate\"}");
    }

    if (alcf->dashboard == NGX_HTTP_ACTIVITY_SOCKETIO) {
        s = ngx_http_activity_sio_session_create(r, &token);

    } else {
        s = ngx_http_activity_ws_session_create(r, &token);
    }

    if (s == NULL) {
        ngx_http_activity_dashboard_undo(amcf, &akey, authed, !authed,
                                         addressed);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* from here on the session's close gives the places back */

    s->counted = authed;
    s->pending = !authed;
    s->addressed = addressed;

    if (addressed) {
        s->addr.data = ngx_cpymem(s->addr_buf, akey.data, akey.len)
                       - akey.len;
        s->addr.len = akey.len;
    }
    s->open = 1;
    ngx_http_activity_stat_own(amcf->stats, dashboards[alcf->dashboard], 1);

    if (alcf->dashboard_deflate) {
        ngx_http_activity_dashboard_deflate(r, &s->conn.listener);
    }

    /* from here on the connection speaks WebSocket */

    if (ngx_http_activity_conn_accept(&s->conn, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (alcf->dashboard == NGX_HTTP_ACTIVITY_SOCKETIO) {
        rc = ngx_http_activity_sio_session_start(s);

    } else {
        rc = ngx_http_activity_ws_session_start(s, &claims);
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_activity_conn_hold(&s->conn);
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


/*
 * permessage-deflate (RFC 7692): the first offer the server can honour,
 * over every Sec-WebSocket-Extensions header in order (one list, as if
 * joined by commas).  A value that is not an extension list ends the
 * search: the connection then stays uncompressed.
 */

static void
ngx_http_activity_dashboard_deflate(ngx_http_request_t *r,
    ngx_http_activity_listener_t *l)
{
    int                              rc;
    ngx_uint_t                       i;
    ngx_list_part_t                 *part;
    ngx_table_elt_t                 *h;
    ngx_http_activity_ws_deflate_t   d;

    static ngx_str_t  name = ngx_string("Sec-WebSocket-Extensions");

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != name.len
            || ngx_strncasecmp(h[i].key.data, name.data, name.len) != 0)
        {
            continue;
        }

        rc = ngx_http_activity_ws_deflate_offer(h[i].value.data,
                                                h[i].value.len, &d);

        if (rc < 0) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "activity: dashboard sent a malformed "
                          "Sec-WebSocket-Extensions header, no compression");
            return;
        }

        if (rc == 1) {
            break;
        }
    }

    /*
     * The shared compressed frames are made with the largest window; to a
     * client that asked for a smaller one, a message longer than that
     * window goes plain (a match can reach no further back than the
     * message's own start).
     */

    l->deflate_bits = d.server_max_window_bits;
    l->deflate_max = (d.server_max_window_bits
                      && d.server_max_window_bits < 15)
                     ? (size_t) 1 << d.server_max_window_bits
                     : NGX_MAX_SIZE_T_VALUE;
}


/* gives back the places taken for a handshake that fails after all */

static void
ngx_http_activity_dashboard_undo(ngx_http_activity_main_conf_t *amcf,
    ngx_str_t *addr, ngx_uint_t counted, ngx_uint_t pending,
    ngx_uint_t addressed)
{
    if (counted) {
        (void) ngx_atomic_fetch_add(&amcf->stats->dashboard_connections, -1);
        ngx_http_activity_stat_mine(connections, -1);
    }

    if (pending) {
        ngx_http_activity_admit_pending_done(amcf->admit_zone);
    }

    if (addressed) {
        ngx_http_activity_admit_address_done(amcf->admit_zone, addr);
    }
}
