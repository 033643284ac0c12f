/*
 * activity-worker: one arena of memory for the parsed events of a batch.
 */

#ifndef ACTIVITY_EVMEM_H
#define ACTIVITY_EVMEM_H

#include <stddef.h>


typedef struct evmem_s  evmem_t;


/* Route jansson's allocations through evmem; once, before any thread. */
void evmem_init(void);

evmem_t *evmem_new(void);

/*
 * While an arena is in use on a thread, what jansson allocates there
 * comes from it, and freeing it is a no-op; NULL: the heap again.
 */
void evmem_use(evmem_t *m);

/* Everything allocated from m at once: its trees must not be decref'd. */
void evmem_free(evmem_t *m);


#endif /* ACTIVITY_EVMEM_H */
