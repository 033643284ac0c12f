/*
 * activity-worker: storing a batch of events in PostgreSQL.
 *
 * One event id is one row, whatever timestamps it arrives with. The
 * primary key of activity_logs is (id, created_at) (a key of a
 * partitioned table must hold the partition key), so it alone would let
 * a retry that carries another timestamp in. activity_event_ids (not
 * partitioned, sql/004_once.sql) is keyed by the id alone and filled in
 * the same transaction as the rows; ids are kept as long as their rows
 * (partition maintenance prunes both).
 *
 * The direct path, taken by every batch whose ids are all new:
 *
 *   BEGIN; COPY activity_event_ids (id, created_at) FROM STDIN
 *   COPY activity_logs (...) FROM STDIN        -- text format
 *   COMMIT                                     -- must say "COMMIT"
 *
 * Within the batch the earliest timestamp of an id wins (the first on a
 * tie to the millisecond): one row an id is sent. An id that
 * activity_event_ids already holds (an earlier batch, a client's retry,
 * a replay after a crash) makes the first COPY fail with
 * unique_violation (23505); then the transaction is rolled back, one
 * query finds which ids are stored (SELECT ... WHERE id = ANY), and the
 * direct path runs again without them. Should it fail so again (another
 * worker stored one of the ids meanwhile), the batch goes the staged
 * path, which skips what is known in the statement that stores:
 *
 *   BEGIN; CREATE TEMP TABLE IF NOT EXISTS activity_stg
 *       (LIKE activity_logs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
 *   COPY activity_stg (...) FROM STDIN
 *   WITH fresh AS (INSERT INTO activity_event_ids SELECT DISTINCT ON (id)
 *                  ... ON CONFLICT DO NOTHING RETURNING id, created_at)
 *   INSERT INTO activity_logs (...) SELECT ... FROM activity_stg
 *       JOIN fresh USING (id, created_at) ON CONFLICT DO NOTHING
 *   COMMIT
 *
 * So does a row key activity_logs already holds without its id (a row
 * written by hand: the second COPY fails alike), and a batch holding a
 * details object the direct path cannot find in the text by its key
 * names. A batch with a stored id costs one failed COPY and a query
 * more, so clients' retries keep to the direct path. Any other error is the caller's (retry.c), as before. Both
 * paths send ids in order, so two workers storing the same ids wait for
 * each other, never deadlock. PostgreSQL spends about 1.3 times a raw
 * COPY of the rows on the direct path (the COPY of the ids) and about
 * 2.3 times on the staged one: every row goes through the staging
 * table, a join and two speculative inserts.
 *
 * metadata.details reaches jsonb exactly as the producer wrote it
 * (jansson would print 0.1 as 0.10000000000000001): the direct path
 * sends the object's own text, cut out of the event; the staged path
 * sends the whole event, and the INSERT keeps the object. Empty or
 * absent details are sent as {}.
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


/* what the direct path did */
#define PGW_STORED       0
#define PGW_FAILED      -1
#define PGW_STAGED       1              /* take the staged path */


typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
} pgw_buf_t;


/* one row of the direct path: the event and its details text */
typedef struct {
    const event_t  *ev;
    const char     *details;
    size_t          dlen;
} pgw_pick_t;


typedef int (*pgw_row_pt)(pgw_buf_t *b, const void *item);


/* the last batch held stored ids: ask before the next COPY (store thread) */
static __thread int  pgw_ask_first;


static int pgw_direct(PGconn *conn, event_t *evs, size_t n, long *inserted,
    char *err, size_t errlen);
static int pgw_known(PGconn *conn, pgw_pick_t *pick, size_t *npick,
    size_t *known, char *err, size_t errlen);
static int pgw_staged(PGconn *conn, event_t *evs, size_t n, long *inserted,
    char *err, size_t errlen);
