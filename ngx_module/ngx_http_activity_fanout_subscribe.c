
/*
 * The subscriber: after every (re)connect it reads what was published
 * while it was away, the stream's newest offset, the recent events and
 * the latest stats, then SUBSCRIBEs to the events and stats channels.
 * A message becomes at most one frame per protocol and kind, and at most
 * one compressed twin of it for the connections that negotiated
 * permessage-deflate; every connection that gets it holds a reference to
 * that one buffer.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>

#include "ngx_http_activity_fanout_internal.h"
#include "ngx_http_activity_status.h"
#include "../common/activity_batch.h"
#include "../common/activity_event.h"


static void ngx_http_activity_fanout_recent_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_activity_fanout_stats_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_activity_fanout_last_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_activity_fanout_gap_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_activity_fanout_message(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_activity_fanout_events(ngx_http_activity_fanout_t *f,
    u_char *data, size_t len);
static ngx_int_t ngx_http_activity_fanout_batch(
    ngx_http_activity_fanout_t *f, u_char *data, size_t len);
static void ngx_http_activity_fanout_event(ngx_http_activity_fanout_t *f,
    json_t *event);
static void ngx_http_activity_fanout_deliver(ngx_http_activity_fanout_t *f,
    ngx_str_t *data, ngx_str_t *offset, ngx_http_activity_offset_t *off,
    const char *type);
static void ngx_http_activity_fanout_stats(ngx_http_activity_fanout_t *f,
    u_char *data, size_t len);
static void ngx_http_activity_fanout_broadcast(ngx_http_activity_fanout_t *f,
    ngx_str_t *name, ngx_str_t *data, ngx_uint_t room, ngx_str_t *offset,
    ngx_http_activity_offset_t *off);
static ngx_int_t ngx_http_activity_fanout_is(redisReply *reply,
    const char *s);


/* most events a resubscribe sends to the connected dashboards */
#define NGX_HTTP_ACTIVITY_GAP_MAX        1000


static ngx_str_t  ngx_http_activity_stats_event = ngx_string("stats:update");


void
ngx_http_activity_fanout_on_ready(ngx_http_activity_redis_t *rd)
{
    ngx_http_activity_fanout_t *f = rd->data;

    ngx_http_activity_main_conf_t  *amcf = f->amcf;

    /*
     * the snapshot first, then the channels: a RESP2 connection in
     * subscribe mode takes no other command
     */

    /*
     * after an outage, what was published meanwhile, from the last
     * offset heard: the connected dashboards get it before the live
     * events, as they would have
     */

    if (f->last_offset_len
        && redisAsyncCommand(rd->ac, ngx_http_activity_fanout_gap_reply, f,
                             "XRANGE %b %b + COUNT %d",
                             amcf->stream_key.data, amcf->stream_key.len,
                             f->last_offset, f->last_offset_len,
                             NGX_HTTP_ACTIVITY_GAP_MAX + 2)
           != REDIS_OK)
    {
        ngx_log_error(NGX_LOG_ERR, f->log, 0,
                      "activity: cannot subscribe to redis channels");
        ngx_http_activity_redis_drop(rd);
        return;
    }

    /*
     * the stream's newest offset before the recent list: an event in
     * between is then at worst sent twice to a resumed client, never
     * missed
     */

    if (redisAsyncCommand(rd->ac, ngx_http_activity_fanout_last_reply, f,
                          "XREVRANGE %b + - COUNT 1",
                          amcf->stream_key.data, amcf->stream_key.len)
        != REDIS_OK
        || redisAsyncCommand(rd->ac, ngx_http_activity_fanout_recent_reply,
                             f, "LRANGE %b 0 %d", amcf->recent_key.data,
                             amcf->recent_key.len,
                             NGX_HTTP_ACTIVITY_RECENT_MAX - 1)
           != REDIS_OK
        || redisAsyncCommand(rd->ac, ngx_http_activity_fanout_stats_reply, f,
                             "GET %b", amcf->stats_key.data,
                             amcf->stats_key.len)
           != REDIS_OK
        || redisAsyncCommand(rd->ac, ngx_http_activity_fanout_message, f,
                             "SUBSCRIBE %b %b", amcf->events_channel.data,
                             amcf->events_channel.len,
                             amcf->stats_channel.data,
                             amcf->stats_channel.len)
           != REDIS_OK)
    {
        ngx_log_error(NGX_LOG_ERR, f->log, 0,
                      "activity: cannot subscribe to redis channels");
        ngx_http_activity_redis_drop(rd);
        return;
    }

    ngx_http_activity_redis_send(rd);
}


