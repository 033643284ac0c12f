/*
 * activity-worker: the read API (history, time series, live stats).
 *
 *   GET /api/events      activity_logs, newest first, keyset pages
 *   GET /api/timeseries  activity_rollup_minute, by minute or hour
 *   GET /api/stats       the stats JSON the aggregator keeps in Redis
 *
 * Every value reaches PostgreSQL as a libpq parameter; the SQL texts are
 * constants. Parameters are checked here first, so a bad one gets a 400
 * that names it, never a server error.
 *
 * The page query is the SQL function activity_history() (sql/003),
 * which the planner inlines: with the arguments known it uses the index
 * that fits the filters given and prunes partitions at plan time (see
 * t/history.t, which shows the plan).
 *
 * A cursor is the base64url of "<created_at in epoch microseconds>.<id>"
 * of the last row of a page: opaque to clients, exact (microseconds are
 * PostgreSQL's precision), and stable when new rows arrive.
 */

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "db.h"
#include "../common/activity_event.h"
#include "history.h"
#include "log.h"


#define HISTORY_LIMIT_DEFAULT   50
#define HISTORY_LIMIT_MAX       500

/* statement_timeout (5 s) and then some: a frozen server costs 10 s */
#define HISTORY_WAIT_MS         10000

/* 9999-12-31T23:59:59.999999Z in epoch microseconds */
#define HISTORY_CURSOR_US_MAX   253402300799999999LL
#define HISTORY_USER_MAX        256
#define HISTORY_POINTS_MAX      10000
#define HISTORY_CURSOR_MAX      128

/* 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z in epoch ms */
#define HISTORY_TIME_MIN        (-62135596800000LL)
#define HISTORY_TIME_MAX        253402300799999LL

/* the last day (minute buckets) or week (hour buckets) by default */
#define HISTORY_MINUTE_SPAN_MS  (3600LL * 1000)
#define HISTORY_HOUR_SPAN_MS    (24LL * 3600 * 1000)


static int history_names(const history_args_t *args,
    const char *const *allowed, history_reply_t *reply);
static const char *history_arg(const history_args_t *args,
    const char *name);
static int history_time(const history_args_t *args, const char *name,
    int64_t *ms, int *given, history_reply_t *reply);
static int history_type(const history_args_t *args, const char **type,
    history_reply_t *reply);
static void history_iso_us(char *buf, size_t size, int64_t us);
static void history_bad(history_reply_t *reply, const char *param,
    const char *reason);
static void history_db_error(PGconn *conn, PGresult *res,
    history_reply_t *reply);
static void history_json(history_reply_t *reply, int status, json_t *obj);
static json_t *history_row(PGresult *res, int row);
static json_t *history_text(PGresult *res, int row, int col);
static char *history_cursor_encode(const char *us, const char *id);
static int history_cursor_decode(const char *cursor, int64_t *us,
    char id[37]);


static const char  b64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


