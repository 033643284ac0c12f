/*
 * bench/dashclient.c: N dashboard clients in one epoll loop, light
 * enough that 20,000 frames a second hardly show on the machine they
 * measure.
 *
 * Each client opens a WebSocket (RFC 6455) to the given path and, with
 * --proto sio, speaks just enough Engine.IO v4 / Socket.IO v5 over it:
 * waits for the OPEN packet, sends CONNECT to the namespace with
 * {"token":...} as auth, waits for the CONNECT reply, answers pings.
 * Every text frame is scanned for bench events ("endpoint":"/api/bench/
 * followed by the send time in microseconds of CLOCK_MONOTONIC, the
 * clock of Node's process.hrtime); the delay to the read is kept in a
 * histogram.
 *
 *   dashclient --port P --path PATH --clients N [--proto ws|sio]
 *              [--nsp /dashboard] [--token T]
 *
 * stdout: "open OK FAILED" once every client is open or has failed.
 * stdin:  "start US" counts events sent from US on (older ones are in
 *         snapshots); "count" prints "count N", the events received so
 *         far; "report" prints one JSON line
 *         {"received":..,"closed":..,"max":..,"cpu_us":..,
 *          "hist":{bucket:count}} (buckets of 50 us; cpu_us: this
 *         process's CPU time since the start) and exits.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#define BUCKET_US   50
#define BUCKETS     200000          /* up to 10 s */
#define CONNECTING  64              /* handshakes in progress at once */

enum { S_CONNECT, S_HTTP, S_EIO_OPEN, S_SIO_CONNECT, S_OPEN, S_DEAD };

typedef struct {
    int        fd;
    int        state;
    char      *buf;
    size_t     len;
    size_t     cap;
} conn_t;


static const char  *path = "/";
static const char  *proto = "ws";
static const char  *nsp = "/dashboard";
static const char  *token = "";
static int          port;
static int          nclients = 1;

static conn_t      *conns;
static int          ep;
static int          started, opened, failed, closed;
static int64_t      since = INT64_MAX;
static uint64_t     received;
static int64_t      maxus;
static uint32_t     hist[BUCKETS + 1];

static const char   marker[] = "\"endpoint\":\"/api/bench/";


static int64_t
now_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


static void
send_all(conn_t *c, const char *p, size_t n)
{
    ssize_t  w;

    /* small frames on a socket with room: a short write is a failure */
    while (n) {
        w = write(c->fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            c->state = S_DEAD;
            return;
        }
        p += w;
        n -= w;
    }
}


/* one masked text (or pong) frame of a short payload */
static void
send_frame(conn_t *c, int opcode, const char *p, size_t n)
{
    static const unsigned char  key[4] = { 0x12, 0x34, 0x56, 0x78 };
    unsigned char               f[1024];
    size_t                      h, i;

    if (n > sizeof(f) - 8) {
        c->state = S_DEAD;
        return;
    }
    f[0] = 0x80 | opcode;
    if (n < 126) {
        f[1] = 0x80 | n;
        h = 2;
    } else {
        f[1] = 0x80 | 126;
        f[2] = n >> 8;
        f[3] = n & 0xff;
        h = 4;
    }
    memcpy(f + h, key, 4);
    h += 4;
    for (i = 0; i < n; i++) {
        f[h + i] = p[i] ^ key[i & 3];
    }
    send_all(c, (char *) f, h + n);
}


static void
record(const char *p, size_t n)
{
    const char  *k, *end;
    int64_t      sent, us;

    end = p + n;
    while ((k = memmem(p, end - p, marker, sizeof(marker) - 1)) != NULL) {
        k += sizeof(marker) - 1;
        sent = 0;
        while (k < end && *k >= '0' && *k <= '9') {
            sent = sent * 10 + (*k++ - '0');
        }
        p = k;
        if (sent < since) {
            continue;
        }
        us = now_us() - sent;
        if (us < 0) {
            us = 0;                     /* not a send time of this clock */
        }
        if (us > maxus) {
            maxus = us;
        }
        hist[us / BUCKET_US < BUCKETS ? us / BUCKET_US : BUCKETS]++;
        received++;
    }
}