static void
ngx_http_activity_fanout_recent_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_fanout_t *f = privdata;

    size_t       i;
    redisReply  *reply = r;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    /*
     * the list is the truth after a reconnect: what was remembered before
     * is in it already (or expired), so start from it alone
     */

    ngx_http_activity_fanout_forget(f);

    /* the list is newest first; remember oldest first */

    for (i = reply->elements; i > 0; i--) {
        if (reply->element[i - 1]->type == REDIS_REPLY_STRING) {
            (void) ngx_http_activity_fanout_remember(f,
                                (u_char *) reply->element[i - 1]->str,
                                reply->element[i - 1]->len);
        }
    }

    ngx_http_activity_fanout_invalidate(f);
}


static void
ngx_http_activity_fanout_stats_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_fanout_t *f = privdata;

    redisReply  *reply = r;

    if (reply == NULL || reply->type != REDIS_REPLY_STRING) {
        return;
    }

    ngx_http_activity_fanout_stats(f, (u_char *) reply->str, reply->len);
}


/*
 * The stream's newest entry: a snapshot made before the next event
 * tells its reader to resume from there.  No stream (yet): no offset.
 */

static void
ngx_http_activity_fanout_last_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_fanout_t *f = privdata;

    redisReply                  *reply = r, *id;
    ngx_http_activity_offset_t   off;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    f->last_offset_len = 0;

    if (reply->elements != 1
        || reply->element[0]->type != REDIS_REPLY_ARRAY
        || reply->element[0]->elements < 1)
    {
        ngx_http_activity_fanout_invalidate(f);
        return;
    }

    id = reply->element[0]->element[0];

    if (id->type == REDIS_REPLY_STRING
        && ngx_http_activity_offset_parse((u_char *) id->str, id->len, &off)
           == NGX_OK)
    {
        ngx_memcpy(f->last_offset, id->str, id->len);
        f->last_offset_len = id->len;
    }

    ngx_http_activity_fanout_invalidate(f);
}


/*
 * The events published while the subscriber was away: the entry of the
 * last offset heard first (else the stream does not reach back that
 * far, and nothing is sent), then each as if heard live, in order.  A
 * gap longer than NGX_HTTP_ACTIVITY_GAP_MAX is not sent either.
 */

static void
ngx_http_activity_fanout_gap_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_fanout_t *f = privdata;

    size_t       i;
    json_t      *event;
    redisReply  *reply = r, *e, *id, *fields;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    e = reply->elements ? reply->element[0] : NULL;

    if (e == NULL || e->type != REDIS_REPLY_ARRAY || e->elements < 1
        || e->element[0]->type != REDIS_REPLY_STRING
        || (size_t) e->element[0]->len != f->last_offset_len
        || ngx_strncmp(e->element[0]->str, f->last_offset,
                       f->last_offset_len) != 0)
    {
        ngx_log_error(NGX_LOG_WARN, f->log, 0,
                      "activity: the events published while the "
                      "subscriber was away are no longer in the stream: "
                      "connected dashboards miss them");
        return;
    }

    if (reply->elements - 1 > NGX_HTTP_ACTIVITY_GAP_MAX) {
        ngx_log_error(NGX_LOG_WARN, f->log, 0,
                      "activity: more than %d events published while the "
                      "subscriber was away: connected dashboards miss "
                      "them", NGX_HTTP_ACTIVITY_GAP_MAX);
        return;
    }

    for (i = 1; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
            || e->element[1]->type != REDIS_REPLY_ARRAY
            || e->element[1]->elements < 2
            || e->element[1]->element[1]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        id = e->element[0];
        fields = e->element[1];

        if (id->type != REDIS_REPLY_STRING) {
            continue;
        }

        event = json_loadb(fields->element[1]->str, fields->element[1]->len,
                           0, NULL);

        if (json_is_object(event)
            && json_object_set_new(event, "offset",
                                   json_stringn(id->str, id->len))
               == 0)
        {
            ngx_http_activity_fanout_event(f, event);
        }

        json_decref(event);
    }
}


static void
ngx_http_activity_fanout_message(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_fanout_t *f = privdata;

    redisReply                     *reply = r, *channel, *payload;
    ngx_http_activity_main_conf_t  *amcf;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 3)
    {
        return;
    }

    /* both channels subscribed: the subscriber works, watch it from now */

    if (ngx_http_activity_fanout_is(reply->element[0], "subscribe")) {
        if (reply->element[2]->type == REDIS_REPLY_INTEGER
            && reply->element[2]->integer == 2)
        {
            ngx_http_activity_redis_healthy(&f->redis);
            ngx_http_activity_redis_start_ping(&f->redis);
        }

        return;
    }

    if (!ngx_http_activity_fanout_is(reply->element[0], "message")) {
        return;
    }

    channel = reply->element[1];
    payload = reply->element[2];

    if (channel->type != REDIS_REPLY_STRING
        || payload->type != REDIS_REPLY_STRING)
    {
        return;
    }

    amcf = f->amcf;
    ngx_http_activity_stat_add(f->counters, pubsub_messages, 1);

    if ((size_t) channel->len == amcf->events_channel.len
        && ngx_strncmp(channel->str, amcf->events_channel.data,
                       channel->len) == 0)
    {
        ngx_http_activity_fanout_events(f, (u_char *) payload->str,
                                        payload->len);
        return;
    }

    if ((size_t) channel->len == amcf->stats_channel.len
        && ngx_strncmp(channel->str, amcf->stats_channel.data,
                       channel->len) == 0)
    {
        ngx_http_activity_fanout_stats(f, (u_char *) payload->str,
                                       payload->len);
        ngx_http_activity_fanout_broadcast(f, &ngx_http_activity_stats_event,
                                           &f->stats, 0, NULL, NULL);
    }
}


