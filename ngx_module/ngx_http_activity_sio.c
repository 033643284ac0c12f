
/*
 * Socket.IO 5 packet parsing:
 *
 *     <type>[/<namespace>,][<ack id>][<JSON>]
 */


#include "ngx_http_activity_sio.h"


#define NGX_HTTP_ACTIVITY_SIO_NSP_MAX   128


int
ngx_http_activity_sio_parse(const unsigned char *p, size_t len,
    ngx_http_activity_sio_packet_t *pkt)
{
    size_t  i, start;

    static const unsigned char  root[] = "/";

    if (len == 0 || p[0] < '0' || p[0] > '4') {
        return -1;
    }

    pkt->type = p[0] - '0';
    pkt->nsp = root;
    pkt->nsp_len = 1;
    pkt->ack = -1;

    i = 1;

    if (i < len && p[i] == '/') {
        start = i;

        while (i < len && p[i] != ',') {
            i++;
        }

        if (i - start > NGX_HTTP_ACTIVITY_SIO_NSP_MAX) {
            return -1;
        }

        pkt->nsp = p + start;
        pkt->nsp_len = i - start;

        if (i < len) {
            i++;                        /* the "," */
        }
    }

    if (i < len && p[i] >= '0' && p[i] <= '9') {
        pkt->ack = 0;

        while (i < len && p[i] >= '0' && p[i] <= '9') {
            pkt->ack = pkt->ack * 10 + (p[i] - '0');

            if (pkt->ack > NGX_HTTP_ACTIVITY_SIO_ACK_MAX) {
                return -1;
            }

            i++;
        }
    }

    pkt->data = p + i;
    pkt->data_len = len - i;

    /* what follows is JSON: an object or an array, or nothing */

    if (pkt->data_len && p[i] != '{' && p[i] != '[') {
        return -1;
    }

    return 0;
}
