
/*
 * Events as JSON (the event contract of ARCHITECTURE.md): ids are UUIDv7,
 * timestamps ISO-8601 UTC with milliseconds.
 */


#ifndef _NGX_HTTP_ACTIVITY_EVENT_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_EVENT_H_INCLUDED_


/* a timestamp ("2026-11-27T12:00:00.123Z", 24 bytes) is shorter */
#define NGX_HTTP_ACTIVITY_UUID_LEN        36


#include <ngx_config.h>
#include <ngx_core.h>


/* the facts of one request; strings need not be valid UTF-8 */

typedef struct {
    ngx_str_t                   user;        /* data NULL: null */
    time_t                      sec;
    ngx_msec_t                  msec;
    ngx_str_t                   ip;
    ngx_str_t                   user_agent;  /* data NULL: null */
    ngx_str_t                   endpoint;
    ngx_str_t                   method;
    ngx_uint_t                  status;
    ngx_msec_int_t              duration;
    ngx_array_t                *details;     /* ngx_keyval_t, or NULL */
} ngx_http_activity_facts_t;


ngx_int_t ngx_http_activity_event_body(ngx_pool_t *pool,
    ngx_http_activity_facts_t *f, ngx_str_t *body);
u_char *ngx_http_activity_event_uuid(u_char *p, uint64_t msec);
u_char *ngx_http_activity_event_timestamp(u_char *p, time_t sec,
    ngx_msec_t msec);
ngx_int_t ngx_http_activity_event_encode(ngx_pool_t *pool, ngx_str_t *type,
    ngx_http_activity_facts_t *f, ngx_str_t *body, ngx_str_t *json);
ngx_int_t ngx_http_activity_random(u_char *buf, size_t len);


#endif /* _NGX_HTTP_ACTIVITY_EVENT_H_INCLUDED_ */
