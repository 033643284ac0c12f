/*
 * activity-worker: the HTTP listener (/metrics, /healthz, /api/...).
 *
 * libmicrohttpd with one internal polling thread: every request is
 * served, one at a time, on that thread, so the connections it keeps
 * (one to Redis, one or two to PostgreSQL) need no lock. They are its
 * own: the consumer loop never waits on a scrape or a history query, and
 * a slow query cannot touch a batch in flight. Requests are short
 * (statement_timeout 5 s on the read connection, and a server that does
 * not answer within 10 s loses the connection; Redis calls time out
 * after 1 s), so serving them in turn is enough for an operator's API.
 *
 *   GET /metrics          Prometheus text (metrics.c)
 *   GET /healthz          200 when Redis and PostgreSQL (--pg) answer,
 *                         503 with the reason otherwise
 *   GET /api/events       history (history.c), on --pg-read
 *   GET /api/timeseries   per-minute rollups, on --pg-read
 *   GET /api/stats        the live stats from Redis
 *
 * Connections are opened lazily and dropped on the first error; the
 * next request reconnects. An outage is logged once, not per request.
 */

#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <microhttpd.h>

#include "db.h"
#include "history.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "timeutil.h"


#define HTTP_REDIS_TIMEOUT_MS   1000

/* the longest wait for PostgreSQL: statement_timeout 5 s, then some */
#define HTTP_PG_WAIT_MS         10000
#define HTTP_CONN_TIMEOUT_S     30
#define HTTP_CONN_LIMIT         64

#define HTTP_JSON  "application/json"
#define HTTP_PROM  "text/plain; version=0.0.4; charset=utf-8"


typedef struct {
    PGconn      *conn;
    const char  *conninfo;
    const char  *what;          /* "read" or "primary", for the log */
    int          down;          /* an outage was logged */
} http_pg_t;


struct http_s {
    struct MHD_Daemon     *mhd;
    const settings_t      *settings;
    const redis_target_t  *target;
    char                  *proc_key;
    redisContext          *rc;
    int                    redis_down;
    http_pg_t              read;        /* --pg-read: the API */
    http_pg_t              primary;     /* --pg: health, unless the same */
    int                    same;        /* --pg-read is --pg */
};


static enum MHD_Result http_handler(void *cls, struct MHD_Connection *c,
    const char *url, const char *method, const char *version,
    const char *upload_data, size_t *upload_data_size, void **con_cls);
static enum MHD_Result http_arg(void *cls, enum MHD_ValueKind kind,
    const char *key, const char *value);
static void http_metrics(http_t *h, history_reply_t *reply,
    const char **type);
static void http_health(http_t *h, history_reply_t *reply);
static void http_probe(http_t *h, metrics_probe_t *p);
static void http_probe_read(http_t *h, metrics_probe_t *p);
static redisContext *http_redis(http_t *h, char *err, size_t errlen);
static void http_redis_drop(http_t *h, const char *err);
static PGconn *http_pg(http_pg_t *pg, char *err, size_t errlen);
static int http_pg_ping(http_pg_t *pg, double *secs, char *err,
    size_t errlen);
static void http_pg_drop(http_pg_t *pg, const char *err);
static enum MHD_Result http_send(struct MHD_Connection *c, int status,
    const char *type, char *body, int challenge);
static int http_authorized(http_t *h, struct MHD_Connection *c);
static void http_first_line(char *s);
static void http_log(void *cls, const char *fmt, va_list ap);


int
http_parse_listen(const char *s, struct sockaddr_storage *ss,
    socklen_t *len, char *err, size_t errlen)
{
    struct addrinfo   hints, *ai;
    const char       *colon, *port;
    char              host[256];
    size_t            hlen;
    int               rc;

    colon = strrchr(s, ':');
    if (colon == NULL || colon[1] == '\0') {
        snprintf(err, errlen, "expected ADDR:PORT");
        return -1;
    }

    port = colon + 1;
    hlen = (size_t) (colon - s);

    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
        s++;
        hlen -= 2;
    }

    if (hlen >= sizeof(host)) {
        snprintf(err, errlen, "address too long");
        return -1;
    }

    memcpy(host, s, hlen);
    host[hlen] = '\0';

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;

    rc = getaddrinfo(hlen == 0 || strcmp(host, "*") == 0 ? NULL : host,
                     port, &hints, &ai);
    if (rc != 0) {
        snprintf(err, errlen, "%s", gai_strerror(rc));
        return -1;
    }

    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}


