/*
 * activity-worker: dead letters.
 *
 * A dead letter carries the event exactly as it arrived, so an operator
 * can fix what refused it and replay it:
 *
 *   activity-worker dlq list [--limit N]   the letters, oldest first,
 *                                          one JSON object a line
 *   activity-worker dlq replay [--all | N] requeue the N oldest events
 *   activity-worker dlq purge              delete every letter
 *
 * Replay moves one letter at a time with a compare-and-move script: the
 * letter is removed and its event LPUSHed onto the queue in one atomic
 * step, only if it is still where it was read, so concurrent replays or
 * workers adding letters never lose or duplicate one. A letter whose
 * event is not a valid event (bad JSON, a NUL byte, kept in
 * "eventBase64") stays where it is: replaying it could only make the
 * same letter again.
 */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dlq.h"
#include "../common/activity_event.h"
#include "redisconn.h"
#include "settings.h"
#include "timeutil.h"


#define DLQ_LIST_CHUNK  100

/*
 * KEYS: dead, queue; ARGV: a letter as read, its event, its index (from
 * the right, past the letters left in place). LREM from the right finds
 * that very letter, or an identical one, which is the same.
 */
#define DLQ_REPLAY_SCRIPT                                                  \
    "if redis.call('LINDEX', KEYS[1], ARGV[3]) ~= ARGV[1] then return 0 end " \
    "redis.call('LREM', KEYS[1], -1, ARGV[1]) "                            \
    "redis.call('LPUSH', KEYS[2], ARGV[2]) "                               \
    "return 1"


typedef enum {
    DLQ_LIST = 0,
    DLQ_REPLAY,
    DLQ_PURGE
} dlq_action_e;


static char *dlq_utf8_clean(const char *s, size_t len, size_t *outlen);
static char *dlq_base64(const char *s, size_t len);
static size_t dlq_utf8_seq(const unsigned char *p, size_t left);
static int dlq_usage(const char *why);
static long dlq_count(const char *s);
static int dlq_list(redisContext *rc, const settings_t *s, long limit);
static int dlq_replay(redisContext *rc, const settings_t *s, long limit);
static int dlq_purge(redisContext *rc, const settings_t *s);


char *
dlq_letter(const char *text, size_t len, const char *reason, int attempts)
{
    json_t  *obj, *ev, *raw;
    char    *clean, *out, *b64;
    char     now[TIME_ISO_LEN];
    size_t   clen;

    clean = dlq_utf8_clean(text, len, &clen);
    if (clean == NULL) {
        return NULL;
    }

    time_iso_now(now);

    /*
     * Bytes that do not survive as a JSON string (a NUL, invalid UTF-8)
     * are kept exactly in "eventBase64"; "event" then shows the text for
     * reading, with U+FFFD for invalid bytes and '?' for a NUL.
     */
    raw = NULL;

    if (clen != len || memcmp(clean, text, len) != 0
        || memchr(text, '\0', len) != NULL)
    {
        for (size_t i = 0; i < clen; i++) {
            if (clean[i] == '\0') {
                clean[i] = '?';
            }
        }

        b64 = dlq_base64(text, len);
        if (b64 == NULL) {
            free(clean);
            return NULL;
        }
        raw = json_string(b64);
        free(b64);
        if (raw == NULL) {
            free(clean);
            return NULL;
        }
    }

    ev = json_stringn(clean, clen);
    free(clean);

    obj = json_object();
    if (ev == NULL || obj == NULL
        || json_object_set_new(obj, "event", ev) != 0
        || (raw != NULL
            && json_object_set_new(obj, "eventBase64", raw) != 0)
        || json_object_set_new(obj, "error", json_string(reason)) != 0
        || json_object_set_new(obj, "attempts", json_integer(attempts)) != 0
        || json_object_set_new(obj, "failedAt", json_string(now)) != 0)
    {
        if (obj == NULL) {
            json_decref(ev);
            json_decref(raw);
        }
        json_decref(obj);
        return NULL;
    }

    out = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    return out;
}


