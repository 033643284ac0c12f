
/*
 * hiredis's asynchronous API on nginx's event loop.
 *
 * The hiredis socket is wrapped in an nginx connection whose read and write
 * events call redisAsyncHandleRead/Write; hiredis asks for interest changes
 * through the ev.addRead/delRead/addWrite/delWrite/cleanup hooks.  hiredis
 * 0.14 has no timeouts of its own, so connecting is bounded by an nginx
 * timer, and a lost connection is retried with exponential backoff.
 *
 * The backoff has jitter and keeps growing while the trouble lasts: it
 * starts over only once a connection has been healthy (its owner says so
 * with ngx_http_activity_redis_healthy) for a while, so a Redis that
 * accepts connections and then refuses every command (WRONGTYPE, NOAUTH,
 * READONLY, OOM) is not hammered.  Trouble is logged once when it starts
 * or changes kind, and once when the connection is healthy again.
 *
 * With a redis+sentinel:// URL every connection starts by asking the
 * sentinels in turn, each on its own short connection bounded by the
 * connect timer, "SENTINEL get-master-addr-by-name NAME"; the address
 * named (an IP address: hiredis would resolve a host name blockingly) is
 * connected to and must answer ROLE with "master" before its owner gets
 * it.  Any later trouble (a dropped connection, READONLY, a timeout)
 * ends in a reconnect, which asks the sentinels again: that is how a
 * failover is followed.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include "ngx_http_activity_redis.h"


#define NGX_HTTP_ACTIVITY_REDIS_CONNECT_TIMEOUT   3000
#define NGX_HTTP_ACTIVITY_REDIS_BACKOFF_MIN       100
#define NGX_HTTP_ACTIVITY_REDIS_BACKOFF_MAX       5000

/* a connection healthy this long resets the backoff */
#define NGX_HTTP_ACTIVITY_REDIS_HEALTHY           10000

/* reads per read event before the rest waits for the next loop iteration */
#define NGX_HTTP_ACTIVITY_REDIS_READS             64


static ngx_int_t ngx_http_activity_redis_open(ngx_http_activity_redis_t *rd,
    char *host, in_port_t port);
static void ngx_http_activity_redis_ask(ngx_http_activity_redis_t *rd);
static void ngx_http_activity_redis_next(ngx_http_activity_redis_t *rd);
static void ngx_http_activity_redis_failed(ngx_http_activity_redis_t *rd,
    const char *text);
static void ngx_http_activity_redis_about(ngx_http_activity_redis_t *rd,
    const char *who, const char *text);
static void ngx_http_activity_redis_step_handler(ngx_event_t *ev);
static void ngx_http_activity_redis_sentinel_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_activity_redis_role_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_activity_redis_schedule(ngx_http_activity_redis_t *rd);
static void ngx_http_activity_redis_retry_handler(ngx_event_t *ev);
static void ngx_http_activity_redis_connect_timeout(ngx_event_t *ev);
static void ngx_http_activity_redis_trouble(ngx_http_activity_redis_t *rd,
    ngx_uint_t kind, const char *what, const char *detail);
static void ngx_http_activity_redis_ping_handler(ngx_event_t *ev);
static void ngx_http_activity_redis_later(ngx_http_activity_redis_t *rd);
static void ngx_http_activity_redis_on_connect(const redisAsyncContext *ac,
    int status);
static void ngx_http_activity_redis_on_disconnect(
    const redisAsyncContext *ac, int status);
static void ngx_http_activity_redis_setup_reply(redisAsyncContext *ac,
    void *r, void *privdata);
static void ngx_http_activity_redis_read_handler(ngx_event_t *ev);
static void ngx_http_activity_redis_write_handler(ngx_event_t *ev);
static void ngx_http_activity_redis_add_read(void *privdata);
static void ngx_http_activity_redis_del_read(void *privdata);
static void ngx_http_activity_redis_add_write(void *privdata);
static void ngx_http_activity_redis_del_write(void *privdata);
static void ngx_http_activity_redis_cleanup(void *privdata);


