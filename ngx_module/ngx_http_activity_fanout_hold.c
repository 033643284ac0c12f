
/*
 * Resume holding: while a listener's resume is read from the stream,
 * what is broadcast to it is kept; the gap is replayed to it alone, then
 * what was kept is released, none twice.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>

#include "ngx_http_activity_fanout_internal.h"


/*
 * From now until release, what is broadcast to l is kept, at most max
 * frames: more than that and the resume is given up (held_overflow).
 * The array grows as frames come (a resume takes a round trip to Redis:
 * usually few), so many reconnecting at once do not each reserve max.
 */

ngx_int_t
ngx_http_activity_fanout_hold(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l, ngx_uint_t max)
{
    if (l->holding) {
        return NGX_OK;
    }

    l->held = NULL;
    l->held_count = 0;
    l->held_size = 0;
    l->held_max = max;
    l->held_overflow = 0;
    l->holding = 1;

    return NGX_OK;
}


void
ngx_http_activity_fanout_hold_frame(ngx_http_activity_listener_t *l,
    ngx_http_activity_frame_t *frame, ngx_http_activity_offset_t *off,
    ngx_uint_t room)
{
    ngx_uint_t                 size;
    ngx_http_activity_held_t  *h;

    if (l->held_overflow) {
        return;
    }

    if (l->held_count == l->held_size) {
        size = l->held_size ? l->held_size * 2 : 16;
        size = ngx_min(size, l->held_max);

        if (l->held_count == size) {
            l->held_overflow = 1;
            return;
        }

        h = ngx_alloc(size * sizeof(ngx_http_activity_held_t),
                      l->connection->log);
        if (h == NULL) {
            l->held_overflow = 1;
            return;
        }

        if (l->held) {
            ngx_memcpy(h, l->held,
                       l->held_count * sizeof(ngx_http_activity_held_t));
            ngx_free(l->held);
        }

        l->held = h;
        l->held_size = size;
    }

    h = &l->held[l->held_count++];

    h->frame = frame;
    h->room = room;
    frame->refs++;

    if (off) {
        h->offset = *off;
        h->has_offset = 1;

    } else {
        h->has_offset = 0;
    }
}


/*
 * One event of the gap, read back from the stream, sent to l alone:
 * "activity:new" and, when l is in the event's room, the room's event,
 * both with the event's offset.  NGX_DECLINED: l has failed.
 */

ngx_int_t
ngx_http_activity_fanout_replay(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l, u_char *text, size_t len,
    ngx_str_t *offset)
{
    char                       *dump;
    json_t                     *event;
    ngx_int_t                   rc;
    ngx_str_t                   data;
    ngx_uint_t                  bit;
    ngx_http_activity_room_t   *room;
    ngx_http_activity_frame_t  *frame;

    event = json_loadb((const char *) text, len, 0, NULL);

    if (!json_is_object(event)) {

        /* not an event: the live feed skipped it too */

        json_decref(event);
        return NGX_OK;
    }

    /* as live: an "offset" member is the worker's, never the event's */

    json_object_del(event, "offset");

    dump = json_dumps(event, JSON_COMPACT);
    if (dump == NULL) {
        json_decref(event);
        return NGX_ERROR;
    }

    data.data = (u_char *) dump;
    data.len = ngx_strlen(dump);

    room = ngx_http_activity_fanout_room_of(
                     json_string_value(json_object_get(event, "eventType")),
                     &bit);

    rc = NGX_ERROR;

    frame = ngx_http_activity_fanout_event_frame(l->protocol,
                                                 &ngx_http_activity_new_event,
                                                 &data, offset, f->log);
    if (frame == NULL) {
        goto done;
    }

    rc = ngx_http_activity_fanout_send(f, l, frame);
    ngx_http_activity_frame_release(frame);

    if (rc != NGX_OK || room == NULL || !(l->rooms & bit)) {
        goto done;
    }

    frame = ngx_http_activity_fanout_event_frame(l->protocol, &room->event,
                                                 &data, offset, f->log);
    if (frame == NULL) {
        rc = NGX_ERROR;
        goto done;
    }

    rc = ngx_http_activity_fanout_send(f, l, frame);
    ngx_http_activity_frame_release(frame);

done:

    free(dump);
    json_decref(event);

    return rc;
}


/*
 * Ends holding.  last: the newest offset the client has now (its own or
 * the replay's last); held frames after it are sent (a room's only if
 * l is in the room now), those up to it dropped, and so are later
 * broadcasts up to it.  last NULL: every held
 * frame is dropped (a snapshot replaces them).
 */

void
ngx_http_activity_fanout_release(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l, ngx_http_activity_offset_t *last)
{
    ngx_uint_t                 i;
    ngx_http_activity_held_t  *h;

    if (!l->holding) {
        return;
    }

    l->holding = 0;

    for (i = 0; i < l->held_count; i++) {
        h = &l->held[i];

        if (last
            && (h->room == 0 || (l->rooms & h->room))
            && (!h->has_offset
                || ngx_http_activity_offset_cmp(&h->offset, last) > 0))
        {
            (void) ngx_http_activity_fanout_send(f, l, h->frame);
        }

        ngx_http_activity_frame_release(h->frame);
    }

    if (l->held) {
        ngx_free(l->held);
        l->held = NULL;
    }

    l->held_count = 0;
    l->held_size = 0;

    if (last) {
        l->floor = *last;
        l->has_floor = 1;
    }
}
