/*
 * UTF-8 checking, repair and cutting: plain C, compiled into both the
 * module and the worker (see activity_utf8.c).
 */

#ifndef ACTIVITY_UTF8_H
#define ACTIVITY_UTF8_H

#include <stddef.h>


/* U+FFFD REPLACEMENT CHARACTER in UTF-8 */
#define ACTIVITY_UTF8_FFFD      "\xef\xbf\xbd"
#define ACTIVITY_UTF8_FFFD_LEN  3


/*
 * The sequence at p (p < last): its length (1..4) when it is one valid
 * UTF-8 character; else 0 with *bad set to the length of its maximal
 * subpart (1..3), the bytes that one U+FFFD replaces.
 */
size_t activity_utf8_next(const unsigned char *p, const unsigned char *last,
    size_t *bad);

/* Offset of the first invalid sequence in s[0..len), or len. */
size_t activity_utf8_check(const unsigned char *s, size_t len);

/* The length of s once repaired (at most 3 * len). */
size_t activity_utf8_repaired_len(const unsigned char *s, size_t len);

/*
 * Copies s to dst with every invalid sequence replaced by U+FFFD; dst
 * has room for activity_utf8_repaired_len() bytes. Returns the end.
 */
unsigned char *activity_utf8_repair(unsigned char *dst,
    const unsigned char *s, size_t len);

/*
 * The length of the longest prefix of s, at most max bytes, that ends
 * on a character boundary (s is valid UTF-8).
 */
size_t activity_utf8_cut(const unsigned char *s, size_t len, size_t max);


#endif /* ACTIVITY_UTF8_H */
