/*
 * activity-worker: clocks and time formatting.
 */

#ifndef ACTIVITY_TIMEUTIL_H
#define ACTIVITY_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>


/* "2026-11-27T12:00:00.123Z" plus NUL */
#define TIME_ISO_LEN  25


/* Monotonic milliseconds: for deadlines, never for display. */
int64_t time_mono_ms(void);

/* Monotonic microseconds: for measuring how long something took. */
int64_t time_mono_us(void);

/*
 * Format a wall-clock time as ISO-8601 UTC with milliseconds. Pure
 * arithmetic (no gmtime, no locale), so it is async-signal-safe and the
 * signal handler can stamp its one log line too.
 */
void time_iso(char buf[TIME_ISO_LEN], const struct timespec *ts);

/* time_iso() of the current wall-clock time. */
void time_iso_now(char buf[TIME_ISO_LEN]);

/*
 * Sleep up to ms milliseconds, waking early once a stop was requested.
 * Returns 0 after the full sleep, -1 when cut short by a stop request.
 */
int time_sleep_ms(int64_t ms);


#endif /* ACTIVITY_TIMEUTIL_H */
