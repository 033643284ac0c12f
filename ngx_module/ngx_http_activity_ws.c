
/*
 * RFC 6455 frames: parsing what clients send, writing server headers.
 */


#include "ngx_http_activity_ws.h"


int
ngx_http_activity_ws_parse(const unsigned char *p, size_t len, uint64_t max,
    ngx_http_activity_ws_frame_t *f)
{
    size_t    need, i;
    unsigned  opcode, control;
    uint64_t  n;

    if (len < 2) {
        return 0;
    }

    /* no extension is negotiated, so RSV1-3 must be clear */

    if (p[0] & 0x70) {
        return -NGX_HTTP_ACTIVITY_WS_PROTOCOL;
    }

    opcode = p[0] & 0x0f;

    switch (opcode) {
    case NGX_HTTP_ACTIVITY_WS_CONT:
    case NGX_HTTP_ACTIVITY_WS_TEXT:
    case NGX_HTTP_ACTIVITY_WS_BINARY:
        control = 0;
        break;

    case NGX_HTTP_ACTIVITY_WS_CLOSE:
    case NGX_HTTP_ACTIVITY_WS_PING:
    case NGX_HTTP_ACTIVITY_WS_PONG:
        control = 1;
        break;

    default:
        return -NGX_HTTP_ACTIVITY_WS_PROTOCOL;
    }

    f->fin = (p[0] & 0x80) ? 1 : 0;
    f->opcode = opcode;
    f->masked = (p[1] & 0x80) ? 1 : 0;

    /* every client frame is masked (5.1) */

    if (!f->masked) {
        return -NGX_HTTP_ACTIVITY_WS_PROTOCOL;
    }

    n = p[1] & 0x7f;

    if (control && (!f->fin || n > 125)) {
        return -NGX_HTTP_ACTIVITY_WS_PROTOCOL;
    }

    need = 2 + 4 + (n == 126 ? 2 : 0) + (n == 127 ? 8 : 0);

    if (len < need) {
        return 0;
    }

    if (n == 126) {
        n = ((uint64_t) p[2] << 8) | p[3];
        i = 4;

    } else if (n == 127) {
        n = 0;

        for (i = 2; i < 10; i++) {
            n = (n << 8) | p[i];
        }

        if (n >> 63) {
            return -NGX_HTTP_ACTIVITY_WS_PROTOCOL;
        }

    } else {
        i = 2;
    }

    if (n > max) {
        return -NGX_HTTP_ACTIVITY_WS_TOO_BIG;
    }

    f->mask[0] = p[i];
    f->mask[1] = p[i + 1];
    f->mask[2] = p[i + 2];
    f->mask[3] = p[i + 3];

    f->len = n;
    f->header = need;

    return (int) need;
}


void
ngx_http_activity_ws_unmask(unsigned char *p, size_t len,
    const unsigned char mask[4])
{
    size_t  i;

    for (i = 0; i < len; i++) {
        p[i] ^= mask[i & 3];
    }
}


size_t
ngx_http_activity_ws_header(unsigned char *dst, unsigned opcode,
    uint64_t len)
{
    size_t  i;

    dst[0] = (unsigned char) (0x80 | (opcode & 0x0f));

    if (len < 126) {
        dst[1] = (unsigned char) len;
        return 2;
    }

    if (len <= 0xffff) {
        dst[1] = 126;
        dst[2] = (unsigned char) (len >> 8);
        dst[3] = (unsigned char) len;
        return 4;
    }

    dst[1] = 127;

    for (i = 0; i < 8; i++) {
        dst[2 + i] = (unsigned char) (len >> (56 - 8 * i));
    }

    return 10;
}


/* strict UTF-8 (RFC 3629): no overlongs, no surrogates, <= U+10FFFF */

int
ngx_http_activity_ws_utf8(const unsigned char *p, size_t len)
{
    size_t    i, n, k;
    uint32_t  u, min;

    for (i = 0; i < len; /* void */) {
        u = p[i];

        if (u < 0x80) {
            i++;
            continue;
        }

        if (u >= 0xc2 && u <= 0xdf) {
            n = 1; u &= 0x1f; min = 0x80;

        } else if (u >= 0xe0 && u <= 0xef) {
            n = 2; u &= 0x0f; min = 0x800;

        } else if (u >= 0xf0 && u <= 0xf4) {
            n = 3; u &= 0x07; min = 0x10000;

        } else {
            return 0;
        }

        if (len - i - 1 < n) {
            return 0;
        }

        for (k = 1; k <= n; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }

            u = (u << 6) | (p[i + k] & 0x3f);
        }

        if (u < min || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff)) {
            return 0;
        }

        i += n + 1;
    }

    return 1;
}
