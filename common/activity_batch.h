
/*
 * The worker's published batch of events, read without a JSON tree
 * (see activity_batch.c): compiled into the module, fuzzed against
 * jansson in fuzz/batch_scan.c.
 */

#ifndef ACTIVITY_BATCH_H
#define ACTIVITY_BATCH_H

#include <stddef.h>


/* most events of one message the scan takes; more: the JSON parser */
#define ACTIVITY_BATCH_MAX  256


/*
 * One event of the batch. Its text as json_dumps(JSON_COMPACT) would
 * give it without the "offset" member is text[0..len) once
 * activity_batch_close() wrote its closing brace (over the comma or the
 * quote that began the member). offset: the member's string value,
 * NULL without one; type: eventType's string value, NULL when absent
 * or not a string. None of them holds an escape.
 */
typedef struct {
    char        *text;
    size_t       len;
    const char  *offset;
    size_t       offset_len;
    const char  *type;
    size_t       type_len;
} activity_batch_event_t;


/*
 * A JSON array of objects whose every event text is byte for byte what
 * jansson would dump of it: compact, numbers as jansson writes them
 * (integers of up to 18 digits, reals as "%.17g"), strings of valid
 * UTF-8 with no escape but \" \\ \b \f \n \r \t (none in keys that
 * matter, eventType or offset), no duplicate key, an "offset" member
 * only last and with a string value, at most ACTIVITY_BATCH_MAX events.
 * Returns the number of events, or -1: anything else (not necessarily
 * invalid JSON), for a JSON parser to read. Reads only, writes nothing.
 */
int activity_batch_scan(const char *p, size_t len,
    activity_batch_event_t *ev, size_t max);

/* Writes the closing brace of an event that had an offset. */
void activity_batch_close(activity_batch_event_t *ev);


#endif /* ACTIVITY_BATCH_H */
