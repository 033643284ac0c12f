/*
 * activity-worker: settings from flags, environment and defaults.
 *
 * One table holds every fact about a setting (flag, environment variable,
 * default, range, help), in the manner of pgbouncer's config table: the
 * parser, the --help text and the README's table all come from it, so
 * they cannot drift apart.
 */

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "settings.h"


typedef enum {
    SET_STRING,
    SET_INT,
    SET_BOOL          /* a flag without a value; env takes 1/0 etc. */
} setting_type_e;


typedef struct {
    const char      *name;      /* flag without the leading "--" */
    const char      *env;
    const char      *def;       /* NULL: computed at run time */
    const char      *meta;      /* value placeholder in --help */
    const char      *help;
    setting_type_e   type;
    long             min;
    long             max;
    size_t           offset;    /* into settings_t */
} setting_t;


static void settings_apply(settings_t *s, const setting_t *st,
    const char *value, const char *where);
static void settings_bad(const char *where, const char *value,
    const char *why) __attribute__((noreturn));
static const setting_t *settings_find(const char *name, size_t len);
static void settings_usage(FILE *f);
static int settings_parse_bool(const char *v, int *out);
static void settings_wrap(FILE *f, const char *left, const char *text);
static void settings_parse_delays(settings_t *s);


#define OFF(field)  offsetof(settings_t, field)


