
/*
 * ngx_http_activity_module: shared configuration types.
 */


#ifndef _NGX_HTTP_ACTIVITY_MODULE_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_jwt.h"


#define NGX_HTTP_ACTIVITY_TYPE_MAX      64

/* a Redis master's "ip:port" ("[IPv6]:port") and its NUL */
#define NGX_HTTP_ACTIVITY_MASTER_LEN    64


typedef struct ngx_http_activity_queue_s  ngx_http_activity_queue_t;
typedef struct ngx_http_activity_fanout_s  ngx_http_activity_fanout_t;
typedef struct ngx_http_activity_stats_s   ngx_http_activity_stats_t;
typedef struct ngx_http_activity_resume_s  ngx_http_activity_resume_t;


/* a sentinel of a redis+sentinel:// URL, resolved at configuration */

typedef struct {
    ngx_str_t                   host;       /* IP text, NUL-terminated */
    in_port_t                   port;
} ngx_http_activity_redis_node_t;


typedef struct {
    ngx_str_t                   url;        /* as configured, for logs */
    ngx_str_t                   host;       /* resolved IP text, or "" */
    ngx_str_t                   unix_path;  /* unix socket, or "" */
    in_port_t                   port;
    ngx_str_t                   username;   /* ACL user, or "" */
    ngx_str_t                   password;   /* "" when none */
    ngx_int_t                   db;         /* -1: leave the default */

    /* redis+sentinel://: the sentinels (host and port above unused) */
    ngx_array_t                *sentinels;  /* of _redis_node_t, or NULL */
    ngx_str_t                   master_name;
} ngx_http_activity_redis_addr_t;


typedef struct {
    ngx_http_activity_redis_addr_t   redis;
    ngx_str_t                        queue;
    size_t                           buffer_size;
    ngx_str_t                        spool_path;
    off_t                            spool_max;
    ngx_flag_t                       enabled;  /* some location emits */
    ngx_flag_t                       dashboards;  /* some location serves */
    ngx_flag_t                       access;      /* activity_auth_jwt */
    ngx_uint_t                       max_connections;
    ngx_msec_t                       ping_interval;  /* subscriber PING */
    ngx_msec_t                       ping_timeout;
    ngx_msec_t                       wait_replica;   /* WAIT 1, 0: off */
    ngx_uint_t                       max_pending;
    ngx_uint_t                       max_per_ip;  /* 0: any number */
    ngx_shm_zone_t                  *admit_zone;  /* with dashboards */

    ngx_str_t                        events_channel;
    ngx_str_t                        stats_channel;
    ngx_str_t                        recent_key;
    ngx_str_t                        stats_key;
    ngx_str_t                        stream_key;    /* resume (issue 12) */
    ngx_str_t                        resume_prefix;

    ngx_shm_zone_t                  *shm_zone;
    ngx_http_activity_stats_t       *stats;         /* in shm_zone */
    ngx_http_activity_queue_t       *queue_state;   /* per worker process */
    ngx_http_activity_fanout_t      *fanout_state;  /* per worker process */
    ngx_http_activity_resume_t      *resume_state;  /* per worker process */
} ngx_http_activity_main_conf_t;


typedef struct {
    ngx_uint_t                  low;
    ngx_uint_t                  high;
} ngx_http_activity_status_range_t;


typedef struct {
    ngx_str_t                   type;
    ngx_uint_t                  methods;    /* NGX_HTTP_* mask, 0: any */
    ngx_array_t                *statuses;   /* status ranges, NULL: any */
    ngx_http_complex_value_t   *filter;     /* if=, NULL: always */
} ngx_http_activity_rule_t;


typedef struct {
    ngx_str_t                   name;
    ngx_http_complex_value_t    value;
} ngx_http_activity_meta_t;


typedef struct {
    ngx_flag_t                  track;
    ngx_array_t                *rules;      /* ngx_http_activity_rule_t */
    ngx_http_complex_value_t   *user;
    ngx_array_t                *meta;       /* ngx_http_activity_meta_t */
    ngx_http_activity_jwt_key_t  jwt;

    ngx_flag_t                  auth_jwt;
    ngx_str_t                   auth_role;
    ngx_flag_t                  mask_ip;

    ngx_uint_t                  dashboard;  /* 0, or the protocol */
    ngx_str_t                   dashboard_role;
    ngx_msec_t                  ping_interval;
    ngx_msec_t                  ping_timeout;
    ngx_msec_t                  auth_timeout;
    size_t                      dashboard_queue;        /* bytes */
    ngx_msec_t                  dashboard_queue_time;
    ngx_uint_t                  dashboard_rate;
    ngx_flag_t                  dashboard_deflate;  /* permessage-deflate */
    ngx_msec_t                  recovery;       /* 0: off */
    ngx_uint_t                  recovery_max;   /* events one resume sends */

    /* activity_ingest (bytes task) */
    size_t                      ingest_max_body;
    ngx_uint_t                  ingest_max_events;
} ngx_http_activity_loc_conf_t;


/* per request: what activity_auth_jwt learned */

typedef struct {
    ngx_str_t                   jwt_sub;
    ngx_str_t                   jwt_role;
} ngx_http_activity_ctx_t;


extern ngx_module_t  ngx_http_activity_module;


static ngx_inline ngx_http_activity_ctx_t *
ngx_http_activity_get_ctx(ngx_http_request_t *r)
{
    ngx_http_activity_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_activity_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_activity_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_activity_module);
    }

    return ctx;
}


#endif /* _NGX_HTTP_ACTIVITY_MODULE_H_INCLUDED_ */
