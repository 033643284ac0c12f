
/*
 * What the files of a dashboard session share, and nothing outside them
 * includes; callers use ngx_http_activity_session.h.  Each file uses only
 * those below it:
 *
 *   ngx_http_activity_session_resume.c  resume: pid, offset, gap, replay
 *   ngx_http_activity_session.c         who a dashboard is: token,
 *                                       expiry, admission, rooms
 *   ngx_http_activity_session_record.c  the session's record in Redis
 */


#ifndef _NGX_HTTP_ACTIVITY_SESSION_INTERNAL_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_SESSION_INTERNAL_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_activity_session.h"


/* ngx_http_activity_session_record.c */
void ngx_http_activity_session_save(ngx_http_activity_session_t *s,
    ngx_msec_t ttl);

/* ngx_http_activity_session.c */
ngx_int_t ngx_http_activity_session_admit(
    ngx_http_activity_session_t *s);


#endif /* _NGX_HTTP_ACTIVITY_SESSION_INTERNAL_H_INCLUDED_ */
