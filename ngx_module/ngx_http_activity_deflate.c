
/*
 * permessage-deflate (RFC 7692), without context takeover both ways.
 *
 * Each nginx worker process keeps one deflate and one inflate stream,
 * made on first use and reset for every message: the memory is a fixed
 * few hundred KiB per process, never per connection.  A message is
 * compressed once, into a frame every compressing connection shares; it
 * is kept plain when compressing does not make it smaller.  A client's
 * message is inflated into one buffer of the message bound plus a byte:
 * a message that fills it is refused, however small its compressed form.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_activity_deflate.h"
#include "ngx_http_activity_ws.h"


/* what every compressed message ends with, stripped and put back (7.2) */
static u_char  ngx_http_activity_deflate_tail[] = { 0x00, 0x00, 0xff, 0xff };


static voidpf ngx_http_activity_deflate_alloc(voidpf opaque, uInt items,
    uInt size);
static void ngx_http_activity_deflate_free(voidpf opaque, voidpf address);
static ngx_int_t ngx_http_activity_deflate_start(
    ngx_http_activity_deflate_t *z);
static ngx_int_t ngx_http_activity_inflate_start(
    ngx_http_activity_deflate_t *z, size_t max);


void
ngx_http_activity_deflate_init(ngx_http_activity_deflate_t *z,
    ngx_log_t *log)
{
    ngx_memzero(z, sizeof(ngx_http_activity_deflate_t));

    z->log = log;
}


void
ngx_http_activity_deflate_done(ngx_http_activity_deflate_t *z)
{
    if (z->deflate_ready) {
        (void) deflateEnd(&z->deflate);
        z->deflate_ready = 0;
    }

    if (z->inflate_ready) {
        (void) inflateEnd(&z->inflate);
        z->inflate_ready = 0;
    }

    if (z->out) {
        ngx_free(z->out);
        z->out = NULL;
        z->out_size = 0;
    }

    if (z->zout) {
        ngx_free(z->zout);
        z->zout = NULL;
        z->zout_size = 0;
    }
}


/*
 * The compressed twin of a plain text frame, RSV1 set; NULL when the
 * plain frame is the one to send (short, incompressible, or no zlib).
 * The output goes to a scratch buffer the size of the plain payload
 * (what does not fit is not worth sending), then into a frame of its
 * exact size: a compressed frame may be queued long, for many clients.
 */

ngx_http_activity_frame_t *
ngx_http_activity_deflate_frame(ngx_http_activity_deflate_t *z,
    ngx_http_activity_frame_t *plain)
{
    size_t                      len, clen;
    ngx_http_activity_frame_t  *frame;

    len = plain->len - (plain->payload - plain->data);

    if (len < NGX_HTTP_ACTIVITY_DEFLATE_MIN
        || len > (uInt) -1
        || ngx_http_activity_deflate_start(z) != NGX_OK)
    {
        return NULL;
    }

    if (z->zout_size < len) {
        if (z->zout) {
            ngx_free(z->zout);
        }

        z->zout = ngx_alloc(len, z->log);
        if (z->zout == NULL) {
            z->zout_size = 0;
            return NULL;
        }

        z->zout_size = len;
    }

    frame = NULL;

    if (deflateReset(&z->deflate) != Z_OK) {
        goto done;
    }

    z->deflate.next_in = plain->payload;
    z->deflate.avail_in = (uInt) len;
    z->deflate.next_out = z->zout;
    z->deflate.avail_out = (uInt) len;

    /*
     * Z_SYNC_FLUSH ends the output with an empty stored block, 00 00 ff
     * ff; all output came out only if some room was left over
     */

    if (deflate(&z->deflate, Z_SYNC_FLUSH) != Z_OK
        || z->deflate.avail_in != 0
        || z->deflate.avail_out == 0)
    {
        goto done;
    }

    clen = len - z->deflate.avail_out;

    if (clen < sizeof(ngx_http_activity_deflate_tail)
        || ngx_memcmp(z->zout + clen - sizeof(ngx_http_activity_deflate_tail),
                      ngx_http_activity_deflate_tail,
                      sizeof(ngx_http_activity_deflate_tail))
           != 0)
    {
        goto done;
    }

    clen -= sizeof(ngx_http_activity_deflate_tail);

    frame = ngx_http_activity_frame_create(NGX_HTTP_ACTIVITY_WS_TEXT, clen,
                                           z->log);
    if (frame == NULL) {
        goto done;
    }

    frame->data[0] |= NGX_HTTP_ACTIVITY_WS_RSV1;
    ngx_memcpy(frame->payload, z->zout, clen);

done:

    /* a rare large message does not leave a large buffer behind */

    if (z->zout_size > NGX_HTTP_ACTIVITY_DEFLATE_KEEP) {
        ngx_free(z->zout);
        z->zout = NULL;
        z->zout_size = 0;
    }

    return frame;
}


