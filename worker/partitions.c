/*
 * activity-worker: daily partition maintenance.
 *
 * A thread and a PostgreSQL connection of its own: neither the consumer
 * nor the store ever waits for it. It runs at start, then hourly:
 *
 *   SET lock_timeout = '1s'
 *   SELECT pg_try_advisory_lock(ACTV, 2)       -- one worker at a time
 *   SELECT activity_create_partition(day)      -- yesterday .. +ahead,
 *                                              -- each its own transaction
 *   per partition older than --retain-days:
 *     ALTER TABLE activity_logs DETACH PARTITION p [CONCURRENTLY]
 *     DROP TABLE p
 *   DELETE FROM activity_logs_default WHERE created_at < cutoff
 *   DELETE FROM activity_event_ids ... < cutoff, 10000 at a time
 *   SELECT pg_advisory_unlock(ACTV, 2)
 *
 * Locks. Creating a partition takes ACCESS EXCLUSIVE on the default
 * partition (sql/002_partitions.sql), detaching one without CONCURRENTLY
 * on activity_logs. While such a request waits behind a long reader (a
 * report, pg_dump), every later reader and writer of that table queues
 * behind it: so no request waits more than lock_timeout (1 s). A run
 * that meets a busy lock stops there and tries again 5 s later, then
 * 10, 20, 40, 60 s (each try may hold others up to a second, so a
 * reader that stays for hours is not met every few seconds); meanwhile
 * events of a day without partition go to the default one, whose rows
 * move into the partition once it can be made.
 *
 * DETACH ... CONCURRENTLY holds only SHARE UPDATE EXCLUSIVE, but
 * PostgreSQL refuses it while the table has a DEFAULT partition, which
 * ours has: then the plain DETACH is used, under the same lock_timeout.
 * A DETACH ... CONCURRENTLY that was interrupted is FINALIZEd.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "partitions.h"
#include "signals.h"
#include "timeutil.h"


#define PARTITIONS_EVERY_MS        (60 * 60 * 1000)
#define PARTITIONS_RETRY_MS        (60 * 1000)
#define PARTITIONS_LOCK_MS         5000
#define PARTITIONS_LOCK_MAX_MS     60000
#define PARTITIONS_PRUNE_CHUNK     "10000"

#define PARTITIONS_LOCK_TIMEOUT    "SET lock_timeout = '1s'"
#define PARTITIONS_TRY_LOCK        "SELECT pg_try_advisory_lock(1094931542, 2)"
#define PARTITIONS_UNLOCK          "SELECT pg_advisory_unlock(1094931542, 2)"


typedef enum {
    PARTITIONS_DONE = 0,
    PARTITIONS_BUSY,         /* a lock was not available: later */
    PARTITIONS_FAILED
} partitions_rc_e;


static void *partitions_thread(void *arg);
static void partitions_tick(partitions_t *p);
static partitions_rc_e partitions_run(partitions_t *p, PGconn *conn,
    long *created, long *dropped, long *pruned, char *err, size_t errlen);
static partitions_rc_e partitions_drop(partitions_t *p, PGconn *conn,
    long *dropped, char *err, size_t errlen);
static partitions_rc_e partitions_prune(partitions_t *p, PGconn *conn,
    long *pruned, char *err, size_t errlen);
static PGresult *partitions_query(PGconn *conn, const char *sql,
    const char *arg, ExecStatusType expect, char *err, size_t errlen);
static partitions_rc_e partitions_failed(void);
static int partitions_closing(partitions_t *p);


int
partitions_start(partitions_t *p, const char *conninfo, int timeout_ms,
    int ahead, int retain, char *err, size_t errlen)
{
    pthread_condattr_t  ca;
    int                 rc;

    memset(p, 0, sizeof(*p));
    p->ahead = ahead;
    p->retain = retain;

    p->db = db_new(conninfo, "activity-worker-maintenance", timeout_ms);
    if (p->db == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->wake, &ca);
    pthread_condattr_destroy(&ca);

    /* signals stay with the main loop */
    rc = signals_thread_create(&p->thread, partitions_thread, p);

    if (rc != 0) {
        snprintf(err, errlen, "cannot start the maintenance thread: %s",
                 strerror(rc));
        pthread_cond_destroy(&p->wake);
        pthread_mutex_destroy(&p->lock);
        db_free(p->db);
        p->db = NULL;
        return -1;
    }

    p->running = 1;
    return 0;
}


void
partitions_stop(partitions_t *p)
{
    if (!p->running) {
        return;
    }

    pthread_mutex_lock(&p->lock);
    p->closing = 1;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);

    /* a statement in progress is cancelled by the db watchdog */
    pthread_join(p->thread, NULL);

    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    db_free(p->db);
    p->db = NULL;
    p->running = 0;
}


