
/*
 * permessage-deflate (RFC 7692) without context takeover: one deflate and
 * one inflate stream per nginx worker process, reset for every message.
 * A broadcast message is compressed once and its frame shared like the
 * plain one; a client's compressed message is inflated within a bound.
 */


#ifndef _NGX_HTTP_ACTIVITY_DEFLATE_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_DEFLATE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <zlib.h>

#include "ngx_http_activity_frame.h"


/*
 * Payloads shorter than this go out plain even to connections that
 * compress: a few dozen bytes of JSON hardly shrink, and each compressed
 * message costs every client an inflate.
 */
#define NGX_HTTP_ACTIVITY_DEFLATE_MIN    128

/* the compression scratch buffer is kept up to this size */
#define NGX_HTTP_ACTIVITY_DEFLATE_KEEP   65536


typedef struct {
    z_stream                     deflate;
    z_stream                     inflate;
    u_char                      *out;       /* inflated message */
    size_t                       out_size;
    u_char                      *zout;      /* deflate's output */
    size_t                       zout_size;
    ngx_log_t                   *log;
    unsigned                     deflate_ready:1;
    unsigned                     deflate_failed:1;
    unsigned                     inflate_ready:1;
} ngx_http_activity_deflate_t;


void ngx_http_activity_deflate_init(ngx_http_activity_deflate_t *z,
    ngx_log_t *log);
void ngx_http_activity_deflate_done(ngx_http_activity_deflate_t *z);

ngx_http_activity_frame_t *ngx_http_activity_deflate_frame(
    ngx_http_activity_deflate_t *z, ngx_http_activity_frame_t *plain);
ngx_int_t ngx_http_activity_deflate_inflate(ngx_http_activity_deflate_t *z,
    u_char *in, size_t len, size_t max, ngx_str_t *out);


#endif /* _NGX_HTTP_ACTIVITY_DEFLATE_H_INCLUDED_ */