http_t *
http_start(const settings_t *settings, const redis_target_t *target,
    char *err, size_t errlen)
{
    struct sockaddr_storage  ss;
    unsigned int             flags;
    sigset_t                 block, old;
    socklen_t                sslen;
    http_t                  *h;

    if (http_parse_listen(settings->listen, &ss, &sslen, err, errlen) != 0)
    {
        return NULL;
    }

    h = calloc(1, sizeof(*h));
    if (h == NULL || asprintf(&h->proc_key, "activity:processing:%s",
                              settings->worker_id) < 0)
    {
        free(h);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    h->settings = settings;
    h->target = target;
    h->read.conninfo = settings->pg_read ? settings->pg_read
                                         : settings->pg_conninfo;
    h->read.what = "read";
    h->primary.conninfo = settings->pg_conninfo;
    h->primary.what = "primary";
    h->same = strcmp(h->read.conninfo, h->primary.conninfo) == 0;

    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO
            | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }

    /* the thread inherits this mask: signals stay with the main loop */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old);

    /* the logger first, so that it hears about the other options */
    h->mhd = MHD_start_daemon(flags, 0, NULL, NULL, http_handler, h,
                  MHD_OPTION_EXTERNAL_LOGGER, http_log, NULL,
                  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &ss,
                  MHD_OPTION_CONNECTION_TIMEOUT,
                  (unsigned int) HTTP_CONN_TIMEOUT_S,
                  MHD_OPTION_CONNECTION_LIMIT, (unsigned int) HTTP_CONN_LIMIT,
                  MHD_OPTION_END);

    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (h->mhd == NULL) {
        snprintf(err, errlen, "cannot listen on %s (in use, or not an"
                 " address of this host)", settings->listen);
        free(h->proc_key);
        free(h);
        return NULL;
    }

    return h;
}


void
http_stop(http_t *h)
{
    if (h == NULL) {
        return;
    }

    MHD_stop_daemon(h->mhd);

    if (h->rc != NULL) {
        redisFree(h->rc);
    }
    if (h->read.conn != NULL) {
        PQfinish(h->read.conn);
    }
    if (h->primary.conn != NULL) {
        PQfinish(h->primary.conn);
    }

    free(h->proc_key);
    free(h);
}


static enum MHD_Result
http_handler(void *cls, struct MHD_Connection *c, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
    history_reply_t   reply;
    history_args_t    args;
    enum MHD_Result   rc;
    const char       *type;
    http_t           *h;
    int64_t           t0;
    char              err[256], qm[64], qu[600];
    int               unauthorized;

    (void) version;
    (void) upload_data;
    (void) upload_data_size;
    (void) con_cls;

    h = cls;
    t0 = time_mono_us();
    unauthorized = 0;

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0
        && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    {
        return http_send(c, MHD_HTTP_METHOD_NOT_ALLOWED, HTTP_JSON,
                         strdup("{\"error\":\"method not allowed\"}"), 0);
    }

    memset(&args, 0, sizeof(args));
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, http_arg, &args);

    reply.status = 500;
    reply.body = NULL;
    type = HTTP_JSON;

    if (strcmp(url, "/metrics") == 0) {
        http_metrics(h, &reply, &type);

    } else if (strcmp(url, "/healthz") == 0) {
        http_health(h, &reply);

    } else if (strncmp(url, "/api/", 5) == 0 && !http_authorized(h, c)) {
        history_error(&reply, 401, "unauthorized", NULL);
        unauthorized = 1;

    } else if (strcmp(url, "/api/events") == 0) {
        history_events(http_pg(&h->read, err, sizeof(err)), &args, &reply);

    } else if (strcmp(url, "/api/timeseries") == 0) {
        history_timeseries(http_pg(&h->read, err, sizeof(err)), &args,
                           &reply);

    } else if (strcmp(url, "/api/stats") == 0) {
        history_stats(http_redis(h, err, sizeof(err)),
                      h->settings->stats_key, &args, &reply);
        if (reply.status == 503) {
            http_redis_drop(h, "GET failed");
        }

    } else {
        history_error(&reply, 404, "not found", NULL);
    }

    /* a query that failed on a broken socket: reconnect next time */
    if (h->read.conn != NULL && PQstatus(h->read.conn) != CONNECTION_OK) {
        http_pg_drop(&h->read, PQerrorMessage(h->read.conn));
    }

    /* the path is the client's: quoted, it cannot forge a log line */
    log_debug("http request", "method=%s path=%s status=%d ms=%.1f",
              log_quote(qm, sizeof(qm), method),
              log_quote(qu, sizeof(qu), url), reply.status,
              (double) (time_mono_us() - t0) / 1000.0);

    rc = http_send(c, reply.status, type, reply.body, unauthorized);
    return rc;
}


