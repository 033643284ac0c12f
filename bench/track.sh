#!/usr/bin/env bash
#
# bench/track.sh: what activity_track costs.
#
# One nginx with the module and two locations answering `return 200`, one
# tracked and one not, with Redis, PostgreSQL and the worker running (all
# on free loopback ports in a temporary directory, started through the
# test harness t/lib/ActivityTest.pm, stopped at the end). wrk runs
# alternating rounds against each; prints each round, both medians and
# the ratio tracked/untracked.
#
# Environment: ROUNDS (5), DURATION seconds a run (5), THREADS (2),
# CONNECTIONS (50), WORKERS nginx worker processes (1), STACK (0).
#
# STACK=0 (default) measures what the module costs nginx: Redis runs,
# the worker is started only after the rounds, to store what queued up
# (in production it and PostgreSQL live elsewhere; on this 2-core box
# they would take their CPU from nginx and wrk).  STACK=1 keeps the
# worker and PostgreSQL busy during the rounds: the whole stack on one
# small machine.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

command -v wrk >/dev/null || { echo "track.sh: wrk is missing" >&2; exit 1; }

exec perl -I"$ROOT/t/lib" - "$@" <<'PERL'
use strict;
use warnings;

use ActivityTest qw(wait_for);

my $rounds = $ENV{ROUNDS} || 5;
my $duration = $ENV{DURATION} || 5;
my $threads = $ENV{THREADS} || 2;
my $connections = $ENV{CONNECTIONS} || 50;
my $workers = $ENV{WORKERS} || 1;
my $stack = $ENV{STACK} // 0;

my $t = ActivityTest->new(needs => [qw(module redis pg worker wrk)]);

$t->write_conf(<<"EOF");
load_module %%MODULE%%;
pid %%TESTDIR%%/nginx.pid;
error_log %%TESTDIR%%/error.log warn;
daemon off;
worker_processes $workers;
events { worker_connections 4096; }
http {
    %%GLOBALS_HTTP%%
    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_buffer_size 64m;
    server {
        listen 127.0.0.1:%%PORT%% backlog=4096;
        location = /off { return 200; }
        location = /on { activity_track on; return 200; }
    }
}
EOF

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start if $stack;
$t->nginx_start;

sub wrk {
    my ($path) = @_;
    my ($rc, $out) = $t->run_cmd('wrk', "-t$threads", "-c$connections",
        "-d${duration}s", $t->base_url . $path);
    die "wrk failed:\n$out" if $rc;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    my ($n) = $out =~ /(\d+) requests in/;
    my ($errors) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    die "no Requests/sec in wrk output:\n$out" unless defined $rps;
    return ($rps, $n // 0, $errors // 0);
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2;
}

printf "wrk -t%d -c%d -d%ds, %d rounds, %d nginx worker process%s, %s\n",
    $threads, $connections, $duration, $rounds, $workers,
    $workers == 1 ? '' : 'es',
    $stack ? 'worker and PostgreSQL busy during the rounds'
           : 'worker started after the rounds';

wrk('/off');    # warm-up, not counted

my (%rps, $tracked, $bad);
for my $round (1 .. $rounds) {
    my @order = $round % 2 ? qw(off on) : qw(on off);
    my %r;
    for my $mode (@order) {
        my ($rps, $n, $errors) = wrk("/$mode");
        push @{ $rps{$mode} }, $rps;
        $tracked += $n if $mode eq 'on';
        $bad += $errors;
        $r{$mode} = $rps;
    }
    printf "round %d: untracked %10.0f req/s   tracked %10.0f req/s\n",
        $round, $r{off}, $r{on};
}

my ($off, $on) = (median(@{ $rps{off} }), median(@{ $rps{on} }));
printf "\nmedian:  untracked %10.0f req/s   tracked %10.0f req/s\n",
    $off, $on;
printf "ratio tracked/untracked: %.3f\n", $on / $off;
print "non-2xx responses: $bad\n" if $bad;

# Did tracking really happen? Every tracked request should end up as an
# event: stored, or still queued. (Stored can exceed wrk's count by up to
# one request a connection a run: wrk does not count those in flight
# when it stops.)
$t->worker_start unless $stack;
# the queue empty is not all stored: batches may still be in the store
# thread; wait until the count holds still
wait_for(sub { $t->redis->llen('activity:events') == 0 }, 120, 0.5);
my $stored = -1;
wait_for(sub {
    my $n = $t->row_count;
    my $still = $n == $stored;
    $stored = $n;
    return $still;
}, 120, 1);
printf "events: %d tracked requests, %d stored, %d still queued\n",
    $tracked, $stored, $t->redis->llen('activity:events');
open my $fh, '<', $t->error_log;
my @drops = grep { /buffer|drop/i } <$fh>;
print "nginx error log:\n", @drops[0 .. ($#drops > 4 ? 4 : $#drops)]
    if @drops;

$t->stop_all;
$t->{done} = 1;
PERL
