/*
 * activity-worker: dead letters.
 *
 * A dead letter carries the event exactly as it arrived, so an operator
 * can fix and replay it; replay, retry counting and backoff will grow
 * here.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dlq.h"
#include "timeutil.h"


static char *dlq_utf8_clean(const char *s, size_t len, size_t *outlen);
static size_t dlq_utf8_seq(const unsigned char *p, size_t left);


char *
dlq_letter(const char *text, size_t len, const char *reason, int attempts)
{
    json_t  *obj, *ev;
    char    *clean, *out;
    char     now[TIME_ISO_LEN];
    size_t   clen;

    clean = dlq_utf8_clean(text, len, &clen);
    if (clean == NULL) {
        return NULL;
    }

    time_iso_now(now);

    /* json_stringn keeps embedded NULs (dumped as \u0000) */
    ev = json_stringn(clean, clen);
    free(clean);

    obj = json_object();
    if (ev == NULL || obj == NULL
        || json_object_set_new(obj, "event", ev) != 0
        || json_object_set_new(obj, "error", json_string(reason)) != 0
        || json_object_set_new(obj, "attempts", json_integer(attempts)) != 0
        || json_object_set_new(obj, "failedAt", json_string(now)) != 0)
    {
        if (obj == NULL) {
            json_decref(ev);
        }
        json_decref(obj);
        return NULL;
    }

    out = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    return out;
}


int
dlq_append_push(redisContext *c, const char *key, const char *letter)
{
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = "LPUSH";
    argvlen[0] = 5;
    argv[1] = key;
    argvlen[1] = strlen(key);
    argv[2] = letter;
    argvlen[2] = strlen(letter);

    return redisAppendCommandArgv(c, 3, argv, argvlen) == REDIS_OK ? 0 : -1;
}


/* Copy s, replacing each byte that starts no valid UTF-8 sequence. */
static char *
dlq_utf8_clean(const char *s, size_t len, size_t *outlen)
{
    const unsigned char  *p;
    char                 *out;
    size_t                i, n, seq;

    /* worst case every byte becomes the 3-byte U+FFFD */
    out = malloc(len * 3 + 1);
    if (out == NULL) {
        return NULL;
    }

    p = (const unsigned char *) s;

    for (i = 0, n = 0; i < len; ) {
        seq = dlq_utf8_seq(p + i, len - i);
        if (seq == 0) {
            memcpy(out + n, "\xef\xbf\xbd", 3);
            n += 3;
            i++;
        } else {
            memcpy(out + n, p + i, seq);
            n += seq;
            i += seq;
        }
    }

    out[n] = '\0';
    *outlen = n;
    return out;
}


/* Length of the valid UTF-8 sequence at p, 0 if invalid (RFC 3629). */
static size_t
dlq_utf8_seq(const unsigned char *p, size_t left)
{
    uint32_t  cp;
    size_t    n, i;

    if (p[0] < 0x80) {
        return 1;
    } else if ((p[0] & 0xe0) == 0xc0) {
        n = 2;
        cp = p[0] & 0x1f;
    } else if ((p[0] & 0xf0) == 0xe0) {
        n = 3;
        cp = p[0] & 0x0f;
    } else if ((p[0] & 0xf8) == 0xf0) {
        n = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }

    if (n > left) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3f);
    }

    /* overlong forms, surrogates, beyond U+10FFFF */
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800)
        || (n == 4 && cp < 0x10000) || cp > 0x10ffff
        || (cp >= 0xd800 && cp <= 0xdfff))
    {
        return 0;
    }

    return n;
}
