#!/usr/bin/env bash
#
# bench/dashboard.sh: end-to-end latency to dashboard clients, our stack
# side by side with the Node stack it replaces.
#
# Starts Redis, PostgreSQL, the worker and nginx (one worker process, a
# `socketio` and a plain `websocket` dashboard location and a tracked
# `return 200` location) on free loopback ports through the test
# harness, and the baseline in bench/baseline/ (Node: an HTTP server
# that enqueues a BullMQ job per request and relays published events to
# Socket.IO clients, and a BullMQ worker that stores each job into the
# same PostgreSQL table and publishes it) on the same Redis and
# PostgreSQL. Then, for each client count and round, it runs
# bench/dashboard.js against each stack in turn (alternating): N
# dashboard clients (bench/dashclient.c, one epoll loop), tracked
# requests at a fixed rate, the latency from request sent to
# `activity:new` received (p50, p99, max) and the fraction delivered.
# It prints every round, then the medians over the rounds side by side
# with the ratio node / module, and last how many of the bench requests
# of all runs are rows in PostgreSQL (both stacks store into the same
# table). "client CPU" is the clients' own CPU time over the run as a
# share of one core: the harness must stay far from saturating the
# machine; "us/frame" the serving process's CPU (nginx's workers, the
# Node Socket.IO server) per delivered frame; "KiB/client" nginx's RSS
# growth per connected client (ours only).
#
# Both stacks run with their defaults: the worker as `make run` and the
# systemd unit start it, the module's default directives, Socket.IO's and
# BullMQ's defaults.
#
# Environment: CLIENTS ("100 1000"), RATE events/s (20), SECONDS (10),
# ROUNDS (3), STACKS ("module node"; also "module-ws": our plain
# `websocket` protocol), WORKERS nginx worker processes (1), PROCS client
# processes (1), PIN (1: servers and harness on separate CPUs, below),
# CLIENT (c; raw or ws: Node clients, plain websocket only), MONITOR=1
# also times each event's enqueue and PUBLISH in Redis (MONITOR: a
# diagnostic that costs Redis some work).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

[ -d "$ROOT/t/js/node_modules/ws" ] || npm ci --prefix "$ROOT/t/js" >/dev/null
[ -x "$ROOT/build/dashclient" ] || {
    echo "build/dashclient is missing: run make bench-dashboard" >&2
    exit 1
}
case " ${STACKS:-module node} " in
*" node "*)
    [ -d "$ROOT/bench/baseline/node_modules/bullmq" ] || {
        echo "bench/baseline/node_modules is missing:" \
             "run make bench-dashboard" >&2
        exit 1
    } ;;
esac

# The clients stand in for dashboards on other machines: on a machine
# with cores to spare they should not take the servers' CPU, nor the
# servers theirs. PIN=1 (the default, with 2 CPUs or more) runs the
# servers of both stacks (Redis, PostgreSQL, the worker, nginx, the Node
# stack) on every CPU but the last, and the harness (the load generator
# and the clients) on the last one; PIN=0 lets the scheduler place
# everything (on 2 cores it then often runs nginx and the clients on
# the same core while the other idles).
# the CPUs this process may use ("0,1", "2-5,8"), one a line
cpus=$(taskset -cp $$ | sed 's/.*: //' | tr ',' '\n' \
       | while IFS=- read -r lo hi; do seq "$lo" "${hi:-$lo}"; done)
ncpu=$(echo "$cpus" | wc -l)
stack_cpus=
if [ "${PIN:-1}" = 1 ] && [ "$ncpu" -ge 2 ]; then
    export BENCH_HARNESS_CPU=$(echo "$cpus" | tail -n 1)
    stack_cpus="taskset -c $(echo "$cpus" | head -n -1 | paste -sd,)"
fi

exec $stack_cpus perl -I"$ROOT/t/lib" - "$@" <<'PERL'
use strict;
use warnings;

use ActivityTest;

my @clients = split ' ', ($ENV{CLIENTS} || '100 1000');
my @stacks = split ' ', ($ENV{STACKS} || 'module node');
my $rate = $ENV{RATE} || 20;
my $seconds = $ENV{SECONDS} || 10;
my $rounds = $ENV{ROUNDS} || 3;
my $workers = $ENV{WORKERS} || 1;
my $procs = $ENV{PROCS} ? "--procs $ENV{PROCS}" : '';
my $client = $ENV{CLIENT} || 'c';
my $monitor = $ENV{MONITOR} ? '--monitor %%REDIS%%' : '';
my $harness = defined $ENV{BENCH_HARNESS_CPU}
    ? "taskset -c $ENV{BENCH_HARNESS_CPU}" : '';

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
        location /socket.io/ { activity_dashboard socketio; }
    }
}
EOF

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start;
$t->nginx_start;

# the Node stack on the same Redis and PostgreSQL
my $node_port = $t->port('baseline');
if (grep { $_ eq 'node' } @stacks) {
    local $ENV{PORT} = $node_port;
    local $ENV{REDIS_URL} = $t->redis_url;
    local $ENV{PG_URL} = $t->pg_url;
    local $ENV{JWT_SECRET} = $secret;
    for my $part (qw(server worker)) {
        $t->_spawn("baseline:$part", "$t->{dir}/baseline-$part.log",
            'node', "$ENV{ROOT}/bench/baseline/$part.js");
    }
    for my $part (qw(server worker)) {
        my $log = "$t->{dir}/baseline-$part.log";
        my $ready = $part eq 'server' ? qr/listening/ : qr/worker ready/;
        ActivityTest::wait_for(sub {
            open my $fh, '<', $log or return 0;
            local $/;
            return <$fh> =~ $ready;
        }, 30) or die "the Node stack's $part did not start:\n"
            . `tail -n 20 $log`;
    }
}

