
/*
 * Who a dashboard is.
 *
 * A session is made at the handshake, in the connection's pool; it is
 * authenticated either then (a token with the handshake) or by the
 * protocol's first message, and lasts until its token's "exp".  A fresh
 * token extends it; rooms choose which broadcasts it gets.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_activity_session_internal.h"
#include "ngx_http_activity_admit.h"
#include "ngx_http_activity_event.h"
#include "ngx_http_activity_status.h"
#include "ngx_http_activity_ws.h"


static void ngx_http_activity_session_expired(ngx_event_t *ev);


ngx_http_activity_session_t *
ngx_http_activity_session_create(ngx_http_request_t *r, ngx_str_t *token,
    ngx_http_activity_conn_handlers_t *handlers)
{
    ngx_connection_t             *c;
    ngx_http_activity_session_t  *s;

    c = r->connection;

    /* what outlives the request lives in the connection's pool */

    s = ngx_pcalloc(c->pool, sizeof(ngx_http_activity_session_t));
    if (s == NULL) {
        return NULL;
    }

    if (ngx_http_activity_conn_init(&s->conn, r, handlers, s) != NGX_OK) {
        return NULL;
    }

    s->started = ngx_time();

    s->expiry.handler = ngx_http_activity_session_expired;
    s->expiry.data = s;
    s->expiry.log = c->log;

    if (token->len) {
        s->token.data = ngx_pnalloc(c->pool, token->len);
        if (s->token.data == NULL) {
            return NULL;
        }

        ngx_memcpy(s->token.data, token->data, token->len);
        s->token.len = token->len;
    }

    return s;
}


/* on_close of both protocols: the connection is being freed */

void
ngx_http_activity_session_closed(ngx_http_activity_conn_t *ac)
{
    ngx_http_activity_session_t  *s = ac->data;

    ngx_http_activity_stats_t  *stats;

    if (s->expiry.timer_set) {
        ngx_del_timer(&s->expiry);
    }

    if (s->resume) {

        /* the client's pid was never confirmed: nothing is saved for it */

        ngx_http_activity_resume_cancel(s->resume);
        s->resume = NULL;

    } else if (s->has_pid && s->authed) {

        /* the recovery window starts now: the record lives that long */

        ngx_http_activity_session_save(s, ac->conf->recovery);
    }

    stats = ac->amcf->stats;

    if (s->counted) {
        (void) ngx_atomic_fetch_add(&stats->dashboard_connections, -1);
        ngx_http_activity_stat_mine(connections, -1);
        s->counted = 0;
    }

    if (s->open) {
        ngx_http_activity_stat_own(stats, dashboards[ac->conf->dashboard],
                                   -1);
        s->open = 0;
    }

    if (s->pending) {
        ngx_http_activity_admit_pending_done(ac->amcf->admit_zone);
        s->pending = 0;
    }

    if (s->addressed) {
        ngx_http_activity_admit_address_done(ac->amcf->admit_zone,
                                             &s->addr);
        s->addressed = 0;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "activity: dashboard %V disconnected, user \"%V\", "
                  "%T s", &ac->connection->addr_text, &s->user,
                  ngx_time() - s->started);
}


ngx_int_t
ngx_http_activity_session_set_user(ngx_http_activity_session_t *s,
    ngx_str_t *sub)
{
    u_char  *p;

    if (sub->len == 0 || s->user.len) {
        return NGX_OK;
    }

    /* the connection's pool lives as long as the session */

    p = ngx_pnalloc(s->conn.connection->pool, sub->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, sub->data, sub->len);
    s->user.data = p;
    s->user.len = sub->len;

    return NGX_OK;
}


/* exp: the token's expiry (seconds since the epoch), 0: none */

void
ngx_http_activity_session_expire_at(ngx_http_activity_session_t *s,
    time_t exp)
{
    if (s->expiry.timer_set) {
        ngx_del_timer(&s->expiry);
    }

    if (exp) {
        ngx_add_timer(&s->expiry,
                      (ngx_msec_t) ngx_max(exp - ngx_time(), 1) * 1000);
    }
}


/*
 * Verifies a token with the location's key and role; on success the
 * session lasts until the token's "exp".  Refusals are logged, tokens
 * never.
 */

ngx_int_t
ngx_http_activity_session_authenticate(ngx_http_activity_session_t *s,
    ngx_str_t *token, ngx_http_activity_jwt_claims_t *claims)
{
    ngx_int_t    rc;
    ngx_pool_t  *pool;

    /*
     * a pool of its own: a long-lived connection may re-authenticate
     * many times, and the request pool only grows
     */

    pool = ngx_create_pool(1024, s->conn.connection->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_activity_jwt_verify(&s->conn.conf->jwt, token,
                                      &s->conn.conf->dashboard_role, pool,
                                      claims);

    if (rc == NGX_DECLINED) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "activity: dashboard refused %V: %s",
                      &s->conn.connection->addr_text, claims->reason);

        ngx_http_activity_stat_add(s->conn.amcf->stats,
                                   auth_refused[claims->code], 1);
    }

    if (rc != NGX_OK) {
        ngx_destroy_pool(pool);
        return rc;
    }

    ngx_http_activity_session_expire_at(s, claims->exp);

    if (ngx_http_activity_session_set_user(s, &claims->sub) != NGX_OK) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    ngx_str_null(&claims->sub);
    ngx_destroy_pool(pool);

    return NGX_OK;
}


/* authenticated: broadcasts from now on, and the snapshot first */

