
/*
 * JWT checks: signature with the configured key and algorithm only,
 * validity window ("exp", "nbf"), and role ("role" string or "roles"
 * array).  libjwt verifies signatures; it checks no claims at all.
 *
 * Tracking asks for the "sub" of the same bearer token on request after
 * request, and a thousand dashboards of one team connect with the same
 * token; verifying it (base64, JSON, HMAC) costs more than the rest of
 * either.  So each nginx worker process remembers the tokens it has
 * verified, in a fixed table: a slot is chosen by a hash of the token,
 * and honoured only when the whole token, the key it was verified with
 * and the key's settings match, and only while its "exp" and "nbf" still
 * hold (checked again at every hit, with the leeway of the location
 * asking).  The token's roles are remembered one by one, and the role a
 * location requires is checked against them at every hit.  Only tokens
 * that verified are stored: a refused token never takes a slot.  A
 * reload starts new worker processes, so a new key never meets an old
 * entry.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <errno.h>
#include <jansson.h>

#include "ngx_http_activity_jwt.h"


typedef struct {
    u_char                     *key;          /* the key's bytes */
    size_t                      key_len;
    jwt_alg_t                   alg;
    ngx_flag_t                  require_exp;
    time_t                      exp;          /* 0: no "exp" */
    time_t                      nbf;          /* 0: no "nbf" */
    size_t                      token_len;    /* 0: free slot */
    ngx_flag_t                  has_sub;
    size_t                      sub_len;
    size_t                      role_len;     /* claims->role, joined */
    size_t                      roles_len;    /* each role: 2-byte length */
    u_char                      sub[NGX_HTTP_ACTIVITY_JWT_CACHE_SUB];
    u_char                      role[NGX_HTTP_ACTIVITY_JWT_CACHE_ROLES];
    u_char                      roles[NGX_HTTP_ACTIVITY_JWT_CACHE_ROLES];
    u_char                      token[NGX_HTTP_ACTIVITY_JWT_CACHE_TOKEN];
} ngx_http_activity_jwt_cached_t;


static ngx_int_t ngx_http_activity_jwt_cache_get(
    ngx_http_activity_jwt_key_t *key, ngx_str_t *token, ngx_str_t *role,
    ngx_pool_t *pool, ngx_http_activity_jwt_claims_t *claims);
static ngx_uint_t ngx_http_activity_jwt_same(u_char *a, u_char *b,
    size_t len);
static void ngx_http_activity_jwt_cache_put(ngx_http_activity_jwt_key_t *key,
    ngx_str_t *token, jwt_t *jwt, ngx_http_activity_jwt_claims_t *claims);
static u_char *ngx_http_activity_jwt_cache_role(u_char *p, u_char *last,
    const char *s, size_t len);
static ngx_int_t ngx_http_activity_jwt_roles(jwt_t *jwt, ngx_str_t *role,
    ngx_pool_t *pool, ngx_str_t *roles);
static ngx_int_t ngx_http_activity_jwt_copy_sub(jwt_t *jwt, ngx_pool_t *pool,
    ngx_str_t *sub);
static ngx_int_t ngx_http_activity_jwt_time(jwt_t *jwt, const char *claim,
    time_t *t);


/* per nginx worker process: the tokens it has verified */
static ngx_http_activity_jwt_cached_t
    ngx_http_activity_jwt_cache[NGX_HTTP_ACTIVITY_JWT_CACHE_SLOTS];


const char  *ngx_http_activity_jwt_labels[] = {
    "no_token",
    "too_long",
    "invalid_token",
    "wrong_algorithm",
    "expired",
    "not_yet_valid",
    "missing_role",
    "no_key",
    NULL
};