/*
 * A client's compressed message (its frames' payloads, gathered):
 * NGX_OK with the message in out, valid until the next call;
 * NGX_DECLINED when it inflates to more than max bytes; NGX_ERROR when
 * it is not deflate data; NGX_ABORT when zlib cannot be set up.
 */

ngx_int_t
ngx_http_activity_deflate_inflate(ngx_http_activity_deflate_t *z,
    u_char *in, size_t len, size_t max, ngx_str_t *out)
{
    int         rc;
    ngx_uint_t  i;

    if (ngx_http_activity_inflate_start(z, max) != NGX_OK) {
        return NGX_ABORT;
    }

    if (inflateReset(&z->inflate) != Z_OK) {
        return NGX_ABORT;
    }

    z->inflate.next_out = z->out;
    z->inflate.avail_out = (uInt) (max + 1);

    /* the payload, then the tail the sender stripped */

    for (i = 0; i < 2; i++) {

        if (i == 0) {
            z->inflate.next_in = in;
            z->inflate.avail_in = (uInt) len;

        } else {
            z->inflate.next_in = ngx_http_activity_deflate_tail;
            z->inflate.avail_in = sizeof(ngx_http_activity_deflate_tail);
        }

        rc = inflate(&z->inflate, Z_SYNC_FLUSH);

        if (z->inflate.avail_out == 0) {
            return NGX_DECLINED;
        }

        if (rc == Z_STREAM_END) {

            /* a final block (BFINAL): nothing but the tail may follow */

            if (i == 0 && z->inflate.avail_in) {
                return NGX_ERROR;
            }

            break;
        }

        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            return NGX_ERROR;
        }
    }

    out->data = z->out;
    out->len = max + 1 - z->inflate.avail_out;

    return NGX_OK;
}


static ngx_int_t
ngx_http_activity_deflate_start(ngx_http_activity_deflate_t *z)
{
    int  rc;

    if (z->deflate_ready) {
        return NGX_OK;
    }

    if (z->deflate_failed) {
        return NGX_ERROR;
    }

    z->deflate.zalloc = ngx_http_activity_deflate_alloc;
    z->deflate.zfree = ngx_http_activity_deflate_free;
    z->deflate.opaque = z;

    /* raw deflate (no zlib header), the largest window, zlib's defaults */

    rc = deflateInit2(&z->deflate, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
                      -MAX_WBITS, 8, Z_DEFAULT_STRATEGY);

    if (rc != Z_OK) {
        ngx_log_error(NGX_LOG_ALERT, z->log, 0,
                      "activity: deflateInit2() failed: %d, dashboards get "
                      "uncompressed frames", rc);
        z->deflate_failed = 1;
        return NGX_ERROR;
    }

    z->deflate_ready = 1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_activity_inflate_start(ngx_http_activity_deflate_t *z, size_t max)
{
    int  rc;

    if (z->out == NULL || z->out_size < max + 1) {
        if (z->out) {
            ngx_free(z->out);
        }

        z->out = ngx_alloc(max + 1, z->log);
        if (z->out == NULL) {
            z->out_size = 0;
            return NGX_ERROR;
        }

        z->out_size = max + 1;
    }

    if (z->inflate_ready) {
        return NGX_OK;
    }

    z->inflate.zalloc = ngx_http_activity_deflate_alloc;
    z->inflate.zfree = ngx_http_activity_deflate_free;
    z->inflate.opaque = z;
    z->inflate.next_in = Z_NULL;
    z->inflate.avail_in = 0;

    /* the largest window takes a stream made with any smaller one */

    rc = inflateInit2(&z->inflate, -MAX_WBITS);

    if (rc != Z_OK) {
        ngx_log_error(NGX_LOG_ALERT, z->log, 0,
                      "activity: inflateInit2() failed: %d", rc);
        return NGX_ERROR;
    }

    z->inflate_ready = 1;

    return NGX_OK;
}


/*
 * zlib's state lives as long as the worker process and is reset, not
 * remade, for each message: nginx's heap allocator (which logs a
 * failure), not a pool that would free nothing before the process ends.
 */

static voidpf
ngx_http_activity_deflate_alloc(voidpf opaque, uInt items, uInt size)
{
    ngx_http_activity_deflate_t *z = opaque;

    if (size && items > ((size_t) -1) / size) {
        return Z_NULL;
    }

    return ngx_alloc((size_t) items * size, z->log);
}


static void
ngx_http_activity_deflate_free(voidpf opaque, voidpf address)
{
    ngx_free(address);
}
