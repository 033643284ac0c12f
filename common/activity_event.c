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
    json_error_t   jerr;
    json_t        *v, *meta;
    json_int_t     st;
    const char    *s;
    unsigned char  addr[sizeof(struct in6_addr)];
    size_t         i;
    float          f;

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
            /* store inet_ntop's form: the one PostgreSQL surely accepts */
            if (inet_pton(AF_INET, s, addr) == 1) {
                ev->has_ip = inet_ntop(AF_INET, addr, ev->ip,
                                       sizeof(ev->ip)) != NULL;
            } else if (inet_pton(AF_INET6, s, addr) == 1) {
                ev->has_ip = inet_ntop(AF_INET6, addr, ev->ip,
                                       sizeof(ev->ip)) != NULL;
            }
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

        /*
         * duration_ms is real (float4): a double beyond its range makes
         * PostgreSQL refuse the row, and one that would round to zero
         * raises "underflow". Clamp such values here instead.
         */
        v = json_object_get(meta, "durationMs");
        if (json_is_number(v)) {
            f = (float) json_number_value(v);
            if (isfinite(f)) {
                if (fabsf(f) < FLT_MIN) {
                    f = 0.0f;
                }
                ev->duration_ms = f;
                ev->has_duration = 1;
            }
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
