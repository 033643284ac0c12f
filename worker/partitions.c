/*
 * activity-worker: daily partition maintenance.
 *
 * The work itself is in SQL (sql/002_partitions.sql), where it runs in a
 * transaction under an advisory lock, so any number of workers can call
 * it at the same moment; here is only the schedule.
 */

#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "partitions.h"
#include "timeutil.h"


#define PARTITIONS_EVERY_MS        (60 * 60 * 1000)
#define PARTITIONS_RETRY_MS        (60 * 1000)


static int partitions_call(PGconn *conn, const char *sql, int arg,
    long *result, char *err, size_t errlen);


void
partitions_init(partitions_t *p, db_t *db, int ahead, int retain)
{
    p->db = db;
    p->ahead = ahead;
    p->retain = retain;
    p->next_ms = 0;
    p->failing = 0;
}


void
partitions_tick(partitions_t *p)
{
    PGconn   *conn;
    int64_t   now, t0;
    long      created, dropped;
    char      err[1024], q[1100];

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

    if (partitions_call(conn, "SELECT activity_ensure_partitions($1)",
                        p->ahead, &created, err, sizeof(err)) != 0
        || partitions_call(conn, "SELECT activity_drop_partitions($1)",
                           p->retain, &dropped, err, sizeof(err)) != 0)
    {
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
             "created=%ld dropped=%ld ahead=%d retain_days=%d ms=%.1f",
             created, dropped, p->ahead, p->retain,
             (double) (time_mono_us() - t0) / 1000.0);

    p->failing = 0;
    p->next_ms = now + PARTITIONS_EVERY_MS;
}


static int
partitions_call(PGconn *conn, const char *sql, int arg, long *result,
    char *err, size_t errlen)
{
    PGresult    *res;
    const char  *params[1];
    char         num[16];

    snprintf(num, sizeof(num), "%d", arg);
    params[0] = num;

    res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);

    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK
        || PQntuples(res) != 1)
    {
        db_error(conn, res, err, errlen);
        if (res != NULL) {
            PQclear(res);
        }
        return -1;
    }

    *result = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return 0;
}
