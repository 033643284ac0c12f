
/*
 * activity_ingest: events that applications post themselves.
 *
 * POST one event object or an array of at most activity_ingest_max_events
 * (1,000); the body is bounded by activity_ingest_max_body (64k), since
 * it is parsed at once in the event loop.  Missing ids and timestamps
 * are filled in; everything else is checked, with the same rules the
 * worker applies before storing (common/activity_event.c is compiled
 * into both).  Either every event of a request is queued (202) or none
 * is (400 with the reasons of each refused item, 413 beyond the limits,
 * 503 when the buffer has no room).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <arpa/inet.h>
#include <jansson.h>

#include "ngx_http_activity_module.h"
#include "ngx_http_activity_event.h"
#include "ngx_http_activity_ingest.h"
#include "ngx_http_activity_queue.h"
#include "ngx_http_activity_status.h"
#include "../common/activity_event.h"
#include "../common/activity_utf8.h"


#define NGX_HTTP_ACTIVITY_PATH_DEPTH     16
#define NGX_HTTP_ACTIVITY_PATH_MAX       256


typedef struct {
    ngx_uint_t                  array;      /* else an object */
    ngx_uint_t                  index;      /* array: the current element */
    ngx_uint_t                  want_key;   /* object: a key comes next */
    u_char                     *key;        /* object: the current key */
    size_t                      key_len;
} ngx_http_activity_json_level_t;


static ngx_int_t ngx_http_activity_ingest_json(ngx_http_request_t *r);
static void ngx_http_activity_ingest_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_activity_ingest_read(ngx_http_request_t *r,
    ngx_str_t *body);
static json_t *ngx_http_activity_ingest_check(json_t *event,
    ngx_http_request_t *r, char **text);
static void ngx_http_activity_ingest_check_metadata(json_t *meta,
    json_t *errors);
static json_t *ngx_http_activity_ingest_utf8(ngx_str_t *body);
static json_t *ngx_http_activity_ingest_utf8_item(json_t *items,
    ngx_http_activity_json_level_t *lv, ngx_uint_t depth, ngx_uint_t key);
static ngx_int_t ngx_http_activity_ingest_allowed(const char *key,
    const char **names);
static ngx_int_t ngx_http_activity_ingest_reply(ngx_http_request_t *r,
    ngx_uint_t status, json_t *body);


static const char  *ngx_http_activity_event_fields[] = {
    "id", "eventType", "userId", "timestamp", "metadata", NULL
};

static const char  *ngx_http_activity_metadata_fields[] = {
    "ipAddress", "userAgent", "endpoint", "method", "status", "durationMs",
    "details", NULL
};


ngx_int_t
ngx_http_activity_ingest_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_http_activity_loc_conf_t   *alcf;
    ngx_http_activity_main_conf_t  *amcf;

    if (r->method != NGX_HTTP_POST) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_activity_module);

    if (amcf->queue_state == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (!ngx_http_activity_ingest_json(r)) {
        return NGX_HTTP_UNSUPPORTED_MEDIA_TYPE;
    }

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_activity_module);

    if (r->headers_in.content_length_n > (off_t) alcf->ingest_max_body) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "activity: ingest body of %O bytes is over "
                      "activity_ingest_max_body %uz",
                      r->headers_in.content_length_n, alcf->ingest_max_body);
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_activity_ingest_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* the media type is application/json, parameters (charset) aside */

static ngx_int_t
ngx_http_activity_ingest_json(ngx_http_request_t *r)
{
    u_char     *p, *last;
    ngx_str_t  *type;

    if (r->headers_in.content_type == NULL) {
        return 0;
    }

    type = &r->headers_in.content_type->value;
    p = type->data;
    last = p + type->len;

    while (p < last && *p == ' ') {
        p++;
    }

    if ((size_t) (last - p) < sizeof("application/json") - 1
        || ngx_strncasecmp(p, (u_char *) "application/json",
                           sizeof("application/json") - 1)
           != 0)
    {
        return 0;
    }

    p += sizeof("application/json") - 1;

    return p == last || *p == ';' || *p == ' ';
}


