
/*
 * What an upgraded dashboard connection reads: client frames, parsed and
 * unmasked in place, control frames answered, fragments gathered up to
 * the message bound, compressed messages (permessage-deflate) inflated,
 * text checked for UTF-8 and charged to the connection's rate, then
 * handed to the protocol's on_message.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_conn_internal.h"
#include "ngx_http_activity_ws.h"


/* a compressed message counts once per started RATE_UNIT it inflates to */
#define NGX_HTTP_ACTIVITY_RATE_UNIT     4096


static ngx_int_t ngx_http_activity_conn_frame(ngx_http_activity_conn_t *ac,
    ngx_http_activity_ws_frame_t *f, u_char *payload);
static ngx_int_t ngx_http_activity_conn_inflate(ngx_http_activity_conn_t *ac,
    u_char **data, size_t *len);
static ngx_int_t ngx_http_activity_conn_message(ngx_http_activity_conn_t *ac,
    u_char *data, size_t len, ngx_uint_t deflated);
static ngx_int_t ngx_http_activity_conn_rate(ngx_http_activity_conn_t *ac,
    ngx_uint_t n);


/* the read handler: whatever the socket has, frame by frame */

void
ngx_http_activity_conn_read(ngx_event_t *rev)
{
    size_t                     size;
    ssize_t                    n;
    u_char                    *in;
    ngx_connection_t          *c;
    ngx_http_activity_conn_t  *ac;

    c = rev->data;
    ac = c->data;

    if (ac->finalized) {
        return;
    }

    if (ac->lingering) {
        ngx_http_activity_conn_drain(ac);
        return;
    }

    /* worker_shutdown_timeout, or an nginx-side close */

    if (c->close) {
        ngx_http_activity_conn_finalize(ac);
        return;
    }

    for ( ;; ) {

        if (ac->in_size - ac->in_len == 0) {
            size = ngx_max(ac->in_size * 2, NGX_HTTP_ACTIVITY_INPUT_MIN);

            if (size > NGX_HTTP_ACTIVITY_MESSAGE_MAX
                       + NGX_HTTP_ACTIVITY_WS_HEADER_MAX + 4)
            {
                /* a parsed header would have been refused before this */
                ngx_http_activity_conn_close(ac,
                                             NGX_HTTP_ACTIVITY_WS_TOO_BIG,
                                             "message too big");
                return;
            }

            in = ngx_alloc(size, c->log);
            if (in == NULL) {
                ngx_http_activity_conn_finalize(ac);
                return;
            }

            if (ac->in) {
                ngx_memcpy(in, ac->in, ac->in_len);
                ngx_free(ac->in);
            }

            ac->in = in;
            ac->in_size = size;
        }

        n = c->recv(c, ac->in + ac->in_len, ac->in_size - ac->in_len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {

            /* the peer is gone: nothing to say to it */

            ngx_http_activity_conn_finalize(ac);
            return;
        }

        ac->in_len += n;

        if (ngx_http_activity_conn_input(ac) != NGX_OK) {
            return;
        }
    }

    if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
        ngx_http_activity_conn_finalize(ac);
    }
}


/* every complete frame in the input buffer; NGX_ERROR: connection closed */

ngx_int_t
ngx_http_activity_conn_input(ngx_http_activity_conn_t *ac)
{
    int                           rc;
    size_t                        total;
    ngx_http_activity_ws_frame_t  f;

    while (ac->in_len && !ac->closing) {

        rc = ngx_http_activity_ws_parse_ext(ac->in, ac->in_len,
                                            NGX_HTTP_ACTIVITY_MESSAGE_MAX,
                                            ac->listener.deflate_max != 0,
                                            &f);

        if (rc < 0) {
            ngx_http_activity_conn_close(ac, -rc, "protocol error");
            return NGX_ERROR;
        }

        if (rc == 0) {
            break;
        }

        total = f.header + f.len;

        if (ac->in_len < total) {

            /* the read loop grows the buffer up to one whole frame */

            if (ac->in_size < total) {
                u_char  *in;

                in = ngx_alloc(total, ac->connection->log);
                if (in == NULL) {
                    ngx_http_activity_conn_finalize(ac);
                    return NGX_ERROR;
                }

                ngx_memcpy(in, ac->in, ac->in_len);
                ngx_free(ac->in);
                ac->in = in;
                ac->in_size = total;
            }

            break;
        }

        ngx_http_activity_ws_unmask(ac->in + f.header, f.len, f.mask);

        if (ngx_http_activity_conn_frame(ac, &f, ac->in + f.header)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ac->finalized) {
            return NGX_ERROR;
        }

        ngx_memmove(ac->in, ac->in + total, ac->in_len - total);
        ac->in_len -= total;
    }

    /* an idle connection keeps no large buffer */

    if (ac->in_len == 0 && ac->in_size > NGX_HTTP_ACTIVITY_INPUT_MIN) {
        ngx_free(ac->in);
        ac->in = NULL;
        ac->in_size = 0;
    }

    return ac->closing ? NGX_ERROR : NGX_OK;
}