static void *
partitions_thread(void *arg)
{
    struct timespec   ts;
    partitions_t     *p;
    int64_t           wait;

    p = arg;

    pthread_mutex_lock(&p->lock);

    while (!p->closing) {
        pthread_mutex_unlock(&p->lock);
        partitions_tick(p);
        pthread_mutex_lock(&p->lock);

        if (p->closing) {
            break;
        }

        wait = p->next_ms - time_mono_ms();
        wait = wait < 1 ? 1 : wait > 1000 ? 1000 : wait;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (long) (wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }

        (void) pthread_cond_timedwait(&p->wake, &p->lock, &ts);
    }

    pthread_mutex_unlock(&p->lock);
    return NULL;
}


static void
partitions_tick(partitions_t *p)
{
    partitions_rc_e   rc;
    PGresult         *res;
    PGconn           *conn;
    int64_t           now, t0;
    long              created, dropped, pruned;
    char              err[1024], q[1100];

    now = time_mono_ms();
    if (p->next_ms != 0 && now < p->next_ms) {
        return;
    }

    conn = db_get(p->db);
    if (conn == NULL) {
        p->next_ms = now + PARTITIONS_RETRY_MS;
        return;
    }

    t0 = time_mono_us();
    created = dropped = pruned = 0;

    db_guard(p->db);

    res = partitions_query(conn, PARTITIONS_TRY_LOCK, NULL, PGRES_TUPLES_OK,
                           err, sizeof(err));
    if (res == NULL) {
        rc = PARTITIONS_FAILED;

    } else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        /* another worker maintains right now: that is enough */
        PQclear(res);
        (void) db_unguard(p->db);
        log_debug("partition maintenance left to another worker", NULL);
        p->next_ms = now + PARTITIONS_EVERY_MS;
        return;

    } else {
        PQclear(res);
        rc = partitions_run(p, conn, &created, &dropped, &pruned, err,
                            sizeof(err));

        res = PQexec(conn, PARTITIONS_UNLOCK);
        if (res != NULL) {
            PQclear(res);
        }
    }

    (void) db_unguard(p->db);

    if (rc == PARTITIONS_BUSY) {
        p->lock_wait_ms = p->lock_wait_ms == 0 ? PARTITIONS_LOCK_MS
                          : p->lock_wait_ms * 2 > PARTITIONS_LOCK_MAX_MS
                          ? PARTITIONS_LOCK_MAX_MS : p->lock_wait_ms * 2;
        if (!p->postponed) {
            log_warn("partition maintenance postponed", "err=%s"
                     " retry_ms=%lld", log_quote(q, sizeof(q), err),
                     (long long) p->lock_wait_ms);
            p->postponed = 1;
        }
        p->next_ms = now + p->lock_wait_ms;
        return;
    }

    p->lock_wait_ms = 0;

    if (rc == PARTITIONS_FAILED) {
        if (!p->failing) {
            log_error("partition maintenance failed", "err=%s",
                      log_quote(q, sizeof(q), err));
            p->failing = 1;
        }
        db_check(p->db);
        p->next_ms = now + PARTITIONS_RETRY_MS;
        return;
    }

    log_info("partitions maintained",
             "created=%ld dropped=%ld ids_pruned=%ld ahead=%d"
             " retain_days=%d ms=%.1f", created, dropped, pruned, p->ahead,
             p->retain, (double) (time_mono_us() - t0) / 1000.0);

    p->failing = 0;
    p->postponed = 0;
    p->next_ms = now + PARTITIONS_EVERY_MS;
}


/* Under the advisory lock: create, detach and drop, prune. */
static partitions_rc_e
partitions_run(partitions_t *p, PGconn *conn, long *created, long *dropped,
    long *pruned, char *err, size_t errlen)
{
    partitions_rc_e   rc;
    PGresult         *res;
    char              day[16];
    int               d;

    res = partitions_query(conn, PARTITIONS_LOCK_TIMEOUT, NULL,
                           PGRES_COMMAND_OK, err, errlen);
    if (res == NULL) {
        return partitions_failed();
    }
    PQclear(res);

    /* yesterday too: late events from just before midnight */
    for (d = -1; d <= p->ahead && !partitions_closing(p); d++) {
        snprintf(day, sizeof(day), "%d", d);

        res = partitions_query(conn,
                  "SELECT activity_create_partition("
                  "(now() AT TIME ZONE 'UTC')::date + $1::int)",
                  day, PGRES_TUPLES_OK, err, errlen);
        if (res == NULL) {
            return partitions_failed();
        }

        if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
            (*created)++;
        }
        PQclear(res);
    }

    rc = partitions_drop(p, conn, dropped, err, errlen);
    if (rc != PARTITIONS_DONE) {
        return rc;
    }

    return partitions_prune(p, conn, pruned, err, errlen);
}