static const setting_t  settings_table[] = {

    { "redis", "ACTIVITY_REDIS_URL", "redis://127.0.0.1:6379", "URL",
      "Redis to consume from: redis://[[user]:password@]host[:port][/db],"
      " unix:/path/to/socket, or"
      " redis+sentinel://[[user]:password@]host[:port][,host[:port]...]"
      "/MASTER[/db] to ask Redis Sentinel where the master is (again after"
      " every lost connection or READONLY)",
      SET_STRING, 0, 0, OFF(redis_url) },

    { "pg", "ACTIVITY_PG_URL",
      "postgresql://postgres@127.0.0.1:5432/activity", "CONNINFO",
      "PostgreSQL to store into: any libpq conninfo string or URI",
      SET_STRING, 0, 0, OFF(pg_conninfo) },

    { "pg-read", "ACTIVITY_PG_READ_URL", NULL, "CONNINFO",
      "PostgreSQL for the read API (/api/events, /api/timeseries), e.g."
      " a replica; read-only, 5 s per query (default: --pg)",
      SET_STRING, 0, 0, OFF(pg_read) },

    { "pg-timeout", "ACTIVITY_PG_TIMEOUT", "30", "SECONDS",
      "statement_timeout of the store and maintenance connections; a"
      " call still unanswered 10 s later has its connection cut"
      " (1..3600)",
      SET_INT, 1, 3600, OFF(pg_timeout) },

    { "listen", "ACTIVITY_LISTEN", "off", "ADDR:PORT",
      "serve /metrics, /healthz and the read API /api/... over HTTP"
      " here, e.g. 127.0.0.1:9187; off: no listener. An address other"
      " than loopback needs --api-token",
      SET_STRING, 0, 0, OFF(listen) },

    { "api-token", "ACTIVITY_API_TOKEN", NULL, "SECRET",
      "when set, /api/... answers only requests with the header"
      " \"Authorization: Bearer SECRET\" (401 otherwise); /metrics and"
      " /healthz stay open",
      SET_STRING, 0, 0, OFF(api_token) },

    { "stall-timeout", "ACTIVITY_STALL_TIMEOUT", "60", "SECONDS",
      "/healthz answers 503 \"store stalled\" once events have waited"
      " this long with no batch stored (1..86400)",
      SET_INT, 1, 86400, OFF(stall_timeout) },

    { "queue", "ACTIVITY_QUEUE", "activity:events", "KEY",
      "Redis list the nginx module LPUSHes events onto",
      SET_STRING, 0, 0, OFF(queue) },

    { "dead", "ACTIVITY_DEAD_KEY", "activity:dead", "KEY",
      "Redis list that receives events that cannot be stored",
      SET_STRING, 0, 0, OFF(dead_key) },

    { "retry-delays", "ACTIVITY_RETRY_DELAYS", "2000,4000,8000", "MS,...",
      "a batch PostgreSQL refuses is tried once per entry, waiting that"
      " many ms after each failure; then it is split to find the events"
      " that fail, which go to --dead (1..10 entries, 0..600000 each)",
      SET_STRING, 0, 0, OFF(retry_delays) },

    { "heartbeat-ttl", "ACTIVITY_HEARTBEAT_TTL", "10", "SECONDS",
      "the key activity:alive:<NAME> says this worker lives; once it has"
      " expired for N s, another worker requeues its processing list"
      " (2..3600)",
      SET_INT, 2, 3600, OFF(heartbeat_ttl) },

    { "id", "ACTIVITY_WORKER_ID", NULL, "NAME",
      "worker name; one process at a time may hold it (a second one"
      " waits a heartbeat TTL, then refuses to start). A stable name lets"
      " a restarted worker finish its own list activity:processing:<NAME>"
      " at once; otherwise live workers requeue it once its heartbeat"
      " lapsed (default: <host name>-<8 random hex digits>, unique per"
      " start)",
      SET_STRING, 0, 0, OFF(worker_id) },

    { "batch", "ACTIVITY_BATCH", "2000", "N",
      "most events stored in one transaction (1..10000)",
      SET_INT, 1, 10000, OFF(batch) },

    { "flush-ms", "ACTIVITY_FLUSH_MS", "200", "N",
      "store a batch at most N ms after its first event, full or not;"
      " events are published as soon as they are taken, never held for"
      " this (0..3600000)",
      SET_INT, 0, 3600000, OFF(flush_ms) },

    { "store-ahead", "ACTIVITY_STORE_AHEAD", "4", "N",
      "most batches counted and published but not yet stored; when"
      " PostgreSQL is slow or down, new events wait in the queue (1..64)",
      SET_INT, 1, 64, OFF(store_ahead) },

    { "store-connections", "ACTIVITY_STORE_CONNECTIONS", "2", "N",
      "PostgreSQL connections storing batches side by side, each on a"
      " thread of its own; batches still leave the processing list in"
      " the order they were taken (1..8)",
      SET_INT, 1, 8, OFF(store_connections) },

    { "recent-key", "ACTIVITY_RECENT_KEY", "dashboard:events:recent",
      "KEY",
      "Redis list of the latest events, newest first, for dashboard"
      " snapshots",
      SET_STRING, 0, 0, OFF(recent_key) },

    { "recent-max", "ACTIVITY_RECENT_MAX", "100", "N",
      "events kept in the --recent-key list (1..10000)",
      SET_INT, 1, 10000, OFF(recent_max) },

    { "recent-ttl", "ACTIVITY_RECENT_TTL", "300", "SECONDS",
      "the --recent-key list expires this long after its last event"
      " (1..86400)",
      SET_INT, 1, 86400, OFF(recent_ttl) },

    { "stream-key", "ACTIVITY_STREAM_KEY", "dashboard:events:stream",
      "KEY",
      "Redis stream of the latest published events; its entry ids are"
      " the offsets dashboards resume from after a reconnect",
      SET_STRING, 0, 0, OFF(stream_key) },

    { "stream-max", "ACTIVITY_STREAM_MAX", "100000", "N",
      "entries kept in the --stream-key stream (XADD MAXLEN ~ N; Redis"
      " may keep a few more); size it for the dashboards' recovery"
      " window at the peak event rate; 0: no stream, no offsets"
      " (0..10000000)",
      SET_INT, 0, 10000000, OFF(stream_max) },

    { "stats-key", "ACTIVITY_STATS_KEY", "dashboard:stats", "KEY",
      "Redis string holding the latest stats JSON",
      SET_STRING, 0, 0, OFF(stats_key) },

    { "events-channel", "ACTIVITY_EVENTS_CHANNEL", "dashboard:events",
      "CHANNEL",
      "pub/sub channel for each batch's new events, as one JSON array"
      " (each event with its --stream-key entry id as \"offset\")",
      SET_STRING, 0, 0, OFF(events_channel) },

    { "stats-channel", "ACTIVITY_STATS_CHANNEL", "dashboard:stats",
      "CHANNEL",
      "pub/sub channel for the stats JSON",
      SET_STRING, 0, 0, OFF(stats_channel) },

    { "stats-min-ms", "ACTIVITY_STATS_MIN_MS", "250", "N",
      "publish changed stats at most once per N ms (0..60000)",
      SET_INT, 0, 60000, OFF(stats_min_ms) },

    { "stats-max-ms", "ACTIVITY_STATS_MAX_MS", "5000", "N",
      "publish stats at least every N ms, changed or not (1000..3600000)",
      SET_INT, 1000, 3600000, OFF(stats_max_ms) },

    { "live-prefix", "ACTIVITY_LIVE_PREFIX", "activity:live:", "PREFIX",
      "prefix of the live counter keys (see the README)",
      SET_STRING, 0, 0, OFF(live_prefix) },

    { "seen-prefix", "ACTIVITY_SEEN_PREFIX", "activity:seen:", "PREFIX",
      "prefix of the keys that mark an event id as counted and published",
      SET_STRING, 0, 0, OFF(seen_prefix) },

    { "seen-ttl", "ACTIVITY_SEEN_TTL", "10800", "SECONDS",
      "remember a counted event id this long after its timestamp; older"
      " events are stored but not counted or published (600..604800)",
      SET_INT, 600, 604800, OFF(seen_ttl) },

    { "migrate", "ACTIVITY_MIGRATE", "0", NULL,
      "apply pending SQL migrations, print what was applied, exit",
      SET_BOOL, 0, 1, OFF(migrate) },

    { "retain-days", "ACTIVITY_RETAIN_DAYS", "30", "N",
      "drop daily partitions older than N days (1..36500)",
      SET_INT, 1, 36500, OFF(retain_days) },

    { "partitions-ahead", "ACTIVITY_PARTITIONS_AHEAD", "7", "N",
      "keep daily partitions created N days ahead (0..365)",
      SET_INT, 0, 365, OFF(partitions_ahead) },

    { "sql-dir", "ACTIVITY_SQL_DIR", ACTIVITY_SQL_DIR, "DIR",
      "directory of the numbered NNN_name.sql migrations",
      SET_STRING, 0, 0, OFF(sql_dir) },

    { "log-level", "ACTIVITY_LOG_LEVEL", "info", "LEVEL",
      "debug, info, warn or error",
      SET_STRING, 0, 0, OFF(log_level) },
};


