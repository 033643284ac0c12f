/*
 * activity-worker: shutdown signals.
 */

#ifndef ACTIVITY_SIGNALS_H
#define ACTIVITY_SIGNALS_H

#include <pthread.h>


/*
 * SIGTERM / SIGINT: the first asks the loop to finish the batch in hand
 * and exit; a second exits at once (the processing list still holds the
 * batch, so nothing is lost). SIGPIPE is ignored: a dropped Redis socket
 * must surface as a write error, not kill the process.
 */
void signals_install(void);

/* Non-zero once a stop was requested. */
int signals_stop_requested(void);

/*
 * pthread_create() of a thread that has SIGTERM, SIGINT, SIGHUP and
 * SIGPIPE blocked (it inherits the mask set around the call), so that
 * they stay with the main loop. Returns pthread_create()'s result.
 */
int signals_thread_create(pthread_t *thread, void *(*start)(void *),
    void *arg);


#endif /* ACTIVITY_SIGNALS_H */
