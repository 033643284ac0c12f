
/*
 * Instance-wide counters and the Prometheus text endpoint.
 *
 * Counters are ngx_atomic_t in one shared memory zone, bumped with
 * ngx_atomic_fetch_add by every worker process, as nginx's own stub_status
 * counters are; per-process gauges (events buffered, Redis connection
 * state) have a slot per process, claimed by pid, and the slots of live
 * processes are summed when read.  The dashboard counts are instance
 * totals, checked against their limits with one atomic add, and each
 * process also keeps its own share of them in its slot, given back when
 * the process exits or, after a crash, by the process that takes over the
 * dead one's slot.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_module.h"
#include "ngx_http_activity_status.h"


/* room for the fixed texts, and for each line beyond its names */
#define NGX_HTTP_ACTIVITY_STATUS_FIXED  1024
#define NGX_HTTP_ACTIVITY_STATUS_LINE   (128 + NGX_ATOMIC_T_LEN)


typedef struct {
    const char                  *name;
    const char                  *type;
    const char                  *help;
    size_t                       offset;
} ngx_http_activity_metric_t;


/* activity_redis_master: how many processes use one master */

typedef struct {
    ngx_uint_t      connection;     /* 0: queue, 1: subscriber */
    ngx_uint_t      processes;
    size_t          len;
    u_char          addr[NGX_HTTP_ACTIVITY_MASTER_LEN];
} ngx_http_activity_master_t;


static ngx_int_t ngx_http_activity_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_array_t *ngx_http_activity_status_masters(ngx_pool_t *pool,
    ngx_http_activity_stats_t *st);
static void ngx_http_activity_status_sum(ngx_http_activity_stats_t *st,
    ngx_http_activity_proc_stats_t *sum);
static void ngx_http_activity_status_give_back(
    ngx_http_activity_stats_t *st, ngx_http_activity_proc_stats_t *slot);


ngx_http_activity_proc_stats_t  *ngx_http_activity_proc_stats;


#define ngx_http_activity_stat_offset(field)                                 \
    offsetof(ngx_http_activity_stats_t, field)

static ngx_http_activity_metric_t  ngx_http_activity_metrics[] = {

    { "activity_events_tracked_total", "counter",
      "Events built from requests (API_CALL and activity_event rules).",
      ngx_http_activity_stat_offset(events_tracked) },

    { "activity_events_ingested_total", "counter",
      "Events accepted by activity_ingest endpoints.",
      ngx_http_activity_stat_offset(events_ingested) },

    { "activity_events_queued_total", "counter",
      "Events acknowledged by Redis (LPUSH).",
      ngx_http_activity_stat_offset(events_queued) },

    { "activity_events_dropped_total", "counter",
      "Events dropped because the per-worker buffer was full.",
      ngx_http_activity_stat_offset(events_dropped) },

    { "activity_events_unreplicated_total", "counter",
      "Events acknowledged by the Redis master that no replica confirmed "
      "within activity_redis_wait_replica.",
      ngx_http_activity_stat_offset(events_unreplicated) },

    { "activity_events_spooled_total", "counter",
      "Events written to the disk spool (activity_spool).",
      ngx_http_activity_stat_offset(events_spooled) },

    { "activity_redis_reconnects_total{connection=\"queue\"}", "counter",
      "Redis connection attempts after a failure or loss.",
      ngx_http_activity_stat_offset(queue_reconnects) },

    { "activity_redis_reconnects_total{connection=\"subscriber\"}", NULL,
      NULL, ngx_http_activity_stat_offset(subscriber_reconnects) },

    { "activity_pubsub_messages_total", "counter",
      "Messages received from Redis pub/sub.",
      ngx_http_activity_stat_offset(pubsub_messages) },

    { "activity_frames_broadcast_total", "counter",
      "WebSocket frames encoded for a broadcast (once per worker process).",
      ngx_http_activity_stat_offset(frames_broadcast) },

    { "activity_frames_deflated_total", "counter",
      "Frames compressed for permessage-deflate, broadcasts and snapshots "
      "(once per worker process).",
      ngx_http_activity_stat_offset(frames_deflated) },

    { "activity_dashboard_clients_dropped_total{reason=\"slow\"}", "counter",
      "Dashboard clients dropped because they did not read.",
      ngx_http_activity_stat_offset(clients_slow) },

    { "activity_dashboard_resumes_total{result=\"recovered\"}", "counter",
      "Dashboard reconnects that asked to resume, by outcome.",
      ngx_http_activity_stat_offset(resumes_recovered) },

    { "activity_dashboard_resumes_total{result=\"not_recovered\"}", NULL,
      NULL, ngx_http_activity_stat_offset(resumes_not_recovered) },

    { "activity_dashboard_connections{protocol=\"websocket\"}", "gauge",
      "Open dashboard connections.",
      ngx_http_activity_stat_offset(dashboards[1]) },

    { "activity_dashboard_connections{protocol=\"socketio\"}", NULL, NULL,
      ngx_http_activity_stat_offset(dashboards[2]) },

    { NULL, NULL, NULL, 0 }
};


