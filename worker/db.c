/*
 * activity-worker: a PostgreSQL connection.
 *
 * One db_t per user: the store thread has one, partition maintenance
 * another, migrations a third; the HTTP thread opens its own with
 * db_connect(). Every session runs in UTC (a timestamp without an
 * offset, and every day boundary, means UTC), speaks UTF8 whatever the
 * server's or the environment's encoding, has TCP keepalives and a
 * tcp_user_timeout (a peer that vanished is noticed), and a
 * statement_timeout.
 *
 * None of that helps against a backend that is alive but frozen (a
 * stopped process, a hung storage): the kernel keeps answering for it.
 * So a db_t made with a timeout has a watchdog thread: a call bracketed
 * by db_guard()/db_unguard() that lasts longer than the timeout plus
 * DB_WATCHDOG_SLACK_MS has its socket shut down, which makes libpq fail
 * the call as a lost connection; the caller reconnects. Once a stop is
 * requested, a call still running after DB_STOP_GRACE_MS is cancelled
 * (PQcancel), then cut the same way if that did not help, so SIGTERM
 * never waits on PostgreSQL for long.
 */

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "signals.h"
#include "timeutil.h"


#define DB_BACKOFF_MIN_MS      250
#define DB_BACKOFF_MAX_MS      2000

/* TCP: probe after 10 s idle, every 5 s, give up after 3 (25 s) */
#define DB_KEEPALIVES_IDLE     "10"
#define DB_KEEPALIVES_INTERVAL "5"
#define DB_KEEPALIVES_COUNT    "3"
/* data unacknowledged this long (ms): the connection is dead */
#define DB_TCP_USER_TIMEOUT    "20000"

#define DB_WATCHDOG_TICK_MS    250
#define DB_WATCHDOG_SLACK_MS   10000
#define DB_STOP_GRACE_MS       2000


/* per thread: an HTTP thread may have its own connection */
static __thread char  db_last_sqlstate[6];


struct db_s {
    char             *conninfo;
    const char       *app;
    PGconn           *conn;
    int               down;        /* an outage was logged, not recovery */
    int              *outage;      /* &down, or a sibling's: one line */
    int               lost_own;
    int              *lost;        /* &lost_own, or a sibling's: a */
                                   /* connection broke, maybe unlogged */
    int               shared;      /* db_share_outage() was called */
    int               timeout_ms;  /* statement_timeout; 0: none */
    char              describe[256];

    /* the watchdog (timeout_ms > 0) */
    pthread_t         watchdog;
    pthread_mutex_t   lock;
    pthread_cond_t    wake;
    int               closing;     /* under lock */
    int64_t           busy_since;  /* under lock: a guarded call runs */
    int               sock;        /* under lock: its socket */
    PGcancel         *cancel;      /* under lock: for that connection */
    int               cancelled;   /* under lock: PQcancel sent */
    int               cut;         /* under lock: socket shut down */
};


static void db_drop(db_t *db);
static void *db_watchdog(void *arg);
static void db_watch(db_t *db, int64_t now);
static void db_notice(void *arg, const char *message);
static void db_describe_init(db_t *db);


db_t *
db_new(const char *conninfo, const char *app, int timeout_ms)
{
    pthread_condattr_t   ca;
    db_t                *db;
    int                  rc;

    db = calloc(1, sizeof(*db));
    if (db == NULL) {
        return NULL;
    }

    db->conninfo = strdup(conninfo);
    if (db->conninfo == NULL) {
        free(db);
        return NULL;
    }

    db->app = app;
    db->timeout_ms = timeout_ms;
    db->sock = -1;
    db->outage = &db->down;
    db->lost = &db->lost_own;
    db_describe_init(db);

    pthread_mutex_init(&db->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&db->wake, &ca);
    pthread_condattr_destroy(&ca);

    if (timeout_ms > 0) {
        /* signals stay with the main thread */
        rc = signals_thread_create(&db->watchdog, db_watchdog, db);

        if (rc != 0) {
            pthread_cond_destroy(&db->wake);
            pthread_mutex_destroy(&db->lock);
            free(db->conninfo);
            free(db);
            return NULL;
        }
    }

    return db;
}


