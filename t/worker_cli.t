#!/usr/bin/perl

# activity-worker's command line (README "activity-worker"):
# - --help prints the README's table: every flag with its environment
#   variable and default; exit 0; bad flags exit 2, and so do values
#   out of the README's ranges (--batch, --store-ahead, --recent-max,
#   --seen-ttl, --heartbeat-ttl, --retry-delays, --log-level);
# - the token subcommand: an HS256 JWT (sub, role, iat, exp) signed with
#   the secret from --secret or ACTIVITY_JWT_SECRET, --ttl in seconds or
#   45s, 30m, 8h, 7d (default 8h, at most 366d), exit 2 on bad usage;
# - dlq: exit 1 on a Redis error, 2 on bad usage, the worker's flags and
#   environment apply (--dead, ACTIVITY_DEAD_KEY);
# - without --migrate the worker refuses to start while migrations are
#   pending;
# - SIGTERM stores the batch in hand and exits 0; a second one exits at
#   once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(hmac_sha256);
use File::Copy qw(copy);
use File::Path qw(make_path);
use MIME::Base64 qw(decode_base64);
use POSIX qw(WIFEXITED WEXITSTATUS);
use Test::More;
use ActivityTest qw(wait_for make_event to_json from_json b64url);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);
my $bin = $t->{bin}{worker};
my $root = $t->root;

# Runs the worker binary with exactly %env added to a clean environment.
sub run {
    my ($env, @args) = @_;
    local %ENV = (ActivityTest::_clean_env(), %{ $env || {} });
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', $t->dir . '/stderr.txt';
        exec $bin, @args or POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    my $rc = $? >> 8;
    my $err = ActivityTest::_slurp($t->dir . '/stderr.txt');
    return ($rc, $out, $err);
}

# --- --help: the README's table --------------------------------------------

my ($rc, $out, $err) = run({}, '--help');
is($rc, 0, '--help exits 0');

my %help;
my $cur;
for (split /\n/, $out) {
    if (/^  --([a-z-]+)/) {
        $cur = $1;
        $help{$cur} = {};
    } elsif ($cur && /^\s+env (\S+)$/) {
        $help{$cur}{env} = $1;
    } elsif ($cur && /^\s+default (.+)$/) {
        $help{$cur}{default} = $1;
    }
}