static partitions_rc_e
partitions_drop(partitions_t *p, PGconn *conn, long *dropped, char *err,
    size_t errlen)
{
    PGresult    *res, *r;
    const char  *how;
    char         retain[16], sql[512], *nsp, *name;
    int          i, n, has_default;

    res = partitions_query(conn,
              "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table"
              " WHERE partrelid = 'activity_logs'::regclass"
              " AND partdefid <> 0)",
              NULL, PGRES_TUPLES_OK, err, errlen);
    if (res == NULL) {
        return partitions_failed();
    }
    has_default = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);

    snprintf(retain, sizeof(retain), "%d", p->retain);

    res = partitions_query(conn,
              "SELECT nsp, name, detach_pending"
              " FROM activity_expired_partitions($1::int)",
              retain, PGRES_TUPLES_OK, err, errlen);
    if (res == NULL) {
        return partitions_failed();
    }

    n = PQntuples(res);

    for (i = 0; i < n && !partitions_closing(p); i++) {
        nsp = PQescapeIdentifier(conn, PQgetvalue(res, i, 0),
                                 strlen(PQgetvalue(res, i, 0)));
        name = PQescapeIdentifier(conn, PQgetvalue(res, i, 1),
                                  strlen(PQgetvalue(res, i, 1)));
        if (nsp == NULL || name == NULL) {
            PQfreemem(nsp);
            PQfreemem(name);
            PQclear(res);
            snprintf(err, errlen, "out of memory");
            return PARTITIONS_FAILED;
        }

        how = strcmp(PQgetvalue(res, i, 2), "t") == 0 ? " FINALIZE"
              : has_default ? "" : " CONCURRENTLY";

        snprintf(sql, sizeof(sql), "ALTER TABLE %s.activity_logs"
                 " DETACH PARTITION %s.%s%s", nsp, nsp, name, how);

        r = partitions_query(conn, sql, NULL, PGRES_COMMAND_OK, err, errlen);

        if (r != NULL) {
            PQclear(r);
            snprintf(sql, sizeof(sql), "DROP TABLE %s.%s", nsp, name);
            r = partitions_query(conn, sql, NULL, PGRES_COMMAND_OK, err,
                                 errlen);
        }

        PQfreemem(nsp);
        PQfreemem(name);

        if (r == NULL) {
            PQclear(res);
            return partitions_failed();
        }

        PQclear(r);
        (*dropped)++;
    }

    PQclear(res);

    if (!has_default) {
        return PARTITIONS_DONE;
    }

    res = partitions_query(conn,
              "DELETE FROM activity_logs_default WHERE created_at"
              " < ((now() AT TIME ZONE 'UTC')::date - $1::int)::timestamp"
              " AT TIME ZONE 'UTC'",
              retain, PGRES_COMMAND_OK, err, errlen);
    if (res == NULL) {
        return partitions_failed();
    }

    PQclear(res);
    return PARTITIONS_DONE;
}


/* Forget the ids of dropped days, a chunk per statement. */
static partitions_rc_e
partitions_prune(partitions_t *p, PGconn *conn, long *pruned, char *err,
    size_t errlen)
{
    PGresult  *res;
    char       retain[16];
    long       n;

    snprintf(retain, sizeof(retain), "%d", p->retain);

    do {
        res = partitions_query(conn,
                  "DELETE FROM activity_event_ids WHERE ctid = ANY (ARRAY("
                  " SELECT ctid FROM activity_event_ids WHERE created_at"
                  " < ((now() AT TIME ZONE 'UTC')::date - $1::int)::timestamp"
                  " AT TIME ZONE 'UTC' LIMIT " PARTITIONS_PRUNE_CHUNK "))",
                  retain, PGRES_COMMAND_OK, err, errlen);
        if (res == NULL) {
            return partitions_failed();
        }

        n = strtol(PQcmdTuples(res), NULL, 10);
        *pruned += n;
        PQclear(res);

    } while (n == strtol(PARTITIONS_PRUNE_CHUNK, NULL, 10)
             && !partitions_closing(p));

    return PARTITIONS_DONE;
}


/* One statement with at most one text parameter; NULL on failure. */
static PGresult *
partitions_query(PGconn *conn, const char *sql, const char *arg,
    ExecStatusType expect, char *err, size_t errlen)
{
    PGresult  *res;

    db_sqlstate_clear();

    res = PQexecParams(conn, sql, arg ? 1 : 0, NULL, &arg, NULL, NULL, 0);

    if (res == NULL || PQresultStatus(res) != expect
        || (expect == PGRES_TUPLES_OK && PQnfields(res) < 1))
    {
        db_error(conn, res, err, errlen);
        if (res != NULL) {
            PQclear(res);
        }
        return NULL;
    }

    return res;
}


/* What the failure just reported means for this run. */
static partitions_rc_e
partitions_failed(void)
{
    /* 55P03 lock_not_available: lock_timeout; try again soon */
    return strcmp(db_sqlstate(), "55P03") == 0 ? PARTITIONS_BUSY
                                                : PARTITIONS_FAILED;
}


static int
partitions_closing(partitions_t *p)
{
    int  closing;

    pthread_mutex_lock(&p->lock);
    closing = p->closing;
    pthread_mutex_unlock(&p->lock);

    return closing;
}