int
dlq_main(int argc, char **argv)
{
    redis_target_t   target;
    dlq_action_e     action;
    redisContext    *rc;
    settings_t       s;
    char           **rest, err[512];
    long             limit;
    int              a, nrest, status;

    if (argc < 2) {
        return dlq_usage("missing action: list, replay or purge");
    }

    if (strcmp(argv[1], "list") == 0) {
        action = DLQ_LIST;
    } else if (strcmp(argv[1], "replay") == 0) {
        action = DLQ_REPLAY;
    } else if (strcmp(argv[1], "purge") == 0) {
        action = DLQ_PURGE;
    } else if (strcmp(argv[1], "--help") == 0
               || strcmp(argv[1], "-h") == 0)
    {
        dlq_usage(NULL);
        return 0;
    } else {
        return dlq_usage("unknown action");
    }

    /* our own arguments out; the rest are the worker's flags */
    rest = calloc((size_t) argc + 1, sizeof(char *));
    if (rest == NULL) {
        fprintf(stderr, "activity-worker: out of memory\n");
        return 1;
    }

    rest[0] = "activity-worker";
    nrest = 1;
    limit = -1;

    for (a = 2; a < argc; a++) {
        if (action == DLQ_LIST && strcmp(argv[a], "--limit") == 0) {
            if (a + 1 == argc || (limit = dlq_count(argv[++a])) < 0) {
                free(rest);
                return dlq_usage("--limit takes a count");
            }
        } else if (action == DLQ_LIST && strncmp(argv[a], "--limit=", 8) == 0)
        {
            if ((limit = dlq_count(argv[a] + 8)) < 0) {
                free(rest);
                return dlq_usage("--limit takes a count");
            }
        } else if (action == DLQ_REPLAY && strcmp(argv[a], "--all") == 0) {
            limit = -1;
        } else if (action == DLQ_REPLAY && a == 2 && argv[a][0] != '-') {
            if ((limit = dlq_count(argv[a])) < 0) {
                free(rest);
                return dlq_usage("replay takes --all or a count");
            }
        } else {
            rest[nrest++] = argv[a];
        }
    }

    settings_load(&s, nrest, rest);
    free(rest);

    if (redis_target_parse(&target, s.redis_url, err, sizeof(err)) != 0) {
        settings_fail("redis", "...", err);
    }

    rc = redis_open(&target, 10000, err, sizeof(err));
    redis_target_free(&target);

    if (rc == NULL) {
        fprintf(stderr, "activity-worker: redis: %s\n", err);
        settings_free(&s);
        return 1;
    }

    switch (action) {
    case DLQ_LIST:
        status = dlq_list(rc, &s, limit);
        break;
    case DLQ_REPLAY:
        status = dlq_replay(rc, &s, limit);
        break;
    default:
        status = dlq_purge(rc, &s);
        break;
    }

    redisFree(rc);
    settings_free(&s);
    return status;
}


static int
dlq_usage(const char *why)
{
    if (why != NULL) {
        fprintf(stderr, "activity-worker dlq: %s\n", why);
    }

    fprintf(why ? stderr : stdout,
        "usage: activity-worker dlq list [--limit N] [options]\n"
        "       activity-worker dlq replay [--all | N] [options]\n"
        "       activity-worker dlq purge [options]\n"
        "\n"
        "list prints the dead letters (--dead), oldest first, one JSON\n"
        "object a line; replay moves the N oldest (default: all) events\n"
        "back onto the queue (--queue); purge deletes every letter and\n"
        "prints how many. Options: --redis, --queue, --dead and their\n"
        "environment variables, as for the worker.\n");

    return why != NULL ? 2 : 0;
}


/* A non-negative decimal count, or -1. */
static long
dlq_count(const char *s)
{
    char  *end;
    long   n;

    errno = 0;
    n = strtol(s, &end, 10);

    if (errno != 0 || end == s || *end != '\0' || n < 0) {
        return -1;
    }

    return n;
}


