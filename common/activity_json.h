/*
 * JSON string bodies that are always valid: plain C, compiled into both
 * the module (the event writer) and the fuzz target (see activity_json.c).
 */

#ifndef ACTIVITY_JSON_H
#define ACTIVITY_JSON_H

#include <stddef.h>


#define ACTIVITY_JSON_NO_LIMIT  ((size_t) -1)


/*
 * The body of a JSON string (no quotes) holding s: invalid UTF-8 becomes
 * U+FFFD (activity_utf8.c), '"', '\' and control characters are escaped
 * (NUL as \u0000), and the text stops before the first character that
 * would take it past max bytes of UTF-8 (the repaired text's length,
 * escapes aside) or the escaped body past max_out bytes.
 * activity_json_len() is the length that activity_json_copy() then
 * writes into dst; *cut, when not NULL, tells whether characters were
 * left out.
 */
size_t activity_json_len(const unsigned char *s, size_t len, size_t max,
    size_t max_out, int *cut);
unsigned char *activity_json_copy(unsigned char *dst, const unsigned char *s,
    size_t len, size_t max, size_t max_out);


#endif /* ACTIVITY_JSON_H */
