/*
 * activity-worker: counters and the Prometheus text page.
 */

#ifndef ACTIVITY_METRICS_H
#define ACTIVITY_METRICS_H

#include <stddef.h>
#include <stdint.h>


/* What the HTTP side measured at scrape time (a probe of its own). */
typedef struct {
    double   redis_ping_s;
    double   pg_ping_s;
    double   read_lag_s;
    long     queue_len;
    long     processing_len;
    long     dead_len;
    int      redis_up;
    int      pg_up;
    int      read_probed;       /* --pg-read differs from --pg */
    int      read_up;
    int      read_lag_known;
} metrics_probe_t;


/* A growing text buffer; data is NUL-terminated, NULL when empty. */
typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
    int      failed;        /* out of memory: data holds a prefix */
} metrics_buf_t;


/* Remember the start time; call once, before any thread starts. */
void metrics_init(void);

/*
 * Count one batch the consumer finished: events taken from Redis, rows
 * really inserted, dead letters written, and the time storing it took,
 * retries included. Thread-safe; cheap.
 */
void metrics_batch(size_t consumed, long stored, size_t dead,
    int64_t store_us);

/*
 * Count n queue elements that were not events, dead-lettered by the
 * consumer before any batch: consumed and dead, in no batch.
 */
void metrics_poison(size_t n);

/* Count a store transaction that failed (it is retried or bisected). */
void metrics_store_failed(void);

/*
 * The store has batches in hand (waiting != 0) or none; and it finished
 * one. metrics_store_stalled_ms() is how long batches have been waiting
 * with none finished: 0 while nothing waits.
 */
void metrics_store_waiting(int waiting);

void metrics_store_progress(void);

int64_t metrics_store_stalled_ms(void);

/*
 * Append the exposition text (format 0.0.4): the counters, the
 * histograms, and the gauges of probe (NULL: none). Thread-safe.
 */
void metrics_render(metrics_buf_t *b, const metrics_probe_t *probe);

/* printf into a metrics_buf_t. */
void metrics_printf(metrics_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


#endif /* ACTIVITY_METRICS_H */
