#!/usr/bin/env bash
#
# bench/soak.sh: the whole stack at a steady rate for minutes, under the
# conditions production brings (make bench-soak).
#
# Starts Redis (holding OTHER_KEYS unrelated keys, as a shared Redis
# does), PostgreSQL, the worker with its default settings and nginx (two
# worker processes, a tracked location and a plain websocket dashboard
# endpoint) through the test harness. bench/soak.js then sends tracked
# requests at RATE/s and keeps DASHBOARDS dashboards connected, one of
# which reconnects every RECONNECT_EVERY seconds. Meanwhile a long reader
# holds a transaction open on activity_logs for READER_SECONDS every
# READER_EVERY seconds (a report, a pg_dump), and Redis is restarted once,
# half way (SHUTDOWN SAVE, then started again on the same data).
#
# Each minute it prints stored rows/s, the queue length, Redis memory,
# nginx and worker RSS and the dashboards' delivery p50/p99; at the end,
# whether every answered request is stored exactly once and how much
# each process's memory grew after the first minute.
#
# Environment: MINUTES (10), RATE (200), DASHBOARDS (20),
# RECONNECT_EVERY (60), OTHER_KEYS (2000000), READER_EVERY (180),
# READER_SECONDS (60).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

[ -d "$ROOT/t/js/node_modules/ws" ] || npm ci --prefix "$ROOT/t/js" >/dev/null

exec perl -I"$ROOT/t/lib" - "$@" <<'PERL'
use strict;
use warnings;

use ActivityTest;
use POSIX ();
use Time::HiRes qw(sleep time);

$| = 1;

my $minutes = $ENV{MINUTES} || 10;
my $rate = $ENV{RATE} || 200;
my $dashboards = $ENV{DASHBOARDS} || 20;
my $reconnect = $ENV{RECONNECT_EVERY} || 60;
my $other_keys = $ENV{OTHER_KEYS} // 2_000_000;
my $reader_every = $ENV{READER_EVERY} || 180;
my $reader_seconds = $ENV{READER_SECONDS} || 60;
my $seconds = $minutes * 60;

my $t = ActivityTest->new(needs => [qw(module redis pg worker node)]);
my $secret = 'soak-secret';

$t->write_conf(<<"EOF");
load_module %%MODULE%%;
pid %%TESTDIR%%/nginx.pid;
error_log %%TESTDIR%%/error.log warn;
daemon off;
worker_processes 2;
events { worker_connections 4096; }
http {
    %%GLOBALS_HTTP%%
    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret $secret;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /api/ { activity_track on; return 200; }
        location /ws { activity_dashboard websocket; }
    }
}
EOF

$t->redis_start;

# a Redis shared with other applications: unrelated keys, written in
# chunks so that no single script blocks Redis for long
my $r = $t->redis;
for (my $done = 0; $done < $other_keys; $done += 100_000) {
    my $n = $other_keys - $done < 100_000 ? $other_keys - $done : 100_000;
    $r->eval("for i = ARGV[1], ARGV[2] do "
        . "redis.call('SET', 'other:' .. i, 'value-' .. i) end", 0,
        $done + 1, $done + $n);
}

$t->pg_start;
$t->worker_migrate;
$t->worker_start;          # the defaults, as make run and the unit start it
$t->nginx_start;

my $token = ActivityTest::jwt_hs256($secret,
    { sub => 'soak', role => 'admin', exp => time + $seconds + 3600 });
(my $ws = $t->base_url) =~ s/^http/ws/;

sub rss_mib {
    my $kib = 0;
    for my $pid (@_) {
        open my $fh, '<', "/proc/$pid/status" or next;
        while (<$fh>) { $kib += $1 if /^VmRSS:\s+(\d+)/ }
    }
    return $kib / 1024;
}

sub nginx_workers {
    my $master = $t->{procs}{nginx};
    return grep { /\d/ } split /\s+/, `ps -o pid= --ppid $master`;
}

