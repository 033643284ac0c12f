
/*
 * The log phase: decide which events a finished request yields, gather its
 * facts, and hand the encoded events to the queue.  Never blocks and never
 * changes the response: it runs after the response is sent.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_module.h"
#include "ngx_http_activity_event.h"
#include "ngx_http_activity_jwt.h"
#include "ngx_http_activity_queue.h"
#include "ngx_http_activity_status.h"
#include "ngx_http_activity_track.h"


#define NGX_HTTP_ACTIVITY_MAX_EVENTS   16


static ngx_int_t ngx_http_activity_rule_matches(ngx_http_request_t *r,
    ngx_http_activity_rule_t *rule, ngx_uint_t status);
static ngx_int_t ngx_http_activity_facts(ngx_http_request_t *r,
    ngx_http_activity_loc_conf_t *alcf, ngx_uint_t status,
    ngx_http_activity_facts_t *f);
static void ngx_http_activity_user(ngx_http_request_t *r,
    ngx_http_activity_loc_conf_t *alcf, ngx_str_t *user);
static ngx_int_t ngx_http_activity_masked_ip(ngx_http_request_t *r,
    ngx_str_t *ip);


static ngx_str_t  ngx_http_activity_api_call = ngx_string("API_CALL");


ngx_int_t
ngx_http_activity_log_handler(ngx_http_request_t *r)
{
    ngx_str_t                       body, json;
    ngx_str_t                      *types[NGX_HTTP_ACTIVITY_MAX_EVENTS];
    ngx_uint_t                      i, n, status;
    ngx_http_activity_rule_t       *rules;
    ngx_http_activity_facts_t       facts;
    ngx_http_activity_loc_conf_t   *alcf;
    ngx_http_activity_main_conf_t  *amcf;

    /* subrequests (mirror, log_subrequest) are not client requests */

    if (r != r->main) {
        return NGX_OK;
    }

    amcf = ngx_http_get_module_main_conf(r, ngx_http_activity_module);
    alcf = ngx_http_get_module_loc_conf(r, ngx_http_activity_module);

    if (amcf->queue_state == NULL || (!alcf->track && alcf->rules == NULL)) {
        return NGX_OK;
    }

    status = r->err_status ? r->err_status : r->headers_out.status;

    n = 0;

    if (alcf->track) {
        types[n++] = &ngx_http_activity_api_call;
    }

    if (alcf->rules) {
        rules = alcf->rules->elts;

        for (i = 0; i < alcf->rules->nelts; i++) {
            if (n < NGX_HTTP_ACTIVITY_MAX_EVENTS
                && ngx_http_activity_rule_matches(r, &rules[i], status))
            {
                types[n++] = &rules[i].type;
            }
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    if (ngx_http_activity_facts(r, alcf, status, &facts) != NGX_OK
        || ngx_http_activity_event_body(r->pool, &facts, &body) != NGX_OK)
    {
        return NGX_OK;
    }

    for (i = 0; i < n; i++) {
        if (ngx_http_activity_event_encode(r->pool, types[i], &facts, &body,
                                           &json)
            != NGX_OK)
        {
            break;
        }

        (void) ngx_http_activity_queue_push(amcf->queue_state, json.data,
                                            json.len);
    }

    ngx_http_activity_stat_add(amcf->stats, events_tracked, i);

    return NGX_OK;
}


static ngx_int_t
ngx_http_activity_rule_matches(ngx_http_request_t *r,
    ngx_http_activity_rule_t *rule, ngx_uint_t status)
{
    ngx_str_t                          value;
    ngx_uint_t                         i;
    ngx_http_activity_status_range_t  *range;

    if (rule->methods && !(rule->methods & r->method)) {
        return 0;
    }

    if (rule->statuses) {
        range = rule->statuses->elts;

        for (i = 0; i < rule->statuses->nelts; i++) {
            if (status >= range[i].low && status <= range[i].high) {
                break;
            }
        }

        if (i == rule->statuses->nelts) {
            return 0;
        }
    }

    if (rule->filter) {
        if (ngx_http_complex_value(r, rule->filter, &value) != NGX_OK) {
            return 0;
        }

        /* as access_log if=: empty or "0" is false */

        if (value.len == 0 || (value.len == 1 && value.data[0] == '0')) {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_activity_facts(ngx_http_request_t *r,
    ngx_http_activity_loc_conf_t *alcf, ngx_uint_t status,
    ngx_http_activity_facts_t *f)
{
    u_char                    *q;
    ngx_uint_t                 i;
    ngx_time_t                *tp;
    ngx_keyval_t              *kv;
    ngx_msec_int_t             ms;
    ngx_http_activity_meta_t  *meta;

    ngx_memzero(f, sizeof(ngx_http_activity_facts_t));

    ngx_http_activity_user(r, alcf, &f->user);

    f->sec = r->start_sec;
    f->msec = r->start_msec;

    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    f->duration = ngx_max(ms, 0);

    f->ip = r->connection->addr_text;

    if (alcf->mask_ip
        && ngx_http_activity_masked_ip(r, &f->ip) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (r->headers_in.user_agent) {
        f->user_agent = r->headers_in.user_agent->value;
    }

    /* the path the client asked for, without the query string */

    f->endpoint = r->unparsed_uri;
    q = ngx_strlchr(f->endpoint.data, f->endpoint.data + f->endpoint.len,
                    '?');
    if (q) {
        f->endpoint.len = q - f->endpoint.data;
    }

    f->method = r->method_name;
    f->status = status;

    if (alcf->meta == NULL) {
        return NGX_OK;
    }

    f->details = ngx_array_create(r->pool, alcf->meta->nelts,
                                  sizeof(ngx_keyval_t));
    if (f->details == NULL) {
        return NGX_ERROR;
    }

    meta = alcf->meta->elts;

    for (i = 0; i < alcf->meta->nelts; i++) {
        kv = ngx_array_push(f->details);
        if (kv == NULL) {
            return NGX_ERROR;
        }

        kv->key = meta[i].name;

        if (ngx_http_complex_value(r, &meta[i].value, &kv->value) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* activity_mask_ip: the /24 of an IPv4 address, the /48 of an IPv6 one */

static ngx_int_t
ngx_http_activity_masked_ip(ngx_http_request_t *r, ngx_str_t *ip)
{
    u_char               *p;
    in_addr_t             addr;
    struct sockaddr      *sa;
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    u_char               *a;
    struct in6_addr       in6;
    struct sockaddr_in6  *sin6;
#endif

    sa = r->connection->sockaddr;

    p = ngx_pnalloc(r->pool, NGX_INET6_ADDRSTRLEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    switch (sa->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) sa;
        addr = ntohl(sin->sin_addr.s_addr);

        ip->len = ngx_sprintf(p, "%ud.%ud.%ud.0", addr >> 24,
                              (addr >> 16) & 0xff, (addr >> 8) & 0xff)
                  - p;
        break;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) sa;

        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
            a = sin6->sin6_addr.s6_addr;
            ip->len = ngx_sprintf(p, "%ud.%ud.%ud.0", a[12], a[13], a[14])
                      - p;
            break;
        }

        ngx_memzero(&in6, sizeof(struct in6_addr));
        ngx_memcpy(in6.s6_addr, sin6->sin6_addr.s6_addr, 6);

        ip->len = ngx_inet6_ntop(in6.s6_addr, p, NGX_INET6_ADDRSTRLEN);
        break;
#endif

    default:

        /* unix sockets have no address worth hiding */
        return NGX_OK;
    }

    ip->data = p;

    return NGX_OK;
}


/*
 * activity_user when set; else the "sub" of a bearer token that verifies;
 * else null. $remote_user is not taken by default: without auth_basic
 * nothing checked it, and "curl -u victim:x" would write "victim".
 */

static void
ngx_http_activity_user(ngx_http_request_t *r,
    ngx_http_activity_loc_conf_t *alcf, ngx_str_t *user)
{
    ngx_str_t  value;

    if (alcf->user) {
        if (ngx_http_complex_value(r, alcf->user, &value) == NGX_OK
            && value.len)
        {
            *user = value;
        }

        return;
    }

    (void) ngx_http_activity_jwt_subject(r, &alcf->jwt, user);
}
