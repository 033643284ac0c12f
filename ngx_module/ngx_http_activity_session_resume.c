
/*
 * Resuming a session (issue 12): the client's pid and last offset, the
 * gap read from the stream while broadcasts are held, then the gap and
 * what was held after it, or a snapshot.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_activity_session_internal.h"
#include "ngx_http_activity_event.h"
#include "ngx_http_activity_status.h"
#include "ngx_http_activity_ws.h"


static void ngx_http_activity_session_resume_done(void *data,
    ngx_http_activity_resume_result_t *result);
static ngx_int_t ngx_http_activity_session_recoverable(
    ngx_http_activity_session_t *s, ngx_http_activity_resume_result_t *result,
    ngx_http_activity_offset_t *from);
static ngx_uint_t ngx_http_activity_session_in_window(
    ngx_http_activity_session_t *s, ngx_http_activity_offset_t *off);
static ngx_int_t ngx_http_activity_session_restore(
    ngx_http_activity_session_t *s, ngx_str_t *record);
static ngx_int_t ngx_http_activity_session_finish(
    ngx_http_activity_session_t *s, ngx_http_activity_resume_result_t *result,
    ngx_http_activity_offset_t *from);


/*
 * Resume (issue 12): like ready(), but the client names the last offset
 * it got (and, Socket.IO, the pid of its session).  Broadcasts are held
 * while the gap is read from Redis; then the protocol answers (resumed),
 * and either the gap, then the held broadcasts after it, or a snapshot
 * follow.  Anything wrong with the client's pid or offset, Redis down or
 * slow, a gap too long: not recovered, never an error.
 */

