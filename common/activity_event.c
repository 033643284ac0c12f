/*
 * One event as JSON text, parsed and validated: plain C (libc and
 * jansson), compiled into both the worker (before storing) and the module
 * (activity_ingest checks by the same rules).
 *
 * The split of duties: an event lacking what makes it an event (id, type,
 * time) is refused and dead-lettered; optional metadata that is malformed
 * is dropped to NULL and the event kept, because losing a request's record
 * over a garbled User-Agent would be worse than the missing field.
 */

#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activity_event.h"
#include "activity_utf8.h"


typedef struct {
    const char  *p;                         /* the value's first byte */
    size_t       len;                       /* its bytes (strings: inside
                                               the quotes) */
    int          type;                      /* EVENT_FAST_* */
} event_fast_value_t;


#define EVENT_FAST_NONE     0               /* member absent */
#define EVENT_FAST_NULL     1
#define EVENT_FAST_STRING   2
#define EVENT_FAST_INT      3
#define EVENT_FAST_REAL     4
#define EVENT_FAST_OBJECT   5               /* only "metadata" */
#define EVENT_FAST_EMPTY    6               /* only "details": {} */


static int event_fast(event_t *ev, const char *text, size_t len);
static int event_fast_object(const char **pp, const char *end,
    const char *const *keys, event_fast_value_t *vals,
    event_fast_value_t *meta);
static int event_fast_value(const char **pp, const char *end,
    event_fast_value_t *v);
static const char *event_fast_ws(const char *p, const char *end);
static const char *event_fast_copy(event_t *ev, char **pos,
    const event_fast_value_t *v, size_t max, unsigned flag);
static void event_set_ip(event_t *ev, const char *s);
static void event_set_duration(event_t *ev, double d);
static int event_repair(event_t *ev, const char *text, size_t *len);
static int event_hex4(const char *s, unsigned *value);
static const char *event_opt_string(json_t *obj, const char *key);
static const char *event_cut_string(event_t *ev, json_t *obj,
    const char *key, size_t max, unsigned flag);
static int event_digits(const char *s, int n, int *value);
static int event_days_in_month(int year, int month);
static int64_t event_days_from_civil(int64_t y, unsigned m, unsigned d);