static pgw_pick_t *pgw_pick(event_t *evs, size_t n, size_t *npick);
static int pgw_pick_cmp(const void *a, const void *b);
static int pgw_copy(PGconn *conn, const char *sql, const void *items,
    size_t size, size_t n, pgw_row_pt row, char *err, size_t errlen);
static int pgw_id_row(pgw_buf_t *b, const void *item);
static int pgw_log_row(pgw_buf_t *b, const void *item);
static int pgw_stg_row(pgw_buf_t *b, const void *item);
static int pgw_row(pgw_buf_t *b, const event_t *ev, const char *details,
    size_t dlen);
static int pgw_details(const event_t *ev);
static int pgw_details_span(const char *text, const char **p, size_t *len);
static const char *pgw_json_skip(const char *p);
static const char *pgw_json_ws(const char *p);
static int pgw_field(pgw_buf_t *b, const char *s, int last);
static int pgw_field_n(pgw_buf_t *b, const char *s, size_t len, int last);
static int pgw_reserve(pgw_buf_t *b, size_t more);
static int pgw_commit(PGconn *conn, char *err, size_t errlen);
static int pgw_unique_violation(void);
static void pgw_rollback(PGconn *conn);


int
pgw_store(db_t *db, event_t *evs, size_t n, long *inserted, char *err,
    size_t errlen)
{
    PGconn  *conn;
    int      rc;

    *inserted = 0;
    db_sqlstate_clear();

    conn = db_get(db);
    if (conn == NULL) {
        snprintf(err, errlen, "postgres unavailable");
        return -1;
    }

    db_guard(db);

    rc = pgw_direct(conn, evs, n, inserted, err, errlen);

    if (rc == PGW_STAGED) {
        log_debug("batch goes the staged path", "events=%zu cause=%s", n,
                  db_sqlstate()[0] ? "stored key" : "details");
        db_sqlstate_clear();
        db_guard(db);             /* a transaction of its own, a budget too */
        rc = pgw_staged(conn, evs, n, inserted, err, errlen);
    }

    if (rc != PGW_STORED) {
        *inserted = 0;
        (void) db_unguard(db);
        metrics_store_failed();

        /* a broken socket is dropped here so the retry reconnects */
        db_check(db);
        return -1;
    }

    (void) db_unguard(db);
    return 0;
}


/*
 * The direct path: the ids, then the rows, each by one COPY. PGW_STAGED
 * when an id (or a row key) is already stored, or a details object
 * cannot be cut out of its event's text; nothing is stored then.
 */
static int
pgw_direct(PGconn *conn, event_t *evs, size_t n, long *inserted, char *err,
    size_t errlen)
{
    pgw_pick_t  *pick;
    size_t       npick, i, known;
    int          rc, probed;

    pick = pgw_pick(evs, n, &npick);
    if (pick == NULL) {
        snprintf(err, errlen, "out of memory");
        return PGW_FAILED;
    }

    for (i = 0; i < npick; i++) {
        if (!pgw_details(pick[i].ev)) {
            pick[i].details = "{}";
            pick[i].dlen = 2;

        } else if (pgw_details_span(pick[i].ev->text, &pick[i].details,
                                    &pick[i].dlen) != 0)
        {
            free(pick);
            return PGW_STAGED;
        }
    }

    /*
     * Where clients retry, batch after batch holds a stored id: then ask
     * first (about 1 us a row) rather than fail a COPY (half a batch).
     */
    probed = 0;
    known = 0;

    if (pgw_ask_first) {
        if (pgw_known(conn, pick, &npick, &known, err, errlen) != 0) {
            free(pick);
            return PGW_FAILED;
        }
        probed = 1;
    }

    for ( ;; probed = 1) {

        /* ids in order (pgw_pick sorted them): two workers never deadlock */
        rc = pgw_copy(conn, "BEGIN; COPY activity_event_ids (id, created_at)"
                      " FROM STDIN", pick, sizeof(pgw_pick_t), npick,
                      pgw_id_row, err, errlen);

        if (rc != 0) {
            pgw_rollback(conn);

            if (!probed && pgw_unique_violation()
                && PQstatus(conn) == CONNECTION_OK)
            {
                /* some ids are stored: leave them out, try once more */
                db_sqlstate_clear();
                rc = pgw_known(conn, pick, &npick, &known, err, errlen);
                if (rc == 0) {
                    continue;
                }
            }

            break;
        }

        rc = pgw_copy(conn, "COPY activity_logs (" PGW_COLUMNS ")"
                      " FROM STDIN", pick, sizeof(pgw_pick_t), npick,
                      pgw_log_row, err, errlen);

        if (rc != 0) {
            pgw_rollback(conn);
        }

        break;
    }

    free(pick);

    pgw_ask_first = known > 0;

    if (rc != 0) {
        /* a key stored meanwhile, or a row key stored without its id */
        if (pgw_unique_violation() && PQstatus(conn) == CONNECTION_OK) {
            return PGW_STAGED;
        }

        return PGW_FAILED;
    }

    if (pgw_commit(conn, err, errlen) != 0) {
        return PGW_FAILED;
    }

    *inserted = (long) npick;
    return PGW_STORED;
}


