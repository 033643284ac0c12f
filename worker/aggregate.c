/*
 * activity-worker: live counters, the recent-events cache and the
 * dashboard pub/sub feed.
 *
 * A batch is applied by one Lua script (EVALSHA, one round trip), so it
 * is applied whole or not at all: a worker that crashes, loses Redis or
 * retries the PostgreSQL write re-handles the same batch, and the
 * script's "seen" keys make that second pass count and publish nothing.
 * The script reads the server's clock (TIME), so every worker counts
 * against the same "now".
 *
 * Keys (L = --live-prefix, S = --seen-prefix):
 *
 *   S m:<epoch-minute>    set of the ids (16 raw bytes each) of the
 *                         events stamped in that minute that were
 *                         counted and published; expires --seen-ttl
 *                         after the minute ends. 180 keys at the default
 *                         TTL whatever the rate (no key per event)
 *   L api:s:<epoch-sec>   API_CALL count in that second, TTL 180 s
 *   L api:m:<epoch-min>   the same per minute, TTL 240 s
 *   L login:s:/m:...      USER_LOGIN, likewise, TTL 3720 / 3780 s
 *   L logout:s:/m:...     USER_LOGOUT, likewise
 *   L products:YYYYMMDD   PRODUCT_CREATED that UTC day, gone an hour
 *                         after the day ends
 *   L users               zset userId -> last seen (ms), trimmed to 5 min
 *   L published           hash: the last stats published and when
 *   --stream-key          stream of the published events, field "e"
 *                         the event text, trimmed to about
 *                         --stream-max entries; on the channel each
 *                         event has its entry id as a last member
 *                         "offset": [{...,"offset":"<ms>-<seq>"},...]
 *
 * A window sum reads the whole minutes inside it and the single seconds
 * at its edges (at most 59 + 60 + 59 keys for the hour), so it is exact
 * to the second without keeping one key an event. Events are counted by
 * their own timestamp; one stamped up to 60 s in the future (another
 * host's clock) counts as now; one further ahead is neither counted nor
 * published (it is stored): its mark would have to outlive its own
 * freshness, or it would be published again when seen again.
 *
 * At maxmemory (noeviction) Redis refuses the script's first write, so
 * nothing is applied: the caller pauses the live side, the events are
 * stored all the same.
 *
 * Not for Redis Cluster: the script builds its key names itself.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aggregate.h"
#include "redisconn.h"


/* "EVALSHA" sha numkeys, then the fixed ARGV, then 6 per event */
#define AGG_HEAD_ARGS    3
#define AGG_FIXED_ARGS   13
#define AGG_EVENT_ARGS   6
#define AGG_NUM_LEN      24


struct aggregate_s {
    const settings_t   *settings;
    char                sha[41];        /* "" until SCRIPT LOAD answered */
    char                fixed[6][AGG_NUM_LEN];
    const char        **argv;
    size_t             *argvlen;
    char               *nums;           /* each event's time as text */
    unsigned char      *bins;           /* each event's id, 16 bytes */
    size_t              cap;            /* events the arrays hold */
};


static int aggregate_reserve(aggregate_t *a, size_t n);
static void aggregate_uuid_bytes(const char *id, unsigned char *bin);
static int aggregate_load(aggregate_t *a, redisContext *rc, char *err,
    size_t errlen);
static redisReply *aggregate_eval(aggregate_t *a, redisContext *rc,
    int argc, char *err, size_t errlen);
static int aggregate_result(redisReply *r, aggregate_result_t *res,
    char *err, size_t errlen);


/*
 * ARGV: 1 seen prefix, 2 live prefix, 3 recent key, 4 recent max,
 * 5 recent TTL (s), 6 stats key, 7 events channel, 8 stats channel,
 * 9 seen TTL (ms), 10 stats min interval (ms), 11 stats max interval
 * (ms), 12 stream key, 13 stream max length (0: no stream); then per
 * event: id, the id as its 16 bytes, eventType, userId ("" for none),
 * timestamp (epoch ms), the event's JSON text as queued.
 *
 * Reply: { new events, stats published (0/1), ms until held-back stats
 * are due (0: none), stats JSON }.
 *
 * The first write happens only after every "seen" check, so the one
 * failure Redis can raise before it (OOM) leaves nothing behind.
 */