void
db_share_outage(db_t *db, db_t *with)
{
    db->outage = with->outage;
    db->lost = with->lost;
    db->shared = 1;
    with->shared = 1;
}


void
db_free(db_t *db)
{
    if (db == NULL) {
        return;
    }

    if (db->timeout_ms > 0) {
        pthread_mutex_lock(&db->lock);
        db->closing = 1;
        pthread_cond_signal(&db->wake);
        pthread_mutex_unlock(&db->lock);
        pthread_join(db->watchdog, NULL);
    }

    db_drop(db);

    pthread_cond_destroy(&db->wake);
    pthread_mutex_destroy(&db->lock);
    free(db->conninfo);
    free(db);
}


PGconn *
db_connect(const char *conninfo, const char *app)
{
    /*
     * dbname comes with expand_dbname: the user's conninfo may override
     * what precedes it (connect_timeout, keepalives, application_name
     * through fallback_application_name); client_encoding follows it, so
     * it is always UTF8, the encoding of every event on the queue.
     */
    static const char *const  keys[] = {
        "connect_timeout", "fallback_application_name", "keepalives",
        "keepalives_idle", "keepalives_interval", "keepalives_count",
        "tcp_user_timeout", "dbname", "client_encoding", NULL
    };
    const char               *values[10];

    values[0] = "5";
    values[1] = app;
    values[2] = "1";
    values[3] = DB_KEEPALIVES_IDLE;
    values[4] = DB_KEEPALIVES_INTERVAL;
    values[5] = DB_KEEPALIVES_COUNT;
    values[6] = DB_TCP_USER_TIMEOUT;
    values[7] = conninfo;
    values[8] = "UTF8";
    values[9] = NULL;

    return PQconnectdbParams(keys, values, 1);
}


PGconn *
db_get(db_t *db)
{
    PGcancel  *cancel;
    char       err[512], q[600], set[128];
    int        was;

    if (db->conn != NULL && PQstatus(db->conn) == CONNECTION_OK) {
        return db->conn;
    }

    if (db->conn != NULL) {
        /* the reconnect says "postgres connected", once for siblings */
        __atomic_store_n(db->lost, 1, __ATOMIC_RELAXED);
    }

    db_drop(db);

    db->conn = db_connect(db->conninfo, db->app);

    if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
        if (!__atomic_exchange_n(db->outage, 1, __ATOMIC_RELAXED)) {
            log_error("postgres unavailable", "%s err=%s", db->describe,
                      log_quote(q, sizeof(q), db->conn
                                ? PQerrorMessage(db->conn)
                                : "out of memory"));
        }

        if (db->conn != NULL) {
            PQfinish(db->conn);
            db->conn = NULL;
        }
        return NULL;
    }

    /* NOTICEs ("already exists, skipping") belong in our log, at debug */
    PQsetNoticeProcessor(db->conn, db_notice, NULL);

    snprintf(set, sizeof(set), "SET timezone = 'UTC';"
             " SET statement_timeout = %d", db->timeout_ms);

    cancel = PQgetCancel(db->conn);

    if (cancel == NULL
        || db_exec(db->conn, set, PGRES_COMMAND_OK, err, sizeof(err)) != 0)
    {
        if (cancel == NULL) {
            snprintf(err, sizeof(err), "out of memory");
        }
        if (!__atomic_exchange_n(db->outage, 1, __ATOMIC_RELAXED)) {
            log_error("postgres unavailable", "%s err=%s", db->describe,
                      log_quote(q, sizeof(q), err));
        }
        if (cancel != NULL) {
            PQfreeCancel(cancel);
        }
        PQfinish(db->conn);
        db->conn = NULL;
        return NULL;
    }

    pthread_mutex_lock(&db->lock);
    db->cancel = cancel;
    db->sock = PQsocket(db->conn);
    pthread_mutex_unlock(&db->lock);

    was = __atomic_exchange_n(db->outage, 0, __ATOMIC_RELAXED);
    was |= __atomic_exchange_n(db->lost, 0, __ATOMIC_RELAXED);

    /* connections sharing an outage: the first one back says it */
    if (!db->shared || was) {
        log_info("postgres connected", "%s server_version=%d",
                 db->describe, PQserverVersion(db->conn));
    } else {
        log_debug("postgres connected", "%s server_version=%d",
                  db->describe, PQserverVersion(db->conn));
    }

    return db->conn;
}


