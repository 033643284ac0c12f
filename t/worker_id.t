#!/usr/bin/perl

# Worker ids. A second process started with an id that a live worker
# holds waits one heartbeat TTL and then refuses to start (exit 1),
# leaving the first alone; a restart after a crash, whose heartbeat
# lingers, waits for it to lapse and then starts. Without --id every
# process gets its own id (host name and a random suffix).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Sys::Hostname qw(hostname);
use Test::More;
use ActivityTest qw(wait_for make_event);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);
$t->allow_worker_errors(qr/msg="another process took over this worker id/,
    qr/msg="another worker is running with this id/);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

my $r = $t->redis;
my @args = ('--heartbeat-ttl', 2);

$t->worker_start(id => 'w1', args => \@args);
ok(wait_for(sub { $r->exists('activity:alive:w1') }, 20), 'w1 runs');
my $holder = $r->get('activity:alive:w1');
like($holder, qr/^\Q${\ hostname()}\E:\d+:[0-9a-f]{12}$/,
    'its heartbeat names the process: host:pid:random');

# the twin: same id, same Redis
# (timeout: a worker that does not refuse would run forever)
my ($rc, $out) = $t->run_cmd('timeout', 60, $t->_worker_cmd('w1', @args));
is($rc, 1, 'a second process with --id w1 exits 1');
like($out, qr/\Qmsg="worker id in use, waiting for its heartbeat to lapse" id=w1\E/,
    'it first waits for the heartbeat to lapse');
like($out, qr/\Qlevel=error msg="another worker is running with this id, refusing to start" id=w1\E/,
    'then refuses, saying why');
ok($t->worker_running(id => 'w1'), 'the first worker still runs');
is($r->get('activity:alive:w1'), $holder, 'and still holds the id');

$t->push_events(make_event(endpoint => '/id/one'));
ok(wait_for(sub { $t->row_count("endpoint = '/id/one'") == 1 }, 20),
    'and still works');

# a crash: the key lingers; the restarted worker waits, then starts
$t->worker_kill(id => 'w1');
ok($r->exists('activity:alive:w1'), 'after SIGKILL the heartbeat lingers');
$t->worker_start(id => 'w1', args => \@args);
ok(wait_for(sub { ($r->get('activity:alive:w1') // $holder) ne $holder },
    20), 'the restarted worker takes the id once it lapsed');
$t->push_events(make_event(endpoint => '/id/two'));
ok(wait_for(sub { $t->row_count("endpoint = '/id/two'") == 1 }, 20),
    'and works');
is($t->worker_stop(id => 'w1'), 0, 'a SIGTERM: exit 0');

# a running worker whose id another process took (it stalled past the
# TTL and a twin started) stops and exits 1, without touching the key
$t->worker_start(id => 'w1', args => \@args);
ok(wait_for(sub { $t->worker_running(id => 'w1')
    && $r->exists('activity:alive:w1') }, 20), 'w1 runs again');
$r->set('activity:alive:w1', 'elsewhere:1:000000000000', 'EX', 30);
ok(wait_for(sub { !$t->worker_running(id => 'w1') }, 20),
    'w1 stops once another process holds its id');
like(do { local (@ARGV, $/) = $t->worker_log('w1'); <> },
    qr/\Qlevel=error msg="another process took over this worker id, stopping" id=w1\E/,
    'saying why');
is($r->get('activity:alive:w1'), 'elsewhere:1:000000000000',
    'and leaves the other\'s key alone');
$r->del('activity:alive:w1');

# no --id: a unique one per process
my @ids;
for my $n (1, 2) {
    $t->_spawn("worker:anon$n", $t->worker_log("anon$n"),
        grep { $_ ne '--id' && $_ ne 'ANON' } $t->_worker_cmd('ANON'));
}
ok(wait_for(sub { @ids = grep { $_ ne 'w1' }
    $r->zrange('activity:workers', 0, -1); @ids == 2 }, 20),
    'two workers without --id register two ids');
like($_, qr/^\Q${\ hostname()}\E-[0-9a-f]{8}$/, "id $_: host-random")
    for @ids;
$t->_stop("worker:anon$_", 'TERM', 20) for 1, 2;
ok(wait_for(sub { !grep { $_ ne 'w1' }
    $r->zrange('activity:workers', 0, -1) }, 20),
    'a clean exit leaves the registry');

$t->done;
