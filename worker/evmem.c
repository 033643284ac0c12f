/*
 * activity-worker: one arena of memory for the parsed events of a batch.
 *
 * jansson builds a tree of small allocations for every event (a
 * hashtable an object, a copy of every key and string); the store
 * thread freed them one by one after the batch. Freeing the trees was
 * about a third of the store thread's CPU, and malloc a fifth of the
 * parse. So, while the consumer parses the events of a batch, jansson
 * allocates from that batch's arena (a bump pointer in large chunks),
 * and the batch is freed whole: its trees are dropped, never walked.
 *
 * jansson has one allocator for the whole process (json_set_alloc_funcs),
 * so outside an arena (other threads, other JSON) allocations go to the
 * heap unchanged: what json_dumps() returns is still free()d by its
 * callers. A free while an arena is in use is a no-op for memory of that
 * arena (jansson frees buffers it outgrew while parsing, and the tree of
 * an event it refuses) and free() for anything else.
 */

#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "evmem.h"


#define EVMEM_CHUNK   (256 * 1024)
#define EVMEM_ALIGN   16


typedef struct evmem_chunk_s  evmem_chunk_t;

struct evmem_chunk_s {
    evmem_chunk_t  *next;
    char           *start;
    char           *pos;
    char           *end;
};

struct evmem_s {
    evmem_chunk_t  *chunks;          /* newest first */
};


static void *evmem_alloc(size_t size);
static void evmem_release(void *p);
static evmem_chunk_t *evmem_chunk(size_t room);


static __thread evmem_t  *evmem_current;


void
evmem_init(void)
{
    json_set_alloc_funcs(evmem_alloc, evmem_release);
}


evmem_t *
evmem_new(void)
{
    return calloc(1, sizeof(evmem_t));
}


void
evmem_use(evmem_t *m)
{
    evmem_current = m;
}


void
evmem_free(evmem_t *m)
{
    evmem_chunk_t  *c, *next;

    if (m == NULL) {
        return;
    }

    for (c = m->chunks; c != NULL; c = next) {
        next = c->next;
        free(c);
    }

    free(m);
}


static void *
evmem_alloc(size_t size)
{
    evmem_chunk_t  *c;
    evmem_t        *m;
    void           *p;

    m = evmem_current;

    if (m == NULL) {
        return malloc(size);
    }

    size = (size + EVMEM_ALIGN - 1) & ~((size_t) EVMEM_ALIGN - 1);

    if (size > EVMEM_CHUNK / 4) {
        /* a chunk of its own, behind the one being filled */
        c = evmem_chunk(size);
        if (c == NULL) {
            return NULL;
        }

        c->pos = c->end;

        if (m->chunks != NULL) {
            c->next = m->chunks->next;
            m->chunks->next = c;
        } else {
            m->chunks = c;
        }

        return c->start;
    }

    c = m->chunks;

    if (c == NULL || (size_t) (c->end - c->pos) < size) {
        c = evmem_chunk(EVMEM_CHUNK);
        if (c == NULL) {
            return NULL;
        }

        c->next = m->chunks;
        m->chunks = c;
    }

    p = c->pos;
    c->pos += size;
    return p;
}


static void
evmem_release(void *p)
{
    evmem_chunk_t  *c;
    evmem_t        *m;

    m = evmem_current;

    if (p == NULL) {
        return;
    }

    for (c = m ? m->chunks : NULL; c != NULL; c = c->next) {
        if ((char *) p >= c->start && (char *) p < c->end) {
            return;
        }
    }

    free(p);
}


/* An empty chunk of room bytes. */
static evmem_chunk_t *
evmem_chunk(size_t room)
{
    evmem_chunk_t  *c;
    size_t          head;

    head = (sizeof(evmem_chunk_t) + EVMEM_ALIGN - 1)
           & ~((size_t) EVMEM_ALIGN - 1);

    c = malloc(head + room);
    if (c == NULL) {
        return NULL;
    }

    c->next = NULL;
    c->start = (char *) c + head;
    c->pos = c->start;
    c->end = c->start + room;

    return c;
}