void
ngx_http_activity_redis_init(ngx_http_activity_redis_t *rd,
    ngx_http_activity_redis_addr_t *addr, ngx_log_t *log, const char *role)
{
    ngx_memzero(rd, sizeof(ngx_http_activity_redis_t));

    rd->addr = addr;
    rd->log = log;
    rd->role = role;
    rd->backoff = NGX_HTTP_ACTIVITY_REDIS_BACKOFF_MIN;

    /* cancelable: an exiting worker never waits for a reconnect */

    rd->retry.handler = ngx_http_activity_redis_retry_handler;
    rd->retry.data = rd;
    rd->retry.log = log;
    rd->retry.cancelable = 1;

    rd->connect_timer.handler = ngx_http_activity_redis_connect_timeout;
    rd->connect_timer.data = rd;
    rd->connect_timer.log = log;
    rd->connect_timer.cancelable = 1;

    rd->ping.handler = ngx_http_activity_redis_ping_handler;
    rd->ping.data = rd;
    rd->ping.log = log;
    rd->ping.cancelable = 1;

    rd->step.handler = ngx_http_activity_redis_step_handler;
    rd->step.data = rd;
    rd->step.log = log;
}


void
ngx_http_activity_redis_connect(ngx_http_activity_redis_t *rd)
{
    ngx_http_activity_redis_addr_t  *addr;

    addr = rd->addr;

    if (addr->sentinels) {

        /* where the master is now: the last one may have failed over */

        rd->asked = 0;
        ngx_http_activity_redis_ask(rd);
        return;
    }

    rd->phase = NGX_HTTP_ACTIVITY_REDIS_DIRECT;

    if (ngx_http_activity_redis_open(rd,
                                     addr->unix_path.len
                                     ? NULL : (char *) addr->host.data,
                                     addr->port)
        != NGX_OK)
    {
        ngx_http_activity_redis_failed(rd, (char *) rd->detail);
    }
}


/* starts a connection to host:port (NULL: the URL's unix socket) */

static ngx_int_t
ngx_http_activity_redis_open(ngx_http_activity_redis_t *rd, char *host,
    in_port_t port)
{
    ngx_connection_t   *c;
    redisAsyncContext  *ac;

    if (host == NULL) {
        ac = redisAsyncConnectUnix((char *) rd->addr->unix_path.data);

    } else {
        ac = redisAsyncConnect(host, port);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                      "activity: redisAsyncConnect() failed");
        ngx_cpystrn(rd->detail, (u_char *) "out of memory",
                    sizeof(rd->detail));
        return NGX_ERROR;
    }

    if (ac->err) {
        ngx_cpystrn(rd->detail, (u_char *) ac->errstr, sizeof(rd->detail));
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    c = ngx_get_connection(ac->c.fd, rd->log);
    if (c == NULL) {
        ngx_cpystrn(rd->detail, (u_char *) "no free connection",
                    sizeof(rd->detail));
        redisAsyncFree(ac);
        return NGX_ERROR;
    }

    c->data = rd;
    c->read->handler = ngx_http_activity_redis_read_handler;
    c->write->handler = ngx_http_activity_redis_write_handler;
    c->read->log = rd->log;
    c->write->log = rd->log;

    rd->conn = c;
    rd->ac = ac;

    ac->data = rd;
    ac->ev.data = rd;
    ac->ev.addRead = ngx_http_activity_redis_add_read;
    ac->ev.delRead = ngx_http_activity_redis_del_read;
    ac->ev.addWrite = ngx_http_activity_redis_add_write;
    ac->ev.delWrite = ngx_http_activity_redis_del_write;
    ac->ev.cleanup = ngx_http_activity_redis_cleanup;

    /*
     * the hooks must be in place first: in hiredis 0.14 setting the
     * connect callback asks for the write event that reports the connect
     */

    redisAsyncSetConnectCallback(ac, ngx_http_activity_redis_on_connect);
    redisAsyncSetDisconnectCallback(ac,
                                    ngx_http_activity_redis_on_disconnect);

    ngx_add_timer(&rd->connect_timer, NGX_HTTP_ACTIVITY_REDIS_CONNECT_TIMEOUT);

    return NGX_OK;
}


/* asks the current sentinel where the master is */

static void
ngx_http_activity_redis_ask(ngx_http_activity_redis_t *rd)
{
    ngx_http_activity_redis_node_t  *node;

    node = rd->addr->sentinels->elts;
    node += rd->sentinel;

    rd->phase = NGX_HTTP_ACTIVITY_REDIS_SENTINEL;
    rd->found = 0;

    if (ngx_http_activity_redis_open(rd, (char *) node->host.data,
                                     node->port)
        != NGX_OK)
    {
        ngx_http_activity_redis_failed(rd, (char *) rd->detail);
    }
}