int
event_parse(event_t *ev, const char *text, size_t len, char *err,
    size_t errlen)
{
    int  rc;

    rc = event_fast(ev, text, len);

    if (rc == 0) {
        return 0;
    }

    if (rc < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    return event_parse_tree(ev, text, len, err, errlen);
}


int
event_parse_tree(event_t *ev, const char *text, size_t len, char *err,
    size_t errlen)
{
    json_error_t   jerr;
    json_t        *v, *meta;
    json_int_t     st;
    const char    *s;
    size_t         i;

    memset(ev, 0, sizeof(*ev));
    ev->text = text;

    if (event_repair(ev, text, &len) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    /* JSON_REJECT_DUPLICATES: {"id":a,"id":b} has no single meaning */
    ev->root = json_loadb(ev->text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (ev->root == NULL) {
        snprintf(err, errlen, "invalid JSON: %s", jerr.text);
        free(ev->repaired);
        ev->repaired = NULL;
        return -1;
    }

    if (!json_is_object(ev->root)) {
        snprintf(err, errlen, "event is not a JSON object");
        goto failed;
    }

    s = json_string_value(json_object_get(ev->root, "id"));
    if (s == NULL) {
        snprintf(err, errlen, "missing id");
        goto failed;
    }
    if (!event_valid_uuid(s)) {
        snprintf(err, errlen, "invalid id: not a UUID");
        goto failed;
    }
    for (i = 0; i < 36; i++) {
        ev->id[i] = (char) tolower((unsigned char) s[i]);
    }
    ev->id[36] = '\0';

    ev->type = json_string_value(json_object_get(ev->root, "eventType"));
    if (ev->type == NULL) {
        snprintf(err, errlen, "missing eventType");
        goto failed;
    }
    if (!event_valid_type(ev->type)) {
        snprintf(err, errlen, "invalid eventType: want [A-Z][A-Z0-9_]*,"
                 " at most %d characters", EVENT_TYPE_MAX);
        goto failed;
    }

    ev->timestamp = json_string_value(json_object_get(ev->root,
                                                      "timestamp"));
    if (ev->timestamp == NULL) {
        snprintf(err, errlen, "missing timestamp");
        goto failed;
    }
    if (event_timestamp_ms(ev->timestamp, &ev->ts_ms) != 0) {
        snprintf(err, errlen, "invalid timestamp: want ISO-8601 such as"
                 " 2026-11-27T12:00:00.123Z");
        goto failed;
    }

    /* userId: a string or null; a number is kept as its decimal text */
    v = json_object_get(ev->root, "userId");
    if (json_is_string(v)) {
        ev->user_id = event_cut_string(ev, ev->root, "userId",
                                       EVENT_USER_ID_MAX, EVENT_CUT_USER_ID);
    } else if (json_is_integer(v)) {
        snprintf(ev->user_buf, sizeof(ev->user_buf), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        ev->user_id = ev->user_buf;
    }

    meta = json_object_get(ev->root, "metadata");
    if (!json_is_object(meta)) {
        meta = NULL;
    }

    if (meta != NULL) {
        s = event_opt_string(meta, "ipAddress");
        if (s != NULL) {
            event_set_ip(ev, s);
        }

        ev->user_agent = event_cut_string(ev, meta, "userAgent",
                                          EVENT_USER_AGENT_MAX,
                                          EVENT_CUT_USER_AGENT);
        ev->endpoint = event_cut_string(ev, meta, "endpoint",
                                        EVENT_ENDPOINT_MAX,
                                        EVENT_CUT_ENDPOINT);
        ev->method = event_cut_string(ev, meta, "method", EVENT_METHOD_MAX,
                                      EVENT_CUT_METHOD);

        /*
         * details cannot be cut without changing what it says: over its
         * limit the event is refused. Only a text that long can hold
         * one that long, so most events skip the measuring.
         */
        v = json_object_get(meta, "details");
        if (len > EVENT_DETAILS_MAX && v != NULL
            && json_dumpb(v, NULL, 0, JSON_COMPACT) > EVENT_DETAILS_MAX)
        {
            snprintf(err, errlen, "metadata.details is larger than %d bytes"
                     " as JSON", EVENT_DETAILS_MAX);
            goto failed;
        }

        v = json_object_get(meta, "status");
        if (json_is_integer(v)) {
            st = json_integer_value(v);
            if (st >= 0 && st <= 32767) {
                ev->status = (int) st;
                ev->has_status = 1;
            }
        }

        /* clamped to what float4 holds (event_set_duration) */
        v = json_object_get(meta, "durationMs");
        if (json_is_number(v)) {
            event_set_duration(ev, json_number_value(v));
        }
    }

    /*
     * metadata.details is not re-encoded here: jansson would print 0.1 as
     * 0.10000000000000001. PostgreSQL takes it from the original text,
     * which jansson has just accepted and so holds nothing jsonb refuses
     * (invalid UTF-8, \u0000, lone surrogates, numbers out of range).
     */
    return 0;

failed:

    json_decref(ev->root);
    ev->root = NULL;
    free(ev->repaired);
    ev->repaired = NULL;
    return -1;
}


void
event_free(event_t *ev)
{
    if (ev->root != NULL) {
        json_decref(ev->root);
        ev->root = NULL;
    }

    free(ev->repaired);
    ev->repaired = NULL;

    free(ev->strings);
    ev->strings = NULL;
}


/*
 * The shape nearly every event has (the module's own): one object of
 * the known members, each at most once; strings without escapes or
 * control characters; integers of at most 18 digits, reals without an
 * exponent; metadata an object of its known members with details {}.
 * Such a text is read here in one pass, without a jansson tree, into
 * the fields event_parse_tree() would give (t/: the fuzz target
 * event_json compares the two). Anything else (an escape, another
 * member, an exponent, details with something in them, bytes that are
 * not UTF-8, a value that is invalid) is left to jansson, which decides
 * and words the error. 0 with ev filled, 1 for "not this shape", -1 out
 * of memory.
 */
static int
event_fast(event_t *ev, const char *text, size_t len)
{
    static const char *const  top[] = {
        "id", "eventType", "userId", "timestamp", "metadata", NULL
    };
    event_fast_value_t  t[5], m[7];
    const char         *p, *end, *s;
    char               *pos;
    long long           st;
    size_t              i;

    if (memchr(text, '\\', len) != NULL
        || activity_utf8_check((const unsigned char *) text, len) != len)
    {
        return 1;
    }

    memset(t, 0, sizeof(t));
    memset(m, 0, sizeof(m));

    p = text;
    end = text + len;

    if (event_fast_object(&p, end, top, t, m) != 0
        || event_fast_ws(p, end) != end
        || t[0].type != EVENT_FAST_STRING || t[0].len != 36
        || t[1].type != EVENT_FAST_STRING
        || t[3].type != EVENT_FAST_STRING
        || (t[2].type != EVENT_FAST_NONE && t[2].type != EVENT_FAST_NULL
            && t[2].type != EVENT_FAST_STRING
            && t[2].type != EVENT_FAST_INT)
        || (t[4].type != EVENT_FAST_NONE && t[4].type != EVENT_FAST_OBJECT))
    {
        return 1;
    }

    if (t[4].type == EVENT_FAST_OBJECT) {
        for (i = 0; i < 4; i++) {
            if (m[i].type > EVENT_FAST_STRING) {
                return 1;
            }
        }

        if (m[4].type > EVENT_FAST_INT
            || (m[4].type == EVENT_FAST_STRING)
            || (m[5].type != EVENT_FAST_NONE && m[5].type != EVENT_FAST_NULL
                && m[5].type != EVENT_FAST_INT
                && m[5].type != EVENT_FAST_REAL)
            || (m[6].type != EVENT_FAST_NONE
                && m[6].type != EVENT_FAST_EMPTY))
        {
            return 1;
        }
    }

    memset(ev, 0, sizeof(*ev));
    ev->text = text;

    /* every string fits: their bytes plus a NUL each come from the text */
    ev->strings = malloc(len + 1);
    if (ev->strings == NULL) {
        return -1;
    }

    pos = ev->strings;

    s = event_fast_copy(ev, &pos, &t[0], 36, 0);
    if (!event_valid_uuid(s)) {
        goto other;
    }
    for (i = 0; i < 36; i++) {
        ev->id[i] = (char) tolower((unsigned char) s[i]);
    }
    ev->id[36] = '\0';

    ev->type = event_fast_copy(ev, &pos, &t[1], len, 0);
    if (!event_valid_type(ev->type)) {
        goto other;
    }

    ev->timestamp = event_fast_copy(ev, &pos, &t[3], len, 0);
    if (event_timestamp_ms(ev->timestamp, &ev->ts_ms) != 0) {
        goto other;
    }

    if (t[2].type == EVENT_FAST_STRING) {
        ev->user_id = event_fast_copy(ev, &pos, &t[2], EVENT_USER_ID_MAX,
                                      EVENT_CUT_USER_ID);

    } else if (t[2].type == EVENT_FAST_INT) {
        snprintf(ev->user_buf, sizeof(ev->user_buf), "%lld",
                 strtoll(t[2].p, NULL, 10));
        ev->user_id = ev->user_buf;
    }

    if (m[0].type == EVENT_FAST_STRING) {
        event_set_ip(ev, event_fast_copy(ev, &pos, &m[0], len, 0));
    }

    ev->user_agent = event_fast_copy(ev, &pos, &m[1], EVENT_USER_AGENT_MAX,
                                     EVENT_CUT_USER_AGENT);
    ev->endpoint = event_fast_copy(ev, &pos, &m[2], EVENT_ENDPOINT_MAX,
                                   EVENT_CUT_ENDPOINT);
    ev->method = event_fast_copy(ev, &pos, &m[3], EVENT_METHOD_MAX,
                                 EVENT_CUT_METHOD);

    if (m[4].type == EVENT_FAST_INT) {
        st = strtoll(m[4].p, NULL, 10);
        if (st >= 0 && st <= 32767) {
            ev->status = (int) st;
            ev->has_status = 1;
        }
    }

    if (m[5].type == EVENT_FAST_INT || m[5].type == EVENT_FAST_REAL) {
        event_set_duration(ev, strtod(m[5].p, NULL));
    }

    return 0;

other:

    /* invalid: jansson's path words the error */
    free(ev->strings);
    ev->strings = NULL;
    return 1;
}


/*
 * An object at *pp of the members keys (each at most once) into vals:
 * the event's (meta: where its metadata goes) or its metadata's (meta
 * NULL). 0, or 1 when not of the shape.
 */
static int
event_fast_object(const char **pp, const char *end,
    const char *const *keys, event_fast_value_t *vals,
    event_fast_value_t *meta)
{
    static const char *const  meta_keys[] = {
        "ipAddress", "userAgent", "endpoint", "method", "status",
        "durationMs", "details", NULL
    };
    event_fast_value_t        key, v;
    const char          *p;
    size_t               i;

    p = event_fast_ws(*pp, end);

    if (p == end || *p != '{') {
        return 1;
    }

    p = event_fast_ws(p + 1, end);

    if (p < end && *p == '}') {
        /* empty: nothing of what an event needs */
        return 1;
    }

    for ( ;; ) {
        if (p == end || *p != '"'
            || event_fast_value(&p, end, &key) != 0)
        {
            return 1;
        }

        for (i = 0; keys[i] != NULL; i++) {
            if (strlen(keys[i]) == key.len
                && memcmp(keys[i], key.p, key.len) == 0)
            {
                break;
            }
        }

        if (keys[i] == NULL || vals[i].type != EVENT_FAST_NONE) {
            /* another member, or one twice */
            return 1;
        }

        p = event_fast_ws(p, end);
        if (p == end || *p != ':') {
            return 1;
        }
        p = event_fast_ws(p + 1, end);

        if (p == end) {
            return 1;
        }

        if (*p == '{') {
            v.p = p;
            v.len = 0;

            if (meta != NULL && strcmp(keys[i], "metadata") == 0) {
                v.type = EVENT_FAST_OBJECT;
                if (event_fast_object(&p, end, meta_keys, meta, NULL) != 0)
                {
                    return 1;
                }

            } else if (meta == NULL && strcmp(keys[i], "details") == 0) {
                p = event_fast_ws(p + 1, end);
                if (p == end || *p != '}') {
                    return 1;
                }
                p++;
                v.type = EVENT_FAST_EMPTY;

            } else {
                return 1;
            }

        } else if (event_fast_value(&p, end, &v) != 0) {
            return 1;
        }

        vals[i] = v;

        p = event_fast_ws(p, end);

        if (p < end && *p == ',') {
            p = event_fast_ws(p + 1, end);
            continue;
        }

        if (p < end && *p == '}') {
            *pp = p + 1;
            return 0;
        }

        return 1;
    }
}


/* A string, number or null at *pp; 1 for anything else. */
static int
event_fast_value(const char **pp, const char *end, event_fast_value_t *v)
{
    const char  *p, *digits;
    size_t       n;

    p = *pp;

    if (*p == '"') {
        v->p = ++p;

        /* no backslash in the text: the next quote ends the string */
        while (p < end && *p != '"') {
            if ((unsigned char) *p < 0x20) {
                return 1;
            }
            p++;
        }

        if (p == end) {
            return 1;
        }

        v->len = (size_t) (p - v->p);
        v->type = EVENT_FAST_STRING;
        *pp = p + 1;
        return 0;
    }

    if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
        v->p = p;
        v->len = 4;
        v->type = EVENT_FAST_NULL;
        *pp = p + 4;
        return 0;
    }

    /* -?(0|[1-9][0-9]*)(\.[0-9]+)?, no exponent */
    v->p = p;

    if (p < end && *p == '-') {
        p++;
    }

    digits = p;

    while (p < end && *p >= '0' && *p <= '9') {
        p++;
    }

    n = (size_t) (p - digits);

    if (n == 0 || (n > 1 && *digits == '0')) {
        return 1;
    }

    v->type = EVENT_FAST_INT;

    if (p < end && *p == '.') {
        digits = ++p;

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p == digits) {
            return 1;
        }

        v->type = EVENT_FAST_REAL;

    } else if (n > 18) {
        /* what jansson might find too big */
        return 1;
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        return 1;
    }

    v->len = (size_t) (p - v->p);
    *pp = p;
    return 0;
}


static const char *
event_fast_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    {
        p++;
    }

    return p;
}


/*
 * A string value as a C string in ev->strings, cut to max bytes at a
 * character boundary (flagging the cut); NULL for any other value.
 */
static const char *
event_fast_copy(event_t *ev, char **pos, const event_fast_value_t *v,
    size_t max, unsigned flag)
{
    char    *s;
    size_t   len;

    if (v->type != EVENT_FAST_STRING) {
        return NULL;
    }

    len = v->len;

    if (len > max) {
        len = activity_utf8_cut((const unsigned char *) v->p, len, max);
        ev->cut |= flag;
    }

    s = *pos;
    memcpy(s, v->p, len);
    s[len] = '\0';
    *pos += len + 1;

    return s;
}


/* store inet_ntop's form: the one PostgreSQL surely accepts */
static void
event_set_ip(event_t *ev, const char *s)
{
    unsigned char  addr[sizeof(struct in6_addr)];

    if (inet_pton(AF_INET, s, addr) == 1) {
        ev->has_ip = inet_ntop(AF_INET, addr, ev->ip, sizeof(ev->ip))
                     != NULL;
    } else if (inet_pton(AF_INET6, s, addr) == 1) {
        ev->has_ip = inet_ntop(AF_INET6, addr, ev->ip, sizeof(ev->ip))
                     != NULL;
    }
}


/*
 * duration_ms is real (float4): a double beyond its range makes
 * PostgreSQL refuse the row, and one that would round to zero raises
 * "underflow". Clamp such values here instead.
 */
static void
event_set_duration(event_t *ev, double d)
{
    float  f;

    f = (float) d;

    if (isfinite(f)) {
        if (fabsf(f) < FLT_MIN) {
            f = 0.0f;
        }
        ev->duration_ms = f;
        ev->has_duration = 1;
    }
}


/*
 * What would make jansson (and then PostgreSQL's text and jsonb) refuse
 * an event for bytes, not for its meaning: invalid UTF-8, \u0000 and
 * lone surrogate escapes. A producer should never send them (the module
 * does not), but an event is not lost over them: each becomes U+FFFD in
 * a copy that replaces the text. Returns -1 only when out of memory.
 */
static int
event_repair(event_t *ev, const char *text, size_t *len)
{
    char    *copy;
    size_t   n;
    int      utf8;

    utf8 = activity_utf8_check((const unsigned char *) text, *len) == *len;

    if (utf8 && event_bad_escapes((char *) text, *len, 0) == 0) {
        return 0;
    }

    n = utf8 ? *len
             : activity_utf8_repaired_len((const unsigned char *) text, *len);

    copy = malloc(n + 1);
    if (copy == NULL) {
        return -1;
    }

    if (utf8) {
        memcpy(copy, text, n);

    } else {
        (void) activity_utf8_repair((unsigned char *) copy,
                                    (const unsigned char *) text, *len);
    }

    copy[n] = '\0';
    (void) event_bad_escapes(copy, n, 1);

    ev->repaired = copy;
    ev->text = copy;
    *len = n;

    return 0;
}


/*
 * Walks the escapes of JSON text (a backslash outside a string is a
 * syntax error anyway, so string boundaries need no tracking): a high
 * surrogate must be followed by a low one, and NUL has no place in a
 * PostgreSQL string. The replacement has the same length as what it
 * replaces, so the text can be fixed in place.
 */
size_t
event_bad_escapes(char *s, size_t len, int fix)
{
    size_t    i, bad;
    unsigned  u, lo;

    bad = 0;

    for (i = 0; i + 1 < len; i++) {
        if (s[i] != '\\') {
            continue;
        }

        if (s[i + 1] != 'u' || i + 6 > len || !event_hex4(s + i + 2, &u)) {
            i++;                            /* \" \\ \n ...: one unit */
            continue;
        }

        if (u >= 0xd800 && u <= 0xdbff && i + 12 <= len
            && s[i + 6] == '\\' && s[i + 7] == 'u'
            && event_hex4(s + i + 8, &lo) && lo >= 0xdc00 && lo <= 0xdfff)
        {
            i += 11;                        /* a pair: one character */
            continue;
        }

        if (u == 0 || (u >= 0xd800 && u <= 0xdfff)) {
            bad++;
            if (fix) {
                memcpy(s + i + 2, "fffd", 4);
            }
        }

        i += 5;
    }

    return bad;
}


static int
event_hex4(const char *s, unsigned *value)
{
    int  i;

    *value = 0;

    for (i = 0; i < 4; i++) {
        if (!isxdigit((unsigned char) s[i])) {
            return 0;
        }
        *value = *value * 16
                 + (unsigned) (isdigit((unsigned char) s[i])
                               ? s[i] - '0'
                               : (tolower((unsigned char) s[i]) - 'a' + 10));
    }

    return 1;
}


/* 8-4-4-4-12 hex digits, either case */
int
event_valid_uuid(const char *s)
{
    size_t  i;

    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return 0;
            }
        } else if (!isxdigit((unsigned char) s[i])) {
            return 0;
        }
    }

    return s[36] == '\0';
}


