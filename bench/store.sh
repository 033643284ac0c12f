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
#     start until the queue and its processing list are empty (it removes
#     a batch only after the COMMIT), then the rows counted; then
#     TRUNCATE and the worker's Redis keys flushed;
#   - baseline (only with BASELINE set): the same with that binary, e.g.
#     the worker of another commit, for a before/after in one run.
# Prints each round, the medians in rows/s, worker/copy, and the CPU the
# worker, Redis and the worker's PostgreSQL backends spent a row (their
# utime + stime over the round; the box may be shared, and CPU a row
# varies less than rows/s).
#
# Environment: N (200000), ROUNDS (3), BASELINE (a worker binary).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ROOT

exec perl -I"$ROOT/t/lib" - "$@" <<'PERL'
use strict;
use warnings;

use ActivityTest qw(wait_for);
use POSIX qw(strftime);
use Time::HiRes qw(time);

my $ticks = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

my $n = $ENV{N} || 200_000;
my $rounds = $ENV{ROUNDS} || 3;
my $baseline = $ENV{BASELINE};

die "BASELINE=$baseline is no executable\n"
    if defined $baseline && !-x $baseline;

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);
$t->redis_start;
$t->pg_start;
$t->worker_migrate;

# the daily partitions a worker makes at start, made once here: every
# round of every mode writes into today's partition
$t->dbh->do('SELECT activity_ensure_partitions(7)');

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

# utime + stime of a process (all its threads), in seconds
sub cpu_of {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my @f = split ' ', (split /\)/, scalar <$fh>)[-1];
    return ($f[11] + $f[12]) / $ticks;
}

# the worker's PostgreSQL sessions (store, maintenance)
sub backends {
    return map { $_->[0] } @{ $t->dbh->selectall_arrayref(q{SELECT pid
        FROM pg_stat_activity WHERE backend_type = 'client backend'
        AND pid <> pg_backend_pid()}) };
}

# $bin: the worker binary (undef: this tree's); rows/s, CPU us a row
sub worker_round {
    my ($bin) = @_;
    local $t->{bin}{worker} = $bin // $t->{bin}{worker};
    $t->push_events(@json);
    my $redis0 = cpu_of($t->redis_pid);
    my $start = time;
    $t->worker_start;
    # done once the queue and the processing list are empty: the worker
    # removes a batch only after its COMMIT (counting the rows instead
    # would cost PostgreSQL a scan of the table 20 times a second)
    my $r = $t->redis;
    wait_for(sub { !$r->exists($t->{queue}, 'activity:processing:w1') },
        600, 0.05) or die "the worker stored only " . $t->row_count
        . " of $n\n";
    my $took = time - $start;
    my $cpu = cpu_of($t->{procs}{'worker:w1'})
        + cpu_of($t->redis_pid) - $redis0;
    $cpu += cpu_of($_) for backends();
    $t->worker_stop;
    my $rows = $t->row_count;
    die "the worker stored $rows rows, not $n\n" unless $rows == $n;
    return ($n / $took, $cpu * 1e6 / $n);
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return @s % 2 ? $s[$#s / 2] : ($s[@s / 2 - 1] + $s[@s / 2]) / 2;
}

my @modes = ('copy', 'worker', defined $baseline ? 'baseline' : ());
printf "%d events, %d rounds, worker with default settings%s\n", $n,
    $rounds, defined $baseline ? ", baseline $baseline" : '';
my (%rate, %cpu);
for my $round (1 .. $rounds) {
    my %r;
    # alternate the order: no mode always runs first
    my @order = @modes;
    push @order, shift @order for 1 .. ($round - 1) % @modes;
    for my $mode (@order) {
        reset_table();
        if ($mode eq 'copy') {
            $r{$mode} = copy_round();
        } else {
            ($r{$mode}, my $cpu) = worker_round($mode eq 'baseline'
                ? $baseline : undef);
            push @{ $cpu{$mode} }, $cpu;
        }
        push @{ $rate{$mode} }, $r{$mode};
    }
    printf "round %d: %s\n", $round, join '   ', map {
        sprintf '%s %8.0f rows/s', $_ eq 'copy' ? 'raw COPY' : $_, $r{$_}
    } @modes;
}
my %m = map { $_ => median(@{ $rate{$_} }) } @modes;
printf "\nmedian:  %s\n", join '   ', map {
    sprintf '%s %8.0f rows/s', $_ eq 'copy' ? 'raw COPY' : $_, $m{$_}
} @modes;
printf "ratio worker/copy: %.2f\n", $m{worker} / $m{copy};
printf "ratio baseline/copy: %.2f\n", $m{baseline} / $m{copy}
    if defined $baseline;
printf "CPU a row (worker + Redis + its PostgreSQL sessions), median: %s\n",
    join '   ', map { sprintf '%s %.1f us', $_, median(@{ $cpu{$_} }) }
    grep { $_ ne 'copy' } @modes;

$t->stop_all;
$t->{done} = 1;
PERL
