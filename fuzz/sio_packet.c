
/*
 * libFuzzer target: one text message from a dashboard client, taken the
 * way ngx_http_activity_sio_session.c takes it.
 *
 * As Engine.IO: the packet type, then for "4" the Socket.IO packet
 * (ngx_http_activity_sio_parse), whose JSON goes to jansson with
 * JSON_REJECT_DUPLICATES - CONNECT's auth object and its "token",
 * EVENT's array with the event name first and its argument (a room name
 * or an array of them). As the plain protocol: a JSON object with
 * "subscribe", "unsubscribe" or "auth". The parser's results are checked
 * against the input they point into.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../ngx_module/ngx_http_activity_sio.h"


static void rooms(json_t *names);
static void check_packet(const unsigned char *p, size_t len,
    const ngx_http_activity_sio_packet_t *pkt);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t                          *root, *arg;
    unsigned char                   *in;
    const char                      *s;
    ngx_http_activity_sio_packet_t   pkt;

    in = malloc(size ? size : 1);
    if (in == NULL) {
        return 0;
    }

    memcpy(in, data, size);

    /* Socket.IO, inside an Engine.IO message */

    if (size && in[0] == '4') {
        memset(&pkt, 0xa5, sizeof(pkt));

        if (ngx_http_activity_sio_parse(in + 1, size - 1, &pkt) == 0) {
            check_packet(in + 1, size - 1, &pkt);

            if (pkt.type == 0 && pkt.data_len) {
                root = json_loadb((const char *) pkt.data, pkt.data_len,
                                  JSON_REJECT_DUPLICATES, NULL);
                s = json_string_value(json_object_get(root, "token"));
                if (s) {
                    (void) strlen(s);
                }
                json_decref(root);

            } else if (pkt.type == 2) {
                root = json_loadb((const char *) pkt.data, pkt.data_len,
                                  JSON_REJECT_DUPLICATES, NULL);
                s = json_string_value(json_array_get(root, 0));

                if (s && (strcmp(s, "subscribe") == 0
                          || strcmp(s, "unsubscribe") == 0))
                {
                    rooms(json_array_get(root, 1));
                }

                json_decref(root);
            }
        }
    }

    /* the plain protocol */

    root = json_loadb((const char *) in, size, JSON_REJECT_DUPLICATES, NULL);

    if (json_is_object(root)) {
        if ((arg = json_object_get(root, "subscribe")) != NULL
            || (arg = json_object_get(root, "unsubscribe")) != NULL)
        {
            rooms(arg);

        } else if ((arg = json_object_get(root, "auth")) != NULL) {
            s = json_string_value(arg);
            if (s) {
                (void) strlen(s);
            }
        }
    }

    json_decref(root);
    free(in);

    return 0;
}


/* as ngx_http_activity_dashboard_rooms(): a name or up to 16 of them */

static void
rooms(json_t *names)
{
    size_t       i;
    json_t      *list, *item, *unknown, *result;
    const char  *s;

    if (json_is_string(names)) {
        list = json_pack("[O]", names);

    } else if (json_is_array(names) && json_array_size(names) <= 16) {
        list = json_incref(names);

    } else {
        return;
    }

    unknown = json_array();

    json_array_foreach(list, i, item) {
        s = json_string_value(item);

        if (s == NULL || strncmp(s, "dashboard:", 10) != 0) {
            json_array_append(unknown, item);
        }
    }

    json_decref(list);

    result = json_pack("{s:b,s:[]}", "ok", json_array_size(unknown) == 0,
                       "rooms");

    if (result && json_array_size(unknown)) {
        json_object_set(result, "unknown", unknown);
    }

    s = json_dumps(result, JSON_COMPACT);
    free((char *) s);

    json_decref(unknown);
    json_decref(result);
}


static void
check_packet(const unsigned char *p, size_t len,
    const ngx_http_activity_sio_packet_t *pkt)
{
    const unsigned char  *end;

    end = p + len;

    if (pkt->type < 0 || pkt->type > 4
        || pkt->ack < -1 || pkt->ack > NGX_HTTP_ACTIVITY_SIO_ACK_MAX
        || pkt->nsp_len == 0 || pkt->nsp[0] != '/'
        || pkt->data < p || pkt->data > end
        || pkt->data + pkt->data_len != end)
    {
        abort();
    }

    /* "/" when none is named, else a slice of the input */

    if (pkt->nsp >= p && pkt->nsp < end) {
        if (pkt->nsp + pkt->nsp_len > end || pkt->nsp_len > 128) {
            abort();
        }

    } else if (pkt->nsp_len != 1) {
        abort();
    }

    if (pkt->data_len && pkt->data[0] != '{' && pkt->data[0] != '[') {
        abort();
    }
}
