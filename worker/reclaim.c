/*
 * activity-worker: heartbeat, the registry of workers, the lock on a
 * worker id, and requeueing the batches of dead workers.
 *
 * Every worker keeps "activity:alive:<id>" set with a TTL while it runs;
 * its value is a token naming this very process (host:pid:random), so
 * the key is also a lock on the id: a second process started with the
 * same --id finds it held, waits one TTL (a crashed previous life's key
 * lapses by then) and, if it is still renewed, refuses to run. Each
 * heartbeat also records the worker in the sorted set "activity:workers"
 * (id -> last heartbeat, ms of Redis's clock).
 *
 * Once a TTL each live worker reads that registry (a handful of ids,
 * never a SCAN of the keyspace, which on a Redis shared with millions of
 * other keys takes tens of seconds) and, for any id whose heartbeat is
 * gone, moves the events of "activity:processing:<id>" back onto the
 * queue:
 *
 *   LMOVE activity:processing:<dead> <queue> LEFT RIGHT    until nil
 *
 * The processing list holds the newest event at its left; each LMOVE
 * takes the newest left and puts it at the right of the queue, the end
 * consumers take from, so the oldest ends up next in line: order is kept.
 * Each move is atomic, so two workers reclaiming the same list cannot
 * duplicate an event, and a crash in the middle loses none. An id whose
 * list is empty and whose heartbeat is gone leaves the registry.
 *
 * A worker whose heartbeat lapsed while it was only slow gets its batch
 * stored twice at worst, which the writer and the counters make
 * harmless (ids are idempotency keys).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "log.h"
#include "reclaim.h"
#include "redisconn.h"
#include "timeutil.h"


#define RECLAIM_CHUNK         64


/*
 * KEYS: alive, registry; ARGV: token, ttl (s), id. Renews the heartbeat
 * unless another process holds it ({0, holder}). The first write is
 * EXPIRE, which Redis allows at maxmemory (it checks only a script's
 * first write), so a worker keeps, and a restarted worker takes, its
 * heartbeat when Redis is full: the worker is what drains a full Redis,
 * so it must be able to start then. The key is a few dozen bytes.
 */
static const char  reclaim_beat_script[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur and cur ~= ARGV[1] then return { 0, cur } end\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[2])\n"
    "if not cur then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n"
    "end\n"
    "local t = redis.call('TIME')\n"
    "redis.pcall('ZADD', KEYS[2], string.format('%d',\n"
    "  tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)), ARGV[3])\n"
    "return { 1, '' }\n";

/* KEYS: alive, registry, processing; ARGV: token, id */
static const char  reclaim_bye_script[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  if redis.call('LLEN', KEYS[3]) == 0 then\n"
    "    redis.call('ZREM', KEYS[2], ARGV[2])\n"
    "  end\n"
    "end\n"
    "return 1\n";

/* KEYS: alive, registry, processing; ARGV: id. Forget a finished id. */
static const char  reclaim_forget_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0\n"
    "   and redis.call('LLEN', KEYS[3]) == 0 then\n"
    "  redis.call('ZREM', KEYS[2], ARGV[1])\n"
    "end\n"
    "return 1\n";


static int reclaim_key(reclaim_t *r, redisContext *rc, const char *id,
    char *err, size_t errlen);
static int reclaim_move(reclaim_t *r, redisContext *rc, const char *key,
    long *moved, char *err, size_t errlen);
static redisReply *reclaim_eval(redisContext *rc, const char *script,
    int nkeys, const char **args, int nargs, char *err, size_t errlen);


int
reclaim_init(reclaim_t *r, const settings_t *settings, const char *proc_key)
{
    unsigned char  rnd[6];
    char           host[64];
    size_t         i;
    int            n;

    memset(r, 0, sizeof(*r));
    r->settings = settings;
    r->proc_key = proc_key;

    if (gethostname(host, sizeof(host)) != 0) {
        snprintf(host, sizeof(host), "unknown");
    }
    host[sizeof(host) - 1] = '\0';

    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t) sizeof(rnd)) {
        for (i = 0; i < sizeof(rnd); i++) {
            rnd[i] = (unsigned char) ((time_mono_us() >> (i * 3)) ^ getpid());
        }
    }

    n = snprintf(r->token, sizeof(r->token), "%s:%d:", host, (int) getpid());
    for (i = 0; i < sizeof(rnd) && n + 3 < (int) sizeof(r->token); i++) {
        n += snprintf(r->token + n, sizeof(r->token) - (size_t) n, "%02x",
                      rnd[i]);
    }

    if (asprintf(&r->alive_key, RECLAIM_ALIVE_PREFIX "%s",
                 settings->worker_id) < 0)
    {
        r->alive_key = NULL;
        return -1;
    }

    return 0;
}


