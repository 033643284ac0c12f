
/*
 * The snapshot a dashboard gets first: the recent events and the latest
 * stats, one frame per protocol (and its compressed twin) kept until the
 * next event or stats change.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_activity_fanout_internal.h"


static ngx_http_activity_frame_t *ngx_http_activity_fanout_build_snapshot(
    ngx_http_activity_fanout_t *f, ngx_uint_t protocol);


static ngx_str_t  ngx_http_activity_snapshot_event = ngx_string("snapshot");


ngx_int_t
ngx_http_activity_fanout_send_snapshot(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l)
{
    ngx_http_activity_frame_t  *frame;

    frame = f->snapshot[l->protocol];

    if (frame == NULL) {
        frame = ngx_http_activity_fanout_build_snapshot(f, l->protocol);
        if (frame == NULL) {
            return NGX_ERROR;
        }

        /* kept until the next event or stats change */

        f->snapshot[l->protocol] = frame;
    }

    frame = ngx_http_activity_fanout_pick(f, l, frame,
                                          &f->snapshot_z[l->protocol]);

    return ngx_http_activity_fanout_send(f, l, frame);
}


ngx_int_t
ngx_http_activity_fanout_remember(ngx_http_activity_fanout_t *f,
    u_char *data, size_t len)
{
    ngx_str_t  *slot;

    slot = &f->recent[f->recent_next];

    if (slot->data) {
        ngx_free(slot->data);
        slot->data = NULL;
    }

    slot->data = ngx_alloc(len, f->log);
    if (slot->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(slot->data, data, len);
    slot->len = len;

    f->recent_next = (f->recent_next + 1) % NGX_HTTP_ACTIVITY_RECENT_MAX;

    if (f->recent_count < NGX_HTTP_ACTIVITY_RECENT_MAX) {
        f->recent_count++;
    }

    return NGX_OK;
}


void
ngx_http_activity_fanout_forget(ngx_http_activity_fanout_t *f)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_ACTIVITY_RECENT_MAX; i++) {
        if (f->recent[i].data) {
            ngx_free(f->recent[i].data);
            f->recent[i].data = NULL;
        }
    }

    f->recent_next = 0;
    f->recent_count = 0;
}


void
ngx_http_activity_fanout_invalidate(ngx_http_activity_fanout_t *f)
{
    ngx_uint_t  p;

    for (p = 0; p <= NGX_HTTP_ACTIVITY_PROTOCOLS; p++) {
        if (f->snapshot[p]) {
            ngx_http_activity_frame_release(f->snapshot[p]);
            f->snapshot[p] = NULL;
        }

        if (f->snapshot_z[p]) {
            ngx_http_activity_frame_release(f->snapshot_z[p]);
            f->snapshot_z[p] = NULL;
        }
    }
}


/* {"events":[newest first…],"stats":{…}|null} */

static ngx_http_activity_frame_t *
ngx_http_activity_fanout_build_snapshot(ngx_http_activity_fanout_t *f,
    ngx_uint_t protocol)
{
    u_char                     *p;
    size_t                      len;
    ngx_str_t                   data, offset;
    ngx_uint_t                  i, k;
    ngx_http_activity_frame_t  *frame;

    len = sizeof("{\"events\":[],\"stats\":null}") - 1;

    for (i = 0; i < f->recent_count; i++) {
        len += f->recent[i].len + 1;
    }

    if (f->stats.data) {
        len += f->stats.len;
    }

    p = ngx_alloc(len, f->log);
    if (p == NULL) {
        return NULL;
    }

    data.data = p;

    p = ngx_cpymem(p, "{\"events\":[", sizeof("{\"events\":[") - 1);

    for (i = 0; i < f->recent_count; i++) {
        k = (f->recent_next + NGX_HTTP_ACTIVITY_RECENT_MAX - 1 - i)
            % NGX_HTTP_ACTIVITY_RECENT_MAX;

        if (i) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, f->recent[k].data, f->recent[k].len);
    }

    p = ngx_cpymem(p, "],\"stats\":", sizeof("],\"stats\":") - 1);

    if (f->stats.data) {
        p = ngx_cpymem(p, f->stats.data, f->stats.len);

    } else {
        p = ngx_cpymem(p, "null", sizeof("null") - 1);
    }

    *p++ = '}';

    data.len = p - data.data;

    offset.data = f->last_offset;
    offset.len = f->last_offset_len;

    frame = ngx_http_activity_fanout_event_frame(protocol,
                                          &ngx_http_activity_snapshot_event,
                                          &data, &offset, f->log);
    ngx_free(data.data);

    return frame;
}
