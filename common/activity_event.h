/*
 * One event from the queue, parsed and validated (the worker and the
 * module's ingest share this; see activity_event.c).
 */

#ifndef ACTIVITY_EVENT_H
#define ACTIVITY_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <jansson.h>


#define EVENT_TYPE_MAX  64

/*
 * Field limits, in bytes of UTF-8 (decoded: escapes count as the
 * character they stand for), the same for the module (which cuts at a
 * character boundary), ingest (400) and the worker (cuts strings, refuses
 * details). userId stays well under what a btree index entry holds
 * (2704 bytes); details is measured as compact JSON.
 */
#define EVENT_USER_ID_MAX      256
#define EVENT_USER_AGENT_MAX   1024
#define EVENT_ENDPOINT_MAX     2048
#define EVENT_METHOD_MAX       32
#define EVENT_DETAILS_MAX      8192


#define EVENT_CUT_USER_ID      0x01
#define EVENT_CUT_USER_AGENT   0x02
#define EVENT_CUT_ENDPOINT     0x04
#define EVENT_CUT_METHOD       0x08


/*
 * Field pointers borrow from root, from strings (an event read without
 * a jansson tree: root is NULL then) or from the small buffers here; all
 * of them stay valid until event_free(). A NULL pointer / has_* == 0
 * means SQL NULL.
 */
typedef struct {
    json_t      *root;
    char         id[37];                    /* lower-case UUID */
    const char  *type;
    const char  *user_id;
    const char  *timestamp;
    const char  *user_agent;
    const char  *endpoint;
    const char  *method;
    const char  *text;                      /* the event as queued */
    char        *repaired;                  /* text, when it was repaired */
    char        *strings;                   /* the fields, without a tree */
    unsigned     cut;                       /* EVENT_CUT_* */
    int64_t      ts_ms;                     /* timestamp, epoch ms UTC */
    double       duration_ms;
    int          status;
    int          has_status;
    int          has_duration;
    int          has_ip;
    char         ip[INET6_ADDRSTRLEN];      /* canonical text form */
    char         user_buf[24];              /* a numeric userId as text */
} event_t;


/*
 * Parse the queue's JSON text. Returns 0 with ev filled, or -1 with a
 * short reason in err (ev then needs no event_free()). Everything that
 * PostgreSQL would reject is refused here, so one bad event can only
 * ever be dead-lettered, never fail the COPY of a whole batch.
 * text must stay valid until event_free(): metadata.details is taken
 * from it by PostgreSQL (see pgwriter.c). Text that is not valid UTF-8,
 * or holds \u0000 or a lone surrogate escape, is repaired first (each
 * becomes U+FFFD): ev->text is then the repaired copy.
 */
int event_parse(event_t *ev, const char *text, size_t len, char *err,
    size_t errlen);

/*
 * The same, always through a jansson tree (event_parse() reads the
 * common shape without one): for tests, which compare the two.
 */
int event_parse_tree(event_t *ev, const char *text, size_t len, char *err,
    size_t errlen);

void event_free(event_t *ev);

/* Exposed for tests: the checks event_parse() applies. */
int event_valid_uuid(const char *s);
int event_valid_type(const char *s);
int event_valid_timestamp(const char *s);

/*
 * The number of \u escapes in s that no store can hold (\u0000, lone
 * surrogates); with fix, each is rewritten in place as \ufffd.
 */
size_t event_bad_escapes(char *s, size_t len, int fix);

/* Parse a timestamp event_valid_timestamp() accepts: 0, or -1. */
int event_timestamp_ms(const char *s, int64_t *ms);


#endif /* ACTIVITY_EVENT_H */
