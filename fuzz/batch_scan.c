
/*
 * libFuzzer target: a message of the events channel through
 * common/activity_batch.c, the module's tree-less reader, against the
 * jansson path it stands in for (ngx_http_activity_fanout_subscribe.c):
 * whatever the reader takes must be JSON that jansson loads as an array
 * of as many objects, and each event's text, offset and eventType must
 * be what that path takes from the tree: the offset member's string,
 * json_dumps(JSON_COMPACT) of the event without it, eventType's string.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../common/activity_batch.h"


static int
same_span(const char *s, size_t len, const char *p, size_t n)
{
    return (s == NULL && p == NULL)
           || (s != NULL && p != NULL && len == n && memcmp(s, p, n) == 0);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                      n, i;
    char                    *copy, *text;
    json_t                  *root, *event, *v;
    activity_batch_event_t   ev[ACTIVITY_BATCH_MAX];

    copy = malloc(size + 1);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, size);

    n = activity_batch_scan(copy, size, ev, ACTIVITY_BATCH_MAX);

    /* it reads only */

    if (memcmp(copy, data, size) != 0) {
        abort();
    }

    if (n < 0) {
        free(copy);
        return 0;
    }

    root = json_loadb((const char *) data, size, 0, NULL);

    if (!json_is_array(root) || json_array_size(root) != (size_t) n) {
        abort();
    }

    for (i = 0; i < n; i++) {
        activity_batch_close(&ev[i]);
    }

    for (i = 0; i < n; i++) {
        event = json_array_get(root, i);

        if (!json_is_object(event)) {
            abort();
        }

        v = json_object_get(event, "offset");

        if (ev[i].offset) {
            if (!json_is_string(v)
                || !same_span(ev[i].offset, ev[i].offset_len,
                              json_string_value(v), json_string_length(v)))
            {
                abort();
            }

            json_object_del(event, "offset");

        } else if (v != NULL) {
            abort();
        }

        v = json_object_get(event, "eventType");

        if (!same_span(ev[i].type, ev[i].type_len,
                       json_string_value(v),
                       json_is_string(v) ? json_string_length(v) : 0))
        {
            abort();
        }

        text = json_dumps(event, JSON_COMPACT);

        if (text == NULL
            || !same_span(ev[i].text, ev[i].len, text, strlen(text)))
        {
            abort();
        }

        free(text);
    }

    json_decref(root);
    free(copy);

    return 0;
}
