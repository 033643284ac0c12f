
/*
 * The disk spool: events that the memory buffer cannot hold while Redis is
 * away, appended to one file shared by the worker processes, and replayed
 * in order once Redis is back.
 */


#ifndef _NGX_HTTP_ACTIVITY_SPOOL_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_SPOOL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_activity_module.h"


typedef struct ngx_http_activity_spool_s  ngx_http_activity_spool_t;

/* NGX_OK: the line is taken; NGX_BUSY: no room now, stop */
typedef ngx_int_t (*ngx_http_activity_spool_line_pt)(void *data,
    u_char *line, size_t len);


ngx_http_activity_spool_t *ngx_http_activity_spool_create(ngx_cycle_t *cycle,
    ngx_str_t *path, off_t max_size, ngx_http_activity_stats_t *stats);
ngx_int_t ngx_http_activity_spool_append(ngx_http_activity_spool_t *sp,
    u_char *data, size_t len);
ngx_int_t ngx_http_activity_spool_replay(ngx_http_activity_spool_t *sp,
    ngx_http_activity_spool_line_pt handler, void *data);
ngx_int_t ngx_http_activity_spool_sync(ngx_http_activity_spool_t *sp);
void ngx_http_activity_spool_destroy(ngx_http_activity_spool_t *sp);


#endif /* _NGX_HTTP_ACTIVITY_SPOOL_H_INCLUDED_ */
