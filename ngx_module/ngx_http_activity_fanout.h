
/*
 * Redis pub/sub to dashboard connections: one SUBSCRIBE connection per
 * nginx worker process, each message encoded once per protocol and shared
 * by every connection that receives it.
 */


#ifndef _NGX_HTTP_ACTIVITY_FANOUT_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_FANOUT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_activity_module.h"
#include "ngx_http_activity_frame.h"
#include "ngx_http_activity_deflate.h"


#define NGX_HTTP_ACTIVITY_WEBSOCKET      1
#define NGX_HTTP_ACTIVITY_SOCKETIO       2

#define NGX_HTTP_ACTIVITY_SIO_NSP        "/dashboard"

/* a stream entry id as text: "<ms>-<seq>", two 64-bit numbers */
#define NGX_HTTP_ACTIVITY_OFFSET_LEN     41


/* an event's place in the recent-events stream (issue 12) */
typedef struct {
    uint64_t                             ms;
    uint64_t                             seq;
} ngx_http_activity_offset_t;


/* a frame kept for a listener whose resume is being read */
typedef struct {
    ngx_http_activity_frame_t           *frame;
    ngx_http_activity_offset_t           offset;
    ngx_uint_t                           has_offset;
    ngx_uint_t                           room;      /* 0: every listener */
} ngx_http_activity_held_t;


typedef struct ngx_http_activity_listener_s  ngx_http_activity_listener_t;

/* the listener's connection must go; called from a posted event */
typedef void (*ngx_http_activity_listener_fail_pt)(
    ngx_http_activity_listener_t *l, ngx_uint_t close_code);


struct ngx_http_activity_listener_s {
    ngx_queue_t                          all;      /* every connection */
    ngx_queue_t                          queue;    /* broadcast list */
    ngx_queue_t                          dirty;    /* to flush */
    ngx_connection_t                    *connection;
    ngx_http_activity_outq_t             out;
    ngx_uint_t                           protocol;
    ngx_uint_t                           rooms;    /* bit mask */
    ngx_uint_t                           fail_code;
    /* permessage-deflate: 0 when not negotiated, else the longest
       payload this connection may get compressed */
    size_t                               deflate_max;
    ngx_uint_t                           deflate_bits;  /* answered
                                                 server_max_window_bits */
    ngx_http_activity_listener_fail_pt   fail;
    ngx_http_activity_listener_fail_pt   going_away;  /* worker exits */

    /* resume: frames held until the gap is sent, then none twice */
    ngx_http_activity_held_t            *held;
    ngx_uint_t                           held_count;
    ngx_uint_t                           held_size;   /* allocated */
    ngx_uint_t                           held_max;
    ngx_http_activity_offset_t           floor;
    unsigned                             attached:1;
    unsigned                             joined:1;
    unsigned                             is_dirty:1;
    unsigned                             failed:1;
    unsigned                             holding:1;
    unsigned                             held_overflow:1;
    unsigned                             has_floor:1;
};


ngx_http_activity_fanout_t *ngx_http_activity_fanout_create(
    ngx_cycle_t *cycle, ngx_http_activity_main_conf_t *amcf);
void ngx_http_activity_fanout_destroy(ngx_http_activity_fanout_t *f);

void ngx_http_activity_fanout_attach(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l);
void ngx_http_activity_fanout_detach(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l);
void ngx_http_activity_fanout_join(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l);
void ngx_http_activity_fanout_leave(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l);

ngx_int_t ngx_http_activity_fanout_send(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l, ngx_http_activity_frame_t *frame);
ngx_int_t ngx_http_activity_fanout_send_snapshot(
    ngx_http_activity_fanout_t *f, ngx_http_activity_listener_t *l);

ngx_http_activity_deflate_t *ngx_http_activity_fanout_deflate(
    ngx_http_activity_fanout_t *f);

ngx_http_activity_frame_t *ngx_http_activity_fanout_event_frame(
    ngx_uint_t protocol, ngx_str_t *name, ngx_str_t *data, ngx_str_t *offset,
    ngx_log_t *log);
ngx_uint_t ngx_http_activity_fanout_room(u_char *name, size_t len);
const char *ngx_http_activity_fanout_room_name(ngx_uint_t bit);

ngx_int_t ngx_http_activity_offset_parse(u_char *p, size_t len,
    ngx_http_activity_offset_t *o);
ngx_int_t ngx_http_activity_offset_cmp(ngx_http_activity_offset_t *a,
    ngx_http_activity_offset_t *b);

ngx_int_t ngx_http_activity_fanout_hold(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l, ngx_uint_t max);
ngx_int_t ngx_http_activity_fanout_replay(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l, u_char *text, size_t len,
    ngx_str_t *offset);
void ngx_http_activity_fanout_release(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l, ngx_http_activity_offset_t *last);


#endif /* _NGX_HTTP_ACTIVITY_FANOUT_H_INCLUDED_ */
