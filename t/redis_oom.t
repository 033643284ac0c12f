#!/usr/bin/perl

# Redis at maxmemory with noeviction refuses every command that may
# grow memory (BLMOVE, LMOVE, the counters' writes). Events still reach
# PostgreSQL, the live side pauses, and the log says exactly why; once
# memory is available again, live counters and publishing resume.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for make_event to_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);
$t->allow_worker_errors(qr/msg="redis OOM: live counters paused/);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

my $r = $t->redis;
$r->config_set('maxmemory-policy', 'noeviction');

$t->worker_start(args => ['--batch', 50, '--heartbeat-ttl', 3]);
ok(wait_for(sub { $r->exists('activity:alive:w1') }, 20), 'worker runs');

# the events and the memory limit arrive together: from the first
# command the worker sends after them, Redis is full
my @events = map { make_event(endpoint => "/oom/$_") } 1 .. 200;
$r->multi;
$r->lpush('activity:events', map { to_json($_) } @events);
$r->config_set('maxmemory', 1);
$r->exec;

is($r->config_get('maxmemory')->[1], 1, 'Redis is at maxmemory');
is(eval { $r->set('probe', 1); 'accepted' } // ($@ =~ /OOM/ ? 'OOM' : $@),
    'OOM', 'and refuses writes');

ok(wait_for(sub { $t->row_count("endpoint LIKE '/oom/%'") == 200 }, 60),
    'every event is stored in PostgreSQL all the same');
ok(wait_for(sub { $r->llen('activity:processing:w1') == 0 }, 20),
    'and leaves the processing list');
is($r->llen('activity:events'), 0, 'the queue is empty');

my $log = sub { local (@ARGV, $/) = $t->worker_log; <> };
like($log->(), qr/\Qlevel=error msg="redis OOM: live counters paused, storing continues"\E/,
    'the log says why the dashboards pause');
unlike($log->(), qr/redis unavailable/, 'Redis is not called unavailable');
ok($t->worker_running, 'the worker still runs');

sleep 4;    # longer than the heartbeat TTL
ok($r->exists('activity:alive:w1'), 'its heartbeat stayed alive');

# memory back: live counters and publishing resume
$r->config_set('maxmemory', 0);
my $late = make_event(endpoint => '/oom/late');
$t->push_events($late);
ok(wait_for(sub { grep { /\/oom\/late/ }
    $r->lrange('dashboard:events:recent', 0, -1) }, 20),
    'a new event is published again');
ok(wait_for(sub { $log->() =~
    /\Qmsg="redis memory available again: live counters resumed"\E/ }, 20),
    'and the log says so');
ok(wait_for(sub { $t->row_count("endpoint LIKE '/oom/%'") == 201 }, 20),
    'and stored');

# a worker (re)started while Redis is full registers and drains it: it
# is what frees the memory

$t->worker_stop;
my @second = map { make_event(endpoint => "/oom/second/$_") } 1 .. 100;
$r->multi;
$r->lpush('activity:events', map { to_json($_) } @second);
$r->config_set('maxmemory', 1);
$r->exec;

$t->worker_start(args => ['--batch', 50, '--heartbeat-ttl', 3]);
ok(wait_for(sub { $r->exists('activity:alive:w1') }, 20),
    'a worker started on a full Redis takes its heartbeat');
ok(wait_for(sub { $t->row_count("endpoint LIKE '/oom/second/%'") == 100 },
    60), 'and stores what waits in the queue');
is($r->llen('activity:events'), 0, 'the queue is drained');
$r->config_set('maxmemory', 0);

$t->done;