/*
 * The current sentinel named no master (rd->detail says why): the next
 * one is asked at once; when none did in this round, the trouble is
 * logged (once) and the round starts over after the backoff.  A sentinel
 * that answered is asked first next time.
 */

static void
ngx_http_activity_redis_next(ngx_http_activity_redis_t *rd)
{
    ngx_uint_t  n;

    n = rd->addr->sentinels->nelts;

    rd->sentinel = (rd->sentinel + 1) % n;

    if (++rd->asked < n) {
        if (!rd->step.posted) {
            ngx_post_event(&rd->step, &ngx_posted_events);
        }

        return;
    }

    rd->asked = 0;

    ngx_http_activity_redis_trouble(rd, NGX_HTTP_ACTIVITY_REDIS_NO_MASTER,
                                    "no sentinel named the master, the last",
                                    (char *) rd->detail);
    ngx_http_activity_redis_schedule(rd);
}


/* a connection could not be made (text says why): what comes next */

static void
ngx_http_activity_redis_failed(ngx_http_activity_redis_t *rd,
    const char *text)
{
    switch (rd->phase) {

    case NGX_HTTP_ACTIVITY_REDIS_SENTINEL:
        ngx_http_activity_redis_about(rd, "sentinel", text);
        ngx_http_activity_redis_next(rd);
        return;

    case NGX_HTTP_ACTIVITY_REDIS_MASTER:
        ngx_http_activity_redis_about(rd, "master", text);
        ngx_http_activity_redis_trouble(rd,
                                        NGX_HTTP_ACTIVITY_REDIS_UNREACHABLE,
                                        "cannot connect",
                                        (char *) rd->detail);
        break;

    default:
        ngx_http_activity_redis_trouble(rd,
                                        NGX_HTTP_ACTIVITY_REDIS_UNREACHABLE,
                                        "cannot connect", text);
    }

    ngx_http_activity_redis_schedule(rd);
}


/* rd->detail = "sentinel 127.0.0.1:26379: text" (or "master ...") */

static void
ngx_http_activity_redis_about(ngx_http_activity_redis_t *rd,
    const char *who, const char *text)
{
    u_char                          *p;
    u_char                           tmp[sizeof(rd->detail)];
    in_port_t                        port;
    ngx_http_activity_redis_node_t  *node;

    ngx_cpystrn(tmp, (u_char *) (text ? text : "unknown error"),
                sizeof(tmp));

    if (rd->phase == NGX_HTTP_ACTIVITY_REDIS_SENTINEL) {
        node = rd->addr->sentinels->elts;
        node += rd->sentinel;
        p = node->host.data;
        port = node->port;

    } else {
        p = rd->master_host;
        port = rd->master_port;
    }

    p = ngx_snprintf(rd->detail, sizeof(rd->detail) - 1,
                     ngx_strchr(p, ':') ? "%s [%s]:%d: %s" : "%s %s:%d: %s",
                     who, p, (int) port, tmp);
    *p = '\0';
}


/* the next step of discovery, once hiredis let go of the last context */