static ngx_int_t
ngx_http_activity_conn_frame(ngx_http_activity_conn_t *ac,
    ngx_http_activity_ws_frame_t *f, u_char *payload)
{
    u_char     *msg;
    size_t      len;
    ngx_int_t   rc;
    ngx_uint_t  code;

    switch (f->opcode) {

    case NGX_HTTP_ACTIVITY_WS_PING:
        return ngx_http_activity_conn_send_control(ac,
                                                   NGX_HTTP_ACTIVITY_WS_PONG,
                                                   payload, f->len);

    case NGX_HTTP_ACTIVITY_WS_PONG:
        if (ac->listener.protocol == NGX_HTTP_ACTIVITY_WEBSOCKET) {
            ngx_http_activity_conn_pong(ac);
        }

        return NGX_OK;

    case NGX_HTTP_ACTIVITY_WS_CLOSE:
        /* echo the peer's code (7.4), refuse reserved ones */

        code = NGX_HTTP_ACTIVITY_WS_NORMAL;

        if (f->len == 1) {
            code = NGX_HTTP_ACTIVITY_WS_PROTOCOL;

        } else if (f->len >= 2) {
            code = (payload[0] << 8) | payload[1];

            if (!((code >= 1000 && code <= 1003)
                  || (code >= 1007 && code <= 1011)
                  || (code >= 3000 && code <= 4999)))
            {
                code = NGX_HTTP_ACTIVITY_WS_PROTOCOL;

            } else if (!ngx_http_activity_ws_utf8(payload + 2, f->len - 2)) {
                code = NGX_HTTP_ACTIVITY_WS_BAD_DATA;
            }
        }

        ngx_http_activity_conn_close(ac, code, NULL);
        return NGX_ERROR;

    case NGX_HTTP_ACTIVITY_WS_CONT:
        if (ac->msg_opcode == 0) {
            ngx_http_activity_conn_close(ac,
                                         NGX_HTTP_ACTIVITY_WS_PROTOCOL,
                                         "unexpected continuation");
            return NGX_ERROR;
        }

        break;

    default: /* text, binary */
        if (ac->msg_opcode) {
            ngx_http_activity_conn_close(ac,
                                         NGX_HTTP_ACTIVITY_WS_PROTOCOL,
                                         "unfinished message");
            return NGX_ERROR;
        }

        if (f->opcode == NGX_HTTP_ACTIVITY_WS_BINARY) {
            ngx_http_activity_conn_close(ac,
                                         NGX_HTTP_ACTIVITY_WS_UNSUPPORTED,
                                         "binary messages not accepted");
            return NGX_ERROR;
        }

        if (f->fin) {
            len = f->len;

            if (f->rsv1
                && ngx_http_activity_conn_inflate(ac, &payload, &len)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (!ngx_http_activity_ws_utf8(payload, len)) {
                ngx_http_activity_conn_close(ac,
                                             NGX_HTTP_ACTIVITY_WS_BAD_DATA,
                                             "invalid UTF-8");
                return NGX_ERROR;
            }

            return ngx_http_activity_conn_message(ac, payload, len, f->rsv1);
        }

        ac->msg_opcode = f->opcode;
        ac->msg_deflated = f->rsv1;
        break;
    }

    /* a fragment: gather the message, bounded like a single frame */

    if (ac->msg_len + f->len > NGX_HTTP_ACTIVITY_MESSAGE_MAX) {
        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_TOO_BIG,
                                     "message too big");
        return NGX_ERROR;
    }

    if (ac->msg == NULL) {
        ac->msg = ngx_alloc(NGX_HTTP_ACTIVITY_MESSAGE_MAX,
                             ac->connection->log);
        if (ac->msg == NULL) {
            ngx_http_activity_conn_finalize(ac);
            return NGX_ERROR;
        }
    }

    ngx_memcpy(ac->msg + ac->msg_len, payload, f->len);
    ac->msg_len += f->len;

    if (!f->fin) {
        return NGX_OK;
    }

    msg = ac->msg;
    len = ac->msg_len;

    /* the fragments' payloads, gathered, are one compressed message */

    if (ac->msg_deflated
        && ngx_http_activity_conn_inflate(ac, &msg, &len) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (!ngx_http_activity_ws_utf8(msg, len)) {
        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_BAD_DATA,
                                     "invalid UTF-8");
        return NGX_ERROR;
    }

    rc = ngx_http_activity_conn_message(ac, msg, len, ac->msg_deflated);

    if (!ac->finalized) {
        ngx_free(ac->msg);
        ac->msg = NULL;
        ac->msg_len = 0;
        ac->msg_opcode = 0;
        ac->msg_deflated = 0;
    }

    return rc;
}


