/*
 * activity-worker: the read API (history, time series, live stats).
 */

#ifndef ACTIVITY_HISTORY_H
#define ACTIVITY_HISTORY_H

#include <stddef.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>


#define HISTORY_ARGS_MAX  16


/* The query string, decoded; value is "" for a bare "?name". */
typedef struct {
    const char  *name[HISTORY_ARGS_MAX];
    const char  *value[HISTORY_ARGS_MAX];
    size_t       n;
    int          overflow;      /* more than HISTORY_ARGS_MAX were given */
} history_args_t;


/* An answer: an HTTP status and a malloc'd JSON body (NULL: no memory). */
typedef struct {
    int    status;
    char  *body;
} history_reply_t;


/*
 * GET /api/events?userId=&type=&from=&to=&limit=&cursor=
 * conn is the read-only connection, NULL when PostgreSQL is down (503).
 */
void history_events(PGconn *conn, const history_args_t *args,
    history_reply_t *reply);

/* GET /api/timeseries?type=&from=&to=&bucket=minute|hour */
void history_timeseries(PGconn *conn, const history_args_t *args,
    history_reply_t *reply);

/* GET /api/stats: the string at key, as the worker stored it. */
void history_stats(redisContext *rc, const char *key,
    const history_args_t *args, history_reply_t *reply);

/* {"error":what} (and "reason" when not NULL) with status. */
void history_error(history_reply_t *reply, int status, const char *what,
    const char *reason);


#endif /* ACTIVITY_HISTORY_H */