static void
ngx_http_activity_redis_step_handler(ngx_event_t *ev)
{
    ngx_http_activity_redis_t  *rd = ev->data;

    if (rd->ac || rd->closing || ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    if (rd->phase == NGX_HTTP_ACTIVITY_REDIS_SENTINEL && rd->found) {
        rd->found = 0;
        rd->phase = NGX_HTTP_ACTIVITY_REDIS_MASTER;

        if (ngx_http_activity_redis_open(rd, (char *) rd->master_host,
                                         rd->master_port)
            != NGX_OK)
        {
            ngx_http_activity_redis_failed(rd, (char *) rd->detail);
        }

        return;
    }

    ngx_http_activity_redis_ask(rd);
}


/* "SENTINEL get-master-addr-by-name": ["ip", "port"], or nil */

static void
ngx_http_activity_redis_sentinel_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_redis_t  *rd = ac->data;

    u_char       buf[sizeof(struct in6_addr)];
    ngx_int_t    port;
    const char  *text;
    redisReply  *reply = r, *host;

    if (reply == NULL) {
        return;
    }

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    text = "unexpected reply";

    if (reply->type == REDIS_REPLY_NIL) {
        text = "does not know the master";

    } else if (reply->type == REDIS_REPLY_ERROR) {
        text = reply->str;

    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
               && reply->element[0]->type == REDIS_REPLY_STRING
               && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        host = reply->element[0];
        port = ngx_atoi((u_char *) reply->element[1]->str,
                        reply->element[1]->len);

        text = "named a host name, not an IP address";

        if (port <= 0 || port > 65535) {
            text = "named no valid port";

        } else if ((size_t) host->len < sizeof(rd->master_host)) {
            ngx_memcpy(rd->master_host, host->str, host->len);
            rd->master_host[host->len] = '\0';

            /* hiredis would resolve a host name blockingly */

            if (inet_pton(AF_INET, (char *) rd->master_host, buf) == 1
                || inet_pton(AF_INET6, (char *) rd->master_host, buf) == 1)
            {
                rd->master_port = (in_port_t) port;
                rd->found = 1;
                ngx_http_activity_redis_drop(rd);
                return;
            }
        }
    }

    ngx_http_activity_redis_about(rd, "sentinel", text);
    rd->found = 0;
    ngx_http_activity_redis_drop(rd);
}


/* the master named by a sentinel must say so itself */

static void
ngx_http_activity_redis_role_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_redis_t  *rd = ac->data;

    u_char      *p;
    u_char       text[NGX_SOCKADDR_STRLEN];
    redisReply  *reply = r, *role;

    if (reply == NULL) {
        return;
    }

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_http_activity_redis_error(rd, NGX_HTTP_ACTIVITY_REDIS_REFUSED,
                                      "ROLE refused", reply->str);
        return;
    }

    role = (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0)
           ? reply->element[0] : NULL;

    if (role == NULL || role->type != REDIS_REPLY_STRING
        || role->len != 6 || ngx_strncmp(role->str, "master", 6) != 0)
    {
        ngx_http_activity_redis_about(rd, "master",
                                      "is not a master (yet) by ROLE");
        ngx_http_activity_redis_error(rd, NGX_HTTP_ACTIVITY_REDIS_NOT_MASTER,
                                      "the sentinels named a replica",
                                      (char *) rd->detail);
        return;
    }

    /* one line per master: the first, and each one after a failover */

    /* an IPv6 address in brackets: "[::1]:6379", not "::1:6379" */

    p = ngx_snprintf(text, sizeof(text),
                     ngx_strchr(rd->master_host, ':') ? "[%s]:%d" : "%s:%d",
                     rd->master_host, (int) rd->master_port);

    if (rd->master.len != (size_t) (p - text)
        || ngx_strncmp(rd->master.data, text, rd->master.len) != 0)
    {
        rd->master.len = p - text;
        rd->master.data = rd->master_text;
        ngx_memcpy(rd->master_text, text, rd->master.len);

        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "activity: %s on redis \"%V\" uses the master at %V",
                      rd->role, &rd->addr->url, &rd->master);

        /* for activity_status; the text fits: an address and a port */

        if (rd->stat_master) {
            ngx_cpystrn(rd->stat_master, rd->master_text,
                        ngx_min(rd->master.len + 1,
                                NGX_HTTP_ACTIVITY_MASTER_LEN));
        }
    }

    rd->ready = 1;

    /* writes and drops wait until hiredis is done with this reply */

    if (rd->on_ready) {
        rd->in_connect = 1;
        rd->on_ready(rd);
        rd->in_connect = 0;
    }
}


/* writes what hiredis has buffered now, rather than a loop turn later */

void
ngx_http_activity_redis_send(ngx_http_activity_redis_t *rd)
{
    if (rd->ac == NULL || !rd->ready) {
        return;
    }

    /*
     * inside the connect callback hiredis still uses the context after
     * the callback returns: a write that failed here would free it first
     */

    if (rd->in_connect) {
        rd->write_later = 1;
        return;
    }

    redisAsyncHandleWrite(rd->ac);
}


/*
 * Gives up the connection (a protocol-level error); pending callbacks see
 * NULL replies, and the disconnect callback schedules a reconnect.  Safe
 * inside a reply callback: hiredis then frees after the callback returns.
 */

