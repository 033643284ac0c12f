/*
 * activity-worker: schema migrations.
 *
 * A migration is a file NNN_name.sql; its version is the number NNN (so
 * a file may be renamed without being applied again). Files run in
 * numeric order, each once, inside its own transaction together with the
 * row that records it: a file is either wholly applied and recorded or
 * not at all.
 */

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "migrate.h"
#include "timeutil.h"


/*
 * Advisory lock keys, shared with sql/002_partitions.sql:
 * (0x41435456 "ACTV", 1) migrations, (..., 2) partition maintenance.
 */
#define MIGRATE_LOCK_SQL    "SELECT pg_advisory_lock(1094931542, 1)"
#define MIGRATE_UNLOCK_SQL  "SELECT pg_advisory_unlock(1094931542, 1)"

#define MIGRATE_FILE_MAX    (16 * 1024 * 1024)


typedef struct {
    char  *name;        /* "001_activity_logs.sql" */
    char  *version;     /* "001" */
    long   number;
} migration_t;

typedef struct {
    migration_t  *v;
    size_t        n;
} migration_list_t;


static int migrate_scan(const char *dir, migration_list_t *list);
static void migrate_list_free(migration_list_t *list);
static int migrate_cmp(const void *a, const void *b);
static int migrate_applied(PGconn *conn, int have_table, char ***versions,
    int *n, char *err, size_t errlen);
static int migrate_is_applied(char **versions, int n, const char *version);
static void migrate_versions_free(char **versions, int n);
static int migrate_apply(PGconn *conn, const char *dir,
    const migration_t *m, char *err, size_t errlen);
static char *migrate_read(const char *path, char *err, size_t errlen);


int
migrate_run(db_t *db, const char *dir)
{
    migration_list_t   list;
    PGconn            *conn;
    char             **versions, err[1024], q[1100];
    size_t             i;
    int                n, rc, applied;
    int64_t            t0;

    if (migrate_scan(dir, &list) != 0) {
        return -1;
    }

    conn = db_get(db);
    if (conn == NULL) {
        migrate_list_free(&list);
        return -1;
    }

    versions = NULL;
    n = 0;
    applied = 0;
    rc = -1;

    /*
     * The lock comes first: CREATE TABLE IF NOT EXISTS is itself not
     * safe against a concurrent twin (a duplicate-key error on the
     * catalog), and the second worker must see the first one's work.
     */
    if (db_exec(conn, MIGRATE_LOCK_SQL, PGRES_TUPLES_OK, err,
                sizeof(err)) != 0)
    {
        log_error("migration failed", "step=lock err=%s",
                  log_quote(q, sizeof(q), err));
        goto done;
    }

    if (db_exec(conn,
                "CREATE TABLE IF NOT EXISTS activity_schema_migrations ("
                " version text PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                PGRES_COMMAND_OK, err, sizeof(err)) != 0
        || migrate_applied(conn, 1, &versions, &n, err, sizeof(err)) != 0)
    {
        log_error("migration failed", "step=read_versions err=%s",
                  log_quote(q, sizeof(q), err));
        goto unlock;
    }

    for (i = 0; i < list.n; i++) {
        if (migrate_is_applied(versions, n, list.v[i].version)) {
            continue;
        }

        t0 = time_mono_us();

        if (migrate_apply(conn, dir, &list.v[i], err, sizeof(err)) != 0) {
            log_error("migration failed", "version=%s file=%s err=%s",
                      list.v[i].version, list.v[i].name,
                      log_quote(q, sizeof(q), err));
            fprintf(stderr, "activity-worker: migration %s failed: %s\n",
                    list.v[i].name, err);
            goto unlock;
        }

        log_info("migration applied", "version=%s file=%s ms=%.1f",
                 list.v[i].version, list.v[i].name,
                 (double) (time_mono_us() - t0) / 1000.0);
        printf("applied %s\n", list.v[i].name);
        applied++;
    }

    log_info("schema current", "applied=%d total=%zu", applied, list.n);
    printf("schema current: %d applied now, %zu in total\n", applied,
           list.n);
    fflush(stdout);
    rc = 0;

unlock:

    if (db_exec(conn, MIGRATE_UNLOCK_SQL, PGRES_TUPLES_OK, err,
                sizeof(err)) != 0)
    {
        /* the session ends right after; its lock goes with it */
        log_warn("migration unlock failed", "err=%s",
                 log_quote(q, sizeof(q), err));
    }

done:

    db_check(db);
    migrate_versions_free(versions, n);
    migrate_list_free(&list);
    return rc;
}


int
migrate_pending(db_t *db, const char *dir)
{
    migration_list_t   list;
    PGresult          *res;
    PGconn            *conn;
    char             **versions, err[1024], q[1100];
    size_t             i;
    int                n, pending, have_table;

    if (migrate_scan(dir, &list) != 0) {
        return -1;
    }

    conn = db_get(db);
    if (conn == NULL) {
        migrate_list_free(&list);
        return -1;
    }

    res = PQexec(conn,
                 "SELECT to_regclass('activity_schema_migrations')"
                 " IS NOT NULL");
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK
        || PQntuples(res) != 1)
    {
        db_error(conn, res, err, sizeof(err));
        if (res != NULL) {
            PQclear(res);
        }
        log_error("migration check failed", "err=%s",
                  log_quote(q, sizeof(q), err));
        db_check(db);
        migrate_list_free(&list);
        return -1;
    }

    have_table = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);

    if (migrate_applied(conn, have_table, &versions, &n, err,
                        sizeof(err)) != 0)
    {
        log_error("migration check failed", "err=%s",
                  log_quote(q, sizeof(q), err));
        db_check(db);
        migrate_list_free(&list);
        return -1;
    }

    pending = 0;
    for (i = 0; i < list.n; i++) {
        if (!migrate_is_applied(versions, n, list.v[i].version)) {
            log_error("migration pending", "version=%s file=%s",
                      list.v[i].version, list.v[i].name);
            pending++;
        }
    }

    migrate_versions_free(versions, n);
    migrate_list_free(&list);
    return pending;
}


