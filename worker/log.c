/*
 * activity-worker: structured logging (logfmt on stderr).
 *
 * Each line is assembled in one buffer and written with one write(2), so
 * lines from several workers sharing a log pipe never interleave.
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "timeutil.h"


#define LOG_LINE_MAX  4096


static const char *const  level_names[] = { "debug", "info", "warn", "error" };

static log_level_e        log_level = LOG_INFO;


int
log_parse_level(const char *name, log_level_e *level)
{
    size_t  i;

    for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = (log_level_e) i;
            return 0;
        }
    }

    return -1;
}


void
log_set_level(log_level_e level)
{
    log_level = level;
}


int
log_enabled(log_level_e level)
{
    return level >= log_level;
}


void
log_write(log_level_e level, const char *msg, const char *fmt, ...)
{
    va_list  ap;
    char     line[LOG_LINE_MAX], ts[TIME_ISO_LEN], q[512];
    size_t   n;
    int      rc;

    if (level < log_level) {
        return;
    }

    time_iso_now(ts);

    /* msg is always quoted, as in the documented format */
    log_quote(q, sizeof(q), msg);
    if (q[0] != '"') {
        rc = snprintf(line, sizeof(line), "ts=%s level=%s msg=\"%s\"",
                      ts, level_names[level], q);
    } else {
        rc = snprintf(line, sizeof(line), "ts=%s level=%s msg=%s",
                      ts, level_names[level], q);
    }

    n = rc < 0 ? 0 : (size_t) rc;

    if (fmt != NULL && n + 1 < sizeof(line)) {
        line[n++] = ' ';
        va_start(ap, fmt);
        rc = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
        n += rc < 0 ? 0 : (size_t) rc;
    }

    if (n > sizeof(line) - 2) {
        n = sizeof(line) - 2;   /* truncated: still one whole line */
    }

    line[n++] = '\n';

    if (write(STDERR_FILENO, line, n) < 0) {
        /* stderr is gone; there is nobody to tell */
    }
}


const char *
log_quote(char *buf, size_t size, const char *s)
{
    const char  *p;
    size_t       len, n;
    int          plain;

    if (size < 3) {
        if (size > 0) {
            buf[0] = '\0';
        }
        return buf;
    }

    if (s == NULL) {
        s = "";
    }

    len = strlen(s);
    while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r')) {
        len--;
    }

    plain = len > 0;
    for (p = s; p < s + len; p++) {
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f) {
            plain = 0;
            break;
        }
    }

    if (plain && len < size) {
        memcpy(buf, s, len);
        buf[len] = '\0';
        return buf;
    }

    n = 0;
    buf[n++] = '"';

    /* keep room for a two-byte escape, the closing quote and the NUL */
    for (p = s; p < s + len && n + 4 < size; p++) {
        switch (*p) {
        case '"':
        case '\\':
            buf[n++] = '\\';
            buf[n++] = *p;
            break;
        case '\n':
            buf[n++] = '\\';
            buf[n++] = 'n';
            break;
        case '\r':
            buf[n++] = '\\';
            buf[n++] = 'r';
            break;
        case '\t':
            buf[n++] = '\\';
            buf[n++] = 't';
            break;
        default:
            buf[n++] = ((unsigned char) *p < ' ') ? '?' : *p;
        }
    }

    buf[n++] = '"';
    buf[n] = '\0';
    return buf;
}