void
ngx_http_activity_redis_drop(ngx_http_activity_redis_t *rd)
{
    if (rd->ac == NULL) {
        return;
    }

    if (rd->in_connect) {
        rd->drop_later = 1;
        return;
    }

    redisAsyncFree(rd->ac);
}


/* a command failed for good on this connection: log (once) and reconnect */

void
ngx_http_activity_redis_error(ngx_http_activity_redis_t *rd, ngx_uint_t kind,
    const char *what, const char *detail)
{
    ngx_http_activity_redis_trouble(rd, kind, what, detail);
    ngx_http_activity_redis_drop(rd);
}


/*
 * The owner saw the connection work (a command answered as expected):
 * the outage, if any, is over, and the backoff may start over later.
 */

void
ngx_http_activity_redis_healthy(ngx_http_activity_redis_t *rd)
{
    if (!rd->healthy) {
        rd->healthy = 1;
        rd->healthy_since = ngx_current_msec;
    }

    if (rd->stat_up) {
        *rd->stat_up = 1;
    }

    if (rd->trouble) {
        rd->trouble = 0;
        rd->trouble_code = 0;

        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "activity: %s is back on redis \"%V\"",
                      rd->role, &rd->addr->url);
    }
}


/*
 * A subscribed connection only listens: a flow that a NAT or a load
 * balancer dropped silently would never be noticed.  A PING every
 * interval, and no byte read within the timeout, means the connection is
 * gone.  In subscribe mode Redis answers ["pong",""], which hiredis 0.14
 * passes to no callback: the PING is appended without one, and any read
 * counts as the answer.
 */

void
ngx_http_activity_redis_start_ping(ngx_http_activity_redis_t *rd)
{
    rd->pinging = 0;

    if (rd->ping_interval == 0) {
        return;
    }

    if (rd->ping.timer_set) {
        ngx_del_timer(&rd->ping);
    }

    ngx_add_timer(&rd->ping, rd->ping_interval);
}


void
ngx_http_activity_redis_close(ngx_http_activity_redis_t *rd)
{
    rd->closing = 1;

    if (rd->retry.timer_set) {
        ngx_del_timer(&rd->retry);
    }

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (rd->ping.timer_set) {
        ngx_del_timer(&rd->ping);
    }

    if (rd->step.posted) {
        ngx_delete_posted_event(&rd->step);
    }

    if (rd->ac) {
        redisAsyncFree(rd->ac);
    }
}


static void
ngx_http_activity_redis_schedule(ngx_http_activity_redis_t *rd)
{
    ngx_msec_t  delay;

    if (rd->closing || ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    /* only a connection that worked for a while starts the backoff over */

    if (rd->healthy
        && ngx_current_msec - rd->healthy_since
           >= NGX_HTTP_ACTIVITY_REDIS_HEALTHY)
    {
        rd->backoff = NGX_HTTP_ACTIVITY_REDIS_BACKOFF_MIN;
    }

    rd->healthy = 0;

    /* jitter: workers and instances that lost Redis together spread out */

    delay = rd->backoff / 2 + (ngx_msec_t) ngx_random() % (rd->backoff / 2 + 1);

    if (!rd->retry.timer_set) {
        ngx_add_timer(&rd->retry, delay);
    }

    rd->backoff = ngx_min(rd->backoff * 2,
                          NGX_HTTP_ACTIVITY_REDIS_BACKOFF_MAX);
}


static void
ngx_http_activity_redis_retry_handler(ngx_event_t *ev)
{
    ngx_http_activity_redis_t  *rd = ev->data;

    if (rd->ac == NULL && !rd->closing) {
        if (rd->stat_reconnects) {
            (void) ngx_atomic_fetch_add(rd->stat_reconnects, 1);
        }

        ngx_http_activity_redis_connect(rd);
    }
}


static void
ngx_http_activity_redis_connect_timeout(ngx_event_t *ev)
{
    ngx_http_activity_redis_t  *rd = ev->data;

    if (rd->ac == NULL || rd->ready) {
        return;
    }

    if (!(rd->ac->c.flags & REDIS_CONNECTED)) {

        /* not connected yet: hiredis calls no disconnect callback */

        redisAsyncFree(rd->ac);
        ngx_http_activity_redis_failed(rd, "connection timed out");
        return;
    }

    /* connected, no answer to a question: the disconnect callback goes on */

    if (rd->phase == NGX_HTTP_ACTIVITY_REDIS_SENTINEL) {
        ngx_http_activity_redis_about(rd, "sentinel", "no answer in time");
        rd->found = 0;

    } else {
        ngx_http_activity_redis_about(rd, "master", "no answer to ROLE");
        ngx_http_activity_redis_trouble(rd, NGX_HTTP_ACTIVITY_REDIS_TIMEOUT,
                                        "cannot connect",
                                        (char *) rd->detail);
    }

    redisAsyncFree(rd->ac);
}


/*
 * Logged once when trouble starts, and again only when it changes kind
 * (or Redis refuses with another error code): never once per attempt.
 */

static void
ngx_http_activity_redis_trouble(ngx_http_activity_redis_t *rd,
    ngx_uint_t kind, const char *what, const char *detail)
{
    size_t      len;
    ngx_uint_t  code;

    code = 0;

    if (kind == NGX_HTTP_ACTIVITY_REDIS_REFUSED && detail) {

        /* the error code: "WRONGTYPE", "NOAUTH", "READONLY", "OOM", ... */

        len = strcspn(detail, " ");
        code = ngx_hash_key((u_char *) detail, len) + 1;
    }

    if (rd->stat_up) {
        *rd->stat_up = 0;
    }

    if (rd->trouble == kind && rd->trouble_code == code) {
        return;
    }

    rd->trouble = kind;
    rd->trouble_code = code;

    ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                  "activity: %s on redis \"%V\": %s: %s; retrying with "
                  "backoff", rd->role, &rd->addr->url, what,
                  detail ? detail : "unknown error");
}


