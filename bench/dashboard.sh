#!/usr/bin/env bash
#
# bench/dashboard.sh: end-to-end latency to dashboard clients.
#
# Starts Redis, PostgreSQL, the worker and nginx (one worker process, a
# plain `websocket` dashboard location and a tracked `return 200`
# location) on free loopback ports through the test harness, then runs
# bench/dashboard.js for each client count: it opens the clients, sends
# tracked requests at a fixed rate, and reports the latency from request
# sent to `activity:new` received (p50, p99, max), the fraction of
# events delivered, and nginx memory per connected client.
#
# The worker runs with its default settings, as `make run` and the
# systemd unit start it: it publishes what it has taken at once and only
# batches storage (--flush-ms), so these are the latencies users get.
#
# Environment: CLIENTS ("100 1000 5000"), RATE events/s (500), SECONDS
# (10), WORKERS nginx worker processes (1), PROCS client processes
# (default: 2 from 1,000 clients on, else 1).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

[ -d "$ROOT/t/js/node_modules/ws" ] || npm ci --prefix "$ROOT/t/js" >/dev/null

exec perl -I"$ROOT/t/lib" - "$@" <<'PERL'
use strict;
use warnings;

use ActivityTest;

my @clients = split ' ', ($ENV{CLIENTS} || '100 1000 5000');
my $rate = $ENV{RATE} || 500;
my $seconds = $ENV{SECONDS} || 10;
my $workers = $ENV{WORKERS} || 1;
my $procs = $ENV{PROCS} ? "--procs $ENV{PROCS}" : '';

my $t = ActivityTest->new(needs => [qw(module redis pg worker node)]);
my $secret = 'bench-secret';

$t->write_conf(<<"EOF");
load_module %%MODULE%%;
pid %%TESTDIR%%/nginx.pid;
error_log %%TESTDIR%%/error.log warn;
daemon off;
worker_processes $workers;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http {
    %%GLOBALS_HTTP%%
    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret $secret;
    activity_dashboard_max_connections 100000;
    server {
        listen 127.0.0.1:%%PORT%% backlog=4096;
        location /api/ { activity_track on; return 200; }
        location /ws { activity_dashboard websocket; }
    }
}
EOF

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start;
$t->nginx_start;

my $token = ActivityTest::jwt_hs256($secret,
    { sub => 'bench', role => 'admin', exp => time + 3600 });
(my $ws = $t->base_url) =~ s/^http/ws/;

# nginx's worker processes: the children of the master
my $master = $t->{procs}{nginx};
my @workers = grep { /\d/ } split /\s+/,
    `ps -o pid= --ppid $master`;

printf "rate %d events/s for %d s, worker defaults, %d nginx worker(s)\n",
    $rate, $seconds, $workers;
printf "%8s %9s %9s %9s %10s %14s\n",
    'clients', 'p50 ms', 'p99 ms', 'max ms', 'delivered', 'KiB/client';

for my $n (@clients) {
    my $out = `NODE_PATH=$ENV{ROOT}/t/js/node_modules node \\
        $ENV{ROOT}/bench/dashboard.js --ws '$ws/ws?token=$token' \\
        --http '@{[ $t->base_url ]}' --clients $n --rate $rate \\
        --seconds $seconds $procs --nginx-pids @{[ join ',', @workers ]}`;
    my $r = ActivityTest::from_json((split /\n/, $out)[-1] // '{}');
    printf "%8d %9.2f %9.2f %9.2f %10.4f %14.1f\n",
        $n, $r->{p50_ms} // -1, $r->{p99_ms} // -1, $r->{max_ms} // -1,
        $r->{delivered} // 0, $r->{nginx_kib_per_client} // -1;
    sleep 2;
}

$t->stop_all;
$t->{done} = 1;
PERL
