/*
 * activity-worker: the PostgreSQL connection.
 *
 * One connection, shared by the batch writer, migrations and partition
 * maintenance, which never overlap. The session runs in UTC so that a
 * timestamp without an offset, and every day boundary, means UTC.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "timeutil.h"


#define DB_BACKOFF_MIN_MS  250
#define DB_BACKOFF_MAX_MS  2000


/* per thread: an HTTP thread may have its own connection */
static __thread char  db_last_sqlstate[6];


struct db_s {
    char    *conninfo;
    PGconn  *conn;
    int      down;           /* an outage was logged, recovery is not yet */
    char     describe[256];
};


static void db_notice(void *arg, const char *message);
static void db_describe_init(db_t *db);


db_t *
db_new(const char *conninfo)
{
    db_t  *db;

    db = calloc(1, sizeof(*db));
    if (db == NULL) {
        return NULL;
    }

    db->conninfo = strdup(conninfo);
    if (db->conninfo == NULL) {
        free(db);
        return NULL;
    }

    db_describe_init(db);
    return db;
}


void
db_free(db_t *db)
{
    if (db == NULL) {
        return;
    }

    if (db->conn != NULL) {
        PQfinish(db->conn);
    }

    free(db->conninfo);
    free(db);
}


PGconn *
db_get(db_t *db)
{
    /*
     * dbname comes last with expand_dbname: the user's conninfo may then
     * override connect_timeout; fallback_application_name yields to any
     * application_name the user set.
     */
    static const char *const  keys[] = {
        "connect_timeout", "fallback_application_name", "dbname", NULL
    };
    const char               *values[4];
    char                      err[512], q[600];

    if (db->conn != NULL && PQstatus(db->conn) == CONNECTION_OK) {
        return db->conn;
    }

    if (db->conn != NULL) {
        PQfinish(db->conn);
        db->conn = NULL;
    }

    values[0] = "5";
    values[1] = "activity-worker";
    values[2] = db->conninfo;
    values[3] = NULL;

    db->conn = PQconnectdbParams(keys, values, 1);

    if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
        if (!db->down) {
            log_error("postgres unavailable", "%s err=%s", db->describe,
                      log_quote(q, sizeof(q), db->conn
                                ? PQerrorMessage(db->conn)
                                : "out of memory"));
            db->down = 1;
        }

        if (db->conn != NULL) {
            PQfinish(db->conn);
            db->conn = NULL;
        }
        return NULL;
    }

    /* NOTICEs ("already exists, skipping") belong in our log, at debug */
    PQsetNoticeProcessor(db->conn, db_notice, NULL);

    if (db_exec(db->conn, "SET timezone = 'UTC'", PGRES_COMMAND_OK,
                err, sizeof(err)) != 0)
    {
        if (!db->down) {
            log_error("postgres unavailable", "%s err=%s", db->describe,
                      log_quote(q, sizeof(q), err));
            db->down = 1;
        }
        PQfinish(db->conn);
        db->conn = NULL;
        return NULL;
    }

    log_info("postgres connected", "%s server_version=%d", db->describe,
             PQserverVersion(db->conn));
    db->down = 0;

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
        PQfinish(db->conn);
        db->conn = NULL;
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