void
history_events(PGconn *conn, const history_args_t *args,
    history_reply_t *reply)
{
    static const char *const  allowed[] = {
        "userId", "type", "from", "to", "limit", "cursor", NULL
    };
    const char                *params[7], *user, *type, *v, *cursor;
    PGresult                  *res;
    json_t                    *obj, *events, *row;
    int64_t                    from, to, before_us;
    char                       from_s[80], to_s[80], before_s[80];
    char                       before_id[37], limit_s[16], *end, *next;
    long                       limit;
    int                        has_from, has_to, i, n;

    if (history_names(args, allowed, reply) != 0
        || history_type(args, &type, reply) != 0
        || history_time(args, "from", &from, &has_from, reply) != 0
        || history_time(args, "to", &to, &has_to, reply) != 0)
    {
        return;
    }

    user = history_arg(args, "userId");
    if (user != NULL && (user[0] == '\0' || strlen(user) > HISTORY_USER_MAX))
    {
        history_bad(reply, "userId", "expected 1 to 256 characters");
        return;
    }

    if (has_from && has_to && from >= to) {
        history_bad(reply, "to", "must be later than from");
        return;
    }

    limit = HISTORY_LIMIT_DEFAULT;
    v = history_arg(args, "limit");
    if (v != NULL) {
        errno = 0;
        limit = strtol(v, &end, 10);
        if (errno != 0 || end == v || *end != '\0' || limit < 1
            || limit > HISTORY_LIMIT_MAX)
        {
            history_bad(reply, "limit", "expected an integer 1..500");
            return;
        }
    }

    cursor = history_arg(args, "cursor");
    if (cursor != NULL) {
        if (history_cursor_decode(cursor, &before_us, before_id) != 0) {
            history_bad(reply, "cursor", "not a cursor this API gave out");
            return;
        }
        history_iso_us(before_s, sizeof(before_s), before_us);
    }

    if (conn == NULL) {
        history_error(reply, 503, "postgres unavailable", NULL);
        return;
    }

    if (has_from) {
        history_iso_us(from_s, sizeof(from_s), from * 1000);
    }
    if (has_to) {
        history_iso_us(to_s, sizeof(to_s), to * 1000);
    }

    /* one row more than asked: tells whether a next page exists */
    snprintf(limit_s, sizeof(limit_s), "%ld", limit + 1);

    params[0] = user;
    params[1] = type;
    params[2] = has_from ? from_s : NULL;
    params[3] = has_to ? to_s : NULL;
    params[4] = cursor ? before_s : NULL;
    params[5] = cursor ? before_id : NULL;
    params[6] = limit_s;

    res = db_query_within(conn,
        "SELECT id, action, user_id,"
        " to_char(created_at AT TIME ZONE 'UTC',"
        "         'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
        " extract(epoch FROM date_trunc('second', created_at))::bigint"
        "   * 1000000"
        "   + extract(microseconds FROM created_at)::bigint % 1000000,"
        " host(ip_address), user_agent, endpoint, method, status,"
        " duration_ms, details"
        " FROM activity_history($1, $2, $3::timestamptz,"
        "      $4::timestamptz, $5::timestamptz, $6::uuid, $7::int)",
        7, params, HISTORY_WAIT_MS);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        history_db_error(conn, res, reply);
        return;
    }

    n = PQntuples(res);
    obj = json_object();
    events = json_array();
    next = NULL;

    for (i = 0; i < n && i < limit; i++) {
        row = history_row(res, i);
        if (row == NULL || json_array_append_new(events, row) != 0) {
            break;
        }
    }

    if (n > limit) {
        next = history_cursor_encode(PQgetvalue(res, (int) limit - 1, 4),
                                     PQgetvalue(res, (int) limit - 1, 0));
    }

    PQclear(res);

    json_object_set_new(obj, "events", events);
    json_object_set_new(obj, "nextCursor",
                        next ? json_string(next) : json_null());
    json_object_set_new(obj, "limit", json_integer(limit));
    free(next);

    history_json(reply, 200, obj);
}


