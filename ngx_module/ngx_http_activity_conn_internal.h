
/*
 * What the files of an upgraded dashboard connection share, and nothing
 * outside them includes; callers use ngx_http_activity_conn.h.  Each file
 * uses only those below it:
 *
 *   ngx_http_activity_conn.c        life cycle: init, the 101, detaching
 *                                   the request, the pool cleanup
 *   ngx_http_activity_conn_read.c   client frames: reading, parsing,
 *                                   fragments, inflating, the rate
 *   ngx_http_activity_conn_write.c  frames out, the heartbeat, the closing
 *                                   handshake, the linger, finalizing
 */


#ifndef _NGX_HTTP_ACTIVITY_CONN_INTERNAL_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_CONN_INTERNAL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_conn.h"


/* the smallest input buffer, and the linger's discard buffer */
#define NGX_HTTP_ACTIVITY_INPUT_MIN     512


/* ngx_http_activity_conn_write.c */
void ngx_http_activity_conn_write(ngx_event_t *wev);
void ngx_http_activity_conn_ping(ngx_event_t *ev);
void ngx_http_activity_conn_fail(ngx_http_activity_listener_t *l,
    ngx_uint_t code);
void ngx_http_activity_conn_going_away(ngx_http_activity_listener_t *l,
    ngx_uint_t code);
void ngx_http_activity_conn_close_handler(ngx_event_t *ev);
void ngx_http_activity_conn_drain(ngx_http_activity_conn_t *ac);

/* ngx_http_activity_conn_read.c */
void ngx_http_activity_conn_read(ngx_event_t *rev);
ngx_int_t ngx_http_activity_conn_input(ngx_http_activity_conn_t *ac);


#endif /* _NGX_HTTP_ACTIVITY_CONN_INTERNAL_H_INCLUDED_ */
