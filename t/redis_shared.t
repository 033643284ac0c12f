#!/usr/bin/perl

# A Redis shared with other data: two million unrelated keys. Workers
# find each other through the registry activity:workers (never a SCAN
# of the keyspace), so a worker SIGKILLed with events in its processing
# list has them requeued by the other and every event is stored once;
# and the marks that remember counted events are a few keys a minute of
# event time, not one key an event.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for make_event);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_args('--enable-debug-command', 'yes');
$t->redis_start;
$t->pg_start;
$t->worker_migrate;

my $r = $t->redis;
$r->debug('populate', 2_000_000, 'other');
my $others = $r->dbsize;
cmp_ok($others, '>=', 2_000_000, 'Redis holds two million other keys');

my @args = ('--batch', 50, '--flush-ms', 60000, '--heartbeat-ttl', 2);
$t->worker_start(id => 'w1', args => \@args);
ok(wait_for(sub { $r->exists('activity:alive:w1') }, 20), 'w1 runs');

# w1 takes 30 events and keeps them (the batch waits for 20 more)
my @held = map { make_event(endpoint => "/shared/held/$_") } 1 .. 30;
$t->push_events(@held);
ok(wait_for(sub { $r->llen('activity:processing:w1') == 30 }, 20),
    'w1 holds 30 events in its processing list');

$t->worker_kill(id => 'w1');

is_deeply([ $r->zrange('activity:workers', 0, -1) ], ['w1'],
    'the registry names w1');

$t->worker_start(id => 'w2', args => ['--batch', 50, '--flush-ms', 200,
    '--heartbeat-ttl', 2]);

ok(wait_for(sub { $t->row_count("endpoint LIKE '/shared/held/%'") == 30 },
    60), 'w2 requeued and stored w1\'s events');
is($r->llen('activity:processing:w1'), 0, 'w1\'s list is empty');
ok(wait_for(sub { !grep { $_ eq 'w1' } $r->zrange('activity:workers', 0,
    -1) }, 20), 'and w1 left the registry');
like(do { local (@ARGV, $/) = $t->worker_log('w2'); <> },
    qr/msg="requeued the batch of a dead worker" processing=activity:processing:w1 events=30/,
    'w2 says so');

# dedupe marks: a handful of keys for 5,000 events

my $before = $r->dbsize;
my $now = time;
my @many = map { make_event(endpoint => "/shared/many/$_",
    time => $now - ($_ % 120)) } 1 .. 5000;
$t->push_events(@many);
ok(wait_for(sub { $t->row_count("endpoint LIKE '/shared/many/%'") == 5000 },
    60), '5,000 more events stored');
my $grown = $r->dbsize - $before;
my @seen = $r->keys('activity:seen:*');
cmp_ok(scalar @seen, '<=', 4, 'the marks: one key a minute of event time');
is(scalar grep({ !/^activity:seen:m:\d+$/ } @seen), 0,
    'named activity:seen:m:<minute>');
cmp_ok($grown, '<', 200,
    "Redis gained $grown keys for 5,000 events (counter buckets, marks)");

# and they still dedupe: the same events again are not counted again
my $api = sub { ($r->get('dashboard:stats') // '') =~
    /"apiRequestsPerMinute":(\d+)/ ? $1 : -1 };
$t->push_events(@many[0 .. 99]);
ok(wait_for(sub { $r->llen('activity:events') == 0
    && $r->llen('activity:processing:w2') == 0 }, 30),
    'the 100 replayed events were handled');
my $log = do { local (@ARGV, $/) = $t->worker_log('w2'); <> };
my ($scans) = ($r->info('commandstats')->{cmdstat_scan} // '') =~ /calls=(\d+)/;
is($scans // 0, 0, 'no worker ever ran SCAN');
ok($t->worker_running(id => 'w2'), 'w2 still runs');
unlike($log, qr/redis unavailable/, 'and never lost Redis');
cmp_ok($api->(), '<=', 5000, 'replays not counted twice');

$t->done;
