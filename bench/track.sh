#!/usr/bin/env bash
#
# bench/track.sh: what activity_track costs nginx, next to what nginx's
# own buffered JSON access_log costs.
#
# One nginx with the module and three locations answering `return 200`:
# untracked (/off), tracked (/on) and logged by a buffered escape=json
# access_log with the same fields (/log), with Redis, PostgreSQL and the
# worker running (all on free loopback ports in a temporary directory,
# started through the test harness t/lib/ActivityTest.pm, stopped at the
# end). wrk runs alternating rounds against each, with and without a
# bearer token on every request (the module verifies it for userId).
#
# Throughput hides the cost (wrk and nginx share the cores), so the
# figure that counts is nginx's own CPU per request: utime + stime of the
# nginx worker processes (/proc/PID/stat) over a round, divided by the
# requests wrk counted. Prints each round, the medians, what tracking and
# the access log each add over /off, and their ratio.
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
use POSIX ();

my $rounds = $ENV{ROUNDS} || 5;
my $duration = $ENV{DURATION} || 5;
my $threads = $ENV{THREADS} || 2;
my $connections = $ENV{CONNECTIONS} || 50;
my $workers = $ENV{WORKERS} || 1;
my $stack = $ENV{STACK} // 0;
my $secret = 'bench-track-secret';
my $tick = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

my $t = ActivityTest->new(needs => [qw(module redis pg worker wrk)]);

# /log writes what an event holds, as nginx users log it for a pipeline
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
    activity_jwt_secret $secret;
    log_format activity escape=json '{"timestamp":"\$time_iso8601",'
        '"ipAddress":"\$remote_addr","userAgent":"\$http_user_agent",'
        '"endpoint":"\$uri","method":"\$request_method",'
        '"status":\$status,"durationMs":\$request_time,'
        '"requestId":"\$request_id"}';
    server {
        listen 127.0.0.1:%%PORT%% backlog=4096;
        location = /off { return 200; }
        location = /on { activity_track on; return 200; }
        location = /log {
            access_log %%TESTDIR%%/access.log activity buffer=64k;
            return 200;
        }
    }
}
EOF

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start if $stack;
$t->nginx_start;

my $token = ActivityTest::jwt_hs256($secret,
    { sub => 'user-42', role => 'user', exp => time + 86400 });

# nginx's worker processes: the children of the master
my $master = $t->{procs}{nginx};
my @pids = grep { /\d/ } split /\s+/, `ps -o pid= --ppid $master`;

sub cpu_ticks {
    my $sum = 0;
    for my $pid (@pids) {
        open my $fh, '<', "/proc/$pid/stat" or die "/proc/$pid/stat: $!";
        my $stat = <$fh>;
        $stat =~ s/^.*\)\s+//;           # past "pid (comm)"
        my @f = split ' ', $stat;
        $sum += $f[11] + $f[12];         # fields 14 and 15: utime, stime
    }
    return $sum;
}

sub wrk {
    my ($path, $with_token) = @_;
    my @h = $with_token ? ('-H', "Authorization: Bearer $token") : ();
    my $before = cpu_ticks();
    my ($rc, $out) = $t->run_cmd('wrk', "-t$threads", "-c$connections",
        "-d${duration}s", @h, $t->base_url . $path);
    my $ticks = cpu_ticks() - $before;
    die "wrk failed:\n$out" if $rc;
    my ($rps) = $out =~ /Requests\/sec:\s+([\d.]+)/;
    my ($n) = $out =~ /(\d+) requests in/;
    my ($errors) = $out =~ /Non-2xx or 3xx responses:\s+(\d+)/;
    die "no Requests/sec in wrk output:\n$out" unless defined $rps && $n;
    return ($rps, $n, $errors // 0, $ticks / $tick * 1e6 / $n);
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

my @modes = qw(off on log);
my (%rps, %us, $tracked, $bad);
for my $round (1 .. $rounds) {
    for my $auth (0, 1) {
        # rotate the order each round so that no mode always runs first
        my $k = $round % 3;
        my @order = (@modes[$k .. 2], @modes[0 .. $k - 1]);
        my %r;
        for my $mode (@order) {
            my ($rps, $n, $errors, $us) = wrk("/$mode", $auth);
            push @{ $rps{$auth}{$mode} }, $rps;
            push @{ $us{$auth}{$mode} }, $us;
            $tracked += $n if $mode eq 'on';
            $bad += $errors;
            $r{$mode} = sprintf '%6.0f req/s %5.2f us', $rps, $us;
        }
        printf "round %d %-6s off %s | on %s | log %s\n", $round,
            $auth ? 'bearer' : 'plain', @r{@modes};
    }
}

for my $auth (0, 1) {
    my %m = map { $_ => median(@{ $us{$auth}{$_} }) } @modes;
    my %q = map { $_ => median(@{ $rps{$auth}{$_} }) } @modes;
    my ($add_track, $add_log) = ($m{on} - $m{off}, $m{log} - $m{off});
    printf "\n%s, medians of %d rounds (nginx CPU per request):\n",
        $auth ? 'with a bearer token' : 'without a token', $rounds;
    printf "  %-22s %6.2f us/req %8.0f req/s\n", $_->[0],
        $m{ $_->[1] }, $q{ $_->[1] } for ['untracked (off)', 'off'],
        ['tracked (on)', 'on'], ['json access_log (log)', 'log'];
    printf "  tracking adds %.2f us/req, the access_log %.2f us/req:"
        . " ratio %.2f\n", $add_track, $add_log,
        $add_log > 0 ? $add_track / $add_log : 0;
}
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
