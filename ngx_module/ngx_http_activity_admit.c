
/*
 * Admission counters of the dashboard endpoint.
 *
 * One slab zone holds the number of sockets that upgraded but did not
 * authenticate yet, and a red-black tree of client addresses with their
 * open dashboard sockets (as ngx_http_limit_conn_module keeps them).  An
 * address leaves the tree with its last socket.
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_activity_module.h"
#include "ngx_http_activity_admit.h"


#define NGX_HTTP_ACTIVITY_ADMIT_SIZE   (1024 * 1024)


typedef struct {
    ngx_rbtree_t            rbtree;
    ngx_rbtree_node_t       sentinel;
    ngx_atomic_t            pending;
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

    return NGX_OK;
}


void
ngx_http_activity_admit_pending_done(ngx_shm_zone_t *zone)
{
    ngx_http_activity_admit_sh_t  *sh = zone->data;

    (void) ngx_atomic_fetch_add(&sh->pending, -1);
}


/*
 * NGX_OK: counted; NGX_DECLINED: the address has max sockets already, or
 * the zone is full.
 */

ngx_int_t
ngx_http_activity_admit_address(ngx_shm_zone_t *zone, ngx_str_t *key,
    ngx_uint_t max, ngx_log_t *log)
{
    size_t                           n;
    uint32_t                         hash;
    ngx_rbtree_node_t               *node;
    ngx_slab_pool_t                 *shpool;
    ngx_http_activity_admit_sh_t    *sh;
    ngx_http_activity_admit_node_t  *an;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    sh = zone->data;
    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&shpool->mutex);

    node = ngx_http_activity_admit_find(sh, key, hash);

    if (node) {
        an = (ngx_http_activity_admit_node_t *) &node->color;

        if (an->count >= max || an->count == 0xffff) {
            ngx_shmtx_unlock(&shpool->mutex);
            return NGX_DECLINED;
        }

        an->count++;

        ngx_shmtx_unlock(&shpool->mutex);
        return NGX_OK;
    }

    n = offsetof(ngx_rbtree_node_t, color)
        + offsetof(ngx_http_activity_admit_node_t, data) + key->len;

    node = ngx_slab_alloc_locked(shpool, n);

    if (node == NULL) {
        ngx_shmtx_unlock(&shpool->mutex);

        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "activity: the dashboard admission zone is full");
        return NGX_DECLINED;
    }

    an = (ngx_http_activity_admit_node_t *) &node->color;

    node->key = hash;
    an->len = (u_char) key->len;
    an->count = 1;
    ngx_memcpy(an->data, key->data, key->len);

    ngx_rbtree_insert(&sh->rbtree, node);

    ngx_shmtx_unlock(&shpool->mutex);

    return NGX_OK;
}


void
ngx_http_activity_admit_address_done(ngx_shm_zone_t *zone, ngx_str_t *key)
{
    uint32_t                         hash;
    ngx_slab_pool_t                 *shpool;
    ngx_rbtree_node_t               *node;
    ngx_http_activity_admit_sh_t    *sh;
    ngx_http_activity_admit_node_t  *an;

    shpool = (ngx_slab_pool_t *) zone->shm.addr;
    sh = zone->data;
    hash = ngx_crc32_short(key->data, key->len);

    ngx_shmtx_lock(&shpool->mutex);

    node = ngx_http_activity_admit_find(sh, key, hash);

    if (node) {
        an = (ngx_http_activity_admit_node_t *) &node->color;

        if (--an->count == 0) {
            ngx_rbtree_delete(&sh->rbtree, node);
            ngx_slab_free_locked(shpool, node);
        }
    }

    ngx_shmtx_unlock(&shpool->mutex);
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
