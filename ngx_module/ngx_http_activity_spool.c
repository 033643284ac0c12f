
/*
 * The disk spool.
 *
 * Events to spool are gathered in memory (bounded) and written from a
 * timer, one event a line, with a single O_APPEND write() under a shared
 * flock() taken without waiting: never a disk access per request.  A
 * replaying process claims the whole file by renaming it to
 * PATH.replay.PID, takes an exclusive flock() without waiting either (a
 * lock held elsewhere is tried again later) and reads it a chunk per event
 * loop iteration.  A writer that opened the file just before the rename
 * notices it (the lock is taken, or the path names another file now) and
 * opens the new one.  A claim left by a process that died is taken over
 * by the next one; its events may then be sent twice, which the worker's
 * idempotent store absorbs.
 *
 * The writes themselves are plain file writes, as nginx's own access log
 * writes are; they happen only when Redis is away and the memory buffer
 * is full.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <sys/file.h>
#include <dirent.h>

#include "ngx_http_activity_spool.h"
#include "ngx_http_activity_status.h"


#define NGX_HTTP_ACTIVITY_SPOOL_CHUNK   65536

/* the longest line replayed; longer ones are no events of ours */
#define NGX_HTTP_ACTIVITY_SPOOL_LINE    (16 * 1024 * 1024)

/* events gathered in memory before a write, and how often they leave */
#define NGX_HTTP_ACTIVITY_SPOOL_PENDING (1024 * 1024)
#define NGX_HTTP_ACTIVITY_SPOOL_DELAY   100


struct ngx_http_activity_spool_s {
    ngx_str_t                    path;       /* NUL-terminated */
    ngx_str_t                    dir;        /* NUL-terminated */
    ngx_str_t                    base;       /* file name in dir */
    ngx_str_t                    claim;      /* PATH.replay.PID */
    off_t                        max_size;
    ngx_log_t                   *log;

    ngx_fd_t                     fd;         /* the claimed file */
    off_t                        offset;     /* of the next line */
    u_char                      *buf;
    size_t                       buf_size;   /* grows for long lines */

    u_char                      *pending;    /* lines not yet written */
    size_t                       pending_len;
    ngx_uint_t                   pending_n;
    ngx_event_t                  write_ev;

    ngx_http_activity_stats_t   *stats;
    ngx_uint_t                   dropped;    /* not yet reported */
    time_t                       drop_reported;

    unsigned                     locked:1;   /* the claim is ours */
    unsigned                     skipping:1; /* an overlong line */
};


static void ngx_http_activity_spool_write_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_activity_spool_write(ngx_http_activity_spool_t *sp);
static void ngx_http_activity_spool_drop(ngx_http_activity_spool_t *sp,
    ngx_uint_t n, const char *why);
static ngx_int_t ngx_http_activity_spool_claim(ngx_http_activity_spool_t *sp);
static ngx_int_t ngx_http_activity_spool_lock(ngx_http_activity_spool_t *sp);
static ngx_int_t ngx_http_activity_spool_orphan(ngx_http_activity_spool_t *sp,
    u_char *name);
static void ngx_http_activity_spool_release(ngx_http_activity_spool_t *sp);


ngx_http_activity_spool_t *
ngx_http_activity_spool_create(ngx_cycle_t *cycle, ngx_str_t *path,
    off_t max_size, ngx_http_activity_stats_t *stats)
{
    u_char                     *p, *slash;
    ngx_http_activity_spool_t  *sp;

    sp = ngx_pcalloc(cycle->pool, sizeof(ngx_http_activity_spool_t));
    if (sp == NULL) {
        return NULL;
    }

    sp->log = cycle->log;
    sp->max_size = max_size;
    sp->fd = NGX_INVALID_FILE;
    sp->stats = stats;

    sp->write_ev.handler = ngx_http_activity_spool_write_handler;
    sp->write_ev.data = sp;
    sp->write_ev.log = cycle->log;
    sp->write_ev.cancelable = 1;

    sp->path.len = path->len;
    sp->path.data = ngx_pnalloc(cycle->pool, path->len + 1);
    sp->claim.data = ngx_pnalloc(cycle->pool, path->len + sizeof(".replay.")
                                              + NGX_INT_T_LEN);
    sp->dir.data = ngx_pnalloc(cycle->pool, path->len + 1);
    sp->pending = ngx_pnalloc(cycle->pool, NGX_HTTP_ACTIVITY_SPOOL_PENDING);

    if (sp->path.data == NULL || sp->claim.data == NULL
        || sp->dir.data == NULL || sp->pending == NULL)
    {
        return NULL;
    }

    ngx_cpystrn(sp->path.data, path->data, path->len + 1);

    p = ngx_sprintf(sp->claim.data, "%V.replay.%P%Z", path, ngx_pid);
    sp->claim.len = p - sp->claim.data - 1;

    /* the directory is scanned for claims that dead processes left */

    slash = (u_char *) strrchr((char *) sp->path.data, '/');

    sp->dir.len = slash - sp->path.data;
    ngx_cpystrn(sp->dir.data, sp->path.data, sp->dir.len + 1);

    if (sp->dir.len == 0) {
        ngx_str_set(&sp->dir, "/");
    }

    sp->base.data = slash + 1;
    sp->base.len = sp->path.data + sp->path.len - slash - 1;

    return sp;
}