static void start_next(void);


static void
open_done(conn_t *c, int ok)
{
    if (ok) {
        c->state = S_OPEN;
        opened++;
    } else {
        c->state = S_DEAD;
        failed++;
    }
    start_next();
    if (opened + failed == nclients) {
        printf("open %d %d\n", opened, failed);
        fflush(stdout);
    }
}


static void
on_text(conn_t *c, const char *p, size_t n)
{
    char  m[512];
    int   k;

    if (proto[0] != 's') {
        record(p, n);
        return;
    }

    if (n == 1 && p[0] == '2') {                 /* Engine.IO ping */
        send_frame(c, 1, "3", 1);
        return;
    }

    if (c->state == S_EIO_OPEN && n && p[0] == '0') {
        k = snprintf(m, sizeof(m), "40%s,{\"token\":\"%s\"}", nsp, token);
        send_frame(c, 1, m, k);
        c->state = S_SIO_CONNECT;
        return;
    }

    if (c->state == S_SIO_CONNECT && n >= 2 && p[0] == '4') {
        if (p[1] == '0') {
            open_done(c, 1);
        } else if (p[1] == '4') {
            fprintf(stderr, "connect refused: %.*s\n", (int) n, p);
            open_done(c, 0);
        }
        return;
    }

    record(p, n);
}


/* parse what is buffered: the HTTP reply, then whole frames */
static void
parse(conn_t *c)
{
    unsigned char  *b;
    uint64_t        plen;
    size_t          off, h;
    char           *e;
    int             op;

    off = 0;
    b = (unsigned char *) c->buf;

    if (c->state == S_HTTP) {
        e = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (e == NULL) {
            return;
        }
        if (c->len < 12 || memcmp(c->buf + 9, "101", 3) != 0) {
            fprintf(stderr, "upgrade refused: %.*s\n",
                    (int) (e - c->buf), c->buf);
            open_done(c, 0);
            return;
        }
        off = e + 4 - c->buf;
        if (proto[0] == 's') {
            c->state = S_EIO_OPEN;
        } else {
            open_done(c, 1);
        }
    }

    while (c->state != S_DEAD && c->len - off >= 2) {
        op = b[off] & 0x0f;
        plen = b[off + 1] & 0x7f;
        h = 2;
        if (plen == 126) {
            if (c->len - off < 4) {
                break;
            }
            plen = (b[off + 2] << 8) | b[off + 3];
            h = 4;
        } else if (plen == 127) {
            if (c->len - off < 10) {
                break;
            }
            plen = 0;
            for (int i = 0; i < 8; i++) {
                plen = (plen << 8) | b[off + 2 + i];
            }
            h = 10;
        }
        if (c->len - off < h + plen) {
            break;
        }

        if (op == 1 || op == 0) {
            on_text(c, c->buf + off + h, plen);
        } else if (op == 9) {
            send_frame(c, 10, c->buf + off + h, plen);
        } else if (op == 8) {
            c->state = S_DEAD;
        }
        off += h + plen;
    }

    if (off) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
    }
}


