
/*
 * The user of a request from its bearer token: the "sub" claim of an
 * HS256 JWT that verifies with activity_jwt_secret and is in its validity
 * window.  Anything else (no token, another algorithm, a bad signature,
 * expired) yields no user: tracking never refuses a request.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <errno.h>
#include <jwt.h>

#include "ngx_http_activity_jwt.h"


#define NGX_HTTP_ACTIVITY_JWT_MAX_LEN   8192


static ngx_int_t ngx_http_activity_jwt_bearer(ngx_http_request_t *r,
    ngx_str_t *token);
static ngx_int_t ngx_http_activity_jwt_in_time(jwt_t *jwt, time_t now);


ngx_int_t
ngx_http_activity_jwt_subject(ngx_http_request_t *r, ngx_str_t *secret,
    ngx_str_t *sub)
{
    long         n;
    jwt_t       *jwt;
    u_char      *token;
    ngx_str_t    bearer;
    const char  *s;

    if (secret->len == 0
        || ngx_http_activity_jwt_bearer(r, &bearer) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    token = ngx_pnalloc(r->pool, bearer.len + 1);
    if (token == NULL) {
        return NGX_ERROR;
    }

    ngx_cpystrn(token, bearer.data, bearer.len + 1);

    if (jwt_decode(&jwt, (char *) token, secret->data, secret->len) != 0) {
        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "activity: bearer token does not verify");
        return NGX_DECLINED;
    }

    if (jwt_get_alg(jwt) != JWT_ALG_HS256
        || !ngx_http_activity_jwt_in_time(jwt, ngx_time()))
    {
        jwt_free(jwt);
        return NGX_DECLINED;
    }

    s = jwt_get_grant(jwt, "sub");

    if (s != NULL) {
        sub->len = ngx_strlen(s);
        sub->data = ngx_pnalloc(r->pool, sub->len);
        if (sub->data == NULL) {
            jwt_free(jwt);
            return NGX_ERROR;
        }

        ngx_memcpy(sub->data, s, sub->len);

    } else {

        /* a numeric "sub" is not what RFC 7519 says, but common */

        errno = 0;
        n = jwt_get_grant_int(jwt, "sub");

        if (errno != 0) {
            jwt_free(jwt);
            return NGX_DECLINED;
        }

        sub->data = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (sub->data == NULL) {
            jwt_free(jwt);
            return NGX_ERROR;
        }

        sub->len = ngx_sprintf(sub->data, "%l", n) - sub->data;
    }

    jwt_free(jwt);

    return NGX_OK;
}


static ngx_int_t
ngx_http_activity_jwt_bearer(ngx_http_request_t *r, ngx_str_t *token)
{
    ngx_str_t  *h;

    if (r->headers_in.authorization == NULL) {
        return NGX_DECLINED;
    }

    h = &r->headers_in.authorization->value;

    if (h->len <= sizeof("Bearer ") - 1
        || h->len > NGX_HTTP_ACTIVITY_JWT_MAX_LEN
        || ngx_strncasecmp(h->data, (u_char *) "Bearer ", 7) != 0)
    {
        return NGX_DECLINED;
    }

    token->data = h->data + 7;
    token->len = h->len - 7;

    while (token->len && *token->data == ' ') {
        token->data++;
        token->len--;
    }

    return token->len ? NGX_OK : NGX_DECLINED;
}


/* "exp" and "nbf" are optional; libjwt checks neither */

static ngx_int_t
ngx_http_activity_jwt_in_time(jwt_t *jwt, time_t now)
{
    long  t;

    errno = 0;
    t = jwt_get_grant_int(jwt, "exp");

    if (errno == 0 && now >= t) {
        return 0;
    }

    errno = 0;
    t = jwt_get_grant_int(jwt, "nbf");

    if (errno == 0 && now < t) {
        return 0;
    }

    return 1;
}
