
/*
 * Event JSON, written straight into one buffer with nginx's own JSON
 * escaping (as log_format escape=json does): this runs for every request,
 * and a DOM library's allocations cost a fifth of a worker's time here.
 * The request's facts are encoded once ("body"); each event of the request
 * then only adds its id and type in front.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <sys/random.h>

#include "ngx_http_activity_event.h"
#include "../common/activity_event.h"
#include "../common/activity_json.h"


static size_t ngx_http_activity_json_len(ngx_str_t *s, size_t max);
static u_char *ngx_http_activity_json_copy(u_char *p, ngx_str_t *s,
    size_t max);
static u_char *ngx_http_activity_details_copy(u_char *p, ngx_array_t *a);


/* per process: refilled from getrandom() a page at a time */
static u_char  ngx_http_activity_entropy[4096];
static size_t  ngx_http_activity_entropy_used =
                                          sizeof(ngx_http_activity_entropy);


/*
 * "userId":…,"timestamp":…,"metadata":{…}}  (the event minus its head)
 *
 * Strings are cut at the limits of common/activity_event.h, at a
 * character boundary; details (activity_meta) share EVENT_DETAILS_MAX.
 */

ngx_int_t
ngx_http_activity_event_body(ngx_pool_t *pool, ngx_http_activity_facts_t *f,
    ngx_str_t *body)
{
    size_t         len, details;
    u_char        *p;
    ngx_uint_t     i;
    ngx_keyval_t  *kv;

    kv = f->details ? f->details->elts : NULL;

    len = sizeof("\"userId\":,\"timestamp\":\"2026-11-27T12:00:00.123Z\","
                 "\"metadata\":{\"ipAddress\":,\"userAgent\":,"
                 "\"endpoint\":,\"method\":,\"status\":,\"durationMs\":,"
                 "\"details\":{}}}") - 1
          + (f->user.data ? ngx_http_activity_json_len(&f->user,
                                                       EVENT_USER_ID_MAX)
                          : sizeof("null") - 1)
          + ngx_http_activity_json_len(&f->ip, ACTIVITY_JSON_NO_LIMIT)
          + (f->user_agent.data
             ? ngx_http_activity_json_len(&f->user_agent,
                                          EVENT_USER_AGENT_MAX)
             : sizeof("null") - 1)
          + ngx_http_activity_json_len(&f->endpoint, EVENT_ENDPOINT_MAX)
          + ngx_http_activity_json_len(&f->method, EVENT_METHOD_MAX)
          + NGX_INT_T_LEN + NGX_INT_T_LEN;

    /* an upper bound: what details_copy() writes is cut to the limit */

    details = 0;

    for (i = 0; f->details && i < f->details->nelts; i++) {
        details += ngx_http_activity_json_len(&kv[i].key,
                                              ACTIVITY_JSON_NO_LIMIT)
                   + sizeof(":,") - 1
                   + ngx_http_activity_json_len(&kv[i].value,
                                                ACTIVITY_JSON_NO_LIMIT);
    }

    len += ngx_min(details, EVENT_DETAILS_MAX);

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    p = ngx_cpymem(p, "\"userId\":", sizeof("\"userId\":") - 1);

    if (f->user.data) {
        p = ngx_http_activity_json_copy(p, &f->user, EVENT_USER_ID_MAX);

    } else {
        p = ngx_cpymem(p, "null", sizeof("null") - 1);
    }

    p = ngx_cpymem(p, ",\"timestamp\":\"", sizeof(",\"timestamp\":\"") - 1);
    p = ngx_http_activity_event_timestamp(p, f->sec, f->msec);
    *p++ = '"';

    p = ngx_cpymem(p, ",\"metadata\":{\"ipAddress\":",
                   sizeof(",\"metadata\":{\"ipAddress\":") - 1);
    p = ngx_http_activity_json_copy(p, &f->ip, ACTIVITY_JSON_NO_LIMIT);

    p = ngx_cpymem(p, ",\"userAgent\":", sizeof(",\"userAgent\":") - 1);

    if (f->user_agent.data) {
        p = ngx_http_activity_json_copy(p, &f->user_agent,
                                        EVENT_USER_AGENT_MAX);

    } else {
        p = ngx_cpymem(p, "null", sizeof("null") - 1);
    }

    p = ngx_cpymem(p, ",\"endpoint\":", sizeof(",\"endpoint\":") - 1);
    p = ngx_http_activity_json_copy(p, &f->endpoint, EVENT_ENDPOINT_MAX);

    p = ngx_cpymem(p, ",\"method\":", sizeof(",\"method\":") - 1);
    p = ngx_http_activity_json_copy(p, &f->method, EVENT_METHOD_MAX);

    p = ngx_sprintf(p, ",\"status\":%ui,\"durationMs\":%M,\"details\":",
                    f->status, (ngx_msec_t) f->duration);

    p = ngx_http_activity_details_copy(p, f->details);

    *p++ = '}';
    *p++ = '}';

    body->len = p - body->data;

    return NGX_OK;
}


/* {"id":"…","eventType":"TYPE",<body> */

