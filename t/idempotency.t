#!/usr/bin/perl

# Exactly once: an event id is stored once however often it is delivered,
# and a worker killed mid-stream loses nothing and duplicates nothing.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for make_event);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => [ '--batch', 100 ]);

my $r = $t->redis;

sub stored {
    my ($e) = @_;
    return $t->row_count('id = ?', $e->{id});
}

# The same event twice in one push, then again after it was stored.

my $dup = make_event(endpoint => '/dup');
my $m1 = make_event(endpoint => '/marker1');
$t->push_events($dup, $dup, $m1);
ok(wait_for(sub { stored($m1) }, 20), 'marker stored');
is(stored($dup), 1, 'an event pushed twice at once is stored once');

my $m2 = make_event(endpoint => '/marker2');
$t->push_events($dup, $m2);
ok(wait_for(sub { stored($m2) }, 20), 'second marker stored');
is(stored($dup), 1, 'an event pushed again later is not stored again');

# A batch left in the processing list by a worker that died after (part
# of) it was written: the restarted worker recovers it, once.

is($t->worker_stop, 0, 'worker stops on SIGTERM with status 0');

my @batch = map { make_event(endpoint => "/crashed/$_") } 1 .. 50;
my $json = ActivityTest::to_json($batch[0]);
$t->dbh->do(q{INSERT INTO activity_logs (id, action, created_at, endpoint,
    method, status) VALUES (?, 'API_CALL', ?, '/crashed/1', 'GET', 200)},
    undef, $batch[0]{id}, $batch[0]{timestamp});
$r->lpush('activity:processing:w1',
    map { ActivityTest::to_json($_) } @batch);
is($t->row_count("endpoint LIKE '/crashed/%'"), 1, 'one of them written');

$t->worker_start(args => [ '--batch', 100 ]);
ok(wait_for(sub { $t->row_count("endpoint LIKE '/crashed/%'") == 50 }, 20),
    'processing list of a dead worker recovered at start');
ok(wait_for(sub { $r->llen('activity:processing:w1') == 0 }, 10),
    'processing list emptied');
is($t->sql_value("SELECT count(DISTINCT id) FROM activity_logs"
    . " WHERE endpoint LIKE '/crashed/%'"), 50, 'each once');

# SIGKILL while it consumes 20,000 events, then restart.

my $n = 20_000;
my @events = map { make_event(endpoint => "/bulk/$_",
    user => $_ % 7 ? undef : "u$_") } 1 .. $n;
my $base = $t->row_count;

# Pushed with no worker running, so that the queue length proves that
# every one of them arrived.
is($t->worker_stop, 0, 'worker stopped before the bulk push');
$t->push_events(@events);
is($r->llen('activity:events'), $n, "pushed $n events");
$t->worker_start(args => [ '--batch', 100 ]);

for my $round (1 .. 2) {
    my $at = $round * $n / 4;
    ok(wait_for(sub { $t->row_count - $base >= $at }, 60, 0.005),
        "round $round: $at events stored before the SIGKILL");
    $t->worker_kill;
    my $stored = $t->row_count - $base;
    note("round $round: SIGKILL with $stored of $n stored,"
        . ' queue ' . $r->llen('activity:events')
        . ', processing ' . $r->llen('activity:processing:w1'));
    $t->worker_start(args => [ '--batch', 100 ]);
}

ok(wait_for(sub {
    $t->row_count - $base >= $n
        && $r->llen('activity:events') == 0
        && $r->llen('activity:processing:w1') == 0;
}, 120), "all $n events stored after the kills")
    or diag('stored ' . ($t->row_count - $base));

is($t->row_count("endpoint LIKE '/bulk/%'"), $n, "count(*) == $n");
is($t->sql_value("SELECT count(DISTINCT id) FROM activity_logs"
    . " WHERE endpoint LIKE '/bulk/%'"), $n, "count(DISTINCT id) == $n");
is($t->row_count("endpoint LIKE '/bulk/%' AND user_id IS NOT NULL"),
    scalar(grep { defined $_->{userId} } @events), 'user ids kept');
is($r->llen('activity:dead'), 0, 'no dead letters');

# Two workers on one queue: each event stored once.

my @shared = map { make_event(endpoint => "/shared/$_") } 1 .. 2000;
$t->worker_start(id => 'w2', args => [ '--batch', 50 ]);
$t->push_events(@shared);
ok(wait_for(sub {
    $t->row_count("endpoint LIKE '/shared/%'") >= 2000
        && $r->llen('activity:events') == 0
}, 60), 'two workers drained the queue');
is($t->sql_value("SELECT count(DISTINCT id) FROM activity_logs"
    . " WHERE endpoint LIKE '/shared/%'"), 2000, 'every event stored');
is($t->row_count("endpoint LIKE '/shared/%'"), 2000, 'none twice');

$t->done;
