#!/usr/bin/perl

# Fault: the worker is SIGKILLed mid-batch, twice, under a steady tracked
# load, and restarted: every request answered 200 is stored exactly once.

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

# a long flush keeps a batch in the processing list most of the time
my @args = ('--batch', 200, '--flush-ms', 400);
$t->worker_start(args => \@args);
$t->nginx_start;

my $r = $t->redis;
my $load = ActivityLoad->start($t, tag => 'kill', seconds => 15,
    rate => 300);
my $caught = 0;

for my $at (4, 9) {
    $load->at($at);
    # kill while events are in flight, not between batches
    wait_for(sub { $r->llen('activity:processing:w1') > 0 }, 5, 0.002);
    $t->worker_kill;
    my $held = $r->llen('activity:processing:w1');
    $caught++ if $held;
    note("SIGKILL at ${at}s with $held events in the processing list");
    $t->worker_start(args => \@args);
}

my $res = $load->finish;
ok($caught, 'a kill caught a batch in flight');
ActivityLoad::check_stored($t, $res, 'kill');

my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
like($log, qr/msg="recovering processing list"/,
    'a restarted worker finished its predecessor\'s batch');

$t->done;