static const char  aggregate_script[] =
    "-- activity-worker live aggregation (see aggregate.c for ARGV)\n"
    "local seen_prefix, live = ARGV[1], ARGV[2]\n"
    "local recent_key = ARGV[3]\n"
    "local recent_max = tonumber(ARGV[4])\n"
    "local recent_ttl = tonumber(ARGV[5])\n"
    "local stats_key = ARGV[6]\n"
    "local events_channel, stats_channel = ARGV[7], ARGV[8]\n"
    "local seen_ms = tonumber(ARGV[9])\n"
    "local min_ms, max_ms = tonumber(ARGV[10]), tonumber(ARGV[11])\n"
    "local stream_key, stream_max = ARGV[12], tonumber(ARGV[13])\n"
    "local FIRST, STRIDE = 14, 6\n"
    "local USERS_MS, SKEW_MS = 300000, 60000\n"
    "local floor = math.floor\n"
    "\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)\n"
    "local now_s = floor(now / 1000)\n"
    "local today = floor(now / 86400000)\n"
    "\n"
    "local function ymd(days)\n"
    "  local z = days + 719468\n"
    "  local era = floor(z / 146097)\n"
    "  local doe = z - era * 146097\n"
    "  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524)\n"
    "                     - floor(doe / 146096)) / 365)\n"
    "  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))\n"
    "  local mp = floor((5 * doy + 2) / 153)\n"
    "  local d = doy - floor((153 * mp + 2) / 5) + 1\n"
    "  local m = mp < 10 and mp + 3 or mp - 9\n"
    "  local y = yoe + era * 400\n"
    "  if m <= 2 then y = y + 1 end\n"
    "  return y, m, d\n"
    "end\n"
    "\n"
    "local products_key = string.format('%sproducts:%04d%02d%02d', live,\n"
    "                                   ymd(today))\n"
    "local users_key = live .. 'users'\n"
    "local windows = { API_CALL = { 'api', 60 },\n"
    "  USER_LOGIN = { 'login', 3600 }, USER_LOGOUT = { 'logout', 3600 } }\n"
    "\n"
    "-- which events are new: only reads, so a failure here changes nothing.\n"
    "-- The marks live in one set a minute of event time; an id is kept\n"
    "-- as its 16 bytes (sent as such), not its 36 characters.\n"
    "-- the events inside the window, by minute of event time: one\n"
    "-- SMISMEMBER a minute. Far ahead of the clock: neither counted nor\n"
    "-- published, ever twice (its mark could not outlive its window)\n"
    "local cand, groups = {}, {}\n"
    "for i = FIRST, #ARGV, STRIDE do\n"
    "  local ts = tonumber(ARGV[i + 4])\n"
    "  if ts > now - seen_ms and ts <= now + SKEW_MS then\n"
    "    local m = floor(ts / 60000)\n"
    "    local g = groups[m]\n"
    "    if not g then\n"
    "      g = { key = seen_prefix .. 'm:' .. m, m = m, bins = {}, at = {},\n"
    "            add = {} }\n"
    "      groups[m] = g\n"
    "    end\n"
    "    cand[#cand + 1] = i\n"
    "    g.bins[#g.bins + 1] = ARGV[i + 1]\n"
    "    g.at[#g.at + 1] = #cand\n"
    "  end\n"
    "end\n"
    "local member, group = {}, {}\n"
    "for _, g in pairs(groups) do\n"
    "  local r = redis.call('SMISMEMBER', g.key, unpack(g.bins))\n"
    "  for k, c in ipairs(g.at) do\n"
    "    member[c] = r[k] == 1\n"
    "    group[c] = g\n"
    "  end\n"
    "end\n"
    "-- and the one key an id of the previous release (read only, for one\n"
    "-- release: a rolling upgrade publishes nothing twice): one EXISTS for\n"
    "-- all, then one an event only when some of them exist\n"
    "local old = {}\n"
    "for c, i in ipairs(cand) do\n"
    "  if not member[c] then old[#old + 1] = seen_prefix .. ARGV[i] end\n"
    "end\n"
    "local any_old = #old > 0 and redis.call('EXISTS', unpack(old)) > 0\n"
    "local fresh, taken = {}, {}\n"
    "for c, i in ipairs(cand) do\n"
    "  local id = ARGV[i]\n"
    "  if not member[c] and not taken[id] and not (any_old\n"
    "     and redis.call('EXISTS', seen_prefix .. id) == 1) then\n"
    "    local g = group[c]\n"
    "    taken[id] = true\n"
    "    fresh[#fresh + 1] = i\n"
    "    g.add[#g.add + 1] = ARGV[i + 1]\n"
    "  end\n"
    "end\n"
    "\n"
    "-- the first write: at maxmemory Redis refuses it, nothing is done\n"
    "for _, g in pairs(groups) do\n"
    "  if #g.add > 0 then redis.call('SADD', g.key, unpack(g.add)) end\n"
    "end\n"
    "for _, g in pairs(groups) do\n"
    "  if #g.add > 0 then\n"
    "    redis.call('PEXPIREAT', g.key,\n"
    "               string.format('%d', (g.m + 1) * 60000 + seen_ms))\n"
    "  end\n"
    "end\n"
    "\n"
    "-- count them in memory first: one INCRBY a bucket, not one an event\n"
    "local incr, users, texts = {}, {}, {}\n"
    "local function bump(key, ttl)\n"
    "  local b = incr[key]\n"
    "  if b then b[1] = b[1] + 1 else incr[key] = { 1, ttl } end\n"
    "end\n"
    "\n"
    "for k, i in ipairs(fresh) do\n"
    "  local kind, user = ARGV[i + 2], ARGV[i + 3]\n"
    "  local ts = tonumber(ARGV[i + 4])\n"
    "  -- a clock a little ahead counts as now\n"
    "  local at = ts > now and now or ts\n"
    "  local s = floor(at / 1000)\n"
    "  local w = windows[kind]\n"
    "  texts[k] = ARGV[i + 5]\n"
    "  if user ~= '' and at > now - USERS_MS\n"
    "     and (users[user] == nil or users[user] < at) then\n"
    "    users[user] = at\n"
    "  end\n"
    "  if w and s > now_s - w[2] then\n"
    "    bump(live .. w[1] .. ':s:' .. s, w[2] + 120)\n"
    "    bump(live .. w[1] .. ':m:' .. floor(s / 60), w[2] + 180)\n"
    "  elseif kind == 'PRODUCT_CREATED'\n"
    "     and floor(at / 86400000) == today then\n"
    "    bump(products_key, (today + 1) * 86400 - now_s + 3600)\n"
    "  end\n"
    "end\n"
    "\n"
    "for key, b in pairs(incr) do\n"
    "  redis.call('INCRBY', key, b[1])\n"
    "  redis.call('EXPIRE', key, b[2])\n"
    "end\n"
    "\n"
    "if next(users) then\n"
    "  -- one ZADD: GT applies to each member on its own\n"
    "  local args = {}\n"
    "  for user, at in pairs(users) do\n"
    "    args[#args + 1] = at\n"
    "    args[#args + 1] = user\n"
    "  end\n"
    "  redis.call('ZADD', users_key, 'GT', unpack(args))\n"
    "  redis.call('PEXPIRE', users_key, USERS_MS + SKEW_MS)\n"
    "end\n"
    "\n"
    "if #texts > 0 then\n"
    "  for k = math.max(1, #texts - recent_max + 1), #texts do\n"
    "    redis.call('LPUSH', recent_key, texts[k])\n"
    "  end\n"
    "  redis.call('LTRIM', recent_key, 0, recent_max - 1)\n"
    "  redis.call('EXPIRE', recent_key, recent_ttl)\n"
    "  -- the shared log dashboards resume from: each published event\n"
    "  -- carries its entry id as a last member \"offset\", so every nginx\n"
    "  -- sees the same offsets (the stream keeps the text as queued)\n"
    "  local msg = texts\n"
    "  if stream_max > 0 then\n"
    "    msg = {}\n"
    "    for k, text in ipairs(texts) do\n"
    "      local id = redis.call('XADD', stream_key, 'MAXLEN', '~',\n"
    "                            stream_max, '*', 'e', text)\n"
    "      -- the module's texts end in '}': then the pattern would find\n"
    "      -- that one (the shortest head), so no need to run it\n"
    "      local head = text:byte(-1) == 125 and text:sub(1, -2)\n"
    "                   or text:match('^(.-)}%s*$')\n"
    "      msg[k] = head and head .. ',\"offset\":\"' .. id .. '\"}'\n"
    "               or text\n"
    "    end\n"
    "  end\n"
    "  redis.call('PUBLISH', events_channel,\n"
    "             '[' .. table.concat(msg, ',') .. ']')\n"
    "end\n"
    "\n"
    "-- stats not due yet: leave them to the tick due then (saves the\n"
    "-- window sums on every small batch)\n"
    "local pub_key = live .. 'published'\n"
    "local last = redis.call('HMGET', pub_key, 'body', 'at')\n"
    "local since = now - (tonumber(last[2]) or 0)\n"
    "if since >= 0 and since < min_ms then\n"
    "  return { #fresh, 0, min_ms - since, '' }\n"
    "end\n"
    "\n"
    "-- the stats: whole minutes where they fit, seconds at the edges\n"
    "local function window(name, span)\n"
    "  local keys, total, s = {}, 0, now_s - span + 1\n"
    "  while s <= now_s and s % 60 ~= 0 do\n"
    "    keys[#keys + 1] = name .. ':s:' .. s\n"
    "    s = s + 1\n"
    "  end\n"
    "  while s + 59 <= now_s do\n"
    "    keys[#keys + 1] = name .. ':m:' .. floor(s / 60)\n"
    "    s = s + 60\n"
    "  end\n"
    "  while s <= now_s do\n"
    "    keys[#keys + 1] = name .. ':s:' .. s\n"
    "    s = s + 1\n"
    "  end\n"
    "  for _, v in ipairs(redis.call('MGET', unpack(keys))) do\n"
    "    total = total + (tonumber(v) or 0)\n"
    "  end\n"
    "  return total\n"
    "end\n"
    "\n"
    "redis.call('ZREMRANGEBYSCORE', users_key, '-inf', now - USERS_MS)\n"
    "\n"
    "local body = string.format('\"activeUsers\":%d,'\n"
    "  .. '\"apiRequestsPerMinute\":%d,\"productsCreatedToday\":%d,'\n"
    "  .. '\"loginsPerHour\":%d,\"logoutsPerHour\":%d',\n"
    "  redis.call('ZCARD', users_key), window(live .. 'api', 60),\n"
    "  tonumber(redis.call('GET', products_key)) or 0,\n"
    "  window(live .. 'login', 3600), window(live .. 'logout', 3600))\n"
    "\n"
    "local sod = now_s % 86400\n"
    "local y, mo, d = ymd(today)\n"
    "local stats = string.format(\n"
    "  '{%s,\"timestamp\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"}',\n"
    "  body, y, mo, d, floor(sod / 3600), floor(sod % 3600 / 60), sod % 60,\n"
    "  now % 1000)\n"
    "redis.call('SET', stats_key, stats)\n"
    "\n"
    "-- shared by all workers: N of them still publish a few times a second\n"
    "local changed = last[1] ~= body\n"
    "local published, pending = 0, 0\n"
    "if since < 0 or since >= max_ms or (changed and since >= min_ms) then\n"
    "  redis.call('PUBLISH', stats_channel, stats)\n"
    "  redis.call('HSET', pub_key, 'body', body,\n"
    "             'at', string.format('%d', now))\n"
    "  redis.call('PEXPIRE', pub_key, max_ms * 2)\n"
    "  published = 1\n"
    "elseif changed then\n"
    "  pending = min_ms - since\n"
    "end\n"
    "\n"
    "return { #fresh, published, pending, stats }\n"
    ;


