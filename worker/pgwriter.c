/*
 * activity-worker: storing a batch of events in PostgreSQL.
 *
 * COPY is the fast way in, but it has no ON CONFLICT. So each batch is
 * COPYed into a temporary staging table, and one statement moves it into
 * activity_logs:
 *
 *   BEGIN; CREATE TEMP TABLE IF NOT EXISTS activity_stg
 *       (LIKE activity_logs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
 *   COPY activity_stg (...) FROM STDIN        -- text format
 *   WITH fresh AS (INSERT INTO activity_event_ids SELECT DISTINCT ON (id)
 *                  ... ON CONFLICT DO NOTHING RETURNING id, created_at)
 *   INSERT INTO activity_logs (...) SELECT ... FROM activity_stg
 *       JOIN fresh USING (id, created_at) ON CONFLICT DO NOTHING
 *   COMMIT                                     -- must say "COMMIT"
 *
 * One event id is one row, whatever timestamps it arrives with: the
 * primary key of activity_logs is (id, created_at), because a key of a
 * partitioned table must hold the partition key, so it alone would let
 * a retry that carries another timestamp in. activity_event_ids (not
 * partitioned, sql/004_once.sql) is keyed by id alone: an id it already
 * holds (an earlier batch, a replay after a crash, another worker) is not
 * RETURNed, so its row is not inserted again; within one batch the
 * earliest timestamp of an id wins. Ids are kept as long as their rows
 * (partition maintenance prunes both).
 *
 * The staging details column receives the whole event as queued when
 * its metadata.details is a non-empty object (else {}); the INSERT
 * keeps only that object (else {}), so the JSON reaches jsonb exactly as
 * the producer wrote it.
 *
 * The whole transaction runs under db_guard(): a server that stops
 * answering costs the connection, not the worker.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "metrics.h"
#include "pgwriter.h"


#define PGW_COLUMNS                                                       \
    "id, action, user_id, created_at, ip_address, user_agent, endpoint, " \
    "method, status, duration_ms, details"


typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
} pgw_buf_t;


static int pgw_copy(PGconn *conn, event_t *evs, size_t n, char *err,
    size_t errlen);
static int pgw_row(pgw_buf_t *b, const event_t *ev);
static int pgw_details(const event_t *ev);
static int pgw_field(pgw_buf_t *b, const char *s, int last);
static int pgw_reserve(pgw_buf_t *b, size_t more);
static void pgw_rollback(PGconn *conn);


int
pgw_store(db_t *db, event_t *evs, size_t n, long *inserted, char *err,
    size_t errlen)
{
    PGresult  *res;
    PGconn    *conn;

    *inserted = 0;
    db_sqlstate_clear();

    conn = db_get(db);
    if (conn == NULL) {
        snprintf(err, errlen, "postgres unavailable");
        return -1;
    }

    db_guard(db);

    /*
     * One round trip. The staging table lives as long as the session
     * (made by the first batch, again after a reconnect or a rollback
     * of the batch that made it); COMMIT empties it. A table made per
     * batch cost about 1 ms and a catalog entry each time.
     */
    if (db_exec(conn,
                "BEGIN;"
                " CREATE TEMP TABLE IF NOT EXISTS activity_stg"
                " (LIKE activity_logs INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS",
                PGRES_COMMAND_OK, err, errlen) != 0)
    {
        pgw_rollback(conn);
        goto failed;
    }

    if (pgw_copy(conn, evs, n, err, errlen) != 0) {
        pgw_rollback(conn);
        goto failed;
    }

    /* ids in order: two workers storing the same ids never deadlock */
    res = PQexec(conn,
                 "WITH fresh AS ("
                 " INSERT INTO activity_event_ids (id, created_at)"
                 " SELECT DISTINCT ON (id) id, created_at FROM activity_stg"
                 " ORDER BY id, created_at"
                 " ON CONFLICT DO NOTHING RETURNING id, created_at)"
                 " INSERT INTO activity_logs (" PGW_COLUMNS ")"
                 " SELECT s.id, s.action, s.user_id, s.created_at,"
                 " s.ip_address, s.user_agent, s.endpoint, s.method,"
                 " s.status, s.duration_ms,"
                 " CASE jsonb_typeof(s.details #> '{metadata,details}')"
                 " WHEN 'object' THEN s.details #> '{metadata,details}'"
                 " ELSE '{}' END"
                 " FROM activity_stg s"
                 " JOIN fresh f ON f.id = s.id AND f.created_at = s.created_at"
                 " ON CONFLICT DO NOTHING");

    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
        db_error(conn, res, err, errlen);
        if (res != NULL) {
            PQclear(res);
        }
        pgw_rollback(conn);
        goto failed;
    }

    *inserted = strtol(PQcmdTuples(res), NULL, 10);
    PQclear(res);

    /*
     * COMMIT of a transaction that failed earlier "succeeds" with the tag
     * ROLLBACK: only the tag tells whether the rows are there.
     */
    res = PQexec(conn, "COMMIT");

    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK
        || strcmp(PQcmdStatus(res), "COMMIT") != 0)
    {
        db_error(conn, res, err, errlen);
        if (res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK) {
            snprintf(err, errlen, "COMMIT answered %s", PQcmdStatus(res));
        }
        if (res != NULL) {
            PQclear(res);
        }
        *inserted = 0;
        goto failed;
    }

    PQclear(res);
    (void) db_unguard(db);
    return 0;

failed:

    (void) db_unguard(db);
    metrics_store_failed();

    /* a broken socket is dropped here so the retry reconnects */
    db_check(db);
    return -1;
}