static void
ngx_http_activity_ingest_body(ngx_http_request_t *r)
{
    char                          **texts;
    size_t                          i, n, bytes;
    json_t                         *root, *event, *errors, *item, *body;
    ngx_str_t                       data;
    ngx_uint_t                      status;
    json_error_t                    err;
    ngx_http_activity_loc_conf_t   *alcf;
    ngx_http_activity_main_conf_t  *amcf;

    amcf = ngx_http_get_module_main_conf(r, ngx_http_activity_module);
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_activity_module);
    root = NULL;
    errors = NULL;
    texts = NULL;
    n = 0;

    if (ngx_http_activity_ingest_read(r, &data) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /*
     * The body is parsed and checked in one go, in the event loop: its
     * size bounds the time every other connection of this worker waits.
     * A chunked body has no Content-Length to be refused by up front.
     */

    if (data.len > alcf->ingest_max_body) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "activity: ingest body of %uz bytes is over "
                      "activity_ingest_max_body %uz",
                      data.len, alcf->ingest_max_body);
        ngx_http_finalize_request(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE);
        return;
    }

    /* jansson would say only "unable to decode byte": name the fields */

    if (activity_utf8_check(data.data, data.len) != data.len) {
        body = ngx_http_activity_ingest_utf8(&data);
        status = NGX_HTTP_BAD_REQUEST;
        goto done;
    }

    root = json_loadb((const char *) data.data, data.len,
                      JSON_REJECT_DUPLICATES, &err);

    if (root == NULL) {
        body = json_pack("{s:s,s:s,s:i}", "error", "invalid JSON",
                         "reason", err.text, "position", err.position);
        status = NGX_HTTP_BAD_REQUEST;
        goto done;
    }

    if (json_is_object(root)) {
        event = root;
        root = json_pack("[o]", event);
        if (root == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    if (!json_is_array(root) || json_array_size(root) == 0) {
        item = json_sprintf("expected an event object or an array of 1 to "
                            "%lu events",
                            (unsigned long) alcf->ingest_max_events);
        body = json_pack("{s:o}", "error", item);
        status = NGX_HTTP_BAD_REQUEST;
        goto done;
    }

    if (json_array_size(root) > alcf->ingest_max_events) {
        item = json_sprintf("too many events: %zu, at most %lu a request "
                            "(activity_ingest_max_events)",
                            json_array_size(root),
                            (unsigned long) alcf->ingest_max_events);
        body = json_pack("{s:o}", "error", item);
        status = NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        goto done;
    }

    n = json_array_size(root);

    errors = json_array();
    texts = ngx_pcalloc(r->pool, n * sizeof(char *));

    if (errors == NULL || texts == NULL) {
        json_decref(errors);
        json_decref(root);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    /* each event is encoded once: checked, measured and queued as such */

    bytes = 0;

    json_array_foreach(root, i, event) {
        item = ngx_http_activity_ingest_check(event, r, &texts[i]);

        if (item) {
            json_object_set_new(item, "index", json_integer(i));
            json_array_append_new(errors, item);

        } else {
            bytes += ngx_strlen(texts[i]);
        }
    }

    if (json_array_size(errors)) {
        body = json_pack("{s:s,s:O}", "error", "invalid events",
                         "items", errors);
        status = NGX_HTTP_BAD_REQUEST;
        goto done;
    }

    /* all or nothing: the buffer must have room for every event */

    if (bytes > ngx_http_activity_queue_room(amcf->queue_state, n)) {
        body = json_pack("{s:s}", "error", "event buffer full, retry later");
        status = NGX_HTTP_SERVICE_UNAVAILABLE;
        goto done;
    }

    for (i = 0; i < n; i++) {
        (void) ngx_http_activity_queue_push(amcf->queue_state,
                                            (u_char *) texts[i],
                                            ngx_strlen(texts[i]));
    }

    ngx_http_activity_stat_add(amcf->stats, events_ingested, n);

    body = json_pack("{s:i}", "accepted", (json_int_t) n);
    status = NGX_HTTP_ACCEPTED;

done:

    for (i = 0; texts && i < n; i++) {
        free(texts[i]);
    }

    json_decref(errors);
    json_decref(root);

    ngx_http_finalize_request(r,
                        ngx_http_activity_ingest_reply(r, status, body));
}


/* the body in one piece: in memory, or read back from its temp file */

static ngx_int_t
ngx_http_activity_ingest_read(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    off_t         len;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    len = 0;

    if (r->request_body == NULL) {
        ngx_str_set(body, "");
        return NGX_OK;
    }

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? b->file_last - b->file_pos : b->last - b->pos;
    }

    p = ngx_pnalloc(r->pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {

            /* a local temp file just written: in the page cache */

            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);
            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }

            p += n;
            continue;
        }

        if (b->last > b->pos) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    body->len = p - body->data;

    return NGX_OK;
}