/* the zone is made once, whatever the module is used for */

ngx_int_t
ngx_http_activity_status_zone(ngx_conf_t *cf, ngx_shm_zone_t **zone)
{
    ngx_str_t  name = ngx_string("activity");

    if (*zone) {
        return NGX_OK;
    }

    *zone = ngx_shared_memory_add(cf, &name,
                                  ngx_align(sizeof(ngx_http_activity_stats_t),
                                            ngx_pagesize)
                                  + 8 * ngx_pagesize,
                                  &ngx_http_activity_module);
    if (*zone == NULL) {
        return NGX_ERROR;
    }

    (*zone)->init = ngx_http_activity_init_zone;

    return NGX_OK;
}


ngx_int_t
ngx_http_activity_status_handler(ngx_http_request_t *r)
{
    u_char                          *p, *last;
    size_t                           n, size;
    ngx_int_t                        rc;
    ngx_buf_t                       *b;
    ngx_uint_t                       i;
    ngx_chain_t                      out;
    ngx_array_t                     *masters;
    ngx_atomic_uint_t                v;
    ngx_http_activity_stats_t       *st;
    ngx_http_activity_metric_t      *m;
    ngx_http_activity_master_t      *ms;
    ngx_http_activity_proc_stats_t   sum;
    ngx_http_activity_main_conf_t   *amcf;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_activity_module);
    st = amcf->stats;

    if (st == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    /* the room every line may take; never a byte is written past it */

    size = NGX_HTTP_ACTIVITY_STATUS_FIXED;

    for (m = ngx_http_activity_metrics; m->name; m++) {
        size += 3 * ngx_strlen(m->name) + NGX_HTTP_ACTIVITY_STATUS_LINE;

        if (m->help) {
            size += ngx_strlen(m->help) + ngx_strlen(m->type);
        }
    }

    for (i = 0; i < NGX_HTTP_ACTIVITY_JWT_REASONS; i++) {
        size += ngx_strlen(ngx_http_activity_jwt_labels[i])
                + NGX_HTTP_ACTIVITY_STATUS_LINE;
    }

    masters = ngx_http_activity_status_masters(r->pool, st);
    if (masters == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    size += masters->nelts
            * (NGX_HTTP_ACTIVITY_STATUS_LINE + NGX_HTTP_ACTIVITY_MASTER_LEN);

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;
    last = b->end;

    for (m = ngx_http_activity_metrics; m->name; m++) {
        v = *(ngx_atomic_t *) ((u_char *) st + m->offset);

        if (m->help) {
            n = strcspn(m->name, "{");
            p = ngx_slprintf(p, last, "# HELP %*s %s\n# TYPE %*s %s\n",
                             n, m->name, m->help, n, m->name, m->type);
        }

        p = ngx_slprintf(p, last, "%s %uA\n", m->name, v);
    }

    ngx_http_activity_status_sum(st, &sum);

    p = ngx_slprintf(p, last,
                     "# HELP activity_events_buffered Events held by nginx "
                     "that Redis has not acknowledged yet.\n"
                     "# TYPE activity_events_buffered gauge\n"
                     "activity_events_buffered %uA\n",
                     (ngx_atomic_uint_t) sum.buffered);

    p = ngx_slprintf(p, last,
                     "# HELP activity_redis_connected Worker processes "
                     "whose Redis connection is up.\n"
                     "# TYPE activity_redis_connected gauge\n"
                     "activity_redis_connected{connection=\"queue\"} %uA\n"
                     "activity_redis_connected{connection=\"subscriber\"} "
                     "%uA\n",
                     (ngx_atomic_uint_t) sum.queue_up,
                     (ngx_atomic_uint_t) sum.subscriber_up);

    if (masters->nelts) {
        p = ngx_slprintf(p, last,
                         "# HELP activity_redis_master Worker processes by "
                         "the master (redis+sentinel://) their connection "
                         "last used.\n"
                         "# TYPE activity_redis_master gauge\n");
    }

    ms = masters->elts;

    for (i = 0; i < masters->nelts; i++) {
        p = ngx_slprintf(p, last,
                         "activity_redis_master{connection=\"%s\","
                         "address=\"%*s\"} %ui\n",
                         ms[i].connection ? "subscriber" : "queue",
                         ms[i].len, ms[i].addr, ms[i].processes);
    }

    p = ngx_slprintf(p, last,
                     "# HELP activity_auth_refusals_total Tokens refused, "
                     "by reason.\n"
                     "# TYPE activity_auth_refusals_total counter\n");

    for (i = 0; i < NGX_HTTP_ACTIVITY_JWT_REASONS; i++) {
        p = ngx_slprintf(p, last,
                         "activity_auth_refusals_total{reason=\"%s\"} %uA\n",
                         ngx_http_activity_jwt_labels[i],
                         (ngx_atomic_uint_t) st->auth_refused[i]);
    }

    if (p == last) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "activity: the activity_status text outgrew its "
                      "buffer of %uz bytes", size);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->last = p;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    ngx_str_set(&r->headers_out.content_type,
                "text/plain; version=0.0.4; charset=utf-8");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * This process's slot: a free one, or one whose process is gone (a worker
 * that crashed never released it).  Claimed once per process; the first
 * claim also takes over the slot of every process that is gone and gives
 * back its share of the dashboard counts.
 */

