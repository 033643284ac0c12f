
/*
 * JWT verification (libjwt) with the algorithm pinned by configuration:
 * libjwt 1.10 trusts the token's own "alg" header, so the algorithm it
 * reports is compared with the configured one before anything is used.
 */


#ifndef _NGX_HTTP_ACTIVITY_JWT_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_JWT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jwt.h>


/* seconds of clock skew allowed on "exp" and "nbf" by default */
#define NGX_HTTP_ACTIVITY_JWT_LEEWAY   5
#define NGX_HTTP_ACTIVITY_JWT_LEEWAY_MAX  86400

#define NGX_HTTP_ACTIVITY_JWT_MAX_LEN  8192

/*
 * Verified tokens, remembered per nginx worker process: slots (a power
 * of two), and the longest token, "sub" and roles remembered.
 */
#define NGX_HTTP_ACTIVITY_JWT_CACHE_SLOTS  256
#define NGX_HTTP_ACTIVITY_JWT_CACHE_TOKEN  1024
#define NGX_HTTP_ACTIVITY_JWT_CACHE_SUB    256
#define NGX_HTTP_ACTIVITY_JWT_CACHE_ROLES  256


/* why a token is refused, for logs and metrics */
typedef enum {
    NGX_HTTP_ACTIVITY_JWT_NO_TOKEN = 0,
    NGX_HTTP_ACTIVITY_JWT_TOO_LONG,
    NGX_HTTP_ACTIVITY_JWT_INVALID,
    NGX_HTTP_ACTIVITY_JWT_ALGORITHM,
    NGX_HTTP_ACTIVITY_JWT_EXPIRED,
    NGX_HTTP_ACTIVITY_JWT_NOT_YET_VALID,
    NGX_HTTP_ACTIVITY_JWT_ROLE,
    NGX_HTTP_ACTIVITY_JWT_NO_KEY,
    NGX_HTTP_ACTIVITY_JWT_REASONS
} ngx_http_activity_jwt_reason_e;


typedef struct {
    jwt_alg_t                   alg;      /* JWT_ALG_NONE: not set */
    ngx_str_t                   key;      /* HS256 secret or PEM key */
    ngx_flag_t                  require_exp;  /* activity_jwt_require_exp */
    time_t                      leeway;       /* activity_jwt_leeway */
} ngx_http_activity_jwt_key_t;


typedef struct {
    ngx_str_t                   sub;      /* data NULL: no "sub" */
    ngx_str_t                   role;     /* "role", or "roles" joined */
    time_t                      exp;      /* 0: no "exp" */
    time_t                      nbf;      /* 0: no "nbf" */
    ngx_uint_t                  status;   /* 401 or 403 when refused */
    ngx_uint_t                  code;     /* ngx_http_activity_jwt_reason_e */
    const char                 *reason;   /* why, for the log */
} ngx_http_activity_jwt_claims_t;


extern const char  *ngx_http_activity_jwt_labels[];


ngx_int_t ngx_http_activity_jwt_bearer(ngx_http_request_t *r,
    ngx_str_t *token);
ngx_int_t ngx_http_activity_jwt_verify(ngx_http_activity_jwt_key_t *key,
    ngx_str_t *token, ngx_str_t *role, ngx_pool_t *pool,
    ngx_http_activity_jwt_claims_t *claims);
ngx_int_t ngx_http_activity_jwt_subject(ngx_http_request_t *r,
    ngx_http_activity_jwt_key_t *key, ngx_str_t *sub);


#endif /* _NGX_HTTP_ACTIVITY_JWT_H_INCLUDED_ */