/*
 * Fills in a missing id and timestamp; returns NULL when the event is
 * good, with its compact JSON in *text (to free()), else
 * {"errors":[...]}.
 */

static json_t *
ngx_http_activity_ingest_check(json_t *event, ngx_http_request_t *r,
    char **text)
{
    u_char       buf[NGX_HTTP_ACTIVITY_UUID_LEN + 1];
    char         reason[128];
    json_t      *errors, *v;
    ngx_time_t  *tp;
    const char  *key;
    event_t      ev;

    errors = json_array();

    if (!json_is_object(event)) {
        json_array_append_new(errors, json_string("expected an object"));
        goto done;
    }

    json_object_foreach(event, key, v) {
        if (!ngx_http_activity_ingest_allowed(key,
                                              ngx_http_activity_event_fields))
        {
            json_array_append_new(errors,
                                  json_sprintf("unknown field \"%.64s\"",
                                               key));
        }
    }

    v = json_object_get(event, "eventType");

    if (!json_is_string(v) || !event_valid_type(json_string_value(v))) {
        json_array_append_new(errors, json_string("eventType must be "
                                          "[A-Z][A-Z0-9_]*, at most 64 "
                                          "characters"));
    }

    v = json_object_get(event, "userId");

    if (v && !json_is_null(v)
        && !(json_is_string(v)
             && json_string_length(v) <= EVENT_USER_ID_MAX))
    {
        json_array_append_new(errors,
                              json_sprintf("userId must be a string of at "
                                           "most %d bytes, or null",
                                           EVENT_USER_ID_MAX));
    }

    v = json_object_get(event, "metadata");

    if (v && !json_is_object(v)) {
        json_array_append_new(errors,
                              json_string("metadata must be an object"));

    } else if (v) {
        ngx_http_activity_ingest_check_metadata(v, errors);
    }

    tp = ngx_timeofday();

    v = json_object_get(event, "id");

    if (v == NULL) {
        *ngx_http_activity_event_uuid(buf, (uint64_t) tp->sec * 1000
                                           + tp->msec) = '\0';
        json_object_set_new(event, "id", json_string((char *) buf));

    } else if (!json_is_string(v) || !event_valid_uuid(json_string_value(v)))
    {
        json_array_append_new(errors, json_string("id must be a UUID"));
    }

    v = json_object_get(event, "timestamp");

    if (v == NULL) {
        *ngx_http_activity_event_timestamp(buf, tp->sec, tp->msec) = '\0';
        json_object_set_new(event, "timestamp", json_string((char *) buf));

    } else if (!json_is_string(v)
               || !event_valid_timestamp(json_string_value(v)))
    {
        json_array_append_new(errors, json_string("timestamp must be "
                                          "ISO-8601, e.g. "
                                          "2026-11-27T12:00:00.000Z"));
    }

    if (json_array_size(errors)) {
        goto done;
    }

    /* what the worker would refuse is refused here */

    *text = json_dumps(event, JSON_COMPACT);
    if (*text == NULL) {
        json_array_append_new(errors, json_string("cannot encode"));
        goto done;
    }

    if (event_parse(&ev, *text, ngx_strlen(*text), reason, sizeof(reason))
        != 0)
    {
        json_array_append_new(errors, json_string(reason));
        free(*text);
        *text = NULL;

    } else {
        event_free(&ev);
    }

done:

    if (json_array_size(errors) == 0) {
        json_decref(errors);
        return NULL;
    }

    return json_pack("{s:o}", "errors", errors);
}