static enum MHD_Result
http_arg(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
    history_args_t  *args;

    (void) kind;

    args = cls;

    if (args->n == HISTORY_ARGS_MAX) {
        args->overflow = 1;
        return MHD_NO;
    }

    args->name[args->n] = key;
    args->value[args->n] = value ? value : "";
    args->n++;
    return MHD_YES;
}


static void
http_metrics(http_t *h, history_reply_t *reply, const char **type)
{
    metrics_probe_t  probe;
    metrics_buf_t    b;

    http_probe(h, &probe);

    memset(&b, 0, sizeof(b));
    metrics_render(&b, &probe);

    if (b.failed || b.data == NULL) {
        free(b.data);
        history_error(reply, 500, "out of memory", NULL);
        return;
    }

    reply->status = 200;
    reply->body = b.data;
    *type = HTTP_PROM;
}


/*
 * Healthy when this process can reach both servers its work needs:
 * Redis and the PostgreSQL it writes to. The read replica (--pg-read,
 * when it differs) is reported too but does not make the worker
 * unhealthy: storing events goes on without it.
 */
static void
http_health(http_t *h, history_reply_t *reply)
{
    redisContext  *rc;
    redisReply    *r;
    json_t        *obj;
    double         secs;
    int64_t        stalled;
    char           rerr[256], perr[256], xerr[256], serr[128];
    int            redis_ok, pg_ok, read_ok, store_ok;

    rc = http_redis(h, rerr, sizeof(rerr));
    redis_ok = 0;

    if (rc != NULL) {
        r = redisCommand(rc, "PING");
        if (redis_reply_check(rc, r, rerr, sizeof(rerr)) == 0) {
            redis_ok = 1;
        } else {
            http_redis_drop(h, rerr);
        }
        if (r != NULL) {
            freeReplyObject(r);
        }
    }

    pg_ok = http_pg_ping(h->same ? &h->read : &h->primary, &secs, perr,
                         sizeof(perr)) == 0;

    read_ok = h->same || http_pg_ping(&h->read, &secs, xerr,
                                      sizeof(xerr)) == 0;

    /*
     * PostgreSQL may answer SELECT 1 and still store nothing (a lock
     * held on activity_logs, a frozen backend): what counts is whether
     * the batches in hand get finished.
     */
    stalled = metrics_store_stalled_ms();
    store_ok = stalled < (int64_t) h->settings->stall_timeout * 1000;

    obj = json_pack("{s:s, s:s, s:s}",
                    "status", redis_ok && pg_ok && store_ok ? "ok"
                                                            : "unavailable",
                    "redis", redis_ok ? "ok" : rerr,
                    "postgres", pg_ok ? "ok" : perr);

    if (!h->same && obj != NULL) {
        json_object_set_new(obj, "postgresRead",
                            json_string(read_ok ? "ok" : xerr));
    }

    if (!store_ok && obj != NULL) {
        snprintf(serr, sizeof(serr), "store stalled: events have waited"
                 " %lld s with no batch stored",
                 (long long) (stalled / 1000));
        json_object_set_new(obj, "store", json_string(serr));
    }

    reply->status = redis_ok && pg_ok && store_ok ? 200 : 503;
    reply->body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
}


/* The gauges measured at scrape time, on this thread's connections. */
static void
http_probe(http_t *h, metrics_probe_t *p)
{
    redisContext  *rc;
    redisReply    *r;
    int64_t        t0;
    size_t         i;
    char           err[256];
    long          *lens[3];

    memset(p, 0, sizeof(*p));
    p->queue_len = p->processing_len = p->dead_len = -1;

    rc = http_redis(h, err, sizeof(err));

    if (rc != NULL) {
        lens[0] = &p->queue_len;
        lens[1] = &p->processing_len;
        lens[2] = &p->dead_len;

        t0 = time_mono_us();
        r = redisCommand(rc, "PING");

        if (redis_reply_check(rc, r, err, sizeof(err)) == 0) {
            p->redis_up = 1;
            p->redis_ping_s = (double) (time_mono_us() - t0) / 1e6;
        }
        if (r != NULL) {
            freeReplyObject(r);
        }

        if (p->redis_up) {
            redisAppendCommand(rc, "LLEN %s", h->settings->queue);
            redisAppendCommand(rc, "LLEN %s", h->proc_key);
            redisAppendCommand(rc, "LLEN %s", h->settings->dead_key);

            for (i = 0; i < 3; i++) {
                r = NULL;
                if (redisGetReply(rc, (void **) &r) != REDIS_OK) {
                    p->redis_up = 0;
                    break;
                }
                if (r->type == REDIS_REPLY_INTEGER) {
                    *lens[i] = (long) r->integer;
                }
                freeReplyObject(r);
            }
        }

        if (!p->redis_up) {
            http_redis_drop(h, rc->err ? rc->errstr : err);
        }
    }

    p->pg_up = http_pg_ping(h->same ? &h->read : &h->primary,
                            &p->pg_ping_s, err, sizeof(err)) == 0;

    if (!h->same) {
        http_probe_read(h, p);
    }
}


