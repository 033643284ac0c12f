
/*
 * RFC 6455 frames: parsing what clients send, writing server headers.
 */


#include <string.h>

#include "ngx_http_activity_ws.h"


static size_t ngx_http_activity_ws_token(const unsigned char *p,
    const unsigned char *end);
static const unsigned char *ngx_http_activity_ws_ows(const unsigned char *p,
    const unsigned char *end);
static int ngx_http_activity_ws_bits(const unsigned char *v, size_t n);
static int ngx_http_activity_ws_is(const unsigned char *p, size_t n,
    const char *s);


int
ngx_http_activity_ws_parse(const unsigned char *p, size_t len, uint64_t max,
    ngx_http_activity_ws_frame_t *f)
{
    return ngx_http_activity_ws_parse_ext(p, len, max, 0, f);
}


int
ngx_http_activity_ws_parse_ext(const unsigned char *p, size_t len,
    uint64_t max, int deflate, ngx_http_activity_ws_frame_t *f)
{
    size_t    need, i;
    unsigned  opcode, control;
    uint64_t  n;

    if (len < 2) {
        return 0;
    }

    /*
     * RSV2 and RSV3 belong to no extension we speak; RSV1 only with
     * permessage-deflate, and only where a message begins (RFC 7692, 6)
     */

    if (p[0] & 0x30) {
        return -NGX_HTTP_ACTIVITY_WS_PROTOCOL;
    }

    opcode = p[0] & 0x0f;

    if ((p[0] & NGX_HTTP_ACTIVITY_WS_RSV1)
        && (!deflate
            || !(opcode == NGX_HTTP_ACTIVITY_WS_TEXT
                 || opcode == NGX_HTTP_ACTIVITY_WS_BINARY)))
    {
        return -NGX_HTTP_ACTIVITY_WS_PROTOCOL;
    }

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
    f->rsv1 = (p[0] & NGX_HTTP_ACTIVITY_WS_RSV1) ? 1 : 0;
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


/*
 * Sec-WebSocket-Extensions (RFC 6455, 9.1; RFC 7230 for the tokens):
 *
 *   extension-list  = 1#( token *( OWS ";" OWS extension-param ) )
 *   extension-param = token [ OWS "=" OWS ( token / quoted-string ) ]
 *
 * An offer of permessage-deflate is taken (RFC 7692, 7.1) when each of
 * its parameters is known, given once, and valid:
 * server_no_context_takeover and client_no_context_takeover with no
 * value, server_max_window_bits with 8 to 15, client_max_window_bits
 * with 8 to 15 or no value.  Any other offer is declined and the next
 * one considered.
 */

int
ngx_http_activity_ws_deflate_offer(const unsigned char *p, size_t len,
    ngx_http_activity_ws_deflate_t *d)
{
    int                             ok, bits;
    size_t                          n, vn;
    unsigned                        seen, bit;
    unsigned char                   v[3];
    const unsigned char            *end, *name;
    ngx_http_activity_ws_deflate_t  offer;

    end = p + len;

    for ( ;; ) {

        /* empty list elements are allowed: ", , x" */

        p = ngx_http_activity_ws_ows(p, end);

        if (p == end) {
            return 0;
        }

        if (*p == ',') {
            p++;
            continue;
        }

        n = ngx_http_activity_ws_token(p, end);
        if (n == 0) {
            return -1;
        }

        ok = ngx_http_activity_ws_is(p, n, "permessage-deflate");
        p += n;

        offer.server_max_window_bits = 0;
        offer.client_max_window_bits = 0;
        seen = 0;

        for ( ;; ) {
            p = ngx_http_activity_ws_ows(p, end);

            if (p == end || *p == ',') {
                break;
            }

            if (*p != ';') {
                return -1;
            }

            p = ngx_http_activity_ws_ows(p + 1, end);

            name = p;
            n = ngx_http_activity_ws_token(p, end);
            if (n == 0) {
                return -1;
            }

            p = ngx_http_activity_ws_ows(p + n, end);

            /* the value, unquoted; vn > 2 is too long for any of ours */

            vn = (size_t) -1;

            if (p < end && *p == '=') {
                p = ngx_http_activity_ws_ows(p + 1, end);

                if (p < end && *p == '"') {
                    vn = 0;

                    for (p++; /* void */; p++) {
                        if (p == end) {
                            return -1;
                        }

                        if (*p == '"') {
                            p++;
                            break;
                        }

                        if (*p == '\\') {
                            if (++p == end) {
                                return -1;
                            }
                        }

                        if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
                            return -1;
                        }

                        if (vn < sizeof(v)) {
                            v[vn] = *p;
                        }

                        vn++;
                    }

                } else {
                    vn = ngx_http_activity_ws_token(p, end);
                    if (vn == 0) {
                        return -1;
                    }

                    memcpy(v, p, vn < sizeof(v) ? vn : sizeof(v));
                    p += vn;
                }
            }

            if (!ok) {
                continue;
            }

            if (ngx_http_activity_ws_is(name, n,
                                        "server_no_context_takeover"))
            {
                bit = 1;
                ok = (vn == (size_t) -1);

            } else if (ngx_http_activity_ws_is(name, n,
                                               "client_no_context_takeover"))
            {
                bit = 2;
                ok = (vn == (size_t) -1);

            } else if (ngx_http_activity_ws_is(name, n,
                                               "server_max_window_bits"))
            {
                bit = 4;
                bits = (vn == (size_t) -1) ? -1
                                           : ngx_http_activity_ws_bits(v, vn);
                ok = (bits > 0);
                offer.server_max_window_bits = ok ? bits : 0;

            } else if (ngx_http_activity_ws_is(name, n,
                                               "client_max_window_bits"))
            {
                bit = 8;
                bits = (vn == (size_t) -1) ? 15
                                           : ngx_http_activity_ws_bits(v, vn);
                ok = (bits > 0);
                offer.client_max_window_bits = ok ? bits : 0;

            } else {
                bit = 0;
                ok = 0;
            }

            if (seen & bit) {
                ok = 0;
            }

            seen |= bit;
        }

        if (ok) {
            *d = offer;
            return 1;
        }
    }
}


