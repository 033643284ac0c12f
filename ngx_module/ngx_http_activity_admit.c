
/*
 * Admission counters of the dashboard endpoint.
 *
 * One slab zone holds the number of sockets that upgraded but did not
 * authenticate yet, and a red-black tree of client addresses with their
 * open dashboard sockets (as ngx_http_limit_conn_module keeps them).  An
 * address leaves the tree with its last socket.
 *
 * Each process also keeps its own share, in a slot claimed by pid: its
 * pending sockets, and a node per address it holds sockets of (the
 * address followed by its slot's tag; the tag 0 is the address's total).
 * The share is given back when the process exits, or, when it crashed, by
 * the next process that claims a slot.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_activity_module.h"
#include "ngx_http_activity_admit.h"
#include "ngx_http_activity_status.h"


#define NGX_HTTP_ACTIVITY_ADMIT_SIZE   (1024 * 1024)

/* an address, then its slot's tag: 0 for the total, else slot + 1 */
#define NGX_HTTP_ACTIVITY_ADMIT_TAG    2
#define NGX_HTTP_ACTIVITY_ADMIT_KEY                                          \
    (NGX_HTTP_ACTIVITY_ADMIT_ADDR_LEN + NGX_HTTP_ACTIVITY_ADMIT_TAG)


typedef struct {
    ngx_rbtree_t            rbtree;
    ngx_rbtree_node_t       sentinel;
    ngx_atomic_t            pending;

    /* under the mutex, but pending_of: only its own process writes it */
    ngx_pid_t               pids[NGX_HTTP_ACTIVITY_WORKER_SLOTS];
    ngx_atomic_t            pending_of[NGX_HTTP_ACTIVITY_WORKER_SLOTS];
} ngx_http_activity_admit_sh_t;


/* from node->color on: the node's own fields, then the address */

typedef struct {
    u_char                  color;
    u_char                  len;
    u_short                 count;
    u_char                  data[1];
} ngx_http_activity_admit_node_t;


static ngx_int_t ngx_http_activity_admit_init(ngx_shm_zone_t *zone,
    void *data);
static void ngx_http_activity_admit_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_rbtree_node_t *ngx_http_activity_admit_find(
    ngx_http_activity_admit_sh_t *sh, ngx_str_t *key, uint32_t hash);
static ngx_rbtree_node_t *ngx_http_activity_admit_node(
    ngx_slab_pool_t *shpool, ngx_str_t *key);
static void ngx_http_activity_admit_tag(ngx_str_t *key, ngx_str_t *addr,
    ngx_uint_t tag);
static void ngx_http_activity_admit_drop(ngx_slab_pool_t *shpool,
    ngx_http_activity_admit_sh_t *sh, ngx_str_t *key, ngx_uint_t n);
static void ngx_http_activity_admit_give_back(ngx_slab_pool_t *shpool,
    ngx_http_activity_admit_sh_t *sh, ngx_uint_t slot);


/* this process's slot, NGX_ERROR when it has none */
static ngx_int_t  ngx_http_activity_admit_slot = NGX_ERROR;


ngx_int_t
ngx_http_activity_admit_zone(ngx_conf_t *cf, ngx_shm_zone_t **zone)
{
    ngx_str_t  name = ngx_string("activity_dashboard_admit");

    if (*zone) {
        return NGX_OK;
    }

    *zone = ngx_shared_memory_add(cf, &name, NGX_HTTP_ACTIVITY_ADMIT_SIZE,
                                  &ngx_http_activity_module);
    if (*zone == NULL) {
        return NGX_ERROR;
    }

    (*zone)->init = ngx_http_activity_admit_init;

    return NGX_OK;
}


static ngx_int_t
ngx_http_activity_admit_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t               *shpool;
    ngx_http_activity_admit_sh_t  *sh;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    /* counts of the old cycle's sockets stay true: they are still open */

    if (data) {
        zone->data = data;
        return NGX_OK;
    }

    if (zone->shm.exists) {
        zone->data = shpool->data;
        return NGX_OK;
    }

    sh = ngx_slab_calloc(shpool, sizeof(ngx_http_activity_admit_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel,
                    ngx_http_activity_admit_insert);

    shpool->data = sh;
    zone->data = sh;

    shpool->log_nomem = 0;

    return NGX_OK;
}


