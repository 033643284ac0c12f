
/*
 * The Redis side of a dashboard resume (issue 12).
 *
 * The worker appends every event it publishes to a stream bounded with
 * MAXLEN ~ N; an entry's id is the event's offset.  A dashboard that
 * reconnects with its last offset gets, in one pipelined round trip:
 *
 *   GET    <resume prefix><pid>          its Socket.IO session record
 *   XRANGE <stream> <offset> + COUNT max+2
 *                                        the offset's own entry first,
 *                                        then what came after it
 *
 * The offset's own entry proves the stream still reaches back that far
 * (it was neither trimmed nor lost with Redis), so the entries after it
 * are the whole gap.  One command reads both: a trim between two reads
 * (a worker's XADD … MAXLEN ~ runs between any two commands of a
 * pipeline) could take the offset's entry and the gap's first ones
 * after the first read said the offset was there.  The connection is
 * this worker's own, apart from the queue and the subscriber: a burst
 * of reconnects never delays the events on their way to Redis.  A
 * request Redis does not answer within NGX_HTTP_ACTIVITY_RESUME_TIMEOUT
 * gives up and drops the connection.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_activity_resume.h"
#include "ngx_http_activity_redis.h"


struct ngx_http_activity_resume_s {
    ngx_http_activity_redis_t           redis;
    ngx_http_activity_main_conf_t      *amcf;
    ngx_log_t                          *log;
    unsigned                            closing:1;
    /* logged once until Redis takes them again, not once per dashboard */
    unsigned                            reads_refused:1;
    unsigned                            saves_refused:1;
};


struct ngx_http_activity_resume_req_s {
    ngx_http_activity_resume_t         *rs;
    ngx_http_activity_resume_done_pt    handler;   /* NULL: done/cancelled */
    void                               *data;
    ngx_event_t                         timer;
    ngx_http_activity_resume_result_t   result;
    ngx_uint_t                          replies;   /* still to come */
    ngx_uint_t                          step;      /* replies seen */
    ngx_uint_t                          with_record;
    size_t                              offset_len;
    u_char                              offset[64];
    unsigned                            failed:1;
};


static void ngx_http_activity_resume_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static void ngx_http_activity_resume_finish(
    ngx_http_activity_resume_req_t *req, redisReply *entries);
static void ngx_http_activity_resume_timeout(ngx_event_t *ev);
static void ngx_http_activity_resume_saved(redisAsyncContext *ac, void *r,
    void *privdata);


ngx_http_activity_resume_t *
ngx_http_activity_resume_create(ngx_cycle_t *cycle,
    ngx_http_activity_main_conf_t *amcf)
{
    ngx_http_activity_resume_t  *rs;

    rs = ngx_pcalloc(cycle->pool, sizeof(ngx_http_activity_resume_t));
    if (rs == NULL) {
        return NULL;
    }

    rs->amcf = amcf;
    rs->log = cycle->log;

    ngx_http_activity_redis_init(&rs->redis, &amcf->redis, cycle->log,
                                 "resume");
    rs->redis.data = rs;

    ngx_http_activity_redis_connect(&rs->redis);

    return rs;
}


void
ngx_http_activity_resume_destroy(ngx_http_activity_resume_t *rs)
{
    /* pending requests are answered NULL and freed, their owners not told */

    rs->closing = 1;
    ngx_http_activity_redis_close(&rs->redis);
}


/*
 * NULL when the request cannot be made now (Redis is down, no memory):
 * the caller treats that as "not recovered".  pid NULL: no record.
 */

ngx_http_activity_resume_req_t *
ngx_http_activity_resume_fetch(ngx_http_activity_resume_t *rs,
    ngx_str_t *pid, ngx_str_t *offset, ngx_uint_t max,
    ngx_http_activity_resume_done_pt handler, void *data)
{
    int                              rc;
    ngx_str_t                       *key, *prefix;
    redisAsyncContext               *ac;
    ngx_http_activity_resume_req_t  *req;

    ac = rs->redis.ac;

    if (ac == NULL || !rs->redis.ready || rs->closing) {
        return NULL;
    }

    req = ngx_calloc(sizeof(ngx_http_activity_resume_req_t), rs->log);
    if (req == NULL) {
        return NULL;
    }

    req->rs = rs;
    req->handler = handler;
    req->data = data;
    req->timer.handler = ngx_http_activity_resume_timeout;
    req->timer.data = req;
    req->timer.log = rs->log;
    req->timer.cancelable = 1;

    if (offset->len > sizeof(req->offset)) {
        ngx_free(req);
        return NULL;
    }

    ngx_memcpy(req->offset, offset->data, offset->len);
    req->offset_len = offset->len;

    key = &rs->amcf->stream_key;
    prefix = &rs->amcf->resume_prefix;

    /* every command appended, or none: the replies must line up */

    rc = REDIS_OK;

    if (pid) {
        req->with_record = 1;
        rc = redisAsyncCommand(ac, ngx_http_activity_resume_reply, req,
                               "GET %b%b", prefix->data, prefix->len,
                               pid->data, pid->len);
        if (rc == REDIS_OK) {
            req->replies++;
        }
    }

    if (rc == REDIS_OK) {
        rc = redisAsyncCommand(ac, ngx_http_activity_resume_reply, req,
                               "XRANGE %b %b + COUNT %lu", key->data,
                               key->len, offset->data, offset->len,
                               (unsigned long) max + 2);
        if (rc == REDIS_OK) {
            req->replies++;
        }
    }

    if (rc != REDIS_OK) {

        /* hiredis refuses commands only on a context it is tearing down */

        if (req->replies == 0) {
            ngx_free(req);
            return NULL;
        }

        req->handler = NULL;
        req->failed = 1;
        ngx_http_activity_redis_drop(&rs->redis);
        return NULL;
    }

    ngx_add_timer(&req->timer, NGX_HTTP_ACTIVITY_RESUME_TIMEOUT);

    ngx_http_activity_redis_send(&rs->redis);

    return req;
}


