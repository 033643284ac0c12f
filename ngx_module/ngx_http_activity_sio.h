
/*
 * Engine.IO 4 / Socket.IO 5 packets inside WebSocket text frames, free of
 * nginx types so that unit tests and fuzzers link it alone.
 */


#ifndef _NGX_HTTP_ACTIVITY_SIO_H_INCLUDED_
#define _NGX_HTTP_ACTIVITY_SIO_H_INCLUDED_


#include <stddef.h>


/* Engine.IO packet types */
#define NGX_HTTP_ACTIVITY_EIO_OPEN        '0'
#define NGX_HTTP_ACTIVITY_EIO_CLOSE       '1'
#define NGX_HTTP_ACTIVITY_EIO_PING        '2'
#define NGX_HTTP_ACTIVITY_EIO_PONG        '3'
#define NGX_HTTP_ACTIVITY_EIO_MESSAGE     '4'
#define NGX_HTTP_ACTIVITY_EIO_UPGRADE     '5'
#define NGX_HTTP_ACTIVITY_EIO_NOOP        '6'

/* Socket.IO packet types */
#define NGX_HTTP_ACTIVITY_SIO_CONNECT        0
#define NGX_HTTP_ACTIVITY_SIO_DISCONNECT     1
#define NGX_HTTP_ACTIVITY_SIO_EVENT          2
#define NGX_HTTP_ACTIVITY_SIO_ACK            3
#define NGX_HTTP_ACTIVITY_SIO_CONNECT_ERROR  4

#define NGX_HTTP_ACTIVITY_SIO_ACK_MAX        999999999L


typedef struct {
    int                   type;
    const unsigned char  *nsp;       /* "/" when the packet names none */
    size_t                nsp_len;
    long                  ack;       /* -1: no ack asked */
    const unsigned char  *data;      /* JSON text, may be empty */
    size_t                data_len;
} ngx_http_activity_sio_packet_t;


/*
 * Parses the Socket.IO packet that follows an Engine.IO "4"; returns 0, or
 * -1 for anything malformed, binary (types 5 and 6), or not from a client.
 */
int ngx_http_activity_sio_parse(const unsigned char *p, size_t len,
    ngx_http_activity_sio_packet_t *pkt);


#endif /* _NGX_HTTP_ACTIVITY_SIO_H_INCLUDED_ */