/* List dir's NNN_name.sql files, sorted by number; refuse duplicates. */
static int
migrate_scan(const char *dir, migration_list_t *list)
{
    struct dirent  *de;
    migration_t    *m, *grown;
    const char     *name, *p;
    size_t          len, cap, i;
    DIR            *d;
    char            q[600];

    list->v = NULL;
    list->n = 0;
    cap = 0;

    d = opendir(dir);
    if (d == NULL) {
        log_error("cannot read migrations", "dir=%s err=%s",
                  log_quote(q, sizeof(q), dir), strerror(errno));
        return -1;
    }

    while ((de = readdir(d)) != NULL) {
        name = de->d_name;
        len = strlen(name);

        for (p = name; isdigit((unsigned char) *p); p++) {
            /* skip the number */
        }

        if (p == name || *p != '_' || len < 5
            || strcmp(name + len - 4, ".sql") != 0)
        {
            continue;
        }

        if (list->n == cap) {
            cap = cap ? cap * 2 : 16;
            grown = realloc(list->v, cap * sizeof(*grown));
            if (grown == NULL) {
                closedir(d);
                migrate_list_free(list);
                return -1;
            }
            list->v = grown;
        }

        m = &list->v[list->n];
        m->name = strdup(name);
        m->version = strndup(name, (size_t) (p - name));
        m->number = strtol(name, NULL, 10);

        if (m->name == NULL || m->version == NULL) {
            free(m->name);
            free(m->version);
            closedir(d);
            migrate_list_free(list);
            return -1;
        }

        list->n++;
    }

    closedir(d);

    qsort(list->v, list->n, sizeof(migration_t), migrate_cmp);

    for (i = 1; i < list->n; i++) {
        if (strcmp(list->v[i - 1].version, list->v[i].version) == 0) {
            log_error("duplicate migration version", "version=%s"
                      " files=%s,%s", list->v[i].version,
                      list->v[i - 1].name, list->v[i].name);
            migrate_list_free(list);
            return -1;
        }
    }

    return 0;
}


static void
migrate_list_free(migration_list_t *list)
{
    size_t  i;

    for (i = 0; i < list->n; i++) {
        free(list->v[i].name);
        free(list->v[i].version);
    }

    free(list->v);
    list->v = NULL;
    list->n = 0;
}


static int
migrate_cmp(const void *a, const void *b)
{
    const migration_t  *x = a, *y = b;

    if (x->number != y->number) {
        return x->number < y->number ? -1 : 1;
    }

    return strcmp(x->version, y->version);
}


