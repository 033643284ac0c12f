
/*
 * Events as JSON (the event contract of ARCHITECTURE.md), built with
 * jansson: ids are UUIDv7, timestamps ISO-8601 UTC with milliseconds.
 */


#ifndef _NGX_HTTP_ACTIVITY_EVENT_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_EVENT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


typedef struct ngx_http_activity_event_s  ngx_http_activity_event_t;


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


ngx_http_activity_event_t *ngx_http_activity_event_create(
    ngx_http_activity_facts_t *facts, ngx_log_t *log);
u_char *ngx_http_activity_event_encode(ngx_http_activity_event_t *ev,
    ngx_str_t *type, size_t *len);
void ngx_http_activity_event_free(ngx_http_activity_event_t *ev);


#endif /* _NGX_HTTP_ACTIVITY_EVENT_H_INCLUDED_ */
