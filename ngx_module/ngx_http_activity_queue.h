
/*
 * The per-worker event queue: a bounded buffer of serialized events sent
 * to Redis with one pipelined LPUSH per event loop iteration.
 */


#ifndef _NGX_HTTP_ACTIVITY_QUEUE_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_QUEUE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_activity_module.h"


ngx_http_activity_queue_t *ngx_http_activity_queue_create(ngx_cycle_t *cycle,
    ngx_http_activity_main_conf_t *amcf);
ngx_int_t ngx_http_activity_queue_push(ngx_http_activity_queue_t *q,
    u_char *data, size_t len);
size_t ngx_http_activity_queue_room(ngx_http_activity_queue_t *q,
    ngx_uint_t n);
void ngx_http_activity_queue_destroy(ngx_http_activity_queue_t *q);


#endif /* _NGX_HTTP_ACTIVITY_QUEUE_H_INCLUDED_ */