/*
 * The --pg-read server, when it is another one: does it answer, and how
 * far behind is its replay. A standby only knows the WAL it received:
 * while it has replayed all of that, its lag is 0 (also when the
 * primary is away); while received WAL waits (replay paused, or slower
 * than the primary), the lag is the age of the last transaction it
 * replayed. A server that is not in recovery reports 0.
 */
static void
http_probe_read(http_t *h, metrics_probe_t *p)
{
    static const char  lag_sql[] =
        "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0"
        " WHEN pg_last_wal_receive_lsn() IS NOT NULL"
        "  AND pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn()"
        "  THEN 0"
        " ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())"
        " END::float8";
    PGresult  *res;
    double     secs;
    char       err[256], q[300];

    p->read_probed = 1;

    if (http_pg_ping(&h->read, &secs, err, sizeof(err)) != 0) {
        return;
    }

    p->read_up = 1;

    res = db_query_within(h->read.conn, lag_sql, 0, NULL, HTTP_PG_WAIT_MS);

    /* NULL: nothing replayed yet, the lag is unknown */
    if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK
        && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0))
    {
        p->read_lag_s = strtod(PQgetvalue(res, 0, 0), NULL);
        p->read_lag_known = 1;

    } else {
        db_error(h->read.conn, res, err, sizeof(err));
        http_first_line(err);
        log_debug("http: replica lag unknown", "err=%s",
                  log_quote(q, sizeof(q), err));
    }

    if (res != NULL) {
        PQclear(res);
    }
}


static redisContext *
http_redis(http_t *h, char *err, size_t errlen)
{
    char  where[300], q[300];

    if (h->rc != NULL) {
        return h->rc;
    }

    h->rc = redis_open(h->target, HTTP_REDIS_TIMEOUT_MS, err, errlen);

    if (h->rc == NULL) {
        if (!h->redis_down) {
            log_warn("http: redis unavailable", "redis=%s err=%s",
                     redis_target_describe(h->target, where,
                                           sizeof(where)),
                     log_quote(q, sizeof(q), err));
            h->redis_down = 1;
        }
        return NULL;
    }

    h->redis_down = 0;
    return h->rc;
}


static void
http_redis_drop(http_t *h, const char *err)
{
    char  q[300];

    if (h->rc == NULL) {
        return;
    }

    if (!h->redis_down) {
        log_warn("http: redis unavailable", "err=%s",
                 log_quote(q, sizeof(q), err));
        h->redis_down = 1;
    }

    redisFree(h->rc);
    h->rc = NULL;
}


/*
 * The connection, (re)connected: UTC like the writer's, read-only, and
 * every statement bounded so one bad query cannot hold the thread.
 */
static PGconn *
http_pg(http_pg_t *pg, char *err, size_t errlen)
{
    PGresult  *res;
    char       q[300];

    if (pg->conn != NULL && PQstatus(pg->conn) == CONNECTION_OK) {
        return pg->conn;
    }

    if (pg->conn != NULL) {
        PQfinish(pg->conn);
    }

    /* keepalives, tcp_user_timeout, UTF8: as every connection */
    pg->conn = db_connect(pg->conninfo, "activity-worker-http");

    if (pg->conn != NULL && PQstatus(pg->conn) == CONNECTION_OK) {
        res = db_query_within(pg->conn, "SET timezone = 'UTC';"
                              " SET statement_timeout = '5s';"
                              " SET default_transaction_read_only = on",
                              0, NULL, HTTP_PG_WAIT_MS);
        if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
            PQclear(res);
            if (pg->down) {
                log_info("http: postgres connected", "connection=%s",
                         pg->what);
            }
            pg->down = 0;
            return pg->conn;
        }
        if (res != NULL) {
            PQclear(res);
        }
    }

    snprintf(err, errlen, "%s", pg->conn ? PQerrorMessage(pg->conn)
                                         : "out of memory");
    http_first_line(err);

    if (!pg->down) {
        log_warn("http: postgres unavailable", "connection=%s err=%s",
                 pg->what, log_quote(q, sizeof(q), err));
        pg->down = 1;
    }

    if (pg->conn != NULL) {
        PQfinish(pg->conn);
        pg->conn = NULL;
    }

    return NULL;
}


