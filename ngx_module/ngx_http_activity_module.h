
/*
 * ngx_http_activity_module: shared configuration types.
 */


#ifndef _NGX_HTTP_ACTIVITY_MODULE_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_ACTIVITY_TYPE_MAX      64


typedef struct ngx_http_activity_queue_s  ngx_http_activity_queue_t;


typedef struct {
    ngx_str_t                   url;        /* as configured, for logs */
    ngx_str_t                   host;       /* resolved IP text, or "" */
    ngx_str_t                   unix_path;  /* unix socket, or "" */
    in_port_t                   port;
    ngx_str_t                   username;   /* ACL user, or "" */
    ngx_str_t                   password;   /* "" when none */
    ngx_int_t                   db;         /* -1: leave the default */
} ngx_http_activity_redis_addr_t;


typedef struct {
    ngx_http_activity_redis_addr_t   redis;
    ngx_str_t                        queue;
    size_t                           buffer_size;
    ngx_flag_t                       enabled;  /* some location emits */
    ngx_http_activity_queue_t       *queue_state;  /* per worker process */
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
    ngx_str_t                   jwt_secret;
} ngx_http_activity_loc_conf_t;


extern ngx_module_t  ngx_http_activity_module;


#endif /* _NGX_HTTP_ACTIVITY_MODULE_H_INCLUDED_ */
