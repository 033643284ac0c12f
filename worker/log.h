/*
 * activity-worker: structured logging (logfmt on stderr).
 *
 *   ts=2026-11-27T12:00:00.123Z level=info msg="batch stored" events=500
 *
 * The caller formats the key=value tail with printf; values that may hold
 * spaces, quotes or newlines (error texts, URLs) go through log_quote().
 */

#ifndef ACTIVITY_LOG_H
#define ACTIVITY_LOG_H

#include <stddef.h>


typedef enum {
    LOG_DEBUG = 0,
    LOG_INFO,
    LOG_WARN,
    LOG_ERROR
} log_level_e;


/* Parse "debug", "info", "warn", "error"; -1 when unknown. */
int log_parse_level(const char *name, log_level_e *level);

void log_set_level(log_level_e level);

int log_enabled(log_level_e level);

/* One line: msg is always quoted; fmt (may be NULL) adds key=value pairs. */
void log_write(log_level_e level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Render s as a logfmt value into buf: bare when it is a plain token,
 * otherwise double-quoted with \" \\ \n \r \t escaped; trailing newlines
 * (libpq ends its messages with one) are dropped. Returns buf.
 */
const char *log_quote(char *buf, size_t size, const char *s);


#define log_debug(msg, ...)  log_write(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...)   log_write(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...)   log_write(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...)  log_write(LOG_ERROR, msg, __VA_ARGS__)


#endif /* ACTIVITY_LOG_H */
