/*
 * activity-worker: where Redis is and how to open a connection to it.
 */

#ifndef ACTIVITY_REDISCONN_H
#define ACTIVITY_REDISCONN_H

#include <stddef.h>

#include <hiredis/hiredis.h>


typedef struct {
    char  *host;        /* NULL for a unix socket */
    char  *path;        /* unix socket path, or NULL */
    char  *user;        /* ACL user for AUTH, or NULL */
    char  *password;    /* NULL: no AUTH */
    int    port;
    int    db;
} redis_target_t;


/*
 * Parse redis://[[user]:password@]host[:port][/db] (IPv6 hosts in
 * brackets; user and password may be %-encoded) or unix:/path/to/sock.
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
 * AUTH and SELECT as needed. Returns a usable context, or NULL with the
 * reason in err.
 */
redisContext *redis_open(const redis_target_t *t, int sock_timeout_ms,
    char *err, size_t errlen);

/*
 * Check one reply: returns 0 when it exists and is not an error reply,
 * otherwise -1 with the reason (context error or the server's message)
 * in err. Does not free the reply.
 */
int redis_reply_check(redisContext *c, redisReply *r, char *err,
    size_t errlen);


#endif /* ACTIVITY_REDISCONN_H */
