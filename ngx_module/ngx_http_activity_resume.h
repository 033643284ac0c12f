
/*
 * What a reconnecting dashboard missed: one Redis connection per nginx
 * worker process reads the recent-events stream and the Socket.IO
 * session records, and writes those records (issue 12).
 */


#ifndef _NGX_HTTP_ACTIVITY_RESUME_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_RESUME_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <hiredis/hiredis.h>

#include "ngx_http_activity_module.h"


/* a resume that Redis does not answer in time is given up */
#define NGX_HTTP_ACTIVITY_RESUME_TIMEOUT   5000


typedef struct ngx_http_activity_resume_req_s
    ngx_http_activity_resume_req_t;


typedef struct {
    ngx_int_t      rc;         /* NGX_OK: answered; NGX_ERROR: no answer */
    ngx_str_t      record;     /* the session record; data NULL: none */
    unsigned       found:1;    /* the offset's own entry is in the stream */
    redisReply    *entries;    /* XRANGE from the offset: its own entry */
    ngx_uint_t     first;      /* (if found), then the gap from here */
} ngx_http_activity_resume_result_t;


/*
 * Called once, unless cancelled first; what result points to lives only
 * for the call.
 */
typedef void (*ngx_http_activity_resume_done_pt)(void *data,
    ngx_http_activity_resume_result_t *result);


ngx_http_activity_resume_t *ngx_http_activity_resume_create(
    ngx_cycle_t *cycle, ngx_http_activity_main_conf_t *amcf);
void ngx_http_activity_resume_destroy(ngx_http_activity_resume_t *rs);

ngx_http_activity_resume_req_t *ngx_http_activity_resume_fetch(
    ngx_http_activity_resume_t *rs, ngx_str_t *pid, ngx_str_t *offset,
    ngx_uint_t max, ngx_http_activity_resume_done_pt handler, void *data);
void ngx_http_activity_resume_cancel(ngx_http_activity_resume_req_t *req);

void ngx_http_activity_resume_save(ngx_http_activity_resume_t *rs,
    ngx_str_t *pid, ngx_str_t *record, ngx_msec_t ttl);


#endif /* _NGX_HTTP_ACTIVITY_RESUME_H_INCLUDED_ */
