#!/usr/bin/perl

# activity-worker settings at run time (README "activity-worker"):
# - every flag may be set from the environment (ACTIVITY_*), a flag wins;
# - custom keys and channels: --queue, --recent-key, --stats-key,
#   --events-channel, --stats-channel, --live-prefix, --seen-prefix;
# - --recent-max, --recent-ttl; --seen-ttl (an id is remembered until
#   its timestamp + S, an older event is stored but neither counted nor
#   published); --log-level; --pg-read (the read API's database,
#   reported in /healthz as postgresRead without making it unhealthy);
# - /api/stats: 404 before the first stats, 503 when Redis is away;
#   /api/events 503 when its database is away.
# The worker is started here with a clean environment plus exactly the
# variables each case sets.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use HTTP::Tiny;
use Test::More;
use ActivityTest qw(wait_for make_event to_json from_json uuid);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);
$t->allow_worker_errors(qr/msg="redis unavailable"/, qr/msg="postgres unavailable"/,
    qr/msg="partition maintenance failed"/);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
my $r = $t->redis;

# a second database, migrated, standing in for a replica
$t->dbh->do('CREATE DATABASE replica');
(my $replica_url = $t->pg_url) =~ s{/activity$}{/replica};
$t->worker_migrate('--pg', $replica_url);
{
    require DBI;
    my $rdbh = DBI->connect('dbi:Pg:dbname=replica;host=127.0.0.1;port='
        . $t->pg_port, 'postgres', '', { RaiseError => 1, AutoCommit => 1,
        PrintError => 0 });
    $rdbh->do("INSERT INTO activity_logs (id, action, user_id, created_at,"
        . " endpoint, method, status, details) VALUES (?, 'REPLICA_ONLY',"
        . " NULL, now(), '/replica', 'GET', 200, '{}')", undef, uuid());
    $rdbh->disconnect;
}

my $ua = HTTP::Tiny->new(timeout => 10, agent => 'activity-test/1.0');
sub get {
    my ($port, $path) = @_;
    my $res = $ua->get("http://127.0.0.1:$port$path");
    $res->{json} = eval { from_json($res->{content}) };
    return $res;
}

# Starts a worker named $id with %env (on top of a clean environment)
# and @flags; nothing else is passed.
sub start_worker {
    my ($id, $env, @flags) = @_;
    my $log = $t->worker_log($id);
    local %ENV = (ActivityTest::_clean_env(), %$env);
    $t->_spawn("worker:$id", $log, $t->{bin}{worker}, @flags);
}

sub log_of { ActivityTest::_slurp($t->worker_log($_[0])) }

my $api = $t->port('api_env');
my %env = (
    ACTIVITY_REDIS_URL      => $t->redis_url,
    ACTIVITY_PG_URL         => $t->pg_url,
    ACTIVITY_PG_READ_URL    => $replica_url,
    ACTIVITY_WORKER_ID      => 'envw',
    ACTIVITY_SQL_DIR        => $t->root . '/sql',
    ACTIVITY_QUEUE          => 'env:queue',
    ACTIVITY_DEAD_KEY       => 'env:dead',
    ACTIVITY_RECENT_KEY     => 'env:recent',
    ACTIVITY_RECENT_MAX     => 3,
    ACTIVITY_RECENT_TTL     => 120,
    ACTIVITY_STATS_KEY      => 'env:stats',
    ACTIVITY_EVENTS_CHANNEL => 'env:events-ch',
    ACTIVITY_STATS_CHANNEL  => 'env:stats-ch',
    ACTIVITY_LIVE_PREFIX    => 'env:live:',
    ACTIVITY_SEEN_PREFIX    => 'env:seen:',
    ACTIVITY_SEEN_TTL       => 600,
    ACTIVITY_LOG_LEVEL      => 'warn',
    ACTIVITY_LISTEN         => "127.0.0.1:$api",
    ACTIVITY_FLUSH_MS       => 20,
);

# --- /api/stats before the first stats; 503s while PostgreSQL is away ------

$t->pg_stop;
start_worker('envw', \%env);

ok(wait_for(sub { get($api, "/healthz")->{status} != 599 }, 15),
    'the listener answers while the database is awaited');