/*
 * Leave out of pick the ids activity_event_ids holds already: one
 * query of index lookups, outside any transaction (what another worker
 * stores meanwhile makes the next COPY fail again, and the batch goes
 * the staged path).
 */
static int
pgw_known(PGconn *conn, pgw_pick_t *pick, size_t *npick, size_t *known,
    char *err, size_t errlen)
{
    const char  *param;
    PGresult    *res;
    pgw_buf_t    b;
    size_t       i, k;
    int          row, nrows;

    memset(&b, 0, sizeof(b));

    /* '{id,id,...}': ids are checked UUIDs, nothing to quote */
    if (pgw_reserve(&b, *npick * 37 + 3) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    b.data[b.len++] = '{';

    for (i = 0; i < *npick; i++) {
        if (i > 0) {
            b.data[b.len++] = ',';
        }
        memcpy(b.data + b.len, pick[i].ev->id, 36);
        b.len += 36;
    }

    b.data[b.len++] = '}';
    b.data[b.len] = '\0';

    param = b.data;

    /* in id order, as pick is */
    res = PQexecParams(conn, "SELECT id::text FROM activity_event_ids"
                       " WHERE id = ANY ($1::uuid[]) ORDER BY id",
                       1, NULL, &param, NULL, NULL, 0);

    free(b.data);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        db_error(conn, res, err, errlen);
        if (res != NULL) {
            PQclear(res);
        }
        return -1;
    }

    nrows = PQntuples(res);
    row = 0;
    k = 0;
    *known = 0;

    /* both sorted: one merge */
    for (i = 0; i < *npick; i++) {
        while (row < nrows
               && strcmp(PQgetvalue(res, row, 0), pick[i].ev->id) < 0)
        {
            row++;
        }

        if (row < nrows && strcmp(PQgetvalue(res, row, 0), pick[i].ev->id)
                           == 0)
        {
            (*known)++;
            continue;
        }

        pick[k++] = pick[i];
    }

    PQclear(res);

    log_debug("batch holds stored ids", "events=%zu stored=%zu", *npick,
              *known);

    *npick = k;
    return 0;
}


/*
 * The staged path: every event into the session's staging table, then
 * one statement that stores the rows whose ids are new.
 */
