/*
 * activity-worker: settings from flags, environment and defaults.
 */

#ifndef ACTIVITY_SETTINGS_H
#define ACTIVITY_SETTINGS_H


/* most entries of --retry-delays */
#define SETTINGS_RETRY_MAX  10


#ifndef ACTIVITY_SQL_DIR
#define ACTIVITY_SQL_DIR  "/usr/share/activity-worker/sql"
#endif


typedef struct {
    char  *redis_url;
    char  *pg_conninfo;
    char  *pg_read;         /* NULL: the same as pg_conninfo */
    char  *listen;          /* "off": no HTTP listener */
    char  *api_token;       /* NULL: /api/... open */
    int    pg_timeout;      /* seconds */
    int    stall_timeout;   /* seconds */
    char  *queue;
    char  *dead_key;
    char  *retry_delays;          /* as given; parsed into retry_ms */
    int    retry_ms[SETTINGS_RETRY_MAX];
    int    retry_attempts;        /* entries in retry_ms */
    int    heartbeat_ttl;
    char  *worker_id;
    char  *sql_dir;
    char  *log_level;
    char  *recent_key;
    char  *stream_key;
    char  *stats_key;
    char  *events_channel;
    char  *stats_channel;
    char  *live_prefix;
    char  *seen_prefix;
    int    recent_max;
    int    recent_ttl;
    int    stream_max;
    int    seen_ttl;
    int    stats_min_ms;
    int    stats_max_ms;
    int    batch;
    int    flush_ms;
    int    store_ahead;
    int    store_connections;
    int    retain_days;
    int    partitions_ahead;
    int    migrate;
} settings_t;


/*
 * Fill s from, in rising precedence: built-in defaults, ACTIVITY_*
 * environment variables, command-line flags. --help prints the table and
 * exits 0; a bad flag or value prints why and exits 2.
 */
void settings_load(settings_t *s, int argc, char **argv);

/* Release the strings settings_load() made. */
void settings_free(settings_t *s);

/* Exit 2 with a message about a setting that parsed but is unusable. */
void settings_fail(const char *flag, const char *value, const char *why)
    __attribute__((noreturn));


#endif /* ACTIVITY_SETTINGS_H */