PGconn *
db_wait(db_t *db)
{
    PGconn   *conn;
    int64_t   backoff;

    backoff = DB_BACKOFF_MIN_MS;

    for ( ;; ) {
        conn = db_get(db);
        if (conn != NULL) {
            return conn;
        }

        if (time_sleep_ms(backoff) != 0) {
            return NULL;
        }

        backoff = backoff * 2 > DB_BACKOFF_MAX_MS
                  ? DB_BACKOFF_MAX_MS : backoff * 2;
    }
}


void
db_check(db_t *db)
{
    if (db->conn != NULL && PQstatus(db->conn) != CONNECTION_OK) {
        db_drop(db);
    }
}


void
db_guard(db_t *db)
{
    pthread_mutex_lock(&db->lock);
    db->busy_since = time_mono_ms();
    db->cancelled = 0;
    db->cut = 0;
    pthread_mutex_unlock(&db->lock);
}


int
db_unguard(db_t *db)
{
    int  cut;

    pthread_mutex_lock(&db->lock);
    db->busy_since = 0;
    cut = db->cut || db->cancelled;
    pthread_mutex_unlock(&db->lock);

    return cut;
}


PGresult *
db_query_within(PGconn *conn, const char *sql, int nparams,
    const char *const *params, int64_t ms)
{
    struct pollfd   pfd;
    PGresult       *res, *last;
    int64_t         deadline, left;
    int             rc;

    /* the simple protocol, which takes several statements, if it can */
    if (!(nparams == 0 ? PQsendQuery(conn, sql)
                       : PQsendQueryParams(conn, sql, nparams, NULL, params,
                                           NULL, NULL, 0)))
    {
        return NULL;
    }

    deadline = time_mono_ms() + ms;
    last = NULL;

    for ( ;; ) {
        while (PQisBusy(conn)) {
            left = deadline - time_mono_ms();

            if (left <= 0) {
                /*
                 * The server did not answer in time, not even to its own
                 * statement_timeout: it is frozen or unreachable. Stop
                 * the traffic so that libpq marks the connection bad.
                 */
                (void) shutdown(PQsocket(conn), SHUT_RDWR);
                (void) PQconsumeInput(conn);
                while ((res = PQgetResult(conn)) != NULL) {
                    PQclear(res);
                }
                if (last != NULL) {
                    PQclear(last);
                }
                return NULL;
            }

            pfd.fd = PQsocket(conn);
            pfd.events = POLLIN;
            pfd.revents = 0;

            rc = poll(&pfd, 1, (int) left);
            if (rc < 0 && errno != EINTR) {
                break;
            }

            if (rc > 0 && !PQconsumeInput(conn)) {
                break;
            }
        }

        res = PQgetResult(conn);
        if (res == NULL) {
            break;
        }

        if (last != NULL) {
            PQclear(last);
        }
        last = res;
    }

    return last;
}


/* Close the connection; the watchdog must not touch its socket again. */
static void
db_drop(db_t *db)
{
    PGcancel  *cancel;

    pthread_mutex_lock(&db->lock);
    cancel = db->cancel;
    db->cancel = NULL;
    db->sock = -1;
    pthread_mutex_unlock(&db->lock);

    if (cancel != NULL) {
        PQfreeCancel(cancel);
    }

    if (db->conn != NULL) {
        PQfinish(db->conn);
        db->conn = NULL;
    }
}


static void *
db_watchdog(void *arg)
{
    struct timespec  ts;
    db_t            *db;

    db = arg;

    pthread_mutex_lock(&db->lock);

    while (!db->closing) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += DB_WATCHDOG_TICK_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }

        (void) pthread_cond_timedwait(&db->wake, &db->lock, &ts);

        if (!db->closing) {
            db_watch(db, time_mono_ms());
        }
    }

    pthread_mutex_unlock(&db->lock);
    return NULL;
}


