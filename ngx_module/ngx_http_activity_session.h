
/*
 * Who a dashboard is: its token, the session's expiry and refresh, its
 * rooms; shared by both dashboard protocols.
 */


#ifndef _NGX_HTTP_ACTIVITY_SESSION_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_SESSION_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_activity_admit.h"
#include "ngx_http_activity_conn.h"
#include "ngx_http_activity_jwt.h"
#include "ngx_http_activity_resume.h"


/* a Socket.IO private session id (the "pid" of connection recovery) */
#define NGX_HTTP_ACTIVITY_PID_LEN   20


typedef struct ngx_http_activity_session_s  ngx_http_activity_session_t;

/* the protocol's answer to a resume, sent before the gap or snapshot */
typedef ngx_int_t (*ngx_http_activity_session_resumed_pt)(
    ngx_http_activity_session_t *s, ngx_uint_t recovered);


struct ngx_http_activity_session_s {
    ngx_http_activity_conn_t         conn;      /* must be first */
    ngx_event_t                      expiry;
    ngx_str_t                        user;
    ngx_str_t                        token;     /* from the handshake */
    ngx_str_t                        expired;   /* the protocol's notice */
    time_t                           started;
    u_char                           sid[20];
    ngx_str_t                        addr;      /* counted per address */
    u_char                           addr_buf[
                                         NGX_HTTP_ACTIVITY_ADMIT_ADDR_LEN];
    unsigned                         authed:1;
    unsigned                         counted:1;    /* max_connections */
    unsigned                         pending:1;    /* max_pending */
    unsigned                         addressed:1;  /* max_per_ip */
    unsigned                         open:1;       /* dashboards[] gauge */

    /* resume (issue 12) */
    ngx_http_activity_session_resumed_pt  resumed;
    ngx_http_activity_resume_req_t  *resume;       /* being read */
    ngx_msec_t                       saved;        /* record written then */
    u_char                           pid[NGX_HTTP_ACTIVITY_PID_LEN];
    u_char                           offset[NGX_HTTP_ACTIVITY_OFFSET_LEN];
    size_t                           offset_len;
    unsigned                         has_pid:1;    /* Socket.IO recovery */
};


ngx_http_activity_session_t *ngx_http_activity_session_create(
    ngx_http_request_t *r, ngx_str_t *token,
    ngx_http_activity_conn_handlers_t *handlers);
void ngx_http_activity_session_closed(ngx_http_activity_conn_t *ac);

ngx_int_t ngx_http_activity_session_authenticate(
    ngx_http_activity_session_t *s, ngx_str_t *token,
    ngx_http_activity_jwt_claims_t *claims);
ngx_int_t ngx_http_activity_session_set_user(ngx_http_activity_session_t *s,
    ngx_str_t *sub);
void ngx_http_activity_session_expire_at(ngx_http_activity_session_t *s,
    time_t exp);
ngx_int_t ngx_http_activity_session_ready(ngx_http_activity_session_t *s,
    ngx_str_t *hello);

ngx_int_t ngx_http_activity_session_resume(ngx_http_activity_session_t *s,
    ngx_str_t *pid, ngx_str_t *offset);
ngx_int_t ngx_http_activity_session_new_pid(ngx_http_activity_session_t *s);
void ngx_http_activity_session_keep(ngx_http_activity_session_t *s);

json_t *ngx_http_activity_session_rooms(ngx_http_activity_session_t *s,
    json_t *names, ngx_uint_t join);
json_t *ngx_http_activity_session_reauth(ngx_http_activity_session_t *s,
    json_t *arg);
ngx_int_t ngx_http_activity_session_send_json(ngx_http_activity_session_t *s,
    const char *prefix, json_t *json, const char *suffix);


#endif /* _NGX_HTTP_ACTIVITY_SESSION_H_INCLUDED_ */
