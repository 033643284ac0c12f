#!/usr/bin/env bash
#
# bench/connect.sh: how long a storm of dashboards takes to connect.
#
# Starts Redis and nginx (one worker process, a `websocket` and a
# `socketio` dashboard location, an HS256 secret) on free loopback
# ports through the test harness, then runs bench/connect.js for each
# protocol: N dashboards connect at once with the same admin token, and
# it reports the median over ROUNDS rounds of the time until every one
# has its snapshot, and the nginx worker's CPU time per connection.
#
# Environment: CLIENTS (1000), ROUNDS (5); PERF=1 also records a
# profile of the nginx worker during the storms (perf record -e
# cpu-clock -g) and prints its top symbols.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export NODE_PATH="$ROOT/t/js/node_modules"
export ROOT

[ -d "$ROOT/t/js/node_modules/ws" ] || npm ci --prefix "$ROOT/t/js" >/dev/null

exec perl -I"$ROOT/t/lib" - "$@" <<'PERL'
use strict;
use warnings;

use ActivityTest;

my $clients = $ENV{CLIENTS} || 1000;
my $rounds = $ENV{ROUNDS} || 5;

my $t = ActivityTest->new(needs => [qw(module redis node)]);
my $secret = 'bench-secret';

$t->write_conf(<<"EOF");
load_module %%MODULE%%;
pid %%TESTDIR%%/nginx.pid;
error_log %%TESTDIR%%/error.log warn;
daemon off;
worker_processes 1;
events { worker_connections 16384; }
http {
    %%GLOBALS_HTTP%%
    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret $secret;
    activity_dashboard_max_connections 100000;
    activity_dashboard_max_per_ip 0;
    activity_dashboard_max_pending 65535;
    server {
        listen 127.0.0.1:%%PORT%% backlog=4096;
        location /ws { activity_dashboard websocket; }
        location /socket.io/ { activity_dashboard socketio; }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $token = ActivityTest::jwt_hs256($secret,
    { sub => 'bench', role => 'admin', exp => time + 3600 });
(my $ws = $t->base_url) =~ s/^http/ws/;

my $master = $t->{procs}{nginx};
my @workers = grep { /\d/ } split /\s+/, `ps -o pid= --ppid $master`;

my $perf;
if ($ENV{PERF}) {
    $perf = fork // die "fork: $!";
    if ($perf == 0) {
        exec 'perf', 'record', '-q', '-e', 'cpu-clock', '-g',
            '-o', "$t->{dir}/perf.data", '-p', join(',', @workers);
        die "perf: $!";
    }
    sleep 1;
}

printf "%d dashboards, %d rounds, 1 nginx worker\n", $clients, $rounds;

for my $p (qw(websocket socketio)) {
    my $url = $p eq 'socketio' ? "$ws/socket.io/" : "$ws/ws";
    system('node', "$ENV{ROOT}/bench/connect.js", '--url', $url,
        '--protocol', $p, '--token', $token, '--clients', $clients,
        '--rounds', $rounds, '--nginx-pids', join(',', @workers)) == 0
        or die "bench/connect.js failed\n";
}

if ($perf) {
    kill 'INT', $perf;
    waitpid $perf, 0;
    system("perf report -i $t->{dir}/perf.data --no-children --stdio "
        . "--sort dso -g none 2>/dev/null | grep -v '^#' | grep . "
        . "| head -25");
}

$t->done;
PERL