/* Under lock: look at the guarded call in progress, if any. */
static void
db_watch(db_t *db, int64_t now)
{
    int64_t  ran;
    char     err[256], q[300];

    if (db->busy_since == 0 || db->sock < 0 || db->cut) {
        return;
    }

    ran = now - db->busy_since;

    if (signals_stop_requested() && ran > DB_STOP_GRACE_MS
        && !db->cancelled && db->cancel != NULL)
    {
        /* a stop waits for no lock and no slow server */
        db->cancelled = 1;
        db->busy_since = now;
        err[0] = '\0';
        if (!PQcancel(db->cancel, err, sizeof(err))) {
            log_warn("postgres cancel failed", "%s err=%s", db->describe,
                     log_quote(q, sizeof(q), err));
        }
        log_info("postgres call cancelled to stop", "%s", db->describe);
        return;
    }

    if (ran > (db->cancelled ? DB_STOP_GRACE_MS
                             : db->timeout_ms + DB_WATCHDOG_SLACK_MS))
    {
        /*
         * The socket stays open (the caller's PQfinish closes it): only
         * its traffic stops, and libpq's wait returns with an error.
         */
        (void) shutdown(db->sock, SHUT_RDWR);
        db->cut = 1;
        log_error("postgres not answering, connection cut",
                  "%s waited_ms=%lld", db->describe, (long long) ran);
    }
}


const char *
db_describe(db_t *db)
{
    return db->describe;
}


int
db_exec(PGconn *conn, const char *sql, ExecStatusType expect, char *err,
    size_t errlen)
{
    PGresult  *res;

    res = PQexec(conn, sql);

    if (res == NULL || PQresultStatus(res) != expect) {
        db_error(conn, res, err, errlen);
        if (res != NULL) {
            PQclear(res);
        }
        return -1;
    }

    PQclear(res);
    return 0;
}


void
db_error(PGconn *conn, PGresult *res, char *err, size_t errlen)
{
    const char  *msg;
    size_t       n;

    msg = res ? PQresultErrorMessage(res) : "";
    if (msg == NULL || msg[0] == '\0') {
        msg = PQerrorMessage(conn);
    }
    if (msg == NULL || msg[0] == '\0') {
        msg = res ? PQresStatus(PQresultStatus(res)) : "no result";
    }

    snprintf(err, errlen, "%s", msg);

    msg = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(db_last_sqlstate, sizeof(db_last_sqlstate), "%s",
             msg ? msg : "");

    /* libpq ends messages with a newline; logfmt wants one line */
    n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' ')) {
        err[--n] = '\0';
    }
}


const char *
db_sqlstate(void)
{
    return db_last_sqlstate;
}


void
db_sqlstate_clear(void)
{
    db_last_sqlstate[0] = '\0';
}


int
db_is_up(db_t *db)
{
    return db->conn != NULL && PQstatus(db->conn) == CONNECTION_OK;
}


static void
db_notice(void *arg, const char *message)
{
    char  q[512];

    (void) arg;

    log_debug("postgres notice", "text=%s", log_quote(q, sizeof(q), message));
}


/*
 * Describe the target from the parsed conninfo, so neither a URI nor a
 * key=value string can leak its password into a log line.
 */
static void
db_describe_init(db_t *db)
{
    PQconninfoOption  *opts, *o;
    const char        *host, *port, *dbname, *user;
    char              *errmsg;

    host = port = dbname = user = NULL;
    errmsg = NULL;

    opts = PQconninfoParse(db->conninfo, &errmsg);
    if (opts == NULL) {
        PQfreemem(errmsg);
        snprintf(db->describe, sizeof(db->describe), "pg=unparsable");
        return;
    }

    for (o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0') {
            continue;
        }
        if (strcmp(o->keyword, "host") == 0) {
            host = o->val;
        } else if (strcmp(o->keyword, "port") == 0) {
            port = o->val;
        } else if (strcmp(o->keyword, "dbname") == 0) {
            dbname = o->val;
        } else if (strcmp(o->keyword, "user") == 0) {
            user = o->val;
        }
    }

    snprintf(db->describe, sizeof(db->describe),
             "pg_host=%s pg_port=%s pg_db=%s pg_user=%s",
             host ? host : "default", port ? port : "default",
             dbname ? dbname : "default", user ? user : "default");

    PQconninfoFree(opts);
}
