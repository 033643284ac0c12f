#!/usr/bin/perl

# --pg-read against a real streaming replica (pg_basebackup -R of the
# harness's PostgreSQL, a hot standby on a port of its own): the read API
# (/api/events, /api/timeseries) answers from the replica: rows appear
# there once replayed, not before (replay paused: the API shows the
# replica's past, /healthz stays 200); with the primary stopped the API
# still answers while /healthz says the store's PostgreSQL is down; with
# the replica stopped the API answers 503 and comes back by itself when
# the replica does; a libpq host list with
# target_session_attrs=prefer-standby reads the primary while the
# replica is down (the fallback docs/scale-out.md describes); /metrics
# reports postgres_read_up and the replay lag (0 caught up, > 0 while
# replay is paused, absent while the replica is away).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use HTTP::Tiny;
use Test::More;
use ActivityTest qw(wait_for make_event from_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);
my $ua = HTTP::Tiny->new(timeout => 30);

sub get {
    my ($port, $path) = @_;
    my $res = $ua->get("http://127.0.0.1:$port$path");
    $res->{json} = eval { from_json($res->{content}) };
    return $res;
}

# the endpoints of the events the API returns, sorted
sub endpoints {
    my ($port) = @_;
    my $res = get($port, '/api/events?limit=500');
    return undef unless $res->{status} == 200;
    return join ' ', sort map { $_->{metadata}{endpoint} }
        @{ $res->{json}{events} || [] };
}

sub push_named {
    my (@names) = @_;
    $t->push_events(map { make_event(endpoint => "/$_") } @names);
    my $in = join ', ', ('?') x @names;
    ok(wait_for(sub { $t->row_count("endpoint IN ($in)", map { "/$_" }
        @names) == @names }, 60), "stored on the primary: @names");
}

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->pg_replica_start;

is($t->replica_value('SELECT pg_is_in_recovery()'), 1,
    'the replica is a hot standby');

my $api = $t->port('api');
$t->worker_start(args => ['--listen', "127.0.0.1:$api",
    '--pg-read', $t->pg_replica_url]);

# a gauge of /metrics, undef when absent
sub metric {
    my ($port, $name) = @_;
    my $text = get($port, '/metrics')->{content} // '';
    return $text =~ /^\Q$name\E (\S+)$/m ? $1 : undef;
}

# --- rows reach the API once the replica has them --------------------------

