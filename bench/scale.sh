#!/usr/bin/env bash
#
# bench/scale.sh: what each shared part costs per event, for
# docs/scale-out.md (make bench-scale).
#
# Starts everything through the test harness (free loopback ports, a
# temporary directory) and measures CPU time per operation: utime + stime
# from /proc/PID/stat before and after a round, divided by what the round
# did. Rounds alternate with their baseline; medians are printed. Three
# parts (PARTS, default "lpush fanout store"):
#
#   lpush   One nginx (one worker process) tracking every request of a
#           `return 200` location, Redis, no activity-worker. wrk loads
#           it for DURATION s; the round counts the events that reached
#           the queue (LLEN) and the LPUSH commands Redis ran
#           (INFO commandstats), so events per LPUSH is the batch the
#           module's pipelining reached, and Redis's CPU per event is
#           what the queue costs Redis. Baseline, same run:
#           redis-benchmark sending the same event text with one LPUSH
#           per event (-P 1, 50 clients).
#   fanout  Redis and I nginx instances of W worker processes each, each
#           with a dashboard location (so each worker process holds one
#           subscriber) and no dashboard connected. redis-benchmark
#           PUBLISHes MSGS messages (a JSON array of one event, as the
#           worker publishes them at low rates) on dashboard:events,
#           unpipelined (-P 1: every message its own wakeup, the worst
#           case) and pipelined (-P 16: messages arrive in bursts, as
#           from a busy worker); the round measures Redis's CPU per
#           PUBLISH and the nginx worker processes' CPU per message
#           each. Layouts in LAYOUTS ("0x0 1x1 1x2 2x2 4x2", instances x
#           workers; 0x0: nobody subscribed, the baseline). The pub/sub
#           output buffer limit is lifted for this part, so that a burst
#           cannot get a subscriber disconnected. BATCH (1) events a
#           message: a busy worker publishes many events in one array.
#           PERF=1: `perf record -e cpu-clock -g` of one nginx worker
#           process during the first round with subscribers, printed
#           by library and by function (that round's CPU figures then
#           include perf's own overhead).
#   store   N events (100,000) queued, then 1 or 2 activity-workers
#           (default settings) started on the same queue, timed until
#           every row is in activity_logs; CPU per stored row of the
#           workers, of every PostgreSQL backend of the harness's server
#           and of Redis. ROUNDS rounds, 1 and 2 workers alternating.
#
# Environment: PARTS, ROUNDS (3), DURATION (5), CONNECTIONS (50), MSGS
# (50000), LAYOUTS, PIPELINES ("1 16"), N (100000).
#
# The box is small (2 cores) and may be shared: absolute figures are
# noisy; compare the rows of one run, and the CPU figures over the rates.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

command -v wrk >/dev/null || { echo "scale.sh: wrk is missing" >&2; exit 1; }
command -v redis-benchmark >/dev/null \
    || { echo "scale.sh: redis-benchmark is missing" >&2; exit 1; }

exec perl -I"$ROOT/t/lib" - "$@" <<'PERL'
use strict;
use warnings;

use ActivityTest qw(wait_for);
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);

my %part = map { $_ => 1 } split ' ', ($ENV{PARTS} || 'lpush fanout store');
my $rounds = $ENV{ROUNDS} || 3;
my $duration = $ENV{DURATION} || 5;
my $conns = $ENV{CONNECTIONS} || 50;
my $msgs = $ENV{MSGS} || 50_000;
my @pipelines = split ' ', ($ENV{PIPELINES} || '1 16');
my $batch = $ENV{BATCH} || 1;
my @layouts = split ' ', ($ENV{LAYOUTS} || '0x0 1x1 1x2 2x2 4x2');
my $n = $ENV{N} || 100_000;

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);
$t->redis_start;

