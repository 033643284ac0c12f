
/*
 * The subscriber and the fan-out.
 *
 * Each nginx worker process holds one Redis connection that reads the
 * recent events and the latest stats, then SUBSCRIBEs to the events and
 * stats channels (again after every reconnect).  A message becomes at most
 * one frame per protocol and kind, and at most one compressed twin of it
 * for the connections that negotiated permessage-deflate; every
 * connection that gets it holds a reference to that one buffer.  Writes
 * are gathered: a listener that got frames is flushed once, at the end of
 * the event loop iteration.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <jansson.h>

#include "ngx_http_activity_fanout.h"
#include "ngx_http_activity_redis.h"
#include "ngx_http_activity_status.h"
#include "ngx_http_activity_ws.h"


#define NGX_HTTP_ACTIVITY_RECENT_MAX     50

/* most events a resubscribe sends to the connected dashboards */
#define NGX_HTTP_ACTIVITY_GAP_MAX        1000
#define NGX_HTTP_ACTIVITY_PROTOCOLS      2


typedef struct {
    const char                  *room;
    const char                  *type;      /* eventType */
    ngx_str_t                    event;     /* Socket.IO event name */
} ngx_http_activity_room_t;


struct ngx_http_activity_fanout_s {
    ngx_http_activity_redis_t    redis;
    ngx_http_activity_main_conf_t  *amcf;
    ngx_log_t                   *log;

    ngx_queue_t                  all;
    ngx_queue_t                  listeners;
    ngx_queue_t                  dirty;
    ngx_connection_t            *watcher;
    ngx_event_t                  flush;
    ngx_uint_t                   counts[NGX_HTTP_ACTIVITY_PROTOCOLS + 1];

    ngx_str_t                    recent[NGX_HTTP_ACTIVITY_RECENT_MAX];
    ngx_uint_t                   recent_next;   /* slot of the next one */
    ngx_uint_t                   recent_count;
    ngx_str_t                    stats;         /* data NULL: none yet */

    /* the newest offset heard: where a snapshot leaves its reader */
    u_char                       last_offset[NGX_HTTP_ACTIVITY_OFFSET_LEN];
    size_t                       last_offset_len;

    ngx_http_activity_frame_t   *snapshot[NGX_HTTP_ACTIVITY_PROTOCOLS + 1];
    /* the snapshot compressed, or the plain one when that is shorter */
    ngx_http_activity_frame_t   *snapshot_z[NGX_HTTP_ACTIVITY_PROTOCOLS + 1];

    ngx_http_activity_deflate_t  deflate;

    ngx_http_activity_stats_t   *counters;
};


static void ngx_http_activity_fanout_on_ready(ngx_http_activity_redis_t *rd);
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
static void ngx_http_activity_fanout_event(ngx_http_activity_fanout_t *f,
    json_t *event);
static void ngx_http_activity_fanout_stats(ngx_http_activity_fanout_t *f,
    u_char *data, size_t len);
static void ngx_http_activity_fanout_broadcast(ngx_http_activity_fanout_t *f,
    ngx_str_t *name, ngx_str_t *data, ngx_uint_t room, ngx_str_t *offset,
    ngx_http_activity_offset_t *off);
static ngx_http_activity_room_t *ngx_http_activity_fanout_room_of(
    const char *type, ngx_uint_t *bit);
static void ngx_http_activity_fanout_hold_frame(
    ngx_http_activity_listener_t *l, ngx_http_activity_frame_t *frame,
    ngx_http_activity_offset_t *off, ngx_uint_t room);
static ngx_int_t ngx_http_activity_fanout_remember(
    ngx_http_activity_fanout_t *f, u_char *data, size_t len);
static void ngx_http_activity_fanout_forget(ngx_http_activity_fanout_t *f);
static void ngx_http_activity_fanout_invalidate(ngx_http_activity_fanout_t *f);
static ngx_http_activity_frame_t *ngx_http_activity_fanout_build_snapshot(
    ngx_http_activity_fanout_t *f, ngx_uint_t protocol);