my $h = get($api, '/healthz');
is($h->{status}, 503, '/healthz 503 without PostgreSQL');
is($h->{json}{redis}, 'ok', 'redis ok');
isnt($h->{json}{postgres} // 'ok', 'ok', 'postgres: the error');
my $s = get($api, '/api/stats');
is($s->{status}, 404, '/api/stats 404 before the first stats');
is($r->exists('env:stats'), 0, '(no stats key yet)');
is(get($api, '/api/events')->{status}, 503,
    '/api/events 503 without PostgreSQL');

$t->pg_start;

# subscribe to the custom channels before any event goes out
require Redis;
my $sub = Redis->new(server => '127.0.0.1:' . $t->redis_port);
my (@published, @stats_msgs);
$sub->subscribe('env:events-ch', 'env:stats-ch', sub {
    my ($msg, $topic) = @_;
    push @published, @{ from_json($msg) } if $topic eq 'env:events-ch';
    push @stats_msgs, $msg if $topic eq 'env:stats-ch';
});
sub pump { $sub->wait_for_messages(0.1) }

ok(wait_for(sub { pump(); @stats_msgs && $r->exists('env:stats') }, 30),
    'stats published on ACTIVITY_STATS_CHANNEL, kept in ACTIVITY_STATS_KEY');
$s = get($api, '/api/stats');
is($s->{status}, 200, '/api/stats 200 once stats exist');
ok(wait_for(sub { pump(); $s = get($api, '/api/stats');
    $s->{content} eq ($r->get('env:stats') // '') }, 10),
    '/api/stats serves ACTIVITY_STATS_KEY');
is($r->exists('dashboard:stats'), 0, 'nothing in the default stats key');

# --- keys, channels, recent, seen ---------------------------------------------

my $now = int time;
my @events = map { make_event(endpoint => "/env/$_", user => "u$_",
    time => $now - 10 + $_) } 1 .. 5;
my $old = make_event(endpoint => '/env/old', user => 'u-old',
    time => $now - 700);
$r->lpush('env:queue', to_json($_)) for @events, $old;

ok(wait_for(sub { $t->row_count("endpoint LIKE '/env/%'") == 6 }, 30),
    'events of ACTIVITY_QUEUE stored, the old one too');
ok(wait_for(sub { pump(); @published >= 5 }, 10),
    'published on ACTIVITY_EVENTS_CHANNEL');
is_deeply([ map { $_->{metadata}{endpoint} } @published ],
    [ map { "/env/$_" } 1 .. 5 ],
    'the five, oldest first; the one older than --seen-ttl is not published');

my @recent = map { from_json($_)->{metadata}{endpoint} }
    $r->lrange('env:recent', 0, -1);
is_deeply(\@recent, [ '/env/5', '/env/4', '/env/3' ],
    'ACTIVITY_RECENT_KEY holds ACTIVITY_RECENT_MAX=3, newest first');
my $ttl = $r->ttl('env:recent');
ok($ttl > 0 && $ttl <= 120, "ACTIVITY_RECENT_TTL=120: ttl $ttl");
is($r->exists('dashboard:events:recent'), 0, 'nothing in the default key');

# the marks: one set per minute of event time (worker/aggregate.c)
my $minute = int(($now - 9) / 60);
is($r->exists('env:seen:m:' . int(($now - 700) / 60)), 0,
    'the old event is not marked seen');
my $pxat = $r->pexpiretime("env:seen:m:$minute");
is($pxat, ($minute + 1) * 60_000 + 600_000,
    'a seen mark lives until its minute ends + ACTIVITY_SEEN_TTL');
is(scalar(() = $r->keys('activity:seen:*')), 0,
    'nothing under the default seen prefix');
ok(scalar(() = $r->keys('env:live:*')), 'counters under ACTIVITY_LIVE_PREFIX');
is(scalar(() = $r->keys('activity:live:*')), 0,
    'nothing under the default live prefix');
ok(wait_for(sub { pump(); from_json($r->get('env:stats'))->{activeUsers}
    == 5 }, 20), 'the stats count the five users, not the old event');

# --log-level warn
unlike(log_of('envw'), qr/level=info/, 'ACTIVITY_LOG_LEVEL=warn: no info');

# --pg-read: the read API reads the replica
my $ev = get($api, '/api/events');
is($ev->{status}, 200, '/api/events 200');
is_deeply([ map { $_->{eventType} } @{ $ev->{json}{events} || [] } ],
    ['REPLICA_ONLY'], 'ACTIVITY_PG_READ_URL: the read API reads the replica');
$h = get($api, '/healthz');
is_deeply($h->{json}, { status => 'ok', redis => 'ok', postgres => 'ok',
    postgresRead => 'ok' }, '/healthz reports postgresRead');

# --- flags win over the environment -------------------------------------------

my $api2 = $t->port('api_flags');
my $closed = $t->port('closed');
start_worker('flagw', \%env, '--id', 'flagw', '--queue', 'flag:queue',
    '--recent-key', 'flag:recent', '--log-level', 'debug',
    '--listen', "127.0.0.1:$api2",
    '--pg-read', "postgresql://postgres\@127.0.0.1:$closed/replica");

$r->lpush('flag:queue', to_json(make_event(endpoint => '/flag/1')));
ok(wait_for(sub { $t->row_count("endpoint = '/flag/1'") == 1 }, 30),
    '--queue wins over ACTIVITY_QUEUE');
ok(wait_for(sub { grep { m{"/flag/1"} } $r->lrange('flag:recent', 0, -1) },
    10), '--recent-key wins over ACTIVITY_RECENT_KEY');
ok($r->exists('activity:alive:flagw'), '--id wins over ACTIVITY_WORKER_ID');
ok(wait_for(sub { log_of('flagw') =~ /level=debug/ }, 10),
    '--log-level debug wins over ACTIVITY_LOG_LEVEL');

$h = get($api2, '/healthz');
ok(wait_for(sub { $h = get($api2, '/healthz');
    ($h->{json}{postgresRead} // 'ok') ne 'ok' }, 15),
    '--pg-read unreachable: postgresRead reports the error');
is($h->{status}, 200, 'and /healthz stays 200');
is(get($api2, '/api/events')->{status}, 503,
    '/api/events 503 when the read database is away');

$t->_stop('worker:flagw', 'TERM', 20);

# --- Redis away: /api/stats 503 -------------------------------------------------

undef $sub;
$t->redis_stop;
ok(wait_for(sub { get($api, '/api/stats')->{status} == 503 }, 20),
    '/api/stats 503 while Redis is away');

$t->done;