my @rows = grep { /^\| `--[a-z-]+/ }
    split /\n/, ActivityTest::_slurp("$root/README.md");
cmp_ok(scalar @rows, '>=', 25, 'the README table has its rows');
for my $row (@rows) {
    my ($flag, $env, $def) = $row =~
        /^\| `--([a-z-]+)[^`]*` \| `(ACTIVITY_\w+)` \| ([^|]*?) \|/ or next;
    ok($help{$flag}, "--help lists --$flag") or next;
    is($help{$flag}{env}, $env, "--$flag: env $env");
    if ($def =~ /^`([^`]+)`$/ && defined $help{$flag}{default}
        && $help{$flag}{default} ne '(see above)')
    {
        is($help{$flag}{default}, $1, "--$flag: default $1");
    }
}

($rc, undef, $err) = run({}, '--bogus');
is($rc, 2, 'an unknown flag exits 2');
like($err, qr/unknown option "--bogus"/, 'and says so');
($rc, undef, $err) = run({}, '--batch', 'many');
is($rc, 2, 'a bad value exits 2');
like($err, qr/invalid value "many" for --batch/, 'naming the flag');
($rc, undef, $err) = run({ ACTIVITY_BATCH => 'lots' });
is($rc, 2, 'a bad environment value exits 2');
like($err, qr/invalid value "lots" for ACTIVITY_BATCH/,
    'naming the variable');
($rc) = run({ ACTIVITY_BATCH => 'lots' }, '--batch', 5, '--log-level',
    'loud');
is($rc, 2, 'a bad --log-level exits 2');

# the README's ranges: the bounds are taken, one beyond is refused (a
# flag is parsed before the --help that follows it)
for my $case ([ batch => 1, 10000 ], [ 'store-ahead' => 1, 64 ],
    [ 'recent-max' => 1, 10000 ], [ 'seen-ttl' => 600, 604800 ],
    [ 'heartbeat-ttl' => 2, 3600 ])
{
    my ($flag, $min, $max) = @$case;
    is((run({}, "--$flag", $min, '--help'))[0], 0, "--$flag $min accepted");
    is((run({}, "--$flag", $max, '--help'))[0], 0, "--$flag $max accepted");
    is((run({}, "--$flag", $min - 1, '--help'))[0], 2,
        "--$flag ${\ ($min - 1)} refused");
    is((run({}, "--$flag", $max + 1, '--help'))[0], 2,
        "--$flag ${\ ($max + 1)} refused");
}
# checked in order: --retry-delays, --log-level, then --redis; a bad
# --redis shows that what came before it passed
for my $level (qw(debug info warn error)) {
    ($rc, undef, $err) = run({}, '--log-level', $level, '--redis', 'nonsense');
    is($rc, 2, "--log-level $level: accepted (then the bad --redis)");
    like($err, qr/for --redis/, 'the complaint is about --redis');
}
($rc, undef, $err) = run({}, '--log-level', 'verbose', '--redis', 'nonsense');
like($err, qr/"verbose" for --log-level/, '--log-level verbose refused');
($rc, undef, $err) = run({}, '--retry-delays', join(',', (1) x 10),
    '--redis', 'nonsense');
like($err, qr/for --redis/, '--retry-delays with 10 entries accepted');
($rc, undef, $err) = run({}, '--retry-delays', join(',', (1) x 11),
    '--redis', 'nonsense');
is($rc, 2, '--retry-delays with 11 entries: exit 2');
like($err, qr/retry-delays/, 'naming --retry-delays');

# --- token ------------------------------------------------------------------

sub decode_jwt {
    my ($jwt, $secret) = @_;
    my ($h, $c, $s) = split /\./, $jwt // '';
    return undef unless defined $s;
    my $dec = sub { my $x = shift; $x =~ tr{-_}{+/};
        decode_base64($x . '=' x ((4 - length($x) % 4) % 4)) };
    return {
        header => from_json($dec->($h)),
        claims => from_json($dec->($c)),
        valid  => b64url(hmac_sha256("$h.$c", $secret)) eq $s,
    };
}

($rc, $out) = run({ ACTIVITY_JWT_SECRET => 'env-secret' }, 'token',
    '--sub', 'alice', '--role', 'admin', '--ttl', '8h');
is($rc, 0, 'token exits 0');
like($out, qr/^[\w-]+\.[\w-]+\.[\w-]+\n\z/, 'prints one JWT line');
my $j = decode_jwt($out =~ s/\n//r, 'env-secret');
ok($j && $j->{valid}, 'signed with ACTIVITY_JWT_SECRET (HS256)');
is($j && $j->{header}{alg}, 'HS256', 'header alg HS256');
is_deeply([ sort keys %{ $j->{claims} } ], [qw(exp iat role sub)],
    'claims sub, role, iat, exp');
is($j->{claims}{sub}, 'alice', 'sub');
is($j->{claims}{role}, 'admin', 'role');
is($j->{claims}{exp} - $j->{claims}{iat}, 8 * 3600, '--ttl 8h');
cmp_ok(abs($j->{claims}{iat} - time), '<=', 60, 'iat is now');

my %ttl = ('45s' => 45, '30m' => 1800, '8h' => 28800, '7d' => 604800,
    '3600' => 3600, '366d' => 366 * 86400);
for my $ttl (sort keys %ttl) {
    ($rc, $out) = run({ ACTIVITY_JWT_SECRET => 's' }, 'token', '--sub',
        'a', '--role', 'admin', '--ttl', $ttl);
    my $c = $rc == 0 ? decode_jwt($out =~ s/\n//r, 's') : undef;
    is($c && $c->{claims}{exp} - $c->{claims}{iat}, $ttl{$ttl},
        "--ttl $ttl: $ttl{$ttl} s");
}
($rc, $out) = run({ ACTIVITY_JWT_SECRET => 's' }, 'token', '--sub', 'a',
    '--role', 'admin');
$j = decode_jwt($out =~ s/\n//r, 's');
is($j && $j->{claims}{exp} - $j->{claims}{iat}, 8 * 3600,
    'default ttl 8h');

($rc, $out) = run({ ACTIVITY_JWT_SECRET => 'env-secret' }, 'token',
    '--sub', 'a', '--role', 'admin', '--secret', 'flag-secret');
$j = decode_jwt($out =~ s/\n//r, 'flag-secret');
ok($j && $j->{valid}, '--secret wins over ACTIVITY_JWT_SECRET');

for my $case (
    [ 'a ttl over 366d', { ACTIVITY_JWT_SECRET => 's' },
        qw(--sub a --role admin --ttl 367d) ],
    [ 'ttl 0', { ACTIVITY_JWT_SECRET => 's' },
        qw(--sub a --role admin --ttl 0) ],
    [ 'a negative ttl', { ACTIVITY_JWT_SECRET => 's' },
        qw(--sub a --role admin --ttl -5) ],
    [ 'ttl 5x', { ACTIVITY_JWT_SECRET => 's' },
        qw(--sub a --role admin --ttl 5x) ],
    [ 'ttl 5mm', { ACTIVITY_JWT_SECRET => 's' },
        qw(--sub a --role admin --ttl 5mm) ],
    [ 'no secret', {}, qw(--sub a --role admin) ],
    [ 'no --sub', { ACTIVITY_JWT_SECRET => 's' }, qw(--role admin) ],
    [ 'no --role', { ACTIVITY_JWT_SECRET => 's' }, qw(--sub a) ],
    [ 'an unknown option', { ACTIVITY_JWT_SECRET => 's' },
        qw(--sub a --role admin --color red) ],
    [ '--ttl without a value', { ACTIVITY_JWT_SECRET => 's' },
        qw(--sub a --role admin --ttl) ],
) {
    my ($name, $env, @args) = @$case;
    ($rc, $out) = run($env, 'token', @args);
    is($rc, 2, "token, $name: exit 2");
    is($out, '', "token, $name: no token printed");
}

# --- dlq exit codes ---------------------------------------------------------

$t->redis_start;
my $r = $t->redis;
my $redis = $t->redis_url;

for my $case ([ 'no action' ], [ 'an unknown action', 'frob' ],
    [ '--limit without a count', 'list', '--limit' ],
    [ '--limit x', 'list', '--limit', 'x' ],
    [ 'replay abc', 'replay', 'abc' ],
    [ 'an unknown flag', 'purge', '--bogus' ])
{
    my ($name, @args) = @$case;
    ($rc) = run({}, 'dlq', @args, '--redis', $redis);
    is($rc, 2, "dlq, $name: exit 2");
}

my $closed = $t->port('closed');
for my $action (qw(list replay purge)) {
    ($rc, undef, $err) = run({}, 'dlq', $action, '--redis',
        "redis://127.0.0.1:$closed");
    is($rc, 1, "dlq $action, Redis unreachable: exit 1");
    like($err, qr/redis/, 'and says why');
}

my $letter = to_json({ event => to_json(make_event()), error => 'e',
    attempts => 3, failedAt => '2026-11-27T12:00:00.000Z' });
$r->rpush('env:dead', $letter);
$r->rpush('flag:dead', $letter, $letter);
($rc, $out) = run({ ACTIVITY_DEAD_KEY => 'env:dead',
    ACTIVITY_REDIS_URL => $redis }, 'dlq', 'list');
is($rc, 0, 'dlq list: exit 0');
is(scalar(split /\n/, $out), 1, 'ACTIVITY_DEAD_KEY and ACTIVITY_REDIS_URL'
    . ' apply to dlq');
($rc, $out) = run({ ACTIVITY_DEAD_KEY => 'env:dead',
    ACTIVITY_REDIS_URL => $redis }, 'dlq', 'list', '--dead', 'flag:dead');
is(scalar(split /\n/, $out), 2, '--dead wins over ACTIVITY_DEAD_KEY');
($rc, $out) = run({}, 'dlq', 'purge', '--redis', $redis, '--dead',
    'flag:dead');
is($rc, 0, 'dlq purge: exit 0');
like($out, qr/\b2\b/, 'prints how many');
is($r->llen('flag:dead'), 0, 'purged');

# --- pending migrations ------------------------------------------------------

$t->pg_start;
my $sql = $t->dir . '/sql';
make_path($sql);
copy($_, $sql) or die "copy $_: $!" for glob "$root/sql/*.sql";

my @base = ('--redis', $redis, '--pg', $t->pg_url, '--id', 'm1',
    '--sql-dir', $sql);
($rc, undef, $err) = run({}, @base);
isnt($rc, 0, 'a fresh database: the worker refuses to start');
like($err, qr/migration\(s\) pending; run activity-worker --migrate first/,
    'and says to run --migrate');
like($err, qr/level=error msg="schema out of date, refusing to start"/,
    'logged at error');

($rc) = run({}, @base, '--migrate');
is($rc, 0, '--migrate exits 0');

open my $fh, '>', "$sql/999_extra.sql" or die $!;
print $fh "CREATE TABLE activity_test_extra (x int);\n";
close $fh;
($rc, undef, $err) = run({}, @base);
isnt($rc, 0, 'one new migration: refuses again');
like($err, qr/pending=1\b/, 'pending=1');
ok(!$t->table_exists('activity_test_extra'), 'nothing applied');
($rc) = run({ ACTIVITY_MIGRATE => 'true' }, @base);
is($rc, 0, 'ACTIVITY_MIGRATE=true applies it and exits 0');
ok($t->table_exists('activity_test_extra'), 'applied');

# --- SIGTERM, and a second one -----------------------------------------------

$t->worker_start(args => ['--flush-ms', 20, '--sql-dir', $sql]);
$t->push_events(make_event(endpoint => '/term/warm'));
ok(wait_for(sub { $t->row_count("endpoint = '/term/warm'") == 1 }, 30),
    'worker running and storing');
# partition maintenance at start locks partitions, then reads the
# parent: a LOCK TABLE taken meanwhile would deadlock with it
ok(wait_for(sub { $t->log_lines(qr/partitions maintained/,
    $t->worker_log) }, 30), 'partitions made');

# PostgreSQL held by a lock: the batch cannot be stored for now
my $dbh = $t->dbh;
sub locked_waiters {
    return $t->sql_value('SELECT count(*) FROM pg_locks WHERE NOT granted');
}

$dbh->begin_work;
$dbh->do('LOCK TABLE activity_logs IN ACCESS EXCLUSIVE MODE');
$t->push_events(map { make_event(endpoint => "/term/a/$_") } 1 .. 5);
ok(wait_for(sub { locked_waiters() > 0 }, 30),
    'the store waits for the lock');
kill 'TERM', $t->{procs}{'worker:w1'};
$dbh->commit;
# signal 0: only wait for the exit
my $status = $t->worker_stop(signal => 0, timeout => 30);
ok(WIFEXITED($status) && WEXITSTATUS($status) == 0,
    'SIGTERM: the worker exits 0 once the batch in hand is stored');
is($t->row_count("endpoint LIKE '/term/a/%'"), 5, 'all five stored');
is($r->llen('activity:processing:w1'), 0, 'the processing list is empty');

$t->worker_start(args => ['--flush-ms', 20, '--sql-dir', $sql]);
$t->push_events(make_event(endpoint => '/term/warm2'));
ok(wait_for(sub { $t->row_count("endpoint = '/term/warm2'") == 1 }, 30),
    'restarted');

$dbh->begin_work;
$dbh->do('LOCK TABLE activity_logs IN ACCESS EXCLUSIVE MODE');
$t->push_events(map { make_event(endpoint => "/term/b/$_") } 1 .. 5);
ok(wait_for(sub { locked_waiters() > 0 }, 30),
    'the store waits for the lock again');
my $pid = $t->{procs}{'worker:w1'};

# whether a SIGTERM waits for delivery to the process (any thread)
sub term_pending {
    my ($pid) = @_;
    my $pending = 0;
    for my $f (glob "/proc/$pid/task/*/status") {
        for (split /\n/, ActivityTest::_slurp($f)) {
            $pending |= hex($1) if /^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)/;
        }
    }
    return $pending & (1 << 14);
}
# the second only once the first was delivered (pending signals merge)
kill 'TERM', $pid;
ok(wait_for(sub { !term_pending($pid) }, 10), 'the first SIGTERM delivered');
kill 'TERM', $pid;
$status = $t->worker_stop(signal => 0, timeout => 30);
$dbh->commit;
ok(WIFEXITED($status) && WEXITSTATUS($status) == 1,
    'a second SIGTERM: the worker exits at once (status 1), lock held');
like(ActivityTest::_slurp($t->worker_log),
    qr/level=warn msg="second signal, exiting now"/, 'and says so');
is($r->llen('activity:processing:w1'), 5,
    'the unstored batch stays in the processing list');

$t->worker_start(args => ['--flush-ms', 20, '--sql-dir', $sql]);
ok(wait_for(sub { $t->row_count("endpoint LIKE '/term/b/%'") == 5 }, 30),
    'a restart stores it, once');
ok(wait_for(sub { $r->llen('activity:processing:w1') == 0 }, 10),
    'and empties the list');

$t->done;