/* NGX_DECLINED: max sockets wait already */

ngx_int_t
ngx_http_activity_admit_pending(ngx_shm_zone_t *zone, ngx_uint_t max)
{
    ngx_http_activity_admit_sh_t  *sh = zone->data;

    if ((ngx_uint_t) ngx_atomic_fetch_add(&sh->pending, 1) >= max) {
        (void) ngx_atomic_fetch_add(&sh->pending, -1);
        return NGX_DECLINED;
    }

    if (ngx_http_activity_admit_slot != NGX_ERROR) {
        sh->pending_of[ngx_http_activity_admit_slot]++;
    }

    return NGX_OK;
}


void
ngx_http_activity_admit_pending_done(ngx_shm_zone_t *zone)
{
    ngx_http_activity_admit_sh_t  *sh = zone->data;

    (void) ngx_atomic_fetch_add(&sh->pending, -1);

    if (ngx_http_activity_admit_slot != NGX_ERROR) {
        sh->pending_of[ngx_http_activity_admit_slot]--;
    }
}


/*
 * NGX_OK: counted; NGX_DECLINED: the address has max sockets already, or
 * the zone is full.
 */

ngx_int_t
ngx_http_activity_admit_address(ngx_shm_zone_t *zone, ngx_str_t *key,
    ngx_uint_t max, ngx_log_t *log)
{
    u_char                           tbuf[NGX_HTTP_ACTIVITY_ADMIT_KEY];
    u_char                           obuf[NGX_HTTP_ACTIVITY_ADMIT_KEY];
    ngx_str_t                        tkey, okey;
    ngx_rbtree_node_t               *total, *own;
    ngx_slab_pool_t                 *shpool;
    ngx_http_activity_admit_sh_t    *sh;
    ngx_http_activity_admit_node_t  *an;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    sh = zone->data;

    tkey.data = tbuf;
    ngx_http_activity_admit_tag(&tkey, key, 0);

    okey.data = obuf;
    ngx_http_activity_admit_tag(&okey, key, ngx_http_activity_admit_slot + 1);

    ngx_shmtx_lock(&shpool->mutex);

    total = ngx_http_activity_admit_find(sh, &tkey,
                                         ngx_crc32_short(tkey.data,
                                                         tkey.len));
    if (total) {
        an = (ngx_http_activity_admit_node_t *) &total->color;

        if (an->count >= max || an->count == 0xffff) {
            ngx_shmtx_unlock(&shpool->mutex);
            return NGX_DECLINED;
        }
    }

    own = NULL;

    if (ngx_http_activity_admit_slot != NGX_ERROR) {
        own = ngx_http_activity_admit_find(sh, &okey,
                                           ngx_crc32_short(okey.data,
                                                           okey.len));
        if (own == NULL) {
            own = ngx_http_activity_admit_node(shpool, &okey);
            if (own == NULL) {
                goto full;
            }

            ngx_rbtree_insert(&sh->rbtree, own);
        }
    }

    if (total == NULL) {
        total = ngx_http_activity_admit_node(shpool, &tkey);
        if (total == NULL) {
            if (own) {
                an = (ngx_http_activity_admit_node_t *) &own->color;

                if (an->count == 0) {
                    ngx_rbtree_delete(&sh->rbtree, own);
                    ngx_slab_free_locked(shpool, own);
                }
            }

            goto full;
        }

        ngx_rbtree_insert(&sh->rbtree, total);
    }

    an = (ngx_http_activity_admit_node_t *) &total->color;
    an->count++;

    if (own) {
        an = (ngx_http_activity_admit_node_t *) &own->color;
        an->count++;
    }

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;

full:

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_log_error(NGX_LOG_ALERT, log, 0,
                  "activity: the dashboard admission zone is full");

    return NGX_DECLINED;
}


