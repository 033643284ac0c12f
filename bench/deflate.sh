#!/usr/bin/env bash
#
# bench/deflate.sh: permessage-deflate against plain frames.
#
# Starts Redis and nginx (one worker process, a `websocket` dashboard
# location with activity_dashboard_deflate on, the default) on free
# loopback ports through the test harness, then runs bench/deflate.js:
# rounds alternating between N clients that offer permessage-deflate and
# N that do not, the same kind of events published straight into Redis,
# reporting bytes on the wire per delivered frame and nginx's CPU per
# delivered frame (utime + stime of its worker), medians of the rounds.
#
# Environment: CLIENTS (1000), EVENTS a round (500), RATE events/s
# (100), ROUNDS (5), PROCS client processes (2 from 1,000 clients on);
# PERF=1 also profiles the nginx worker (perf record -e cpu-clock) and
# prints its time by library.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

[ -d "$ROOT/t/js/node_modules/ws" ] || npm ci --prefix "$ROOT/t/js" >/dev/null

exec perl -I"$ROOT/t/lib" - "$@" <<'PERL'
use strict;
use warnings;

use ActivityTest;

my $t = ActivityTest->new(needs => [qw(module redis node)]);
my $secret = 'bench-secret';

$t->write_conf(<<"EOF");
load_module %%MODULE%%;
pid %%TESTDIR%%/nginx.pid;
error_log %%TESTDIR%%/error.log warn;
daemon off;
worker_processes 1;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    %%GLOBALS_HTTP%%
    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret $secret;
    activity_dashboard_max_connections 100000;
    server {
        listen 127.0.0.1:%%PORT%% backlog=4096;
        location /ws { activity_dashboard websocket; }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $token = ActivityTest::jwt_hs256($secret,
    { sub => 'bench', role => 'admin', exp => time + 3600 });
(my $ws = $t->base_url) =~ s/^http/ws/;

my $master = $t->{procs}{nginx};
my ($worker) = grep { /\d/ } split /\s+/, `ps -o pid= --ppid $master`;

my %o = (clients => $ENV{CLIENTS} || 1000, events => $ENV{EVENTS} || 500,
    rate => $ENV{RATE} || 100, rounds => $ENV{ROUNDS} || 5,
    $ENV{PROCS} ? (procs => $ENV{PROCS}) : ());
printf "%d clients, %d events a round at %d/s, %d rounds, one nginx "
    . "worker\n", @o{qw(clients events rate rounds)};

# PERF=1: a profile of the nginx worker over every round, by library
# (libz's share is what compressing costs)
my $perf;
if ($ENV{PERF}) {
    $perf = fork // die "fork: $!";
    if ($perf == 0) {
        exec 'perf', 'record', '-q', '-e', 'cpu-clock', '-g',
            '-o', "$t->{dir}/perf.data", '-p', $worker;
        die "perf: $!";
    }
}

my $rc = system('node', "$ENV{ROOT}/bench/deflate.js",
    '--ws', "$ws/ws?token=$token", '--redis', $t->redis_port,
    '--nginx-pid', $worker, map { ("--$_", $o{$_}) } sort keys %o);

if ($perf) {
    kill 'INT', $perf;
    waitpid $perf, 0;
    system("perf report -i $t->{dir}/perf.data --no-children --stdio "
        . "--sort dso -g none 2>/dev/null | grep -v '^#' | grep . "
        . "| head -12");
}

$t->stop_all;
$t->{done} = 1;
exit($rc ? 1 : 0);
PERL
