
/*
 * activity_auth_jwt: 401 without a valid bearer token, 403 without the
 * role; the same key and algorithm rules as the dashboard.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_activity_module.h"
#include "ngx_http_activity_access.h"
#include "ngx_http_activity_jwt.h"
#include "ngx_http_activity_status.h"


static ngx_int_t ngx_http_activity_jwt_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_variable_t  ngx_http_activity_variables[] = {

    { ngx_string("activity_jwt_sub"), NULL, ngx_http_activity_jwt_variable,
      offsetof(ngx_http_activity_ctx_t, jwt_sub), 0, 0 },

    { ngx_string("activity_jwt_role"), NULL, ngx_http_activity_jwt_variable,
      offsetof(ngx_http_activity_ctx_t, jwt_role), 0, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_activity_access_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_activity_variables; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_activity_access_handler(ngx_http_request_t *r)
{
    ngx_str_t                        token;
    ngx_table_elt_t                 *h;
    ngx_http_activity_ctx_t         *ctx;
    ngx_http_activity_loc_conf_t    *alcf;
    ngx_http_activity_main_conf_t   *amcf;
    ngx_http_activity_jwt_claims_t   claims;

    alcf = ngx_http_get_module_loc_conf(r, ngx_http_activity_module);

    if (alcf->auth_jwt != 1) {
        return NGX_DECLINED;
    }

    ngx_str_null(&token);
    (void) ngx_http_activity_jwt_bearer(r, &token);

    switch (ngx_http_activity_jwt_verify(&alcf->jwt, &token, &alcf->auth_role,
                                         r->pool, &claims))
    {
    case NGX_OK:
        break;

    case NGX_DECLINED:
        amcf = ngx_http_get_module_main_conf(r, ngx_http_activity_module);
        ngx_http_activity_stat_add(amcf->stats, auth_refused[claims.code], 1);

        /* expected refusals: "info", as auth_basic logs them */

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "activity: access refused: %s", claims.reason);

        if (claims.status == NGX_HTTP_UNAUTHORIZED) {
            h = ngx_list_push(&r->headers_out.headers);
            if (h == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            h->hash = 1;
            ngx_str_set(&h->key, "WWW-Authenticate");
#if (nginx_version >= 1023000)
            /* 1.23 chains repeated headers: auth_request follows ->next */
            h->next = NULL;
#endif

            if (token.len) {
                ngx_str_set(&h->value, "Bearer error=\"invalid_token\"");

            } else {
                ngx_str_set(&h->value, "Bearer");
            }

            r->headers_out.www_authenticate = h;
        }

        return claims.status;

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_http_activity_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->jwt_sub = claims.sub;
    ctx->jwt_role = claims.role;

    return NGX_OK;
}


static ngx_int_t
ngx_http_activity_jwt_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                *s;
    ngx_http_activity_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_activity_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = (ngx_str_t *) ((u_char *) ctx + data);

    if (s->data == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}
