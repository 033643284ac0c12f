
/*
 * Event JSON.  One request's facts are turned into a jansson object once;
 * each event of that request (API_CALL, domain events) then only gets a
 * fresh id and its type before it is encoded.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <sys/random.h>
#include <jansson.h>

#include "ngx_http_activity_event.h"


/* most events fit; larger ones are encoded a second time */
#define NGX_HTTP_ACTIVITY_EVENT_GUESS   1024


struct ngx_http_activity_event_s {
    json_t                     *root;
    ngx_log_t                  *log;
    uint64_t                    msec;    /* since the epoch, for the id */
};


static json_t *ngx_http_activity_json_string(ngx_str_t *s);
static ngx_int_t ngx_http_activity_utf8_valid(u_char *p, size_t len);
static json_t *ngx_http_activity_json_timestamp(time_t sec, ngx_msec_t msec);
static json_t *ngx_http_activity_json_uuid(uint64_t msec);
static ngx_int_t ngx_http_activity_random(u_char *buf, size_t len);


/* per process: refilled from getrandom() a page at a time */
static u_char  ngx_http_activity_entropy[4096];
static size_t  ngx_http_activity_entropy_used = sizeof(ngx_http_activity_entropy);


ngx_http_activity_event_t *
ngx_http_activity_event_create(ngx_http_activity_facts_t *f, ngx_log_t *log)
{
    json_t                     *root, *meta, *details;
    ngx_uint_t                  i;
    ngx_keyval_t               *kv;
    ngx_http_activity_event_t  *ev;

    ev = ngx_alloc(sizeof(ngx_http_activity_event_t), log);
    if (ev == NULL) {
        return NULL;
    }

    root = json_object();
    meta = json_object();
    details = json_object();

    if (root == NULL || meta == NULL || details == NULL) {
        goto failed;
    }

    ev->root = root;
    ev->log = log;
    ev->msec = (uint64_t) f->sec * 1000 + f->msec;

    /* jansson keeps insertion order: id and eventType come first */

    if (json_object_set_new_nocheck(root, "id", json_null()) != 0
        || json_object_set_new_nocheck(root, "eventType", json_null()) != 0
        || json_object_set_new_nocheck(root, "userId",
                                       f->user.data
                                       ? ngx_http_activity_json_string(&f->user)
                                       : json_null())
           != 0
        || json_object_set_new_nocheck(root, "timestamp",
                                ngx_http_activity_json_timestamp(f->sec,
                                                                 f->msec))
           != 0)
    {
        goto failed;
    }

    if (json_object_set_new_nocheck(meta, "ipAddress",
                                    ngx_http_activity_json_string(&f->ip))
        != 0
        || json_object_set_new_nocheck(meta, "userAgent",
                           f->user_agent.data
                           ? ngx_http_activity_json_string(&f->user_agent)
                           : json_null())
           != 0
        || json_object_set_new_nocheck(meta, "endpoint",
                                  ngx_http_activity_json_string(&f->endpoint))
           != 0
        || json_object_set_new_nocheck(meta, "method",
                                    ngx_http_activity_json_string(&f->method))
           != 0
        || json_object_set_new_nocheck(meta, "status",
                                       json_integer(f->status))
           != 0
        || json_object_set_new_nocheck(meta, "durationMs",
                                       json_integer(f->duration))
           != 0)
    {
        goto failed;
    }

    if (f->details) {
        kv = f->details->elts;

        for (i = 0; i < f->details->nelts; i++) {

            /* names are checked at configuration time: plain ASCII */

            if (json_object_setn_new_nocheck(details,
                                         (const char *) kv[i].key.data,
                                         kv[i].key.len,
                                         ngx_http_activity_json_string(
                                                              &kv[i].value))
                != 0)
            {
                goto failed;
            }
        }
    }

    if (json_object_set_new_nocheck(meta, "details", details) != 0) {
        details = NULL;
        goto failed;
    }

    details = NULL;

    if (json_object_set_new_nocheck(root, "metadata", meta) != 0) {
        meta = NULL;
        goto failed;
    }

    return ev;

failed:

    ngx_log_error(NGX_LOG_ALERT, log, 0, "activity: cannot build event JSON");

    json_decref(details);
    json_decref(meta);
    json_decref(root);
    ngx_free(ev);

    return NULL;
}


/*
 * Returns the JSON of the event with a new id and the given type, in
 * memory that stays valid until the next call or ngx_http_activity_event_free.
 */

