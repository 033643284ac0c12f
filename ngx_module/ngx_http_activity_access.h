
/*
 * activity_auth_jwt: an access-phase JWT check for any location, and the
 * $activity_jwt_sub and $activity_jwt_role variables.
 */


#ifndef _NGX_HTTP_ACTIVITY_ACCESS_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_ACCESS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


ngx_int_t ngx_http_activity_access_variables(ngx_conf_t *cf);
ngx_int_t ngx_http_activity_access_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_ACTIVITY_ACCESS_H_INCLUDED_ */
