
/*
 * WebSocket frames shared by every connection that receives them, and the
 * per-connection queue of frames waiting to be written, bounded by bytes
 * and by the age of its oldest frame.
 */


#ifndef _NGX_HTTP_ACTIVITY_FRAME_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_FRAME_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* frames a single write gathers: nginx's writev() takes 64 at a time */
#define NGX_HTTP_ACTIVITY_OUTQ_CHAIN   64
#define NGX_HTTP_ACTIVITY_OUTQ_MIN     8


typedef struct {
    ngx_uint_t                   refs;
    size_t                       len;
    u_char                      *payload;   /* after the frame header */
    u_char                       data[1];
} ngx_http_activity_frame_t;


typedef struct {
    ngx_http_activity_frame_t   *frame;
    ngx_msec_t                   queued;    /* ngx_current_msec then */
} ngx_http_activity_outq_slot_t;


typedef struct {
    ngx_http_activity_outq_slot_t  *slots;  /* a ring, grown on demand */
    ngx_uint_t                   size;
    ngx_uint_t                   head;
    ngx_uint_t                   count;
    size_t                       offset;    /* sent of the head frame */
    size_t                       bytes;     /* queued, not yet sent */
    size_t                       max_bytes;
    ngx_msec_t                   max_age;
    ngx_log_t                   *log;
} ngx_http_activity_outq_t;


ngx_http_activity_frame_t *ngx_http_activity_frame_create(ngx_uint_t opcode,
    size_t payload_len, ngx_log_t *log);
ngx_http_activity_frame_t *ngx_http_activity_frame_raw(size_t len,
    ngx_log_t *log);
ngx_http_activity_frame_t *ngx_http_activity_frame_text(ngx_str_t *parts,
    ngx_uint_t n, ngx_log_t *log);
void ngx_http_activity_frame_release(ngx_http_activity_frame_t *frame);

void ngx_http_activity_outq_init(ngx_http_activity_outq_t *q,
    size_t max_bytes, ngx_msec_t max_age, ngx_log_t *log);
ngx_int_t ngx_http_activity_outq_push(ngx_http_activity_outq_t *q,
    ngx_http_activity_frame_t *frame);
ngx_int_t ngx_http_activity_outq_push_last(ngx_http_activity_outq_t *q,
    ngx_http_activity_frame_t *frame);
void ngx_http_activity_outq_trim(ngx_http_activity_outq_t *q);
ngx_int_t ngx_http_activity_outq_flush(ngx_http_activity_outq_t *q,
    ngx_connection_t *c);
void ngx_http_activity_outq_free(ngx_http_activity_outq_t *q);


#endif /* _NGX_HTTP_ACTIVITY_FRAME_H_INCLUDED_ */
