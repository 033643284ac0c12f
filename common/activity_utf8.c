/*
 * UTF-8 checking, repair and cutting, shared by the module (every string
 * it writes into an event) and the worker (bytes that arrive invalid all
 * the same are repaired, not refused).
 *
 * Valid means well-formed as Unicode defines it (Table 3-7): no overlong
 * forms, no surrogates, nothing above U+10FFFF, and every continuation
 * byte where one is due. An invalid sequence becomes one U+FFFD per
 * "maximal subpart" (the practice of Unicode 6+ and of the WHATWG
 * decoder): a lead byte and the continuation bytes that could still
 * have completed it make one U+FFFD; the decoder then goes on at the
 * first byte that did not fit. So "\xC3\xC3\xA9" is U+FFFD then U+00E9,
 * and "\xF0\x9F\x98" at the end of a string is one U+FFFD.
 */

#include <string.h>

#include "activity_utf8.h"


size_t
activity_utf8_next(const unsigned char *p, const unsigned char *last,
    size_t *bad)
{
    size_t         need, i;
    unsigned char  c, lo, hi;

    c = p[0];

    if (c < 0x80) {
        return 1;
    }

    /* the range of the second byte depends on the first (Table 3-7) */

    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;

    } else if (c == 0xe0) {
        need = 2;
        lo = 0xa0;                  /* no overlong forms */

    } else if (c >= 0xe1 && c <= 0xef) {
        need = 2;
        if (c == 0xed) {
            hi = 0x9f;              /* no surrogates */
        }

    } else if (c == 0xf0) {
        need = 3;
        lo = 0x90;                  /* no overlong forms */

    } else if (c >= 0xf1 && c <= 0xf3) {
        need = 3;

    } else if (c == 0xf4) {
        need = 3;
        hi = 0x8f;                  /* nothing above U+10FFFF */

    } else {
        /* 80..C1 (continuation, overlong lead), F5..FF */
        *bad = 1;
        return 0;
    }

    for (i = 1; i <= need; i++) {
        if (p + i >= last || p[i] < lo || p[i] > hi) {
            *bad = i;
            return 0;
        }

        lo = 0x80;
        hi = 0xbf;
    }

    return need + 1;
}


size_t
activity_utf8_check(const unsigned char *s, size_t len)
{
    size_t                n, bad;
    const unsigned char  *p, *last;

    p = s;
    last = s + len;

    while (p < last) {
        if (*p < 0x80) {
            p++;
            continue;
        }

        n = activity_utf8_next(p, last, &bad);
        if (n == 0) {
            break;
        }

        p += n;
    }

    return (size_t) (p - s);
}


size_t
activity_utf8_repaired_len(const unsigned char *s, size_t len)
{
    size_t                n, bad, total;
    const unsigned char  *p, *last;

    p = s;
    last = s + len;
    total = 0;

    while (p < last) {
        n = activity_utf8_next(p, last, &bad);

        if (n == 0) {
            p += bad;
            total += ACTIVITY_UTF8_FFFD_LEN;

        } else {
            p += n;
            total += n;
        }
    }

    return total;
}


unsigned char *
activity_utf8_repair(unsigned char *dst, const unsigned char *s, size_t len)
{
    size_t                n, bad;
    const unsigned char  *p, *last;

    p = s;
    last = s + len;

    while (p < last) {
        n = activity_utf8_next(p, last, &bad);

        if (n == 0) {
            memcpy(dst, ACTIVITY_UTF8_FFFD, ACTIVITY_UTF8_FFFD_LEN);
            dst += ACTIVITY_UTF8_FFFD_LEN;
            p += bad;
            continue;
        }

        while (n--) {
            *dst++ = *p++;
        }
    }

    return dst;
}


size_t
activity_utf8_cut(const unsigned char *s, size_t len, size_t max)
{
    size_t  n;

    if (len <= max) {
        return len;
    }

    /* s[max] is the first byte left out: not a character's middle */

    n = max;

    while (n > 0 && (s[n] & 0xc0) == 0x80) {
        n--;
    }

    return n;
}