/*
 * A JSON array of events (or one event object).  Duplicate keys are
 * taken (the last one wins): the worker validated every event, and the
 * "offset" it appends must win over one an application put there.
 */

static void
ngx_http_activity_fanout_events(ngx_http_activity_fanout_t *f, u_char *data,
    size_t len)
{
    size_t        i;
    json_t       *root, *event;
    json_error_t  err;

    if (ngx_http_activity_fanout_batch(f, data, len) == NGX_OK) {
        return;
    }

    root = json_loadb((const char *) data, len, 0, &err);

    if (root == NULL) {
        ngx_log_error(NGX_LOG_WARN, f->log, 0,
                      "activity: ignored a message that is not JSON: %s",
                      err.text);
        return;
    }

    if (json_is_array(root)) {
        json_array_foreach(root, i, event) {
            ngx_http_activity_fanout_event(f, event);
        }

    } else {
        ngx_http_activity_fanout_event(f, root);
    }

    json_decref(root);
}


static void
ngx_http_activity_fanout_event(ngx_http_activity_fanout_t *f, json_t *event)
{
    char                        *text;
    u_char                       obuf[NGX_HTTP_ACTIVITY_OFFSET_LEN];
    ngx_str_t                    data, offset;
    const char                  *v;
    ngx_http_activity_offset_t   off, *poff;

    if (!json_is_object(event)) {
        return;
    }

    /*
     * the worker's "offset" (the event's stream entry id) goes with the
     * frames, not in the event; a message of an older worker has none
     */

    ngx_str_null(&offset);
    poff = NULL;

    v = json_string_value(json_object_get(event, "offset"));

    if (v && ngx_http_activity_offset_parse((u_char *) v, ngx_strlen(v),
                                            &off)
             == NGX_OK)
    {
        offset.len = ngx_strlen(v);
        offset.data = ngx_cpymem(obuf, v, offset.len) - offset.len;
        poff = &off;

        ngx_memcpy(f->last_offset, obuf, offset.len);
        f->last_offset_len = offset.len;

        json_object_del(event, "offset");
    }

    text = json_dumps(event, JSON_COMPACT);
    if (text == NULL) {
        return;
    }

    data.data = (u_char *) text;
    data.len = ngx_strlen(text);

    ngx_http_activity_fanout_deliver(f, &data, &offset, poff,
                       json_string_value(json_object_get(event, "eventType")));

    free(text);
}


/*
 * The usual message, without a JSON tree: each event's text as
 * published, its offset member cut (the frames carry it), which is what
 * jansson would dump of it (activity_batch.h says when; fuzzed in
 * fuzz/batch_scan.c). NGX_DECLINED, with nothing sent and the message
 * untouched: anything else, for the jansson path.
 */

static ngx_int_t
ngx_http_activity_fanout_batch(ngx_http_activity_fanout_t *f, u_char *data,
    size_t len)
{
    int                          n, i;
    u_char                       type[EVENT_TYPE_MAX + 1];
    ngx_str_t                    text, offset;
    activity_batch_event_t       ev[ACTIVITY_BATCH_MAX];
    ngx_http_activity_offset_t   off[ACTIVITY_BATCH_MAX], *poff;

    n = activity_batch_scan((char *) data, len, ev, ACTIVITY_BATCH_MAX);
    if (n < 0) {
        return NGX_DECLINED;
    }

    /* an offset the frames cannot carry stays in the event: jansson's */

    for (i = 0; i < n; i++) {
        if (ev[i].offset
            && ngx_http_activity_offset_parse((u_char *) ev[i].offset,
                                              ev[i].offset_len, &off[i])
               != NGX_OK)
        {
            return NGX_DECLINED;
        }
    }

    for (i = 0; i < n; i++) {
        activity_batch_close(&ev[i]);

        ngx_str_null(&offset);
        poff = NULL;

        if (ev[i].offset) {
            offset.data = (u_char *) ev[i].offset;
            offset.len = ev[i].offset_len;
            poff = &off[i];

            ngx_memcpy(f->last_offset, offset.data, offset.len);
            f->last_offset_len = offset.len;
        }

        text.data = (u_char *) ev[i].text;
        text.len = ev[i].len;

        if (ev[i].type) {
            *ngx_cpymem(type, ev[i].type, ev[i].type_len) = '\0';
        }

        ngx_http_activity_fanout_deliver(f, &text, &offset, poff,
                                         ev[i].type ? (char *) type : NULL);
    }

    return NGX_OK;
}


