/*
 * activity-worker: clocks and time formatting.
 *
 * Deadlines use CLOCK_MONOTONIC so a wall-clock step (NTP, an operator)
 * can neither stall a batch nor fire the hourly maintenance early.
 */

#include <errno.h>
#include <time.h>

#include "signals.h"
#include "timeutil.h"


static void put_num(char *p, long v, int width);
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d);


int64_t
time_mono_ms(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


int64_t
time_mono_us(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}


void
time_iso(char buf[TIME_ISO_LEN], const struct timespec *ts)
{
    int64_t   days, secs, y;
    unsigned  m, d;

    days = ts->tv_sec / 86400;
    secs = ts->tv_sec % 86400;
    if (secs < 0) {
        secs += 86400;
        days--;
    }

    civil_from_days(days, &y, &m, &d);

    /* YYYY-MM-DDTHH:MM:SS.mmmZ */
    put_num(buf, (long) y, 4);
    buf[4] = '-';
    put_num(buf + 5, m, 2);
    buf[7] = '-';
    put_num(buf + 8, d, 2);
    buf[10] = 'T';
    put_num(buf + 11, (long) (secs / 3600), 2);
    buf[13] = ':';
    put_num(buf + 14, (long) (secs / 60 % 60), 2);
    buf[16] = ':';
    put_num(buf + 17, (long) (secs % 60), 2);
    buf[19] = '.';
    put_num(buf + 20, ts->tv_nsec / 1000000, 3);
    buf[23] = 'Z';
    buf[24] = '\0';
}


void
time_iso_now(char buf[TIME_ISO_LEN])
{
    struct timespec  ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    time_iso(buf, &ts);
}


int
time_sleep_ms(int64_t ms)
{
    struct timespec  ts;
    int64_t          deadline, left;

    deadline = time_mono_ms() + ms;

    /*
     * Sleep in slices: a signal does interrupt nanosleep, but one that
     * lands between the flag test and the call would otherwise be
     * noticed only after the whole sleep.
     */
    for ( ;; ) {
        if (signals_stop_requested()) {
            return -1;
        }

        left = deadline - time_mono_ms();
        if (left <= 0) {
            return 0;
        }

        if (left > 100) {
            left = 100;
        }

        ts.tv_sec = 0;
        ts.tv_nsec = (long) left * 1000000;
        (void) nanosleep(&ts, NULL);
    }
}


/* Zero-padded decimal, fixed width; v is never negative here. */
static void
put_num(char *p, long v, int width)
{
    while (width-- > 0) {
        p[width] = (char) ('0' + v % 10);
        v /= 10;
    }
}


/*
 * Days since 1970-01-01 to a proleptic Gregorian date (the well-known
 * era-based algorithm: 400-year eras of 146097 days, years starting in
 * March so the leap day falls last).
 */
static void
civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t   era, yy;
    unsigned  doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned) (z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    yy = (int64_t) yoe + era * 400;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yy + (*m <= 2);
}