static void
ngx_http_activity_redis_on_connect(const redisAsyncContext *ac, int status)
{
    ngx_http_activity_redis_t  *rd = ac->data;

    redisAsyncContext  *c;

    if (rd->connect_timer.timer_set) {
        ngx_del_timer(&rd->connect_timer);
    }

    if (status != REDIS_OK) {

        /* hiredis frees the context when this callback returns */

        ngx_http_activity_redis_failed(rd, ac->errstr);
        return;
    }

    c = (redisAsyncContext *) ac;

    /* a peer that vanished without a word is found out by the kernel too */

    if (rd->addr->unix_path.len == 0
        && redisEnableKeepAlive(&c->c) != REDIS_OK)
    {
        ngx_log_error(NGX_LOG_WARN, rd->log, ngx_socket_errno,
                      "activity: cannot enable TCP keepalive on the %s "
                      "connection to redis", rd->role);
        c->c.err = 0;
    }

    if (rd->phase == NGX_HTTP_ACTIVITY_REDIS_SENTINEL) {

        /* the connect timer bounds the answer too */

        if (redisAsyncCommand(c, ngx_http_activity_redis_sentinel_reply, NULL,
                              "SENTINEL get-master-addr-by-name %b",
                              rd->addr->master_name.data,
                              rd->addr->master_name.len)
            != REDIS_OK)
        {
            ngx_http_activity_redis_about(rd, "sentinel",
                                          "cannot send the question");
            rd->drop_later = 1;
        }

        ngx_add_timer(&rd->connect_timer,
                      NGX_HTTP_ACTIVITY_REDIS_CONNECT_TIMEOUT);
        return;
    }

    /* pipelined ahead of everything else on this connection */

    if (rd->addr->password.len) {
        if (rd->addr->username.len) {
            redisAsyncCommand(c, ngx_http_activity_redis_setup_reply,
                              (void *) "AUTH refused", "AUTH %b %b",
                              rd->addr->username.data, rd->addr->username.len,
                              rd->addr->password.data,
                              rd->addr->password.len);

        } else {
            redisAsyncCommand(c, ngx_http_activity_redis_setup_reply,
                              (void *) "AUTH refused", "AUTH %b",
                              rd->addr->password.data,
                              rd->addr->password.len);
        }
    }

    if (rd->addr->db >= 0) {
        redisAsyncCommand(c, ngx_http_activity_redis_setup_reply,
                          (void *) "SELECT refused", "SELECT %d",
                          (int) rd->addr->db);
    }

    if (rd->phase == NGX_HTTP_ACTIVITY_REDIS_MASTER) {

        /* a sentinel's view may be stale: the server must agree */

        if (redisAsyncCommand(c, ngx_http_activity_redis_role_reply, NULL,
                              "ROLE")
            != REDIS_OK)
        {
            rd->drop_later = 1;
        }

        ngx_add_timer(&rd->connect_timer,
                      NGX_HTTP_ACTIVITY_REDIS_CONNECT_TIMEOUT);
        return;
    }

    rd->ready = 1;

    /* the owner says when the connection is healthy: it knows its replies */

    if (rd->on_ready) {
        rd->in_connect = 1;
        rd->on_ready(rd);
        rd->in_connect = 0;
    }
}


