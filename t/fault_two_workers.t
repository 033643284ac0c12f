#!/usr/bin/perl

# Fault: two workers share the queue; one is SIGKILLed mid-batch and
# never restarted. Its heartbeat expires and the other worker requeues
# its processing list: every request answered 200 is stored once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for);

use ActivityLoad;

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);

$t->write_conf(ActivityLoad::nginx_conf());
$t->redis_start;
$t->pg_start;
$t->worker_migrate;

my @args = ('--batch', 200, '--flush-ms', 400, '--heartbeat-ttl', 2);
$t->worker_start(id => 'w1', args => \@args);
$t->worker_start(id => 'w2', args => \@args);
$t->nginx_start;

my $r = $t->redis;
ok(wait_for(sub { $r->exists('activity:alive:w1')
    && $r->exists('activity:alive:w2') }, 10), 'both heartbeats are set');

my $load = ActivityLoad->start($t, tag => 'two', seconds => 15,
    rate => 300);

# w1 is stopped (SIGSTOP) until it is caught holding a batch, so that
# the SIGKILL surely leaves one behind
$load->at(5);
my $w1 = $t->worker_pid(id => 'w1');
my $held = 0;
ok(wait_for(sub {
    return 0 unless $r->llen('activity:processing:w1') > 0;
    kill 'STOP', $w1;
    return 1 if $held = $r->llen('activity:processing:w1');
    kill 'CONT', $w1;
    return 0;
}, 10, 0.002), 'w1 caught holding a batch');
$t->worker_kill(id => 'w1');
note("w1 SIGKILLed with $held events in its processing list");

my $res = $load->finish;
ok($t->worker_running(id => 'w2'), 'w2 still running');
ActivityLoad::check_stored($t, $res, 'two');

is($r->llen('activity:processing:w1'), 0, 'w1\'s list was emptied');
ok(!$r->exists('activity:alive:w1'), 'w1\'s heartbeat expired');

# a BLMOVE w1 sent before the SIGSTOP, waiting in Redis, may still move
# one more event into its list: $held or $held + 1 are requeued
my $log = do { local (@ARGV, $/) = $t->worker_log('w2'); <> };
my $re = 'msg="requeued the batch of a dead worker"'
    . ' processing=activity:processing:w1 events=(\d+)';
my ($requeued) = $log =~ /$re/;
ok(defined $requeued && ($requeued == $held || $requeued == $held + 1),
    "w2 requeued w1's batch (" . ($requeued // 'none') . " of $held"
    . ' events and a waiting BLMOVE)');

$t->done;