my $token = ActivityTest::jwt_hs256($secret,
    { sub => 'bench', role => 'admin', exp => time + 3600 });
my $eio = 'socket.io/?EIO=4&transport=websocket';
my $http = $t->base_url;
(my $ws = $http) =~ s/^http/ws/;
my %target = (
    module      => [ "--ws '$ws/$eio' --proto sio", $http ],
    'module-ws' => [ "--ws '$ws/ws?token=$token' --proto ws", $http ],
    node        => [ "--ws 'ws://127.0.0.1:$node_port/$eio' --proto sio",
                     "http://127.0.0.1:$node_port" ],
);

# nginx's worker processes: the children of the master
my $master = $t->{procs}{nginx};
my @nginx = grep { /\d/ } split /\s+/, `ps -o pid= --ppid $master`;

sub median {
    my @v = sort { $a <=> $b } grep { defined } @_;
    return undef unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

printf "rate %d events/s for %d s, %d round(s), defaults, "
    . "%d nginx worker(s), %s clients, %s\n",
    $rate, $seconds, $rounds, $workers, $client, $harness
        ? "harness on CPU $ENV{BENCH_HARNESS_CPU}, servers on the others"
        : 'unpinned';
printf "%-10s %8s %6s %9s %9s %9s %10s %11s %11s %11s\n",
    'stack', 'clients', 'round', 'p50 ms', 'p99 ms', 'max ms', 'delivered',
    'client CPU', 'us/frame', 'KiB/client';

my %res;
for my $n (@clients) {
    for my $round (1 .. $rounds) {
        for my $s (@stacks) {
            my ($wsarg, $url) = @{ $target{$s} or die "unknown stack $s" };
            my $pids = $s =~ /^module/
                ? '--nginx-pids ' . join(',', @nginx)
                    . ' --cpu-pids ' . join(',', @nginx)
                : "--cpu-pids $t->{procs}{'baseline:server'}";
            (my $mon = $monitor) =~ s/%%REDIS%%/$t->redis_port/e;
            my $out = `NODE_PATH=$ENV{ROOT}/t/js/node_modules $harness node \\
                $ENV{ROOT}/bench/dashboard.js $wsarg --token '$token' \\
                --http '$url' --clients $n --rate $rate --client $client \\
                --seconds $seconds $procs $pids $mon`;
            my $r = ActivityTest::from_json((split /\n/, $out)[-1] // '{}');
            push @{ $res{$n}{$s} }, $r;
            printf "%-10s %8d %6d %9.2f %9.2f %9.2f %10.4f %10.1f%% %11.2f"
                . " %11s\n",
                $s, $n, $round, $r->{p50_ms} // -1, $r->{p99_ms} // -1,
                $r->{max_ms} // -1, $r->{delivered} // 0,
                100 * ($r->{client_cpu} // 0),
                $r->{server_us_per_frame} // -1,
                defined $r->{nginx_kib_per_client}
                    ? sprintf('%.1f', $r->{nginx_kib_per_client}) : '-';
            printf "%-10s %8s %6s %9.2f %9.2f  (to enqueue: p50, p99)\n"
                . "%-10s %8s %6s %9.2f %9.2f  (to PUBLISH: p50, p99)\n",
                '', '', '', $r->{enqueue_p50_ms} // -1,
                $r->{enqueue_p99_ms} // -1,
                '', '', '', $r->{publish_p50_ms} // -1,
                $r->{publish_p99_ms} // -1 if $monitor;
            printf "%-10s %8d %6d  %d of %d tracked requests failed\n",
                $s, $n, $round, $r->{failed}, $r->{sent} if $r->{failed};
            sleep 2;
        }
    }
}

print "\nmedians over $rounds round(s)";
print ", ratio = node / module" if grep({ $_ eq 'node' } @stacks)
    && grep({ $_ eq 'module' } @stacks);
print "\n";
printf "%-10s %8s %9s %9s %9s %10s\n",
    'stack', 'clients', 'p50 ms', 'p99 ms', 'max ms', 'delivered';
for my $n (@clients) {
    my %m;
    for my $s (@stacks) {
        my @r = @{ $res{$n}{$s} };
        for my $k (qw(p50_ms p99_ms max_ms delivered)) {
            $m{$s}{$k} = median(map { $_->{$k} } @r);
        }
        printf "%-10s %8d %9.2f %9.2f %9.2f %10.4f\n", $s, $n,
            map { $m{$s}{$_} // -1 } qw(p50_ms p99_ms max_ms delivered);
    }
    if ($m{node} && $m{module}) {
        printf "%-10s %8d %8.1fx %8.1fx %8.1fx\n", 'ratio', $n,
            map { $m{module}{$_} ? $m{node}{$_} / $m{module}{$_} : 0 }
                qw(p50_ms p99_ms max_ms);
    }
}

# every bench request of every run, stored once (both stacks write the
# same table)
my $sent = 0;
for my $n (@clients) {
    $sent += $_->{sent} // 0 for map { @{ $res{$n}{$_} } } @stacks;
}
my $stored = 0;
ActivityTest::wait_for(sub {
    $stored = $t->row_count(q{endpoint LIKE '/api/bench/%'});
    $stored >= $sent;
}, 60, 0.5);
printf "\nstored in PostgreSQL: %d of %d bench requests\n", $stored, $sent;

for my $part (qw(server worker)) {
    $t->_stop("baseline:$part", 'TERM', 10)
        if $t->{procs}{"baseline:$part"};
}
$t->stop_all;
$t->{done} = 1;
PERL
