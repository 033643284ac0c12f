
/*
 * The "socketio" dashboard protocol.
 *
 * Right after the 101 the server sends the Engine.IO open packet; the
 * client then sends a Socket.IO CONNECT for /dashboard, with its token
 * unless one came with the handshake.  Heartbeats are Engine.IO pings
 * ("2") from the server, answered "3".
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_activity_sio_session.h"
#include "ngx_http_activity_sio.h"
#include "ngx_http_activity_ws.h"


static ngx_int_t ngx_http_activity_sio_session_message(
    ngx_http_activity_conn_t *ac, u_char *data, size_t len);
static ngx_int_t ngx_http_activity_sio_session_connect(
    ngx_http_activity_session_t *s, ngx_http_activity_sio_packet_t *pkt);
static ngx_int_t ngx_http_activity_sio_session_event(
    ngx_http_activity_session_t *s, ngx_http_activity_sio_packet_t *pkt);
static ngx_int_t ngx_http_activity_sio_session_ping(
    ngx_http_activity_conn_t *ac);
static ngx_int_t ngx_http_activity_sio_session_resumed(
    ngx_http_activity_session_t *s, ngx_uint_t recovered);
static u_char *ngx_http_activity_sio_session_hello(
    ngx_http_activity_session_t *s, u_char *buf);


static ngx_http_activity_conn_handlers_t  ngx_http_activity_sio_handlers = {
    ngx_http_activity_sio_session_message,
    ngx_http_activity_sio_session_ping,
    ngx_http_activity_session_closed
};


ngx_http_activity_session_t *
ngx_http_activity_sio_session_create(ngx_http_request_t *r, ngx_str_t *token)
{
    ngx_http_activity_session_t  *s;

    static u_char  expired[] = "44" NGX_HTTP_ACTIVITY_SIO_NSP
                               ",{\"message\":\"token expired\"}";

    s = ngx_http_activity_session_create(r, token,
                                         &ngx_http_activity_sio_handlers);
    if (s == NULL) {
        return NULL;
    }

    s->expired.data = expired;
    s->expired.len = sizeof(expired) - 1;
    s->resumed = ngx_http_activity_sio_session_resumed;

    /*
     * connection state recovery: the CONNECT reply carries a pid (none
     * if the kernel gave no random bytes: this one is not recoverable)
     */

    if (s->conn.conf->recovery) {
        (void) ngx_http_activity_session_new_pid(s);
    }

    return s;
}


/*
 * The Engine.IO open packet; a client that never sends CONNECT goes.
 * maxPayload is what the connection accepts in one message.
 */

ngx_int_t
ngx_http_activity_sio_session_start(ngx_http_activity_session_t *s)
{
    u_char  open[160], *p;

    for (p = s->sid; p < s->sid + sizeof(s->sid); p++) {
        *p = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
             "0123456789-_"[ngx_random() & 63];
    }

    p = ngx_sprintf(open, "0{\"sid\":\"%*s\",\"upgrades\":[],"
                    "\"pingInterval\":%M,\"pingTimeout\":%M,"
                    "\"maxPayload\":%d}",
                    sizeof(s->sid), s->sid,
                    s->conn.conf->ping_interval, s->conn.conf->ping_timeout,
                    NGX_HTTP_ACTIVITY_MESSAGE_MAX);

    ngx_add_timer(&s->expiry, s->conn.conf->auth_timeout);

    return ngx_http_activity_conn_send(&s->conn, open, p - open);
}


static ngx_int_t
ngx_http_activity_sio_session_ping(ngx_http_activity_conn_t *ac)
{
    ngx_http_activity_session_keep(ac->data);

    return ngx_http_activity_conn_send(ac, (u_char *) "2", 1);
}


/* 40/dashboard,{"sid":"…"[,"pid":"…"]} */

