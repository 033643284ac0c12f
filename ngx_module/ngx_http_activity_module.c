
/*
 * ngx_http_activity_module: directives, configuration merge, and the
 * per-worker life cycle (init process / exit process).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_module.h"
#include "ngx_http_activity_resume.h"
#include "ngx_http_activity_access.h"
#include "ngx_http_activity_dashboard.h"
#include "ngx_http_activity_fanout.h"
#include "ngx_http_activity_admit.h"
#include "ngx_http_activity_ingest.h"
#include "ngx_http_activity_queue.h"
#include "ngx_http_activity_status.h"
#include "ngx_http_activity_track.h"


#define NGX_HTTP_ACTIVITY_DEFAULT_BUFFER   (4 * 1024 * 1024)
#define NGX_HTTP_ACTIVITY_MIN_BUFFER       (64 * 1024)
#define NGX_HTTP_ACTIVITY_REDIS_PORT       6379
#define NGX_HTTP_ACTIVITY_SENTINEL_PORT    26379

/* activity_redis_wait_replica: default with sentinels, and the limit */
#define NGX_HTTP_ACTIVITY_WAIT_REPLICA     1000
#define NGX_HTTP_ACTIVITY_WAIT_REPLICA_MAX 5000
#define NGX_HTTP_ACTIVITY_MAX_CONNECTIONS  10000


typedef struct {
    ngx_str_t                   name;
    ngx_uint_t                  mask;
} ngx_http_activity_method_t;


static void *ngx_http_activity_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_activity_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_activity_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_activity_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_activity_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_activity_init_process(ngx_cycle_t *cycle);
static void ngx_http_activity_exit_process(ngx_cycle_t *cycle);

