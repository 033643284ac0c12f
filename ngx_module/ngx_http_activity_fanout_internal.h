
/*
 * What the files of the fan-out share, and nothing outside them
 * includes; callers use ngx_http_activity_fanout.h.  Each file uses only
 * those below it:
 *
 *   ngx_http_activity_fanout.c            life cycle: create, destroy,
 *                                         listeners, the shutdown watch
 *   ngx_http_activity_fanout_subscribe.c  the Redis subscription, its
 *                                         replies and messages, broadcast
 *   ngx_http_activity_fanout_snapshot.c   recent events, stats, snapshot
 *   ngx_http_activity_fanout_hold.c       resume: hold, replay, release
 *   ngx_http_activity_fanout_send.c       frames, rooms, offsets, sending
 *                                         to one listener, the flush
 */


#ifndef _NGX_HTTP_ACTIVITY_FANOUT_INTERNAL_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_FANOUT_INTERNAL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_activity_fanout.h"
#include "ngx_http_activity_redis.h"


#define NGX_HTTP_ACTIVITY_RECENT_MAX     50
#define NGX_HTTP_ACTIVITY_PROTOCOLS      2


typedef struct {
    const char                  *room;
    const char                  *type;      /* eventType */
    ngx_str_t                    event;     /* Socket.IO event name */
} ngx_http_activity_room_t;


struct ngx_http_activity_fanout_s {
    ngx_http_activity_redis_t    redis;
    ngx_http_activity_main_conf_t  *amcf;
    ngx_log_t                   *log;

    ngx_queue_t                  all;
    ngx_queue_t                  listeners;
    ngx_queue_t                  dirty;
    ngx_connection_t            *watcher;
    ngx_event_t                  flush;
    ngx_uint_t                   counts[NGX_HTTP_ACTIVITY_PROTOCOLS + 1];

    ngx_str_t                    recent[NGX_HTTP_ACTIVITY_RECENT_MAX];
    ngx_uint_t                   recent_next;   /* slot of the next one */
    ngx_uint_t                   recent_count;
    ngx_str_t                    stats;         /* data NULL: none yet */

    /* the newest offset heard: where a snapshot leaves its reader */
    u_char                       last_offset[NGX_HTTP_ACTIVITY_OFFSET_LEN];
    size_t                       last_offset_len;

    ngx_http_activity_frame_t   *snapshot[NGX_HTTP_ACTIVITY_PROTOCOLS + 1];
    /* the snapshot compressed, or the plain one when that is shorter */
    ngx_http_activity_frame_t   *snapshot_z[NGX_HTTP_ACTIVITY_PROTOCOLS + 1];

    ngx_http_activity_deflate_t  deflate;

    ngx_http_activity_stats_t   *counters;
};


extern ngx_str_t  ngx_http_activity_new_event;


/* ngx_http_activity_fanout_send.c */
ngx_http_activity_frame_t *ngx_http_activity_fanout_pick(
    ngx_http_activity_fanout_t *f, ngx_http_activity_listener_t *l,
    ngx_http_activity_frame_t *plain, ngx_http_activity_frame_t **zframe);
ngx_http_activity_room_t *ngx_http_activity_fanout_room_of(
    const char *type, ngx_uint_t *bit);
void ngx_http_activity_fanout_flush(ngx_event_t *ev);

/* ngx_http_activity_fanout_hold.c */
void ngx_http_activity_fanout_hold_frame(
    ngx_http_activity_listener_t *l, ngx_http_activity_frame_t *frame,
    ngx_http_activity_offset_t *off, ngx_uint_t room);

/* ngx_http_activity_fanout_snapshot.c */
ngx_int_t ngx_http_activity_fanout_remember(
    ngx_http_activity_fanout_t *f, u_char *data, size_t len);
void ngx_http_activity_fanout_forget(ngx_http_activity_fanout_t *f);
void ngx_http_activity_fanout_invalidate(ngx_http_activity_fanout_t *f);

/* ngx_http_activity_fanout_subscribe.c */
void ngx_http_activity_fanout_on_ready(ngx_http_activity_redis_t *rd);


#endif /* _NGX_HTTP_ACTIVITY_FANOUT_INTERNAL_H_INCLUDED_ */
