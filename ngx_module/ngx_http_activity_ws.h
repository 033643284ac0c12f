
/*
 * RFC 6455 framing, free of nginx types so that unit tests and fuzzers
 * link it alone.
 */


#ifndef _NGX_HTTP_ACTIVITY_WS_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_WS_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define NGX_HTTP_ACTIVITY_WS_CONT          0x0
#define NGX_HTTP_ACTIVITY_WS_TEXT          0x1
#define NGX_HTTP_ACTIVITY_WS_BINARY        0x2
#define NGX_HTTP_ACTIVITY_WS_CLOSE         0x8
#define NGX_HTTP_ACTIVITY_WS_PING          0x9
#define NGX_HTTP_ACTIVITY_WS_PONG          0xa

/* close codes */
#define NGX_HTTP_ACTIVITY_WS_NORMAL        1000
#define NGX_HTTP_ACTIVITY_WS_GOING_AWAY    1001
#define NGX_HTTP_ACTIVITY_WS_PROTOCOL      1002
#define NGX_HTTP_ACTIVITY_WS_UNSUPPORTED   1003
#define NGX_HTTP_ACTIVITY_WS_BAD_DATA      1007
#define NGX_HTTP_ACTIVITY_WS_POLICY        1008
#define NGX_HTTP_ACTIVITY_WS_TOO_BIG       1009
#define NGX_HTTP_ACTIVITY_WS_INTERNAL      1011
#define NGX_HTTP_ACTIVITY_WS_TRY_AGAIN     1013

/* the longest server frame header: 2 + 8 */
#define NGX_HTTP_ACTIVITY_WS_HEADER_MAX    10

/* permessage-deflate (RFC 7692): the first frame of a compressed message */
#define NGX_HTTP_ACTIVITY_WS_RSV1          0x40

/* the longest answer ngx_http_activity_ws_deflate_answer() writes */
#define NGX_HTTP_ACTIVITY_WS_ANSWER_MAX  128


typedef struct {
    unsigned        fin:1;
    unsigned        rsv1:1;     /* a compressed message begins */
    unsigned        masked:1;
    unsigned        opcode:4;
    size_t          header;     /* bytes before the payload */
    uint64_t        len;        /* payload bytes */
    unsigned char   mask[4];
} ngx_http_activity_ws_frame_t;


/*
 * Returns the header length (> 0) once the header is complete, 0 when more
 * bytes are needed, or minus a close code when the frame breaks the RFC:
 * reserved bits, unknown opcodes, unmasked client frames, fragmented or
 * long control frames, payloads longer than max.
 */
int ngx_http_activity_ws_parse(const unsigned char *p, size_t len,
    uint64_t max, ngx_http_activity_ws_frame_t *f);

/*
 * The same, on a connection that negotiated permessage-deflate: RSV1 is
 * then allowed on the first frame of a data message (never on a control
 * frame or a continuation).
 */
int ngx_http_activity_ws_parse_ext(const unsigned char *p, size_t len,
    uint64_t max, int deflate, ngx_http_activity_ws_frame_t *f);

void ngx_http_activity_ws_unmask(unsigned char *p, size_t len,
    const unsigned char mask[4]);

/* writes an unmasked server frame header; returns its length */
size_t ngx_http_activity_ws_header(unsigned char *dst, unsigned opcode,
    uint64_t len);

int ngx_http_activity_ws_utf8(const unsigned char *p, size_t len);


/* a permessage-deflate offer the server accepts (RFC 7692, 7.1) */

typedef struct {
    unsigned        server_max_window_bits;   /* 0: not in the offer */
    unsigned        client_max_window_bits;   /* 0: not in the offer,
                                                 15 when it had no value */
} ngx_http_activity_ws_deflate_t;

/*
 * Reads a Sec-WebSocket-Extensions value (a list of offers, the client's
 * preferred first) and takes the first permessage-deflate offer that
 * the server can honour: 1, with its parameters in d; 0 when there is
 * none; -1 when the value is not an extension list.
 */
int ngx_http_activity_ws_deflate_offer(const unsigned char *p, size_t len,
    ngx_http_activity_ws_deflate_t *d);

/* the answer to an accepted offer, without CRLF; returns its length */
size_t ngx_http_activity_ws_deflate_answer(unsigned char *dst,
    const ngx_http_activity_ws_deflate_t *d);


#endif /* _NGX_HTTP_ACTIVITY_WS_H_INCLUDED_ */