/*
 * A compressed message (RSV1) is inflated into the worker's buffer, no
 * more than the longest message: one that inflates past it closes the
 * connection with 1009 however few bytes it came in (a "zip bomb").
 */

static ngx_int_t
ngx_http_activity_conn_inflate(ngx_http_activity_conn_t *ac, u_char **data,
    size_t *len)
{
    ngx_str_t  out;

    switch (ngx_http_activity_deflate_inflate(
                ngx_http_activity_fanout_deflate(ac->fanout), *data, *len,
                NGX_HTTP_ACTIVITY_MESSAGE_MAX, &out))
    {
    case NGX_OK:
        *data = out.data;
        *len = out.len;
        return NGX_OK;

    case NGX_DECLINED:
        ngx_log_error(NGX_LOG_INFO, ngx_cycle->log, 0,
                      "activity: dashboard %V sent a compressed message of "
                      "more than %uz bytes, closing",
                      &ac->connection->addr_text,
                      (size_t) NGX_HTTP_ACTIVITY_MESSAGE_MAX);

        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_TOO_BIG,
                                     "message too big");
        return NGX_ERROR;

    case NGX_ERROR:
        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_BAD_DATA,
                                     "invalid compressed data");
        return NGX_ERROR;

    default:
        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_INTERNAL,
                                     "internal error");
        return NGX_ERROR;
    }
}


/*
 * A compressed message is charged for what it costs to read, not to
 * send: once per started 4 KiB it inflated to, so that a few bytes that
 * inflate to the message bound cannot buy its work at the message rate.
 */

static ngx_int_t
ngx_http_activity_conn_message(ngx_http_activity_conn_t *ac,
    u_char *data, size_t len, ngx_uint_t deflated)
{
    ngx_uint_t  n;

    n = 1;

    if (deflated && len > NGX_HTTP_ACTIVITY_RATE_UNIT) {
        n = (len + NGX_HTTP_ACTIVITY_RATE_UNIT - 1)
            / NGX_HTTP_ACTIVITY_RATE_UNIT;
    }

    if (ngx_http_activity_conn_rate(ac, n) != NGX_OK) {
        return NGX_ERROR;
    }

    return ac->handlers->on_message(ac, data, len);
}


/*
 * A leaky bucket: each message adds 1000/rate ms of debt (n times that
 * when it counts as n), time pays it back; a burst of up to "rate"
 * messages is allowed, and one message whatever it counts as.
 */

static ngx_int_t
ngx_http_activity_conn_rate(ngx_http_activity_conn_t *ac, ngx_uint_t n)
{
    ngx_msec_t  elapsed, cost;

    elapsed = ngx_current_msec - ac->rate_time;
    ac->rate_time = ngx_current_msec;

    ac->rate_debt = (ac->rate_debt > elapsed) ? ac->rate_debt - elapsed
                                                : 0;

    cost = n * (1000 / ac->conf->dashboard_rate);
    ac->rate_debt += cost;

    if (ac->rate_debt > 1000 + cost) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "activity: dashboard %V sent more than %ui messages "
                      "a second, closing",
                      &ac->connection->addr_text,
                      ac->conf->dashboard_rate);

        ngx_http_activity_conn_close(ac, NGX_HTTP_ACTIVITY_WS_POLICY,
                                     "rate limit");
        return NGX_ERROR;
    }

    return NGX_OK;
}