push_named(qw(a1 a2));
ok(wait_for(sub { (endpoints($api) // '') eq '/a1 /a2' }, 60),
    '/api/events shows the rows once replicated');

my $h = get($api, '/healthz');
is_deeply($h->{json}, { status => 'ok', redis => 'ok', postgres => 'ok',
    postgresRead => 'ok' }, '/healthz: both databases answer');
is(metric($api, 'activity_worker_postgres_read_up'), 1,
    '/metrics: postgres_read_up 1');
ok(wait_for(sub { (metric($api, 'activity_worker_postgres_read_lag_seconds')
    // -1) == 0 }, 30), 'replica caught up: read_lag_seconds 0');

# --- a lagging replica: the API shows what it has replayed -----------------

# paused only once caught up: a replay paused inside the worker's
# partition maintenance would hold its ACCESS EXCLUSIVE lock on the
# replica, and every read of activity_logs there would wait for it
ok($t->pg_replica_caught_up, 'the replica has replayed everything');
$t->replica_value('SELECT pg_wal_replay_pause()');
ok(wait_for(sub { $t->replica_value('SELECT pg_get_wal_replay_pause_state()')
    eq 'paused' }, 30), 'replay paused on the replica');

push_named(qw(b1));
is(endpoints($api), '/a1 /a2',
    'replay paused: /api/events does not show the new row yet');
is($t->replica_value(q{SELECT count(*) FROM activity_logs
    WHERE endpoint = '/b1'}), 0, 'the replica has not replayed it');
is(get($api, '/healthz')->{status}, 200,
    'a lagging replica does not make the worker unhealthy');
ok(wait_for(sub { (metric($api, 'activity_worker_postgres_read_lag_seconds')
    // 0) > 0 }, 30), 'received WAL waits for replay: read_lag_seconds > 0');

$t->replica_value('SELECT pg_wal_replay_resume()');
ok(wait_for(sub { (endpoints($api) // '') eq '/a1 /a2 /b1' }, 60),
    'replay resumed: the row appears');
ok(wait_for(sub { (metric($api, 'activity_worker_postgres_read_lag_seconds')
    // -1) == 0 }, 30), 'and read_lag_seconds is 0 again');

my $ts = get($api, '/api/timeseries?from=' . (time - 3600) * 1000);
is($ts->{status}, 200, '/api/timeseries answers from the replica');
is($ts->{json}{total}, 3, 'its rollups are replicated too');

# --- the primary stopped: the API still answers -----------------------------

$t->pg_stop;
is(endpoints($api), '/a1 /a2 /b1',
    'primary stopped: /api/events still answers from the replica');
is(get($api, '/api/events?type=API_CALL&limit=1')->{status}, 200,
    'and a filtered query too');
ok(wait_for(sub { get($api, '/healthz')->{status} == 503 }, 30),
    '/healthz 503: the store cannot reach its PostgreSQL');
$h = get($api, '/healthz');
is($h->{json}{postgresRead}, 'ok', 'while postgresRead is ok');
isnt($h->{json}{postgres}, 'ok', 'and postgres is not');

$t->pg_start;
push_named(qw(c1));
ok(wait_for(sub { (endpoints($api) // '') eq '/a1 /a2 /b1 /c1' }, 60),
    'the primary back: the replica follows it again');

# --- the replica stopped: 503, then back by itself --------------------------

$t->pg_replica_stop;
my $ev = get($api, '/api/events');
is($ev->{status}, 503, 'replica stopped: /api/events 503');
like($ev->{json}{error} // '', qr/\S/, 'with an error message');
ok(wait_for(sub { my $j = get($api, '/healthz')->{json};
    ($j->{postgresRead} // 'ok') ne 'ok' && $j->{status} eq 'ok' }, 30),
    '/healthz 200, postgresRead names the error');
is(metric($api, 'activity_worker_postgres_read_up'), 0,
    '/metrics: postgres_read_up 0');
is(metric($api, 'activity_worker_postgres_read_lag_seconds'), undef,
    'and no lag gauge: it cannot be measured');

push_named(qw(d1));
$t->pg_replica_start;
ok(wait_for(sub { (endpoints($api) // '') eq '/a1 /a2 /b1 /c1 /d1' }, 60),
    'replica back: the API answers again, with what it missed');

# --- fallback through libpq: prefer the standby, else the primary ----------

my $api2 = $t->port('api2');
my $list = sprintf 'postgresql://postgres@127.0.0.1:%d,127.0.0.1:%d'
    . '/activity?target_session_attrs=prefer-standby',
    $t->pg_replica_port, $t->pg_port;
$t->worker_start(id => 'w2', args => ['--listen', "127.0.0.1:$api2",
    '--pg-read', $list]);

ok($t->pg_replica_caught_up, 'the replica has replayed everything');
$t->replica_value('SELECT pg_wal_replay_pause()');
ok(wait_for(sub { $t->replica_value('SELECT pg_get_wal_replay_pause_state()')
    eq 'paused' }, 30), 'replay paused again');
push_named(qw(e1));
is(endpoints($api2), '/a1 /a2 /b1 /c1 /d1',
    'prefer-standby: the standby is read while it is up');

$t->pg_replica_stop;
ok(wait_for(sub { (endpoints($api2) // '') eq '/a1 /a2 /b1 /c1 /d1 /e1' },
    60), 'standby down: the next query reads the primary');
is(get($api, '/api/events')->{status}, 503,
    'while a worker with the standby alone answers 503');

$t->worker_stop(id => 'w2');
$t->worker_stop;

like(join('', map { $_ } ActivityTest::_slurp($t->worker_log)),
    qr/msg="http: postgres unavailable" connection=read/,
    'the worker logged the read connection going away');

$t->done;