static int
migrate_applied(PGconn *conn, int have_table, char ***versions, int *n,
    char *err, size_t errlen)
{
    PGresult  *res;
    char     **v;
    int        i, rows;

    *versions = NULL;
    *n = 0;

    if (!have_table) {
        return 0;
    }

    res = PQexec(conn, "SELECT version FROM activity_schema_migrations");
    if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
        db_error(conn, res, err, errlen);
        if (res != NULL) {
            PQclear(res);
        }
        return -1;
    }

    rows = PQntuples(res);
    v = calloc((size_t) rows + 1, sizeof(char *));
    if (v == NULL) {
        PQclear(res);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    for (i = 0; i < rows; i++) {
        v[i] = strdup(PQgetvalue(res, i, 0));
        if (v[i] == NULL) {
            migrate_versions_free(v, i);
            PQclear(res);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }

    PQclear(res);
    *versions = v;
    *n = rows;
    return 0;
}


static int
migrate_is_applied(char **versions, int n, const char *version)
{
    int  i;

    for (i = 0; i < n; i++) {
        if (strcmp(versions[i], version) == 0) {
            return 1;
        }
    }

    return 0;
}


static void
migrate_versions_free(char **versions, int n)
{
    int  i;

    if (versions == NULL) {
        return;
    }

    for (i = 0; i < n; i++) {
        free(versions[i]);
    }

    free(versions);
}


static int
migrate_apply(PGconn *conn, const char *dir, const migration_t *m,
    char *err, size_t errlen)
{
    PGresult    *res;
    const char  *params[1];
    char        *path, *sql;
    int          ok;

    if (asprintf(&path, "%s/%s", dir, m->name) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    sql = migrate_read(path, err, errlen);
    free(path);
    if (sql == NULL) {
        return -1;
    }

    if (db_exec(conn, "BEGIN", PGRES_COMMAND_OK, err, errlen) != 0) {
        free(sql);
        return -1;
    }

    /*
     * A file may hold many statements: the simple protocol runs them all
     * and returns the last one's result, which may be a SELECT's rows.
     */
    res = PQexec(conn, sql);
    free(sql);

    ok = res != NULL && (PQresultStatus(res) == PGRES_COMMAND_OK
                         || PQresultStatus(res) == PGRES_TUPLES_OK
                         || PQresultStatus(res) == PGRES_EMPTY_QUERY);
    if (!ok) {
        db_error(conn, res, err, errlen);
    }
    if (res != NULL) {
        PQclear(res);
    }

    if (ok) {
        params[0] = m->version;
        res = PQexecParams(conn,
                           "INSERT INTO activity_schema_migrations (version)"
                           " VALUES ($1)", 1, NULL, params, NULL, NULL, 0);
        if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK) {
            db_error(conn, res, err, errlen);
            ok = 0;
        }
        if (res != NULL) {
            PQclear(res);
        }
    }

    if (!ok) {
        res = PQexec(conn, "ROLLBACK");
        if (res != NULL) {
            PQclear(res);
        }
        return -1;
    }

    res = PQexec(conn, "COMMIT");
    if (res == NULL || PQresultStatus(res) != PGRES_COMMAND_OK
        || strcmp(PQcmdStatus(res), "COMMIT") != 0)
    {
        db_error(conn, res, err, errlen);
        if (res != NULL) {
            PQclear(res);
        }
        return -1;
    }

    PQclear(res);
    return 0;
}


static char *
migrate_read(const char *path, char *err, size_t errlen)
{
    FILE    *f;
    char    *buf, *grown;
    size_t   n, cap;

    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }

    cap = 65536;
    n = 0;
    buf = malloc(cap);

    for ( ;; ) {
        if (buf == NULL) {
            snprintf(err, errlen, "out of memory");
            break;
        }

        n += fread(buf + n, 1, cap - n - 1, f);

        if (ferror(f)) {
            snprintf(err, errlen, "%s: read error", path);
            break;
        }

        if (feof(f)) {
            buf[n] = '\0';
            fclose(f);
            return buf;
        }

        if (cap >= MIGRATE_FILE_MAX) {
            snprintf(err, errlen, "%s: larger than %d bytes", path,
                     MIGRATE_FILE_MAX);
            break;
        }

        cap *= 2;
        grown = realloc(buf, cap);
        if (grown == NULL) {
            free(buf);
        }
        buf = grown;
    }

    free(buf);
    fclose(f);
    return NULL;
}