#define SETTINGS_N  (sizeof(settings_table) / sizeof(settings_table[0]))


void
settings_load(settings_t *s, int argc, char **argv)
{
    const setting_t  *st;
    const char       *arg, *eq, *value, *env;
    unsigned char     rnd[4];
    char              host[256], where[64];
    size_t            i;
    int               a;

    memset(s, 0, sizeof(*s));

    for (i = 0; i < SETTINGS_N; i++) {
        st = &settings_table[i];
        if (st->def != NULL) {
            settings_apply(s, st, st->def, "the default");
        }
    }

    for (i = 0; i < SETTINGS_N; i++) {
        st = &settings_table[i];
        env = getenv(st->env);
        if (env != NULL && env[0] != '\0') {
            settings_apply(s, st, env, st->env);
        }
    }

    for (a = 1; a < argc; a++) {
        arg = argv[a];

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            settings_usage(stdout);
            exit(0);
        }

        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            fprintf(stderr, "activity-worker: unexpected argument \"%s\""
                    " (try --help)\n", arg);
            exit(2);
        }

        arg += 2;
        eq = strchr(arg, '=');
        st = settings_find(arg, eq ? (size_t) (eq - arg) : strlen(arg));

        if (st == NULL) {
            fprintf(stderr, "activity-worker: unknown option \"%s\""
                    " (try --help)\n", argv[a]);
            exit(2);
        }

        if (st->type == SET_BOOL) {
            /* "--migrate" alone, or an explicit "--migrate=false" */
            value = eq ? eq + 1 : "1";

        } else if (eq != NULL) {
            value = eq + 1;

        } else if (a + 1 < argc) {
            value = argv[++a];

        } else {
            fprintf(stderr, "activity-worker: option --%s needs a value"
                    " (try --help)\n", st->name);
            exit(2);
        }

        snprintf(where, sizeof(where), "--%s", st->name);
        settings_apply(s, st, value, where);
    }

    if (s->worker_id == NULL) {
        /*
         * Unique per start: containers often share a host name, and two
         * processes on one id would fight over one processing list.
         */
        if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0') {
            snprintf(host, sizeof(host), "worker");
        }
        host[sizeof(host) - 1] = '\0';
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd)) {
            /* no entropy at all: the pid at least differs per host */
            rnd[0] = (unsigned char) (getpid() >> 24);
            rnd[1] = (unsigned char) (getpid() >> 16);
            rnd[2] = (unsigned char) (getpid() >> 8);
            rnd[3] = (unsigned char) getpid();
        }
        if (asprintf(&s->worker_id, "%.200s-%02x%02x%02x%02x", host,
                     rnd[0], rnd[1], rnd[2], rnd[3]) < 0)
        {
            s->worker_id = NULL;
        }
        if (s->worker_id == NULL) {
            fprintf(stderr, "activity-worker: out of memory\n");
            exit(1);
        }
    }

    settings_parse_delays(s);
}


