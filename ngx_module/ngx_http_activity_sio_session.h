
/*
 * The "socketio" dashboard protocol: Engine.IO v4 / Socket.IO v5 over a
 * WebSocket, namespace /dashboard.
 */


#ifndef _NGX_HTTP_ACTIVITY_SIO_SESSION_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_SIO_SESSION_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_session.h"


ngx_http_activity_session_t *ngx_http_activity_sio_session_create(
    ngx_http_request_t *r, ngx_str_t *token);
ngx_int_t ngx_http_activity_sio_session_start(ngx_http_activity_session_t *s);


#endif /* _NGX_HTTP_ACTIVITY_SIO_SESSION_H_INCLUDED_ */