ngx_int_t
ngx_http_activity_session_resume(ngx_http_activity_session_t *s,
    ngx_str_t *pid, ngx_str_t *offset)
{
    ngx_int_t                       rc;
    ngx_str_t                       own;
    ngx_uint_t                      i, valid;
    ngx_http_activity_offset_t      off;
    ngx_http_activity_loc_conf_t   *conf;
    ngx_http_activity_resume_req_t *req;

    rc = ngx_http_activity_session_admit(s);

    if (rc != NGX_OK) {
        return rc;
    }

    conf = s->conn.conf;

    valid = conf->recovery
            && s->conn.amcf->resume_state
            && offset->len
            && ngx_http_activity_offset_parse(offset->data, offset->len,
                                              &off)
               == NGX_OK;

    /*
     * asked of Redis only what can be recovered: nothing follows the
     * largest id (Redis refuses to read after it), and a plain client's
     * offset is at most the window old
     */

    if (valid
        && ((off.ms == UINT64_MAX && off.seq == UINT64_MAX)
            || (pid == NULL
                && !ngx_http_activity_session_in_window(s, &off))))
    {
        valid = 0;
    }

    if (valid && pid) {
        valid = pid->len == NGX_HTTP_ACTIVITY_PID_LEN;

        for (i = 0; valid && i < pid->len; i++) {
            valid = (pid->data[i] >= 'A' && pid->data[i] <= 'Z')
                    || (pid->data[i] >= 'a' && pid->data[i] <= 'z')
                    || (pid->data[i] >= '0' && pid->data[i] <= '9')
                    || pid->data[i] == '-' || pid->data[i] == '_';
        }
    }

    ngx_http_activity_fanout_join(s->conn.fanout, &s->conn.listener);

    if (!valid) {
        return ngx_http_activity_session_finish(s, NULL, NULL);
    }

    /* the client's pid is its session's only while it is recovered */

    if (pid) {
        ngx_memcpy(s->pid, pid->data, NGX_HTTP_ACTIVITY_PID_LEN);
        own.data = s->pid;
        own.len = NGX_HTTP_ACTIVITY_PID_LEN;
    }

    ngx_memcpy(s->offset, offset->data, offset->len);
    s->offset_len = offset->len;

    if (ngx_http_activity_fanout_hold(s->conn.fanout, &s->conn.listener,
                                      conf->recovery_max)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    req = ngx_http_activity_resume_fetch(s->conn.amcf->resume_state,
                                         pid ? &own : NULL, offset,
                                         conf->recovery_max,
                                         ngx_http_activity_session_resume_done,
                                         s);
    if (req == NULL) {
        return ngx_http_activity_session_finish(s, NULL, NULL);
    }

    s->resume = req;

    return NGX_OK;
}


static void
ngx_http_activity_session_resume_done(void *data,
    ngx_http_activity_resume_result_t *result)
{
    ngx_http_activity_session_t *s = data;

    ngx_http_activity_offset_t  from;

    s->resume = NULL;

    if (s->conn.finalized || s->conn.closing) {
        return;
    }

    (void) ngx_http_activity_offset_parse(s->offset, s->offset_len, &from);

    if (ngx_http_activity_session_finish(s, result, &from) != NGX_OK) {
        ngx_http_activity_conn_finalize(&s->conn);
    }
}


/* result NULL: not recovered */

static ngx_int_t
ngx_http_activity_session_finish(ngx_http_activity_session_t *s,
    ngx_http_activity_resume_result_t *result,
    ngx_http_activity_offset_t *from)
{
    size_t                         i;
    ngx_str_t                      offset;
    redisReply                    *e, *id, *fields;
    ngx_http_activity_offset_t     last;
    ngx_http_activity_listener_t  *l;

    l = &s->conn.listener;

    if (result == NULL
        || ngx_http_activity_session_recoverable(s, result, from) != NGX_OK)
    {
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "activity: dashboard %V not recovered, user \"%V\"",
                      &s->conn.connection->addr_text, &s->user);

        ngx_http_activity_stat_add(s->conn.amcf->stats,
                                   resumes_not_recovered, 1);

        ngx_http_activity_fanout_release(s->conn.fanout, l, NULL);

        if (s->has_pid && ngx_http_activity_session_new_pid(s) != NGX_OK) {
            return NGX_ERROR;
        }

        if (s->resumed(s, 0) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ngx_http_activity_fanout_send_snapshot(s->conn.fanout, l)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (s->has_pid) {
            ngx_http_activity_session_save(s, s->conn.conf->recovery);
        }

        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                  "activity: dashboard %V recovered %uz missed events, "
                  "user \"%V\"", &s->conn.connection->addr_text,
                  result->entries->elements - result->first, &s->user);

    ngx_http_activity_stat_add(s->conn.amcf->stats, resumes_recovered, 1);

    if (s->resumed(s, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    last = *from;

    /* checked by recoverable(): [id, [field, value, ...]] each */

    for (i = result->first; i < result->entries->elements; i++) {
        e = result->entries->element[i];
        id = e->element[0];
        fields = e->element[1];

        offset.data = (u_char *) id->str;
        offset.len = id->len;

        (void) ngx_http_activity_offset_parse(offset.data, offset.len, &last);

        if (ngx_http_activity_fanout_replay(s->conn.fanout, l,
                                            (u_char *) fields->element[1]->str,
                                            fields->element[1]->len, &offset)
            == NGX_ERROR)
        {
            return NGX_ERROR;
        }
    }

    ngx_http_activity_fanout_release(s->conn.fanout, l, &last);

    if (s->has_pid) {
        ngx_http_activity_session_save(s, s->conn.conf->recovery);
    }

    return NGX_OK;
}


/*
 * NGX_OK when the whole gap is in hand: the offset's own entry still in
 * the stream, at most recovery_max entries after it, and no more bytes
 * than half the connection's queue; for Socket.IO the session record
 * (written at most a window ago) of the same user, whose rooms come
 * back; for the plain protocol the offset itself at most a window old.
 */

static ngx_int_t
ngx_http_activity_session_recoverable(ngx_http_activity_session_t *s,
    ngx_http_activity_resume_result_t *result,
    ngx_http_activity_offset_t *from)
{
    size_t                         i, bytes;
    redisReply                    *e, *entries;
    ngx_http_activity_offset_t     off;
    ngx_http_activity_loc_conf_t  *conf;

    conf = s->conn.conf;
    entries = result->entries;

    if (result->rc != NGX_OK || !result->found || entries == NULL
        || entries->elements - result->first > conf->recovery_max
        || s->conn.listener.held_overflow)
    {
        return NGX_DECLINED;
    }

    if (!s->has_pid && !ngx_http_activity_session_in_window(s, from)) {
        return NGX_DECLINED;
    }

    bytes = 0;

    for (i = result->first; i < entries->elements; i++) {
        e = entries->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
            || e->element[0]->type != REDIS_REPLY_STRING
            || e->element[1]->type != REDIS_REPLY_ARRAY
            || e->element[1]->elements < 2
            || e->element[1]->element[1]->type != REDIS_REPLY_STRING
            || ngx_http_activity_offset_parse(
                   (u_char *) e->element[0]->str, e->element[0]->len, &off)
               != NGX_OK
            || ngx_http_activity_offset_cmp(&off, from) <= 0)
        {
            return NGX_DECLINED;
        }

        /* an event and its room's copy, with their frames */

        bytes += 2 * (e->element[1]->element[1]->len + 64);
    }

    if (bytes > conf->dashboard_queue / 2) {
        return NGX_DECLINED;
    }

    /* last: the rooms come back only with the session */

    if (s->has_pid) {
        return ngx_http_activity_session_restore(s, &result->record);
    }

    return NGX_OK;
}


/* an offset at most the recovery window old by this clock (plain) */

static ngx_uint_t
ngx_http_activity_session_in_window(ngx_http_activity_session_t *s,
    ngx_http_activity_offset_t *off)
{
    uint64_t     now;
    ngx_time_t  *tp;

    tp = ngx_timeofday();
    now = (uint64_t) tp->sec * 1000 + tp->msec;

    return off->ms >= now || now - off->ms <= s->conn.conf->recovery;
}


/* the session record: {"user":"…","rooms":["…",…]} of the same user */

static ngx_int_t
ngx_http_activity_session_restore(ngx_http_activity_session_t *s,
    ngx_str_t *record)
{
    size_t       i;
    json_t      *root, *rooms, *room;
    ngx_uint_t   mask, bit;
    const char  *user, *v;

    if (record->data == NULL) {
        return NGX_DECLINED;
    }

    root = json_loadb((const char *) record->data, record->len, 0, NULL);

    user = json_string_value(json_object_get(root, "user"));
    rooms = json_object_get(root, "rooms");

    if (user == NULL || !json_is_array(rooms)
        || ngx_strlen(user) != s->user.len
        || ngx_strncmp(user, s->user.data, s->user.len) != 0)
    {
        json_decref(root);
        return NGX_DECLINED;
    }

    mask = 0;

    json_array_foreach(rooms, i, room) {
        v = json_string_value(room);
        bit = v ? ngx_http_activity_fanout_room((u_char *) v, ngx_strlen(v))
                : 0;
        mask |= bit;
    }

    json_decref(root);

    s->conn.listener.rooms |= mask;

    return NGX_OK;
}