ngx_int_t
ngx_http_activity_event_encode(ngx_pool_t *pool, ngx_str_t *type,
    ngx_http_activity_facts_t *f, ngx_str_t *body, ngx_str_t *json)
{
    u_char  *p;

    json->len = sizeof("{\"id\":\"\",\"eventType\":\"\",") - 1
                + NGX_HTTP_ACTIVITY_UUID_LEN + type->len + body->len;

    p = ngx_pnalloc(pool, json->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    json->data = p;

    p = ngx_cpymem(p, "{\"id\":\"", sizeof("{\"id\":\"") - 1);

    p = ngx_http_activity_event_uuid(p, (uint64_t) f->sec * 1000 + f->msec);
    if (p == NULL) {
        return NGX_ERROR;
    }

    /* types are [A-Z][A-Z0-9_]*, checked at configuration time */

    p = ngx_cpymem(p, "\",\"eventType\":\"", sizeof("\",\"eventType\":\"") - 1);
    p = ngx_cpymem(p, type->data, type->len);
    *p++ = '"';
    *p++ = ',';
    ngx_memcpy(p, body->data, body->len);

    return NGX_OK;
}


/*
 * "2026-11-27T12:00:00.123Z": the part up to the seconds is formatted
 * once a second (per process) and copied, the milliseconds by hand.
 */

u_char *
ngx_http_activity_event_timestamp(u_char *p, time_t sec, ngx_msec_t msec)
{
    ngx_tm_t  tm;

    static time_t  cached_sec = -1;
    static size_t  cached_len;
    static u_char  cached[NGX_INT_T_LEN + sizeof("-01-01T00:00:00.")];

    if (sec != cached_sec) {
        ngx_gmtime(sec, &tm);

        cached_len = ngx_sprintf(cached, "%4d-%02d-%02dT%02d:%02d:%02d.",
                                 tm.ngx_tm_year, tm.ngx_tm_mon,
                                 tm.ngx_tm_mday, tm.ngx_tm_hour,
                                 tm.ngx_tm_min, tm.ngx_tm_sec)
                     - cached;
        cached_sec = sec;
    }

    p = ngx_cpymem(p, cached, cached_len);

    msec %= 1000;
    *p++ = (u_char) ('0' + msec / 100);
    *p++ = (u_char) ('0' + msec / 10 % 10);
    *p++ = (u_char) ('0' + msec % 10);
    *p++ = 'Z';

    return p;
}


/*
 * A JSON string of any bytes: invalid UTF-8 becomes U+FFFD (a user agent
 * or a URI is attacker input), so the event is always valid JSON text
 * (common/activity_json.c).
 */

static size_t
ngx_http_activity_json_len(ngx_str_t *s, size_t max)
{
    return 2 + activity_json_len(s->data, s->len, max,
                                 ACTIVITY_JSON_NO_LIMIT, NULL);
}


static u_char *
ngx_http_activity_json_copy(u_char *p, ngx_str_t *s, size_t max)
{
    *p++ = '"';
    p = activity_json_copy(p, s->data, s->len, max, ACTIVITY_JSON_NO_LIMIT);
    *p++ = '"';

    return p;
}


/*
 * {"name":"value",…} within EVENT_DETAILS_MAX bytes: values are cut in
 * order to fit, and a pair that no longer fits at all is left out.
 */

static u_char *
ngx_http_activity_details_copy(u_char *p, ngx_array_t *a)
{
    u_char        *start;
    size_t         used, need;
    ngx_uint_t     i, n;
    ngx_keyval_t  *kv;

    start = p;
    *p++ = '{';
    used = 2;

    kv = a ? a->elts : NULL;
    n = 0;

    for (i = 0; a && i < a->nelts; i++) {

        /* ,"name":"" */

        need = (n ? 1 : 0) + ngx_http_activity_json_len(&kv[i].key,
                                                        ACTIVITY_JSON_NO_LIMIT)
               + 1 + 2;

        if (used + need > EVENT_DETAILS_MAX) {
            break;
        }

        if (n++) {
            *p++ = ',';
        }

        p = ngx_http_activity_json_copy(p, &kv[i].key,
                                        ACTIVITY_JSON_NO_LIMIT);
        *p++ = ':';
        *p++ = '"';
        p = activity_json_copy(p, kv[i].value.data, kv[i].value.len,
                               ACTIVITY_JSON_NO_LIMIT,
                               EVENT_DETAILS_MAX - used - need);
        *p++ = '"';

        used = (p - start) + 1;
    }

    *p++ = '}';

    return p;
}


/*
 * UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits;
 * ids sort by time, which keeps the primary key index append-mostly.
 */

u_char *
ngx_http_activity_event_uuid(u_char *p, uint64_t msec)
{
    u_char      b[16];
    ngx_uint_t  i;

    static u_char  hex[] = "0123456789abcdef";

    for (i = 0; i < 6; i++) {
        b[i] = (u_char) (msec >> (40 - 8 * i));
    }

    if (ngx_http_activity_random(b + 6, 10) != NGX_OK) {
        return NULL;
    }

    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);

    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            *p++ = '-';
        }

        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 0x0f];
    }

    return p;
}


/*
 * Bytes from the kernel's CSPRNG (getrandom()), never from random():
 * also what makes a Socket.IO pid unguessable.  Len at most 4096.
 */

ngx_int_t
ngx_http_activity_random(u_char *buf, size_t len)
{
    ssize_t  n;

    if (ngx_http_activity_entropy_used + len
        > sizeof(ngx_http_activity_entropy))
    {
        /* never blocks once the kernel's pool is initialized at boot */

        n = getrandom(ngx_http_activity_entropy,
                      sizeof(ngx_http_activity_entropy), 0);

        if (n != (ssize_t) sizeof(ngx_http_activity_entropy)) {
            return NGX_ERROR;
        }

        ngx_http_activity_entropy_used = 0;
    }

    ngx_memcpy(buf, ngx_http_activity_entropy + ngx_http_activity_entropy_used,
               len);
    ngx_http_activity_entropy_used += len;

    return NGX_OK;
}