ngx_http_activity_proc_stats_t *
ngx_http_activity_status_slot(ngx_http_activity_stats_t *st, ngx_log_t *log)
{
    ngx_uint_t                       i;
    ngx_atomic_uint_t                pid;
    ngx_http_activity_proc_stats_t  *slot, *own;

    if (ngx_http_activity_proc_stats || st == NULL) {
        return ngx_http_activity_proc_stats;
    }

    own = NULL;

    for (i = 0; i < NGX_HTTP_ACTIVITY_WORKER_SLOTS; i++) {
        slot = &st->procs[i];
        pid = slot->pid;

        if (pid == 0) {
            if (own == NULL && ngx_atomic_cmp_set(&slot->pid, 0, ngx_pid)) {
                own = slot;
            }

            continue;
        }

        if (pid == (ngx_atomic_uint_t) ngx_pid
            || ngx_http_activity_status_alive((ngx_pid_t) pid)
            || !ngx_atomic_cmp_set(&slot->pid, pid, ngx_pid))
        {
            continue;
        }

        if (slot->connections || slot->dashboards[1] || slot->dashboards[2]) {
            ngx_log_error(NGX_LOG_NOTICE, log, 0,
                          "activity: process %P is gone, its %uA dashboard "
                          "connections are no longer counted",
                          (ngx_pid_t) pid,
                          (ngx_atomic_uint_t) (slot->dashboards[1]
                                               + slot->dashboards[2]));
        }

        ngx_http_activity_status_give_back(st, slot);

        if (own == NULL) {
            own = slot;
            continue;
        }

        ngx_memory_barrier();
        slot->pid = 0;
    }

    if (own == NULL) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "activity: no free slot for the gauges of process %P, "
                      "activity_status leaves them out", ngx_pid);
        return NULL;
    }

    own->buffered = 0;
    own->queue_up = 0;
    own->subscriber_up = 0;
    own->queue_master[0] = '\0';
    own->subscriber_master[0] = '\0';

    ngx_http_activity_proc_stats = own;

    return own;
}


/* the process exits: whatever it still counted is gone with it */

void
ngx_http_activity_status_release(ngx_http_activity_stats_t *st)
{
    ngx_http_activity_proc_stats_t  *slot;

    slot = ngx_http_activity_proc_stats;

    if (slot == NULL) {
        return;
    }

    ngx_http_activity_proc_stats = NULL;

    if (st) {
        ngx_http_activity_status_give_back(st, slot);
    }

    slot->buffered = 0;
    slot->queue_up = 0;
    slot->subscriber_up = 0;

    ngx_memory_barrier();

    slot->pid = 0;
}


