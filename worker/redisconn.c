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
#define REDIS_SENTINEL_PORT       26379


static int redis_parse_host(const char *p, const char *end,
    int default_port, char **host, int *port, char *err, size_t errlen);
static int redis_parse_db(const char *s, int *db, char *err, size_t errlen);
static int redis_ask_sentinel(const redis_target_t *t, const redis_node_t *s,
    char *host, size_t hostlen, int *port, char *err, size_t errlen);
static redisContext *redis_open_at(const redis_target_t *t, const char *host,
    int port, int sock_timeout_ms, char *err, size_t errlen);
static char *redis_pct_decode(const char *s, size_t len);
static struct timeval redis_tv(int ms);


int
redis_target_parse(redis_target_t *t, const char *url, char *err,
    size_t errlen)
{
    const char  *p, *at, *colon, *slash, *end, *comma, *name;
    char        *num;
    size_t       n, skip;

    memset(t, 0, sizeof(*t));

    if (strncmp(url, "unix:", 5) == 0) {
        if (url[5] != '/') {
            snprintf(err, errlen, "unix socket path must be absolute");
            return -1;
        }
        t->path = strdup(url + 5);
        return t->path ? 0 : -1;
    }

    if (strncmp(url, "redis+sentinel://", 17) == 0) {
        skip = 17;
    } else if (strncmp(url, "redis://", 8) == 0) {
        skip = 8;
    } else {
        snprintf(err, errlen, "expected redis://host[:port][/db],"
                 " redis+sentinel://host[:port][,host[:port]...]/MASTER[/db]"
                 " or unix:/path");
        return -1;
    }

    p = url + skip;
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

    if (skip == 8) {
        if (redis_parse_host(p, end, REDIS_DEFAULT_PORT, &t->host, &t->port,
                             err, errlen) != 0)
        {
            return -1;
        }

        if (slash != NULL && slash[1] != '\0'
            && redis_parse_db(slash + 1, &t->db, err, errlen) != 0)
        {
            return -1;
        }

        return 0;
    }

    /* redis+sentinel://: the sentinels, then /MASTER[/db] */

    if (slash == NULL || slash[1] == '\0' || slash[1] == '/') {
        snprintf(err, errlen, "missing master name: expected"
                 " redis+sentinel://host[:port][,host[:port]...]/MASTER");
        return -1;
    }

    name = slash + 1;
    num = strchr(name, '/');
    t->master_name = num ? strndup(name, (size_t) (num - name))
                         : strdup(name);
    if (t->master_name == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    if (num != NULL && num[1] != '\0'
        && redis_parse_db(num + 1, &t->db, err, errlen) != 0)
    {
        return -1;
    }

    for (n = 1, comma = p; (comma = memchr(comma, ',', (size_t) (end - comma)))
         != NULL; comma++)
    {
        n++;
    }

    t->sentinels = calloc(n, sizeof(redis_node_t));
    if (t->sentinels == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    for ( ;; ) {
        comma = memchr(p, ',', (size_t) (end - p));

        if (redis_parse_host(p, comma ? comma : end, REDIS_SENTINEL_PORT,
                             &t->sentinels[t->nsentinels].host,
                             &t->sentinels[t->nsentinels].port,
                             err, errlen) != 0)
        {
            return -1;
        }

        t->nsentinels++;

        if (comma == NULL) {
            break;
        }

        p = comma + 1;
    }

    return 0;
}


/* host[:port] (IPv6 in brackets) between p and end */
static int
redis_parse_host(const char *p, const char *end, int default_port,
    char **host, int *port, char *err, size_t errlen)
{
    const char  *hostend;
    char        *num;
    long         n;

    if (*p == '[') {
        hostend = memchr(p, ']', (size_t) (end - p));
        if (hostend == NULL) {
            snprintf(err, errlen, "unterminated [IPv6] host");
            return -1;
        }
        *host = strndup(p + 1, (size_t) (hostend - p - 1));
        p = hostend + 1;
    } else {
        hostend = memchr(p, ':', (size_t) (end - p));
        if (hostend == NULL) {
            hostend = end;
        }
        *host = strndup(p, (size_t) (hostend - p));
        p = hostend;
    }

    if (*host == NULL || (*host)[0] == '\0') {
        snprintf(err, errlen, "missing host");
        return -1;
    }

    *port = default_port;

    if (p < end && *p == ':') {
        errno = 0;
        n = strtol(p + 1, &num, 10);
        if (errno != 0 || num == p + 1 || num != end || n < 1 || n > 65535) {
            snprintf(err, errlen, "bad port");
            return -1;
        }
        *port = (int) n;
    } else if (p != end) {
        snprintf(err, errlen, "unexpected text after host");
        return -1;
    }

    return 0;
}


static int
redis_parse_db(const char *s, int *db, char *err, size_t errlen)
{
    char  *num;
    long   n;

    errno = 0;
    n = strtol(s, &num, 10);
    if (errno != 0 || num == s || *num != '\0' || n < 0 || n > 65535) {
        snprintf(err, errlen, "bad database number");
        return -1;
    }

    *db = (int) n;
    return 0;
}


void
redis_target_free(redis_target_t *t)
{
    free(t->host);
    free(t->path);
    free(t->user);
    free(t->password);
    free(t->master_name);

    for (size_t i = 0; i < t->nsentinels; i++) {
        free(t->sentinels[i].host);
    }
    free(t->sentinels);

    memset(t, 0, sizeof(*t));
}


const char *
redis_target_describe(const redis_target_t *t, char *buf, size_t size)
{
    size_t  i, len;

    if (t->nsentinels > 0) {
        /* "sentinel:127.0.0.1:26379,127.0.0.1:26380/mymaster/0" */
        len = (size_t) snprintf(buf, size, "sentinel:");
        for (i = 0; i < t->nsentinels && len < size; i++) {
            len += (size_t) snprintf(buf + len, size - len,
                                     strchr(t->sentinels[i].host, ':')
                                     ? "%s[%s]:%d" : "%s%s:%d",
                                     i ? "," : "", t->sentinels[i].host,
                                     t->sentinels[i].port);
        }
        if (len < size) {
            snprintf(buf + len, size - len, "/%s/%d", t->master_name, t->db);
        }
    } else if (t->path != NULL) {
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
    char           host[64], e[256];
    int            port;
    size_t         i;

    if (t->nsentinels == 0) {
        return redis_open_at(t, t->host, t->port, sock_timeout_ms, err,
                             errlen);
    }

    /*
     * Sentinels in turn until one names the master; it is asked afresh
     * on every (re)connect, which is how a failover is followed.
     */
    snprintf(err, errlen, "no sentinel answered");

    for (i = 0; i < t->nsentinels; i++) {
        if (redis_ask_sentinel(t, &t->sentinels[i], host, sizeof(host),
                               &port, e, sizeof(e)) != 0)
        {
            snprintf(err, errlen, "sentinel %s:%d: %s",
                     t->sentinels[i].host, t->sentinels[i].port, e);
            continue;
        }

        c = redis_open_at(t, host, port, sock_timeout_ms, e, sizeof(e));
        if (c == NULL) {
            snprintf(err, errlen, "master %s:%d: %s", host, port, e);
            return NULL;
        }

        /* a sentinel's view may be stale: the server must agree */
        r = redisCommand(c, "ROLE");

        if (redis_reply_check(c, r, e, sizeof(e)) != 0
            || r->type != REDIS_REPLY_ARRAY || r->elements == 0
            || r->element[0]->type != REDIS_REPLY_STRING
            || strcmp(r->element[0]->str, "master") != 0)
        {
            if (r != NULL && r->type != REDIS_REPLY_ERROR) {
                snprintf(e, sizeof(e), "not a master (yet) by ROLE");
            }
            snprintf(err, errlen, "master %s:%d: %s", host, port, e);
            if (r != NULL) {
                freeReplyObject(r);
            }
            redisFree(c);
            return NULL;
        }

        freeReplyObject(r);
        return c;
    }

    return NULL;
}


/* SENTINEL get-master-addr-by-name on one sentinel: 0, or -1 and err */
static int
redis_ask_sentinel(const redis_target_t *t, const redis_node_t *s,
    char *host, size_t hostlen, int *port, char *err, size_t errlen)
{
    redisContext  *c;
    redisReply    *r;
    long           n;
    int            rc;

    c = redisConnectWithTimeout(s->host, s->port,
                                redis_tv(REDIS_CONNECT_TIMEOUT_MS));
    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    if (c->err != 0
        || redisSetTimeout(c, redis_tv(REDIS_CONNECT_TIMEOUT_MS)) != REDIS_OK)
    {
        snprintf(err, errlen, "%s", c->errstr);
        redisFree(c);
        return -1;
    }

    r = redisCommand(c, "SENTINEL get-master-addr-by-name %s",
                     t->master_name);

    rc = -1;

    if (redis_reply_check(c, r, err, errlen) != 0) {
        /* err says why */
    } else if (r->type == REDIS_REPLY_NIL) {
        snprintf(err, errlen, "does not know the master");
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2
               || r->element[0]->type != REDIS_REPLY_STRING
               || r->element[1]->type != REDIS_REPLY_STRING
               || r->element[0]->len >= hostlen)
    {
        snprintf(err, errlen, "unexpected reply");
    } else {
        n = strtol(r->element[1]->str, NULL, 10);
        if (n < 1 || n > 65535) {
            snprintf(err, errlen, "unexpected reply");
        } else {
            memcpy(host, r->element[0]->str, r->element[0]->len);
            host[r->element[0]->len] = '\0';
            *port = (int) n;
            rc = 0;
        }
    }

    if (r != NULL) {
        freeReplyObject(r);
    }
    redisFree(c);
    return rc;
}


static redisContext *
redis_open_at(const redis_target_t *t, const char *host, int port,
    int sock_timeout_ms, char *err, size_t errlen)
{
    redisContext  *c;
    redisReply    *r;
    char           db[16];

    if (t->path != NULL) {
        c = redisConnectUnixWithTimeout(t->path,
                                        redis_tv(REDIS_CONNECT_TIMEOUT_MS));
    } else {
        c = redisConnectWithTimeout(host, port,
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


const char *
redis_peer(const redisContext *c, char *buf, size_t size)
{
    if (c->connection_type == REDIS_CONN_UNIX) {
        snprintf(buf, size, "unix:%s", c->unix_sock.path);
    } else {
        snprintf(buf, size, strchr(c->tcp.host, ':') ? "[%s]:%d" : "%s:%d",
                 c->tcp.host, c->tcp.port);
    }

    return buf;
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
