
/*
 * The log-phase handler: API_CALL and domain events of a request.
 */


#ifndef _NGX_HTTP_ACTIVITY_TRACK_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_TRACK_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


ngx_int_t ngx_http_activity_log_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_ACTIVITY_TRACK_H_INCLUDED_ */