static int
http_pg_ping(http_pg_t *pg, double *secs, char *err, size_t errlen)
{
    PGresult  *res;
    PGconn    *conn;
    int64_t    t0;
    char       q[300];
    int        tries;

    *secs = 0;

    /*
     * A kept connection may have broken since it was last used (a
     * server restart): that alone is no outage, so it is retried once
     * on a fresh one before the failure counts.
     */
    for (tries = pg->conn != NULL ? 2 : 1; tries > 0; tries--) {
        conn = http_pg(pg, err, errlen);
        if (conn == NULL) {
            return -1;
        }

        t0 = time_mono_us();
        res = db_query_within(conn, "SELECT 1", 0, NULL, HTTP_PG_WAIT_MS);

        if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK) {
            PQclear(res);
            *secs = (double) (time_mono_us() - t0) / 1e6;
            return 0;
        }

        db_error(conn, res, err, errlen);
        http_first_line(err);
        if (res != NULL) {
            PQclear(res);
        }

        if (PQstatus(conn) == CONNECTION_OK) {
            return -1;
        }

        PQfinish(pg->conn);
        pg->conn = NULL;
    }

    if (!pg->down) {
        log_warn("http: postgres unavailable", "connection=%s err=%s",
                 pg->what, log_quote(q, sizeof(q), err));
        pg->down = 1;
    }

    return -1;
}


static void
http_pg_drop(http_pg_t *pg, const char *err)
{
    char  q[300];

    if (pg->conn == NULL) {
        return;
    }

    if (!pg->down) {
        log_warn("http: postgres unavailable", "connection=%s err=%s",
                 pg->what, log_quote(q, sizeof(q), err));
        pg->down = 1;
    }

    PQfinish(pg->conn);
    pg->conn = NULL;
}


/*
 * With --api-token, /api/... wants "Authorization: Bearer <token>". The
 * comparison takes the same time wherever the first difference is.
 */
static int
http_authorized(http_t *h, struct MHD_Connection *c)
{
    const char     *auth, *want;
    size_t          n, i;
    unsigned char   diff;

    want = h->settings->api_token;
    if (want == NULL) {
        return 1;
    }

    auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                       MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth == NULL || strncasecmp(auth, "Bearer ", 7) != 0) {
        return 0;
    }

    auth += 7;
    n = strlen(want);

    if (strlen(auth) != n) {
        return 0;
    }

    diff = 0;
    for (i = 0; i < n; i++) {
        diff |= (unsigned char) (auth[i] ^ want[i]);
    }

    return diff == 0;
}


/*
 * Queue the answer; body is malloc'd (or NULL: out of memory, a 500);
 * challenge adds the WWW-Authenticate of a 401.
 */
static enum MHD_Result
http_send(struct MHD_Connection *c, int status, const char *type,
    char *body, int challenge)
{
    static char             oom[] = "{\"error\":\"out of memory\"}";
    struct MHD_Response    *resp;
    enum MHD_Result         rc;

    if (body == NULL) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        type = HTTP_JSON;
        resp = MHD_create_response_from_buffer(sizeof(oom) - 1, oom,
                                               MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer(strlen(body), body,
                                               MHD_RESPMEM_MUST_FREE);
    }

    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }

    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (challenge) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"activity-worker\"");
    }
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    }

    rc = MHD_queue_response(c, (unsigned int) status, resp);
    MHD_destroy_response(resp);
    return rc;
}


/* libpq's messages span lines; a JSON reason or log value wants one. */
static void
http_first_line(char *s)
{
    size_t  n;

    n = strcspn(s, "\n");
    s[n] = '\0';

    while (n > 0 && s[n - 1] == ' ') {
        s[--n] = '\0';
    }
}


static void
http_log(void *cls, const char *fmt, va_list ap)
{
    size_t  n;
    char    msg[512], q[600];

    (void) cls;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n') {
        msg[--n] = '\0';
    }

    log_warn("http server", "err=%s", log_quote(q, sizeof(q), msg));
}
