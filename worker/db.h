/*
 * activity-worker: the PostgreSQL connection.
 */

#ifndef ACTIVITY_DB_H
#define ACTIVITY_DB_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>


typedef struct db_s  db_t;


/*
 * Remember the conninfo; connects lazily. app is the application_name
 * unless the conninfo sets one (a static string). timeout_ms is the
 * session's statement_timeout and arms the watchdog of db_guard(); 0:
 * no timeout, no watchdog (migrations). NULL when out of memory.
 */
db_t *db_new(const char *conninfo, const char *app, int timeout_ms);

void db_free(db_t *db);

/*
 * db and with (connections to the same server) log "postgres
 * unavailable" once an outage between them, and "postgres connected"
 * (else at debug) only when the first of them is back after an outage
 * or a broken connection. Before either is used by a thread; with must
 * outlive db.
 */
void db_share_outage(db_t *db, db_t *with);

/*
 * A new connection with the options every connection of the worker
 * has: connect_timeout, TCP keepalives, tcp_user_timeout, client_encoding
 * UTF8. The caller checks PQstatus() and sets its session up.
 */
PGconn *db_connect(const char *conninfo, const char *app);

/*
 * Return a healthy connection, (re)connecting when there is none or it
 * went bad; NULL when PostgreSQL cannot be reached now. The first failure
 * of an outage and the recovery are logged, the retries in between are
 * not, so a long outage does not flood the log.
 */
PGconn *db_get(db_t *db);

/*
 * As db_get(), but wait (retrying with backoff) until connected or a stop
 * is requested; NULL only on stop.
 */
PGconn *db_wait(db_t *db);

/*
 * Call after a failed query: drops the connection if libpq says it is
 * broken, so the next db_get() reconnects.
 */
void db_check(db_t *db);

/*
 * Bracket a call that must not hang: between the two, the watchdog cuts
 * the connection once the call ran timeout + 10 s (or, after a stop
 * request, cancels it after 2 s). db_unguard() must come before anything
 * that may close the connection; non-zero when the watchdog acted.
 */
void db_guard(db_t *db);

/*
 * PQexecParams (text parameters and results) that gives up after ms:
 * then the connection is made unusable (PQstatus() says CONNECTION_BAD)
 * and NULL is returned. For a thread that must keep answering whatever
 * the server does. With several statements, the last result.
 */
PGresult *db_query_within(PGconn *conn, const char *sql, int nparams,
    const char *const *params, int64_t ms);

int db_unguard(db_t *db);

/* "host=... port=... dbname=... user=..." for logs: never the password. */
const char *db_describe(db_t *db);

/*
 * Run one parameterless command and check its status is the expected
 * one. Returns 0, or -1 with the server's message in err.
 */
int db_exec(PGconn *conn, const char *sql, ExecStatusType expect,
    char *err, size_t errlen);

/*
 * Copy a result's error message (or the connection's) into err, and
 * remember its SQLSTATE for db_sqlstate().
 */
void db_error(PGconn *conn, PGresult *res, char *err, size_t errlen);

/*
 * The SQLSTATE ("23505") of the last error db_error() saw in this
 * thread since db_sqlstate_clear(); "" when it had none (a lost
 * connection, our own failure).
 */
const char *db_sqlstate(void);

void db_sqlstate_clear(void);

/*
 * Non-zero while the connection is usable. After a failed query, zero
 * means the server went away (db_check() dropped the connection): an
 * outage, not a fault of the data sent.
 */
int db_is_up(db_t *db);


#endif /* ACTIVITY_DB_H */