static int
pgw_staged(PGconn *conn, event_t *evs, size_t n, long *inserted, char *err,
    size_t errlen)
{
    PGresult  *res;

    /*
     * The staging table lives as long as the session (made by the first
     * batch that needs it, again after a reconnect or a rollback of the
     * batch that made it); COMMIT empties it.
     */
    if (pgw_copy(conn,
                 "BEGIN;"
                 " CREATE TEMP TABLE IF NOT EXISTS activity_stg"
                 " (LIKE activity_logs INCLUDING DEFAULTS)"
                 " ON COMMIT DELETE ROWS;"
                 " COPY activity_stg (" PGW_COLUMNS ") FROM STDIN",
                 evs, sizeof(event_t), n, pgw_stg_row, err, errlen) != 0)
    {
        pgw_rollback(conn);
        return PGW_FAILED;
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
        return PGW_FAILED;
    }

    *inserted = strtol(PQcmdTuples(res), NULL, 10);
    PQclear(res);

    if (pgw_commit(conn, err, errlen) != 0) {
        *inserted = 0;
        return PGW_FAILED;
    }

    return PGW_STORED;
}


/*
 * COMMIT of a transaction that failed earlier "succeeds" with the tag
 * ROLLBACK: only the tag tells whether the rows are there.
 */
static int
pgw_commit(PGconn *conn, char *err, size_t errlen)
{
    PGresult  *res;

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
        return -1;
    }

    PQclear(res);
    return 0;
}


static int
pgw_unique_violation(void)
{
    return strcmp(db_sqlstate(), "23505") == 0;
}


/*
 * One event an id: the earliest timestamp, the first of a tie. Sorted
 * by id (ev->id is lower case, so byte order is uuid order).
 */
static pgw_pick_t *
pgw_pick(event_t *evs, size_t n, size_t *npick)
{
    pgw_pick_t  *pick;
    size_t       i, k;

    pick = calloc(n ? n : 1, sizeof(pgw_pick_t));
    if (pick == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        pick[i].ev = &evs[i];
    }

    qsort(pick, n, sizeof(pgw_pick_t), pgw_pick_cmp);

    k = 0;

    for (i = 0; i < n; i++) {
        if (k > 0 && strcmp(pick[k - 1].ev->id, pick[i].ev->id) == 0) {
            continue;
        }
        pick[k++] = pick[i];
    }

    *npick = k;
    return pick;
}


/* by id, then time, then place in the batch */
static int
pgw_pick_cmp(const void *a, const void *b)
{
    const event_t  *x, *y;
    int             c;

    x = ((const pgw_pick_t *) a)->ev;
    y = ((const pgw_pick_t *) b)->ev;

    c = strcmp(x->id, y->id);
    if (c != 0) {
        return c;
    }

    if (x->ts_ms != y->ts_ms) {
        return x->ts_ms < y->ts_ms ? -1 : 1;
    }

    return x < y ? -1 : x > y;
}


/*
 * Run sql (ending in a COPY ... FROM STDIN) and send n items as rows
 * in text format, row() writing each.
 */
static int
pgw_copy(PGconn *conn, const char *sql, const void *items, size_t size,
    size_t n, pgw_row_pt row, char *err, size_t errlen)
{
    pgw_buf_t   b;
    PGresult   *res;
    size_t      i;
    int         rc, failed;

    res = PQexec(conn, sql);

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
        if (row(&b, (const char *) items + i * size) != 0) {
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


/* activity_event_ids: the id and the timestamp it is stored with */
static int
pgw_id_row(pgw_buf_t *b, const void *item)
{
    const event_t  *ev;

    ev = ((const pgw_pick_t *) item)->ev;

    if (pgw_field(b, ev->id, 0) != 0 || pgw_field(b, ev->timestamp, 1) != 0)
    {
        return -1;
    }

    return 0;
}


static int
pgw_log_row(pgw_buf_t *b, const void *item)
{
    const pgw_pick_t  *p;

    p = item;

    return pgw_row(b, p->ev, p->details, p->dlen);
}


/* activity_stg: details holds the whole event when there are any */
static int
pgw_stg_row(pgw_buf_t *b, const void *item)
{
    const event_t  *ev;

    ev = item;

    if (pgw_details(ev)) {
        return pgw_row(b, ev, ev->text, strlen(ev->text));
    }

    return pgw_row(b, ev, "{}", 2);
}


static int
pgw_row(pgw_buf_t *b, const event_t *ev, const char *details, size_t dlen)
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
        || pgw_field_n(b, details, dlen, 1) != 0)
    {
        return -1;
    }

    return 0;
}