static u_char *
ngx_http_activity_sio_session_hello(ngx_http_activity_session_t *s,
    u_char *buf)
{
    u_char  *p;

    p = ngx_sprintf(buf, "40" NGX_HTTP_ACTIVITY_SIO_NSP ",{\"sid\":\"%*s\"",
                    sizeof(s->sid), s->sid);

    if (s->has_pid) {
        p = ngx_sprintf(p, ",\"pid\":\"%*s\"", sizeof(s->pid), s->pid);
    }

    *p++ = '}';

    return p;
}


/*
 * The CONNECT reply of a resume: the same pid is what tells the client
 * (socket.recovered === true) that the missed events follow; a new one
 * that a snapshot does.
 */

static ngx_int_t
ngx_http_activity_sio_session_resumed(ngx_http_activity_session_t *s,
    ngx_uint_t recovered)
{
    u_char  buf[128], *p;

    p = ngx_http_activity_sio_session_hello(s, buf);

    return ngx_http_activity_conn_send(&s->conn, buf, p - buf);
}


static ngx_int_t
ngx_http_activity_sio_session_message(ngx_http_activity_conn_t *ac,
    u_char *data, size_t len)
{
    ngx_http_activity_session_t  *s = ac->data;

    ngx_http_activity_sio_packet_t  pkt;

    if (len == 0) {
        goto invalid;
    }

    switch (data[0]) {

    case NGX_HTTP_ACTIVITY_EIO_PONG:
        ngx_http_activity_conn_pong(ac);
        return NGX_OK;

    case NGX_HTTP_ACTIVITY_EIO_CLOSE:
        ngx_http_activity_conn_close(&s->conn, NGX_HTTP_ACTIVITY_WS_NORMAL,
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
                          "\"%*s\"", &s->conn.connection->addr_text,
                          pkt.nsp_len, pkt.nsp);

            return ngx_http_activity_conn_send(&s->conn,
                          (u_char *) "44{\"message\":\"Invalid namespace\"}",
                          sizeof("44{\"message\":\"Invalid namespace\"}")
                          - 1);
        }

        return NGX_OK;
    }

    switch (pkt.type) {

    case NGX_HTTP_ACTIVITY_SIO_CONNECT:
        return ngx_http_activity_sio_session_connect(s, &pkt);

    case NGX_HTTP_ACTIVITY_SIO_DISCONNECT:
        ngx_http_activity_conn_close(&s->conn, NGX_HTTP_ACTIVITY_WS_NORMAL,
                                     NULL);
        return NGX_ERROR;

    case NGX_HTTP_ACTIVITY_SIO_EVENT:
        if (!s->authed) {
            goto invalid;
        }

        return ngx_http_activity_sio_session_event(s, &pkt);

    case NGX_HTTP_ACTIVITY_SIO_ACK:
        return NGX_OK;

    default:
        goto invalid;
    }

