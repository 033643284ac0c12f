/*
 * activity-worker: counters and the Prometheus text page.
 *
 * The consumer loop (one thread) adds to the counters once per batch;
 * the HTTP thread reads them when /metrics is scraped. One mutex guards
 * them all, held for a few additions or one copy: a scrape sees a
 * consistent set (a histogram's buckets agree with its count), and the
 * consumer never waits on anything slower than a memcpy.
 *
 * Names: activity_worker_*, beside the module's activity_* family. The
 * gauges that describe Redis and PostgreSQL are measured at scrape time
 * by the HTTP side on its own connections (see http.c).
 */

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "timeutil.h"


#define METRICS_SIZE_BUCKETS   10
#define METRICS_TIME_BUCKETS   14


typedef struct {
    unsigned long long  consumed;
    unsigned long long  stored;
    unsigned long long  dead;
    unsigned long long  store_failures;
    unsigned long long  batches;
    unsigned long long  size_le[METRICS_SIZE_BUCKETS];
    unsigned long long  size_sum;
    unsigned long long  time_le[METRICS_TIME_BUCKETS];
    double              time_sum;
} metrics_counters_t;


static void metrics_head(metrics_buf_t *b, const char *name,
    const char *type, const char *help);
static void metrics_counter(metrics_buf_t *b, const char *name,
    const char *help, unsigned long long v);
static void metrics_gauge(metrics_buf_t *b, const char *name,
    const char *help, double v);
static int metrics_reserve(metrics_buf_t *b, size_t more);


static const double  size_bounds[METRICS_SIZE_BUCKETS] = {
    1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000
};

static const double  time_bounds[METRICS_TIME_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
    10, 30
};

static pthread_mutex_t     metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static metrics_counters_t  metrics;
static double              metrics_started;

/* under metrics_lock: monotonic ms; waiting_since 0: nothing waits */
static int64_t             store_waiting_since;
static int64_t             store_progress_at;