ngx_int_t
ngx_http_activity_session_ready(ngx_http_activity_session_t *s,
    ngx_str_t *hello)
{
    ngx_int_t  rc;

    rc = ngx_http_activity_session_admit(s);

    if (rc != NGX_OK) {
        return rc;
    }

    /* the protocol's answer to its CONNECT goes first */

    if (hello
        && ngx_http_activity_conn_send(&s->conn, hello->data, hello->len)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_activity_fanout_join(s->conn.fanout, &s->conn.listener);

    if (ngx_http_activity_fanout_send_snapshot(s->conn.fanout,
                                               &s->conn.listener)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (s->has_pid) {
        ngx_http_activity_session_save(s, s->conn.conf->recovery);
    }

    return NGX_OK;
}


/* takes a dashboard's place; NGX_DECLINED: every place is taken */

ngx_int_t
ngx_http_activity_session_admit(ngx_http_activity_session_t *s)
{
    ngx_atomic_t                   *count;
    ngx_http_activity_main_conf_t  *amcf;

    amcf = s->conn.amcf;

    /* no longer waiting to authenticate: now it takes a dashboard's place */

    if (s->pending) {
        ngx_http_activity_admit_pending_done(amcf->admit_zone);
        s->pending = 0;
    }

    if (!s->counted) {
        count = &amcf->stats->dashboard_connections;

        if (ngx_atomic_fetch_add(count, 1) >= amcf->max_connections) {
            (void) ngx_atomic_fetch_add(count, -1);

            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "activity: dashboard refused %V: %ui connections "
                          "already", &s->conn.connection->addr_text,
                          amcf->max_connections);

            return NGX_DECLINED;
        }

        ngx_http_activity_stat_mine(connections, 1);
        s->counted = 1;
    }

    s->authed = 1;

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "activity: dashboard %V connected (%s), user \"%V\"",
                  &s->conn.connection->addr_text,
                  s->conn.listener.protocol == NGX_HTTP_ACTIVITY_SOCKETIO
                  ? "socketio" : "websocket", &s->user);

    return NGX_OK;
}


/* names: a room name or an array of them */

json_t *
ngx_http_activity_session_rooms(ngx_http_activity_session_t *s,
    json_t *names, ngx_uint_t join)
{
    size_t       i;
    json_t      *list, *item, *result, *unknown;
    ngx_uint_t   bit;
    const char  *v;

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
        v = json_string_value(item);
        bit = v ? ngx_http_activity_fanout_room((u_char *) v, ngx_strlen(v))
                : 0;

        if (bit == 0) {
            json_array_append(unknown, item);
            continue;
        }

        if (join) {
            s->conn.listener.rooms |= bit;

        } else {
            s->conn.listener.rooms &= ~bit;
        }
    }

    json_decref(list);

    if (s->has_pid && s->authed && s->resume == NULL) {
        ngx_http_activity_session_save(s, s->conn.conf->recovery);
    }

    result = json_pack("{s:b,s:[]}", "ok", json_array_size(unknown) == 0,
                       "rooms");

    /* the rooms joined now, for the client's records */

    for (bit = 1; result && bit; bit <<= 1) {
        v = ngx_http_activity_fanout_room_name(bit);

        if (v == NULL) {
            break;
        }

        if (s->conn.listener.rooms & bit) {
            json_array_append_new(json_object_get(result, "rooms"),
                                  json_string(v));
        }
    }

    if (result && json_array_size(unknown)) {
        json_object_set(result, "unknown", unknown);
    }

    json_decref(unknown);

    return result;
}


/* a fresh token extends the session; a bad one leaves it as it was */

json_t *
ngx_http_activity_session_reauth(ngx_http_activity_session_t *s,
    json_t *arg)
{
    ngx_str_t                        token;
    ngx_int_t                        rc;
    const char                      *v;
    ngx_http_activity_jwt_claims_t   claims;

    v = json_string_value(arg);

    if (v == NULL) {
        v = json_string_value(json_object_get(arg, "token"));
    }

    if (v == NULL) {
        return json_pack("{s:b,s:s}", "ok", 0, "error", "no token");
    }

    token.data = (u_char *) v;
    token.len = ngx_strlen(v);

    rc = ngx_http_activity_session_authenticate(s, &token, &claims);

    if (rc == NGX_ERROR) {
        return NULL;
    }

    if (rc == NGX_DECLINED) {
        return json_pack("{s:b,s:s}", "ok", 0, "error", claims.reason);
    }

    return json_pack("{s:b,s:I}", "ok", 1, "exp", (json_int_t) claims.exp);
}


ngx_int_t
ngx_http_activity_session_send_json(ngx_http_activity_session_t *s,
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

    frame = ngx_http_activity_frame_text(parts, 3, s->conn.connection->log);
    free(text);

    return ngx_http_activity_conn_send_frame(&s->conn, frame);
}


static void
ngx_http_activity_session_expired(ngx_event_t *ev)
{
    ngx_http_activity_session_t  *s = ev->data;

    if (!s->authed) {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "activity: dashboard %V sent no CONNECT in time",
                      &s->conn.connection->addr_text);

        ngx_http_activity_conn_close(&s->conn, NGX_HTTP_ACTIVITY_WS_POLICY,
                                     "no CONNECT");
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "activity: dashboard %V token expired, user \"%V\"",
                  &s->conn.connection->addr_text, &s->user);

    /* the protocol's own words for it, set at accept */

    if (s->expired.len) {
        (void) ngx_http_activity_conn_send(&s->conn, s->expired.data,
                                           s->expired.len);
    }

    ngx_http_activity_conn_close(&s->conn, NGX_HTTP_ACTIVITY_WS_POLICY,
                                 "token expired");
}