void
history_timeseries(PGconn *conn, const history_args_t *args,
    history_reply_t *reply)
{
    static const char *const  allowed[] = {
        "type", "from", "to", "bucket", NULL
    };
    const char                *params[6], *type, *bucket, *step;
    struct timespec            now;
    PGresult                  *res;
    json_t                    *obj, *points, *p;
    int64_t                    from, to, width, start, count, total;
    char                       start_s[80], last_s[80], to_s[80];
    int                        has_from, has_to, i, n;

    if (history_names(args, allowed, reply) != 0
        || history_type(args, &type, reply) != 0
        || history_time(args, "from", &from, &has_from, reply) != 0
        || history_time(args, "to", &to, &has_to, reply) != 0)
    {
        return;
    }

    bucket = history_arg(args, "bucket");
    if (bucket == NULL || strcmp(bucket, "minute") == 0) {
        bucket = "minute";
        step = "1 minute";
        width = 60 * 1000;
    } else if (strcmp(bucket, "hour") == 0) {
        step = "1 hour";
        width = 3600 * 1000;
    } else {
        history_bad(reply, "bucket", "expected minute or hour");
        return;
    }

    if (!has_to) {
        clock_gettime(CLOCK_REALTIME, &now);
        to = (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
    }

    if (!has_from) {
        from = to - (width == 60 * 1000 ? HISTORY_MINUTE_SPAN_MS
                                        : HISTORY_HOUR_SPAN_MS);
    }

    if (from >= to) {
        history_bad(reply, "to", "must be later than from");
        return;
    }

    /* buckets start at from rounded down; the last one starts before to */
    start = from - ((from % width) + width) % width;
    count = (to - start + width - 1) / width;

    if (count > HISTORY_POINTS_MAX) {
        history_bad(reply, "from",
                    "range too long: at most 10000 buckets per request");
        return;
    }

    if (conn == NULL) {
        history_error(reply, 503, "postgres unavailable", NULL);
        return;
    }

    history_iso_us(start_s, sizeof(start_s), start * 1000);
    history_iso_us(last_s, sizeof(last_s), (start + (count - 1) * width)
                                           * 1000);
    history_iso_us(to_s, sizeof(to_s), to * 1000);

    params[0] = start_s;
    params[1] = last_s;
    params[2] = step;
    params[3] = bucket;
    params[4] = to_s;
    params[5] = type;

    res = db_query_within(conn,
        "SELECT to_char(g.t AT TIME ZONE 'UTC',"
        "               'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        " coalesce(s.n, 0)"
        " FROM generate_series($1::timestamptz, $2::timestamptz,"
        "                      $3::interval) AS g(t)"
        " LEFT JOIN (SELECT date_trunc($4, bucket, 'UTC') AS t,"
        "                   sum(count) AS n"
        "              FROM activity_rollup_minute"
        "             WHERE bucket >= $1::timestamptz"
        "               AND bucket < $5::timestamptz"
        "               AND ($6::text IS NULL OR action = $6)"
        "             GROUP BY 1) AS s USING (t)"
        " ORDER BY g.t",
        6, params, HISTORY_WAIT_MS);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        history_db_error(conn, res, reply);
        return;
    }

    obj = json_object();
    points = json_array();
    total = 0;
    n = PQntuples(res);

    for (i = 0; i < n; i++) {
        count = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        total += count;
        p = json_pack("{s:s, s:I}", "t", PQgetvalue(res, i, 0),
                      "count", (json_int_t) count);
        if (p == NULL || json_array_append_new(points, p) != 0) {
            break;
        }
    }

    PQclear(res);

    json_object_set_new(obj, "bucket", json_string(bucket));
    json_object_set_new(obj, "type", type ? json_string(type) : json_null());
    /* microseconds for PostgreSQL, milliseconds as in events */
    memcpy(start_s + 23, "Z", 2);
    memcpy(to_s + 23, "Z", 2);

    json_object_set_new(obj, "from", json_string(start_s));
    json_object_set_new(obj, "to", json_string(to_s));
    json_object_set_new(obj, "total", json_integer(total));
    json_object_set_new(obj, "points", points);

    history_json(reply, 200, obj);
}


void
history_stats(redisContext *rc, const char *key, const history_args_t *args,
    history_reply_t *reply)
{
    static const char *const  allowed[] = { NULL };
    redisReply               *r;
    json_t                   *stats;

    if (history_names(args, allowed, reply) != 0) {
        return;
    }

    if (rc == NULL) {
        history_error(reply, 503, "redis unavailable", NULL);
        return;
    }

    r = redisCommand(rc, "GET %s", key);

    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        history_error(reply, 503, "redis unavailable",
                      r ? r->str : rc->errstr);
        if (r != NULL) {
            freeReplyObject(r);
        }
        return;
    }

    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        history_error(reply, 404, "no stats yet", NULL);
        return;
    }

    /* re-encoded: what goes out is certainly one JSON object */
    stats = json_loadb(r->str, r->len, 0, NULL);
    freeReplyObject(r);

    if (!json_is_object(stats)) {
        json_decref(stats);
        history_error(reply, 502, "stats are not a JSON object", NULL);
        return;
    }

    history_json(reply, 200, stats);
}


void
history_error(history_reply_t *reply, int status, const char *what,
    const char *reason)
{
    json_t  *obj;

    obj = json_pack("{s:s}", "error", what);
    if (obj != NULL && reason != NULL) {
        json_object_set_new(obj, "reason", json_string(reason));
    }

    history_json(reply, status, obj);
}