static void
ngx_http_activity_ingest_check_metadata(json_t *meta, json_t *errors)
{
    u_char          addr[16];
    json_t         *v;
    ngx_uint_t      i;
    const char     *key, *s;
    json_int_t      status;

    static const char  *strings[] = { "userAgent", "endpoint", "method" };
    static const int    limits[] = { EVENT_USER_AGENT_MAX, EVENT_ENDPOINT_MAX,
                                     EVENT_METHOD_MAX };

    json_object_foreach(meta, key, v) {
        if (!ngx_http_activity_ingest_allowed(key,
                                          ngx_http_activity_metadata_fields))
        {
            json_array_append_new(errors,
                          json_sprintf("unknown field \"metadata.%.64s\"",
                                       key));
        }
    }

    for (i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        v = json_object_get(meta, strings[i]);

        if (v && !json_is_null(v)
            && !(json_is_string(v)
                 && json_string_length(v) <= (size_t) limits[i]))
        {
            json_array_append_new(errors,
                          json_sprintf("metadata.%s must be a string of at "
                                       "most %d bytes", strings[i],
                                       limits[i]));
        }
    }

    v = json_object_get(meta, "ipAddress");

    if (v && !json_is_null(v)) {
        s = json_string_value(v);

        if (s == NULL
            || (inet_pton(AF_INET, s, addr) != 1
                && inet_pton(AF_INET6, s, addr) != 1))
        {
            json_array_append_new(errors, json_string("metadata.ipAddress "
                                                "must be an IPv4 or IPv6 "
                                                "address"));
        }
    }

    v = json_object_get(meta, "status");

    if (v && !json_is_null(v)) {
        status = json_is_integer(v) ? json_integer_value(v) : -1;

        if (status < 100 || status > 599) {
            json_array_append_new(errors, json_string("metadata.status must "
                                                "be an HTTP status code"));
        }
    }

    v = json_object_get(meta, "durationMs");

    if (v && !json_is_null(v)
        && !(json_is_number(v) && json_number_value(v) >= 0))
    {
        json_array_append_new(errors, json_string("metadata.durationMs must "
                                            "be a number >= 0"));
    }

    v = json_object_get(meta, "details");

    if (v && !json_is_object(v)) {
        json_array_append_new(errors,
                      json_string("metadata.details must be an object"));

    } else if (v && json_dumpb(v, NULL, 0, JSON_COMPACT) > EVENT_DETAILS_MAX)
    {
        json_array_append_new(errors,
                      json_sprintf("metadata.details must be at most %d "
                                   "bytes as JSON", EVENT_DETAILS_MAX));
    }
}


/*
 * A body that is not UTF-8: walks its JSON structure (without decoding
 * it) to name each string that holds invalid bytes, e.g. index 2,
 * "metadata.userAgent is not valid UTF-8". Invalid bytes outside any
 * string make the body invalid JSON, reported as such.
 */

static json_t *
ngx_http_activity_ingest_utf8(ngx_str_t *body)
{
    u_char                          *p, *last, *start;
    json_t                          *items, *item;
    ngx_uint_t                       depth, in_key, found;
    ngx_http_activity_json_level_t   lv[NGX_HTTP_ACTIVITY_PATH_DEPTH];

    items = json_array();
    if (items == NULL) {
        return NULL;
    }

    p = body->data;
    last = p + body->len;
    depth = 0;
    found = 0;

    while (p < last) {

        switch (*p) {

        case '{':
        case '[':
            if (depth < NGX_HTTP_ACTIVITY_PATH_DEPTH) {
                lv[depth].array = (*p == '[');
                lv[depth].index = 0;
                lv[depth].want_key = (*p == '{');
                lv[depth].key = NULL;
                lv[depth].key_len = 0;
            }
            depth++;
            p++;
            continue;

        case '}':
        case ']':
            if (depth) {
                depth--;
            }
            p++;
            continue;

        case ',':
            if (depth && depth <= NGX_HTTP_ACTIVITY_PATH_DEPTH) {
                if (lv[depth - 1].array) {
                    lv[depth - 1].index++;

                } else {
                    lv[depth - 1].want_key = 1;
                }
            }
            p++;
            continue;

        case '"':
            break;

        default:
            p++;
            continue;
        }

        /* a string: its end, escapes skipped */

        start = ++p;

        while (p < last && *p != '"') {
            p += (*p == '\\') ? 2 : 1;
        }

        if (p > last) {
            p = last;
        }

        in_key = depth && depth <= NGX_HTTP_ACTIVITY_PATH_DEPTH
                 && !lv[depth - 1].array && lv[depth - 1].want_key;

        if (in_key) {
            lv[depth - 1].key = start;
            lv[depth - 1].key_len = p - start;
            lv[depth - 1].want_key = 0;
        }

        if (activity_utf8_check(start, p - start) != (size_t) (p - start)) {
            item = ngx_http_activity_ingest_utf8_item(items, lv,
                                  ngx_min(depth, NGX_HTTP_ACTIVITY_PATH_DEPTH),
                                  in_key);
            if (item == NULL) {
                json_decref(items);
                return NULL;
            }

            found++;
        }

        p++;
    }

    if (found == 0) {
        json_decref(items);
        return json_pack("{s:s,s:s}", "error", "invalid JSON",
                         "reason", "invalid UTF-8 outside a string");
    }

    return json_pack("{s:s,s:o}", "error", "invalid events", "items", items);
}