/* COPY the events into activity_stg, one text-format row each. */
static int
pgw_copy(PGconn *conn, event_t *evs, size_t n, char *err, size_t errlen)
{
    pgw_buf_t   b;
    PGresult   *res;
    size_t      i;
    int         rc, failed;

    res = PQexec(conn, "COPY activity_stg (" PGW_COLUMNS ") FROM STDIN");

    if (res == NULL || PQresultStatus(res) != PGRES_COPY_IN) {
        db_error(conn, res, err, errlen);
        if (res != NULL) {
            PQclear(res);
        }
        return -1;
    }

    PQclear(res);

    memset(&b, 0, sizeof(b));
    failed = 0;

    /*
     * Rows are gathered into chunks of about 64 KiB: fewer calls than a
     * row at a time, bounded memory for a 10000-event batch.
     */
    for (i = 0; i < n && !failed; i++) {
        if (pgw_row(&b, &evs[i]) != 0) {
            snprintf(err, errlen, "out of memory");
            failed = 1;
            break;
        }

        if (b.len >= 65536 || i + 1 == n) {
            if (PQputCopyData(conn, b.data, (int) b.len) != 1) {
                db_error(conn, NULL, err, errlen);
                failed = 1;
            }
            b.len = 0;
        }
    }

    free(b.data);

    /* on our own failure, make the server abort the COPY */
    rc = PQputCopyEnd(conn, failed ? "activity-worker gave up" : NULL);
    if (rc != 1 && !failed) {
        db_error(conn, NULL, err, errlen);
        failed = 1;
    }

    /* a bad row is reported only here, in the COPY's final result */
    while ((res = PQgetResult(conn)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK && !failed) {
            db_error(conn, res, err, errlen);
            failed = 1;
        }
        PQclear(res);
    }

    return failed ? -1 : 0;
}


static int
pgw_row(pgw_buf_t *b, const event_t *ev)
{
    char  status[16], duration[32];

    if (ev->has_status) {
        snprintf(status, sizeof(status), "%d", ev->status);
    }

    if (ev->has_duration) {
        /* %.9g round-trips a float exactly */
        snprintf(duration, sizeof(duration), "%.9g", ev->duration_ms);
    }

    if (pgw_field(b, ev->id, 0) != 0
        || pgw_field(b, ev->type, 0) != 0
        || pgw_field(b, ev->user_id, 0) != 0
        || pgw_field(b, ev->timestamp, 0) != 0
        || pgw_field(b, ev->has_ip ? ev->ip : NULL, 0) != 0
        || pgw_field(b, ev->user_agent, 0) != 0
        || pgw_field(b, ev->endpoint, 0) != 0
        || pgw_field(b, ev->method, 0) != 0
        || pgw_field(b, ev->has_status ? status : NULL, 0) != 0
        || pgw_field(b, ev->has_duration ? duration : NULL, 0) != 0
        || pgw_field(b, pgw_details(ev) ? ev->text : "{}", 1) != 0)
    {
        return -1;
    }

    return 0;
}


/*
 * Whether metadata.details is an object with something in it: only then
 * is the event text sent for PostgreSQL to take details from (parsing
 * the whole event as jsonb was a large part of a row's cost); else the
 * column is {} and the row gets {}, as it would from the text.
 */
static int
pgw_details(const event_t *ev)
{
    json_t  *v;

    v = json_object_get(ev->root, "metadata");
    v = json_is_object(v) ? json_object_get(v, "details") : NULL;

    return json_is_object(v) && json_object_size(v) > 0;
}


/*
 * One COPY text-format field: NULL is \N; backslash, tab, newline and
 * carriage return are escaped, everything else is literal.
 */
static int
pgw_field(pgw_buf_t *b, const char *s, int last)
{
    const char  *p;

    if (s == NULL) {
        if (pgw_reserve(b, 3) != 0) {
            return -1;
        }
        memcpy(b->data + b->len, "\\N", 2);
        b->len += 2;

    } else {
        /* worst case: every byte escaped */
        if (pgw_reserve(b, strlen(s) * 2 + 1) != 0) {
            return -1;
        }

        for (p = s; *p != '\0'; p++) {
            switch (*p) {
            case '\\':
                b->data[b->len++] = '\\';
                b->data[b->len++] = '\\';
                break;
            case '\t':
                b->data[b->len++] = '\\';
                b->data[b->len++] = 't';
                break;
            case '\n':
                b->data[b->len++] = '\\';
                b->data[b->len++] = 'n';
                break;
            case '\r':
                b->data[b->len++] = '\\';
                b->data[b->len++] = 'r';
                break;
            default:
                b->data[b->len++] = *p;
            }
        }
    }

    b->data[b->len++] = last ? '\n' : '\t';
    return 0;
}


static int
pgw_reserve(pgw_buf_t *b, size_t more)
{
    char    *p;
    size_t   cap;

    if (b->len + more <= b->cap) {
        return 0;
    }

    cap = b->cap ? b->cap : 16384;
    while (cap < b->len + more) {
        cap *= 2;
    }

    p = realloc(b->data, cap);
    if (p == NULL) {
        return -1;
    }

    b->data = p;
    b->cap = cap;
    return 0;
}


static void
pgw_rollback(PGconn *conn)
{
    PGresult  *res;

    /* best effort: if the socket is gone, db_check() reconnects */
    res = PQexec(conn, "ROLLBACK");
    if (res != NULL) {
        PQclear(res);
    }
}
