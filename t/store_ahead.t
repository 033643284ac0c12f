#!/usr/bin/perl

# The store thread: batches are published before they are stored, at
# most --store-ahead of them wait for PostgreSQL, a processing list
# changed under the worker is re-read rather than trimmed blindly, and
# SIGTERM stores what is in hand before exiting.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);
use ActivityTest qw(wait_for make_event);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

my @args = ('--batch', 10, '--store-ahead', 2, '--flush-ms', 20,
    '--retry-delays', '100');
$t->worker_start(args => \@args);

my $r = $t->redis;
my $proc = 'activity:processing:w1';

sub rows {
    my ($like) = @_;
    return $t->row_count('endpoint LIKE ?', $like);
}

# PostgreSQL down: two batches are taken and published, the rest waits
# in the queue.

$t->allow_worker_errors(qr/msg="postgres unavailable"/,
    qr/msg="partition maintenance failed"/);
$t->pg_stop;
$t->push_events(map { make_event(endpoint => "/ahead/$_") } 1 .. 50);

ok(wait_for(sub { $r->llen($proc) == 20 }, 10), 'two batches in hand');
# the consumer goes on (it recomputes the stats twice) without a third
my @stamps;
ok(wait_for(sub {
    my $st = $r->get('dashboard:stats') // '';
    push @stamps, $st unless @stamps && $stamps[-1] eq $st;
    return @stamps >= 3;
}, 30), 'the consumer keeps running');
is($r->llen($proc), 20, 'no third batch taken');
is($r->llen($t->queue), 30, 'the rest waits in the queue');
my @recent = grep { m{/ahead/} } $r->lrange('dashboard:events:recent', 0, -1);
is(scalar @recent, 20, 'the batches in hand were published already');

# Another worker requeues our list (as if we had stalled past the
# heartbeat): head of the queue, oldest next in line.

1 while defined $r->lmove($proc, $t->queue, 'LEFT', 'RIGHT');
is($r->llen($t->queue), 50, 'list requeued');

$t->pg_start;

ok(wait_for(sub { rows('/ahead/%') == 50 }, 30), 'all 50 stored');
ok(wait_for(sub { $r->llen($proc) == 0 && $r->llen($t->queue) == 0 }, 10),
    'queue and processing list empty');
is($t->sql_value(q{SELECT count(DISTINCT id) FROM activity_logs
    WHERE endpoint LIKE '/ahead/%'}), 50, 'each once');
@recent = grep { m{/ahead/} } $r->lrange('dashboard:events:recent', 0, -1);
is(scalar @recent, 50, 'each published once');

my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
like($log, qr/msg="batch left in processing list"/,
    'a batch no longer at the end of the list is not trimmed');

# SIGTERM under load: what was taken is stored, the rest stays queued.

$t->push_events(map { make_event(endpoint => "/drain/$_") } 1 .. 300);
wait_for(sub { rows('/drain/%') > 0 }, 10, 0.002);
is($t->worker_stop, 0, 'SIGTERM: exit 0');
is($r->llen($proc), 0, 'every batch in hand was stored');
is(rows('/drain/%') + $r->llen($t->queue), 300,
    'stored or still queued, nothing lost');

$t->done;
