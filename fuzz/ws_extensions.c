
/*
 * libFuzzer target: a Sec-WebSocket-Extensions value, read the way the
 * dashboard handshake reads it (ngx_http_activity_ws_deflate_offer()),
 * then the answer written for an accepted offer.
 *
 * Invariants: the result is -1, 0 or 1; an accepted offer's window bits
 * are 0 or 8 to 15; the answer fits NGX_HTTP_ACTIVITY_WS_ANSWER_MAX and
 * is itself an offer the parser accepts with the same server window; a
 * list read to its end without error (0) takes a plain offer appended
 * after it; an accepted offer is the first one, whatever follows it.
 * The input is copied into a buffer of its exact size so that any read
 * past it is an ASan report.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../ngx_module/ngx_http_activity_ws.h"


static int
bits_ok(unsigned bits)
{
    return bits == 0 || (bits >= 8 && bits <= 15);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                              rc, rc2;
    size_t                           n;
    unsigned char                   *in, *more;
    unsigned char                    answer[NGX_HTTP_ACTIVITY_WS_ANSWER_MAX];
    ngx_http_activity_ws_deflate_t   d, d2;

    static const char  plain[] = ", permessage-deflate";
    static const char  junk[] = ", \x01\"";

    in = malloc(size ? size : 1);
    if (in == NULL) {
        return 0;
    }

    memcpy(in, data, size);

    memset(&d, 0xa5, sizeof(d));

    rc = ngx_http_activity_ws_deflate_offer(in, size, &d);

    if (rc < -1 || rc > 1) {
        abort();
    }

    more = malloc(size + sizeof(plain));
    if (more == NULL) {
        free(in);
        return 0;
    }

    if (rc == 1) {
        if (!bits_ok(d.server_max_window_bits)
            || !bits_ok(d.client_max_window_bits))
        {
            abort();
        }

        n = ngx_http_activity_ws_deflate_answer(answer, &d);

        if (n == 0 || n > sizeof(answer)) {
            abort();
        }

        rc2 = ngx_http_activity_ws_deflate_offer(answer, n, &d2);

        if (rc2 != 1
            || d2.server_max_window_bits != d.server_max_window_bits
            || d2.client_max_window_bits != 0)
        {
            abort();
        }

        /* the first acceptable offer wins: what follows is not read */

        memcpy(more, in, size);
        memcpy(more + size, junk, sizeof(junk) - 1);

        rc2 = ngx_http_activity_ws_deflate_offer(more,
                                                 size + sizeof(junk) - 1,
                                                 &d2);

        if (rc2 != 1
            || d2.server_max_window_bits != d.server_max_window_bits
            || d2.client_max_window_bits != d.client_max_window_bits)
        {
            abort();
        }

    } else if (rc == 0) {

        /* a well-formed list: one more element is read too */

        memcpy(more, in, size);
        memcpy(more + size, plain, sizeof(plain) - 1);

        rc2 = ngx_http_activity_ws_deflate_offer(more,
                                                 size + sizeof(plain) - 1,
                                                 &d2);

        if (rc2 != 1 || d2.server_max_window_bits != 0
            || d2.client_max_window_bits != 0)
        {
            abort();
        }
    }

    free(more);
    free(in);

    return 0;
}
