
/*
 * The plain "websocket" dashboard protocol.
 *
 * The token comes with the handshake, so the session is ready at once.
 * Messages are JSON objects; heartbeats are WebSocket pings.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_activity_ws_session.h"
#include "ngx_http_activity_ws.h"


static ngx_int_t ngx_http_activity_ws_session_message(
    ngx_http_activity_conn_t *ac, u_char *data, size_t len);
static ngx_int_t ngx_http_activity_ws_session_ping(
    ngx_http_activity_conn_t *ac);
static ngx_int_t ngx_http_activity_ws_session_resumed(
    ngx_http_activity_session_t *s, ngx_uint_t recovered);


static ngx_http_activity_conn_handlers_t  ngx_http_activity_ws_handlers = {
    ngx_http_activity_ws_session_message,
    ngx_http_activity_ws_session_ping,
    ngx_http_activity_session_closed
};


ngx_http_activity_session_t *
ngx_http_activity_ws_session_create(ngx_http_request_t *r, ngx_str_t *token)
{
    ngx_http_activity_session_t  *s;

    static u_char  expired[] = "{\"event\":\"error\",\"data\":"
                               "{\"message\":\"token expired\"}}";

    s = ngx_http_activity_session_create(r, token,
                                         &ngx_http_activity_ws_handlers);
    if (s == NULL) {
        return NULL;
    }

    s->expired.data = expired;
    s->expired.len = sizeof(expired) - 1;
    s->resumed = ngx_http_activity_ws_session_resumed;

    return s;
}


/* the handshake's token was verified: claims are its */

ngx_int_t
ngx_http_activity_ws_session_start(ngx_http_activity_session_t *s,
    ngx_http_activity_jwt_claims_t *claims)
{
    ngx_str_t  offset;

    if (ngx_http_activity_session_set_user(s, &claims->sub) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_activity_session_expire_at(s, claims->exp);

    /* counted at the handshake already: ready() has no place to refuse */

    if (s->conn.request
        && ngx_http_arg(s->conn.request, (u_char *) "offset", 6, &offset)
           == NGX_OK)
    {
        return ngx_http_activity_session_resume(s, NULL, &offset) == NGX_OK
               ? NGX_OK : NGX_ERROR;
    }

    return ngx_http_activity_session_ready(s, NULL) == NGX_OK
           ? NGX_OK : NGX_ERROR;
}


/*
 * {"event":"resume","data":{"recovered":true}}: the missed events
 * follow, each with its offset; false: a snapshot follows instead.
 */

static ngx_int_t
ngx_http_activity_ws_session_resumed(ngx_http_activity_session_t *s,
    ngx_uint_t recovered)
{
    static u_char  yes[] = "{\"event\":\"resume\",\"data\":"
                           "{\"recovered\":true}}";
    static u_char  no[] = "{\"event\":\"resume\",\"data\":"
                          "{\"recovered\":false}}";

    if (recovered) {
        return ngx_http_activity_conn_send(&s->conn, yes, sizeof(yes) - 1);
    }

    return ngx_http_activity_conn_send(&s->conn, no, sizeof(no) - 1);
}


static ngx_int_t
ngx_http_activity_ws_session_ping(ngx_http_activity_conn_t *ac)
{
    return ngx_http_activity_conn_send_control(ac, NGX_HTTP_ACTIVITY_WS_PING,
                                               (u_char *) "", 0);
}


/*
 * {"subscribe":[rooms]}, {"unsubscribe":[rooms]}, {"auth":"token"};
 * each answered with {"event":"subscribed"|"unsubscribed"|"auth",…}.
 */

static ngx_int_t
ngx_http_activity_ws_session_message(ngx_http_activity_conn_t *ac,
    u_char *data, size_t len)
{
    ngx_http_activity_session_t  *s = ac->data;

    json_t      *root, *arg, *result;
    ngx_int_t    rc;
    const char  *prefix;

    root = json_loadb((const char *) data, len, JSON_REJECT_DUPLICATES, NULL);

    if (!json_is_object(root)) {
        json_decref(root);
        ngx_http_activity_conn_close(&s->conn, NGX_HTTP_ACTIVITY_WS_BAD_DATA,
                                     "expected a JSON object");
        return NGX_ERROR;
    }

    if ((arg = json_object_get(root, "subscribe")) != NULL) {
        prefix = "{\"event\":\"subscribed\",\"data\":";
        result = ngx_http_activity_session_rooms(s, arg, 1);

    } else if ((arg = json_object_get(root, "unsubscribe")) != NULL) {
        prefix = "{\"event\":\"unsubscribed\",\"data\":";
        result = ngx_http_activity_session_rooms(s, arg, 0);

    } else if ((arg = json_object_get(root, "auth")) != NULL) {
        prefix = "{\"event\":\"auth\",\"data\":";
        result = ngx_http_activity_session_reauth(s, arg);

    } else {
        prefix = "{\"event\":\"error\",\"data\":";
        result = json_pack("{s:b,s:s}", "ok", 0, "error",
                           "expected subscribe, unsubscribe or auth");
    }

    json_decref(root);

    if (s->conn.finalized || s->conn.closing) {
        json_decref(result);
        return NGX_ERROR;
    }

    rc = ngx_http_activity_session_send_json(s, prefix, result, "}");
    json_decref(result);

    return rc;
}
