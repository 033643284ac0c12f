#!/usr/bin/perl

# The worker against a busy database: partition maintenance meeting a
# long reader (a report, pg_dump) neither stops the store nor queues the
# other readers; a table locked under the store makes /healthz say
# "store stalled" until it is released; SIGTERM does not wait for the
# lock; a backend that freezes costs a connection, not the worker.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use DBI;
use HTTP::Tiny;
use Test::More;
use ActivityTest qw(wait_for make_event from_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

my $port = $t->port('worker_http');
my $ua = HTTP::Tiny->new(timeout => 10);

sub get { $ua->get("http://127.0.0.1:$port$_[0]") }

sub connect_pg {
    my $dbh = DBI->connect('dbi:Pg:dbname=activity;host=127.0.0.1;port='
        . $t->pg_port, 'postgres', '',
        { RaiseError => 1, AutoCommit => 1, PrintError => 0 });
    $dbh->do("SET client_min_messages = warning");
    return $dbh;
}

# activity_logs_YYYYMMDD of today (UTC)
sub today_part {
    return $t->sql_value("SELECT 'activity_logs_' || to_char("
        . "(now() AT TIME ZONE 'UTC')::date, 'YYYYMMDD')");
}

# the frozen backend below is cut at level=error, as it should be
$t->allow_worker_errors(qr/msg="postgres not answering, connection cut"/)
    if $t->can('allow_worker_errors');

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

# Probes never wait for long: on a worker that queues a lock request
# behind the long reader, they would hang instead of failing.
$t->dbh->do("SET statement_timeout = '3s'");

sub stored {
    my ($like) = @_;
    return $t->row_count('endpoint LIKE ?', $like);
}


# --- a long reader while partitions are due -----------------------------

ok(!$t->table_exists(today_part()), 'no partition for today yet');

my $long = connect_pg();
$long->begin_work;
$long->selectrow_array('SELECT count(*) FROM activity_logs');
my $locks = $t->sql_value(q{SELECT count(*) FROM pg_locks
    WHERE relation = 'activity_logs_default'::regclass
      AND mode = 'AccessShareLock' AND granted});
ok($locks >= 1, 'a long reader holds the default partition');

$t->worker_start(args => ['--listen', "127.0.0.1:$port",
    '--flush-ms', 50, '--stall-timeout', 2]);

$t->push_events(map { make_event(endpoint => "/long/$_") } 1 .. 20);

ok(wait_for(sub { stored('/long/%') == 20 }, 30),
    'events stored while the long reader is open')
    or diag('rows: ' . stored('/long/%'));

my $other = connect_pg();
$other->do("SET statement_timeout = '5s'");
ok(wait_for(sub {
        eval { $other->selectrow_array('SELECT count(*) FROM activity_logs');
               1 } }, 30),
    'another reader of activity_logs is not blocked') or diag($@);

ok(wait_for(sub { slurp_log() =~ /msg="partition maintenance postponed"/ },
    20), 'maintenance says it was postponed');

$t->push_events(map { make_event(endpoint => "/long2/$_") } 1 .. 5);
ok(wait_for(sub { stored('/long2/%') == 5 }, 30),
    'later events stored too');

$long->rollback;
$long->disconnect;

ok(wait_for(sub { $t->table_exists(today_part()) }, 120),
    'today\'s partition made once the reader is gone');
is($t->sql_value('SELECT count(*) FROM activity_logs_default'), 0,
    'the rows stored meanwhile moved out of the default partition');
is(stored('/long%'), 25, 'none lost');

sub slurp_log {
    open my $fh, '<', $t->worker_log or return '';
    local $/;
    return <$fh>;
}


# --- a locked table: /healthz says "store stalled" -------------------------

ok(wait_for(sub { get('/healthz')->{status} == 200 }, 15), 'healthz 200');

my $locker = connect_pg();
$locker->begin_work;
$locker->do('LOCK TABLE activity_logs IN ACCESS EXCLUSIVE MODE');

$t->push_events(map { make_event(endpoint => "/locked/$_") } 1 .. 5);

my $r;
ok(wait_for(sub { $r = get('/healthz'); $r->{status} == 503 }, 30),
    'healthz 503 while nothing can be stored');
my $body = eval { from_json($r->{content}) } || {};
like($body->{store} // '', qr/^store stalled/, 'the reason: store stalled')
    or diag($r->{content});
is($body->{postgres}, 'ok', 'although PostgreSQL answers');

$locker->rollback;

ok(wait_for(sub { get('/healthz')->{status} == 200 }, 30),
    'healthz 200 again once the lock is released');
ok(wait_for(sub { stored('/locked/%') == 5 }, 30), 'the events stored');


# --- SIGTERM does not wait for a lock -----------------------------------

$locker->begin_work;
$locker->do('LOCK TABLE activity_logs IN ACCESS EXCLUSIVE MODE');
$t->push_events(map { make_event(endpoint => "/term/$_") } 1 .. 5);
ok(wait_for(sub { get('/healthz')->{status} == 503 }, 30),
    'the store waits for the lock');

is($t->worker_stop(timeout => 30), 0,
    'SIGTERM: exits 0 by itself while the store waits for a lock');
$locker->rollback;
like(slurp_log(), qr/msg="postgres call cancelled to stop"/,
    'the waiting statement was cancelled');
is($t->redis->llen('activity:processing:w1') + $t->redis->llen($t->queue)
    + stored('/term/%'), 5, 'the events wait for the next start');


# --- a frozen backend ---------------------------------------------------

$t->worker_start(args => ['--listen', "127.0.0.1:$port",
    '--flush-ms', 50, '--pg-timeout', 1]);
ok(wait_for(sub { stored('/term/%') == 5 }, 30),
    'the held events stored after the restart');

ok(wait_for(sub { get('/healthz')->{status} == 200 }, 15),
    'healthz 200: its connection is open');

# every store connection (--store-connections, 2 by default) is frozen
my (@pids, $http_pid);
ok(wait_for(sub {
        @pids = map { $_->[0] } @{ $t->dbh->selectall_arrayref(
            q{SELECT pid FROM pg_stat_activity
              WHERE application_name = 'activity-worker'}) }; @pids >= 2 },
        15),
    'the store connections are found') or diag('no backend');
$http_pid = $t->sql_value(q{SELECT pid FROM pg_stat_activity
    WHERE application_name = 'activity-worker-http'});
ok($http_pid, 'the HTTP thread\'s connection is found');
kill 'STOP', @pids, $http_pid;

$t->push_events(map { make_event(endpoint => "/frozen/$_") } 1 .. 5);
my $slow = HTTP::Tiny->new(timeout => 60)
    ->get("http://127.0.0.1:$port/healthz");
my $stored = wait_for(sub { stored('/frozen/%') == 5 }, 60);
kill 'CONT', @pids, $http_pid;
ok($slow->{status} == 200 || $slow->{status} == 503,
    'healthz answers while its backend is frozen')
    or diag("$slow->{status} $slow->{content}");
ok($stored, 'events stored on a new connection while the old one is frozen');
like(slurp_log(), qr/msg="postgres not answering, connection cut"/,
    'the frozen connection was cut');

$t->done;
