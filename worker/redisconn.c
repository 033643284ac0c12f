/*
 * activity-worker: where Redis is and how to open a connection to it.
 *
 * Blocking hiredis: the worker does one thing at a time, so the simple
 * API is the honest one. Every call still has a deadline: a connect
 * timeout, and a socket timeout that the caller picks above its longest
 * BLMOVE (a shorter one kills the context mid-wait).
 */

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "redisconn.h"


#define REDIS_CONNECT_TIMEOUT_MS  2000
#define REDIS_DEFAULT_PORT        6379


static char *redis_pct_decode(const char *s, size_t len);
static struct timeval redis_tv(int ms);


int
redis_target_parse(redis_target_t *t, const char *url, char *err,
    size_t errlen)
{
    const char  *p, *at, *colon, *slash, *hostend, *end;
    char        *num;
    long         n;

    memset(t, 0, sizeof(*t));

    if (strncmp(url, "unix:", 5) == 0) {
        if (url[5] != '/') {
            snprintf(err, errlen, "unix socket path must be absolute");
            return -1;
        }
        t->path = strdup(url + 5);
        return t->path ? 0 : -1;
    }

    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "expected redis://host[:port][/db] or"
                 " unix:/path");
        return -1;
    }

    p = url + 8;
    slash = strchr(p, '/');
    end = slash ? slash : p + strlen(p);

    /* userinfo: the last '@' before the path, passwords may hold '@' */
    at = NULL;
    for (const char *q = p; q < end; q++) {
        if (*q == '@') {
            at = q;
        }
    }

    if (at != NULL) {
        colon = memchr(p, ':', (size_t) (at - p));
        if (colon == NULL) {
            /* redis://password@host is a common shorthand */
            t->password = redis_pct_decode(p, (size_t) (at - p));
        } else {
            if (colon > p) {
                t->user = redis_pct_decode(p, (size_t) (colon - p));
            }
            t->password = redis_pct_decode(colon + 1,
                                           (size_t) (at - colon - 1));
        }
        p = at + 1;
    }

    if (*p == '[') {
        hostend = memchr(p, ']', (size_t) (end - p));
        if (hostend == NULL) {
            snprintf(err, errlen, "unterminated [IPv6] host");
            return -1;
        }
        t->host = strndup(p + 1, (size_t) (hostend - p - 1));
        p = hostend + 1;
    } else {
        hostend = memchr(p, ':', (size_t) (end - p));
        if (hostend == NULL) {
            hostend = end;
        }
        t->host = strndup(p, (size_t) (hostend - p));
        p = hostend;
    }

    if (t->host == NULL || t->host[0] == '\0') {
        snprintf(err, errlen, "missing host");
        return -1;
    }

    t->port = REDIS_DEFAULT_PORT;

    if (p < end && *p == ':') {
        errno = 0;
        n = strtol(p + 1, &num, 10);
        if (errno != 0 || num == p + 1 || num != end || n < 1 || n > 65535) {
            snprintf(err, errlen, "bad port");
            return -1;
        }
        t->port = (int) n;
    } else if (p != end) {
        snprintf(err, errlen, "unexpected text after host");
        return -1;
    }

    if (slash != NULL && slash[1] != '\0') {
        errno = 0;
        n = strtol(slash + 1, &num, 10);
        if (errno != 0 || num == slash + 1 || *num != '\0' || n < 0
            || n > 65535)
        {
            snprintf(err, errlen, "bad database number");
            return -1;
        }
        t->db = (int) n;
    }

    return 0;
}


void
redis_target_free(redis_target_t *t)
{
    free(t->host);
    free(t->path);
    free(t->user);
    free(t->password);
    memset(t, 0, sizeof(*t));
}


const char *
redis_target_describe(const redis_target_t *t, char *buf, size_t size)
{
    if (t->path != NULL) {
        snprintf(buf, size, "unix:%s", t->path);
    } else if (strchr(t->host, ':') != NULL) {
        snprintf(buf, size, "[%s]:%d/%d", t->host, t->port, t->db);
    } else {
        snprintf(buf, size, "%s:%d/%d", t->host, t->port, t->db);
    }

    return buf;
}


redisContext *
redis_open(const redis_target_t *t, int sock_timeout_ms, char *err,
    size_t errlen)
{
    redisContext  *c;
    redisReply    *r;
    char           db[16];

    if (t->path != NULL) {
        c = redisConnectUnixWithTimeout(t->path,
                                        redis_tv(REDIS_CONNECT_TIMEOUT_MS));
    } else {
        c = redisConnectWithTimeout(t->host, t->port,
                                    redis_tv(REDIS_CONNECT_TIMEOUT_MS));
    }

    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    if (c->err) {
        snprintf(err, errlen, "%s", c->errstr);
        redisFree(c);
        return NULL;
    }

    if (redisSetTimeout(c, redis_tv(sock_timeout_ms)) != REDIS_OK) {
        snprintf(err, errlen, "cannot set socket timeout: %s", c->errstr);
        redisFree(c);
        return NULL;
    }

    /*
     * Notice a silently dead peer (NAT, failover) even when idle. TCP
     * only: on a unix socket it fails and hiredis would mark the whole
     * context as broken.
     */
    if (t->path == NULL && redisEnableKeepAlive(c) != REDIS_OK) {
        snprintf(err, errlen, "cannot enable keepalive: %s", c->errstr);
        redisFree(c);
        return NULL;
    }

    if (t->password != NULL) {
        if (t->user != NULL) {
            r = redisCommand(c, "AUTH %s %s", t->user, t->password);
        } else {
            r = redisCommand(c, "AUTH %s", t->password);
        }

        if (redis_reply_check(c, r, err, errlen) != 0) {
            if (r != NULL) {
                freeReplyObject(r);
            }
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }

    if (t->db != 0) {
        snprintf(db, sizeof(db), "%d", t->db);
        r = redisCommand(c, "SELECT %s", db);

        if (redis_reply_check(c, r, err, errlen) != 0) {
            if (r != NULL) {
                freeReplyObject(r);
            }
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }

    return c;
}


int
redis_reply_check(redisContext *c, redisReply *r, char *err, size_t errlen)
{
    if (r == NULL) {
        snprintf(err, errlen, "%s", c->err ? c->errstr : "no reply");
        return -1;
    }

    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%.*s", (int) r->len, r->str);
        return -1;
    }

    return 0;
}


static char *
redis_pct_decode(const char *s, size_t len)
{
    char    *out, hex[3];
    size_t   i, n;

    out = malloc(len + 1);
    if (out == NULL) {
        return NULL;
    }

    for (i = 0, n = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len
            && isxdigit((unsigned char) s[i + 1])
            && isxdigit((unsigned char) s[i + 2]))
        {
            hex[0] = s[i + 1];
            hex[1] = s[i + 2];
            hex[2] = '\0';
            out[n++] = (char) strtol(hex, NULL, 16);
            i += 2;
        } else {
            out[n++] = s[i];
        }
    }

    out[n] = '\0';
    return out;
}


static struct timeval
redis_tv(int ms)
{
    struct timeval  tv;

    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}
