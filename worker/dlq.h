/*
 * activity-worker: dead letters.
 */

#ifndef ACTIVITY_DLQ_H
#define ACTIVITY_DLQ_H

#include <stddef.h>

#include <hiredis/hiredis.h>


/*
 * Build {"event":<text>,"error":<reason>,"attempts":N,"failedAt":<now>}
 * for an event that cannot be stored. text is kept verbatim as a JSON
 * string (bytes that are not UTF-8 become U+FFFD so the letter itself is
 * always valid JSON). Returns a malloc'd string, NULL when out of memory.
 */
char *dlq_letter(const char *text, size_t len, const char *reason,
    int attempts);

/*
 * "activity-worker dlq list [--limit N] | replay [--all | N] | purge",
 * argv[0] being "dlq"; the worker's own flags (--redis, --queue, --dead)
 * and environment apply. Returns the exit status: 0, 1 on a Redis
 * error, 2 on bad usage.
 */
int dlq_main(int argc, char **argv);


#endif /* ACTIVITY_DLQ_H */