void
reclaim_free(reclaim_t *r)
{
    free(r->alive_key);
    r->alive_key = NULL;
}


int
reclaim_lost(const reclaim_t *r)
{
    return r->lost;
}


int
reclaim_heartbeat(reclaim_t *r, redisContext *rc, int force, char *err,
    size_t errlen)
{
    redisReply  *reply;
    const char  *args[6];
    int64_t      now, every;
    char         ttl[16], q[200], holder[128];

    now = time_mono_ms();

    if (!force && now < r->beat_at) {
        return 0;
    }

    snprintf(ttl, sizeof(ttl), "%d", r->settings->heartbeat_ttl);

    args[0] = r->alive_key;
    args[1] = RECLAIM_REGISTRY;
    args[2] = r->token;
    args[3] = ttl;
    args[4] = r->settings->worker_id;

    reply = reclaim_eval(rc, reclaim_beat_script, 2, args, 5, err, errlen);
    if (reply == NULL) {
        return -1;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_INTEGER
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        snprintf(err, errlen, "heartbeat script: unexpected reply");
        freeReplyObject(reply);
        return -1;
    }

    if (reply->element[0]->integer == 1) {
        freeReplyObject(reply);

        if (r->held) {
            log_info("worker id free, starting", "id=%s",
                     r->settings->worker_id);
        }

        r->held = 0;
        r->held_since = 0;
        r->owned = 1;

        every = (int64_t) r->settings->heartbeat_ttl * 1000 / 3;
        r->beat_at = now + (every < 1000 ? every : 1000);
        return 0;
    }

    snprintf(holder, sizeof(holder), "%.*s",
             (int) reply->element[1]->len, reply->element[1]->str);
    freeReplyObject(reply);

    if (r->owned) {
        /* our key lapsed (a stall) and another process took the id */
        log_error("another process took over this worker id, stopping",
                  "id=%s holder=%s", r->settings->worker_id,
                  log_quote(q, sizeof(q), holder));
        r->owned = 0;
        r->lost = 1;
        return 1;
    }

    if (!r->held) {
        log_warn("worker id in use, waiting for its heartbeat to lapse",
                 "id=%s holder=%s key=%s ttl=%d", r->settings->worker_id,
                 log_quote(q, sizeof(q), holder), r->alive_key,
                 r->settings->heartbeat_ttl);
        r->held = 1;
        r->held_since = now;

    } else if (now - r->held_since
               > (int64_t) r->settings->heartbeat_ttl * 1000 + 2000)
    {
        log_error("another worker is running with this id, refusing to"
                  " start", "id=%s holder=%s hint=\"give each worker its"
                  " own --id, or none\"", r->settings->worker_id,
                  log_quote(q, sizeof(q), holder));
        r->lost = 1;
    }

    return 1;
}


int
reclaim_scan(reclaim_t *r, redisContext *rc, char *err, size_t errlen)
{
    redisReply  *reply;
    int64_t      now;
    size_t       i;
    int          rc2;

    now = time_mono_ms();

    if (now < r->scan_at) {
        return 0;
    }

    /* a few ids: one per worker that ran and has not finished */
    reply = redisCommand(rc, "ZRANGE %s 0 -1", RECLAIM_REGISTRY);

    if (redis_reply_check(rc, reply, err, errlen) != 0
        || reply->type != REDIS_REPLY_ARRAY)
    {
        if (reply != NULL && reply->type != REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "ZRANGE: unexpected reply");
        }
        if (reply != NULL) {
            freeReplyObject(reply);
        }
        return -1;
    }

    rc2 = 0;

    for (i = 0; i < reply->elements && rc2 == 0; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING
            || strcmp(reply->element[i]->str, r->settings->worker_id) == 0)
        {
            continue;
        }
        rc2 = reclaim_key(r, rc, reply->element[i]->str, err, errlen);
    }

    freeReplyObject(reply);

    if (rc2 != 0) {
        return -1;
    }

    r->scan_at = now + (int64_t) r->settings->heartbeat_ttl * 1000;
    return 0;
}


