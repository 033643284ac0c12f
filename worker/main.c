/*
 * activity-worker: moves activity events from a Redis list into
 * date-partitioned PostgreSQL.
 *
 * main() only wires the parts together:
 *
 *   settings -> signals -> PostgreSQL -> migrations (--migrate: apply
 *   and exit; otherwise refuse to run on a stale schema) -> partition
 *   maintenance (its own thread and connection) -> the consumer loop
 *   until SIGTERM. With --listen, an HTTP thread (http.c) serves
 *   metrics, health and the read API from before the database wait
 *   until the loop has stopped.
 *
 * "activity-worker token ..." is a separate one-shot command (token.c),
 * as is "activity-worker dlq ..." (dlq.c).
 */

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "consumer.h"
#include "evmem.h"
#include "db.h"
#include "dlq.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "partitions.h"
#include "redisconn.h"
#include "settings.h"
#include "signals.h"
#include "token.h"


static void main_validate(const settings_t *s, redis_target_t *target);
static int main_loopback(const struct sockaddr_storage *ss);
static int main_exit(int rc, settings_t *s, redis_target_t *target,
    db_t *db, http_t *http);


int
main(int argc, char **argv)
{
    redis_target_t  target;
    partitions_t    parts;
    settings_t      s;
    http_t         *http;
    db_t           *db;
    char            where[300], q[600], err[300], qi[300], qr[320];
    char            qk[300];
    int             pending, rc;

    if (argc > 1 && strcmp(argv[1], "token") == 0) {
        return token_main(argc - 1, argv + 1);
    }

    if (argc > 1 && strcmp(argv[1], "dlq") == 0) {
        return dlq_main(argc - 1, argv + 1);
    }

    /* before any thread: jansson's allocator is the whole process's */
    evmem_init();

    settings_load(&s, argc, argv);
    main_validate(&s, &target);

    signals_install();
    metrics_init();
    http = NULL;

    /* a migration may rewrite a big table: no statement_timeout */
    db = db_new(s.pg_conninfo, "activity-worker",
                s.migrate ? 0 : s.pg_timeout * 1000);
    if (db == NULL) {
        log_error("out of memory", NULL);
        return main_exit(1, &s, &target, NULL, NULL);
    }

    if (s.migrate) {
        log_info("migrating", "%s sql_dir=%s", db_describe(db),
                 log_quote(q, sizeof(q), s.sql_dir));

        /* a one-shot command: fail fast rather than wait for the server */
        rc = migrate_run(db, s.sql_dir) == 0 ? 0 : 1;
        return main_exit(rc, &s, &target, db, NULL);
    }

    log_info("starting", "id=%s pid=%d redis=%s queue=%s batch=%d"
             " flush_ms=%d %s", log_quote(qi, sizeof(qi), s.worker_id),
             (int) getpid(),
             log_quote(qr, sizeof(qr), redis_target_describe(&target, where,
                                                             sizeof(where))),
             log_quote(qk, sizeof(qk), s.queue), s.batch, s.flush_ms,
             db_describe(db));

    /* up first: /healthz answers 503 while the database is awaited */
    if (strcmp(s.listen, "off") != 0) {
        http = http_start(&s, &target, err, sizeof(err));
        if (http == NULL) {
            log_error("cannot serve http", "listen=%s err=%s",
                      log_quote(qi, sizeof(qi), s.listen),
                      log_quote(q, sizeof(q), err));
            fprintf(stderr, "activity-worker: --listen %s: %s\n",
                    s.listen, err);
            return main_exit(1, &s, &target, db, NULL);
        }
        log_info("http listening", "listen=%s",
                 log_quote(qi, sizeof(qi), s.listen));
    }

    /* a daemon may start before its database: wait for it, calmly */
    if (db_wait(db) == NULL) {
        log_info("stopped", "reason=signal");
        return main_exit(0, &s, &target, db, http);
    }

    pending = migrate_pending(db, s.sql_dir);
    if (pending != 0) {
        if (pending > 0) {
            log_error("schema out of date, refusing to start",
                      "pending=%d hint=\"run activity-worker --migrate\"",
                      pending);
            fprintf(stderr, "activity-worker: %d migration(s) pending;"
                    " run activity-worker --migrate first\n", pending);
        }
        return main_exit(1, &s, &target, db, http);
    }

    if (partitions_start(&parts, s.pg_conninfo, s.pg_timeout * 1000,
                         s.partitions_ahead, s.retain_days, err,
                         sizeof(err)) != 0)
    {
        log_error("cannot start", "err=%s", log_quote(q, sizeof(q), err));
        return main_exit(1, &s, &target, db, http);
    }

    rc = consumer_run(&s, &target, db, &parts);

    partitions_stop(&parts);

    log_info("stopped", "reason=signal");
    return main_exit(rc, &s, &target, db, http);
}


/* Release everything, so a sanitizer build reports only real leaks. */
static int
main_exit(int rc, settings_t *s, redis_target_t *target, db_t *db,
    http_t *http)
{
    /* the HTTP thread goes first: it reads settings and target */
    http_stop(http);
    db_free(db);
    redis_target_free(target);
    settings_free(s);
    return rc;
}


/* Settings that parse but cannot work: exit 2 like any bad flag. */
static void
main_validate(const settings_t *s, redis_target_t *target)
{
    struct sockaddr_storage   ss;
    PQconninfoOption         *opts;
    log_level_e               level;
    socklen_t                 sslen;
    char                      err[256], *pqerr;

    if (log_parse_level(s->log_level, &level) != 0) {
        settings_fail("log-level", s->log_level,
                      "expected debug, info, warn or error");
    }
    log_set_level(level);

    if (redis_target_parse(target, s->redis_url, err, sizeof(err)) != 0) {
        /* the URL may hold a password: do not echo it back */
        settings_fail("redis", "...", err);
    }

    pqerr = NULL;
    opts = PQconninfoParse(s->pg_conninfo, &pqerr);
    if (opts == NULL) {
        settings_fail("pg", "...", pqerr ? pqerr : "cannot parse");
    }
    PQconninfoFree(opts);

    if (s->pg_read != NULL) {
        pqerr = NULL;
        opts = PQconninfoParse(s->pg_read, &pqerr);
        if (opts == NULL) {
            settings_fail("pg-read", "...", pqerr ? pqerr : "cannot parse");
        }
        PQconninfoFree(opts);
    }

    if (strcmp(s->listen, "off") != 0) {
        if (http_parse_listen(s->listen, &ss, &sslen, err, sizeof(err))
            != 0)
        {
            settings_fail("listen", s->listen, err);
        }

        /* the read API shows who did what: not to anyone who can reach it */
        if (s->api_token == NULL && !main_loopback(&ss)) {
            settings_fail("listen", s->listen, "not a loopback address:"
                          " set --api-token (ACTIVITY_API_TOKEN) so that"
                          " /api/... asks for it");
        }
    }
}


static int
main_loopback(const struct sockaddr_storage *ss)
{
    const struct sockaddr_in6  *sin6;
    const struct sockaddr_in   *sin;
    const unsigned char        *a;

    if (ss->ss_family == AF_INET) {
        sin = (const struct sockaddr_in *) ss;
        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }

    if (ss->ss_family == AF_INET6) {
        sin6 = (const struct sockaddr_in6 *) ss;
        a = sin6->sin6_addr.s6_addr;

        if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr)) {
            return 1;
        }

        return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && a[12] == 127;
    }

    return 0;
}