ngx_int_t
ngx_http_activity_jwt_bearer(ngx_http_request_t *r, ngx_str_t *token)
{
    ngx_str_t  *h;

    if (r->headers_in.authorization == NULL) {
        return NGX_DECLINED;
    }

    h = &r->headers_in.authorization->value;

    if (h->len <= sizeof("Bearer ") - 1
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


/*
 * NGX_OK: the token verifies and carries the role (when one is asked);
 * NGX_DECLINED: refused, claims->status and claims->reason say why;
 * NGX_ERROR: out of memory.
 */

ngx_int_t
ngx_http_activity_jwt_verify(ngx_http_activity_jwt_key_t *key,
    ngx_str_t *token, ngx_str_t *role, ngx_pool_t *pool,
    ngx_http_activity_jwt_claims_t *claims)
{
    jwt_t   *jwt;
    u_char  *text;
    time_t   now, t;

    ngx_memzero(claims, sizeof(ngx_http_activity_jwt_claims_t));
    claims->status = NGX_HTTP_UNAUTHORIZED;

    if (key->alg == JWT_ALG_NONE || key->key.len == 0) {
        claims->reason = "no key configured";
        claims->code = NGX_HTTP_ACTIVITY_JWT_NO_KEY;
        return NGX_DECLINED;
    }

    if (token->len == 0) {
        claims->reason = "no token";
        claims->code = NGX_HTTP_ACTIVITY_JWT_NO_TOKEN;
        return NGX_DECLINED;
    }

    if (token->len > NGX_HTTP_ACTIVITY_JWT_MAX_LEN) {
        claims->reason = "token too long";
        claims->code = NGX_HTTP_ACTIVITY_JWT_TOO_LONG;
        return NGX_DECLINED;
    }

    switch (ngx_http_activity_jwt_cache_get(key, token, role, pool, claims)) {

    case NGX_OK:
        return NGX_OK;

    case NGX_DECLINED:
        return NGX_DECLINED;

    case NGX_ERROR:
        return NGX_ERROR;

    default: /* NGX_DONE: not remembered, verified below */
        break;
    }

    text = ngx_pnalloc(pool, token->len + 1);
    if (text == NULL) {
        return NGX_ERROR;
    }

    ngx_cpystrn(text, token->data, token->len + 1);

    /* a key is always passed: without one libjwt accepts "alg": "none" */

    if (jwt_decode(&jwt, (char *) text, key->key.data, key->key.len) != 0) {
        claims->reason = "invalid token";
        claims->code = NGX_HTTP_ACTIVITY_JWT_INVALID;
        return NGX_DECLINED;
    }

    if (jwt_get_alg(jwt) != key->alg) {
        claims->reason = "wrong algorithm";
        claims->code = NGX_HTTP_ACTIVITY_JWT_ALGORITHM;
        goto refused;
    }

    now = ngx_time();

    switch (ngx_http_activity_jwt_time(jwt, "exp", &t)) {

    case NGX_OK:
        if (now >= t + key->leeway) {
            claims->reason = "token expired";
            claims->code = NGX_HTTP_ACTIVITY_JWT_EXPIRED;
            goto refused;
        }

        claims->exp = t;
        break;

    case NGX_DECLINED:

        /* a token without "exp" would be valid forever once leaked */

        if (key->require_exp) {
            claims->reason = "token without exp";
            claims->code = NGX_HTTP_ACTIVITY_JWT_INVALID;
            goto refused;
        }

        break;

    default:
        claims->reason = "invalid token";
        claims->code = NGX_HTTP_ACTIVITY_JWT_INVALID;
        goto refused;
    }

    switch (ngx_http_activity_jwt_time(jwt, "nbf", &t)) {

    case NGX_OK:
        if (now + key->leeway < t) {
            claims->reason = "token not yet valid";
            claims->code = NGX_HTTP_ACTIVITY_JWT_NOT_YET_VALID;
            goto refused;
        }

        claims->nbf = t;
        break;

    case NGX_DECLINED:
        break;

    default:
        claims->reason = "invalid token";
        claims->code = NGX_HTTP_ACTIVITY_JWT_INVALID;
        goto refused;
    }

    if (ngx_http_activity_jwt_copy_sub(jwt, pool, &claims->sub) != NGX_OK) {
        jwt_free(jwt);
        return NGX_ERROR;
    }

    switch (ngx_http_activity_jwt_roles(jwt, role, pool, &claims->role)) {

    case NGX_OK:
        break;

    case NGX_DECLINED:
        claims->status = NGX_HTTP_FORBIDDEN;
        claims->reason = "missing role";
        claims->code = NGX_HTTP_ACTIVITY_JWT_ROLE;
        goto refused;

    default:
        jwt_free(jwt);
        return NGX_ERROR;
    }

    ngx_http_activity_jwt_cache_put(key, token, jwt, claims);

    jwt_free(jwt);

    return NGX_OK;

refused:

    jwt_free(jwt);

    return NGX_DECLINED;
}


/*
 * The user of a tracked request: the "sub" of a bearer token that
 * verifies.  Anything else yields no user: tracking never refuses.
 */

ngx_int_t
ngx_http_activity_jwt_subject(ngx_http_request_t *r,
    ngx_http_activity_jwt_key_t *key, ngx_str_t *sub)
{
    ngx_str_t                        token;
    ngx_http_activity_jwt_claims_t   claims;

    if (key->alg == JWT_ALG_NONE
        || ngx_http_activity_jwt_bearer(r, &token) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_activity_jwt_verify(key, &token, NULL, r->pool, &claims)
        != NGX_OK)
    {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "activity: bearer token ignored: %s", claims.reason);
        return NGX_DECLINED;
    }

    if (claims.sub.data == NULL) {
        return NGX_DECLINED;
    }

    *sub = claims.sub;

    return NGX_OK;
}


/*
 * NGX_OK: the token was verified with this key, its times still hold
 * and it carries the role asked for, *claims is filled (strings copied
 * into the pool); NGX_DECLINED: it was verified but lacks the role,
 * *claims says so; NGX_DONE: not known, or no longer valid (the slot is
 * freed, the caller verifies it again and says why); NGX_ERROR: out of
 * memory.
 */

static ngx_int_t
ngx_http_activity_jwt_cache_get(ngx_http_activity_jwt_key_t *key,
    ngx_str_t *token, ngx_str_t *role, ngx_pool_t *pool,
    ngx_http_activity_jwt_claims_t *claims)
{
    u_char                          *p, *last;
    size_t                           len;
    time_t                           now;
    ngx_uint_t                       slot, found;
    ngx_http_activity_jwt_cached_t  *c;

    if (token->len > NGX_HTTP_ACTIVITY_JWT_CACHE_TOKEN) {
        return NGX_DONE;
    }

    slot = ngx_murmur_hash2(token->data, token->len)
           & (NGX_HTTP_ACTIVITY_JWT_CACHE_SLOTS - 1);
    c = &ngx_http_activity_jwt_cache[slot];

    if (c->token_len != token->len
        || c->key != key->key.data
        || c->key_len != key->key.len
        || c->alg != key->alg
        || c->require_exp != key->require_exp
        || !ngx_http_activity_jwt_same(c->token, token->data, token->len))
    {
        return NGX_DONE;
    }

    now = ngx_time();

    if ((c->exp && now >= c->exp + key->leeway)
        || now + key->leeway < c->nbf)
    {
        c->token_len = 0;
        return NGX_DONE;
    }

    found = (role == NULL || role->len == 0);

    p = c->roles;
    last = c->roles + c->roles_len;

    while (!found && p + 2 <= last) {
        len = ((size_t) p[0] << 8) | p[1];
        p += 2;

        if (len == role->len && ngx_strncmp(p, role->data, len) == 0) {
            found = 1;
        }

        p += len;
    }

    if (!found) {
        claims->status = NGX_HTTP_FORBIDDEN;
        claims->reason = "missing role";
        claims->code = NGX_HTTP_ACTIVITY_JWT_ROLE;
        return NGX_DECLINED;
    }

    claims->exp = c->exp;
    claims->nbf = c->nbf;

    if (c->has_sub) {
        claims->sub.data = ngx_pnalloc(pool, c->sub_len + 1);
        if (claims->sub.data == NULL) {
            return NGX_ERROR;
        }

        claims->sub.len = c->sub_len;
        ngx_memcpy(claims->sub.data, c->sub, c->sub_len);
        claims->sub.data[c->sub_len] = '\0';
    }

    if (c->role_len) {
        claims->role.data = ngx_pnalloc(pool, c->role_len);
        if (claims->role.data == NULL) {
            return NGX_ERROR;
        }

        claims->role.len = c->role_len;
        ngx_memcpy(claims->role.data, c->role, c->role_len);
    }

    return NGX_OK;
}


/*
 * Whether two tokens are the same, in a time that does not depend on
 * where they differ: a remembered token is someone's credential.
 */

static ngx_uint_t
ngx_http_activity_jwt_same(u_char *a, u_char *b, size_t len)
{
    u_char  d;
    size_t  i;

    d = 0;

    for (i = 0; i < len; i++) {
        d |= a[i] ^ b[i];
    }

    return d == 0;
}


/*
 * Remembers a token that has just verified; it takes over its slot.  A
 * token whose "sub" or roles do not fit is not remembered: it is
 * verified in full every time.
 */

static void
ngx_http_activity_jwt_cache_put(ngx_http_activity_jwt_key_t *key,
    ngx_str_t *token, jwt_t *jwt, ngx_http_activity_jwt_claims_t *claims)
{
    u_char                          *p, *last;
    char                            *text;
    size_t                           i;
    json_t                          *array, *item;
    ngx_uint_t                       slot;
    const char                      *s;
    ngx_http_activity_jwt_cached_t  *c;

    if (token->len > NGX_HTTP_ACTIVITY_JWT_CACHE_TOKEN
        || claims->sub.len > NGX_HTTP_ACTIVITY_JWT_CACHE_SUB
        || claims->role.len > NGX_HTTP_ACTIVITY_JWT_CACHE_ROLES)
    {
        return;
    }

    slot = ngx_murmur_hash2(token->data, token->len)
           & (NGX_HTTP_ACTIVITY_JWT_CACHE_SLOTS - 1);
    c = &ngx_http_activity_jwt_cache[slot];

    /* the roles one by one, as ngx_http_activity_jwt_roles() reads them */

    p = c->roles;
    last = c->roles + NGX_HTTP_ACTIVITY_JWT_CACHE_ROLES;

    c->token_len = 0;

    s = jwt_get_grant(jwt, "role");

    if (s) {
        p = ngx_http_activity_jwt_cache_role(p, last, s, ngx_strlen(s));
        if (p == NULL) {
            return;
        }
    }

    text = jwt_get_grants_json(jwt, "roles");

    if (text) {
        array = json_loads(text, 0, NULL);
        free(text);

        if (json_is_array(array)) {
            json_array_foreach(array, i, item) {
                if (!json_is_string(item)) {
                    continue;
                }

                p = ngx_http_activity_jwt_cache_role(p, last,
                                                     json_string_value(item),
                                                     json_string_length(item));
                if (p == NULL) {
                    json_decref(array);
                    return;
                }
            }
        }

        json_decref(array);
    }

    c->roles_len = p - c->roles;
    c->key = key->key.data;
    c->key_len = key->key.len;
    c->alg = key->alg;
    c->require_exp = key->require_exp;
    c->exp = claims->exp;
    c->nbf = claims->nbf;
    c->has_sub = (claims->sub.data != NULL);
    c->sub_len = claims->sub.len;
    c->role_len = claims->role.len;

    if (claims->sub.len) {
        ngx_memcpy(c->sub, claims->sub.data, claims->sub.len);
    }

    if (claims->role.len) {
        ngx_memcpy(c->role, claims->role.data, claims->role.len);
    }

    ngx_memcpy(c->token, token->data, token->len);
    c->token_len = token->len;
}


/* appends one role (2-byte length, bytes); NULL when it does not fit */

static u_char *
ngx_http_activity_jwt_cache_role(u_char *p, u_char *last, const char *s,
    size_t len)
{
    if ((size_t) (last - p) < len + 2) {
        return NULL;
    }

    *p++ = (u_char) (len >> 8);
    *p++ = (u_char) (len & 0xff);

    return ngx_cpymem(p, s, len);
}


/*
 * The token's roles ("role" string, or "roles" array joined with ","),
 * for $activity_jwt_role; NGX_DECLINED when the required one is missing.
 */

static ngx_int_t
ngx_http_activity_jwt_roles(jwt_t *jwt, ngx_str_t *role, ngx_pool_t *pool,
    ngx_str_t *roles)
{
    char        *text;
    u_char      *p;
    size_t       i, len;
    json_t      *array, *item;
    ngx_int_t    found;
    const char  *s;

    found = (role == NULL || role->len == 0);

    s = jwt_get_grant(jwt, "role");

    if (s) {
        len = ngx_strlen(s);

        roles->data = ngx_pnalloc(pool, len);
        if (roles->data == NULL) {
            return NGX_ERROR;
        }

        roles->len = len;
        ngx_memcpy(roles->data, s, len);

        if (!found && len == role->len
            && ngx_strncmp(s, role->data, len) == 0)
        {
            found = 1;
        }
    }

    text = jwt_get_grants_json(jwt, "roles");
    if (text == NULL) {
        return found ? NGX_OK : NGX_DECLINED;
    }

    array = json_loads(text, 0, NULL);
    free(text);

    if (!json_is_array(array)) {
        json_decref(array);
        return found ? NGX_OK : NGX_DECLINED;
    }

    len = roles->len;

    json_array_foreach(array, i, item) {
        if (json_is_string(item)) {
            len += json_string_length(item) + 1;
        }
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        json_decref(array);
        return NGX_ERROR;
    }

    if (roles->len) {
        p = ngx_cpymem(p, roles->data, roles->len);
    }

    roles->data = p - roles->len;

    json_array_foreach(array, i, item) {
        if (!json_is_string(item)) {
            continue;
        }

        s = json_string_value(item);
        len = json_string_length(item);

        if (p != roles->data) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, s, len);

        if (!found && len == role->len
            && ngx_strncmp(s, role->data, len) == 0)
        {
            found = 1;
        }
    }

    roles->len = p - roles->data;

    json_decref(array);

    return found ? NGX_OK : NGX_DECLINED;
}