static void
ngx_http_activity_redis_on_disconnect(const redisAsyncContext *ac,
    int status)
{
    ngx_http_activity_redis_t  *rd = ac->data;

    rd->ready = 0;
    rd->ac = NULL;
    rd->pinging = 0;

    if (rd->stat_up) {
        *rd->stat_up = 0;
    }

    if (rd->ping.timer_set) {
        ngx_del_timer(&rd->ping);
    }

    if (rd->closing) {
        return;
    }

    if (rd->phase == NGX_HTTP_ACTIVITY_REDIS_SENTINEL) {

        /* a sentinel is let go once it answered; the step goes on */

        if (rd->found) {
            if (!rd->step.posted) {
                ngx_post_event(&rd->step, &ngx_posted_events);
            }

            return;
        }

        if (status != REDIS_OK) {
            ngx_http_activity_redis_about(rd, "sentinel", ac->errstr);
        }

        ngx_http_activity_redis_next(rd);
        return;
    }

    /* a drop of ours (status REDIS_OK) was logged by whoever dropped */

    if (status != REDIS_OK) {
        if (rd->phase == NGX_HTTP_ACTIVITY_REDIS_MASTER) {
            ngx_http_activity_redis_about(rd, "master", ac->errstr);
        }

        ngx_http_activity_redis_trouble(rd, NGX_HTTP_ACTIVITY_REDIS_UNREACHABLE,
                                        "lost the connection",
                                        rd->phase
                                        == NGX_HTTP_ACTIVITY_REDIS_MASTER
                                        ? (char *) rd->detail : ac->errstr);
    }

    if (rd->on_down) {
        rd->on_down(rd);
    }

    ngx_http_activity_redis_schedule(rd);
}


static void
ngx_http_activity_redis_setup_reply(redisAsyncContext *ac, void *r,
    void *privdata)
{
    ngx_http_activity_redis_t  *rd = ac->data;
    redisReply                 *reply = r;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
        return;
    }

    ngx_http_activity_redis_error(rd, NGX_HTTP_ACTIVITY_REDIS_REFUSED,
                                  (char *) privdata, reply->str);
}


static void
ngx_http_activity_redis_ping_handler(ngx_event_t *ev)
{
    ngx_http_activity_redis_t  *rd = ev->data;

    static const char  ping[] = "*1\r\n$4\r\nPING\r\n";

    if (rd->ac == NULL || !rd->ready) {
        return;
    }

    if (rd->pinging) {
        if (rd->reads != rd->ping_reads) {
            rd->pinging = 0;
            ngx_add_timer(&rd->ping, rd->ping_interval);
            return;
        }

        ngx_http_activity_redis_error(rd, NGX_HTTP_ACTIVITY_REDIS_TIMEOUT,
                                      "no answer to PING",
                                      "the connection is presumed dead");
        return;
    }

    if (redisAppendFormattedCommand(&rd->ac->c, ping, sizeof(ping) - 1)
        != REDIS_OK)
    {
        ngx_http_activity_redis_error(rd, NGX_HTTP_ACTIVITY_REDIS_UNREACHABLE,
                                      "cannot send PING", rd->ac->c.errstr);
        return;
    }

    rd->pinging = 1;
    rd->ping_reads = rd->reads;

    ngx_add_timer(&rd->ping, rd->ping_timeout);

    ngx_http_activity_redis_send(rd);
}


/* what the connect callback asked for, done once hiredis let go */

static void
ngx_http_activity_redis_later(ngx_http_activity_redis_t *rd)
{
    if (rd->ac == NULL) {
        rd->drop_later = 0;
        rd->write_later = 0;
        return;
    }

    if (rd->drop_later) {
        rd->drop_later = 0;
        rd->write_later = 0;
        redisAsyncFree(rd->ac);
        return;
    }

    if (rd->write_later) {
        rd->write_later = 0;
        redisAsyncHandleWrite(rd->ac);
    }
}