void
ngx_http_activity_admit_address_done(ngx_shm_zone_t *zone, ngx_str_t *key)
{
    u_char                         buf[NGX_HTTP_ACTIVITY_ADMIT_KEY];
    ngx_str_t                      tkey;
    ngx_slab_pool_t               *shpool;
    ngx_http_activity_admit_sh_t  *sh;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    sh = zone->data;

    tkey.data = buf;

    ngx_shmtx_lock(&shpool->mutex);

    ngx_http_activity_admit_tag(&tkey, key, 0);
    ngx_http_activity_admit_drop(shpool, sh, &tkey, 1);

    if (ngx_http_activity_admit_slot != NGX_ERROR) {
        ngx_http_activity_admit_tag(&tkey, key,
                                    ngx_http_activity_admit_slot + 1);
        ngx_http_activity_admit_drop(shpool, sh, &tkey, 1);
    }

    ngx_shmtx_unlock(&shpool->mutex);
}


/*
 * This process's slot: a free one, or one whose process is gone.  Every
 * slot of a process that is gone gives back what it counted.
 */

void
ngx_http_activity_admit_claim(ngx_shm_zone_t *zone, ngx_log_t *log)
{
    ngx_int_t                      own;
    ngx_uint_t                     i;
    ngx_pid_t                      pid;
    ngx_slab_pool_t               *shpool;
    ngx_http_activity_admit_sh_t  *sh;

    if (ngx_http_activity_admit_slot != NGX_ERROR) {
        return;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    sh = zone->data;
    own = NGX_ERROR;

    ngx_shmtx_lock(&shpool->mutex);

    for (i = 0; i < NGX_HTTP_ACTIVITY_WORKER_SLOTS; i++) {
        pid = sh->pids[i];

        if (pid != 0) {
            if (pid == ngx_pid || ngx_http_activity_status_alive(pid)) {
                continue;
            }

            ngx_http_activity_admit_give_back(shpool, sh, i);
            sh->pids[i] = 0;
        }

        if (own == NGX_ERROR) {
            own = i;
            sh->pids[i] = ngx_pid;
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);

    if (own == NGX_ERROR) {
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "activity: no free dashboard admission slot for "
                      "process %P, its counts stay if it crashes", ngx_pid);
        return;
    }

    ngx_http_activity_admit_slot = own;
}


/* the process exits: the sockets it counted are gone with it */

void
ngx_http_activity_admit_release(ngx_shm_zone_t *zone)
{
    ngx_slab_pool_t               *shpool;
    ngx_http_activity_admit_sh_t  *sh;

    if (ngx_http_activity_admit_slot == NGX_ERROR) {
        return;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    sh = zone->data;

    ngx_shmtx_lock(&shpool->mutex);

    ngx_http_activity_admit_give_back(shpool, sh,
                                      ngx_http_activity_admit_slot);
    sh->pids[ngx_http_activity_admit_slot] = 0;

    ngx_shmtx_unlock(&shpool->mutex);

    ngx_http_activity_admit_slot = NGX_ERROR;
}


/* with the mutex held: a slot's pending sockets and addresses leave */

static void
ngx_http_activity_admit_give_back(ngx_slab_pool_t *shpool,
    ngx_http_activity_admit_sh_t *sh, ngx_uint_t slot)
{
    u_char                           buf[NGX_HTTP_ACTIVITY_ADMIT_KEY];
    ngx_str_t                        addr, tkey;
    ngx_uint_t                       tag;
    ngx_rbtree_node_t               *node, *next, *total;
    ngx_http_activity_admit_node_t  *an;

    (void) ngx_atomic_fetch_add(&sh->pending,
                                - (ngx_atomic_int_t) sh->pending_of[slot]);
    sh->pending_of[slot] = 0;

    if (sh->rbtree.root == sh->rbtree.sentinel) {
        return;
    }

    tkey.data = buf;
    node = ngx_rbtree_min(sh->rbtree.root, sh->rbtree.sentinel);

    while (node) {
        next = ngx_rbtree_next(&sh->rbtree, node);
        an = (ngx_http_activity_admit_node_t *) &node->color;

        tag = (an->data[an->len - 2] << 8) | an->data[an->len - 1];

        if (tag != slot + 1) {
            node = next;
            continue;
        }

        addr.data = an->data;
        addr.len = an->len - NGX_HTTP_ACTIVITY_ADMIT_TAG;
        ngx_http_activity_admit_tag(&tkey, &addr, 0);

        total = ngx_http_activity_admit_find(sh, &tkey,
                                             ngx_crc32_short(tkey.data,
                                                             tkey.len));
        /* the total may go with the node: then it is not the next one */

        if (total && total == next
            && ((ngx_http_activity_admit_node_t *) &total->color)->count
               <= an->count)
        {
            next = ngx_rbtree_next(&sh->rbtree, next);
        }

        ngx_http_activity_admit_drop(shpool, sh, &tkey, an->count);

        ngx_rbtree_delete(&sh->rbtree, node);
        ngx_slab_free_locked(shpool, node);

        node = next;
    }
}


/* with the mutex held: n sockets of a key leave, and the key at 0 */

static void
ngx_http_activity_admit_drop(ngx_slab_pool_t *shpool,
    ngx_http_activity_admit_sh_t *sh, ngx_str_t *key, ngx_uint_t n)
{
    ngx_rbtree_node_t               *node;
    ngx_http_activity_admit_node_t  *an;

    node = ngx_http_activity_admit_find(sh, key,
                                        ngx_crc32_short(key->data, key->len));
    if (node == NULL) {
        return;
    }

    an = (ngx_http_activity_admit_node_t *) &node->color;

    if (an->count > n) {
        an->count -= n;
        return;
    }

    ngx_rbtree_delete(&sh->rbtree, node);
    ngx_slab_free_locked(shpool, node);
}


/* with the mutex held: a node for key, counting 0, not in the tree yet */

static ngx_rbtree_node_t *
ngx_http_activity_admit_node(ngx_slab_pool_t *shpool, ngx_str_t *key)
{
    ngx_rbtree_node_t               *node;
    ngx_http_activity_admit_node_t  *an;

    node = ngx_slab_alloc_locked(shpool,
                                 offsetof(ngx_rbtree_node_t, color)
                                 + offsetof(ngx_http_activity_admit_node_t,
                                            data)
                                 + key->len);
    if (node == NULL) {
        return NULL;
    }

    an = (ngx_http_activity_admit_node_t *) &node->color;

    node->key = ngx_crc32_short(key->data, key->len);
    an->len = (u_char) key->len;
    an->count = 0;
    ngx_memcpy(an->data, key->data, key->len);

    return node;
}


/* key->data has NGX_HTTP_ACTIVITY_ADMIT_KEY bytes: the address, its tag */

static void
ngx_http_activity_admit_tag(ngx_str_t *key, ngx_str_t *addr, ngx_uint_t tag)
{
    u_char  *p;

    p = ngx_cpymem(key->data, addr->data, addr->len);
    *p++ = (u_char) (tag >> 8);
    *p++ = (u_char) tag;

    key->len = p - key->data;
}


ngx_int_t
ngx_http_activity_admit_key(ngx_connection_t *c, u_char *buf, ngx_str_t *key)
{
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    switch (c->sockaddr->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) c->sockaddr;
        key->len = sizeof(sin->sin_addr);
        key->data = ngx_cpymem(buf, &sin->sin_addr, key->len) - key->len;
        return NGX_OK;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) c->sockaddr;
        key->len = sizeof(sin6->sin6_addr);
        key->data = ngx_cpymem(buf, &sin6->sin6_addr, key->len) - key->len;
        return NGX_OK;
#endif

    default:
        return NGX_DECLINED;
    }
}


static ngx_rbtree_node_t *
ngx_http_activity_admit_find(ngx_http_activity_admit_sh_t *sh,
    ngx_str_t *key, uint32_t hash)
{
    ngx_int_t                        rc;
    ngx_rbtree_node_t               *node, *sentinel;
    ngx_http_activity_admit_node_t  *an;

    node = sh->rbtree.root;
    sentinel = sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash != node->key) {
            node = (hash < node->key) ? node->left : node->right;
            continue;
        }

        an = (ngx_http_activity_admit_node_t *) &node->color;

        rc = ngx_memn2cmp(key->data, an->data, key->len, (size_t) an->len);

        if (rc == 0) {
            return node;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_activity_admit_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t               **p;
    ngx_http_activity_admit_node_t   *an, *ant;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            an = (ngx_http_activity_admit_node_t *) &node->color;
            ant = (ngx_http_activity_admit_node_t *) &temp->color;

            p = (ngx_memn2cmp(an->data, ant->data, an->len, ant->len) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}