invalid:

    ngx_http_activity_conn_close(&s->conn, NGX_HTTP_ACTIVITY_WS_PROTOCOL,
                                 "invalid packet");
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_activity_sio_session_connect(ngx_http_activity_session_t *s,
    ngx_http_activity_sio_packet_t *pkt)
{
    u_char                          *p, buf[128];
    json_t                          *auth, *error;
    ngx_str_t                        token, hello, pid, offset;
    ngx_int_t                        rc;

    static u_char  full[] = "44" NGX_HTTP_ACTIVITY_SIO_NSP
                            ",{\"message\":\"too many dashboard connections\","
                            "\"data\":{\"status\":503}}";

    const char                      *v;
    ngx_http_activity_jwt_claims_t   claims;

    if (s->resume) {
        /* its answer waits for the resume already under way */
        return NGX_OK;
    }

    if (s->authed) {
        goto connected;
    }

    token = s->token;
    auth = NULL;
    ngx_str_null(&pid);
    ngx_str_null(&offset);

    if (pkt->data_len) {
        auth = json_loadb((const char *) pkt->data, pkt->data_len,
                          JSON_REJECT_DUPLICATES, NULL);

        v = json_string_value(json_object_get(auth, "token"));

        if (v) {
            token.data = (u_char *) v;
            token.len = ngx_strlen(v);
        }

        /* a reconnecting socket.io-client (>= 4.6) adds pid and offset */

        v = json_string_value(json_object_get(auth, "pid"));

        if (v) {
            pid.data = (u_char *) v;
            pid.len = ngx_strlen(v);
        }

        v = json_string_value(json_object_get(auth, "offset"));

        if (v) {
            offset.data = (u_char *) v;
            offset.len = ngx_strlen(v);
        }
    }

    rc = ngx_http_activity_session_authenticate(s, &token, &claims);

    if (rc == NGX_OK && s->has_pid && pid.data) {

        /* the answer waits for what the client missed */

        rc = ngx_http_activity_session_resume(s, &pid, &offset);
        json_decref(auth);

        if (rc == NGX_DECLINED) {
            goto full;
        }

        return rc;
    }

    json_decref(auth);

    if (rc == NGX_ERROR) {
        ngx_http_activity_conn_finalize(&s->conn);
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        error = json_pack("{s:s,s:{s:i}}", "message", claims.reason,
                          "data", "status", (int) claims.status);

        rc = ngx_http_activity_session_send_json(s,
                                         "44" NGX_HTTP_ACTIVITY_SIO_NSP ",",
                                                 error, "");
        json_decref(error);

        if (rc == NGX_OK) {
            ngx_http_activity_conn_close(&s->conn,
                                         NGX_HTTP_ACTIVITY_WS_POLICY,
                                         "unauthorized");
        }

        return NGX_ERROR;
    }

connected:

    p = ngx_http_activity_sio_session_hello(s, buf);

    if (s->authed) {
        return ngx_http_activity_conn_send(&s->conn, buf, p - buf);
    }

    /* ready() answers CONNECT, then queues the snapshot */

    hello.data = buf;
    hello.len = p - buf;

    rc = ngx_http_activity_session_ready(s, &hello);

    if (rc != NGX_DECLINED) {
        return rc;
    }

full:

    /* every dashboard place is taken */

    if (ngx_http_activity_conn_send(&s->conn, full, sizeof(full) - 1)
        == NGX_OK)
    {
        ngx_http_activity_conn_close(&s->conn, NGX_HTTP_ACTIVITY_WS_TRY_AGAIN,
                                     "too many dashboard connections");
    }

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_activity_sio_session_event(ngx_http_activity_session_t *s,
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
        ngx_http_activity_conn_close(&s->conn, NGX_HTTP_ACTIVITY_WS_PROTOCOL,
                                     "invalid event");
        return NGX_ERROR;
    }

    if (ngx_strcmp(name, "subscribe") == 0) {
        result = ngx_http_activity_session_rooms(s,
                                                 json_array_get(args, 1), 1);

    } else if (ngx_strcmp(name, "unsubscribe") == 0) {
        result = ngx_http_activity_session_rooms(s,
                                                 json_array_get(args, 1), 0);

    } else if (ngx_strcmp(name, "auth") == 0) {
        result = ngx_http_activity_session_reauth(s,
                                                  json_array_get(args, 1));

    } else {
        result = json_pack("{s:b,s:s}", "ok", 0, "error", "unknown event");
    }

    json_decref(args);

    if (s->conn.finalized || s->conn.closing) {
        json_decref(result);
        return NGX_ERROR;
    }

    rc = NGX_OK;

    if (pkt->ack >= 0 && result) {
        p = ngx_sprintf(prefix, "43" NGX_HTTP_ACTIVITY_SIO_NSP ",%l[",
                        pkt->ack);
        *p = '\0';

        rc = ngx_http_activity_session_send_json(s, (char *) prefix,
                                                 result, "]");
    }

    json_decref(result);

    return rc;
}