void
reclaim_goodbye(reclaim_t *r, redisContext *rc)
{
    redisReply  *reply;
    const char  *args[5];
    char         err[256];

    if (!r->owned) {
        return;
    }

    args[0] = r->alive_key;
    args[1] = RECLAIM_REGISTRY;
    args[2] = r->proc_key;
    args[3] = r->token;
    args[4] = r->settings->worker_id;

    reply = reclaim_eval(rc, reclaim_bye_script, 3, args, 5, err,
                         sizeof(err));
    if (reply != NULL) {
        freeReplyObject(reply);
    }
}


/* One registered worker: requeue its list if its heartbeat is gone. */
static int
reclaim_key(reclaim_t *r, redisContext *rc, const char *id, char *err,
    size_t errlen)
{
    redisReply  *reply;
    const char  *args[4];
    long         moved;
    char        *alive, *proc, q[300];
    int          rc2;

    alive = NULL;
    proc = NULL;

    if (asprintf(&alive, RECLAIM_ALIVE_PREFIX "%s", id) < 0
        || asprintf(&proc, RECLAIM_PROC_PREFIX "%s", id) < 0)
    {
        free(alive);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    rc2 = -1;

    reply = redisCommand(rc, "EXISTS %s", alive);

    if (redis_reply_check(rc, reply, err, errlen) != 0) {
        goto done;
    }

    if (reply->type == REDIS_REPLY_INTEGER && reply->integer > 0) {
        rc2 = 0;
        goto done;
    }

    freeReplyObject(reply);
    reply = NULL;
    moved = 0;

    if (reclaim_move(r, rc, proc, &moved, err, errlen) != 0) {
        goto done;
    }

    if (moved > 0) {
        log_warn("requeued the batch of a dead worker",
                 "processing=%s events=%ld queue=%s",
                 log_quote(q, sizeof(q), proc), moved, r->settings->queue);
    }

    args[0] = alive;
    args[1] = RECLAIM_REGISTRY;
    args[2] = proc;
    args[3] = id;

    reply = reclaim_eval(rc, reclaim_forget_script, 3, args, 4, err,
                         errlen);
    rc2 = reply != NULL ? 0 : -1;

done:

    if (reply != NULL) {
        freeReplyObject(reply);
    }
    free(alive);
    free(proc);
    return rc2;
}


/*
 * Move the list back, RECLAIM_CHUNK events a script: the same as
 * LMOVE key queue LEFT RIGHT until nil, atomic per round, but it also
 * runs when Redis is at maxmemory (which refuses LMOVE): LPOP, the
 * first write, frees memory, and Redis checks only a script's first.
 */
static int
reclaim_move(reclaim_t *r, redisContext *rc, const char *key, long *moved,
    char *err, size_t errlen)
{
    static const char  script[] =
        "local n = 0\n"
        "for i = 1, tonumber(ARGV[1]) do\n"
        "  local v = redis.call('LPOP', KEYS[1])\n"
        "  if not v then break end\n"
        "  redis.call('RPUSH', KEYS[2], v)\n"
        "  n = n + 1\n"
        "end\n"
        "return n\n";
    redisReply  *reply;
    const char  *args[3];
    char         num[16];
    long         got;

    snprintf(num, sizeof(num), "%d", RECLAIM_CHUNK);

    args[0] = key;
    args[1] = r->settings->queue;
    args[2] = num;

    do {
        reply = reclaim_eval(rc, script, 2, args, 3, err, errlen);
        if (reply == NULL) {
            return -1;
        }

        got = reply->type == REDIS_REPLY_INTEGER ? (long) reply->integer : 0;
        freeReplyObject(reply);

        *moved += got;

    } while (got == RECLAIM_CHUNK);

    return 0;
}


/* EVAL script nkeys args...: the reply, or NULL with the reason. */
static redisReply *
reclaim_eval(redisContext *rc, const char *script, int nkeys,
    const char **args, int nargs, char *err, size_t errlen)
{
    redisReply  *reply;
    const char  *argv[12];
    size_t       argvlen[12];
    char         num[8];
    int          i;

    snprintf(num, sizeof(num), "%d", nkeys);

    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = num;

    for (i = 0; i < nargs && i < 9; i++) {
        argv[3 + i] = args[i];
    }

    for (i = 0; i < 3 + nargs; i++) {
        argvlen[i] = strlen(argv[i]);
    }

    reply = redisCommandArgv(rc, 3 + nargs, argv, argvlen);

    if (redis_reply_check(rc, reply, err, errlen) != 0) {
        if (reply != NULL) {
            freeReplyObject(reply);
        }
        return NULL;
    }

    return reply;
}
