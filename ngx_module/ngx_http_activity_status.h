
/*
 * Counters of the whole nginx instance, in shared memory, and the
 * activity_status endpoint that exposes them to Prometheus.
 */


#ifndef _NGX_HTTP_ACTIVITY_STATUS_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_STATUS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_jwt.h"
#include "ngx_http_activity_module.h"


/*
 * per process gauges: a slot is claimed by pid, so the workers of a reload
 * (old ones still draining, new ones) never share one, and the slot of a
 * process that died is left out of the sums and taken over later;
 * the slot also holds this process's share of the instance-wide dashboard
 * counts, which the process that takes over a dead process's slot gives
 * back
 */
#define NGX_HTTP_ACTIVITY_WORKER_SLOTS   256


typedef struct {
    ngx_atomic_t    pid;                    /* 0: free */
    ngx_atomic_t    buffered;
    ngx_atomic_t    queue_up;
    ngx_atomic_t    subscriber_up;
    ngx_atomic_t    connections;            /* its dashboard_connections */
    ngx_atomic_t    dashboards[3];          /* its dashboards[] */

    /* redis+sentinel: "ip:port" of the master last used, or "" */
    u_char          queue_master[NGX_HTTP_ACTIVITY_MASTER_LEN];
    u_char          subscriber_master[NGX_HTTP_ACTIVITY_MASTER_LEN];
} ngx_http_activity_proc_stats_t;


struct ngx_http_activity_stats_s {
    ngx_atomic_t    dashboards[3];          /* by protocol */
    ngx_atomic_t    dashboard_connections;  /* all, for the limit */
    ngx_atomic_t    events_tracked;
    ngx_atomic_t    events_ingested;
    ngx_atomic_t    events_queued;          /* acknowledged by Redis */
    ngx_atomic_t    events_dropped;
    ngx_atomic_t    events_spooled;
    ngx_atomic_t    queue_reconnects;
    ngx_atomic_t    subscriber_reconnects;
    ngx_atomic_t    pubsub_messages;
    ngx_atomic_t    frames_broadcast;
    ngx_atomic_t    frames_deflated;
    ngx_atomic_t    clients_slow;
    ngx_atomic_t    resumes_recovered;      /* issue 12 */
    ngx_atomic_t    resumes_not_recovered;
    ngx_atomic_t    auth_refused[NGX_HTTP_ACTIVITY_JWT_REASONS];
    ngx_atomic_t    events_unreplicated;    /* no replica confirmed */
    ngx_http_activity_proc_stats_t  procs[NGX_HTTP_ACTIVITY_WORKER_SLOTS];
};


#define ngx_http_activity_stat_add(stats, field, n)                          \
    if (stats) {                                                             \
        (void) ngx_atomic_fetch_add(&(stats)->field, (ngx_atomic_int_t) (n)); \
    }

/* only this process's share, its total changed apart */
#define ngx_http_activity_stat_mine(field, n)                                \
    if (ngx_http_activity_proc_stats) {                                      \
        ngx_http_activity_proc_stats->field += (ngx_atomic_int_t) (n);       \
    }

/*
 * a dashboard count raised (n = 1) or lowered (n = -1), in the instance
 * total and in this process's share of it (only this process writes its
 * slot)
 */
#define ngx_http_activity_stat_own(stats, field, n)                          \
    do {                                                                     \
        (void) ngx_atomic_fetch_add(&(stats)->field,                         \
                                    (ngx_atomic_int_t) (n));                 \
        ngx_http_activity_stat_mine(field, n);                               \
    } while (0)

/* a gauge of this process, in its slot */
#define ngx_http_activity_stat_set(field, v)                                 \
    if (ngx_http_activity_proc_stats) {                                      \
        ngx_http_activity_proc_stats->field = (ngx_atomic_uint_t) (v);       \
    }


ngx_int_t ngx_http_activity_status_zone(ngx_conf_t *cf,
    ngx_shm_zone_t **zone);
ngx_int_t ngx_http_activity_status_handler(ngx_http_request_t *r);
ngx_http_activity_proc_stats_t *ngx_http_activity_status_slot(
    ngx_http_activity_stats_t *st, ngx_log_t *log);
void ngx_http_activity_status_release(ngx_http_activity_stats_t *st);
ngx_int_t ngx_http_activity_status_alive(ngx_pid_t pid);


/* the slot of this process, NULL until claimed (or when none was free) */
extern ngx_http_activity_proc_stats_t  *ngx_http_activity_proc_stats;


#endif /* _NGX_HTTP_ACTIVITY_STATUS_H_INCLUDED_ */