/* Print up to limit letters (-1: all), oldest first. */
static int
dlq_list(redisContext *rc, const settings_t *s, long limit)
{
    redisReply  *r;
    long         off, want;
    size_t       i;
    char         err[512];

    for (off = 0; limit < 0 || off < limit; off += want) {
        want = limit < 0 || limit - off > DLQ_LIST_CHUNK
               ? DLQ_LIST_CHUNK : limit - off;

        /* the oldest letters are at the right end */
        r = redisCommand(rc, "LRANGE %s %ld %ld", s->dead_key,
                         -(off + want), -(off + 1));

        if (redis_reply_check(rc, r, err, sizeof(err)) != 0
            || r->type != REDIS_REPLY_ARRAY)
        {
            fprintf(stderr, "activity-worker: redis: %s\n",
                    r != NULL && r->type != REDIS_REPLY_ERROR
                    ? "unexpected reply" : err);
            if (r != NULL) {
                freeReplyObject(r);
            }
            return 1;
        }

        for (i = r->elements; i > 0; i--) {
            if (r->element[i - 1]->type == REDIS_REPLY_STRING) {
                fwrite(r->element[i - 1]->str, 1, r->element[i - 1]->len,
                       stdout);
                fputc('\n', stdout);
            }
        }

        /* a short chunk: the list's left end was reached */
        if ((long) r->elements < want) {
            freeReplyObject(r);
            break;
        }

        freeReplyObject(r);
    }

    return fflush(stdout) == 0 ? 0 : 1;
}


/*
 * Requeue up to limit letters' events (-1: all), oldest first; letters
 * whose event is not a valid event are left in place and counted.
 */
static int
dlq_replay(redisContext *rc, const settings_t *s, long limit)
{
    json_error_t   jerr;
    redisReply    *r, *m;
    json_t        *letter, *ev;
    event_t        parsed;
    const char    *argv[8];
    size_t         argvlen[8];
    long           done, kept;
    char           err[512], idx[32], why[256];
    int            moved;

    done = 0;
    kept = 0;

    while (limit < 0 || done < limit) {
        snprintf(idx, sizeof(idx), "%ld", -(kept + 1));

        r = redisCommand(rc, "LINDEX %s %s", s->dead_key, idx);

        if (redis_reply_check(rc, r, err, sizeof(err)) != 0) {
            fprintf(stderr, "activity-worker: redis: %s\n", err);
            if (r != NULL) {
                freeReplyObject(r);
            }
            return 1;
        }

        if (r->type != REDIS_REPLY_STRING) {
            /* no more letters */
            freeReplyObject(r);
            break;
        }

        letter = json_loadb(r->str, r->len, JSON_ALLOW_NUL, &jerr);
        ev = json_object_get(letter, "event");

        if (!json_is_string(ev)) {
            fprintf(stderr, "activity-worker: entry %s of %s is not a dead"
                    " letter; left in place after replaying %ld\n", idx,
                    s->dead_key, done);
            json_decref(letter);
            freeReplyObject(r);
            return 1;
        }

        /* poison stays: replaying it unchanged would only fail again */
        if (json_object_get(letter, "eventBase64") != NULL
            || memchr(json_string_value(ev), '\0', json_string_length(ev))
               != NULL
            || event_parse(&parsed, json_string_value(ev),
                           json_string_length(ev), why, sizeof(why)) != 0)
        {
            kept++;
            json_decref(letter);
            freeReplyObject(r);
            continue;
        }

        event_free(&parsed);

        argv[0] = "EVAL";
        argv[1] = DLQ_REPLAY_SCRIPT;
        argv[2] = "2";
        argv[3] = s->dead_key;
        argv[4] = s->queue;
        argv[5] = r->str;
        argv[6] = json_string_value(ev);
        argv[7] = idx;

        argvlen[0] = 4;
        argvlen[1] = sizeof(DLQ_REPLAY_SCRIPT) - 1;
        argvlen[2] = 1;
        argvlen[3] = strlen(s->dead_key);
        argvlen[4] = strlen(s->queue);
        argvlen[5] = r->len;
        argvlen[6] = json_string_length(ev);
        argvlen[7] = strlen(idx);

        m = redisCommandArgv(rc, 8, argv, argvlen);

        json_decref(letter);
        freeReplyObject(r);

        if (redis_reply_check(rc, m, err, sizeof(err)) != 0) {
            fprintf(stderr, "activity-worker: redis: %s (after replaying"
                    " %ld)\n", err, done);
            if (m != NULL) {
                freeReplyObject(m);
            }
            return 1;
        }

        /* 0: the list changed under us; read that place again */
        moved = m->type == REDIS_REPLY_INTEGER && m->integer == 1;
        freeReplyObject(m);

        if (moved) {
            done++;
        }
    }

    printf("replayed %ld dead letter(s) onto %s\n", done, s->queue);

    if (kept > 0) {
        fprintf(stderr, "activity-worker: left %ld dead letter(s) in %s:"
                " their event is not a valid event (see \"error\"; the"
                " bytes are in \"eventBase64\" when not text), so a"
                " replay would only fail again; fix and LPUSH them by"
                " hand, or purge\n", kept, s->dead_key);
    }

    return fflush(stdout) == 0 ? 0 : 1;
}


