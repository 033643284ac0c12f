
/*
 * Bearer JWT verification (libjwt), with the algorithm pinned by
 * configuration: libjwt 1.10 trusts the token's own "alg" header.
 */


#ifndef _NGX_HTTP_ACTIVITY_JWT_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_JWT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


ngx_int_t ngx_http_activity_jwt_subject(ngx_http_request_t *r,
    ngx_str_t *secret, ngx_str_t *sub);


#endif /* _NGX_HTTP_ACTIVITY_JWT_H_INCLUDED_ */
