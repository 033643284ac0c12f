
/*
 * The subscriber and the fan-out.
 *
 * Each nginx worker process holds one Redis connection that reads the
 * recent events and the latest stats, then SUBSCRIBEs to the events and
 * stats channels (again after every reconnect).  A message becomes at most
 * one frame per protocol and kind; every connection that gets it holds a
 * reference to that one buffer.  Writes are gathered: a listener that got
 * frames is flushed once, at the end of the event loop iteration.
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

    ngx_http_activity_frame_t   *snapshot[NGX_HTTP_ACTIVITY_PROTOCOLS + 1];

    ngx_http_activity_stats_t   *counters;
};


static void ngx_http_activity_fanout_on_ready(ngx_http_activity_redis_t *rd);
static void ngx_http_activity_fanout_recent_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_activity_fanout_stats_reply(redisAsyncContext *ac,
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
    ngx_str_t *name, ngx_str_t *data, ngx_uint_t room);
static ngx_int_t ngx_http_activity_fanout_remember(
    ngx_http_activity_fanout_t *f, u_char *data, size_t len);
static void ngx_http_activity_fanout_forget(ngx_http_activity_fanout_t *f);
static void ngx_http_activity_fanout_invalidate(ngx_http_activity_fanout_t *f);
static ngx_http_activity_frame_t *ngx_http_activity_fanout_build_snapshot(
    ngx_http_activity_fanout_t *f, ngx_uint_t protocol);
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

    return ngx_http_activity_fanout_send(f, l, frame);
}


/*
 * websocket: {"event":"NAME","data":DATA}
 * socketio:  42/dashboard,["NAME",DATA]
 */

ngx_http_activity_frame_t *
ngx_http_activity_fanout_event_frame(ngx_uint_t protocol, ngx_str_t *name,
    ngx_str_t *data, ngx_log_t *log)
{
    ngx_str_t  parts[5];

    if (protocol == NGX_HTTP_ACTIVITY_SOCKETIO) {
        ngx_str_set(&parts[0], "42" NGX_HTTP_ACTIVITY_SIO_NSP ",[\"");
        ngx_str_set(&parts[2], "\",");
        ngx_str_set(&parts[4], "]");

    } else {
        ngx_str_set(&parts[0], "{\"event\":\"");
        ngx_str_set(&parts[2], "\",\"data\":");
        ngx_str_set(&parts[4], "}");
    }

    parts[1] = *name;
    parts[3] = *data;

    return ngx_http_activity_frame_text(parts, 5, log);
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

    if (redisAsyncCommand(rd->ac, ngx_http_activity_fanout_recent_reply, f,
                          "LRANGE %b 0 %d", amcf->recent_key.data,
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
                                           &f->stats, 0);
    }
}


/* a JSON array of events (or one event object) */

static void
ngx_http_activity_fanout_events(ngx_http_activity_fanout_t *f, u_char *data,
    size_t len)
{
    size_t        i;
    json_t       *root, *event;
    json_error_t  err;

    root = json_loadb((const char *) data, len, JSON_REJECT_DUPLICATES, &err);

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
    char                      *text;
    ngx_str_t                  data;
    ngx_uint_t                 bit;
    const char                *type;
    ngx_http_activity_room_t  *room;

    if (!json_is_object(event)) {
        return;
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
                                       0);

    type = json_string_value(json_object_get(event, "eventType"));

    if (type) {
        for (room = ngx_http_activity_rooms; room->room; room++) {
            if (ngx_strcmp(room->type, type) == 0) {
                bit = ngx_http_activity_fanout_room((u_char *) room->room,
                                                    ngx_strlen(room->room));
                ngx_http_activity_fanout_broadcast(f, &room->event, &data,
                                                   bit);
                break;
            }
        }
    }

    free(text);
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
 * means every connected listener.
 */

static void
ngx_http_activity_fanout_broadcast(ngx_http_activity_fanout_t *f,
    ngx_str_t *name, ngx_str_t *data, ngx_uint_t room)
{
    ngx_uint_t                     p;
    ngx_queue_t                   *q, *next;
    ngx_http_activity_frame_t     *frames[NGX_HTTP_ACTIVITY_PROTOCOLS + 1];
    ngx_http_activity_listener_t  *l;

    ngx_memzero(frames, sizeof(frames));

    for (q = ngx_queue_head(&f->listeners);
         q != ngx_queue_sentinel(&f->listeners);
         q = next)
    {
        next = ngx_queue_next(q);
        l = ngx_queue_data(q, ngx_http_activity_listener_t, queue);

        if (room && !(l->rooms & room)) {
            continue;
        }

        p = l->protocol;

        if (frames[p] == NULL) {
            frames[p] = ngx_http_activity_fanout_event_frame(p, name, data,
                                                             f->log);
            if (frames[p] == NULL) {
                return;
            }

            ngx_http_activity_stat_add(f->counters, frames_broadcast, 1);
        }

        (void) ngx_http_activity_fanout_send(f, l, frames[p]);
    }

    for (p = 0; p <= NGX_HTTP_ACTIVITY_PROTOCOLS; p++) {
        if (frames[p]) {
            ngx_http_activity_frame_release(frames[p]);
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
    }
}


/* {"events":[newest first…],"stats":{…}|null} */

static ngx_http_activity_frame_t *
ngx_http_activity_fanout_build_snapshot(ngx_http_activity_fanout_t *f,
    ngx_uint_t protocol)
{
    u_char                     *p;
    size_t                      len;
    ngx_str_t                   data;
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

    frame = ngx_http_activity_fanout_event_frame(protocol,
                                          &ngx_http_activity_snapshot_event,
                                          &data, f->log);
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