/*
 * Whether metadata.details is an object with something in it: only then
 * is its text sent; else the row gets {}, as it would from the text. An
 * event read without a jansson tree (root NULL) has none: event_parse()
 * reads that way only events whose details are {} or absent.
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
 * Where the value of metadata.details lies in the event's text: 0, or
 * -1 when it is not found by key names as written (a key spelled with
 * an escape, such as "det\u0061ils"). The text is JSON that jansson has
 * accepted (no duplicate keys), so this only needs to skip values.
 */
static int
pgw_details_span(const char *text, const char **span, size_t *len)
{
    static const char  *path[] = { "\"metadata\"", "\"details\"" };
    const char         *p, *key, *end;
    size_t              depth, klen;
    int                 found;

    p = pgw_json_ws(text);

    for (depth = 0; depth < 2; depth++) {
        if (*p != '{') {
            return -1;
        }

        p = pgw_json_ws(p + 1);
        klen = strlen(path[depth]);

        for ( ;; ) {
            if (*p != '"') {
                return -1;
            }

            key = p;
            p = pgw_json_skip(p);
            if (p == NULL) {
                return -1;
            }

            found = (size_t) (p - key) == klen
                    && memcmp(key, path[depth], klen) == 0;

            p = pgw_json_ws(p);
            if (*p != ':') {
                return -1;
            }
            p = pgw_json_ws(p + 1);

            if (found) {
                break;
            }

            end = pgw_json_skip(p);
            if (end == NULL) {
                return -1;
            }

            p = pgw_json_ws(end);
            if (*p != ',') {
                /* the object ends without the key */
                return -1;
            }
            p = pgw_json_ws(p + 1);
        }
    }

    end = pgw_json_skip(p);
    if (end == NULL || *p != '{') {
        return -1;
    }

    *span = p;
    *len = (size_t) (end - p);
    return 0;
}


/* Past one JSON value starting at p, or NULL. */
static const char *
pgw_json_skip(const char *p)
{
    size_t  depth;
    int     in_string;

    if (*p != '{' && *p != '[' && *p != '"') {
        /* number, true, false, null */
        while (*p != '\0' && strchr(",}] \t\r\n", *p) == NULL) {
            p++;
        }
        return p;
    }

    depth = 0;
    in_string = 0;

    for ( ; *p != '\0'; p++) {
        if (in_string) {
            if (*p == '\\' && p[1] != '\0') {
                p++;
            } else if (*p == '"') {
                in_string = 0;
                if (depth == 0) {
                    return p + 1;
                }
            }
            continue;
        }

        switch (*p) {
        case '"':
            in_string = 1;
            break;
        case '{':
        case '[':
            depth++;
            break;
        case '}':
        case ']':
            if (--depth == 0) {
                return p + 1;
            }
            break;
        }
    }

    return NULL;
}


static const char *
pgw_json_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
        p++;
    }

    return p;
}


/*
 * One COPY text-format field: NULL is \\N; backslash, tab, newline and
 * carriage return are escaped, everything else is literal.
 */
static int
pgw_field(pgw_buf_t *b, const char *s, int last)
{
    if (s == NULL) {
        if (pgw_reserve(b, 3) != 0) {
            return -1;
        }
        memcpy(b->data + b->len, "\\N", 2);
        b->len += 2;
        b->data[b->len++] = last ? '\n' : '\t';
        return 0;
    }

    return pgw_field_n(b, s, strlen(s), last);
}


static int
pgw_field_n(pgw_buf_t *b, const char *s, size_t len, int last)
{
    const char  *p, *end;

    /* worst case: every byte escaped */
    if (pgw_reserve(b, len * 2 + 1) != 0) {
        return -1;
    }

    for (p = s, end = s + len; p < end; p++) {
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
