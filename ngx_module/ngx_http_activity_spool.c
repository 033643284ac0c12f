
/*
 * The disk spool.
 *
 * Writers append one event a line with a single O_APPEND writev(), holding
 * a shared flock() on the file for the moment of the write.  A replaying
 * process claims the whole file by renaming it to PATH.replay.PID, takes an
 * exclusive flock() (which waits only for writes already under way) and
 * reads it a chunk per event loop iteration.  A writer that opened the
 * file just before the rename notices it (the lock is taken, or the path
 * names another file now) and opens the new one.  A claim left by a
 * process that died is taken over by the next one; its events may then be
 * sent twice, which the worker's idempotent store absorbs.
 *
 * Disk writes block: they happen only when Redis is away and the memory
 * buffer is full, as nginx's own access log writes do.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <sys/file.h>
#include <dirent.h>

#include "ngx_http_activity_spool.h"


#define NGX_HTTP_ACTIVITY_SPOOL_CHUNK   65536


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
};


static ngx_int_t ngx_http_activity_spool_claim(ngx_http_activity_spool_t *sp);
static ngx_int_t ngx_http_activity_spool_orphan(ngx_http_activity_spool_t *sp,
    u_char *name);
static void ngx_http_activity_spool_release(ngx_http_activity_spool_t *sp);


ngx_http_activity_spool_t *
ngx_http_activity_spool_create(ngx_cycle_t *cycle, ngx_str_t *path,
    off_t max_size)
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

    sp->path.len = path->len;
    sp->path.data = ngx_pnalloc(cycle->pool, path->len + 1);
    sp->claim.data = ngx_pnalloc(cycle->pool, path->len + sizeof(".replay.")
                                              + NGX_INT_T_LEN);
    sp->dir.data = ngx_pnalloc(cycle->pool, path->len + 1);
    sp->buf = ngx_palloc(cycle->pool, NGX_HTTP_ACTIVITY_SPOOL_CHUNK);

    if (sp->path.data == NULL || sp->claim.data == NULL
        || sp->dir.data == NULL || sp->buf == NULL)
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


/* NGX_OK: written; NGX_DECLINED: the spool is full; NGX_ERROR: failed */

ngx_int_t
ngx_http_activity_spool_append(ngx_http_activity_spool_t *sp, u_char *data,
    size_t len)
{
    ssize_t          n;
    ngx_fd_t         fd;
    ngx_uint_t       tries;
    struct iovec     iov[2];
    ngx_file_info_t  fi, pi;

    for (tries = 0; tries < 3; tries++) {

        fd = ngx_open_file(sp->path.data, NGX_FILE_APPEND,
                           NGX_FILE_CREATE_OR_OPEN, 0600);

        if (fd == NGX_INVALID_FILE) {
            ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                          "activity: cannot open spool \"%V\"", &sp->path);
            return NGX_ERROR;
        }

        /* the file being claimed, or claimed already: take the new one */

        if (flock(fd, LOCK_SH | LOCK_NB) == -1
            || ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
            || ngx_file_info(sp->path.data, &pi) == NGX_FILE_ERROR
            || fi.st_ino != pi.st_ino)
        {
            (void) ngx_close_file(fd);
            continue;
        }

        if (ngx_file_size(&fi) + (off_t) len + 1 > sp->max_size) {
            (void) ngx_close_file(fd);
            return NGX_DECLINED;
        }

        /* events are JSON without raw newlines: one line each */

        iov[0].iov_base = data;
        iov[0].iov_len = len;
        iov[1].iov_base = "\n";
        iov[1].iov_len = 1;

        n = writev(fd, iov, 2);

        if (n != (ssize_t) len + 1) {
            ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                          "activity: cannot write spool \"%V\"", &sp->path);
            (void) ngx_close_file(fd);
            return NGX_ERROR;
        }

        (void) ngx_close_file(fd);

        return NGX_OK;
    }

    return NGX_ERROR;
}


/*
 * Hands spooled lines to the handler, at most one chunk a call.  NGX_OK:
 * nothing is left; NGX_AGAIN: call again soon; NGX_BUSY: the handler has
 * no room, call again when it has.
 */

ngx_int_t
ngx_http_activity_spool_replay(ngx_http_activity_spool_t *sp,
    ngx_http_activity_spool_line_pt handler, void *data)
{
    u_char     *p, *last, *nl;
    ssize_t     n;
    ngx_int_t   rc;

    if (sp->fd == NGX_INVALID_FILE) {
        rc = ngx_http_activity_spool_claim(sp);

        if (rc != NGX_OK) {
            return NGX_OK;
        }
    }

    n = pread(sp->fd, sp->buf, NGX_HTTP_ACTIVITY_SPOOL_CHUNK, sp->offset);

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

        /* a line longer than a chunk is no event of ours: skip it */

        ngx_log_error(NGX_LOG_ERR, sp->log, 0,
                      "activity: skipped an overlong line in spool \"%V\"",
                      &sp->claim);

        p = last;
    }

    sp->offset += p - sp->buf;

    return NGX_AGAIN;
}


void
ngx_http_activity_spool_destroy(ngx_http_activity_spool_t *sp)
{
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

    /* waits only for appends already under way */

    if (flock(fd, LOCK_EX) == -1) {
        (void) ngx_close_file(fd);
        return NGX_DECLINED;
    }

    sp->fd = fd;
    sp->offset = 0;

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

    sp->offset = 0;
}