/*
 * Takes an event for the spool: copied to memory, written by a timer.
 * NGX_OK: taken; NGX_DECLINED: no room in memory (the disk is too slow
 * or locked for long), the caller drops it.
 */

ngx_int_t
ngx_http_activity_spool_append(ngx_http_activity_spool_t *sp, u_char *data,
    size_t len)
{
    if (sp->pending_len + len + 1 > NGX_HTTP_ACTIVITY_SPOOL_PENDING) {
        return NGX_DECLINED;
    }

    /* events are JSON without raw newlines: one line each */

    ngx_memcpy(sp->pending + sp->pending_len, data, len);
    sp->pending_len += len;
    sp->pending[sp->pending_len++] = '\n';
    sp->pending_n++;

    if (!sp->write_ev.timer_set) {
        ngx_add_timer(&sp->write_ev, NGX_HTTP_ACTIVITY_SPOOL_DELAY);
    }

    return NGX_OK;
}


static void
ngx_http_activity_spool_write_handler(ngx_event_t *ev)
{
    ngx_http_activity_spool_t  *sp = ev->data;

    if (ngx_http_activity_spool_write(sp) == NGX_AGAIN) {
        ngx_add_timer(&sp->write_ev, NGX_HTTP_ACTIVITY_SPOOL_DELAY);
    }
}


/*
 * Writes what is gathered in one write().  NGX_OK: done (written or
 * dropped and counted); NGX_AGAIN: the file is locked or being claimed,
 * try again later.
 */

static ngx_int_t
ngx_http_activity_spool_write(ngx_http_activity_spool_t *sp)
{
    u_char           *p, *last;
    off_t             room;
    size_t            len;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_uint_t        tries, lines;
    ngx_file_info_t   fi, pi;

    if (sp->pending_len == 0) {
        return NGX_OK;
    }

    for (tries = 0; tries < 3; tries++) {

        fd = ngx_open_file(sp->path.data, NGX_FILE_APPEND,
                           NGX_FILE_CREATE_OR_OPEN, 0600);

        if (fd == NGX_INVALID_FILE) {
            ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                          "activity: cannot open spool \"%V\"", &sp->path);
            ngx_http_activity_spool_drop(sp, sp->pending_n,
                                         "cannot write the spool");
            return NGX_OK;
        }

        /* the file being claimed, or claimed already: take the new one */

        if (flock(fd, LOCK_SH|LOCK_NB) == -1
            || ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
            || ngx_file_info(sp->path.data, &pi) == NGX_FILE_ERROR
            || fi.st_ino != pi.st_ino)
        {
            (void) ngx_close_file(fd);
            continue;
        }

        /* whole lines only, as many as max_size leaves room for */

        room = sp->max_size - ngx_file_size(&fi);
        len = sp->pending_len;
        lines = sp->pending_n;

        if ((off_t) len > room) {
            len = 0;
            lines = 0;
            last = sp->pending + (room > 0 ? (size_t) room : 0);

            for (p = sp->pending; p < last; p++) {
                if (*p == '\n') {
                    len = p + 1 - sp->pending;
                    lines++;
                }
            }
        }

        n = 0;

        if (len) {
            n = ngx_write_fd(fd, sp->pending, len);
        }

        if (n == -1 || (size_t) n != len) {
            ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                          "activity: cannot write spool \"%V\"", &sp->path);
            (void) ngx_close_file(fd);
            ngx_http_activity_spool_drop(sp, sp->pending_n,
                                         "cannot write the spool");
            return NGX_OK;
        }

        (void) ngx_close_file(fd);

        ngx_http_activity_stat_add(sp->stats, events_spooled, lines);

        if (lines < sp->pending_n) {
            ngx_http_activity_spool_drop(sp, sp->pending_n - lines,
                                         "the spool is full");
        }

        sp->pending_len = 0;
        sp->pending_n = 0;

        return NGX_OK;
    }

    return NGX_AGAIN;
}


/* what could not be written is dropped: counted, logged once a second */