/*
 * A NumericDate claim: an integer or, as RFC 7519 allows, a fraction.
 * NGX_DECLINED: absent; NGX_ERROR: not a number (the token is refused:
 * an "exp" that cannot be read must not mean "never expires").
 */

static ngx_int_t
ngx_http_activity_jwt_time(jwt_t *jwt, const char *claim, time_t *t)
{
    char    *text;
    double   d;
    json_t  *v;

    text = jwt_get_grants_json(jwt, claim);
    if (text == NULL) {
        return NGX_DECLINED;
    }

    v = json_loads(text, JSON_DECODE_ANY, NULL);
    free(text);

    if (!json_is_number(v)) {
        json_decref(v);
        return NGX_ERROR;
    }

    d = json_number_value(v);
    json_decref(v);

    /* beyond time_t the cast is undefined: far past or far future */

    if (d > (double) (NGX_MAX_TIME_T_VALUE / 2)) {
        d = (double) (NGX_MAX_TIME_T_VALUE / 2);

    } else if (d < (double) -(NGX_MAX_TIME_T_VALUE / 2)) {
        d = (double) -(NGX_MAX_TIME_T_VALUE / 2);
    }

    *t = (time_t) d;

    return NGX_OK;
}


/* RFC 7519 wants a string; a number is common enough to accept */

static ngx_int_t
ngx_http_activity_jwt_copy_sub(jwt_t *jwt, ngx_pool_t *pool, ngx_str_t *sub)
{
    long         n;
    const char  *s;

    s = jwt_get_grant(jwt, "sub");

    if (s != NULL) {
        sub->len = ngx_strlen(s);
        sub->data = ngx_pnalloc(pool, sub->len + 1);
        if (sub->data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(sub->data, s, sub->len + 1);
        return NGX_OK;
    }

    errno = 0;
    n = jwt_get_grant_int(jwt, "sub");

    if (errno != 0) {
        return NGX_OK;
    }

    sub->data = ngx_pnalloc(pool, NGX_INT64_LEN + 1);
    if (sub->data == NULL) {
        return NGX_ERROR;
    }

    sub->len = ngx_sprintf(sub->data, "%l%Z", n) - sub->data - 1;

    return NGX_OK;
}
