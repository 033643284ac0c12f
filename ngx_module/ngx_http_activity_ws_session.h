
/*
 * The plain "websocket" dashboard protocol: JSON messages in text frames,
 * authenticated at the handshake.
 */


#ifndef _NGX_HTTP_ACTIVITY_WS_SESSION_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_WS_SESSION_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_session.h"


ngx_http_activity_session_t *ngx_http_activity_ws_session_create(
    ngx_http_request_t *r, ngx_str_t *token);
ngx_int_t ngx_http_activity_ws_session_start(ngx_http_activity_session_t *s,
    ngx_http_activity_jwt_claims_t *claims);


#endif /* _NGX_HTTP_ACTIVITY_WS_SESSION_H_INCLUDED_ */
