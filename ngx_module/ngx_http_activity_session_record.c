
/*
 * A session's record in Redis, for a client that reconnects within the
 * recovery window: the pid it shows to take its session back, and the
 * user and rooms saved under it.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_activity_session_internal.h"
#include "ngx_http_activity_event.h"


/*
 * The pid is all a client shows to take its session back (with a token
 * of the same user): 120 bits from the kernel's CSPRNG, not from
 * random(), whose state nginx seeds from the worker's pid and start time.
 */

ngx_int_t
ngx_http_activity_session_new_pid(ngx_http_activity_session_t *s)
{
    u_char  *p;

    if (ngx_http_activity_random(s->pid, NGX_HTTP_ACTIVITY_PID_LEN)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_errno,
                      "activity: getrandom() failed, no session id");
        s->has_pid = 0;
        return NGX_ERROR;
    }

    for (p = s->pid; p < s->pid + NGX_HTTP_ACTIVITY_PID_LEN; p++) {
        *p = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
             "0123456789-_"[*p & 63];
    }

    s->has_pid = 1;

    return NGX_OK;
}


/* a heartbeat: the record of a long session must outlive it */

void
ngx_http_activity_session_keep(ngx_http_activity_session_t *s)
{
    if (s->has_pid && s->authed && s->resume == NULL
        && ngx_current_msec - s->saved >= s->conn.conf->recovery / 2)
    {
        ngx_http_activity_session_save(s, s->conn.conf->recovery);
    }
}


void
ngx_http_activity_session_save(ngx_http_activity_session_t *s,
    ngx_msec_t ttl)
{
    char        *text;
    json_t      *record, *rooms;
    ngx_str_t    pid, value;
    ngx_uint_t   bit;
    const char  *name;

    if (s->conn.amcf->resume_state == NULL || ttl == 0) {
        return;
    }

    record = json_pack("{s:s%,s:[]}", "user",
                       s->user.data ? (char *) s->user.data : "",
                       s->user.len, "rooms");
    if (record == NULL) {
        return;
    }

    rooms = json_object_get(record, "rooms");

    for (bit = 1; bit; bit <<= 1) {
        name = ngx_http_activity_fanout_room_name(bit);

        if (name == NULL) {
            break;
        }

        if (s->conn.listener.rooms & bit) {
            json_array_append_new(rooms, json_string(name));
        }
    }

    text = json_dumps(record, JSON_COMPACT);
    json_decref(record);

    if (text == NULL) {
        return;
    }

    pid.data = s->pid;
    pid.len = NGX_HTTP_ACTIVITY_PID_LEN;
    value.data = (u_char *) text;
    value.len = ngx_strlen(text);

    ngx_http_activity_resume_save(s->conn.amcf->resume_state, &pid, &value,
                                  ttl);
    free(text);

    s->saved = ngx_current_msec;
}
