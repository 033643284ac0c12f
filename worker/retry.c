/*
 * activity-worker: storing a batch through failures.
 *
 * Three kinds of failure, told apart by what libpq reports:
 *
 *   outage    the connection is gone, or the SQLSTATE is of class 08
 *             (connection exception) or 57P01..57P03 (the server shuts
 *             down, restarts, is starting up). Nothing is wrong with the
 *             events: wait for the server (backoff 250 ms doubling to
 *             5 s) and try the same events again, uncounted.
 *   data      class 22 (data exception), 23 (integrity constraint) or 54
 *             (program limit exceeded, e.g. an index row too large): some
 *             event can never be stored, and waiting changes nothing. So
 *             the batch is split at once: each half in its own
 *             transaction, a half that fails again split again, down to
 *             single events, which are the ones refused.
 *   transient anything else: what can succeed later (40 serialization
 *             failure or deadlock, 55P03 lock not available, 53 out of
 *             resources, 57014 statement timeout) and what needs an
 *             operator (a missing privilege, a dropped table). Retried
 *             after each --retry-delays entry, then at the last delay for
 *             as long as it lasts; never split into dead letters, because
 *             single events would fail alike.
 *
 * Storing is idempotent (ON CONFLICT DO NOTHING), so a half stored
 * before a crash or a stop is harmless when the whole batch comes back.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pgwriter.h"
#include "retry.h"
#include "signals.h"


#define RETRY_OUTAGE_MIN_MS  250
#define RETRY_OUTAGE_MAX_MS  5000


typedef enum {
    RETRY_STORED = 0,
    RETRY_OUTAGE,
    RETRY_DATA,
    RETRY_TRANSIENT
} retry_kind_e;


static retry_kind_e retry_try(retry_t *r, event_t *evs, size_t n,
    char *err, size_t errlen);
static int retry_outage(retry_t *r, size_t n);
static int retry_split(retry_t *r, event_t *evs, size_t lo, size_t hi);
static int retry_part(retry_t *r, event_t *evs, size_t lo, size_t hi);
static int retry_refused(retry_t *r, event_t *evs, size_t i,
    const char *err);


int
retry_store(retry_t *r, event_t *evs, size_t n)
{
    retry_kind_e  kind;
    int           failures, stuck, last;
    char          err[1024], q[1100];

    r->inserted = 0;
    failures = 0;
    stuck = 0;
    last = r->delays[r->attempts - 1];

    for ( ;; ) {
        kind = retry_try(r, evs, n, err, sizeof(err));

        if (kind == RETRY_STORED) {
            if (failures > 0) {
                log_info("batch stored after retry",
                         "events=%zu inserted=%ld attempts=%d",
                         n, r->inserted, failures + 1);
            }
            return 0;
        }

        if (kind == RETRY_OUTAGE) {
            if (retry_outage(r, n) != 0) {
                return -1;
            }
            continue;
        }

        if (kind == RETRY_DATA) {
            /* no wait: the same events would be refused again */
            if (n == 1) {
                return retry_refused(r, evs, 0, err);
            }

            log_warn("batch refused for its data, splitting",
                     "events=%zu sqlstate=%s err=%s", n, db_sqlstate(),
                     log_quote(q, sizeof(q), err));
            return retry_split(r, evs, 0, n);
        }

        if (signals_stop_requested()) {
            /* stopping (the statement may have been cancelled for it) */
            return -1;
        }

        failures++;

        if (failures <= r->attempts) {
            log_error("batch store failed",
                      "events=%zu attempt=%d of=%d sqlstate=%s"
                      " retry_ms=%d err=%s", n, failures, r->attempts,
                      db_sqlstate()[0] ? db_sqlstate() : "none",
                      r->delays[failures - 1],
                      log_quote(q, sizeof(q), err));

        } else if (!stuck) {
            /* the data is fine; retry quietly until the server is */
            log_error("batch store keeps failing, retrying",
                      "events=%zu retry_ms=%d sqlstate=%s err=%s", n,
                      last, db_sqlstate()[0] ? db_sqlstate() : "none",
                      log_quote(q, sizeof(q), err));
            stuck = 1;
        }

        if (r->wait(r->arg, failures <= r->attempts
                            ? r->delays[failures - 1] : last) != 0)
        {
            return -1;
        }
    }
}


