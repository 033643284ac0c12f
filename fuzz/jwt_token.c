
/*
 * libFuzzer target: hostile bearer tokens through libjwt and the checks
 * of ngx_http_activity_jwt.c, which needs nginx types and so cannot be
 * linked here: its claim logic is repeated below, call for call (keep it
 * in step with ngx_http_activity_jwt_verify() and its helpers).
 *
 * The first byte picks how the rest becomes a token:
 *
 *   0  the token text itself (signatures will rarely verify, so this
 *      mostly exercises libjwt's splitting, base64 and JSON);
 *   1  "<header JSON>\n<claims JSON>", encoded and signed here with the
 *      key (HMAC-SHA256), so that any claims reach the checks;
 *   2  the claims JSON alone, under {"alg":"HS256","typ":"JWT"}.
 */


#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>


#define JWT_LEEWAY   5              /* activity_jwt_leeway's default */
#define JWT_MAX_LEN  8192           /* NGX_HTTP_ACTIVITY_JWT_MAX_LEN */

/* far beyond any real date, yet t + JWT_LEEWAY cannot overflow */
#define JWT_TIME_MAX  ((double) (INT64_MAX / 2))


static const unsigned char  key[] = "fuzz-secret";
static const char           role[] = "admin";


static char *b64url(char *dst, const unsigned char *src, size_t len);
static char *sign(const unsigned char *header, size_t hlen,
    const unsigned char *claims, size_t clen);
static void verify(const char *token);
static int claim_time(jwt_t *jwt, const char *claim, time_t *t);
static void copy_sub(jwt_t *jwt);
static int roles(jwt_t *jwt);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                 *token;
    const uint8_t        *nl;
    static const char     hs256[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

    if (size == 0 || size > JWT_MAX_LEN) {
        return 0;
    }

    switch (data[0] % 3) {

    case 0:
        token = malloc(size);
        if (token == NULL) {
            return 0;
        }

        memcpy(token, data + 1, size - 1);
        token[size - 1] = '\0';
        break;

    case 1:
        nl = memchr(data + 1, '\n', size - 1);
        if (nl == NULL) {
            return 0;
        }

        token = sign(data + 1, nl - (data + 1), nl + 1,
                     size - (nl + 1 - data));
        break;

    default:
        token = sign((const unsigned char *) hs256, sizeof(hs256) - 1,
                     data + 1, size - 1);
        break;
    }

    if (token == NULL) {
        return 0;
    }

    verify(token);
    free(token);

    return 0;
}


static char *
b64url(char *dst, const unsigned char *src, size_t len)
{
    size_t             i;
    uint32_t           v;
    static const char  abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "abcdefghijklmnopqrstuvwxyz0123456789-_";

    for (i = 0; i + 2 < len; i += 3) {
        v = (uint32_t) src[i] << 16 | (uint32_t) src[i + 1] << 8 | src[i + 2];
        *dst++ = abc[v >> 18];
        *dst++ = abc[(v >> 12) & 63];
        *dst++ = abc[(v >> 6) & 63];
        *dst++ = abc[v & 63];
    }

    if (len - i == 1) {
        v = (uint32_t) src[i] << 16;
        *dst++ = abc[v >> 18];
        *dst++ = abc[(v >> 12) & 63];

    } else if (len - i == 2) {
        v = (uint32_t) src[i] << 16 | (uint32_t) src[i + 1] << 8;
        *dst++ = abc[v >> 18];
        *dst++ = abc[(v >> 12) & 63];
        *dst++ = abc[(v >> 6) & 63];
    }

    return dst;
}


static char *
sign(const unsigned char *header, size_t hlen, const unsigned char *claims,
    size_t clen)
{
    char           *token, *p;
    unsigned int    mlen;
    unsigned char   mac[EVP_MAX_MD_SIZE];

    token = malloc(((hlen + 2) / 3 + (clen + 2) / 3) * 4 + 48);
    if (token == NULL) {
        return NULL;
    }

    p = b64url(token, header, hlen);
    *p++ = '.';
    p = b64url(p, claims, clen);

    if (HMAC(EVP_sha256(), key, sizeof(key) - 1, (unsigned char *) token,
             p - token, mac, &mlen) == NULL)
    {
        free(token);
        return NULL;
    }

    *p++ = '.';
    p = b64url(p, mac, mlen);
    *p = '\0';

    return token;
}


/* ngx_http_activity_jwt_verify(), role "admin" required */

