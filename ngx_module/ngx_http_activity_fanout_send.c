
/*
 * What a listener is sent: event frames, the compressed twin a
 * permessage-deflate listener gets, the rooms, stream offsets, and the
 * gathered writes (a listener that got frames is flushed once, at the
 * end of the event loop iteration).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_activity_fanout_internal.h"
#include "ngx_http_activity_status.h"
#include "ngx_http_activity_ws.h"


static void ngx_http_activity_fanout_fail(ngx_http_activity_listener_t *l,
    ngx_uint_t code);


static ngx_http_activity_room_t  ngx_http_activity_rooms[] = {
    { "dashboard:user-activity", "USER_LOGIN", ngx_string("user:login") },
    { "dashboard:user-activity", "USER_LOGOUT", ngx_string("user:logout") },
    { "dashboard:product-activity", "PRODUCT_CREATED",
      ngx_string("product:created") },
    { "dashboard:api-activity", "API_CALL", ngx_string("api:call") },
    { NULL, NULL, ngx_null_string }
};


ngx_str_t  ngx_http_activity_new_event = ngx_string("activity:new");


/*
 * Queues a frame for one listener; it leaves at the end of this loop
 * iteration together with whatever else the listener gets meanwhile.
 */

ngx_int_t
ngx_http_activity_fanout_send(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l, ngx_http_activity_frame_t *frame)
{
    if (l->failed) {
        return NGX_DECLINED;
    }

    if (ngx_http_activity_outq_push(&l->out, frame) != NGX_OK) {

        /* a burst larger than the queue: write now what the socket takes */

        if (ngx_http_activity_outq_flush(&l->out, l->connection)
            == NGX_ERROR)
        {
            ngx_http_activity_fanout_fail(l, 0);
            return NGX_DECLINED;
        }

        if (ngx_http_activity_outq_push(&l->out, frame) != NGX_OK) {

            /* a client that does not read: drop it, never slow the others */

            ngx_http_activity_fanout_fail(l, NGX_HTTP_ACTIVITY_WS_POLICY);
            return NGX_DECLINED;
        }
    }

    if (!l->is_dirty) {
        ngx_queue_insert_tail(&f->dirty, &l->dirty);
        l->is_dirty = 1;
    }

    if (!f->flush.posted) {
        ngx_post_event(&f->flush, &ngx_posted_events);
    }

    return NGX_OK;
}


ngx_http_activity_deflate_t *
ngx_http_activity_fanout_deflate(ngx_http_activity_fanout_t *f)
{
    return &f->deflate;
}


/*
 * The frame a listener gets: the plain one, or for a listener that
 * negotiated permessage-deflate its compressed twin, made on first need
 * into *zframe (the plain frame itself, referenced, when compressing
 * does not pay).  A listener whose window is smaller than the message
 * gets the plain frame: the twin was made with the largest window.
 */

ngx_http_activity_frame_t *
ngx_http_activity_fanout_pick(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l, ngx_http_activity_frame_t *plain,
    ngx_http_activity_frame_t **zframe)
{
    ngx_http_activity_frame_t  *frame;

    if (l->deflate_max == 0
        || (size_t) (plain->len - (plain->payload - plain->data))
           > l->deflate_max)
    {
        return plain;
    }

    if (*zframe == NULL) {
        frame = ngx_http_activity_deflate_frame(&f->deflate, plain);

        if (frame == NULL) {
            frame = plain;
            frame->refs++;

        } else {
            ngx_http_activity_stat_add(f->counters, frames_deflated, 1);
        }

        *zframe = frame;
    }

    return *zframe;
}


/*
 * websocket: {"event":"NAME","data":DATA}
 * socketio:  42/dashboard,["NAME",DATA]
 *
 * and with an offset (Socket.IO's connection state recovery puts it
 * last among the arguments):
 *
 * websocket: {"event":"NAME","data":DATA,"offset":"OFFSET"}
 * socketio:  42/dashboard,["NAME",DATA,"OFFSET"]
 */

ngx_http_activity_frame_t *
ngx_http_activity_fanout_event_frame(ngx_uint_t protocol, ngx_str_t *name,
    ngx_str_t *data, ngx_str_t *offset, ngx_log_t *log)
{
    ngx_str_t   parts[7];
    ngx_uint_t  n;

    if (protocol == NGX_HTTP_ACTIVITY_SOCKETIO) {
        ngx_str_set(&parts[0], "42" NGX_HTTP_ACTIVITY_SIO_NSP ",[\"");
        ngx_str_set(&parts[2], "\",");
        ngx_str_set(&parts[4], ",\"");
        ngx_str_set(&parts[6], "\"]");

    } else {
        ngx_str_set(&parts[0], "{\"event\":\"");
        ngx_str_set(&parts[2], "\",\"data\":");
        ngx_str_set(&parts[4], ",\"offset\":\"");
        ngx_str_set(&parts[6], "\"}");
    }

    parts[1] = *name;
    parts[3] = *data;

    if (offset && offset->len) {
        parts[5] = *offset;
        n = 7;

    } else {
        parts[4] = parts[6];
        parts[4].data++;
        parts[4].len--;
        n = 5;
    }

    return ngx_http_activity_frame_text(parts, n, log);
}