/* the owner goes away: the request runs out without telling it */

void
ngx_http_activity_resume_cancel(ngx_http_activity_resume_req_t *req)
{
    req->handler = NULL;

    if (req->timer.timer_set) {
        ngx_del_timer(&req->timer);
    }
}


/* SET key record PX ttl, fire and forget; written at once */

void
ngx_http_activity_resume_save(ngx_http_activity_resume_t *rs,
    ngx_str_t *pid, ngx_str_t *record, ngx_msec_t ttl)
{
    ngx_str_t  *prefix;

    if (rs->redis.ac == NULL || !rs->redis.ready || rs->closing) {
        return;
    }

    prefix = &rs->amcf->resume_prefix;

    if (redisAsyncCommand(rs->redis.ac, ngx_http_activity_resume_saved, rs,
                          "SET %b%b %b PX %lu", prefix->data, prefix->len,
                          pid->data, pid->len, record->data, record->len,
                          (unsigned long) ttl)
        != REDIS_OK)
    {
        return;
    }

    ngx_http_activity_redis_send(&rs->redis);
}


static void
ngx_http_activity_resume_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_resume_req_t *req = privdata;

    redisReply  *reply = r, *e;
    ngx_uint_t   step;

    step = req->step++;
    req->replies--;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {

        if (reply && !req->failed && !req->rs->closing
            && !req->rs->reads_refused)
        {
            req->rs->reads_refused = 1;
            ngx_log_error(NGX_LOG_ERR, req->rs->log, 0,
                          "activity: resume read refused by redis: %s "
                          "(not logged again until one is answered)",
                          reply->str);
        }

        req->failed = 1;
        goto next;
    }

    if (req->failed) {
        goto next;
    }

    if (req->with_record && step == 0) {
        if (reply->type == REDIS_REPLY_STRING && reply->len > 0) {
            req->result.record.data = ngx_alloc(reply->len, req->rs->log);
            if (req->result.record.data == NULL) {
                req->failed = 1;
                goto next;
            }

            ngx_memcpy(req->result.record.data, reply->str, reply->len);
            req->result.record.len = reply->len;
        }

        goto next;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        req->failed = 1;
        goto next;
    }

    /* the offset's own entry first, if the stream still has it */

    e = reply->elements ? reply->element[0] : NULL;

    if (e && e->type == REDIS_REPLY_ARRAY && e->elements >= 1
        && e->element[0]->type == REDIS_REPLY_STRING
        && (size_t) e->element[0]->len == req->offset_len
        && ngx_strncmp(e->element[0]->str, req->offset, req->offset_len)
           == 0)
    {
        req->result.found = 1;
        req->result.first = 1;
    }

    ngx_http_activity_redis_healthy(&req->rs->redis);

    if (req->rs->reads_refused) {
        req->rs->reads_refused = 0;
        ngx_log_error(NGX_LOG_WARN, req->rs->log, 0,
                      "activity: resume reads answered by redis again");
    }

    ngx_http_activity_resume_finish(req, reply);

next:

    if (req->replies == 0) {
        if (req->failed) {
            ngx_http_activity_resume_finish(req, NULL);
        }

        if (req->timer.timer_set) {
            ngx_del_timer(&req->timer);
        }

        if (req->result.record.data) {
            ngx_free(req->result.record.data);
        }

        ngx_free(req);
    }
}


/* entries NULL: failed */

static void
ngx_http_activity_resume_finish(ngx_http_activity_resume_req_t *req,
    redisReply *entries)
{
    ngx_http_activity_resume_done_pt  handler;

    handler = req->handler;

    if (handler == NULL || req->rs->closing) {
        return;
    }

    req->handler = NULL;

    if (req->timer.timer_set) {
        ngx_del_timer(&req->timer);
    }

    req->result.rc = entries ? NGX_OK : NGX_ERROR;
    req->result.entries = entries;

    handler(req->data, &req->result);
}


static void
ngx_http_activity_resume_timeout(ngx_event_t *ev)
{
    ngx_http_activity_resume_req_t *req = ev->data;

    ngx_http_activity_resume_t  *rs;

    rs = req->rs;

    /* the owner hears now; the request is freed with the last reply */

    req->failed = 1;
    ngx_http_activity_resume_finish(req, NULL);

    ngx_http_activity_redis_error(&rs->redis, NGX_HTTP_ACTIVITY_REDIS_TIMEOUT,
                                  "no answer to a resume read",
                                  "the connection is presumed dead");
}


static void
ngx_http_activity_resume_saved(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_resume_t *rs = privdata;

    redisReply  *reply = r;

    if (reply == NULL || rs->closing) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        if (!rs->saves_refused) {
            rs->saves_refused = 1;
            ngx_log_error(NGX_LOG_WARN, rs->log, 0,
                          "activity: cannot save a dashboard session for "
                          "resume: %s (not logged again until one is "
                          "saved)", reply->str);
        }

        return;
    }

    if (rs->saves_refused) {
        rs->saves_refused = 0;
        ngx_log_error(NGX_LOG_WARN, rs->log, 0,
                      "activity: dashboard sessions saved for resume "
                      "again");
    }
}