static void
verify(const char *token)
{
    jwt_t   *jwt;
    time_t   now, t;

    if (jwt_decode(&jwt, token, key, sizeof(key) - 1) != 0) {
        return;
    }

    if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
        goto done;
    }

    now = time(NULL);

    switch (claim_time(jwt, "exp", &t)) {
    case 0:
        if (now >= t + JWT_LEEWAY) {
            goto done;
        }
        break;
    case 1:
        /* activity_jwt_require_exp on (the default) */
        goto done;
    default:
        goto done;
    }

    switch (claim_time(jwt, "nbf", &t)) {
    case 0:
        if (now + JWT_LEEWAY < t) {
            goto done;
        }
        break;
    case 1:
        break;
    default:
        goto done;
    }

    copy_sub(jwt);
    (void) roles(jwt);

done:

    jwt_free(jwt);
}


/* ngx_http_activity_jwt_time(): 0 read, 1 absent, -1 not a number */

static int
claim_time(jwt_t *jwt, const char *claim, time_t *t)
{
    char    *text;
    double   d;
    json_t  *v;

    text = jwt_get_grants_json(jwt, claim);
    if (text == NULL) {
        return 1;
    }

    v = json_loads(text, JSON_DECODE_ANY, NULL);
    free(text);

    if (!json_is_number(v)) {
        json_decref(v);
        return -1;
    }

    /*
     * The module casts the double straight to time_t: 1e300 (or any
     * value beyond time_t) makes that cast undefined, and on x86-64 it
     * yields INT64_MIN, so an absurd "nbf" passes and an absurd "exp"
     * reads as long expired. The clamp below is the fix proposed for
     * ngx_http_activity_jwt_time(); the seed claims_exp_big is its
     * regression input.
     */

    d = json_number_value(v);
    json_decref(v);

    if (d > JWT_TIME_MAX) {
        d = JWT_TIME_MAX;

    } else if (d < -JWT_TIME_MAX) {
        d = -JWT_TIME_MAX;
    }

    *t = (time_t) d;

    return 0;
}


/* ngx_http_activity_jwt_copy_sub() */

static void
copy_sub(jwt_t *jwt)
{
    long         n;
    char        *sub;
    size_t       len;
    const char  *s;

    s = jwt_get_grant(jwt, "sub");

    if (s != NULL) {
        len = strlen(s);
        sub = malloc(len + 1);
        if (sub) {
            memcpy(sub, s, len + 1);
            free(sub);
        }

        return;
    }

    errno = 0;
    n = jwt_get_grant_int(jwt, "sub");
    (void) n;
}


/* ngx_http_activity_jwt_roles(): 1 when the role is there */

static int
roles(jwt_t *jwt)
{
    int             found;
    char           *text;
    size_t          i, len, roles_len, rlen;
    json_t         *array, *item;
    const char     *s;
    unsigned char  *buf, *p, *data;

    found = 0;
    roles_len = 0;
    data = NULL;
    rlen = sizeof(role) - 1;

    s = jwt_get_grant(jwt, "role");

    if (s) {
        len = strlen(s);
        data = malloc(len ? len : 1);
        if (data == NULL) {
            return 0;
        }

        roles_len = len;
        memcpy(data, s, len);

        if (len == rlen && strncmp(s, role, len) == 0) {
            found = 1;
        }
    }

    text = jwt_get_grants_json(jwt, "roles");
    if (text == NULL) {
        free(data);
        return found;
    }

    array = json_loads(text, 0, NULL);
    free(text);

    if (!json_is_array(array)) {
        json_decref(array);
        free(data);
        return found;
    }

    len = roles_len;

    json_array_foreach(array, i, item) {
        if (json_is_string(item)) {
            len += json_string_length(item) + 1;
        }
    }

    /* exactly the size the module allocates from its pool */

    buf = malloc(len ? len : 1);
    if (buf == NULL) {
        json_decref(array);
        free(data);
        return 0;
    }

    p = buf;

    if (roles_len) {
        memcpy(p, data, roles_len);
        p += roles_len;
    }

    json_array_foreach(array, i, item) {
        if (!json_is_string(item)) {
            continue;
        }

        s = json_string_value(item);
        len = json_string_length(item);

        if (p != buf) {
            *p++ = ',';
        }

        memcpy(p, s, len);
        p += len;

        if (!found && len == rlen && strncmp(s, role, len) == 0) {
            found = 1;
        }
    }

    free(buf);
    free(data);
    json_decref(array);

    return found;
}