/* a slot's share of the dashboard counts leaves the instance totals */

static void
ngx_http_activity_status_give_back(ngx_http_activity_stats_t *st,
    ngx_http_activity_proc_stats_t *slot)
{
    ngx_uint_t  i;

    (void) ngx_atomic_fetch_add(&st->dashboard_connections,
                                - (ngx_atomic_int_t) slot->connections);
    slot->connections = 0;

    for (i = 0; i < 3; i++) {
        (void) ngx_atomic_fetch_add(&st->dashboards[i],
                                    - (ngx_atomic_int_t) slot->dashboards[i]);
        slot->dashboards[i] = 0;
    }
}


static ngx_int_t
ngx_http_activity_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t            *shpool;
    ngx_http_activity_stats_t  *st;

    /* a reload keeps the counters: old workers still hold connections */

    if (data) {
        shm_zone->data = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        shm_zone->data = shpool->data;
        return NGX_OK;
    }

    st = ngx_slab_calloc(shpool, sizeof(ngx_http_activity_stats_t));
    if (st == NULL) {
        return NGX_ERROR;
    }

    shpool->data = st;
    shm_zone->data = st;

    return NGX_OK;
}


/* the gauges of the processes that are alive */

/*
 * The masters the live processes' connections last used, with how many
 * use each.  A process may be rewriting its text as it is read: at
 * worst one scrape shows a mixed address.
 */

static ngx_array_t *
ngx_http_activity_status_masters(ngx_pool_t *pool,
    ngx_http_activity_stats_t *st)
{
    u_char                          *text;
    size_t                           len;
    ngx_uint_t                       i, c, k;
    ngx_array_t                     *a;
    ngx_atomic_uint_t                pid;
    ngx_http_activity_master_t      *m;
    ngx_http_activity_proc_stats_t  *slot;

    a = ngx_array_create(pool, 4, sizeof(ngx_http_activity_master_t));
    if (a == NULL) {
        return NULL;
    }

    for (i = 0; i < NGX_HTTP_ACTIVITY_WORKER_SLOTS; i++) {
        slot = &st->procs[i];
        pid = slot->pid;

        if (pid == 0
            || (pid != (ngx_atomic_uint_t) ngx_pid
                && !ngx_http_activity_status_alive((ngx_pid_t) pid)))
        {
            continue;
        }

        for (c = 0; c < 2; c++) {
            text = c ? slot->subscriber_master : slot->queue_master;
            len = ngx_strnlen(text, NGX_HTTP_ACTIVITY_MASTER_LEN - 1);

            if (len == 0) {
                continue;
            }

            m = a->elts;

            for (k = 0; k < a->nelts; k++) {
                if (m[k].connection == c && m[k].len == len
                    && ngx_strncmp(m[k].addr, text, len) == 0)
                {
                    break;
                }
            }

            if (k < a->nelts) {
                m[k].processes++;
                continue;
            }

            m = ngx_array_push(a);
            if (m == NULL) {
                return NULL;
            }

            m->connection = c;
            m->processes = 1;
            m->len = len;
            ngx_memcpy(m->addr, text, len);
        }
    }

    return a;
}


static void
ngx_http_activity_status_sum(ngx_http_activity_stats_t *st,
    ngx_http_activity_proc_stats_t *sum)
{
    ngx_uint_t                       i;
    ngx_atomic_uint_t                pid;
    ngx_http_activity_proc_stats_t  *slot;

    ngx_memzero(sum, sizeof(ngx_http_activity_proc_stats_t));

    for (i = 0; i < NGX_HTTP_ACTIVITY_WORKER_SLOTS; i++) {
        slot = &st->procs[i];
        pid = slot->pid;

        if (pid == 0
            || (pid != (ngx_atomic_uint_t) ngx_pid
                && !ngx_http_activity_status_alive((ngx_pid_t) pid)))
        {
            continue;
        }

        sum->buffered += slot->buffered;
        sum->queue_up += slot->queue_up;
        sum->subscriber_up += slot->subscriber_up;
    }
}


ngx_int_t
ngx_http_activity_status_alive(ngx_pid_t pid)
{
    return kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH;
}