void
settings_free(settings_t *s)
{
    size_t  i;

    for (i = 0; i < SETTINGS_N; i++) {
        if (settings_table[i].type == SET_STRING) {
            free(*(char **) ((char *) s + settings_table[i].offset));
        }
    }

    memset(s, 0, sizeof(*s));
}


void
settings_fail(const char *flag, const char *value, const char *why)
{
    char  where[64];

    snprintf(where, sizeof(where), "--%s", flag);
    settings_bad(where, value, why);
}


/*
 * Store one value; "where" names its origin ("--batch", "ACTIVITY_BATCH")
 * so a complaint points at what the user must fix.
 */
static void
settings_apply(settings_t *s, const setting_t *st, const char *value,
    const char *where)
{
    char   **sp, why[128];
    char    *end;
    long     n;
    int      b;

    switch (st->type) {

    case SET_STRING:
        if (value[0] == '\0') {
            settings_bad(where, value, "must not be empty");
        }
        sp = (char **) ((char *) s + st->offset);
        free(*sp);
        *sp = strdup(value);
        if (*sp == NULL) {
            fprintf(stderr, "activity-worker: out of memory\n");
            exit(1);
        }
        return;

    case SET_INT:
        errno = 0;
        n = strtol(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0'
            || n < st->min || n > st->max)
        {
            snprintf(why, sizeof(why), "expected an integer %ld..%ld",
                     st->min, st->max);
            settings_bad(where, value, why);
        }
        *(int *) ((char *) s + st->offset) = (int) n;
        return;

    case SET_BOOL:
        if (settings_parse_bool(value, &b) != 0) {
            settings_bad(where, value,
                         "expected 1/0, true/false, yes/no, on/off");
        }
        *(int *) ((char *) s + st->offset) = b;
        return;
    }
}


static void
settings_bad(const char *where, const char *value, const char *why)
{
    fprintf(stderr, "activity-worker: invalid value \"%s\" for %s: %s\n",
            value, where, why);
    exit(2);
}


