/*
 * activity-worker: where Redis is and how to open a connection to it.
 */

#ifndef ACTIVITY_REDISCONN_H
#define ACTIVITY_REDISCONN_H

#include <stddef.h>

#include <hiredis/hiredis.h>


typedef struct {
    char  *host;
    int    port;
} redis_node_t;


typedef struct {
    char  *host;        /* NULL for a unix socket or sentinels */
    char  *path;        /* unix socket path, or NULL */
    char  *user;        /* ACL user for AUTH, or NULL */
    char  *password;    /* NULL: no AUTH */
    int    port;
    int    db;

    /* redis+sentinel://: ask these where master_name is */
    redis_node_t  *sentinels;
    size_t         nsentinels;
    char          *master_name;
} redis_target_t;


/*
 * Parse redis://[[user]:password@]host[:port][/db] (IPv6 hosts in
 * brackets; user and password may be %-encoded), unix:/path/to/sock, or
 * redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]
 * (sentinel port 26379 by default; the password is the master's).
 * Returns 0, or -1 with a reason in err.
 */
int redis_target_parse(redis_target_t *t, const char *url, char *err,
    size_t errlen);

void redis_target_free(redis_target_t *t);

/* "127.0.0.1:6379/0" or "unix:/path": never the password, for logs. */
const char *redis_target_describe(const redis_target_t *t, char *buf,
    size_t size);

/*
 * Connect (connect timeout), set a socket timeout of sock_timeout_ms,
 * AUTH and SELECT as needed. With sentinels: ask them in turn where the
 * master is, connect there, and check that ROLE says master. Returns a
 * usable context, or NULL with the reason in err.
 */
redisContext *redis_open(const redis_target_t *t, int sock_timeout_ms,
    char *err, size_t errlen);

/* "127.0.0.1:6379": the server a context is connected to, for logs. */
const char *redis_peer(const redisContext *c, char *buf, size_t size);

/*
 * Check one reply: returns 0 when it exists and is not an error reply,
 * otherwise -1 with the reason (context error or the server's message)
 * in err. Does not free the reply.
 */
int redis_reply_check(redisContext *c, redisReply *r, char *err,
    size_t errlen);


#endif /* ACTIVITY_REDISCONN_H */
