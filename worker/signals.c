/*
 * activity-worker: shutdown signals.
 *
 * As in Redis's server.c, the handler only records the request; the
 * main loop notices it (every blocking call has a finite timeout) and
 * does the work. The one exception is the second signal, which must work
 * even when the loop is stuck, so it writes one line and _exit()s using
 * only async-signal-safe calls.
 *
 * SIGHUP, which daemons get from a closing terminal or a "reload" that
 * sends it to every process of a unit, is ignored: its default action
 * would kill the worker without draining. The worker logs to stderr,
 * which has no file to reopen, and reads its settings once.
 */

#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "signals.h"
#include "timeutil.h"


static void signals_handler(int sig);


static volatile sig_atomic_t  stop_requested;


void
signals_install(void)
{
    struct sigaction  sa;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);

    sa.sa_handler = signals_handler;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}


int
signals_stop_requested(void)
{
    return stop_requested != 0;
}


int
signals_thread_create(pthread_t *thread, void *(*start)(void *), void *arg)
{
    sigset_t  block, old;
    int       rc;

    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &block, &old);

    rc = pthread_create(thread, NULL, start, arg);

    pthread_sigmask(SIG_SETMASK, &old, NULL);

    return rc;
}


static void
signals_handler(int sig)
{
    static const char  tail[] =
        " level=warn msg=\"second signal, exiting now\"\n";
    struct timespec    ts;
    char               line[4 + TIME_ISO_LEN + sizeof(tail)];
    size_t             n;

    (void) sig;

    if (!stop_requested) {
        stop_requested = 1;
        return;
    }

    clock_gettime(CLOCK_REALTIME, &ts);
    memcpy(line, "ts=", 3);
    time_iso(line + 3, &ts);
    n = 3 + TIME_ISO_LEN - 1;
    memcpy(line + n, tail, sizeof(tail) - 1);
    n += sizeof(tail) - 1;

    if (write(STDERR_FILENO, line, n) < 0) {
        /* nothing left to tell anyone */
    }

    _exit(1);
}
