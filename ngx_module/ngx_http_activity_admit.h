
/*
 * Admission of dashboard connections across the worker processes: the
 * sockets still waiting to authenticate, and the sockets of each client
 * address, counted in a shared memory zone of their own.
 */


#ifndef _NGX_HTTP_ACTIVITY_ADMIT_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_ADMIT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


ngx_int_t ngx_http_activity_admit_zone(ngx_conf_t *cf, ngx_shm_zone_t **zone);

/* this process's slot, claimed at its start and given back at its exit */
void ngx_http_activity_admit_claim(ngx_shm_zone_t *zone, ngx_log_t *log);
void ngx_http_activity_admit_release(ngx_shm_zone_t *zone);

ngx_int_t ngx_http_activity_admit_pending(ngx_shm_zone_t *zone,
    ngx_uint_t max);
void ngx_http_activity_admit_pending_done(ngx_shm_zone_t *zone);

/* the longest address kept: IPv6 */
#define NGX_HTTP_ACTIVITY_ADMIT_ADDR_LEN   16


/*
 * The client's address bytes, copied into buf (the real client's with
 * ngx_http_realip_module, which gives the connection its own address
 * back when the request ends).  NGX_DECLINED: not an IP address.
 */
ngx_int_t ngx_http_activity_admit_key(ngx_connection_t *c, u_char *buf,
    ngx_str_t *key);
ngx_int_t ngx_http_activity_admit_address(ngx_shm_zone_t *zone,
    ngx_str_t *key, ngx_uint_t max, ngx_log_t *log);
void ngx_http_activity_admit_address_done(ngx_shm_zone_t *zone,
    ngx_str_t *key);


#endif /* _NGX_HTTP_ACTIVITY_ADMIT_H_INCLUDED_ */
