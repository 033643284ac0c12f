/*
 * JSON string bodies for the module's event writer: one pass repairs
 * UTF-8, escapes, and cuts at a character boundary, so that whatever
 * bytes a request carries, the event is JSON that a strict parser takes
 * (fuzz/event_writer.c checks this with jansson).
 */

#include <string.h>

#include "activity_json.h"
#include "activity_utf8.h"


#define activity_json_min(a, b)  ((a) < (b) ? (a) : (b))


/* 1 for the bytes written as they are: printable ASCII but '"' and '\\' */
static const unsigned char  activity_json_plain[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,     /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,     /* 0x10 */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,     /* 0x20: '"' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,     /* 0x30 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,     /* 0x40 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,     /* 0x50: '\\' */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,     /* 0x60 */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,     /* 0x70 */
    /* 0x80-0xff: 0, UTF-8 is checked */
};


static size_t activity_json_write(unsigned char *dst,
    const unsigned char *s, size_t len, size_t max, size_t max_out, int *cut);
static size_t activity_json_char(const unsigned char *p,
    const unsigned char *last, size_t *in, size_t *text, unsigned char *out);


size_t
activity_json_len(const unsigned char *s, size_t len, size_t max,
    size_t max_out, int *cut)
{
    return activity_json_write(NULL, s, len, max, max_out, cut);
}


unsigned char *
activity_json_copy(unsigned char *dst, const unsigned char *s, size_t len,
    size_t max, size_t max_out)
{
    return dst + activity_json_write(dst, s, len, max, max_out, NULL);
}


/* dst NULL: only count */

static size_t
activity_json_write(unsigned char *dst, const unsigned char *s, size_t len,
    size_t max, size_t max_out, int *cut)
{
    size_t                in, n, k, text, used, total;
    unsigned char         buf[6];
    const unsigned char  *p, *last, *from, *run;

    p = s;
    last = s + len;
    used = 0;
    total = 0;

    while (p < last) {
        /* most bytes: runs of printable ASCII that need no escape */

        for (run = p; run < last && activity_json_plain[*run]; run++) {
            /* void */
        }

        if (run > p) {
            k = (size_t) (run - p);
            k = activity_json_min(k, max - used);
            k = activity_json_min(k, max_out - total);

            if (dst != NULL) {
                memcpy(dst + total, p, k);
            }

            used += k;
            total += k;
            p += k;

            if (p < run) {
                break;                      /* a limit is reached */
            }

            continue;
        }

        n = activity_json_char(p, last, &in, &text, buf);
        from = buf;

        if (n == 0) {
            /* as it is */
            n = in;
            from = p;
        }

        if (used + text > max || total + n > max_out) {
            break;
        }

        if (dst != NULL) {
            memcpy(dst + total, from, n);
        }

        used += text;
        total += n;
        p += in;
    }

    if (cut != NULL) {
        *cut = p < last;
    }

    return total;
}


/*
 * One character at p: *in is the number of input bytes it takes, *text
 * the UTF-8 bytes it stands for (3 for a U+FFFD). Returns the number of
 * bytes put in out (an escape, or U+FFFD), or 0 when the input bytes
 * are to be copied as they are.
 */
static size_t
activity_json_char(const unsigned char *p, const unsigned char *last,
    size_t *in, size_t *text, unsigned char *out)
{
    size_t         n, bad;
    unsigned char  c;

    static const char  hex[] = "0123456789abcdef";

    c = *p;

    if (c >= 0x80) {
        n = activity_utf8_next(p, last, &bad);

        if (n == 0) {
            *in = bad;
            *text = ACTIVITY_UTF8_FFFD_LEN;
            memcpy(out, ACTIVITY_UTF8_FFFD, ACTIVITY_UTF8_FFFD_LEN);
            return ACTIVITY_UTF8_FFFD_LEN;
        }

        *in = n;
        *text = n;
        return 0;
    }

    *in = 1;
    *text = 1;

    switch (c) {

    case '"':
    case '\\':
        out[0] = '\\';
        out[1] = c;
        return 2;

    case '\n':
        out[0] = '\\';
        out[1] = 'n';
        return 2;

    case '\r':
        out[0] = '\\';
        out[1] = 'r';
        return 2;

    case '\t':
        out[0] = '\\';
        out[1] = 't';
        return 2;

    case '\b':
        out[0] = '\\';
        out[1] = 'b';
        return 2;

    case '\f':
        out[0] = '\\';
        out[1] = 'f';
        return 2;
    }

    if (c < 0x20) {
        out[0] = '\\';
        out[1] = 'u';
        out[2] = '0';
        out[3] = '0';
        out[4] = hex[c >> 4];
        out[5] = hex[c & 0x0f];
        return 6;
    }

    return 0;
}