static void
ngx_http_activity_spool_drop(ngx_http_activity_spool_t *sp, ngx_uint_t n,
    const char *why)
{
    ngx_http_activity_stat_add(sp->stats, events_dropped, n);

    sp->pending_len = 0;
    sp->pending_n = 0;
    sp->dropped += n;

    if (sp->drop_reported == ngx_time()) {
        return;
    }

    sp->drop_reported = ngx_time();

    ngx_log_error(NGX_LOG_ERR, sp->log, 0,
                  "activity: %s \"%V\": %ui event(s) dropped",
                  why, &sp->path, sp->dropped);

    sp->dropped = 0;
}


/*
 * Hands spooled lines to the handler, at most one chunk a call.  NGX_OK:
 * nothing is left; NGX_AGAIN: call again soon; NGX_BUSY: the handler has
 * no room, call again when it has; NGX_DECLINED: another process holds
 * the lock, call again later.
 */

ngx_int_t
ngx_http_activity_spool_replay(ngx_http_activity_spool_t *sp,
    ngx_http_activity_spool_line_pt handler, void *data)
{
    u_char     *p, *last, *nl, *buf;
    size_t      size;
    ssize_t     n;
    ngx_int_t   rc;

    if (sp->fd == NGX_INVALID_FILE) {
        rc = ngx_http_activity_spool_claim(sp);

        if (rc != NGX_OK) {
            return NGX_OK;
        }
    }

    if (!sp->locked && ngx_http_activity_spool_lock(sp) != NGX_OK) {
        return NGX_DECLINED;
    }

    if (sp->buf == NULL) {
        sp->buf = ngx_alloc(NGX_HTTP_ACTIVITY_SPOOL_CHUNK, sp->log);
        if (sp->buf == NULL) {
            return NGX_DECLINED;
        }

        sp->buf_size = NGX_HTTP_ACTIVITY_SPOOL_CHUNK;
    }

    n = pread(sp->fd, sp->buf, sp->buf_size, sp->offset);

    if (n == -1) {
        ngx_log_error(NGX_LOG_ALERT, sp->log, ngx_errno,
                      "activity: cannot read spool \"%V\"", &sp->claim);
        ngx_http_activity_spool_release(sp);
        return NGX_OK;
    }

    if (n == 0) {

        /* all replayed: the claim is done with */

        if (ngx_delete_file(sp->claim.data) == NGX_FILE_ERROR) {
            ngx_log_error(NGX_LOG_ALERT, sp->log, ngx_errno,
                          ngx_delete_file_n " \"%V\" failed", &sp->claim);
        }

        ngx_log_error(NGX_LOG_NOTICE, sp->log, 0,
                      "activity: spool \"%V\" replayed", &sp->path);

        ngx_http_activity_spool_release(sp);

        return NGX_AGAIN;
    }

    p = sp->buf;
    last = sp->buf + n;

    if (sp->skipping) {
        nl = ngx_strlchr(p, last, '\n');

        if (nl == NULL) {
            sp->offset += n;
            return NGX_AGAIN;
        }

        sp->skipping = 0;
        p = nl + 1;
    }

    for ( ;; ) {
        nl = ngx_strlchr(p, last, '\n');

        if (nl == NULL) {
            break;
        }

        if (nl > p) {
            rc = handler(data, p, nl - p);

            if (rc == NGX_BUSY) {
                sp->offset += p - sp->buf;
                return NGX_BUSY;
            }
        }

        p = nl + 1;
    }

    if (p == sp->buf) {

        if ((size_t) n < sp->buf_size) {

            /* the end of the file holds half a line: a write cut short */

            ngx_log_error(NGX_LOG_ERR, sp->log, 0,
                          "activity: skipped an incomplete line at the end "
                          "of spool \"%V\"", &sp->claim);

            p = last;

        } else if (sp->buf_size < NGX_HTTP_ACTIVITY_SPOOL_LINE) {

            /* a line longer than the buffer: read it again, whole */

            size = sp->buf_size * 2;

            buf = ngx_alloc(size, sp->log);
            if (buf == NULL) {
                return NGX_DECLINED;
            }

            ngx_free(sp->buf);
            sp->buf = buf;
            sp->buf_size = size;

            return NGX_AGAIN;

        } else {
            ngx_log_error(NGX_LOG_ERR, sp->log, 0,
                          "activity: skipped a line longer than %uz bytes "
                          "in spool \"%V\"",
                          (size_t) NGX_HTTP_ACTIVITY_SPOOL_LINE, &sp->claim);

            sp->skipping = 1;
            p = last;
        }
    }

    sp->offset += p - sp->buf;

    return NGX_AGAIN;
}


/*
 * Writes what is gathered now, for an exiting process: a lock held
 * elsewhere is waited for a little (nothing else is served any more).
 * NGX_OK: written (or dropped and counted); NGX_AGAIN: still locked.
 */

ngx_int_t
ngx_http_activity_spool_sync(ngx_http_activity_spool_t *sp)
{
    ngx_uint_t  i;

    for (i = 0; i < 20; i++) {
        if (ngx_http_activity_spool_write(sp) == NGX_OK) {
            return NGX_OK;
        }

        ngx_msleep(10);
    }

    return NGX_AGAIN;
}