/* Delete every letter, saying how many there were. */
static int
dlq_purge(redisContext *rc, const settings_t *s)
{
    redisReply  *r;
    char         err[512];
    int          i;

    if (redisAppendCommand(rc, "MULTI") != REDIS_OK
        || redisAppendCommand(rc, "LLEN %s", s->dead_key) != REDIS_OK
        || redisAppendCommand(rc, "DEL %s", s->dead_key) != REDIS_OK
        || redisAppendCommand(rc, "EXEC") != REDIS_OK)
    {
        fprintf(stderr, "activity-worker: redis: %s\n", rc->errstr);
        return 1;
    }

    /* MULTI, LLEN, DEL (QUEUED each), then EXEC's array */
    for (i = 0; i < 4; i++) {
        r = NULL;
        if (redisGetReply(rc, (void **) &r) != REDIS_OK
            || redis_reply_check(rc, r, err, sizeof(err)) != 0)
        {
            fprintf(stderr, "activity-worker: redis: %s\n",
                    r != NULL ? err : rc->errstr);
            if (r != NULL) {
                freeReplyObject(r);
            }
            return 1;
        }

        if (i == 3) {
            if (r->type != REDIS_REPLY_ARRAY || r->elements != 2
                || r->element[0]->type != REDIS_REPLY_INTEGER)
            {
                fprintf(stderr, "activity-worker: redis: unexpected"
                        " reply to EXEC\n");
                freeReplyObject(r);
                return 1;
            }
            printf("purged %lld dead letter(s) from %s\n",
                   r->element[0]->integer, s->dead_key);
        }

        freeReplyObject(r);
    }

    return fflush(stdout) == 0 ? 0 : 1;
}


/* RFC 4648 base64 of len bytes, NUL-terminated; NULL when out of memory. */
static char *
dlq_base64(const char *s, size_t len)
{
    static const char     abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                  "abcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char  *p;
    uint32_t              v;
    size_t                i, n;
    char                 *out;

    out = malloc((len + 2) / 3 * 4 + 1);
    if (out == NULL) {
        return NULL;
    }

    p = (const unsigned char *) s;

    for (i = 0, n = 0; i + 2 < len; i += 3) {
        v = (uint32_t) p[i] << 16 | (uint32_t) p[i + 1] << 8 | p[i + 2];
        out[n++] = abc[v >> 18 & 63];
        out[n++] = abc[v >> 12 & 63];
        out[n++] = abc[v >> 6 & 63];
        out[n++] = abc[v & 63];
    }

    if (i < len) {
        v = (uint32_t) p[i] << 16;
        if (i + 1 < len) {
            v |= (uint32_t) p[i + 1] << 8;
        }
        out[n++] = abc[v >> 18 & 63];
        out[n++] = abc[v >> 12 & 63];
        out[n++] = i + 1 < len ? abc[v >> 6 & 63] : '=';
        out[n++] = '=';
    }

    out[n] = '\0';
    return out;
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