sub redis_mib {
    my $info = eval { $t->redis->info('memory') } or return -1;
    return ($info->{used_memory} // 0) / 1048576;
}

sub stored { $t->row_count("endpoint LIKE '/api/soak/%'") }

# a long reader: a report or pg_dump holding ACCESS SHARE for a while
sub long_reader {
    my $pid = fork // die "fork: $!";
    return $pid if $pid;
    my $dbh = $t->dbh;
    $dbh->{AutoCommit} = 0;
    $dbh->selectall_arrayref('SELECT count(*) FROM activity_logs');
    sleep $reader_seconds;
    $dbh->rollback;
    POSIX::_exit(0);
}

printf "soak: %d min at %d req/s, %d dashboards (one reconnects every "
    . "%d s), %d other Redis keys,\n      a %d s reader every %d s, "
    . "one Redis restart at minute %d; worker defaults\n",
    $minutes, $rate, $dashboards, $reconnect, $other_keys,
    $reader_seconds, $reader_every, int($minutes / 2);
printf "%6s %9s %7s %9s %10s %10s %8s %8s %7s\n", 'minute', 'rows/s',
    'queue', 'redis MiB', 'nginx MiB', 'worker MiB', 'p50 ms', 'p99 ms',
    'failed';

my $load_pid = open(my $load, '-|', "NODE_PATH=$ENV{ROOT}/t/js/node_modules "
    . "exec node $ENV{ROOT}/bench/soak.js --http " . $t->base_url
    . " --ws '$ws/ws?token=$token' --rate $rate --seconds $seconds"
    . " --dashboards $dashboards --reconnect-every $reconnect")
    or die "node: $!";

my $started = time;
my $next_reader = $started + $reader_every / 2;
my $restart_at = $started + int($minutes / 2) * 60 + 20;
my ($restarted, @readers, %first, %last, $final) = (0);
my $rows_before = 0;
my $minute_start = time;

# soak.js prints a line a minute; between lines, run the faults
my $sel = '';
vec($sel, fileno($load), 1) = 1;
my $buf = '';
LOOP: while (1) {
    my $rin = $sel;
    if (select($rin, undef, undef, 1) > 0) {
        my $n = sysread $load, $buf, 65536, length $buf;
        last LOOP unless $n;
        while ($buf =~ s/^(.*)\n//) {
            my $m = eval { ActivityTest::from_json($1) } or next;
            if ($m->{done}) { $final = $m; next }
            my $rows = stored();
            my $dt = time - $minute_start;
            $minute_start = time;
            my %rss = (nginx => rss_mib(nginx_workers()),
                worker => rss_mib($t->{procs}{'worker:w1'} // ()));
            %first = %rss if $m->{minute} == 1;
            %last = %rss;
            printf "%6d %9.0f %7s %9.1f %10.1f %10.1f %8s %8s %7d\n",
                $m->{minute}, ($rows - $rows_before) / $dt,
                eval { $t->redis->llen($t->queue) } // '-', redis_mib(),
                $rss{nginx}, $rss{worker},
                map({ defined $_ ? sprintf('%.1f', $_) : '-' }
                    $m->{p50_ms}, $m->{p99_ms}), $m->{failed};
            $rows_before = $rows;
        }
    }
    my $now = time;
    if ($now >= $next_reader && $now < $started + $seconds) {
        push @readers, long_reader();
        print "       (a long reader opens a transaction for "
            . "${reader_seconds}s)\n";
        $next_reader += $reader_every;
    }
    if (!$restarted && $now >= $restart_at) {
        $restarted = 1;
        print "       (Redis: SHUTDOWN SAVE, then started again)\n";
        system('redis-cli', '-p', $t->redis_port, 'shutdown', 'save');
        ActivityTest::wait_for { !$t->redis_running } 30;
        $t->redis_start;
        printf "       (Redis back with %d keys)\n", $t->redis->dbsize;
    }
}
close $load;
waitpid $_, 0 for @readers;

die "soak.js ended without its final report\n" unless $final;

# every answered request is stored exactly once
ActivityTest::wait_for {
    ($t->redis->llen($t->queue) // 1) == 0 && stored() >= $final->{ok}
} 180;
sleep 2;
my ($rows, $distinct) = @{ $t->dbh->selectrow_arrayref(
    "SELECT count(*), count(DISTINCT endpoint) FROM activity_logs "
    . "WHERE endpoint LIKE '/api/soak/%'") };

printf "\nrequests: %d sent, %d answered 200, %d failed%s\n",
    $final->{sent}, $final->{ok}, $final->{failed},
    %{ $final->{errors} } ? ' (' . join(', ', map { "$_: $final->{errors}{$_}" }
        sort keys %{ $final->{errors} }) . ')' : '';
printf "stored:   %d rows, %d distinct requests, %d duplicates, %d missing\n",
    $rows, $distinct, $rows - $distinct,
    $final->{ok} > $distinct ? $final->{ok} - $distinct : 0;
printf "memory:   nginx workers %.1f -> %.1f MiB, worker %.1f -> %.1f MiB "
    . "(minute 1 -> last)\n", $first{nginx} // 0, $last{nginx} // 0,
    $first{worker} // 0, $last{worker} // 0;
my $verdict = $rows == $distinct && $distinct == $final->{ok}
    ? 'every answered request stored exactly once'
    : 'NOT every answered request stored exactly once';
print "result:   $verdict\n";

$t->stop_all;
$t->{done} = 1;
exit($rows == $distinct && $distinct == $final->{ok} ? 0 : 1);
PERL