static char *ngx_http_activity_redis_url(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_activity_parse_redis_url(ngx_conf_t *cf,
    ngx_str_t *url, ngx_http_activity_redis_addr_t *addr);
static char *ngx_http_activity_wait_replica(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_activity_url_decode(ngx_conf_t *cf, u_char *p,
    u_char *last, ngx_str_t *out);
static ngx_int_t ngx_http_activity_hide_password(ngx_conf_t *cf,
    ngx_str_t *url, ngx_str_t *shown);
static char *ngx_http_activity_resolve_redis(ngx_conf_t *cf,
    ngx_http_activity_redis_addr_t *addr, u_char *p, u_char *end,
    in_port_t default_port, ngx_str_t *host, in_port_t *port);
static char *ngx_http_activity_queue_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_activity_event(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_activity_parse_methods(ngx_conf_t *cf,
    ngx_str_t *list, ngx_uint_t *mask);
static ngx_int_t ngx_http_activity_parse_statuses(ngx_conf_t *cf,
    ngx_str_t *list, ngx_array_t **statuses);
static char *ngx_http_activity_meta(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_activity_jwt_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_activity_jwt_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_activity_dashboard(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_activity_auth_jwt(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_activity_spool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_activity_handler_slot(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_activity_dashboard_recovery(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_activity_preconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_activity_valid_type(ngx_str_t *type);
static char *ngx_http_activity_check_bounds(ngx_conf_t *cf, void *post,
    void *data);


/* a size_t checked as ngx_int_t: the same width on every nginx target */
static ngx_conf_num_bounds_t  ngx_http_activity_queue_bounds = {
    ngx_http_activity_check_bounds, 4096, 1073741824
};


static ngx_conf_num_bounds_t  ngx_http_activity_rate_bounds = {
    ngx_http_activity_check_bounds, 1, 1000
};


static ngx_conf_num_bounds_t  ngx_http_activity_connections_bounds = {
    ngx_http_activity_check_bounds, 1, 10000000
};


/* an address counts at most 65535 sockets in the admission zone */
static ngx_conf_num_bounds_t  ngx_http_activity_per_ip_bounds = {
    ngx_http_activity_check_bounds, 0, 65535
};


static ngx_http_activity_method_t  ngx_http_activity_methods[] = {
    { ngx_string("GET"),     NGX_HTTP_GET },
    { ngx_string("HEAD"),    NGX_HTTP_HEAD },
    { ngx_string("POST"),    NGX_HTTP_POST },
    { ngx_string("PUT"),     NGX_HTTP_PUT },
    { ngx_string("DELETE"),  NGX_HTTP_DELETE },
    { ngx_string("PATCH"),   NGX_HTTP_PATCH },
    { ngx_string("OPTIONS"), NGX_HTTP_OPTIONS },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_activity_commands[] = {

    { ngx_string("activity_redis_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_activity_redis_url,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("activity_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_activity_queue_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("activity_buffer_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_activity_main_conf_t, buffer_size),
      NULL },

    { ngx_string("activity_spool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_activity_spool,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("activity_redis_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_activity_main_conf_t, ping_interval),
      NULL },

    { ngx_string("activity_redis_ping_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_activity_main_conf_t, ping_timeout),
      NULL },

    { ngx_string("activity_redis_wait_replica"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_activity_wait_replica,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("activity_track"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, track),
      NULL },

    { ngx_string("activity_event"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_activity_event,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("activity_user"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_set_complex_value_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, user),
      NULL },

    { ngx_string("activity_meta"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_activity_meta,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("activity_jwt_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_activity_jwt_secret,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("activity_jwt_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_activity_jwt_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("activity_jwt_require_exp"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, jwt.require_exp),
      NULL },

    { ngx_string("activity_jwt_leeway"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, jwt.leeway),
      NULL },

    { ngx_string("activity_ingest_max_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, ingest_max_body),
      NULL },

    { ngx_string("activity_ingest_max_events"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, ingest_max_events),
      NULL },

    { ngx_string("activity_auth_jwt"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF
      |NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_activity_auth_jwt,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("activity_mask_ip"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, mask_ip),
      NULL },

    { ngx_string("activity_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_activity_handler_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_http_activity_status_handler },

    { ngx_string("activity_ingest"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_activity_handler_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      ngx_http_activity_ingest_handler },

    { ngx_string("activity_dashboard"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_activity_dashboard,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("activity_dashboard_role"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, dashboard_role),
      NULL },

    { ngx_string("activity_dashboard_max_connections"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_activity_main_conf_t, max_connections),
      &ngx_http_activity_connections_bounds },

    { ngx_string("activity_dashboard_max_pending"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_activity_main_conf_t, max_pending),
      &ngx_http_activity_connections_bounds },

    { ngx_string("activity_dashboard_max_per_ip"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_activity_main_conf_t, max_per_ip),
      &ngx_http_activity_per_ip_bounds },

    { ngx_string("activity_dashboard_auth_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, auth_timeout),
      NULL },

    { ngx_string("activity_dashboard_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, ping_interval),
      NULL },

    { ngx_string("activity_dashboard_ping_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, ping_timeout),
      NULL },

    { ngx_string("activity_dashboard_queue"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, dashboard_queue),
      &ngx_http_activity_queue_bounds },

    { ngx_string("activity_dashboard_queue_time"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, dashboard_queue_time),
      NULL },

    { ngx_string("activity_dashboard_rate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, dashboard_rate),
      &ngx_http_activity_rate_bounds },

    { ngx_string("activity_dashboard_deflate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_activity_loc_conf_t, dashboard_deflate),
      NULL },

    { ngx_string("activity_dashboard_recovery"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_activity_dashboard_recovery,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_activity_module_ctx = {
    ngx_http_activity_preconfiguration,    /* preconfiguration */
    ngx_http_activity_postconfiguration,   /* postconfiguration */

    ngx_http_activity_create_main_conf,    /* create main configuration */
    ngx_http_activity_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_activity_create_loc_conf,     /* create location configuration */
    ngx_http_activity_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_activity_module = {
    NGX_MODULE_V1,
    &ngx_http_activity_module_ctx,         /* module context */
    ngx_http_activity_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_activity_init_process,        /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_activity_exit_process,        /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_activity_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_activity_main_conf_t  *amcf;

    amcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_activity_main_conf_t));
    if (amcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     amcf->redis.url = { 0, NULL };
     *     amcf->queue = { 0, NULL };
     *     amcf->queue_state = NULL;
     */

    amcf->buffer_size = NGX_CONF_UNSET_SIZE;
    amcf->max_connections = NGX_CONF_UNSET_UINT;
    amcf->ping_interval = NGX_CONF_UNSET_MSEC;
    amcf->ping_timeout = NGX_CONF_UNSET_MSEC;
    amcf->wait_replica = NGX_CONF_UNSET_MSEC;
    amcf->max_pending = NGX_CONF_UNSET_UINT;
    amcf->max_per_ip = NGX_CONF_UNSET_UINT;

    return amcf;
}


static char *
ngx_http_activity_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_activity_main_conf_t *amcf = conf;

    ngx_str_t  url = ngx_string("redis://127.0.0.1:6379");

    if (amcf->redis.url.data == NULL) {
        if (ngx_http_activity_parse_redis_url(cf, &url, &amcf->redis)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (amcf->queue.data == NULL) {
        ngx_str_set(&amcf->queue, "activity:events");
    }

    ngx_conf_init_size_value(amcf->buffer_size,
                             NGX_HTTP_ACTIVITY_DEFAULT_BUFFER);
    ngx_conf_init_uint_value(amcf->max_connections,
                             NGX_HTTP_ACTIVITY_MAX_CONNECTIONS);
    ngx_conf_init_msec_value(amcf->ping_interval, 15000);
    ngx_conf_init_msec_value(amcf->ping_timeout, 5000);

    /* a sentinel deployment has replicas: wait for one by default */

    ngx_conf_init_msec_value(amcf->wait_replica,
                             amcf->redis.sentinels
                             ? NGX_HTTP_ACTIVITY_WAIT_REPLICA : 0);

    if (amcf->ping_interval && amcf->ping_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"activity_redis_ping_timeout\" must not be 0 "
                           "while \"activity_redis_ping_interval\" is set");
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_uint_value(amcf->max_pending, 1000);
    ngx_conf_init_uint_value(amcf->max_per_ip, 0);

    /* the names the worker publishes under (ARCHITECTURE.md) */

    ngx_str_set(&amcf->events_channel, "dashboard:events");
    ngx_str_set(&amcf->stats_channel, "dashboard:stats");
    ngx_str_set(&amcf->recent_key, "dashboard:events:recent");
    ngx_str_set(&amcf->stats_key, "dashboard:stats");
    ngx_str_set(&amcf->stream_key, "dashboard:events:stream");
    ngx_str_set(&amcf->resume_prefix, "dashboard:resume:");

    if (amcf->buffer_size < NGX_HTTP_ACTIVITY_MIN_BUFFER) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"activity_buffer_size\" must be at least %uzk",
                           (size_t) NGX_HTTP_ACTIVITY_MIN_BUFFER / 1024);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_activity_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_activity_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_activity_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->jwt = { JWT_ALG_NONE, { 0, NULL } };
     *     conf->dashboard = 0;
     *     conf->dashboard_role = { 0, NULL };
     */

    conf->track = NGX_CONF_UNSET;
    conf->jwt.require_exp = NGX_CONF_UNSET;
    conf->ingest_max_body = NGX_CONF_UNSET_SIZE;
    conf->ingest_max_events = NGX_CONF_UNSET_UINT;
    conf->jwt.leeway = NGX_CONF_UNSET;
    conf->auth_jwt = NGX_CONF_UNSET;
    conf->mask_ip = NGX_CONF_UNSET;
    conf->ping_interval = NGX_CONF_UNSET_MSEC;
    conf->ping_timeout = NGX_CONF_UNSET_MSEC;
    conf->auth_timeout = NGX_CONF_UNSET_MSEC;
    conf->dashboard_queue = NGX_CONF_UNSET_SIZE;
    conf->dashboard_queue_time = NGX_CONF_UNSET_MSEC;
    conf->dashboard_rate = NGX_CONF_UNSET_UINT;
    conf->dashboard_deflate = NGX_CONF_UNSET;
    conf->recovery = NGX_CONF_UNSET_MSEC;
    conf->recovery_max = NGX_CONF_UNSET_UINT;
    conf->rules = NGX_CONF_UNSET_PTR;
    conf->user = NGX_CONF_UNSET_PTR;
    conf->meta = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_activity_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_activity_loc_conf_t *prev = parent;
    ngx_http_activity_loc_conf_t *conf = child;

    time_t                          leeway;
    ngx_flag_t                      require_exp;
    ngx_http_activity_main_conf_t  *amcf;

    ngx_conf_merge_value(conf->track, prev->track, 0);
    ngx_conf_merge_ptr_value(conf->rules, prev->rules, NULL);
    ngx_conf_merge_ptr_value(conf->user, prev->user, NULL);
    ngx_conf_merge_ptr_value(conf->meta, prev->meta, NULL);

    /* the key is inherited as a whole, its checks one by one */

    require_exp = conf->jwt.require_exp;
    leeway = conf->jwt.leeway;

    if (conf->jwt.alg == JWT_ALG_NONE) {
        conf->jwt = prev->jwt;
    }

    conf->jwt.require_exp = require_exp;
    conf->jwt.leeway = leeway;

    ngx_conf_merge_value(conf->jwt.require_exp, prev->jwt.require_exp, 1);
    ngx_conf_merge_sec_value(conf->jwt.leeway, prev->jwt.leeway,
                             NGX_HTTP_ACTIVITY_JWT_LEEWAY);

    ngx_conf_merge_size_value(conf->ingest_max_body, prev->ingest_max_body,
                              64 * 1024);
    ngx_conf_merge_uint_value(conf->ingest_max_events,
                              prev->ingest_max_events, 1000);

    if (conf->ingest_max_events == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"activity_ingest_max_events\" must be at "
                           "least 1");
        return NGX_CONF_ERROR;
    }

    /* clock skew, not a validity period (and no time_t overflow) */

    if (conf->jwt.leeway > NGX_HTTP_ACTIVITY_JWT_LEEWAY_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"activity_jwt_leeway\" must be at most 1d");
        return NGX_CONF_ERROR;
    }

    if (conf->auth_jwt == NGX_CONF_UNSET) {
        conf->auth_jwt = prev->auth_jwt;
        conf->auth_role = prev->auth_role;
    }

    ngx_conf_merge_value(conf->auth_jwt, prev->auth_jwt, 0);
    ngx_conf_merge_value(conf->mask_ip, prev->mask_ip, 0);

    if (conf->auth_jwt && conf->jwt.alg == JWT_ALG_NONE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"activity_auth_jwt\" needs a key: set "
                           "\"activity_jwt_secret\" or \"activity_jwt_key\"");
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_str_value(conf->dashboard_role, prev->dashboard_role,
                             "admin");
    ngx_conf_merge_msec_value(conf->ping_interval, prev->ping_interval,
                              25000);
    ngx_conf_merge_msec_value(conf->ping_timeout, prev->ping_timeout, 20000);
    ngx_conf_merge_msec_value(conf->auth_timeout, prev->auth_timeout, 10000);
    ngx_conf_merge_size_value(conf->dashboard_queue, prev->dashboard_queue,
                              4 * 1024 * 1024);
    ngx_conf_merge_msec_value(conf->dashboard_queue_time,
                              prev->dashboard_queue_time, 30000);
    ngx_conf_merge_uint_value(conf->dashboard_rate, prev->dashboard_rate, 20);
    ngx_conf_merge_value(conf->dashboard_deflate, prev->dashboard_deflate, 1);
    ngx_conf_merge_msec_value(conf->recovery, prev->recovery, 120000);
    ngx_conf_merge_uint_value(conf->recovery_max, prev->recovery_max, 1000);

    if (conf->dashboard && conf->jwt.alg == JWT_ALG_NONE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"activity_dashboard\" needs a key: set "
                           "\"activity_jwt_secret\" or \"activity_jwt_key\"");
        return NGX_CONF_ERROR;
    }

    if (conf->track || conf->rules) {
        amcf = ngx_http_conf_get_module_main_conf(cf,
                                                  ngx_http_activity_module);
        amcf->enabled = 1;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_activity_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_handler_pt            *h;
    ngx_http_core_main_conf_t      *cmcf;
    ngx_http_activity_main_conf_t  *amcf;

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_activity_module);

    /* counters of the whole nginx instance, across worker processes */

    if ((amcf->enabled || amcf->dashboards || amcf->shm_zone)
        && ngx_http_activity_status_zone(cf, &amcf->shm_zone) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* dashboards waiting to authenticate, and per client address */

    if (amcf->dashboards
        && ngx_http_activity_admit_zone(cf, &amcf->admit_zone) != NGX_OK)
    {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    if (amcf->access) {
        h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        *h = ngx_http_activity_access_handler;
    }

    /* nothing tracked anywhere: cost nothing per request */

    if (!amcf->enabled) {
        return NGX_OK;
    }

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_activity_log_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_activity_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_activity_access_variables(cf);
}


static ngx_int_t
ngx_http_activity_init_process(ngx_cycle_t *cycle)
{
    ngx_http_activity_main_conf_t  *amcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    amcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_activity_module);
    if (amcf == NULL) {
        return NGX_OK;
    }

    if (amcf->shm_zone) {
        amcf->stats = amcf->shm_zone->data;

        /* claimed first: it gives back what crashed processes counted */
        (void) ngx_http_activity_status_slot(amcf->stats, cycle->log);
    }

    if (amcf->admit_zone) {
        ngx_http_activity_admit_claim(amcf->admit_zone, cycle->log);
    }

    if (amcf->enabled) {
        amcf->queue_state = ngx_http_activity_queue_create(cycle, amcf);
        if (amcf->queue_state == NULL) {
            return NGX_ERROR;
        }
    }

    if (amcf->dashboards) {
        amcf->fanout_state = ngx_http_activity_fanout_create(cycle, amcf);
        if (amcf->fanout_state == NULL) {
            return NGX_ERROR;
        }

        amcf->resume_state = ngx_http_activity_resume_create(cycle, amcf);
        if (amcf->resume_state == NULL) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static void
ngx_http_activity_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_activity_main_conf_t  *amcf;

    amcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_activity_module);
    if (amcf == NULL) {
        return;
    }

    if (amcf->resume_state) {
        ngx_http_activity_resume_destroy(amcf->resume_state);
        amcf->resume_state = NULL;
    }

    if (amcf->fanout_state) {
        ngx_http_activity_fanout_destroy(amcf->fanout_state);
        amcf->fanout_state = NULL;
    }

    if (amcf->queue_state) {
        ngx_http_activity_queue_destroy(amcf->queue_state);
        amcf->queue_state = NULL;
    }

    if (amcf->admit_zone) {
        ngx_http_activity_admit_release(amcf->admit_zone);
    }

    ngx_http_activity_status_release(amcf->stats);
}


static char *
ngx_http_activity_redis_url(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_activity_main_conf_t *amcf = conf;

    ngx_str_t  *value;

    if (amcf->redis.url.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    return ngx_http_activity_parse_redis_url(cf, &value[1], &amcf->redis);
}


/*
 * redis://[[user]:password@]host[:port][/db], unix:/path/to/socket, or
 * redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]
 * (the password is the master's; the sentinels are asked without one);
 * "password@" without a ':' is a password too, as redis-cli reads it;
 * host names are resolved here, at configuration time, because hiredis
 * resolves them blockingly when it connects.
 */

static char *
ngx_http_activity_parse_redis_url(ngx_conf_t *cf, ngx_str_t *url,
    ngx_http_activity_redis_addr_t *addr)
{
    u_char                          *p, *q, *last, *at, *slash, *colon,
                                    *end, *comma;
    size_t                           scheme;
    ngx_int_t                        db;
    ngx_http_activity_redis_node_t  *node;

    addr->db = -1;

    /* logs and errors show the URL with its password as "***" */

    if (ngx_http_activity_hide_password(cf, url, &addr->url) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    p = url->data;
    last = url->data + url->len;

    if (url->len > 5 && ngx_strncmp(p, "unix:", 5) == 0) {
        if (url->len == 5 || p[5] != '/') {
            goto invalid;
        }

        /* hiredis wants a C string */

        addr->unix_path.len = url->len - 5;
        addr->unix_path.data = ngx_pnalloc(cf->pool, url->len - 5 + 1);
        if (addr->unix_path.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_cpystrn(addr->unix_path.data, p + 5, url->len - 5 + 1);

        return NGX_CONF_OK;
    }

    if (url->len > 17
        && ngx_strncasecmp(p, (u_char *) "redis+sentinel://", 17) == 0)
    {
        scheme = 17;

    } else if (url->len > 8
               && ngx_strncasecmp(p, (u_char *) "redis://", 8) == 0)
    {
        scheme = 8;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis url \"%V\" in \"activity_redis_url\""
                           ": expected redis://host:port, "
                           "redis+sentinel://host:port/MASTER or unix:/path",
                           &addr->url);
        return NGX_CONF_ERROR;
    }

    p += scheme;

    slash = ngx_strlchr(p, last, '/');
    if (slash == NULL) {
        slash = last;
    }

    at = NULL;
    for (end = slash; end > p; end--) {
        if (end[-1] == '@') {
            at = end - 1;
            break;
        }
    }

    if (at) {
        colon = ngx_strlchr(p, at, ':');

        /*
         * percent-encoded as in the worker: "%40" for '@', "%2F" for '/';
         * without a ':' the whole of it is the password, as redis-cli
         * and the worker read "redis://password@host"
         */

        if (colon == NULL) {
            if (ngx_http_activity_url_decode(cf, p, at, &addr->password)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

        } else if (ngx_http_activity_url_decode(cf, p, colon,
                                                &addr->username)
                   != NGX_OK
                   || ngx_http_activity_url_decode(cf, colon + 1, at,
                                                   &addr->password)
                      != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        p = at + 1;
    }

    if (scheme == 8) {
        if (slash < last) {
            db = ngx_atoi(slash + 1, last - slash - 1);
            if (db == NGX_ERROR) {
                goto invalid_db;
            }

            addr->db = db;
        }

        return ngx_http_activity_resolve_redis(cf, addr, p, slash,
                                               NGX_HTTP_ACTIVITY_REDIS_PORT,
                                               &addr->host, &addr->port);
    }

    /* redis+sentinel://: /MASTER[/db] after the sentinels */

    q = (slash < last) ? ngx_strlchr(slash + 1, last, '/') : NULL;
    end = q ? q : last;

    if (slash == last || end == slash + 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "missing master name in redis url \"%V\" in "
                           "\"activity_redis_url\": expected "
                           "redis+sentinel://host:port[,host:port...]/MASTER",
                           &addr->url);
        return NGX_CONF_ERROR;
    }

    addr->master_name.data = slash + 1;
    addr->master_name.len = end - slash - 1;

    if (q) {
        db = ngx_atoi(q + 1, last - q - 1);
        if (db == NGX_ERROR) {
            goto invalid_db;
        }

        addr->db = db;
    }

    addr->sentinels = ngx_array_create(cf->pool, 3,
                                       sizeof(ngx_http_activity_redis_node_t));
    if (addr->sentinels == NULL) {
        return NGX_CONF_ERROR;
    }

    for ( ;; ) {
        comma = ngx_strlchr(p, slash, ',');
        end = comma ? comma : slash;

        node = ngx_array_push(addr->sentinels);
        if (node == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_activity_resolve_redis(cf, addr, p, end,
                                            NGX_HTTP_ACTIVITY_SENTINEL_PORT,
                                            &node->host, &node->port)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }

        if (comma == NULL) {
            break;
        }

        p = comma + 1;
    }

    return NGX_CONF_OK;

invalid_db:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid database number in redis url \"%V\" "
                       "in \"activity_redis_url\"", &addr->url);
    return NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid redis url \"%V\" in \"activity_redis_url\"",
                       &addr->url);
    return NGX_CONF_ERROR;
}


/* activity_redis_wait_replica off | time; */

static char *
ngx_http_activity_wait_replica(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_activity_main_conf_t *amcf = conf;

    ngx_str_t   *value;
    ngx_msec_t   t;

    if (amcf->wait_replica != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        amcf->wait_replica = 0;
        return NGX_CONF_OK;
    }

    t = ngx_parse_time(&value[1], 0);

    if (t == (ngx_msec_t) NGX_ERROR || t == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in "
                           "\"activity_redis_wait_replica\": expected off "
                           "or a time", &value[1]);
        return NGX_CONF_ERROR;
    }

    /* the queue gives up on a Redis that does not answer within 5s */

    if (t >= NGX_HTTP_ACTIVITY_WAIT_REPLICA_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"activity_redis_wait_replica\" must be less "
                           "than 5s, the time the queue waits for any "
                           "answer from redis");
        return NGX_CONF_ERROR;
    }

    amcf->wait_replica = t;

    return NGX_CONF_OK;
}


/*
 * The URL as logs and errors show it: what lies between the scheme (or
 * the user name and its ':') and the last '@' is "***".  The last '@' of
 * the whole URL, not only of the part before the first '/': a password
 * holding a '/' is then hidden too, even in the error that refuses it,
 * and so is the password of a URL whose scheme is not known.  The user
 * name is the part before a ':' that comes before the first '@': in
 * "redis://password@host:port/x@y" the ':' is the port's, and all of
 * "password@host:port/x" is hidden.
 */

static ngx_int_t
ngx_http_activity_hide_password(ngx_conf_t *cf, ngx_str_t *url,
    ngx_str_t *shown)
{
    u_char  *p, *q, *at, *first, *colon, *last;

    *shown = *url;

    /* a socket path has no password, an '@' in it is part of the name */

    if (url->len >= 5 && ngx_strncmp(url->data, "unix:", 5) == 0) {
        return NGX_OK;
    }

    last = url->data + url->len;

    p = (u_char *) ngx_strnstr(url->data, "://", url->len);
    p = p ? p + 3 : url->data;

    at = NULL;
    for (q = last; q > p; q--) {
        if (q[-1] == '@') {
            at = q - 1;
            break;
        }
    }

    if (at == NULL) {
        return NGX_OK;
    }

    first = ngx_strlchr(p, at + 1, '@');

    colon = ngx_strlchr(p, first, ':');
    if (colon) {
        p = colon + 1;
    }

    shown->len = (p - url->data) + 3 + (last - at);
    shown->data = ngx_pnalloc(cf->pool, shown->len);
    if (shown->data == NULL) {
        return NGX_ERROR;
    }

    q = ngx_cpymem(shown->data, url->data, p - url->data);
    q = ngx_cpymem(q, "***", 3);
    ngx_memcpy(q, at, last - at);

    return NGX_OK;
}


/*
 * The user or password of a redis URL with "%XX" decoded (anything else,
 * a '%' not followed by two hex digits too, is taken as it is)
 */

static ngx_int_t
ngx_http_activity_url_decode(ngx_conf_t *cf, u_char *p, u_char *last,
    ngx_str_t *out)
{
    u_char      *d;
    ngx_int_t    c;

    out->data = ngx_pnalloc(cf->pool, last - p + 1);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    d = out->data;

    while (p < last) {
        if (*p == '%' && last - p >= 3
            && (c = ngx_hextoi(p + 1, 2)) != NGX_ERROR)
        {
            *d++ = (u_char) c;
            p += 3;
            continue;
        }

        *d++ = *p++;
    }

    out->len = d - out->data;
    *d = '\0';

    return NGX_OK;
}


/* host[:port] of a redis URL, as an IP address text hiredis takes */

static char *
ngx_http_activity_resolve_redis(ngx_conf_t *cf,
    ngx_http_activity_redis_addr_t *addr, u_char *p, u_char *end,
    in_port_t default_port, ngx_str_t *host, in_port_t *port)
{
    ngx_url_t  u;

    if (p == end) {
        goto invalid;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url.data = p;
    u.url.len = end - p;
    u.default_port = default_port;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid redis url \"%V\" in \"activity_redis_url\""
                           "%s%s", &addr->url, u.err ? ": " : "",
                           u.err ? u.err : "");
        return NGX_CONF_ERROR;
    }

    if (u.naddrs == 0 || u.family == AF_UNIX) {
        goto invalid;
    }

    *port = u.port;

    host->data = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN + 1);
    if (host->data == NULL) {
        return NGX_CONF_ERROR;
    }

    /* ngx_sock_ntop() brackets IPv6 addresses only when it prints a port */

    host->len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                              host->data, NGX_SOCKADDR_STRLEN, 0);
    host->data[host->len] = '\0';

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid redis url \"%V\" in \"activity_redis_url\"",
                       &addr->url);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_activity_queue_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_activity_main_conf_t *amcf = conf;

    ngx_str_t  *value;

    if (amcf->queue.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty key in \"activity_queue\"");
        return NGX_CONF_ERROR;
    }

    amcf->queue = value[1];

    return NGX_CONF_OK;
}


/*
 * activity_event TYPE [method=M[,M...]] [status=S[|S...]] [if=$var];
 */

static char *
ngx_http_activity_event(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_activity_loc_conf_t *alcf = conf;

    ngx_str_t                         *value, s;
    ngx_uint_t                         i;
    ngx_http_activity_rule_t          *rule;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (!ngx_http_activity_valid_type(&value[1])) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid event type \"%V\" in \"activity_event\", "
                           "expected [A-Z][A-Z0-9_]* of at most %d "
                           "characters", &value[1],
                           NGX_HTTP_ACTIVITY_TYPE_MAX);
        return NGX_CONF_ERROR;
    }

    if (alcf->rules == NGX_CONF_UNSET_PTR) {
        alcf->rules = ngx_array_create(cf->pool, 2,
                                       sizeof(ngx_http_activity_rule_t));
        if (alcf->rules == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    rule = ngx_array_push(alcf->rules);
    if (rule == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(rule, sizeof(ngx_http_activity_rule_t));
    rule->type = value[1];

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "method=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            if (ngx_http_activity_parse_methods(cf, &s, &rule->methods)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "status=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            if (ngx_http_activity_parse_statuses(cf, &s, &rule->statuses)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "if=", 3) == 0) {
            s.data = value[i].data + 3;
            s.len = value[i].len - 3;

            if (s.len == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "empty \"if=\" in \"activity_event\"");
                return NGX_CONF_ERROR;
            }

            rule->filter = ngx_palloc(cf->pool,
                                      sizeof(ngx_http_complex_value_t));
            if (rule->filter == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

            ccv.cf = cf;
            ccv.value = &s;
            ccv.complex_value = rule->filter;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"activity_event\"",
                           &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_activity_parse_methods(ngx_conf_t *cf, ngx_str_t *list,
    ngx_uint_t *mask)
{
    u_char                      *p, *last, *end;
    ngx_str_t                    name;
    ngx_http_activity_method_t  *m;

    p = list->data;
    last = list->data + list->len;

    do {
        end = ngx_strlchr(p, last, ',');
        if (end == NULL) {
            end = last;
        }

        name.data = p;
        name.len = end - p;

        for (m = ngx_http_activity_methods; m->name.len; m++) {
            if (m->name.len == name.len
                && ngx_strncmp(m->name.data, name.data, name.len) == 0)
            {
                break;
            }
        }

        if (m->name.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid method \"%V\" in \"activity_event\"",
                               &name);
            return NGX_ERROR;
        }

        *mask |= m->mask;
        p = end + 1;

    } while (end < last);

    return NGX_OK;
}


/*
 * "2xx" matches 200-299, "201" matches 201; items are separated by "|"
 * (or ",").
 */

static ngx_int_t
ngx_http_activity_parse_statuses(ngx_conf_t *cf, ngx_str_t *list,
    ngx_array_t **statuses)
{
    u_char                            *p, *last, *end;
    ngx_int_t                          n;
    ngx_str_t                          item;
    ngx_http_activity_status_range_t  *range;

    if (*statuses == NULL) {
        *statuses = ngx_array_create(cf->pool, 2,
                                     sizeof(ngx_http_activity_status_range_t));
        if (*statuses == NULL) {
            return NGX_ERROR;
        }
    }

    p = list->data;
    last = list->data + list->len;

    do {
        for (end = p; end < last && *end != '|' && *end != ','; end++) {
            /* void */
        }

        item.data = p;
        item.len = end - p;

        range = ngx_array_push(*statuses);
        if (range == NULL) {
            return NGX_ERROR;
        }

        if (item.len != 3 || item.data[0] < '1' || item.data[0] > '5') {
            goto invalid;
        }

        if ((item.data[1] | 0x20) == 'x' && (item.data[2] | 0x20) == 'x') {
            range->low = (item.data[0] - '0') * 100;
            range->high = range->low + 99;

        } else {
            n = ngx_atoi(item.data, 3);
            if (n == NGX_ERROR) {
                goto invalid;
            }

            range->low = n;
            range->high = n;
        }

        p = end + 1;

    } while (end < last);

    return NGX_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid status \"%V\" in \"activity_event\", "
                       "expected a code such as 201 or a class such as 2xx",
                       &item);
    return NGX_ERROR;
}


static char *
ngx_http_activity_meta(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_activity_loc_conf_t *alcf = conf;

    u_char                            *p;
    ngx_str_t                         *value;
    ngx_http_activity_meta_t          *meta;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > NGX_HTTP_ACTIVITY_TYPE_MAX) {
        goto invalid;
    }

    for (p = value[1].data; p < value[1].data + value[1].len; p++) {
        if (!(*p == '_' || *p == '-' || (*p >= '0' && *p <= '9')
              || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z')))
        {
            goto invalid;
        }
    }

    if (alcf->meta == NGX_CONF_UNSET_PTR) {
        alcf->meta = ngx_array_create(cf->pool, 2,
                                      sizeof(ngx_http_activity_meta_t));
        if (alcf->meta == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    meta = ngx_array_push(alcf->meta);
    if (meta == NULL) {
        return NGX_CONF_ERROR;
    }

    meta->name = value[1];

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[2];
    ccv.complex_value = &meta->value;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid name \"%V\" in \"activity_meta\", expected "
                       "letters, digits, \"_\" or \"-\"", &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_activity_jwt_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_activity_loc_conf_t *alcf = conf;

    ngx_str_t  *value;

    if (alcf->jwt.alg != JWT_ALG_NONE) {
        return "is duplicate, or conflicts with \"activity_jwt_key\"";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "empty secret in \"activity_jwt_secret\"");
        return NGX_CONF_ERROR;
    }

    alcf->jwt.alg = JWT_ALG_HS256;
    alcf->jwt.key = value[1];

    return NGX_CONF_OK;
}


/*
 * activity_jwt_key file [RS256|ES256];  a PEM public key, read now: the
 * algorithm is pinned here, never taken from a token's header.
 */

static char *
ngx_http_activity_jwt_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_activity_loc_conf_t *alcf = conf;

    u_char           *buf;
    ssize_t           n;
    ngx_str_t        *value, path;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    if (alcf->jwt.alg != JWT_ALG_NONE) {
        return "is duplicate, or conflicts with \"activity_jwt_secret\"";
    }

    value = cf->args->elts;

    alcf->jwt.alg = JWT_ALG_RS256;

    if (cf->args->nelts == 3) {
        if (ngx_strcmp(value[2].data, "RS256") == 0) {
            alcf->jwt.alg = JWT_ALG_RS256;

        } else if (ngx_strcmp(value[2].data, "ES256") == 0) {
            alcf->jwt.alg = JWT_ALG_ES256;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid algorithm \"%V\" in "
                               "\"activity_jwt_key\", expected RS256 or "
                               "ES256", &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = path;
    file.log = cf->log;

    file.fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%s\" failed in "
                           "\"activity_jwt_key\"", path.data);
        return NGX_CONF_ERROR;
    }

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) == 0 || ngx_file_size(&fi) > 65536)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "key file \"%s\" in \"activity_jwt_key\" is "
                           "empty, too large or unreadable", path.data);
        (void) ngx_close_file(file.fd);
        return NGX_CONF_ERROR;
    }

    buf = ngx_pnalloc(cf->pool, ngx_file_size(&fi) + 1);
    if (buf == NULL) {
        (void) ngx_close_file(file.fd);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_file(&file, buf, ngx_file_size(&fi), 0);

    (void) ngx_close_file(file.fd);

    if (n != ngx_file_size(&fi)) {
        return NGX_CONF_ERROR;
    }

    buf[n] = '\0';

    if (ngx_strstr(buf, "-----BEGIN PUBLIC KEY-----") == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%s\" in \"activity_jwt_key\" holds "
                           "no PEM public key", path.data);
        return NGX_CONF_ERROR;
    }

    alcf->jwt.key.data = buf;
    alcf->jwt.key.len = n;

    return NGX_CONF_OK;
}


static char *
ngx_http_activity_dashboard(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_activity_loc_conf_t *alcf = conf;

    ngx_str_t                      *value;
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_activity_main_conf_t  *amcf;

    if (alcf->dashboard) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "socketio") == 0) {
        alcf->dashboard = NGX_HTTP_ACTIVITY_SOCKETIO;

    } else if (ngx_strcmp(value[1].data, "websocket") == 0) {
        alcf->dashboard = NGX_HTTP_ACTIVITY_WEBSOCKET;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid protocol \"%V\" in \"activity_dashboard\","
                           " expected socketio or websocket", &value[1]);
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_activity_dashboard_handler;

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_activity_module);
    amcf->dashboards = 1;

    return NGX_CONF_OK;
}


/*
 * activity_spool path [max_size=size];  the directory must exist and be
 * writable by the worker processes' user
 */

static char *
ngx_http_activity_spool(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_activity_main_conf_t *amcf = conf;

    u_char           *slash;
    ngx_str_t        *value, s;
    ngx_file_info_t   fi;

    if (amcf->spool_path.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    amcf->spool_path = value[1];
    amcf->spool_max = 256 * 1024 * 1024;

    if (ngx_conf_full_name(cf->cycle, &amcf->spool_path, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "max_size=", 9) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in "
                               "\"activity_spool\"", &value[2]);
            return NGX_CONF_ERROR;
        }

        s.data = value[2].data + 9;
        s.len = value[2].len - 9;

        amcf->spool_max = ngx_parse_offset(&s);

        if (amcf->spool_max == NGX_ERROR || amcf->spool_max < 65536) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid max_size \"%V\" in "
                               "\"activity_spool\", at least 64k", &s);
            return NGX_CONF_ERROR;
        }
    }

    /* the directory is checked now, not at the first outage */

    slash = (u_char *) strrchr((char *) amcf->spool_path.data, '/');

    s.len = slash - amcf->spool_path.data;
    s.data = ngx_pnalloc(cf->pool, s.len + 2);
    if (s.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_cpystrn(s.data, amcf->spool_path.data, s.len + 1);

    if (s.len == 0) {
        ngx_cpystrn(s.data, (u_char *) "/", 2);
    }

    if (ngx_file_info(s.data, &fi) == NGX_FILE_ERROR || !ngx_is_dir(&fi)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "spool directory \"%s\" of \"activity_spool\" "
                           "does not exist", s.data);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* activity_auth_jwt [role=NAME] | off */

static char *
ngx_http_activity_auth_jwt(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_activity_loc_conf_t *alcf = conf;

    ngx_str_t                      *value;
    ngx_http_activity_main_conf_t  *amcf;

    if (alcf->auth_jwt != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;
    alcf->auth_jwt = 1;

    if (cf->args->nelts == 2) {

        if (ngx_strcmp(value[1].data, "off") == 0) {
            alcf->auth_jwt = 0;
            return NGX_CONF_OK;
        }

        if (ngx_strncmp(value[1].data, "role=", 5) != 0
            || value[1].len == 5)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in "
                               "\"activity_auth_jwt\", expected role=NAME "
                               "or off", &value[1]);
            return NGX_CONF_ERROR;
        }

        alcf->auth_role.data = value[1].data + 5;
        alcf->auth_role.len = value[1].len - 5;
    }

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_activity_module);
    amcf->access = 1;

    return NGX_CONF_OK;
}


/* activity_status, activity_ingest: the location's content handler */

static char *
ngx_http_activity_handler_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_activity_main_conf_t  *amcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->handler) {
        return "is duplicate, or conflicts with another handler";
    }

    clcf->handler = (ngx_http_handler_pt) cmd->post;

    amcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_activity_module);

    /* both need the counters; ingest needs the queue too */

    if (clcf->handler == ngx_http_activity_ingest_handler) {
        amcf->enabled = 1;

    } else if (ngx_http_activity_status_zone(cf, &amcf->shm_zone) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_activity_valid_type(ngx_str_t *type)
{
    u_char  *p;

    if (type->len == 0 || type->len > NGX_HTTP_ACTIVITY_TYPE_MAX
        || type->data[0] < 'A' || type->data[0] > 'Z')
    {
        return 0;
    }

    for (p = type->data + 1; p < type->data + type->len; p++) {
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')
              || *p == '_'))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * The bounds post handler of the numeric directives: nginx's own
 * ngx_conf_check_num_bounds() says "value must be between" without
 * naming the directive or the value.
 */

static char *
ngx_http_activity_check_bounds(ngx_conf_t *cf, void *post, void *data)
{
    ngx_conf_num_bounds_t  *bounds = post;
    ngx_int_t              *np = data;

    ngx_str_t  *value;

    if (*np >= bounds->low && (bounds->high == -1 || *np <= bounds->high)) {
        return NGX_CONF_OK;
    }

    value = cf->args->elts;

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\" in \"%V\" directive, "
                       "it must be between %i and %i",
                       &value[1], &value[0], bounds->low, bounds->high);

    return NGX_CONF_ERROR;
}


/* activity_dashboard_recovery off | TIME [max=N]; (issue 12) */

static char *
ngx_http_activity_dashboard_recovery(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_activity_loc_conf_t *alcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;
    ngx_msec_t  window;

    if (alcf->recovery != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts > 2) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"activity_dashboard_recovery off\" takes "
                               "no other parameter");
            return NGX_CONF_ERROR;
        }

        alcf->recovery = 0;
        return NGX_CONF_OK;
    }

    window = ngx_parse_time(&value[1], 0);

    if (window == (ngx_msec_t) NGX_ERROR || window == 0
        || window > 86400000)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid recovery window \"%V\" in "
                           "\"activity_dashboard_recovery\": want off or a "
                           "time from 1ms to 1d", &value[1]);
        return NGX_CONF_ERROR;
    }

    alcf->recovery = window;

    if (cf->args->nelts == 2) {
        return NGX_CONF_OK;
    }

    if (value[2].len <= 4 || ngx_strncmp(value[2].data, "max=", 4) != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in "
                           "\"activity_dashboard_recovery\"", &value[2]);
        return NGX_CONF_ERROR;
    }

    n = ngx_atoi(value[2].data + 4, value[2].len - 4);

    if (n == NGX_ERROR || n < 1 || n > 100000) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"%V\" in \"activity_dashboard_recovery\":"
                           " want max=1..100000", &value[2]);
        return NGX_CONF_ERROR;
    }

    alcf->recovery_max = n;

    return NGX_CONF_OK;
}
