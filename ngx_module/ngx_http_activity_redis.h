
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
    ngx_msec_t                           backoff;   /* next delay, grows */
    ngx_msec_t                           healthy_since;

    /* the outage being reported: kind and error code, logged once */
    ngx_uint_t                           trouble;
    ngx_uint_t                           trouble_code;

    /* application PING on a subscribed connection (0: none) */
    ngx_event_t                          ping;
    ngx_msec_t                           ping_interval;
    ngx_msec_t                           ping_timeout;
    ngx_uint_t                           reads;      /* read events seen */
    ngx_uint_t                           ping_reads; /* reads at PING */

    ngx_atomic_t                        *stat_up;          /* or NULL */
    ngx_atomic_t                        *stat_reconnects;  /* or NULL */
    u_char                              *stat_master;      /* or NULL */

    /*
     * redis+sentinel://: the sentinel to ask next, how many were asked
     * in this round, and the master the last one named
     */
    ngx_uint_t                           phase;
    ngx_uint_t                           sentinel;
    ngx_uint_t                           asked;
    ngx_event_t                          step;      /* posted: next try */
    in_port_t                            master_port;
    u_char                               master_host[NGX_INET6_ADDRSTRLEN
                                                     + 1];
    ngx_str_t                            master;    /* "ip:port", in use */
    u_char                               master_text[NGX_SOCKADDR_STRLEN];
    u_char                               detail[160];  /* for the log */

    ngx_http_activity_redis_handler_pt   on_ready;
    ngx_http_activity_redis_handler_pt   on_down;
    void                                *data;

    unsigned                             ready:1;
    unsigned                             closing:1;
    unsigned                             healthy:1;
    unsigned                             pinging:1;  /* awaiting a reply */

    /* inside hiredis's connect callback: the context must stay */
    unsigned                             in_connect:1;
    unsigned                             write_later:1;
    unsigned                             drop_later:1;

    unsigned                             found:1;   /* a sentinel named it */
};


/* what went wrong, for the log: one line per change */
#define NGX_HTTP_ACTIVITY_REDIS_UNREACHABLE   1
#define NGX_HTTP_ACTIVITY_REDIS_REFUSED       2
#define NGX_HTTP_ACTIVITY_REDIS_TIMEOUT       3
#define NGX_HTTP_ACTIVITY_REDIS_NO_MASTER     4
#define NGX_HTTP_ACTIVITY_REDIS_NOT_MASTER    5

/* what the connection being made is for */
#define NGX_HTTP_ACTIVITY_REDIS_DIRECT        0
#define NGX_HTTP_ACTIVITY_REDIS_SENTINEL      1
#define NGX_HTTP_ACTIVITY_REDIS_MASTER        2


void ngx_http_activity_redis_init(ngx_http_activity_redis_t *rd,
    ngx_http_activity_redis_addr_t *addr, ngx_log_t *log, const char *role);
void ngx_http_activity_redis_connect(ngx_http_activity_redis_t *rd);
void ngx_http_activity_redis_send(ngx_http_activity_redis_t *rd);
void ngx_http_activity_redis_drop(ngx_http_activity_redis_t *rd);
void ngx_http_activity_redis_error(ngx_http_activity_redis_t *rd,
    ngx_uint_t kind, const char *what, const char *detail);
void ngx_http_activity_redis_healthy(ngx_http_activity_redis_t *rd);
void ngx_http_activity_redis_start_ping(ngx_http_activity_redis_t *rd);
void ngx_http_activity_redis_close(ngx_http_activity_redis_t *rd);


#endif /* _NGX_HTTP_ACTIVITY_REDIS_H_INCLUDED_ */
