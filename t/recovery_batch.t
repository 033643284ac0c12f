#!/usr/bin/perl

# A processing list left by a previous life (a crash) is finished first,
# read from its oldest end in batches of at most --batch, never as one
# batch of whatever size it grew to; a poison element in it leaves at
# once as a dead letter without disturbing the batches around it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use List::Util qw(sum max);
use ActivityTest qw(wait_for make_event to_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

my $r = $t->redis;

# as a worker leaves it: newest at the left, oldest at the right
my @texts = map { to_json(make_event(endpoint => "/rec/$_")) } 1 .. 25;
splice @texts, 11, 0, "{\"id\":\"not an event\0\"}";
$r->lpush('activity:processing:w1', $_) for @texts;
$t->push_events(map { make_event(endpoint => "/rec/new/$_") } 1 .. 5);

$t->worker_start(args => ['--batch', 10, '--log-level', 'debug']);

ok(wait_for(sub { $t->row_count("endpoint LIKE '/rec/%'") == 30 }, 30),
    'the 25 recovered events and the 5 queued ones are stored');
ok(wait_for(sub { $r->llen('activity:processing:w1') == 0 }, 20),
    'the processing list empties');
is($r->llen('activity:dead'), 1, 'the poison is a dead letter');

my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
like($log, qr/msg="recovering processing list" processing=activity:processing:w1 events=26 batch=10/,
    'the recovery is announced with its size');
my @sizes = $log =~ /msg="batch stored" events=(\d+)/g;
note("batches stored: @sizes");
cmp_ok(max(@sizes), '<=', 10, 'no batch larger than --batch');
is(sum(@sizes), 30, 'every event in exactly one stored batch');
unlike($log, qr/batch left in processing list|redis unavailable/,
    'no batch had to be re-read');

$t->done;
