
/*
 * An upgraded dashboard connection: reading and parsing client frames,
 * the queue of frames to write, heartbeats, the closing handshake.  It
 * knows nothing of the protocol spoken inside the frames: the protocol
 * above hands it a table of callbacks at accept.
 */


#ifndef _NGX_HTTP_ACTIVITY_CONN_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_CONN_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_module.h"
#include "ngx_http_activity_fanout.h"
#include "ngx_http_activity_frame.h"


/* the longest client message, in one frame or gathered from fragments */
#define NGX_HTTP_ACTIVITY_MESSAGE_MAX   65536


typedef struct ngx_http_activity_conn_s  ngx_http_activity_conn_t;


typedef struct {
    /* a whole text message; NGX_ERROR once the connection is closing */
    ngx_int_t  (*on_message)(ngx_http_activity_conn_t *ac, u_char *data,
                             size_t len);
    /* sends the protocol's heartbeat */
    ngx_int_t  (*on_ping)(ngx_http_activity_conn_t *ac);
    /* the connection is being freed: undo what the protocol holds */
    void       (*on_close)(ngx_http_activity_conn_t *ac);
} ngx_http_activity_conn_handlers_t;


struct ngx_http_activity_conn_s {
    ngx_http_activity_listener_t        listener;   /* must be first */
    ngx_connection_t                   *connection;
    ngx_http_request_t                 *request;    /* until detached */
    ngx_http_activity_loc_conf_t       *conf;
    ngx_http_activity_main_conf_t      *amcf;
    ngx_http_activity_fanout_t         *fanout;
    ngx_http_activity_conn_handlers_t  *handlers;
    void                               *data;       /* the protocol's */

    u_char                             *in;
    size_t                              in_len;
    size_t                              in_size;
    u_char                             *msg;
    size_t                              msg_len;
    ngx_uint_t                          msg_opcode;

    ngx_event_t                         ping;
    ngx_event_t                         close_event;
    ngx_event_t                         detach;

    ngx_msec_t                          rate_time;
    ngx_msec_t                          rate_debt;

    unsigned                            msg_deflated:1;  /* RSV1 */
    unsigned                            awaiting_pong:1;
    unsigned                            closing:1;
    unsigned                            lingering:1;
    unsigned                            nodelay:1;
    unsigned                            finalized:1;
};


ngx_int_t ngx_http_activity_conn_init(ngx_http_activity_conn_t *ac,
    ngx_http_request_t *r, ngx_http_activity_conn_handlers_t *handlers,
    void *data);
ngx_int_t ngx_http_activity_conn_accept(ngx_http_activity_conn_t *ac,
    ngx_str_t *key);
ngx_int_t ngx_http_activity_conn_hold(ngx_http_activity_conn_t *ac);

ngx_int_t ngx_http_activity_conn_send(ngx_http_activity_conn_t *ac,
    u_char *data, size_t len);
ngx_int_t ngx_http_activity_conn_send_frame(ngx_http_activity_conn_t *ac,
    ngx_http_activity_frame_t *frame);
ngx_int_t ngx_http_activity_conn_send_control(ngx_http_activity_conn_t *ac,
    ngx_uint_t opcode, u_char *data, size_t len);
void ngx_http_activity_conn_pong(ngx_http_activity_conn_t *ac);

void ngx_http_activity_conn_close(ngx_http_activity_conn_t *ac,
    ngx_uint_t code, const char *reason);
void ngx_http_activity_conn_finalize(ngx_http_activity_conn_t *ac);


#endif /* _NGX_HTTP_ACTIVITY_CONN_H_INCLUDED_ */