static void
on_read(conn_t *c)
{
    ssize_t  n;
    size_t   room;

    for ( ;; ) {
        if (c->cap - c->len < 16384) {
            c->cap = c->cap ? c->cap * 2 : 65536;
            c->buf = realloc(c->buf, c->cap);
            if (c->buf == NULL) {
                perror("realloc");
                exit(1);
            }
        }
        room = c->cap - c->len;
        n = read(c->fd, c->buf + c->len, room);
        if (n > 0) {
            c->len += n;
            parse(c);
            if (c->state == S_DEAD) {
                break;
            }
            if ((size_t) n < room) {
                return;                 /* short read: drained */
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return;
        }
        break;
    }

    if (c->state != S_OPEN && c->state != S_DEAD) {
        open_done(c, 0);
    }
    c->state = S_DEAD;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    closed++;
}


static void
start_next(void)
{
    struct sockaddr_in   sa;
    struct epoll_event   ev;
    conn_t              *c;
    int                  one = 1;

    while (started < nclients
           && started - opened - failed < CONNECTING)
    {
        c = &conns[started];
        c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (c->fd < 0) {
            perror("socket");
            exit(1);
        }
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(c->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0
            && errno != EINPROGRESS)
        {
            perror("connect");
            exit(1);
        }
        c->state = S_CONNECT;
        ev.events = EPOLLIN | EPOLLOUT;
        ev.data.u32 = started;
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
        started++;
    }
}


static void
on_writable(conn_t *c)
{
    struct epoll_event  ev;
    char                req[4096];
    int                 n, err;
    socklen_t           len = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        open_done(c, 0);
        return;
    }
    n = snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                 path, port);
    c->state = S_HTTP;
    send_all(c, req, n);
    ev.events = EPOLLIN;
    ev.data.u32 = c - conns;
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}


static void
report(void)
{
    struct rusage  ru;
    int            i, first = 1;

    getrusage(RUSAGE_SELF, &ru);
    printf("{\"received\":%llu,\"closed\":%d,\"max\":%lld,"
           "\"cpu_us\":%lld,\"hist\":{",
           (unsigned long long) received, closed, (long long) maxus,
           (long long) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000
           + ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
    for (i = 0; i <= BUCKETS; i++) {
        if (hist[i]) {
            printf("%s\"%d\":%u", first ? "" : ",", i, hist[i]);
            first = 0;
        }
    }
    printf("}}\n");
    fflush(stdout);
    exit(0);
}


static void
on_stdin(void)
{
    static char  line[256];
    static size_t len;
    ssize_t      n;
    char        *nl;

    n = read(0, line + len, sizeof(line) - 1 - len);
    if (n <= 0) {
        exit(0);                        /* the driver went away */
    }
    len += n;
    line[len] = '\0';
    while ((nl = strchr(line, '\n')) != NULL) {
        *nl = '\0';
        if (strncmp(line, "start ", 6) == 0) {
            since = strtoll(line + 6, NULL, 10);
        } else if (strcmp(line, "count") == 0) {
            printf("count %llu\n", (unsigned long long) received);
            fflush(stdout);
        } else if (strcmp(line, "report") == 0) {
            report();
        }
        len -= nl + 1 - line;
        memmove(line, nl + 1, len + 1);
    }
}


int
main(int argc, char **argv)
{
    struct epoll_event  evs[256], ev;
    int                 i, n;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0) {
            port = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--path") == 0) {
            path = argv[i + 1];
        } else if (strcmp(argv[i], "--clients") == 0) {
            nclients = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--proto") == 0) {
            proto = argv[i + 1];
        } else if (strcmp(argv[i], "--nsp") == 0) {
            nsp = argv[i + 1];
        } else if (strcmp(argv[i], "--token") == 0) {
            token = argv[i + 1];
        } else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (port <= 0 || nclients <= 0) {
        fprintf(stderr, "usage: dashclient --port P --path PATH "
                "--clients N [--proto ws|sio] [--nsp NSP] [--token T]\n");
        return 2;
    }

    conns = calloc(nclients, sizeof(conn_t));
    ep = epoll_create1(0);
    if (conns == NULL || ep < 0) {
        perror("setup");
        return 1;
    }

    ev.events = EPOLLIN;
    ev.data.u32 = UINT32_MAX;
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);

    start_next();

    for ( ;; ) {
        n = epoll_wait(ep, evs, 256, -1);
        for (i = 0; i < n; i++) {
            if (evs[i].data.u32 == UINT32_MAX) {
                on_stdin();
                continue;
            }
            conn_t *c = &conns[evs[i].data.u32];
            if (c->state == S_CONNECT) {
                on_writable(c);
            } else if (c->state != S_DEAD) {
                on_read(c);
            }
        }
    }
}