aggregate_t *
aggregate_new(const settings_t *settings)
{
    aggregate_t  *a;

    a = calloc(1, sizeof(aggregate_t));
    if (a == NULL) {
        return NULL;
    }

    a->settings = settings;

    snprintf(a->fixed[0], AGG_NUM_LEN, "%d", settings->recent_max);
    snprintf(a->fixed[1], AGG_NUM_LEN, "%d", settings->recent_ttl);
    snprintf(a->fixed[2], AGG_NUM_LEN, "%lld",
             (long long) settings->seen_ttl * 1000);
    snprintf(a->fixed[3], AGG_NUM_LEN, "%d", settings->stats_min_ms);
    snprintf(a->fixed[4], AGG_NUM_LEN, "%d", settings->stats_max_ms);
    snprintf(a->fixed[5], AGG_NUM_LEN, "%d", settings->stream_max);

    if (aggregate_reserve(a, 64) != 0) {
        aggregate_free(a);
        return NULL;
    }

    return a;
}


void
aggregate_free(aggregate_t *a)
{
    if (a == NULL) {
        return;
    }

    free(a->argv);
    free(a->argvlen);
    free(a->nums);
    free(a->bins);
    free(a);
}


int
aggregate_apply(aggregate_t *a, redisContext *rc, const event_t *events,
    size_t n, aggregate_result_t *res, char *err, size_t errlen)
{
    const settings_t  *s;
    redisReply        *r;
    const char       **argv;
    size_t             i;
    char              *num;
    unsigned char     *bin;
    int                argc, status;

    memset(res, 0, sizeof(*res));
    s = a->settings;

    if (aggregate_reserve(a, n) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    if (a->sha[0] == '\0' && aggregate_load(a, rc, err, errlen) != 0) {
        return -1;
    }

    argv = a->argv;
    argc = 0;

    argv[argc++] = "EVALSHA";
    argv[argc++] = a->sha;
    argv[argc++] = "0";

    argv[argc++] = s->seen_prefix;
    argv[argc++] = s->live_prefix;
    argv[argc++] = s->recent_key;
    argv[argc++] = a->fixed[0];
    argv[argc++] = a->fixed[1];
    argv[argc++] = s->stats_key;
    argv[argc++] = s->events_channel;
    argv[argc++] = s->stats_channel;
    argv[argc++] = a->fixed[2];
    argv[argc++] = a->fixed[3];
    argv[argc++] = a->fixed[4];
    argv[argc++] = s->stream_key;
    argv[argc++] = a->fixed[5];

    /* every argument but the binary ids is a C string (JSON holds no NUL) */
    for (i = 0; i < (size_t) argc; i++) {
        a->argvlen[i] = strlen(argv[i]);
    }

    for (i = 0; i < n; i++) {
        num = a->nums + i * AGG_NUM_LEN;
        bin = a->bins + i * 16;
        aggregate_uuid_bytes(events[i].id, bin);

        a->argvlen[argc] = 36;
        argv[argc++] = events[i].id;
        a->argvlen[argc] = 16;
        argv[argc++] = (const char *) bin;
        a->argvlen[argc] = strlen(events[i].type);
        argv[argc++] = events[i].type;
        argv[argc] = events[i].user_id ? events[i].user_id : "";
        a->argvlen[argc] = strlen(argv[argc]);
        argc++;
        a->argvlen[argc] = (size_t) snprintf(num, AGG_NUM_LEN, "%lld",
                                             (long long) events[i].ts_ms);
        argv[argc++] = num;
        a->argvlen[argc] = strlen(events[i].text);
        argv[argc++] = events[i].text;
    }

    r = aggregate_eval(a, rc, argc, err, errlen);
    if (r == NULL) {
        return -1;
    }

    status = aggregate_result(r, res, err, errlen);
    freeReplyObject(r);
    return status;
}


/* Room for n events' arguments (their times as text, ids as bytes). */
static int
aggregate_reserve(aggregate_t *a, size_t n)
{
    const char     **argv;
    size_t           cap, *argvlen, args;
    char            *nums;
    unsigned char   *bins;

    if (n <= a->cap && a->argv != NULL) {
        return 0;
    }

    cap = n > a->cap * 2 ? n : a->cap * 2;
    args = AGG_HEAD_ARGS + AGG_FIXED_ARGS + cap * AGG_EVENT_ARGS;

    argv = realloc(a->argv, args * sizeof(char *));
    if (argv == NULL) {
        return -1;
    }
    a->argv = argv;

    argvlen = realloc(a->argvlen, args * sizeof(size_t));
    if (argvlen == NULL) {
        return -1;
    }
    a->argvlen = argvlen;

    bins = realloc(a->bins, cap * 16);
    if (bins == NULL) {
        return -1;
    }
    a->bins = bins;

    nums = realloc(a->nums, cap * AGG_NUM_LEN);
    if (nums == NULL) {
        return -1;
    }
    a->nums = nums;

    a->cap = cap;
    return 0;
}


/* SCRIPT LOAD: the server answers with the SHA1 EVALSHA takes. */
static int
aggregate_load(aggregate_t *a, redisContext *rc, char *err, size_t errlen)
{
    redisReply  *r;

    r = redisCommand(rc, "SCRIPT LOAD %s", aggregate_script);

    if (redis_reply_check(rc, r, err, errlen) != 0) {
        if (r != NULL) {
            freeReplyObject(r);
        }
        return -1;
    }

    if (r->type != REDIS_REPLY_STRING || r->len != 40) {
        snprintf(err, errlen, "SCRIPT LOAD: unexpected reply type %d",
                 r->type);
        freeReplyObject(r);
        return -1;
    }

    memcpy(a->sha, r->str, 40);
    a->sha[40] = '\0';
    freeReplyObject(r);
    return 0;
}


/*
 * EVALSHA; when the server lost its script cache (a restart, SCRIPT
 * FLUSH, a failover) it answers NOSCRIPT without running anything:
 * load the script again and retry once.
 */
static redisReply *
aggregate_eval(aggregate_t *a, redisContext *rc, int argc, char *err,
    size_t errlen)
{
    redisReply  *r;
    int          attempt;

    for (attempt = 0; attempt < 2; attempt++) {
        r = redisCommandArgv(rc, argc, a->argv, a->argvlen);

        if (r != NULL && r->type == REDIS_REPLY_ERROR && attempt == 0
            && strncmp(r->str, "NOSCRIPT", 8) == 0)
        {
            freeReplyObject(r);
            if (aggregate_load(a, rc, err, errlen) != 0) {
                return NULL;
            }
            continue;
        }

        if (redis_reply_check(rc, r, err, errlen) != 0) {
            if (r != NULL) {
                freeReplyObject(r);
            }
            return NULL;
        }

        return r;
    }

    snprintf(err, errlen, "EVALSHA: script missing after SCRIPT LOAD");
    return NULL;
}


static int
aggregate_result(redisReply *r, aggregate_result_t *res, char *err,
    size_t errlen)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4
        || r->element[0]->type != REDIS_REPLY_INTEGER
        || r->element[1]->type != REDIS_REPLY_INTEGER
        || r->element[2]->type != REDIS_REPLY_INTEGER
        || r->element[3]->type != REDIS_REPLY_STRING)
    {
        snprintf(err, errlen, "aggregation script: unexpected reply");
        return -1;
    }

    res->fresh = (long) r->element[0]->integer;
    res->published = r->element[1]->integer != 0;
    res->pending_ms = r->element[2]->integer;
    return 0;
}


/* A UUID's 16 bytes from its text (checked and lower-cased by the parser). */
static void
aggregate_uuid_bytes(const char *id, unsigned char *bin)
{
    size_t  i;
    int     hi, lo;

    for (i = 0; i < 16; i++) {
        if (*id == '-') {
            id++;
        }
        hi = id[0] <= '9' ? id[0] - '0' : id[0] - 'a' + 10;
        lo = id[1] <= '9' ? id[1] - '0' : id[1] - 'a' + 10;
        bin[i] = (unsigned char) (hi << 4 | lo);
        id += 2;
    }
}