sub cpu { ActivityTest::cpu_seconds($_[0]) // 0 }

sub cpu_sum {
    my $s = 0;
    $s += cpu($_) for @_;
    return $s;
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2;
}

sub commandstat {
    my ($cmd) = @_;
    my $info = $t->redis->info('commandstats');
    my $v = $info->{"cmdstat_$cmd"} // '';
    return $v =~ /calls=(\d+)/ ? $1 : 0;
}

my $event = ActivityTest::to_json(ActivityTest::make_event(
    endpoint => '/api/products/12345', user => 'user-42',
    agent => 'Mozilla/5.0 (X11; Linux x86_64) bench-scale/1.0'));

printf "%s, %d rounds; the box may be shared: compare within this run\n",
    strftime('%Y-%m-%d %H:%M UTC', gmtime), $rounds;

# --- lpush ------------------------------------------------------------------

if ($part{lpush}) {
    $t->write_conf(<<'EOF');
%%GLOBALS%%
worker_processes 1;
http {
    %%GLOBALS_HTTP%%
    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /on { activity_track on; return 200 "ok\n"; }
    }
}
EOF
    $t->nginx_start;
    my ($nginx) = $t->nginx_worker_pids;
    my $redis = $t->redis_pid;
    my $url = $t->base_url . '/on';
    my (@per_lpush, @redis_us, @nginx_us, @rate, @bench_us);

    print "\n== lpush: the module's pipelined LPUSH, one nginx worker,"
        . " wrk -c$conns ${duration}s\n";
    for my $round (1 .. $rounds) {
        for my $mode ($round % 2 ? qw(module bench) : qw(bench module)) {
            $t->redis->flushall;
            $t->redis->config_resetstat;
            my ($r0, $n0, $t0) = (cpu($redis), cpu($nginx), time);
            if ($mode eq 'module') {
                my ($rc, $out) = $t->run_cmd('wrk', '-t1', "-c$conns",
                    "-d${duration}s", $url);
                die "wrk failed:\n$out" if $rc;
                # the last replies: every answered request queued
                my ($req) = $out =~ /(\d+) requests in/;
                wait_for(sub { $t->redis->llen($t->queue) >= $req }, 30);
                my $events = $t->redis->llen($t->queue);
                my $lpush = commandstat('lpush') || 1;
                my ($r1, $n1, $t1) = (cpu($redis), cpu($nginx), time);
                push @per_lpush, $events / $lpush;
                push @redis_us, ($r1 - $r0) / $events * 1e6;
                push @nginx_us, ($n1 - $n0) / $events * 1e6;
                push @rate, $req / $duration;
                printf "round %d module: %7.0f req/s, %6.1f events"
                    . " per LPUSH, Redis %.2f us/event, nginx %.2f"
                    . " us/event\n", $round, $rate[-1], $per_lpush[-1],
                    $redis_us[-1], $nginx_us[-1];
            } else {
                my $count = 200_000;
                my ($rc, $out) = $t->run_cmd('redis-benchmark', '-p',
                    $t->redis_port, '-c', $conns, '-n', $count, '-P', 1,
                    '-q', 'LPUSH', $t->queue, $event);
                die "redis-benchmark failed:\n$out" if $rc;
                my $events = $t->redis->llen($t->queue);
                my $r1 = cpu($redis);
                push @bench_us, ($r1 - $r0) / $events * 1e6;
                printf "round %d one LPUSH per event (redis-benchmark -P 1"
                    . " -c $conns): Redis %.2f us/event\n", $round,
                    $bench_us[-1];
            }
        }
    }
    printf "median: %.0f req/s tracked; %.1f events per LPUSH; Redis"
        . " %.2f us/event (%.2f us with one LPUSH per event, ratio %.2f);"
        . " nginx %.2f us/event all told\n", median(@rate),
        median(@per_lpush), median(@redis_us), median(@bench_us),
        median(@redis_us) / median(@bench_us), median(@nginx_us);
    printf "=> one Redis core takes about %.0f k events/s from the module"
        . " at this batching\n", 1e3 / median(@redis_us);
    $t->nginx_stop;
    $t->redis->flushall;
}

# --- fanout -----------------------------------------------------------------

