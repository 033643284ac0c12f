
/*
 * libFuzzer target: an event as it arrives on the queue or at the ingest
 * endpoint, through common/activity_event.c (compiled into the worker and the
 * module): event_parse() on the raw bytes, then each validator on them
 * as a C string. An accepted event is checked for what the PostgreSQL
 * writer relies on, and event_parse() (which reads the common shape
 * without a jansson tree) must give what event_parse_tree() gives:
 * the same verdict, the same fields.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common/activity_event.h"
#include "../common/activity_utf8.h"


static int
same_string(const char *a, const char *b)
{
    return (a == NULL && b == NULL)
           || (a != NULL && b != NULL && strcmp(a, b) == 0);
}


/* event_parse() against the jansson path, field by field */
static void
compare_paths(const char *text, size_t size)
{
    event_t  a, b;
    char     ea[256], eb[256];
    int      ra, rb;

    ra = event_parse(&a, text, size, ea, sizeof(ea));
    rb = event_parse_tree(&b, text, size, eb, sizeof(eb));

    if (ra != rb) {
        abort();
    }

    if (ra != 0) {
        if (strcmp(ea, eb) != 0) {
            abort();
        }
        return;
    }

    if (strcmp(a.id, b.id) != 0 || !same_string(a.type, b.type)
        || !same_string(a.user_id, b.user_id)
        || !same_string(a.timestamp, b.timestamp)
        || !same_string(a.user_agent, b.user_agent)
        || !same_string(a.endpoint, b.endpoint)
        || !same_string(a.method, b.method)
        || (a.repaired == NULL) != (b.repaired == NULL)
        || (a.repaired != NULL && strcmp(a.repaired, b.repaired) != 0)
        || a.cut != b.cut || a.ts_ms != b.ts_ms
        || a.has_status != b.has_status || a.status != b.status
        || a.has_duration != b.has_duration
        || memcmp(&a.duration_ms, &b.duration_ms, sizeof(double)) != 0
        || a.has_ip != b.has_ip || strcmp(a.ip, b.ip) != 0)
    {
        abort();
    }

    event_free(&a);
    event_free(&b);
}


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

    compare_paths(text, size);

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