/* One transaction; what went wrong, if anything. */
static retry_kind_e
retry_try(retry_t *r, event_t *evs, size_t n, char *err, size_t errlen)
{
    const char  *state;
    long         inserted;

    if (pgw_store(r->db, evs, n, &inserted, err, errlen) == 0) {
        r->inserted += inserted;
        return RETRY_STORED;
    }

    state = db_sqlstate();

    if (!db_is_up(r->db) || strncmp(state, "08", 2) == 0
        || strcmp(state, "57P01") == 0 || strcmp(state, "57P02") == 0
        || strcmp(state, "57P03") == 0)
    {
        return RETRY_OUTAGE;
    }

    if (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0
        || strncmp(state, "54", 2) == 0)
    {
        return RETRY_DATA;
    }

    return RETRY_TRANSIENT;
}


/*
 * Hold the batch until PostgreSQL answers again. db_get() logs the
 * outage once and the recovery once; this adds one line saying what
 * waits, and one when it goes on: for the first batch held, when other
 * store threads hold theirs too. 0 once connected, -1 on a stop request.
 */
static int
retry_outage(retry_t *r, size_t n)
{
    int64_t  backoff;
    int      first, rc;

    first = r->held == NULL
            || __atomic_fetch_add(r->held, 1, __ATOMIC_RELAXED) == 0;

    if (first) {
        log_warn("batch held until postgres is back", "events=%zu", n);
    } else {
        log_debug("batch held until postgres is back", "events=%zu", n);
    }

    backoff = RETRY_OUTAGE_MIN_MS;

    for ( ;; ) {
        if (r->wait(r->arg, backoff) != 0) {
            rc = -1;
            break;
        }

        if (db_get(r->db) != NULL) {
            if (first) {
                log_info("batch resumed", "events=%zu", n);
            } else {
                log_debug("batch resumed", "events=%zu", n);
            }
            rc = 0;
            break;
        }

        backoff = backoff * 2 > RETRY_OUTAGE_MAX_MS
                  ? RETRY_OUTAGE_MAX_MS : backoff * 2;
    }

    if (r->held != NULL) {
        (void) __atomic_fetch_sub(r->held, 1, __ATOMIC_RELAXED);
    }

    return rc;
}


/* evs[lo, hi) fails for its data: store each half on its own. */
static int
retry_split(retry_t *r, event_t *evs, size_t lo, size_t hi)
{
    size_t  mid;

    mid = lo + (hi - lo) / 2;

    if (retry_part(r, evs, lo, mid) != 0) {
        return -1;
    }

    return retry_part(r, evs, mid, hi);
}


/*
 * Store evs[lo, hi) in one transaction; on a data failure split it, and
 * a single event that fails is the one refused. Outages are waited out,
 * other failures retried at the last delay: neither is the events'.
 */
static int
retry_part(retry_t *r, event_t *evs, size_t lo, size_t hi)
{
    retry_kind_e  kind;
    char          err[1024];

    for ( ;; ) {
        kind = retry_try(r, evs + lo, hi - lo, err, sizeof(err));

        switch (kind) {

        case RETRY_STORED:
            return 0;

        case RETRY_OUTAGE:
            if (retry_outage(r, hi - lo) != 0) {
                return -1;
            }
            continue;

        case RETRY_TRANSIENT:
            if (r->wait(r->arg, r->delays[r->attempts - 1]) != 0) {
                return -1;
            }
            continue;

        case RETRY_DATA:
            break;
        }

        if (hi - lo > 1) {
            return retry_split(r, evs, lo, hi);
        }

        return retry_refused(r, evs, lo, err);
    }
}


/* Event i is the one PostgreSQL refuses: it becomes a dead letter. */
static int
retry_refused(retry_t *r, event_t *evs, size_t i, const char *err)
{
    char  q[1100], q2[300];

    log_warn("event refused by postgres", "id=%s sqlstate=%s err=%s"
             " event=%s", evs[i].id, db_sqlstate(),
             log_quote(q, sizeof(q), err),
             log_quote(q2, sizeof(q2), evs[i].text));

    r->errors[i] = strdup(err);
    return r->errors[i] != NULL ? 0 : -1;
}
