
/*
 * hiredis's asynchronous API driven by nginx's event loop: one connection
 * with reconnect and backoff, never a blocking call.
 */


#ifndef _NGX_HTTP_ACTIVITY_REDIS_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_activity_module.h"


typedef struct ngx_http_activity_redis_s  ngx_http_activity_redis_t;

typedef void (*ngx_http_activity_redis_handler_pt)(
    ngx_http_activity_redis_t *rd);


struct ngx_http_activity_redis_s {
    redisAsyncContext                   *ac;      /* NULL when down */
    ngx_connection_t                    *conn;
    ngx_http_activity_redis_addr_t      *addr;
    ngx_log_t                           *log;
    const char                          *role;    /* "queue", ... */

    ngx_event_t                          retry;
    ngx_event_t                          connect_timer;
    ngx_msec_t                           backoff;
    ngx_uint_t                           failures;  /* in a row */

    ngx_atomic_t                        *stat_up;          /* or NULL */
    ngx_atomic_t                        *stat_reconnects;  /* or NULL */

    ngx_http_activity_redis_handler_pt   on_ready;
    ngx_http_activity_redis_handler_pt   on_down;
    void                                *data;

    unsigned                             ready:1;
    unsigned                             closing:1;
};


void ngx_http_activity_redis_init(ngx_http_activity_redis_t *rd,
    ngx_http_activity_redis_addr_t *addr, ngx_log_t *log, const char *role);
void ngx_http_activity_redis_connect(ngx_http_activity_redis_t *rd);
void ngx_http_activity_redis_send(ngx_http_activity_redis_t *rd);
void ngx_http_activity_redis_drop(ngx_http_activity_redis_t *rd);
void ngx_http_activity_redis_close(ngx_http_activity_redis_t *rd);


#endif /* _NGX_HTTP_ACTIVITY_REDIS_H_INCLUDED_ */