/* Refuse a parameter the endpoint does not know (a typo is not ignored). */
static int
history_names(const history_args_t *args, const char *const *allowed,
    history_reply_t *reply)
{
    size_t  i, j;

    if (args->overflow) {
        history_error(reply, 400, "invalid parameter",
                      "too many parameters");
        return -1;
    }

    for (i = 0; i < args->n; i++) {
        for (j = 0; allowed[j] != NULL; j++) {
            if (strcmp(args->name[i], allowed[j]) == 0) {
                break;
            }
        }

        if (allowed[j] == NULL) {
            history_bad(reply, args->name[i], "unknown parameter");
            return -1;
        }

        for (j = 0; j < i; j++) {
            if (strcmp(args->name[i], args->name[j]) == 0) {
                history_bad(reply, args->name[i], "given more than once");
                return -1;
            }
        }
    }

    return 0;
}


static const char *
history_arg(const history_args_t *args, const char *name)
{
    size_t  i;

    for (i = 0; i < args->n; i++) {
        if (strcmp(args->name[i], name) == 0) {
            return args->value[i];
        }
    }

    return NULL;
}


/*
 * A time: RFC 3339 / ISO 8601 as in events ("2026-11-27T12:00:00Z",
 * fractions and offsets allowed, no offset = UTC) or epoch milliseconds
 * (what Grafana and JavaScript's Date.now() give).
 */
static int
history_time(const history_args_t *args, const char *name, int64_t *ms,
    int *given, history_reply_t *reply)
{
    const char  *v, *p;

    *given = 0;
    *ms = 0;

    v = history_arg(args, name);
    if (v == NULL) {
        return 0;
    }

    for (p = v; isdigit((unsigned char) *p); p++) {
        /* all digits: epoch milliseconds */
    }

    if (p != v && *p == '\0' && p - v <= 15) {
        *ms = strtoll(v, NULL, 10);

    } else if (event_timestamp_ms(v, ms) != 0) {
        history_bad(reply, name, "expected an ISO 8601 time such as"
                    " 2026-11-27T12:00:00Z, or epoch milliseconds");
        return -1;
    }

    if (*ms < HISTORY_TIME_MIN || *ms > HISTORY_TIME_MAX) {
        history_bad(reply, name, "out of range: years 1 to 9999");
        return -1;
    }

    *given = 1;
    return 0;
}


static int
history_type(const history_args_t *args, const char **type,
    history_reply_t *reply)
{
    *type = history_arg(args, "type");

    if (*type != NULL && !event_valid_type(*type)) {
        history_bad(reply, "type", "expected an event type such as"
                    " USER_LOGIN ([A-Z][A-Z0-9_]*, at most 64)");
        return -1;
    }

    return 0;
}


/* "2026-11-27T12:00:00.123456Z": exact to the microsecond. */
static void
history_iso_us(char *buf, size_t size, int64_t us)
{
    struct tm  tm;
    int64_t    sec, frac;
    time_t     t;

    sec = us / 1000000;
    frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        sec--;
    }

    t = (time_t) sec;
    gmtime_r(&t, &tm);

    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int) frac);
}


static void
history_bad(history_reply_t *reply, const char *param, const char *reason)
{
    json_t  *obj;

    obj = json_pack("{s:s, s:s, s:s}", "error", "invalid parameter",
                    "parameter", param, "reason", reason);
    history_json(reply, 400, obj);
}


static void
history_db_error(PGconn *conn, PGresult *res, history_reply_t *reply)
{
    const char  *state;
    char         err[512], q[600];

    db_error(conn, res, err, sizeof(err));
    state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    log_warn("history query failed", "sqlstate=%s err=%s",
             state ? state : "none", log_quote(q, sizeof(q), err));

    if (PQstatus(conn) != CONNECTION_OK) {
        history_error(reply, 503, "postgres unavailable", NULL);

    } else if (state != NULL && strcmp(state, "57014") == 0) {
        history_error(reply, 503, "query timed out", NULL);

    } else if (state != NULL && strncmp(state, "22", 2) == 0) {
        /* a value the checks above let through, refused by PostgreSQL */
        history_error(reply, 400, "invalid parameter", NULL);

    } else {
        history_error(reply, 500, "query failed", NULL);
    }

    if (res != NULL) {
        PQclear(res);
    }
}