/*
 * Both directions without context takeover, whatever the offer said
 * (RFC 7692, 7.1.1: the server may add either): the server compresses
 * each message alone, once for every connection, and inflates each of a
 * client's messages alone.  server_max_window_bits is echoed when
 * offered: the server then compresses only messages that fit that
 * window, so that no match reaches further back.  client_max_window_bits
 * is not answered: the server inflates with the largest window.
 */

size_t
ngx_http_activity_ws_deflate_answer(unsigned char *dst,
    const ngx_http_activity_ws_deflate_t *d)
{
    size_t         n;
    unsigned       bits;

    static const char  answer[] = "permessage-deflate; "
                                  "server_no_context_takeover; "
                                  "client_no_context_takeover";
    static const char  window[] = "; server_max_window_bits=";

    n = sizeof(answer) - 1;
    memcpy(dst, answer, n);

    bits = d->server_max_window_bits;

    if (bits >= 8 && bits <= 15) {
        memcpy(dst + n, window, sizeof(window) - 1);
        n += sizeof(window) - 1;

        if (bits >= 10) {
            dst[n++] = '1';
        }

        dst[n++] = (unsigned char) ('0' + bits % 10);
    }

    return n;
}


/* RFC 7230 tchar */

static size_t
ngx_http_activity_ws_token(const unsigned char *p, const unsigned char *end)
{
    size_t         n;
    unsigned char  ch;

    for (n = 0; p + n < end; n++) {
        ch = p[n];

        if ((ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a'
                                         && (ch | 0x20) <= 'z'))
        {
            continue;
        }

        if (ch == '\0' || strchr("!#$%&'*+-.^_`|~", ch) == NULL) {
            break;
        }
    }

    return n;
}


static const unsigned char *
ngx_http_activity_ws_ows(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }

    return p;
}


/* "8" to "15", no leading zero (RFC 7692, 7.1.2.1); -1 otherwise */

static int
ngx_http_activity_ws_bits(const unsigned char *v, size_t n)
{
    if (n == 1 && v[0] >= '8' && v[0] <= '9') {
        return v[0] - '0';
    }

    if (n == 2 && v[0] == '1' && v[1] >= '0' && v[1] <= '5') {
        return 10 + v[1] - '0';
    }

    return -1;
}


/* a token equal to s, ignoring case */

static int
ngx_http_activity_ws_is(const unsigned char *p, size_t n, const char *s)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (s[i] == '\0' || (p[i] | 0x20) != (unsigned char) (s[i] | 0x20)) {
            return 0;
        }
    }

    return s[n] == '\0';
}
