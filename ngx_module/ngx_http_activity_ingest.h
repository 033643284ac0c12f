
/*
 * activity_ingest: a POST endpoint for events applications post.
 */


#ifndef _NGX_HTTP_ACTIVITY_INGEST_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_INGEST_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


ngx_int_t ngx_http_activity_ingest_handler(ngx_http_request_t *r);


#endif /* _NGX_HTTP_ACTIVITY_INGEST_H_INCLUDED_ */
