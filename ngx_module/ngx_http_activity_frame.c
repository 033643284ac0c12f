
/*
 * Shared frames and per-connection output queues.
 *
 * A message is encoded into one frame per nginx worker; every connection
 * that receives it holds a reference, and the frame is freed when the last
 * one has written it.  A connection's queue is bounded: pushing into a full
 * queue fails, and the caller drops the slow client.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_activity_frame.h"
#include "ngx_http_activity_ws.h"


ngx_http_activity_frame_t *
ngx_http_activity_frame_create(ngx_uint_t opcode, size_t payload_len,
    ngx_log_t *log)
{
    u_char                      header[NGX_HTTP_ACTIVITY_WS_HEADER_MAX];
    size_t                      n;
    ngx_http_activity_frame_t  *frame;

    n = ngx_http_activity_ws_header(header, opcode, payload_len);

    frame = ngx_alloc(offsetof(ngx_http_activity_frame_t, data) + n
                      + payload_len, log);
    if (frame == NULL) {
        return NULL;
    }

    frame->refs = 1;
    frame->len = n + payload_len;
    frame->payload = ngx_cpymem(frame->data, header, n);

    return frame;
}


/* bytes sent as they are: the 101 response ahead of the first frame */

ngx_http_activity_frame_t *
ngx_http_activity_frame_raw(size_t len, ngx_log_t *log)
{
    ngx_http_activity_frame_t  *frame;

    frame = ngx_alloc(offsetof(ngx_http_activity_frame_t, data) + len, log);
    if (frame == NULL) {
        return NULL;
    }

    frame->refs = 1;
    frame->len = len;
    frame->payload = frame->data;

    return frame;
}


/* a text frame whose payload is the concatenation of parts */

ngx_http_activity_frame_t *
ngx_http_activity_frame_text(ngx_str_t *parts, ngx_uint_t n, ngx_log_t *log)
{
    u_char                     *p;
    size_t                      len;
    ngx_uint_t                  i;
    ngx_http_activity_frame_t  *frame;

    len = 0;

    for (i = 0; i < n; i++) {
        len += parts[i].len;
    }

    frame = ngx_http_activity_frame_create(NGX_HTTP_ACTIVITY_WS_TEXT, len,
                                           log);
    if (frame == NULL) {
        return NULL;
    }

    p = frame->payload;

    for (i = 0; i < n; i++) {
        p = ngx_cpymem(p, parts[i].data, parts[i].len);
    }

    return frame;
}


void
ngx_http_activity_frame_release(ngx_http_activity_frame_t *frame)
{
    if (--frame->refs == 0) {
        ngx_free(frame);
    }
}


/*
 * The ring starts small and doubles up to max: an idle connection (the
 * common case) keeps a few pointers, not a full-size ring.
 */

void
ngx_http_activity_outq_init(ngx_http_activity_outq_t *q, ngx_uint_t max,
    ngx_log_t *log)
{
    ngx_memzero(q, sizeof(ngx_http_activity_outq_t));

    q->max = max;
    q->log = log;
}


ngx_int_t
ngx_http_activity_outq_push(ngx_http_activity_outq_t *q,
    ngx_http_activity_frame_t *frame)
{
    ngx_uint_t                   size, i;
    ngx_http_activity_frame_t  **frames;

    if (q->count == q->size) {

        if (q->size == q->max) {
            return NGX_DECLINED;
        }

        size = q->size ? ngx_min(q->size * 2, q->max)
                       : ngx_min(NGX_HTTP_ACTIVITY_OUTQ_MIN, q->max);

        frames = ngx_alloc(size * sizeof(ngx_http_activity_frame_t *),
                           q->log);
        if (frames == NULL) {
            return NGX_DECLINED;
        }

        for (i = 0; i < q->count; i++) {
            frames[i] = q->frames[(q->head + i) % q->size];
        }

        if (q->frames) {
            ngx_free(q->frames);
        }

        q->frames = frames;
        q->size = size;
        q->head = 0;
    }

    q->frames[(q->head + q->count) % q->size] = frame;
    q->count++;
    frame->refs++;

    return NGX_OK;
}


/*
 * Writes as much as the socket takes, through c->send_chain so that TLS
 * connections work too.  NGX_AGAIN: the rest waits for the write event.
 */

ngx_int_t
ngx_http_activity_outq_flush(ngx_http_activity_outq_t *q,
    ngx_connection_t *c)
{
    off_t                       sent;
    size_t                      n;
    ngx_uint_t                  i, k;
    ngx_chain_t                *cl;
    ngx_http_activity_frame_t  *frame;

    /*
     * the chain is scratch: send_chain() keeps no link once it returns,
     * so one per process serves every connection
     */

    static ngx_buf_t    bufs[NGX_HTTP_ACTIVITY_OUTQ_CHAIN];
    static ngx_chain_t  links[NGX_HTTP_ACTIVITY_OUTQ_CHAIN];

    while (q->count) {

        if (!c->write->ready) {
            return NGX_AGAIN;
        }

        k = ngx_min(q->count, NGX_HTTP_ACTIVITY_OUTQ_CHAIN);

        for (i = 0; i < k; i++) {
            frame = q->frames[(q->head + i) % q->size];

            ngx_memzero(&bufs[i], sizeof(ngx_buf_t));
            bufs[i].pos = frame->data + (i == 0 ? q->offset : 0);
            bufs[i].last = frame->data + frame->len;
            bufs[i].memory = 1;

            links[i].buf = &bufs[i];
            links[i].next = (i + 1 < k) ? &links[i + 1] : NULL;
        }

        sent = c->sent;

        cl = c->send_chain(c, links, 0);

        if (cl == NGX_CHAIN_ERROR) {
            return NGX_ERROR;
        }

        sent = c->sent - sent;

        while (sent > 0 && q->count) {
            frame = q->frames[q->head];
            n = frame->len - q->offset;

            if ((off_t) n > sent) {
                q->offset += sent;
                break;
            }

            sent -= n;
            q->offset = 0;
            q->head = (q->head + 1) % q->size;
            q->count--;

            ngx_http_activity_frame_release(frame);
        }

        if (cl != NULL) {
            break;
        }
    }

    if (q->count == 0) {
        return NGX_OK;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_AGAIN;
}


void
ngx_http_activity_outq_free(ngx_http_activity_outq_t *q)
{
    while (q->count) {
        ngx_http_activity_frame_release(q->frames[q->head]);
        q->head = (q->head + 1) % q->size;
        q->count--;
    }

    if (q->frames) {
        ngx_free(q->frames);
        q->frames = NULL;
        q->size = 0;
    }
}
