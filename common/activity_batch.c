
/*
 * A tree-less reader of the events channel's messages, for the common
 * case only: the worker publishes the event texts as queued (the module
 * writes them compact), each with its stream offset appended as a last
 * member.  Whatever this does not take for sure is left to jansson, so
 * that dashboards get the same bytes either way (fuzz/batch_scan.c).
 */


#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activity_batch.h"
#include "activity_event.h"
#include "activity_utf8.h"


/* nesting and keys an event may have here */
#define BATCH_DEPTH  32
#define BATCH_KEYS   256

/* digits of an integer that is sure to fit json_int_t */
#define BATCH_DIGITS  18

/* longest real taken (the longest dump of a double is 24 bytes) */
#define BATCH_REAL    32


typedef struct {
    const char  *key[BATCH_KEYS];
    size_t       key_len[BATCH_KEYS];
    size_t       nkeys;
    unsigned     depth;
} batch_ctx_t;


static const char *batch_value(batch_ctx_t *c, const char *p,
    const char *end);


/*
 * A string from its opening quote: the end past its closing quote, or
 * NULL. *escaped tells whether it held an escape.
 */

static const char *
batch_string(const char *p, const char *end, int *escaped)
{
    size_t                n, bad;
    const unsigned char  *u;

    *escaped = 0;

    for (p++; p < end; /* void */) {
        u = (const unsigned char *) p;

        if (*u == '"') {
            return p + 1;
        }

        if (*u < 0x20) {
            return NULL;
        }

        if (*u == '\\') {
            if (p + 1 >= end || strchr("\"\\bfnrt", p[1]) == NULL
                || p[1] == '\0')
            {
                return NULL;
            }

            *escaped = 1;
            p += 2;
            continue;
        }

        if (*u < 0x80) {
            p++;
            continue;
        }

        n = activity_utf8_next(u, (const unsigned char *) end, &bad);
        if (n == 0) {
            return NULL;
        }

        p += n;
    }

    return NULL;
}


/*
 * A real as jansson dumps it (json_dumps() of a double): "%.17g", ".0"
 * when that looks like an integer, the exponent without '+' or leading
 * zeros. Its length, or 0.
 */

static size_t
batch_real_dump(double d, char *buf, size_t size)
{
    int     n;
    char   *e, *z;
    size_t  len;

    n = snprintf(buf, size, "%.17g", d);
    if (n < 0 || (size_t) n + 3 > size) {
        return 0;
    }

    len = n;

    if (strchr(buf, '.') == NULL && strchr(buf, 'e') == NULL) {
        memcpy(buf + len, ".0", 3);
        len += 2;
    }

    e = strchr(buf, 'e');

    if (e) {
        e++;
        z = e + 1;

        if (*e == '-') {
            e++;
        }

        while (*z == '0') {
            z++;
        }

        if (z != e) {
            memmove(e, z, len - (z - buf) + 1);
            len -= z - e;
        }
    }

    return len;
}


/*
 * A number jansson dumps as it is written: an integer that surely fits
 * json_int_t (not "-0"), or a real written as jansson writes it.
 */

static const char *
batch_number(const char *p, const char *end)
{
    int          neg, real;
    char         num[BATCH_REAL], dump[BATCH_REAL + 8];
    double       d;
    size_t       len;
    const char  *s, *digits;

    s = p;
    neg = (*p == '-');
    p += neg;
    digits = p;
    real = 0;

    if (p < end && *p == '0') {
        p++;

    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p == digits) {
        return NULL;
    }

    if (p < end && *p == '.') {
        real = 1;

        for (p++; p < end && *p >= '0' && *p <= '9'; p++) { /* void */ }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        real = 1;
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        for ( /* void */ ; p < end && *p >= '0' && *p <= '9'; p++) {
            /* void */
        }
    }

    if (p < end && *p >= '0' && *p <= '9') {
        return NULL;
    }

    len = p - s;

    if (!real) {
        /* "-0" is dumped as "0" */
        return (p - digits <= BATCH_DIGITS && !(neg && *digits == '0'))
               ? p : NULL;
    }

    /* the dump of what strtod() reads (as jansson does) must be the text */

    if (len >= BATCH_REAL) {
        return NULL;
    }

    memcpy(num, s, len);
    num[len] = '\0';

    d = strtod(num, NULL);

    if (!isfinite(d)
        || batch_real_dump(d, dump, sizeof(dump)) != len
        || memcmp(dump, s, len) != 0)
    {
        return NULL;
    }

    return p;
}


static const char *
batch_word(const char *p, const char *end, const char *w)
{
    size_t  n;

    n = strlen(w);

    if ((size_t) (end - p) < n || memcmp(p, w, n) != 0) {
        return NULL;
    }

    return p + n;
}


static const char *
batch_object(batch_ctx_t *c, const char *p, const char *end)
{
    int          escaped;
    size_t       first, i, n;
    const char  *k;

    if (++c->depth > BATCH_DEPTH) {
        return NULL;
    }

    first = c->nkeys;
    p++;

    if (p < end && *p == '}') {
        c->depth--;
        return p + 1;
    }

    for ( ;; ) {
        if (p >= end || *p != '"') {
            return NULL;
        }

        k = p + 1;
        p = batch_string(p, end, &escaped);
        if (p == NULL) {
            return NULL;
        }

        /* raw bytes compare as the keys do: the escapes taken are canonical */

        n = p - 1 - k;

        for (i = first; i < c->nkeys; i++) {
            if (c->key_len[i] == n && memcmp(c->key[i], k, n) == 0) {
                return NULL;
            }
        }

        if (c->nkeys == BATCH_KEYS) {
            return NULL;
        }

        c->key[c->nkeys] = k;
        c->key_len[c->nkeys] = n;
        c->nkeys++;

        if (p >= end || *p != ':') {
            return NULL;
        }

        p = batch_value(c, p + 1, end);
        if (p == NULL || p >= end) {
            return NULL;
        }

        if (*p == '}') {
            break;
        }

        if (*p != ',') {
            return NULL;
        }

        p++;
    }

    c->nkeys = first;
    c->depth--;

    return p + 1;
}