static void
history_json(history_reply_t *reply, int status, json_t *obj)
{
    reply->status = status;
    reply->body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
}


/* One row as an event of the contract (ARCHITECTURE.md). */
static json_t *
history_row(PGresult *res, int row)
{
    json_t  *ev, *meta, *details;

    meta = json_object();
    json_object_set_new(meta, "ipAddress", history_text(res, row, 5));
    json_object_set_new(meta, "userAgent", history_text(res, row, 6));
    json_object_set_new(meta, "endpoint", history_text(res, row, 7));
    json_object_set_new(meta, "method", history_text(res, row, 8));
    json_object_set_new(meta, "status", PQgetisnull(res, row, 9)
                        ? json_null()
                        : json_integer(strtol(PQgetvalue(res, row, 9),
                                              NULL, 10)));
    json_object_set_new(meta, "durationMs", PQgetisnull(res, row, 10)
                        ? json_null()
                        : json_real(strtod(PQgetvalue(res, row, 10),
                                           NULL)));

    details = json_loads(PQgetvalue(res, row, 11), 0, NULL);
    json_object_set_new(meta, "details", details ? details : json_object());

    ev = json_object();
    json_object_set_new(ev, "id", history_text(res, row, 0));
    json_object_set_new(ev, "eventType", history_text(res, row, 1));
    json_object_set_new(ev, "userId", history_text(res, row, 2));
    json_object_set_new(ev, "timestamp", history_text(res, row, 3));
    json_object_set_new(ev, "metadata", meta);

    return ev;
}


static json_t *
history_text(PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) {
        return json_null();
    }

    /* text from PostgreSQL is valid UTF-8 (the database is UTF8) */
    return json_string(PQgetvalue(res, row, col));
}


static char *
history_cursor_encode(const char *us, const char *id)
{
    const unsigned char  *s;
    unsigned long         v;
    size_t                len, i, o;
    char                  raw[HISTORY_CURSOR_MAX], *out;

    snprintf(raw, sizeof(raw), "%s.%s", us, id);
    s = (const unsigned char *) raw;
    len = strlen(raw);

    out = malloc((len + 2) / 3 * 4 + 1);
    if (out == NULL) {
        return NULL;
    }

    for (i = 0, o = 0; i < len; i += 3) {
        v = (unsigned long) s[i] << 16;
        if (i + 1 < len) {
            v |= (unsigned long) s[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= s[i + 2];
        }

        out[o++] = b64url[(v >> 18) & 63];
        out[o++] = b64url[(v >> 12) & 63];
        if (i + 1 < len) {
            out[o++] = b64url[(v >> 6) & 63];
        }
        if (i + 2 < len) {
            out[o++] = b64url[v & 63];
        }
    }

    out[o] = '\0';
    return out;
}


static int
history_cursor_decode(const char *cursor, int64_t *us, char id[37])
{
    const char     *p, *dot;
    unsigned long   v;
    size_t          len, i, o;
    char            raw[HISTORY_CURSOR_MAX], *end;
    int             bits;

    len = strlen(cursor);
    if (len == 0 || len > (HISTORY_CURSOR_MAX - 1) / 3 * 4) {
        return -1;
    }

    v = 0;
    bits = 0;
    o = 0;

    for (i = 0; i < len; i++) {
        p = strchr(b64url, cursor[i]);
        if (p == NULL || cursor[i] == '\0') {
            return -1;
        }

        v = (v << 6) | (unsigned long) (p - b64url);
        bits += 6;

        if (bits >= 8) {
            bits -= 8;
            raw[o++] = (char) ((v >> bits) & 0xff);
        }
    }

    raw[o] = '\0';

    dot = strchr(raw, '.');
    if (dot == NULL || strlen(dot + 1) != 36) {
        return -1;
    }

    errno = 0;
    *us = strtoll(raw, &end, 10);
    if (errno != 0 || end != dot || end == raw) {
        return -1;
    }

    /* a cursor we gave out names a row: 1970 .. 9999, like created_at */
    if (*us < 0 || *us > HISTORY_CURSOR_US_MAX) {
        return -1;
    }

    memcpy(id, dot + 1, 37);

    return event_valid_uuid(id) ? 0 : -1;
}
