
/*
 * libFuzzer target: any bytes into the event writer's strings
 * (common/activity_json.c, what ngx_http_activity_event.c writes every
 * string of an event with) make JSON that jansson parses, with each
 * string the input repaired (invalid UTF-8 as U+FFFD), cut at a
 * character boundary within its limit; and the worker stores that event
 * (event_parse() accepts it).
 *
 * Input: byte 0 and 1 give the split of the rest into userId, userAgent
 * and a details value; byte 2 a byte limit for the userId, byte 3 a limit
 * of escaped bytes for the details value (0: what the module allows).
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../common/activity_event.h"
#include "../common/activity_json.h"
#include "../common/activity_utf8.h"


static unsigned char *put_string(unsigned char *p, const uint8_t *s,
    size_t len, size_t max, size_t max_out);
static unsigned char *repaired(json_t *v, const uint8_t *s, size_t len,
    size_t *n);
static void check_string(json_t *v, const uint8_t *s, size_t len,
    size_t max);
static void check_prefix(json_t *v, const uint8_t *s, size_t len,
    size_t max_out);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char            err[256];
    size_t          n0, n1, n2, max, max_out, room;
    json_t         *root, *meta;
    event_t         ev;
    json_error_t    jerr;
    unsigned char  *text, *p;
    const uint8_t  *s0, *s1, *s2;

    if (size < 4) {
        return 0;
    }

    max = data[2] ? data[2] : ACTIVITY_JSON_NO_LIMIT;
    /* as the module gives a details value at most what is left of 8 KiB */
    max_out = data[3] ? data[3] : EVENT_DETAILS_MAX - sizeof("{\"k\":\"\"}");
    data += 4;
    size -= 4;

    n0 = size ? data[-4] % (size + 1) : 0;
    n1 = (size - n0) ? data[-3] % (size - n0 + 1) : 0;
    n2 = size - n0 - n1;
    s0 = data;
    s1 = s0 + n0;
    s2 = s1 + n1;

    room = 512 + activity_json_len(s0, n0, max, ACTIVITY_JSON_NO_LIMIT, NULL)
           + activity_json_len(s1, n1, ACTIVITY_JSON_NO_LIMIT,
                               ACTIVITY_JSON_NO_LIMIT, NULL)
           + activity_json_len(s2, n2, ACTIVITY_JSON_NO_LIMIT, max_out, NULL);

    text = malloc(room);
    if (text == NULL) {
        return 0;
    }

    p = text;
    p += sprintf((char *) p, "{\"id\":"
                 "\"0193a000-0000-7000-8000-000000000001\","
                 "\"eventType\":\"API_CALL\",\"userId\":");
    p = put_string(p, s0, n0, max, ACTIVITY_JSON_NO_LIMIT);
    p += sprintf((char *) p, ",\"timestamp\":\"2026-11-27T12:00:00.123Z\","
                 "\"metadata\":{\"ipAddress\":\"127.0.0.1\",\"userAgent\":");
    p = put_string(p, s1, n1, ACTIVITY_JSON_NO_LIMIT, ACTIVITY_JSON_NO_LIMIT);
    p += sprintf((char *) p, ",\"endpoint\":\"/\",\"method\":\"GET\","
                 "\"status\":200,\"durationMs\":1,\"details\":{\"k\":");
    p = put_string(p, s2, n2, ACTIVITY_JSON_NO_LIMIT, max_out);
    p += sprintf((char *) p, "}}}");

    if ((size_t) (p - text) > room) {
        abort();
    }

    /* jansson: valid UTF-8 everywhere, no duplicates; NUL is \u0000 */

    root = json_loadb((char *) text, p - text,
                      JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        fprintf(stderr, "jansson refused: %s\n", jerr.text);
        abort();
    }

    meta = json_object_get(root, "metadata");

    check_string(json_object_get(root, "userId"), s0, n0, max);
    check_string(json_object_get(meta, "userAgent"), s1, n1,
                 ACTIVITY_JSON_NO_LIMIT);
    check_prefix(json_object_get(json_object_get(meta, "details"), "k"),
                 s2, n2, max_out);

    json_decref(root);

    /* and the worker takes it, repairing \u0000 */

    if (event_parse(&ev, (char *) text, p - text, err, sizeof(err)) != 0) {
        fprintf(stderr, "worker refused: %s\n", err);
        abort();
    }

    event_free(&ev);
    free(text);

    return 0;
}


static unsigned char *
put_string(unsigned char *p, const uint8_t *s, size_t len, size_t max,
    size_t max_out)
{
    unsigned char  *start;

    *p++ = '"';
    start = p;
    p = activity_json_copy(p, s, len, max, max_out);

    if ((size_t) (p - start) > max_out) {
        abort();
    }

    *p++ = '"';

    return p;
}


/*
 * v must be a JSON string; returns the input repaired (malloc'ed, *n
 * bytes), which the caller frees.
 */

static unsigned char *
repaired(json_t *v, const uint8_t *s, size_t len, size_t *n)
{
    unsigned char  *want;

    if (!json_is_string(v)) {
        abort();
    }

    want = malloc(len * 3 + 1);
    if (want == NULL) {
        abort();
    }

    *n = activity_utf8_repair(want, s, len) - want;

    return want;
}


/* the decoded string is the input repaired, cut within max */

static void
check_string(json_t *v, const uint8_t *s, size_t len, size_t max)
{
    size_t          n, cut;
    unsigned char  *want;

    want = repaired(v, s, len, &n);
    cut = activity_utf8_cut(want, n, max);

    if (json_string_length(v) != cut
        || memcmp(json_string_value(v), want, cut) != 0)
    {
        abort();
    }

    free(want);
}


/*
 * Cut by escaped bytes: the decoded string is a prefix of the input
 * repaired, ending on a character boundary; all of it when it fits.
 */

static void
check_prefix(json_t *v, const uint8_t *s, size_t len, size_t max_out)
{
    size_t          n, got;
    unsigned char  *want;

    want = repaired(v, s, len, &n);
    got = json_string_length(v);

    if (got > n || memcmp(json_string_value(v), want, got) != 0
        || activity_utf8_cut(want, n, got) != got
        || (activity_json_len(s, len, ACTIVITY_JSON_NO_LIMIT,
                              ACTIVITY_JSON_NO_LIMIT, NULL) <= max_out
            && got != n))
    {
        abort();
    }

    free(want);
}