static void
ngx_http_activity_redis_read_handler(ngx_event_t *ev)
{
    u_char                      byte;
    ssize_t                     n;
    ngx_err_t                   err;
    ngx_uint_t                  i;
    ngx_socket_t                fd;
    ngx_connection_t           *c;
    ngx_http_activity_redis_t  *rd;

    c = ev->data;
    rd = c->data;
    fd = c->fd;

    rd->reads++;

    /*
     * hiredis reads at most 16K a call, and with edge-triggered events
     * neither the rest nor an end of file that came with it is reported
     * again: read until the socket has nothing more to say (EAGAIN), or
     * hiredis saw the end and let the connection go.  The context may be
     * freed inside a reply callback: rd->ac says so.
     */

    for (i = 0; i < NGX_HTTP_ACTIVITY_REDIS_READS; i++) {

        if (rd->ac == NULL) {
            return;
        }

        redisAsyncHandleRead(rd->ac);

        ngx_http_activity_redis_later(rd);

        if (rd->ac == NULL || !(rd->ac->c.flags & REDIS_CONNECTED)) {
            return;
        }

        n = recv(fd, &byte, 1, MSG_PEEK|MSG_DONTWAIT);

        if (n == -1) {
            err = ngx_socket_errno;

            if (err == NGX_EAGAIN) {
                return;
            }

            if (err == NGX_EINTR) {
                continue;
            }
        }

        /* bytes, the end, or an error: hiredis takes it on the next read */
    }

    /* a flood: the rest in the next loop iteration, after other work */

    ngx_post_event(ev, &ngx_posted_events);
}


static void
ngx_http_activity_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t           *c;
    ngx_http_activity_redis_t  *rd;

    c = ev->data;
    rd = c->data;

    if (rd->ac) {
        redisAsyncHandleWrite(rd->ac);
    }

    ngx_http_activity_redis_later(rd);
}


static void
ngx_http_activity_redis_add_read(void *privdata)
{
    ngx_http_activity_redis_t  *rd = privdata;

    ngx_event_t  *ev;

    ev = rd->conn->read;

    if (!ev->active
        && ngx_add_event(ev, NGX_READ_EVENT,
                         (ngx_event_flags & NGX_USE_CLEAR_EVENT)
                         ? NGX_CLEAR_EVENT : NGX_LEVEL_EVENT)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                      "activity: cannot watch redis connection for reading");
    }
}


static void
ngx_http_activity_redis_del_read(void *privdata)
{
    ngx_http_activity_redis_t  *rd = privdata;

    if (rd->conn->read->active) {
        (void) ngx_del_event(rd->conn->read, NGX_READ_EVENT, 0);
    }
}


static void
ngx_http_activity_redis_add_write(void *privdata)
{
    ngx_http_activity_redis_t  *rd = privdata;

    ngx_event_t  *ev;

    ev = rd->conn->write;

    if (!ev->active
        && ngx_add_event(ev, NGX_WRITE_EVENT,
                         (ngx_event_flags & NGX_USE_CLEAR_EVENT)
                         ? NGX_CLEAR_EVENT : NGX_LEVEL_EVENT)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, rd->log, 0,
                      "activity: cannot watch redis connection for writing");
    }
}


static void
ngx_http_activity_redis_del_write(void *privdata)
{
    ngx_http_activity_redis_t  *rd = privdata;

    /*
     * an edge-triggered write event reports only changes, so it may stay
     * registered: that saves two epoll_ctl() calls per flush
     */

    if (ngx_event_flags & NGX_USE_CLEAR_EVENT) {
        return;
    }

    if (rd->conn->write->active) {
        (void) ngx_del_event(rd->conn->write, NGX_WRITE_EVENT, 0);
    }
}


/* hiredis closes the socket itself right after this hook */

static void
ngx_http_activity_redis_cleanup(void *privdata)
{
    ngx_http_activity_redis_t  *rd = privdata;

    ngx_connection_t  *c;

    c = rd->conn;

    rd->ac = NULL;
    rd->conn = NULL;
    rd->ready = 0;
    rd->pinging = 0;

    if (rd->ping.timer_set) {
        ngx_del_timer(&rd->ping);
    }

    if (c == NULL) {
        return;
    }

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    ngx_free_connection(c);

    c->fd = (ngx_socket_t) -1;
}
