
/*
 * Shared frames and per-connection output queues.
 *
 * A message is encoded into one frame per nginx worker; every connection
 * that receives it holds a reference, and the frame is freed when the last
 * one has written it.  A connection's queue is bounded by bytes and by the
 * age of its oldest frame: pushing past either fails, and the caller
 * drops the slow client.
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
 * The ring starts small and doubles as needed: an idle connection (the
 * common case) keeps a few pointers, not a full-size ring.  What bounds
 * a queue is its bytes and the age of its oldest frame, not a count: one
 * message may become hundreds of small frames, and a large one a few big
 * ones.
 */

void
ngx_http_activity_outq_init(ngx_http_activity_outq_t *q, size_t max_bytes,
    ngx_msec_t max_age, ngx_log_t *log)
{
    ngx_memzero(q, sizeof(ngx_http_activity_outq_t));

    q->max_bytes = max_bytes;
    q->max_age = max_age;
    q->log = log;
}


/*
 * NGX_DECLINED: the queue is over its bounds (the caller may write and
 * try again, then drop the client).  A frame always goes into an empty
 * queue, however large.
 */

ngx_int_t
ngx_http_activity_outq_push(ngx_http_activity_outq_t *q,
    ngx_http_activity_frame_t *frame)
{
    if (q->count
        && (q->bytes + frame->len > q->max_bytes
            || ngx_current_msec - q->slots[q->head].queued > q->max_age))
    {
        return NGX_DECLINED;
    }

    return ngx_http_activity_outq_push_last(q, frame);
}


/* the close frame: past the bounds, it is the last one anyway */

ngx_int_t
ngx_http_activity_outq_push_last(ngx_http_activity_outq_t *q,
    ngx_http_activity_frame_t *frame)
{
    ngx_uint_t                      size, i;
    ngx_http_activity_outq_slot_t  *slots, *slot;

    if (q->count == q->size) {

        size = q->size ? q->size * 2 : NGX_HTTP_ACTIVITY_OUTQ_MIN;

        slots = ngx_alloc(size * sizeof(ngx_http_activity_outq_slot_t),
                          q->log);
        if (slots == NULL) {
            return NGX_DECLINED;
        }

        for (i = 0; i < q->count; i++) {
            slots[i] = q->slots[(q->head + i) % q->size];
        }

        if (q->slots) {
            ngx_free(q->slots);
        }

        q->slots = slots;
        q->size = size;
        q->head = 0;
    }

    slot = &q->slots[(q->head + q->count) % q->size];
    slot->frame = frame;
    slot->queued = ngx_current_msec;

    q->count++;
    q->bytes += frame->len;
    frame->refs++;

    return NGX_OK;
}


/*
 * Drops every frame but the first: a client that is dropped for being
 * slow gets the rest of the frame being written, then the close frame.
 * The first stays even when none of it went out: over TLS its bytes may
 * already be in a record that waits for its write to be retried.
 */

void
ngx_http_activity_outq_trim(ngx_http_activity_outq_t *q)
{
    ngx_http_activity_frame_t  *frame;

    while (q->count > 1) {
        frame = q->slots[(q->head + q->count - 1) % q->size].frame;

        q->count--;
        q->bytes -= frame->len;

        ngx_http_activity_frame_release(frame);
    }
}


/*
 * Writes as much as the socket takes, through c->send_chain so that TLS
 * connections work too.  NGX_AGAIN: the rest waits for the write event.
 *
 * Progress is what send_chain() moved each buffer's pos by, not c->sent:
 * a TLS connection that buffers (NGX_SSL_BUFFER) takes bytes into its own
 * buffer without sending them, and c->sent does not move.  The dashboard
 * clears that buffer after the upgrade; bytes still held in it
 * (NGX_SSL_BUFFERED) count as not yet written.
 */

ngx_int_t
ngx_http_activity_outq_flush(ngx_http_activity_outq_t *q,
    ngx_connection_t *c)
{
    size_t                      n, sent;
    ssize_t                     w;
    ngx_uint_t                  i, k;
    ngx_chain_t                *cl;
    ngx_http_activity_frame_t  *frame;

    /*
     * the chain is scratch: send_chain() keeps no link once it returns,
     * so one per process serves every connection
     */

    static ngx_buf_t    bufs[NGX_HTTP_ACTIVITY_OUTQ_CHAIN];
    static ngx_chain_t  links[NGX_HTTP_ACTIVITY_OUTQ_CHAIN];

    while (q->count || (c->buffered & NGX_SSL_BUFFERED)) {

        if (!c->write->ready) {
            return NGX_AGAIN;
        }

        k = ngx_min(q->count, NGX_HTTP_ACTIVITY_OUTQ_CHAIN);

        /*
         * One frame on a plain socket, the fan-out's usual case: send()
         * it, cheaper in the kernel than a one-buffer writev()
         */

        if (k == 1
#if (NGX_SSL)
            && c->ssl == NULL
#endif
           )
        {
            frame = q->slots[q->head].frame;

            w = c->send(c, frame->data + q->offset, frame->len - q->offset);

            if (w == NGX_ERROR) {
                return NGX_ERROR;
            }

            if (w == NGX_AGAIN) {
                break;
            }

            n = (size_t) w;

            if (q->offset + n < frame->len) {
                q->offset += n;
                q->bytes -= n;
                break;
            }

            q->bytes -= n;
            q->offset = 0;
            q->head = (q->head + 1) % q->size;
            q->count--;

            ngx_http_activity_frame_release(frame);
            continue;
        }

        for (i = 0; i < k; i++) {
            frame = q->slots[(q->head + i) % q->size].frame;

            ngx_memzero(&bufs[i], sizeof(ngx_buf_t));
            bufs[i].pos = frame->data + (i == 0 ? q->offset : 0);
            bufs[i].last = frame->data + frame->len;
            bufs[i].memory = 1;

            links[i].buf = &bufs[i];
            links[i].next = (i + 1 < k) ? &links[i + 1] : NULL;
        }

        /* no frames left: send_chain() flushes what TLS still holds */

        cl = c->send_chain(c, k ? links : NULL, 0);

        if (cl == NGX_CHAIN_ERROR) {
            return NGX_ERROR;
        }

        sent = 0;

        for (i = 0; i < k; i++) {
            frame = q->slots[(q->head + i) % q->size].frame;
            sent += bufs[i].pos - (frame->data + (i == 0 ? q->offset : 0));
        }

        while (sent > 0 && q->count) {
            frame = q->slots[q->head].frame;
            n = frame->len - q->offset;

            if (n > sent) {
                q->offset += sent;
                q->bytes -= sent;
                break;
            }

            sent -= n;
            q->bytes -= n;
            q->offset = 0;
            q->head = (q->head + 1) % q->size;
            q->count--;

            ngx_http_activity_frame_release(frame);
        }

        if (cl != NULL) {
            break;
        }
    }

    if (q->count == 0 && !(c->buffered & NGX_SSL_BUFFERED)) {
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
        ngx_http_activity_frame_release(q->slots[q->head].frame);
        q->head = (q->head + 1) % q->size;
        q->count--;
    }

    q->bytes = 0;

    if (q->slots) {
        ngx_free(q->slots);
        q->slots = NULL;
        q->size = 0;
    }
}