/* the room bit of a room name, 0 when there is no such room */

ngx_uint_t
ngx_http_activity_fanout_room(u_char *name, size_t len)
{
    ngx_uint_t                 i, bit;
    ngx_http_activity_room_t  *room;

    bit = 1;

    for (i = 0, room = ngx_http_activity_rooms; room->room; i++, room++) {
        if (i && ngx_strcmp(room->room, room[-1].room) != 0) {
            bit <<= 1;
        }

        if (ngx_strlen(room->room) == len
            && ngx_strncmp(room->room, name, len) == 0)
        {
            return bit;
        }
    }

    return 0;
}


const char *
ngx_http_activity_fanout_room_name(ngx_uint_t bit)
{
    ngx_http_activity_room_t  *room;

    for (room = ngx_http_activity_rooms; room->room; room++) {
        if (ngx_http_activity_fanout_room((u_char *) room->room,
                                          ngx_strlen(room->room))
            == bit)
        {
            return room->room;
        }
    }

    return NULL;
}


ngx_http_activity_room_t *
ngx_http_activity_fanout_room_of(const char *type, ngx_uint_t *bit)
{
    ngx_http_activity_room_t  *room;

    if (type == NULL) {
        return NULL;
    }

    for (room = ngx_http_activity_rooms; room->room; room++) {
        if (ngx_strcmp(room->type, type) == 0) {
            *bit = ngx_http_activity_fanout_room((u_char *) room->room,
                                                 ngx_strlen(room->room));
            return room;
        }
    }

    return NULL;
}


void
ngx_http_activity_fanout_flush(ngx_event_t *ev)
{
    ngx_http_activity_fanout_t *f = ev->data;

    ngx_queue_t                   *q;
    ngx_http_activity_listener_t  *l;

    while (!ngx_queue_empty(&f->dirty)) {
        q = ngx_queue_head(&f->dirty);
        ngx_queue_remove(q);

        l = ngx_queue_data(q, ngx_http_activity_listener_t, dirty);
        l->is_dirty = 0;

        if (l->failed) {
            continue;
        }

        if (ngx_http_activity_outq_flush(&l->out, l->connection)
            == NGX_ERROR)
        {
            ngx_http_activity_fanout_fail(l, 0);
        }
    }
}


/*
 * The listener's owner closes it from a posted event: never from inside a
 * broadcast, whose loop still walks the list.
 */

static void
ngx_http_activity_fanout_fail(ngx_http_activity_listener_t *l,
    ngx_uint_t code)
{
    if (l->failed) {
        return;
    }

    l->failed = 1;
    l->fail_code = code;
    l->fail(l, code);
}


/* "<ms>-<seq>", both decimal without sign or leading junk, 64-bit */

ngx_int_t
ngx_http_activity_offset_parse(u_char *p, size_t len,
    ngx_http_activity_offset_t *o)
{
    u_char    *end;
    uint64_t  *n, v;
    ngx_uint_t part, digits;

    if (len == 0 || len > NGX_HTTP_ACTIVITY_OFFSET_LEN) {
        return NGX_ERROR;
    }

    end = p + len;
    n = &o->ms;
    part = 0;
    digits = 0;
    v = 0;

    for ( /* void */ ; p < end; p++) {

        if (*p == '-' && part == 0 && digits) {
            *n = v;
            n = &o->seq;
            part = 1;
            digits = 0;
            v = 0;
            continue;
        }

        if (*p < '0' || *p > '9') {
            return NGX_ERROR;
        }

        if (v > (UINT64_MAX - (*p - '0')) / 10) {
            return NGX_ERROR;
        }

        v = v * 10 + (*p - '0');
        digits++;
    }

    if (part != 1 || digits == 0) {
        return NGX_ERROR;
    }

    *n = v;

    return NGX_OK;
}


ngx_int_t
ngx_http_activity_offset_cmp(ngx_http_activity_offset_t *a,
    ngx_http_activity_offset_t *b)
{
    if (a->ms != b->ms) {
        return a->ms < b->ms ? -1 : 1;
    }

    if (a->seq != b->seq) {
        return a->seq < b->seq ? -1 : 1;
    }

    return 0;
}