static ngx_http_activity_frame_t *ngx_http_activity_fanout_pick(
    ngx_http_activity_fanout_t *f, ngx_http_activity_listener_t *l,
    ngx_http_activity_frame_t *plain, ngx_http_activity_frame_t **zframe);
static void ngx_http_activity_fanout_flush(ngx_event_t *ev);
static ngx_int_t ngx_http_activity_fanout_watch(ngx_http_activity_fanout_t *f);
static void ngx_http_activity_fanout_shutdown(ngx_event_t *ev);
static void ngx_http_activity_fanout_unwatch(ngx_http_activity_fanout_t *f);
static void ngx_http_activity_fanout_fail(ngx_http_activity_listener_t *l,
    ngx_uint_t code);
static ngx_int_t ngx_http_activity_fanout_is(redisReply *reply,
    const char *s);


static ngx_http_activity_room_t  ngx_http_activity_rooms[] = {
    { "dashboard:user-activity", "USER_LOGIN", ngx_string("user:login") },
    { "dashboard:user-activity", "USER_LOGOUT", ngx_string("user:logout") },
    { "dashboard:product-activity", "PRODUCT_CREATED",
      ngx_string("product:created") },
    { "dashboard:api-activity", "API_CALL", ngx_string("api:call") },
    { NULL, NULL, ngx_null_string }
};


static ngx_str_t  ngx_http_activity_new_event = ngx_string("activity:new");
static ngx_str_t  ngx_http_activity_stats_event = ngx_string("stats:update");
static ngx_str_t  ngx_http_activity_snapshot_event = ngx_string("snapshot");


ngx_http_activity_fanout_t *
ngx_http_activity_fanout_create(ngx_cycle_t *cycle,
    ngx_http_activity_main_conf_t *amcf)
{
    ngx_http_activity_fanout_t  *f;

    f = ngx_pcalloc(cycle->pool, sizeof(ngx_http_activity_fanout_t));
    if (f == NULL) {
        return NULL;
    }

    f->amcf = amcf;
    f->log = cycle->log;
    f->counters = amcf->stats;

    ngx_queue_init(&f->all);
    ngx_queue_init(&f->listeners);
    ngx_queue_init(&f->dirty);

    ngx_http_activity_deflate_init(&f->deflate, cycle->log);

    if (ngx_http_activity_fanout_watch(f) != NGX_OK) {
        return NULL;
    }

    f->flush.handler = ngx_http_activity_fanout_flush;
    f->flush.data = f;
    f->flush.log = cycle->log;

    ngx_http_activity_redis_init(&f->redis, &amcf->redis, cycle->log,
                                 "subscriber");

    f->redis.on_ready = ngx_http_activity_fanout_on_ready;
    f->redis.data = f;
    f->redis.ping_interval = amcf->ping_interval;
    f->redis.ping_timeout = amcf->ping_timeout;

    if (f->counters) {
        f->redis.stat_reconnects = &f->counters->subscriber_reconnects;

        if (ngx_http_activity_status_slot(f->counters, cycle->log)) {
            f->redis.stat_up = &ngx_http_activity_proc_stats->subscriber_up;
            f->redis.stat_master =
                              ngx_http_activity_proc_stats->subscriber_master;
        }
    }

    ngx_http_activity_redis_connect(&f->redis);

    return f;
}


void
ngx_http_activity_fanout_destroy(ngx_http_activity_fanout_t *f)
{
    if (f->flush.posted) {
        ngx_delete_posted_event(&f->flush);
    }

    ngx_http_activity_fanout_unwatch(f);
    ngx_http_activity_redis_close(&f->redis);

    ngx_http_activity_fanout_invalidate(f);
    ngx_http_activity_fanout_forget(f);

    if (f->stats.data) {
        ngx_free(f->stats.data);
        f->stats.data = NULL;
    }

    ngx_http_activity_deflate_done(&f->deflate);
}


void
ngx_http_activity_fanout_attach(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l)
{
    if (!l->attached) {
        ngx_queue_insert_tail(&f->all, &l->all);
        l->attached = 1;
    }
}


void
ngx_http_activity_fanout_detach(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l)
{
    ngx_http_activity_fanout_leave(f, l);

    if (l->attached) {
        ngx_queue_remove(&l->all);
        l->attached = 0;
    }
}