/* what is still unwritten at exit is counted and logged as lost */

void
ngx_http_activity_spool_destroy(ngx_http_activity_spool_t *sp)
{
    if (sp->write_ev.timer_set) {
        ngx_del_timer(&sp->write_ev);
    }

    if (ngx_http_activity_spool_sync(sp) != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, sp->log, 0,
                      "activity: exiting: spool \"%V\" stayed locked, "
                      "%ui event(s) lost", &sp->path, sp->pending_n);
        ngx_http_activity_stat_add(sp->stats, events_dropped, sp->pending_n);
        sp->pending_n = 0;
        sp->pending_len = 0;
    }

    /* an unfinished claim stays on disk for the next process */

    ngx_http_activity_spool_release(sp);
}


static ngx_int_t
ngx_http_activity_spool_claim(ngx_http_activity_spool_t *sp)
{
    DIR              *dir;
    ngx_fd_t          fd;
    ngx_uint_t        claimed;
    struct dirent    *de;
    ngx_file_info_t   fi;

    /* a claim of ours that an error interrupted is finished first */

    claimed = (ngx_file_info(sp->claim.data, &fi) != NGX_FILE_ERROR);

    /* then claims of dead processes: they hold older events */

    if (!claimed) {
        dir = opendir((char *) sp->dir.data);

        if (dir) {
            while ((de = readdir(dir)) != NULL) {
                if (ngx_http_activity_spool_orphan(sp,
                                                   (u_char *) de->d_name)
                    == NGX_OK)
                {
                    claimed = 1;
                    break;
                }
            }

            closedir(dir);
        }
    }

    if (!claimed
        && rename((char *) sp->path.data, (char *) sp->claim.data) == -1)
    {
        /* ENOENT: nothing spooled */
        return NGX_DECLINED;
    }

    fd = ngx_open_file(sp->claim.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_log_error(NGX_LOG_ALERT, sp->log, ngx_errno,
                      "activity: cannot open spool \"%V\"", &sp->claim);
        return NGX_DECLINED;
    }

    sp->fd = fd;
    sp->offset = 0;
    sp->locked = 0;
    sp->skipping = 0;

    return NGX_OK;
}


/*
 * The claimed file is read once writes already under way are done: the
 * exclusive lock is tried without waiting, and again on the next call
 * while another process holds it.
 */

static ngx_int_t
ngx_http_activity_spool_lock(ngx_http_activity_spool_t *sp)
{
    if (flock(sp->fd, LOCK_EX|LOCK_NB) == -1) {

        if (ngx_errno != NGX_EAGAIN) {
            ngx_log_error(NGX_LOG_ALERT, sp->log, ngx_errno,
                          "activity: cannot lock spool \"%V\"", &sp->claim);
            ngx_http_activity_spool_release(sp);
        }

        return NGX_DECLINED;
    }

    sp->locked = 1;

    ngx_log_error(NGX_LOG_NOTICE, sp->log, 0,
                  "activity: replaying spool \"%V\"", &sp->path);

    return NGX_OK;
}


/* takes over PATH.replay.PID when that process is gone */

static ngx_int_t
ngx_http_activity_spool_orphan(ngx_http_activity_spool_t *sp, u_char *name)
{
    u_char     *p, path[NGX_MAX_PATH];
    size_t      len;
    ngx_pid_t   pid;

    len = ngx_strlen(name);

    if (len <= sp->base.len + sizeof(".replay.") - 1
        || ngx_strncmp(name, sp->base.data, sp->base.len) != 0
        || ngx_strncmp(name + sp->base.len, ".replay.",
                       sizeof(".replay.") - 1) != 0)
    {
        return NGX_DECLINED;
    }

    p = name + sp->base.len + sizeof(".replay.") - 1;
    pid = ngx_atoi(p, len - (p - name));

    if (pid == NGX_ERROR || pid == ngx_pid
        || kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH)
    {
        return NGX_DECLINED;
    }

    if (sp->dir.len + 1 + len + 1 > NGX_MAX_PATH) {
        return NGX_DECLINED;
    }

    ngx_sprintf(path, "%V/%s%Z", &sp->dir, name);

    if (rename((char *) path, (char *) sp->claim.data) == -1) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_activity_spool_release(ngx_http_activity_spool_t *sp)
{
    if (sp->fd != NGX_INVALID_FILE) {
        (void) ngx_close_file(sp->fd);
        sp->fd = NGX_INVALID_FILE;
    }

    if (sp->buf) {
        ngx_free(sp->buf);
        sp->buf = NULL;
        sp->buf_size = 0;
    }

    sp->offset = 0;
    sp->locked = 0;
    sp->skipping = 0;
}