static void
ngx_http_activity_fanout_deliver(ngx_http_activity_fanout_t *f,
    ngx_str_t *data, ngx_str_t *offset, ngx_http_activity_offset_t *off,
    const char *type)
{
    ngx_uint_t                 bit;
    ngx_http_activity_room_t  *room;

    (void) ngx_http_activity_fanout_remember(f, data->data, data->len);
    ngx_http_activity_fanout_invalidate(f);

    ngx_http_activity_fanout_broadcast(f, &ngx_http_activity_new_event, data,
                                       0, offset, off);

    room = ngx_http_activity_fanout_room_of(type, &bit);

    if (room) {
        ngx_http_activity_fanout_broadcast(f, &room->event, data, bit,
                                           offset, off);
    }
}


static void
ngx_http_activity_fanout_stats(ngx_http_activity_fanout_t *f, u_char *data,
    size_t len)
{
    u_char  *copy;

    copy = ngx_alloc(len, f->log);
    if (copy == NULL) {
        return;
    }

    ngx_memcpy(copy, data, len);

    if (f->stats.data) {
        ngx_free(f->stats.data);
    }

    f->stats.data = copy;
    f->stats.len = len;

    ngx_http_activity_fanout_invalidate(f);
}


/*
 * One frame per protocol, made only if some listener speaks it; room 0
 * means every connected listener.  A listener resuming holds the frame
 * back; one that has just resumed skips what its replay already sent
 * (offsets up to its floor).
 */

static void
ngx_http_activity_fanout_broadcast(ngx_http_activity_fanout_t *f,
    ngx_str_t *name, ngx_str_t *data, ngx_uint_t room, ngx_str_t *offset,
    ngx_http_activity_offset_t *off)
{
    ngx_uint_t                     p;
    ngx_queue_t                   *q, *next;
    ngx_http_activity_frame_t     *frames[NGX_HTTP_ACTIVITY_PROTOCOLS + 1];
    ngx_http_activity_frame_t     *zframes[NGX_HTTP_ACTIVITY_PROTOCOLS + 1];
    ngx_http_activity_frame_t     *frame;
    ngx_http_activity_listener_t  *l;

    ngx_memzero(frames, sizeof(frames));
    ngx_memzero(zframes, sizeof(zframes));

    for (q = ngx_queue_head(&f->listeners);
         q != ngx_queue_sentinel(&f->listeners);
         q = next)
    {
        next = ngx_queue_next(q);
        l = ngx_queue_data(q, ngx_http_activity_listener_t, queue);

        if (off && l->has_floor) {
            if (ngx_http_activity_offset_cmp(off, &l->floor) <= 0) {
                continue;
            }

            /* one message's order is the stream's: nothing older follows */

            l->has_floor = 0;
        }

        /*
         * a listener resuming holds every room's frames: its rooms may
         * come back with its session only when the gap is read
         */

        if (room && !(l->rooms & room) && !l->holding) {
            continue;
        }

        p = l->protocol;

        if (frames[p] == NULL) {
            frames[p] = ngx_http_activity_fanout_event_frame(p, name, data,
                                                             offset, f->log);
            if (frames[p] == NULL) {
                break;
            }

            ngx_http_activity_stat_add(f->counters, frames_broadcast, 1);
        }

        frame = ngx_http_activity_fanout_pick(f, l, frames[p], &zframes[p]);

        if (l->holding) {
            ngx_http_activity_fanout_hold_frame(l, frame, off, room);
            continue;
        }

        (void) ngx_http_activity_fanout_send(f, l, frame);
    }

    for (p = 0; p <= NGX_HTTP_ACTIVITY_PROTOCOLS; p++) {
        if (frames[p]) {
            ngx_http_activity_frame_release(frames[p]);
        }

        if (zframes[p]) {
            ngx_http_activity_frame_release(zframes[p]);
        }
    }
}


static ngx_int_t
ngx_http_activity_fanout_is(redisReply *reply, const char *s)
{
    return reply->type == REDIS_REPLY_STRING
           && (size_t) reply->len == ngx_strlen(s)
           && ngx_strncmp(reply->str, s, reply->len) == 0;
}
