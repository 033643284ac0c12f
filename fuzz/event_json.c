
/*
 * libFuzzer target: an event as it arrives on the queue or at the ingest
 * endpoint, through common/activity_event.c (compiled into the worker and the
 * module): event_parse() on the raw bytes, then each validator on them
 * as a C string. An accepted event is checked for what the PostgreSQL
 * writer relies on.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common/activity_event.h"
#include "../common/activity_utf8.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char      *text, err[256];
    size_t     i;
    int64_t    ms;
    event_t    ev;

    /* exactly size bytes, as the queue hands them over */

    text = malloc(size ? size : 1);
    if (text == NULL) {
        return 0;
    }

    memcpy(text, data, size);

    if (event_parse(&ev, text, size, err, sizeof(err)) == 0) {
        if (strlen(ev.id) != 36 || !event_valid_uuid(ev.id)
            || ev.type == NULL || !event_valid_type(ev.type)
            || ev.timestamp == NULL || !event_valid_timestamp(ev.timestamp)
            || (ev.has_status && (ev.status < 0 || ev.status > 32767)))
        {
            abort();
        }

        for (i = 0; i < 36; i++) {
            if (ev.id[i] >= 'A' && ev.id[i] <= 'F') {
                abort();
            }
        }

        /* what PostgreSQL receives: repaired, UTF-8, no \u0000 */

        i = ev.repaired ? strlen(ev.repaired) : size;

        if (activity_utf8_check((const unsigned char *) ev.text, i) != i
            || event_bad_escapes((char *) ev.text, i, 0) != 0)
        {
            abort();
        }

        event_free(&ev);

    } else if (memchr(err, '\0', sizeof(err)) == NULL) {
        abort();
    }

    free(text);

    /* the validators take C strings */

    text = malloc(size + 1);
    if (text == NULL) {
        return 0;
    }

    memcpy(text, data, size);
    text[size] = '\0';

    (void) event_valid_uuid(text);
    (void) event_valid_type(text);

    if (event_valid_timestamp(text) != (event_timestamp_ms(text, &ms) == 0)) {
        abort();
    }

    free(text);

    return 0;
}
