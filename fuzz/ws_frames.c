
/*
 * libFuzzer target: a stream of client WebSocket frames, taken the way
 * the dashboard's input loop takes them (ngx_http_activity_conn_read.c):
 * parse a header, wait for the whole frame, unmask it, then act on the
 * opcode - control frames, close codes, fragments gathered up to the
 * message bound, UTF-8 checked text. The input is copied into a buffer
 * of its exact size so that any read past a frame is an ASan report.
 *
 * Each header is parsed again as on a connection that negotiated
 * permessage-deflate: only RSV1, and only on a text or binary frame,
 * may change the result.
 *
 * The UTF-8 check is also compared with a table-driven one written from
 * RFC 3629's syntax (section 4), and every parsed header with the
 * invariants the module relies on.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../ngx_module/ngx_http_activity_ws.h"


#define MESSAGE_MAX  65536          /* NGX_HTTP_ACTIVITY_MESSAGE_MAX */


static int utf8_reference(const unsigned char *p, size_t len);
static void check_header(const unsigned char *p, size_t len, int rc,
    const ngx_http_activity_ws_frame_t *f);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                           rc, rc2;
    size_t                        off, total, msg_len, code;
    unsigned char                *in, *msg, *payload, hdr[10];
    unsigned                      msg_opcode;
    ngx_http_activity_ws_frame_t  f, f2;

    in = malloc(size ? size : 1);
    if (in == NULL) {
        return 0;
    }

    memcpy(in, data, size);

    msg = NULL;
    msg_len = 0;
    msg_opcode = 0;

    for (off = 0; off < size; off += total) {

        memset(&f, 0xa5, sizeof(f));

        rc = ngx_http_activity_ws_parse(in + off, size - off, MESSAGE_MAX,
                                        &f);
        check_header(in + off, size - off, rc, &f);

        /*
         * with permessage-deflate: the same, but for RSV1, which only a
         * text or binary frame may carry
         */

        rc2 = ngx_http_activity_ws_parse_ext(in + off, size - off,
                                             MESSAGE_MAX, 1, &f2);

        if (!(in[off] & 0x40)) {
            if (rc2 != rc || (rc > 0 && f2.rsv1)) {
                abort();
            }

        } else if (rc2 > 0
                   && (!f2.rsv1
                       || (f2.opcode != NGX_HTTP_ACTIVITY_WS_TEXT
                           && f2.opcode != NGX_HTTP_ACTIVITY_WS_BINARY)))
        {
            abort();
        }

        if (rc <= 0) {
            break;                  /* refused, or waiting for more */
        }

        total = f.header + f.len;

        if (size - off < total) {
            break;                  /* the rest of the frame never came */
        }

        payload = in + off + f.header;
        ngx_http_activity_ws_unmask(payload, f.len, f.mask);

        /* a pong echoes the ping: its header must fit the control size */

        (void) ngx_http_activity_ws_header(hdr, f.opcode, f.len);

        switch (f.opcode) {

        case NGX_HTTP_ACTIVITY_WS_PING:
        case NGX_HTTP_ACTIVITY_WS_PONG:
            continue;

        case NGX_HTTP_ACTIVITY_WS_CLOSE:
            if (f.len >= 2) {
                code = (payload[0] << 8) | payload[1];
                (void) code;
                (void) ngx_http_activity_ws_utf8(payload + 2, f.len - 2);
            }

            goto done;

        case NGX_HTTP_ACTIVITY_WS_CONT:
            if (msg_opcode == 0) {
                goto done;          /* 1002: unexpected continuation */
            }

            break;

        default:
            if (msg_opcode || f.opcode == NGX_HTTP_ACTIVITY_WS_BINARY) {
                goto done;          /* 1002 or 1003 */
            }

            if (f.fin) {
                if (ngx_http_activity_ws_utf8(payload, f.len)
                    != utf8_reference(payload, f.len))
                {
                    abort();
                }

                continue;
            }

            msg_opcode = f.opcode;
            break;
        }

        if (msg_len + f.len > MESSAGE_MAX) {
            goto done;              /* 1009 */
        }

        if (msg == NULL) {
            msg = malloc(MESSAGE_MAX);
            if (msg == NULL) {
                goto done;
            }
        }

        memcpy(msg + msg_len, payload, f.len);
        msg_len += f.len;

        if (f.fin) {
            if (ngx_http_activity_ws_utf8(msg, msg_len)
                != utf8_reference(msg, msg_len))
            {
                abort();
            }

            msg_len = 0;
            msg_opcode = 0;
        }
    }

done:

    free(msg);
    free(in);

    return 0;
}


static void
check_header(const unsigned char *p, size_t len, int rc,
    const ngx_http_activity_ws_frame_t *f)
{
    if (rc < 0) {
        if (rc != -NGX_HTTP_ACTIVITY_WS_PROTOCOL
            && rc != -NGX_HTTP_ACTIVITY_WS_TOO_BIG)
        {
            abort();
        }

        return;
    }

    if (rc == 0) {
        if (len >= 14) {
            abort();                /* a whole header was there */
        }

        return;
    }

    if ((size_t) rc != f->header || f->header > len
        || (f->header != 6 && f->header != 8 && f->header != 14)
        || f->len > MESSAGE_MAX || !f->masked
        || (p[0] & 0x70) != 0)
    {
        abort();
    }

    if (f->opcode >= 0x8 && (!f->fin || f->len > 125)) {
        abort();
    }

    if (memcmp(f->mask, p + f->header - 4, 4) != 0) {
        abort();
    }
}


/*
 * RFC 3629, section 4:
 *
 *   UTF8-2 = %xC2-DF UTF8-tail
 *   UTF8-3 = %xE0 %xA0-BF UTF8-tail / %xE1-EC 2( UTF8-tail ) /
 *            %xED %x80-9F UTF8-tail / %xEE-EF 2( UTF8-tail )
 *   UTF8-4 = %xF0 %x90-BF 2( UTF8-tail ) / %xF1-F3 3( UTF8-tail ) /
 *            %xF4 %x80-8F 2( UTF8-tail )
 */

static int
utf8_reference(const unsigned char *p, size_t len)
{
    size_t         i, n, k;
    unsigned char  lo, hi, c;

    for (i = 0; i < len; i += n + 1) {
        c = p[i];
        lo = 0x80;
        hi = 0xbf;

        if (c <= 0x7f) {
            n = 0;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0) {
                lo = 0xa0;
            } else if (c == 0xed) {
                hi = 0x9f;
            }
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0) {
                lo = 0x90;
            } else if (c == 0xf4) {
                hi = 0x8f;
            }
        } else {
            return 0;
        }

        if (len - i - 1 < n) {
            return 0;
        }

        for (k = 1; k <= n; k++) {
            c = p[i + k];

            if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xbf)) {
                return 0;
            }
        }
    }

    return 1;
}
