/*
 * activity-worker: the HTTP listener (/metrics, /healthz, /api/...).
 */

#ifndef ACTIVITY_HTTP_H
#define ACTIVITY_HTTP_H

#include <stddef.h>
#include <sys/socket.h>

#include "redisconn.h"
#include "settings.h"


typedef struct http_s  http_t;


/*
 * Parse "ADDR:PORT" ("127.0.0.1:9187", "[::1]:9187", "localhost:9187";
 * "*:9187" or ":9187" for every IPv4 address). Returns 0, or -1 with a
 * reason in err.
 */
int http_parse_listen(const char *s, struct sockaddr_storage *ss,
    socklen_t *len, char *err, size_t errlen);

/*
 * Start listening on settings->listen, served by a thread of its own
 * that uses its own Redis and PostgreSQL connections (never the
 * consumer's). settings and target must outlive it. Returns NULL with
 * the reason in err.
 */
http_t *http_start(const settings_t *settings, const redis_target_t *target,
    char *err, size_t errlen);

/* Stop serving (waits for the thread) and close its connections. */
void http_stop(http_t *h);


#endif /* ACTIVITY_HTTP_H */