u_char *
ngx_http_activity_event_encode(ngx_http_activity_event_t *ev,
    ngx_str_t *type, size_t *len)
{
    size_t   n;
    u_char  *buf;
    json_t  *id, *t;

    id = ngx_http_activity_json_uuid(ev->msec);
    t = json_stringn_nocheck((const char *) type->data, type->len);

    if (json_object_set_new_nocheck(ev->root, "id", id) != 0
        || json_object_set_new_nocheck(ev->root, "eventType", t) != 0)
    {
        return NULL;
    }

    buf = ngx_alloc(NGX_HTTP_ACTIVITY_EVENT_GUESS, ev->log);
    if (buf == NULL) {
        return NULL;
    }

    n = json_dumpb(ev->root, (char *) buf, NGX_HTTP_ACTIVITY_EVENT_GUESS,
                   JSON_COMPACT);

    if (n > NGX_HTTP_ACTIVITY_EVENT_GUESS) {
        ngx_free(buf);

        buf = ngx_alloc(n, ev->log);
        if (buf == NULL) {
            return NULL;
        }

        n = json_dumpb(ev->root, (char *) buf, n, JSON_COMPACT);
    }

    if (n == 0) {
        ngx_log_error(NGX_LOG_ALERT, ev->log, 0,
                      "activity: cannot encode event JSON");
        ngx_free(buf);
        return NULL;
    }

    *len = n;

    return buf;
}


void
ngx_http_activity_event_free(ngx_http_activity_event_t *ev)
{
    json_decref(ev->root);
    ngx_free(ev);
}


/* jansson refuses invalid UTF-8: bad bytes become U+FFFD */

static json_t *
ngx_http_activity_json_string(ngx_str_t *s)
{
    u_char    *p, *last, *start, *dst, *copy;
    json_t    *js;
    uint32_t   u;

    if (ngx_http_activity_utf8_valid(s->data, s->len)) {
        return json_stringn_nocheck((const char *) s->data, s->len);
    }

    copy = malloc(s->len * 3);
    if (copy == NULL) {
        return NULL;
    }

    dst = copy;
    p = s->data;
    last = s->data + s->len;

    while (p < last) {
        if (*p < 0x80) {
            *dst++ = *p++;
            continue;
        }

        start = p;
        u = ngx_utf8_decode(&p, last - p);

        if (*start >= 0xf5 || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff)) {
            p = start + 1;
            *dst++ = 0xef; *dst++ = 0xbf; *dst++ = 0xbd;
            continue;
        }

        dst = ngx_cpymem(dst, start, p - start);
    }

    js = json_stringn_nocheck((const char *) copy, dst - copy);
    free(copy);

    return js;
}


static ngx_int_t
ngx_http_activity_utf8_valid(u_char *p, size_t len)
{
    u_char    *last, *start;
    uint32_t   u;

    last = p + len;

    while (p < last) {
        if (*p < 0x80) {
            p++;
            continue;
        }

        start = p;
        u = ngx_utf8_decode(&p, last - p);

        if (*start >= 0xf5 || u > 0x10ffff || (u >= 0xd800 && u <= 0xdfff)) {
            return 0;
        }
    }

    return 1;
}


static json_t *
ngx_http_activity_json_timestamp(time_t sec, ngx_msec_t msec)
{
    u_char     buf[sizeof("2026-11-27T12:00:00.123Z")], *p;
    ngx_tm_t   tm;

    ngx_gmtime(sec, &tm);

    p = ngx_sprintf(buf, "%4d-%02d-%02dT%02d:%02d:%02d.%03MZ",
                    tm.ngx_tm_year, tm.ngx_tm_mon, tm.ngx_tm_mday,
                    tm.ngx_tm_hour, tm.ngx_tm_min, tm.ngx_tm_sec, msec);

    return json_stringn_nocheck((const char *) buf, p - buf);
}


/*
 * UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random bits;
 * ids sort by time, which keeps the primary key index append-mostly.
 */

static json_t *
ngx_http_activity_json_uuid(uint64_t msec)
{
    u_char      b[16], text[36], *p;
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

    p = text;

    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            *p++ = '-';
        }

        *p++ = hex[b[i] >> 4];
        *p++ = hex[b[i] & 0x0f];
    }

    return json_stringn_nocheck((const char *) text, sizeof(text));
}


static ngx_int_t
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
