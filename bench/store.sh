#!/usr/bin/env bash
#
# bench/store.sh: how fast the worker stores, next to a raw COPY of the
# same rows into the same table (make bench-store).
#
# Starts Redis, PostgreSQL and the worker's migrations through the test
# harness (free loopback ports, a temporary directory). Makes N events of
# today, then, ROUNDS times, alternately:
#   - copy: `psql \copy` of those N rows (text format, the columns the
#     worker writes) into activity_logs, timed; then TRUNCATE;
#   - worker: the same N events LPUSHed into the queue first, then an
#     activity-worker with its default settings started and timed from
#     start until all N rows are in activity_logs; then TRUNCATE and the
#     worker's Redis keys flushed.
# Prints each round, both medians in rows/s, and worker/copy.
#
# Environment: N (200000), ROUNDS (3).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

exec perl -I"$ROOT/t/lib" - "$@" <<'PERL'
use strict;
use warnings;

use ActivityTest qw(wait_for);
use POSIX qw(strftime);
use Time::HiRes qw(time);

my $n = $ENV{N} || 200_000;
my $rounds = $ENV{ROUNDS} || 3;

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);
$t->redis_start;
$t->pg_start;
$t->worker_migrate;

# N events spread over today so far (UTC), as the module makes them
my $day = strftime('%Y-%m-%d', gmtime);
my $secs = time % 86400;
my (@json, @rows);
for my $i (1 .. $n) {
    my $s = int($secs * $i / ($n + 1));
    my $ts = sprintf '%sT%02d:%02d:%02d.%03dZ', $day, $s / 3600,
        $s / 60 % 60, $s % 60, $i % 1000;
    my $id = ActivityTest::uuid();
    my $user = 'user-' . ($i % 500);
    my $path = "/api/products/$i";
    push @json, ActivityTest::to_json({ id => $id, eventType => 'API_CALL',
        userId => $user, timestamp => $ts,
        metadata => { ipAddress => '203.0.113.7',
            userAgent => 'bench-store/1.0', endpoint => $path,
            method => 'GET', status => 200, durationMs => 1.5,
            details => {} } });
    push @rows, join("\t", $id, 'API_CALL', $user, $ts, '203.0.113.7',
        'bench-store/1.0', $path, 'GET', 200, 1.5, '{}') . "\n";
}
my $file = $t->dir . '/rows.tsv';
open my $fh, '>', $file or die "$file: $!";
print $fh @rows;
close $fh;
chmod 0644, $file;

sub reset_table {
    # activity_event_ids: the same ids come again next round
    $t->dbh->do('TRUNCATE activity_logs, activity_event_ids');
    $t->redis->flushall;
}

sub copy_round {
    my $start = time;
    my ($rc, $out) = $t->run_cmd('psql', '-q', '-h', '127.0.0.1', '-p',
        $t->pg_port, '-U', 'postgres', '-d', 'activity', '-v',
        'ON_ERROR_STOP=1', '-c', "\\copy activity_logs (id, action, "
        . "user_id, created_at, ip_address, user_agent, endpoint, method, "
        . "status, duration_ms, details) FROM '$file'");
    my $took = time - $start;
    die "psql \\copy failed:\n$out" if $rc;
    my $rows = $t->row_count;
    die "copy stored $rows rows, not $n\n" unless $rows == $n;
    return $n / $took;
}

sub worker_round {
    $t->push_events(@json);
    my $start = time;
    $t->worker_start;
    wait_for(sub { $t->row_count >= $n }, 600, 0.05)
        or die "the worker stored only " . $t->row_count . " of $n\n";
    my $took = time - $start;
    $t->worker_stop;
    my $rows = $t->row_count;
    die "the worker stored $rows rows, not $n\n" unless $rows == $n;
    return $n / $took;
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2;
}

printf "%d events, %d rounds, worker with default settings\n", $n, $rounds;
my (@copy, @worker);
for my $round (1 .. $rounds) {
    my %r;
    for my $mode ($round % 2 ? qw(copy worker) : qw(worker copy)) {
        reset_table();
        $r{$mode} = $mode eq 'copy' ? copy_round() : worker_round();
    }
    push @copy, $r{copy};
    push @worker, $r{worker};
    printf "round %d: raw COPY %8.0f rows/s   worker %8.0f rows/s\n",
        $round, $r{copy}, $r{worker};
}
my ($c, $w) = (median(@copy), median(@worker));
printf "\nmedian:  raw COPY %8.0f rows/s   worker %8.0f rows/s\n", $c, $w;
printf "ratio worker/copy: %.2f\n", $w / $c;

$t->stop_all;
$t->{done} = 1;
PERL