if ($part{fanout}) {
    my $payload = '[' . join(',', ($event) x $batch) . ']';
    my $redis = $t->redis_pid;
    $t->redis->config('set', 'client-output-buffer-limit', 'pubsub 0 0 0');
    printf "\n== fanout: PUBLISH of %d messages (%d bytes: %d event%s),"
        . " redis-benchmark -c 1, no dashboard connected\n", $msgs,
        length $payload, $batch, $batch > 1 ? 's' : '';

    my (%res, $perfed);
    for my $round (1 .. $rounds) {
        my @order = $round % 2 ? @layouts : reverse @layouts;
        for my $layout (@order) {
            my ($ni, $nw) = split /x/, $layout;
            my @names = map { "fan$_" } 1 .. $ni;
            for my $name (@names) {
                $t->write_conf(<<"EOF", undef, $name);
%%GLOBALS%%
worker_processes $nw;
http {
    %%GLOBALS_HTTP%%
    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret bench-scale-secret;
    server {
        listen 127.0.0.1:%%PORT_$name%%;
        location /dashboard { activity_dashboard websocket; }
    }
}
EOF
                $t->nginx_start(name => $name);
            }
            my $subs = $ni * $nw;
            wait_for(sub {
                my %h = $t->redis->pubsub_numsub('dashboard:events');
                ($h{'dashboard:events'} // 0) == $subs }, 30)
                or die "$subs subscribers expected\n";
            my @pids = map { $t->nginx_worker_pids($t->nginx_master_pid($_)) }
                @names;
            sleep 0.5;
            for my $p (@pipelines) {
                my $perf;
                if ($ENV{PERF} && @pids && !$perfed++) {
                    $perf = fork // die "fork: $!";
                    if ($perf == 0) {
                        exec 'perf', 'record', '-q', '-e', 'cpu-clock',
                            '-g', '-o', $t->dir . '/perf.data', '-p',
                            $pids[0];
                        die "perf: $!";
                    }
                    sleep 1;
                }
                my ($r0, $n0) = (cpu($redis), cpu_sum(@pids));
                my ($rc, $out) = $t->run_cmd('redis-benchmark', '-p',
                    $t->redis_port, '-c', 1, '-n', $msgs, '-P', $p, '-q',
                    'PUBLISH', 'dashboard:events', $payload);
                die "redis-benchmark failed:\n$out" if $rc;
                # the subscribers may still be reading what Redis wrote
                my $last = -1;
                wait_for(sub { my $c = cpu_sum(@pids); my $same = $c == $last;
                    $last = $c; $same }, 30, 0.3);
                my ($r1, $n1) = (cpu($redis), cpu_sum(@pids));
                if ($perf) {
                    kill 'INT', $perf;
                    waitpid $perf, 0;
                    print "perf, one nginx worker process"
                        . " ($layout -P $p):\n";
                    for my $sort (qw(dso sym)) {
                        system('perf report -i ' . $t->dir . '/perf.data'
                            . " --no-children --stdio --sort $sort -g none"
                            . " 2>/dev/null | grep -v '^#' | grep . 2>/dev/null"
                            . ' | head -' . ($sort eq 'dso' ? 10 : 25));
                    }
                }
                my %h = $t->redis->pubsub_numsub('dashboard:events');
                die "a subscriber was dropped during the round ($layout)\n"
                    unless ($h{'dashboard:events'} // 0) == $subs;
                my $r = { redis => ($r1 - $r0) / $msgs * 1e6,
                    nginx => $subs ? ($n1 - $n0) / $msgs / $subs * 1e6 : 0 };
                push @{ $res{$p}{$layout}{redis} }, $r->{redis};
                push @{ $res{$p}{$layout}{nginx} }, $r->{nginx};
                printf "round %d -P %-2d %-4s (%d subscribers): Redis %.2f"
                    . " us/PUBLISH, nginx %.2f us/message per worker"
                    . " process\n", $round, $p, $layout, $subs, $r->{redis},
                    $r->{nginx};
            }
            $t->nginx_stop('QUIT', $_) for @names;
        }
    }
    print "median:\n";
    for my $p (@pipelines) {
        my $base = median(@{ $res{$p}{$layouts[0]}{redis} });
        for my $layout (@layouts) {
            my ($ni, $nw) = split /x/, $layout;
            my $subs = $ni * $nw;
            my $r = median(@{ $res{$p}{$layout}{redis} });
            printf "  -P %-2d %-4s %2d subscribers: Redis %.2f us/PUBLISH"
                . " (%s), nginx %.2f us/message per worker process\n", $p,
                $layout, $subs, $r, $subs ? sprintf('%+.2f us per'
                . ' subscriber over %s', ($r - $base) / $subs, $layouts[0])
                : 'baseline', median(@{ $res{$p}{$layout}{nginx} });
        }
    }
    $t->redis->config('set', 'client-output-buffer-limit',
        'pubsub 33554432 8388608 60');
}

# --- store ------------------------------------------------------------------

if ($part{store}) {
    $t->pg_start;
    $t->worker_migrate;

    my $day = strftime('%Y-%m-%d', gmtime);
    my $secs = time % 86400;
    my @json;
    for my $i (1 .. $n) {
        my $s = int($secs * $i / ($n + 1));
        my $ts = sprintf '%sT%02d:%02d:%02d.%03dZ', $day, $s / 3600,
            $s / 60 % 60, $s % 60, $i % 1000;
        push @json, ActivityTest::to_json({ id => ActivityTest::uuid(),
            eventType => 'API_CALL', userId => 'user-' . ($i % 500),
            timestamp => $ts,
            metadata => { ipAddress => '203.0.113.7',
                userAgent => 'bench-scale/1.0',
                endpoint => "/api/products/$i", method => 'GET',
                status => 200, durationMs => 1.5, details => {} } });
    }

    # every backend of the harness's server: the postmaster's children
    my $pm = do {
        open my $fh, '<', $t->dir . '/pg/data/postmaster.pid' or die $!;
        my $l = <$fh>; chomp $l; $l };
    my $pg_pids = sub { ($pm, grep { /^\d+$/ } map { s/\s+//gr }
        `ps --ppid $pm -o pid=`) };
    my $redis = $t->redis_pid;

    printf "\n== store: %d events, 1 and 2 workers (default settings) on"
        . " one queue\n", $n;
    my %res;
    for my $round (1 .. $rounds) {
        for my $k ($round % 2 ? (1, 2) : (2, 1)) {
            $t->dbh->do('TRUNCATE activity_logs, activity_event_ids');
            $t->redis->flushall;
            $t->push_events(@json);
            $t->redis->config_resetstat;
            # backends that outlive a round are counted from here
            my @pg = $pg_pids->();
            my %pg0 = map { $_ => cpu($_) } @pg;
            my $r0 = cpu($redis);
            my $t0 = time;
            $t->worker_start(id => "s$_") for 1 .. $k;
            wait_for(sub { $t->row_count >= $n }, 600, 0.05)
                or die "stored only " . $t->row_count . " of $n\n";
            my $took = time - $t0;
            my @w = map { $t->worker_pid(id => "s$_") } 1 .. $k;
            my $wcpu = cpu_sum(@w);
            my $pgcpu = 0;
            $pgcpu += cpu($_) - ($pg0{$_} // 0) for $pg_pids->();
            my $rcpu = cpu($redis) - $r0;
            $t->worker_stop(id => "s$_") for 1 .. $k;
            # time inside each command (INFO commandstats), per row
            my $info = $t->redis->info('commandstats');
            for my $c (keys %$info) {
                my ($usec) = $info->{$c} =~ /usec=(\d+)/ or next;
                (my $name = $c) =~ s/^cmdstat_//;
                push @{ $res{$k}{cmd}{$name} }, $usec / $n;
            }
            my $rows = $t->row_count;
            die "stored $rows rows, not $n\n" unless $rows == $n;
            my $r = { rate => $n / $took, worker => $wcpu / $n * 1e6,
                pg => $pgcpu / $n * 1e6, redis => $rcpu / $n * 1e6 };
            push @{ $res{$k}{$_} }, $r->{$_} for keys %$r;
            $res{$k}{rounds}++;
            printf "round %d, %d worker%s: %7.0f rows/s; CPU per row:"
                . " workers %.1f us, PostgreSQL %.1f us, Redis %.1f us\n",
                $round, $k, $k > 1 ? 's' : ' ', $r->{rate}, $r->{worker},
                $r->{pg}, $r->{redis};
        }
    }
    print "median:\n";
    for my $k (1, 2) {
        my %m = map { $_ => median(@{ $res{$k}{$_} }) }
            qw(rate worker pg redis);
        my $all = $m{worker} + $m{pg} + $m{redis};
        printf "  %d worker%s: %7.0f rows/s; CPU per row: workers %.1f us,"
            . " PostgreSQL %.1f us (%.0f %%), Redis %.1f us\n", $k,
            $k > 1 ? 's' : ' ', $m{rate}, $m{worker}, $m{pg},
            100 * $m{pg} / $all, $m{redis};
        my $cmd = $res{$k}{cmd};
        printf "    Redis time inside commands, per row: %s\n", join ', ',
            map { sprintf '%s %.2f us', $_, median(@{ $cmd->{$_} }) }
            grep { median(@{ $cmd->{$_} }) >= 0.05 }
            sort { median(@{ $cmd->{$b} }) <=> median(@{ $cmd->{$a} }) }
            keys %$cmd;
    }
    printf "ratio 2 workers / 1 worker (rows/s): %.2f\n",
        median(@{ $res{2}{rate} }) / median(@{ $res{1}{rate} });
}

$t->stop_all;
$t->{done} = 1;
$t->_cleanup;
PERL