void
ngx_http_activity_fanout_join(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l)
{
    if (l->joined) {
        return;
    }

    ngx_queue_insert_tail(&f->listeners, &l->queue);
    l->joined = 1;
    f->counts[l->protocol]++;
}


void
ngx_http_activity_fanout_leave(ngx_http_activity_fanout_t *f,
    ngx_http_activity_listener_t *l)
{
    if (l->joined) {
        ngx_queue_remove(&l->queue);
        l->joined = 0;
        f->counts[l->protocol]--;
    }

    if (l->is_dirty) {
        ngx_queue_remove(&l->dirty);
        l->is_dirty = 0;
    }

    if (l->holding) {
        ngx_http_activity_fanout_release(f, l, NULL);
    }

    /* nothing more is queued for it; what is queued may still be written */

    l->failed = 1;
}


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

static ngx_http_activity_frame_t *
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


static void
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
    ngx_uint_t                   bit;
    const char                  *type, *v;
    ngx_http_activity_room_t    *room;
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

    (void) ngx_http_activity_fanout_remember(f, data.data, data.len);
    ngx_http_activity_fanout_invalidate(f);

    ngx_http_activity_fanout_broadcast(f, &ngx_http_activity_new_event, &data,
                                       0, &offset, poff);

    type = json_string_value(json_object_get(event, "eventType"));
    room = ngx_http_activity_fanout_room_of(type, &bit);

    if (room) {
        ngx_http_activity_fanout_broadcast(f, &room->event, &data, bit,
                                           &offset, poff);
    }

    free(text);
}


static ngx_http_activity_room_t *
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


static void
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


static void
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


static void
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
 * A graceful shutdown (reload, upgrade, SIGQUIT) stops accepting and calls
 * the read handler of every idle connection.  A fake idle connection (no
 * socket) is how this worker hears of it, as lua-nginx-module does, and
 * then closes its dashboards with 1001 "going away": Socket.IO clients
 * reconnect to a new worker at once, and open sockets never hold up the
 * exit.
 */

static ngx_int_t
ngx_http_activity_fanout_watch(ngx_http_activity_fanout_t *f)
{
    ngx_connection_t  *c, *saved;

    /* ngx_get_connection() would claim files[0] for this fake socket */

    saved = ngx_cycle->files ? ngx_cycle->files[0] : NULL;

    c = ngx_get_connection(0, f->log);

    if (ngx_cycle->files) {
        ngx_cycle->files[0] = saved;
    }

    if (c == NULL) {
        return NGX_ERROR;
    }

    c->fd = (ngx_socket_t) -2;
    c->idle = 1;
    c->data = f;
    c->read->handler = ngx_http_activity_fanout_shutdown;
    c->read->log = f->log;
    c->write->log = f->log;

    f->watcher = c;

    return NGX_OK;
}


static void
ngx_http_activity_fanout_shutdown(ngx_event_t *ev)
{
    ngx_connection_t  *c = ev->data;

    ngx_queue_t                   *q, *next;
    ngx_http_activity_fanout_t    *f;
    ngx_http_activity_listener_t  *l;

    f = c->data;

    ngx_http_activity_fanout_unwatch(f);

    for (q = ngx_queue_head(&f->all);
         q != ngx_queue_sentinel(&f->all);
         q = next)
    {
        next = ngx_queue_next(q);
        l = ngx_queue_data(q, ngx_http_activity_listener_t, all);

        l->going_away(l, NGX_HTTP_ACTIVITY_WS_GOING_AWAY);
    }
}


static void
ngx_http_activity_fanout_unwatch(ngx_http_activity_fanout_t *f)
{
    ngx_connection_t  *c;

    c = f->watcher;

    if (c == NULL) {
        return;
    }

    f->watcher = NULL;

    /* no socket to close: only the connection slot to give back */

    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
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


static ngx_int_t
ngx_http_activity_fanout_is(redisReply *reply, const char *s)
{
    return reply->type == REDIS_REPLY_STRING
           && (size_t) reply->len == ngx_strlen(s)
           && ngx_strncmp(reply->str, s, reply->len) == 0;
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


static void
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
