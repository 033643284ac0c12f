#!/usr/bin/perl

# Fault: PostgreSQL is stopped for 10 s under a steady tracked load and
# started again. The worker holds the batches in hand (at most
# --store-ahead), takes no new one (events wait in the Redis queue),
# keeps the stats going, and resumes: every request answered 200 is
# stored exactly once, no dead letters.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);
use ActivityTest qw(wait_for from_json);

use ActivityLoad;

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);

$t->write_conf(ActivityLoad::nginx_conf());
$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => [ '--batch', 200, '--store-ahead', 2,
    '--retry-delays', '200,400,800', '--stats-max-ms', 1000 ]);
$t->nginx_start;

my $r = $t->redis;
my $load = ActivityLoad->start($t, tag => 'pg', seconds => 20, rate => 300);

$load->at(4);
$t->allow_worker_errors(qr/msg="postgres unavailable"/,
    qr/msg="partition maintenance failed"/);
$t->pg_stop;
note('PostgreSQL stopped');

# the queue is the buffer: it grows while the worker holds its batches
my $held = 0;
my $holding = sub {
    my $h = $r->llen('activity:processing:w1');
    $held = $h if $h > $held;
    my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
    return $log =~ /msg="batch held until postgres is back"/;
};
ok(wait_for(sub { $holding->() }, 30), 'the worker holds its batch');
my $q1 = $r->llen('activity:events');
my $s1 = from_json($r->get('dashboard:stats') // '{}');
my $q2;
ok(wait_for(sub { $holding->(); ($q2 = $r->llen('activity:events')) > $q1 },
    30), "events wait in the queue ($q1, then $q2)");
my $s2;
ok(wait_for(sub {
    $holding->();
    $s2 = from_json($r->get('dashboard:stats') // '{}');
    return ($s2->{timestamp} // '') ne ($s1->{timestamp} // '');
}, 30), 'the stats keep being computed');
ok($held > 0 && $held <= 2 * 200,
    "at most --store-ahead batches held ($held)");

$load->at(14);
$t->pg_start;
note('PostgreSQL started');

my $res = $load->finish;
ok($t->worker_running, 'the worker rode the outage out');
ActivityLoad::check_stored($t, $res, 'pg');

my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
my $n = () = $log =~ /msg="postgres unavailable"/g;
is($n, 1, 'the outage is logged once');
my $re = 'msg="batch held until postgres is back"[\s\S]*'
    . 'msg="batch resumed"';
like($log, qr/$re/, 'held, then resumed');
unlike($log, qr/msg="batch store failed"/, 'no batch counted as failed');

$t->done;