/* [A-Z][A-Z0-9_]*, 1..EVENT_TYPE_MAX characters */
int
event_valid_type(const char *s)
{
    size_t  i;

    if (s[0] < 'A' || s[0] > 'Z') {
        return 0;
    }

    for (i = 1; s[i] != '\0'; i++) {
        if (i >= EVENT_TYPE_MAX) {
            return 0;
        }
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '_'))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * A strict subset of what PostgreSQL's timestamptz input takes:
 *
 *   YYYY-MM-DD[Tt ]HH:MM[:SS[.f{1,9}]][Z|z|(+|-)HH[[:]MM]]
 *
 * with real calendar checks (2026-02-30 is refused here rather than by
 * the COPY). No offset means UTC: the session runs in UTC. Seconds stop
 * at 59; year 0000 does not exist in PostgreSQL's calendar.
 */
int
event_valid_timestamp(const char *s)
{
    int64_t  ms;

    return event_timestamp_ms(s, &ms) == 0;
}


/*
 * The live counters need the event's own time as a number: the same
 * grammar as above, fractions beyond milliseconds truncated, the offset
 * applied, so the result is the instant PostgreSQL will store.
 */
int
event_timestamp_ms(const char *s, int64_t *ms)
{
    int64_t  frac;
    int      year, mon, day, hh, mm, ss, oh, om, n, sign;

    if (!event_digits(s, 4, &year) || s[4] != '-'
        || !event_digits(s + 5, 2, &mon) || s[7] != '-'
        || !event_digits(s + 8, 2, &day)
        || (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
        || !event_digits(s + 11, 2, &hh) || s[13] != ':'
        || !event_digits(s + 14, 2, &mm))
    {
        return -1;
    }

    if (year < 1 || mon < 1 || mon > 12 || day < 1
        || day > event_days_in_month(year, mon) || hh > 23 || mm > 59)
    {
        return -1;
    }

    s += 16;
    ss = 0;
    frac = 0;
    oh = om = 0;
    sign = 1;

    if (*s == ':') {
        if (!event_digits(s + 1, 2, &ss) || ss > 59) {
            return -1;
        }
        s += 3;

        if (*s == '.') {
            s++;
            for (n = 0; isdigit((unsigned char) s[n]); n++) {
                if (n < 3) {
                    frac = frac * 10 + (s[n] - '0');
                }
            }
            if (n < 1 || n > 9) {
                return -1;
            }
            s += n;
            while (n++ < 3) {
                frac *= 10;
            }
        }
    }

    if (*s == '\0' || ((*s == 'Z' || *s == 'z') && s[1] == '\0')) {
        goto done;
    }

    if (*s != '+' && *s != '-') {
        return -1;
    }

    sign = *s == '-' ? -1 : 1;

    if (!event_digits(s + 1, 2, &oh) || oh > 15) {
        return -1;
    }
    s += 3;

    if (*s == ':') {
        s++;
    }

    if (*s != '\0'
        && !(event_digits(s, 2, &om) && om <= 59 && s[2] == '\0'))
    {
        return -1;
    }

done:

    /* local time minus its offset is UTC */
    *ms = ((event_days_from_civil(year, mon, day) * 86400
            + hh * 3600 + mm * 60 + ss
            - sign * (oh * 3600 + om * 60)) * 1000) + frac;

    return 0;
}


/*
 * A string member cut to max bytes at a character boundary (the text
 * is valid UTF-8 by now), in place in the parsed event; the queued text
 * keeps it whole.
 */
static const char *
event_cut_string(event_t *ev, json_t *obj, const char *key, size_t max,
    unsigned flag)
{
    json_t      *v;
    size_t       len;
    const char  *s;

    v = json_object_get(obj, key);
    s = json_string_value(v);

    if (s == NULL) {
        return NULL;
    }

    len = json_string_length(v);

    if (len <= max) {
        return s;
    }

    len = activity_utf8_cut((const unsigned char *) s, len, max);

    if (json_string_setn(v, s, len) != 0) {
        return NULL;
    }

    ev->cut |= flag;

    return json_string_value(v);
}


/* A string member, or NULL when absent, null or of another type. */
static const char *
event_opt_string(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}


static int
event_digits(const char *s, int n, int *value)
{
    int  i;

    *value = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        *value = *value * 10 + (s[i] - '0');
    }

    return 1;
}


static int
event_days_in_month(int year, int month)
{
    static const int  days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31,
                                 30, 31 };

    if (month == 2
        && ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0))
    {
        return 29;
    }

    return days[month - 1];
}


/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t
event_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t   era;
    unsigned  yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned) (y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + (int64_t) doe - 719468;
}