void
metrics_init(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    metrics_started = (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}


void
metrics_poison(size_t n)
{
    pthread_mutex_lock(&metrics_lock);
    metrics.consumed += n;
    metrics.dead += n;
    pthread_mutex_unlock(&metrics_lock);
}


void
metrics_batch(size_t consumed, long stored, size_t dead, int64_t store_us)
{
    double  secs;
    int     i;

    secs = (double) store_us / 1e6;

    pthread_mutex_lock(&metrics_lock);

    metrics.consumed += consumed;
    metrics.stored += stored > 0 ? (unsigned long long) stored : 0;
    metrics.dead += dead;
    metrics.batches++;

    /* cumulative buckets, as exposed: each holds all below it */
    for (i = 0; i < METRICS_SIZE_BUCKETS; i++) {
        if ((double) consumed <= size_bounds[i]) {
            metrics.size_le[i]++;
        }
    }
    metrics.size_sum += consumed;

    for (i = 0; i < METRICS_TIME_BUCKETS; i++) {
        if (secs <= time_bounds[i]) {
            metrics.time_le[i]++;
        }
    }
    metrics.time_sum += secs;

    pthread_mutex_unlock(&metrics_lock);
}


void
metrics_store_failed(void)
{
    pthread_mutex_lock(&metrics_lock);
    metrics.store_failures++;
    pthread_mutex_unlock(&metrics_lock);
}


void
metrics_store_waiting(int waiting)
{
    pthread_mutex_lock(&metrics_lock);

    if (!waiting) {
        store_waiting_since = 0;
    } else if (store_waiting_since == 0) {
        store_waiting_since = time_mono_ms();
    }

    pthread_mutex_unlock(&metrics_lock);
}


void
metrics_store_progress(void)
{
    pthread_mutex_lock(&metrics_lock);
    store_progress_at = time_mono_ms();
    pthread_mutex_unlock(&metrics_lock);
}


int64_t
metrics_store_stalled_ms(void)
{
    int64_t  since, ms;

    pthread_mutex_lock(&metrics_lock);

    since = store_waiting_since;
    if (since != 0 && store_progress_at > since) {
        since = store_progress_at;
    }

    pthread_mutex_unlock(&metrics_lock);

    if (since == 0) {
        return 0;
    }

    ms = time_mono_ms() - since;
    return ms > 0 ? ms : 0;
}


void
metrics_render(metrics_buf_t *b, const metrics_probe_t *probe)
{
    metrics_counters_t  m;
    int                 i;

    pthread_mutex_lock(&metrics_lock);
    m = metrics;
    pthread_mutex_unlock(&metrics_lock);

    metrics_gauge(b, "activity_worker_store_stalled_seconds",
                  "how long a batch has waited to be stored with none"
                  " finished meanwhile; 0 while the store keeps up",
                  (double) metrics_store_stalled_ms() / 1000.0);

    metrics_gauge(b, "activity_worker_up",
                  "1 while the worker process runs", 1);

    metrics_gauge(b, "activity_worker_start_time_seconds",
                  "when the worker started, seconds since the epoch",
                  metrics_started);

    metrics_counter(b, "activity_worker_events_consumed_total",
                    "events taken from the queue in finished batches",
                    m.consumed);

    metrics_counter(b, "activity_worker_events_stored_total",
                    "rows inserted into activity_logs (replays excluded)",
                    m.stored);

    metrics_counter(b, "activity_worker_dead_letters_total",
                    "events written to the dead-letter list", m.dead);

    metrics_counter(b, "activity_worker_store_failures_total",
                    "store transactions that failed and were retried"
                    " (or split to isolate a refused event)",
                    m.store_failures);

    metrics_counter(b, "activity_worker_batches_total",
                    "batches finished", m.batches);

    metrics_head(b, "activity_worker_batch_size", "histogram",
                 "events per finished batch");
    for (i = 0; i < METRICS_SIZE_BUCKETS; i++) {
        metrics_printf(b, "activity_worker_batch_size_bucket{le=\"%g\"}"
                       " %llu\n", size_bounds[i], m.size_le[i]);
    }
    metrics_printf(b, "activity_worker_batch_size_bucket{le=\"+Inf\"}"
                   " %llu\n", m.batches);
    metrics_printf(b, "activity_worker_batch_size_sum %llu\n", m.size_sum);
    metrics_printf(b, "activity_worker_batch_size_count %llu\n", m.batches);

    metrics_head(b, "activity_worker_batch_store_seconds", "histogram",
                 "time to store a batch in PostgreSQL, retries included");
    for (i = 0; i < METRICS_TIME_BUCKETS; i++) {
        metrics_printf(b, "activity_worker_batch_store_seconds_bucket"
                       "{le=\"%g\"} %llu\n", time_bounds[i], m.time_le[i]);
    }
    metrics_printf(b, "activity_worker_batch_store_seconds_bucket"
                   "{le=\"+Inf\"} %llu\n", m.batches);
    metrics_printf(b, "activity_worker_batch_store_seconds_sum %.6f\n",
                   m.time_sum);
    metrics_printf(b, "activity_worker_batch_store_seconds_count %llu\n",
                   m.batches);

    if (probe == NULL) {
        return;
    }

    metrics_gauge(b, "activity_worker_redis_up",
                  "1 when Redis answered PING at this scrape",
                  probe->redis_up);

    metrics_gauge(b, "activity_worker_postgres_up",
                  "1 when PostgreSQL answered at this scrape",
                  probe->pg_up);

    /* a sample that could not be measured is left out, not faked */
    if (probe->redis_up) {
        metrics_gauge(b, "activity_worker_redis_ping_seconds",
                      "round trip of a Redis PING at this scrape",
                      probe->redis_ping_s);
    }

    if (probe->pg_up) {
        metrics_gauge(b, "activity_worker_postgres_ping_seconds",
                      "round trip of a PostgreSQL SELECT 1 at this scrape",
                      probe->pg_ping_s);
    }

    if (probe->read_probed) {
        metrics_gauge(b, "activity_worker_postgres_read_up",
                      "1 when the --pg-read server answered at this scrape",
                      probe->read_up);
    }

    if (probe->read_lag_known) {
        metrics_gauge(b, "activity_worker_postgres_read_lag_seconds",
                      "how far the --pg-read standby's replay is behind:"
                      " age of its last replayed transaction while WAL"
                      " it received waits for replay, else 0",
                      probe->read_lag_s);
    }

    if (probe->queue_len >= 0) {
        metrics_gauge(b, "activity_worker_queue_length",
                      "events waiting in the queue (LLEN)",
                      (double) probe->queue_len);
    }

    if (probe->processing_len >= 0) {
        metrics_gauge(b, "activity_worker_processing_length",
                      "events in this worker's processing list (LLEN)",
                      (double) probe->processing_len);
    }

    if (probe->dead_len >= 0) {
        metrics_gauge(b, "activity_worker_dead_length",
                      "dead letters waiting in the dead-letter list (LLEN)",
                      (double) probe->dead_len);
    }
}


void
metrics_printf(metrics_buf_t *b, const char *fmt, ...)
{
    va_list  ap;
    int      n;

    if (b->failed) {
        return;
    }

    for ( ;; ) {
        if (metrics_reserve(b, 256) != 0) {
            b->failed = 1;
            return;
        }

        va_start(ap, fmt);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);

        if (n < 0) {
            b->failed = 1;
            return;
        }

        if ((size_t) n < b->cap - b->len) {
            b->len += (size_t) n;
            return;
        }

        if (metrics_reserve(b, (size_t) n + 1) != 0) {
            b->failed = 1;
            return;
        }
    }
}


static void
metrics_head(metrics_buf_t *b, const char *name, const char *type,
    const char *help)
{
    metrics_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                   type);
}


static void
metrics_counter(metrics_buf_t *b, const char *name, const char *help,
    unsigned long long v)
{
    metrics_head(b, name, "counter", help);
    metrics_printf(b, "%s %llu\n", name, v);
}


static void
metrics_gauge(metrics_buf_t *b, const char *name, const char *help,
    double v)
{
    metrics_head(b, name, "gauge", help);
    metrics_printf(b, "%s %.15g\n", name, v);
}


static int
metrics_reserve(metrics_buf_t *b, size_t more)
{
    size_t   cap;
    char    *p;

    if (b->len + more < b->cap) {
        return 0;
    }

    cap = b->cap ? b->cap : 4096;
    while (cap <= b->len + more) {
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