static const setting_t *
settings_find(const char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < SETTINGS_N; i++) {
        if (strlen(settings_table[i].name) == len
            && strncmp(settings_table[i].name, name, len) == 0)
        {
            return &settings_table[i];
        }
    }

    return NULL;
}


static int
settings_parse_bool(const char *v, int *out)
{
    static const char *const  yes[] = { "1", "true", "yes", "on" };
    static const char *const  no[] = { "0", "false", "no", "off" };
    size_t                    i;

    for (i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }

    return -1;
}


static void
settings_usage(FILE *f)
{
    const setting_t  *st;
    char              left[64];
    size_t            i;

    fprintf(f,
        "usage: activity-worker [options]\n"
        "       activity-worker token --sub NAME --role ROLE [--ttl TTL]\n"
        "                             [--secret SECRET]\n"
        "       activity-worker dlq list [--limit N] | replay [--all | N]\n"
        "                           | purge [options]\n"
        "\n"
        "Moves activity events from a Redis list into PostgreSQL, and\n"
        "keeps the live counters and pub/sub feed of the dashboards.\n"
        "Each option may also be set through the environment variable\n"
        "shown; a flag wins over the environment.\n"
        "\n");

    for (i = 0; i < SETTINGS_N; i++) {
        st = &settings_table[i];

        if (st->meta != NULL) {
            snprintf(left, sizeof(left), "--%s %s", st->name, st->meta);
        } else {
            snprintf(left, sizeof(left), "--%s", st->name);
        }

        settings_wrap(f, left, st->help);
        fprintf(f, "  %-26s env %s\n", "", st->env);
        if (st->type != SET_BOOL) {
            fprintf(f, "  %-26s default %s\n", "",
                    st->def ? st->def : "(see above)");
        }
    }

    fprintf(f, "  %-26s %s\n", "--help", "print this help and exit");

    fprintf(f,
        "\n"
        "activity-worker token prints an HS256 JWT (claims sub, role, iat,\n"
        "exp) for trying dashboards: --ttl is seconds or 30m, 8h, 7d\n"
        "(default 8h); the secret comes from --secret or ACTIVITY_JWT_SECRET\n"
        "and must match the module's activity_jwt_secret.\n"
        "\n"
        "activity-worker dlq list prints the dead letters (--dead), oldest\n"
        "first, one JSON object a line; dlq replay moves the N oldest\n"
        "(default all) events back onto --queue, one atomic step each;\n"
        "dlq purge deletes them all and prints how many.\n");
}


/* Print text beside left, word-wrapped to stay within 80 columns. */
static void
settings_wrap(FILE *f, const char *left, const char *text)
{
    const char  *p, *end, *brk;
    size_t       width;

    width = 80 - 2 - 26 - 1;
    p = text;

    do {
        end = p + strlen(p);
        if ((size_t) (end - p) > width) {
            brk = p + width;
            while (brk > p && *brk != ' ') {
                brk--;
            }
            end = brk > p ? brk : p + width;
        }

        fprintf(f, "  %-26s %.*s\n", left, (int) (end - p), p);
        left = "";

        p = end;
        while (*p == ' ') {
            p++;
        }
    } while (*p != '\0');
}


/* "2000,4000,8000" into retry_ms[], retry_attempts; exit 2 when bad. */
static void
settings_parse_delays(settings_t *s)
{
    const char  *p;
    char        *end;
    long         n;

    s->retry_attempts = 0;
    p = s->retry_delays;

    for ( ;; ) {
        errno = 0;
        n = strtol(p, &end, 10);

        if (errno != 0 || end == p || n < 0 || n > 600000
            || (*end != ',' && *end != '\0')
            || s->retry_attempts == SETTINGS_RETRY_MAX)
        {
            settings_fail("retry-delays", s->retry_delays,
                          "expected 1..10 comma-separated integers"
                          " 0..600000");
        }

        s->retry_ms[s->retry_attempts++] = (int) n;

        if (*end == '\0') {
            break;
        }

        p = end + 1;
    }
}