/*
 * Adds "<path> is not valid UTF-8" to the item of the event it is in
 * (items come in order, so that is the last one or a new one).
 */

static json_t *
ngx_http_activity_ingest_utf8_item(json_t *items,
    ngx_http_activity_json_level_t *lv, ngx_uint_t depth, ngx_uint_t key)
{
    u_char      *p, *last;
    size_t       n;
    json_t      *item, *errors;
    ngx_uint_t   i, first, index;
    u_char       path[NGX_HTTP_ACTIVITY_PATH_MAX * 3 + 64];

    /* an array at the top holds the events; an object is event 0 */

    first = (depth && lv[0].array) ? 1 : 0;
    index = first ? lv[0].index : 0;

    p = path;
    last = path + NGX_HTTP_ACTIVITY_PATH_MAX;

    for (i = first; i < depth && p < last; i++) {
        if (lv[i].array) {
            p = ngx_snprintf(p, last - p, "[%ui]", lv[i].index);
            continue;
        }

        if (i == depth - 1 && key) {
            break;
        }

        if (p > path) {
            *p++ = '.';
        }

        /* the key as written; made valid so that the answer is */

        n = ngx_min(lv[i].key_len, (size_t) (last - p));
        n = activity_utf8_cut(lv[i].key, lv[i].key_len, n);
        p = activity_utf8_repair(p, lv[i].key, n);
    }

    if (key) {
        p = ngx_sprintf(p, "%s%s", p > path ? " " : "", "(a key)");
    }

    if (p == path) {
        p = ngx_cpymem(p, "the event", sizeof("the event") - 1);
    }

    p = ngx_cpymem(p, " is not valid UTF-8", sizeof(" is not valid UTF-8"));

    item = json_array_get(items, json_array_size(items) - 1);

    if (item == NULL
        || json_integer_value(json_object_get(item, "index"))
           != (json_int_t) index)
    {
        item = json_pack("{s:I,s:[]}", "index", (json_int_t) index,
                         "errors");
        if (item == NULL || json_array_append_new(items, item) != 0) {
            return NULL;
        }
    }

    errors = json_object_get(item, "errors");

    if (json_array_append_new(errors, json_string((char *) path)) != 0) {
        return NULL;
    }

    return item;
}


static ngx_int_t
ngx_http_activity_ingest_allowed(const char *key, const char **names)
{
    for ( /* void */ ; *names; names++) {
        if (ngx_strcmp(key, *names) == 0) {
            return 1;
        }
    }

    return 0;
}


static ngx_int_t
ngx_http_activity_ingest_reply(ngx_http_request_t *r, ngx_uint_t status,
    json_t *body)
{
    char         *text;
    size_t        len;
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);

    if (text == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_strlen(text);

    b = ngx_create_temp_buf(r->pool, len + 1);
    if (b == NULL) {
        free(text);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = ngx_cpymem(b->last, text, len);
    *b->last++ = LF;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    free(text);

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}