static const char *
batch_array(batch_ctx_t *c, const char *p, const char *end)
{
    if (++c->depth > BATCH_DEPTH) {
        return NULL;
    }

    p++;

    if (p < end && *p == ']') {
        c->depth--;
        return p + 1;
    }

    for ( ;; ) {
        p = batch_value(c, p, end);
        if (p == NULL || p >= end) {
            return NULL;
        }

        if (*p == ']') {
            break;
        }

        if (*p != ',') {
            return NULL;
        }

        p++;
    }

    c->depth--;

    return p + 1;
}


static const char *
batch_value(batch_ctx_t *c, const char *p, const char *end)
{
    int  escaped;

    if (p >= end) {
        return NULL;
    }

    switch (*p) {

    case '{':
        return batch_object(c, p, end);

    case '[':
        return batch_array(c, p, end);

    case '"':
        return batch_string(p, end, &escaped);

    case 't':
        return batch_word(p, end, "true");

    case 'f':
        return batch_word(p, end, "false");

    case 'n':
        return batch_word(p, end, "null");

    default:
        if (*p == '-' || (*p >= '0' && *p <= '9')) {
            return batch_number(p, end);
        }

        return NULL;
    }
}


/*
 * One event from its opening brace: its members one by one (the nested
 * values through batch_value()), to find eventType and the offset.
 */

static const char *
batch_event(batch_ctx_t *c, char *p, const char *end,
    activity_batch_event_t *ev)
{
    int          escaped;
    char        *member;
    size_t       i, n;
    const char  *k, *v, *q;

    ev->text = p;
    ev->offset = NULL;
    ev->offset_len = 0;
    ev->type = NULL;
    ev->type_len = 0;

    c->nkeys = 0;
    c->depth = 1;

    q = p + 1;

    if (q < end && *q == '}') {
        ev->len = 2;
        return q + 1;
    }

    for ( ;; ) {
        member = (char *) q;

        if (q >= end || *q != '"') {
            return NULL;
        }

        k = q + 1;
        q = batch_string(q, end, &escaped);
        if (q == NULL) {
            return NULL;
        }

        n = q - 1 - k;

        if (c->nkeys == BATCH_KEYS) {
            return NULL;
        }

        for (i = 0; i < c->nkeys; i++) {
            if (c->key_len[i] == n && memcmp(c->key[i], k, n) == 0) {
                return NULL;
            }
        }

        c->key[c->nkeys] = k;
        c->key_len[c->nkeys] = n;
        c->nkeys++;

        if (q >= end || *q != ':') {
            return NULL;
        }

        v = q + 1;
        q = batch_value(c, v, end);
        if (q == NULL || q >= end) {
            return NULL;
        }

        if (n == 9 && memcmp(k, "eventType", 9) == 0 && *v == '"') {
            batch_string(v, end, &escaped);

            if (escaped || (size_t) (q - v - 2) > EVENT_TYPE_MAX) {
                return NULL;
            }

            ev->type = v + 1;
            ev->type_len = q - v - 2;
        }

        if (n == 6 && memcmp(k, "offset", 6) == 0) {
            if (*v != '"' || *q != '}') {
                return NULL;
            }

            batch_string(v, end, &escaped);

            if (escaped) {
                return NULL;
            }

            ev->offset = v + 1;
            ev->offset_len = q - v - 2;

            /* the text ends where the member began, at its comma if any */

            if (member[-1] == ',') {
                member--;
            }

            ev->len = member + 1 - p;
            return q + 1;
        }

        if (*q == '}') {
            break;
        }

        if (*q != ',') {
            return NULL;
        }

        q++;
    }

    ev->len = q + 1 - p;

    return q + 1;
}


static const char *
batch_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    {
        p++;
    }

    return p;
}


int
activity_batch_scan(const char *data, size_t len,
    activity_batch_event_t *ev, size_t max)
{
    size_t        n;
    const char   *p, *end;
    batch_ctx_t   c;

    p = batch_space(data, data + len);
    end = data + len;

    if (p >= end || *p != '[') {
        return -1;
    }

    p = batch_space(p + 1, end);
    n = 0;

    if (p < end && *p == ']') {
        p++;
        goto done;
    }

    for ( ;; ) {
        if (p >= end || *p != '{' || n == max) {
            return -1;
        }

        p = batch_event(&c, (char *) p, end, &ev[n]);
        if (p == NULL) {
            return -1;
        }

        n++;

        p = batch_space(p, end);

        if (p < end && *p == ']') {
            p++;
            break;
        }

        if (p >= end || *p != ',') {
            return -1;
        }

        p = batch_space(p + 1, end);
    }

done:

    if (batch_space(p, end) != end) {
        return -1;
    }

    return (int) n;
}


void
activity_batch_close(activity_batch_event_t *ev)
{
    if (ev->offset) {
        ev->text[ev->len - 1] = '}';
    }
}
