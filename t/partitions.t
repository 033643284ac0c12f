#!/usr/bin/perl

# Daily partitions: made ahead at start, events land in the partition of
# their day (or the default one), old partitions are detached and dropped
# after the retention period (CONCURRENTLY when there is no default
# partition).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for make_event);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

my $day = 86400;

# activity_logs_YYYYMMDD of today (UTC) plus $offset days
sub part {
    my ($offset) = @_;
    return $t->sql_value("SELECT 'activity_logs_' || to_char("
        . "(now() AT TIME ZONE 'UTC')::date + ?::int, 'YYYYMMDD')", $offset);
}

# Makes the partition for today + $offset days by hand.
sub make_part {
    my ($offset) = @_;
    my $name = part($offset);
    my ($from, $to) = $t->dbh->selectrow_array("SELECT d::text,"
        . " (d + 1)::text FROM (SELECT (now() AT TIME ZONE 'UTC')::date"
        . " + ?::int AS d) s", undef, $offset);
    $t->dbh->do("CREATE TABLE $name PARTITION OF activity_logs FOR VALUES"
        . " FROM ('$from 00:00:00+00') TO ('$to 00:00:00+00')");
    return $name;
}

ok($t->table_exists('activity_logs'), 'migrate made activity_logs');
ok($t->table_exists('activity_logs_default'), 'default partition');
is($t->sql_value("SELECT relkind FROM pg_class WHERE relname ="
    . " 'activity_logs'"), 'p', 'activity_logs is partitioned');

# Old partitions made before the worker starts: retention (30 days) must
# drop those older than 30 days at start and keep the recent one.
my $old45 = make_part(-45);
my $old35 = make_part(-35);
my $recent = make_part(-5);

$t->worker_start(args => [ '--retain-days', 30, '--partitions-ahead', 3 ]);

ok(wait_for(sub { $t->table_exists(part(0)) }, 15),
    'today\'s partition exists after start') or diag(part(0));
# each day is made in its own transaction: tomorrow's may come a moment
# after today's
ok(wait_for(sub { $t->table_exists(part(1)) }, 15),
    'tomorrow\'s partition made ahead');

ok(wait_for(sub { !$t->table_exists($old45) && !$t->table_exists($old35) },
    15), 'partitions older than --retain-days dropped at start');
ok($t->table_exists($recent), 'a partition within retention kept');

# Events of today, next week and 40 days ago.

my $now = time;
my %ev = (
    today    => make_event(time => $now, endpoint => '/today'),
    nextweek => make_event(time => $now + 7 * $day, endpoint => '/next'),
    old      => make_event(time => $now - 40 * $day, endpoint => '/old'),
    recent   => make_event(time => $now - 5 * $day, endpoint => '/recent'),
);
$t->push_events(values %ev);

ok(wait_for(sub { $t->row_count == 4 }, 20), 'four events stored')
    or diag('rows: ' . $t->row_count);

sub where {
    my ($e) = @_;
    return $t->sql_value('SELECT tableoid::regclass::text FROM activity_logs'
        . ' WHERE id = ?', $e->{id}) // 'missing';
}

is(where($ev{today}), part(0), 'today\'s event in today\'s partition');
is(where($ev{recent}), $recent, 'an event in its existing partition');
# --partitions-ahead 3: next week has no partition yet
ok(!$t->table_exists(part(7)), 'no partition for next week yet');
is(where($ev{nextweek}), 'activity_logs_default',
    'next week\'s event in the default partition');
is(where($ev{old}), 'activity_logs_default',
    'a 40 days old event in the default partition');

is($t->sql_value("SELECT to_char(created_at AT TIME ZONE 'UTC',"
    . " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM activity_logs WHERE id = ?",
    $ev{nextweek}{id}), $ev{nextweek}{timestamp},
    'created_at is the event timestamp');

# activity_drop_partitions and activity_ensure_partitions in SQL.

my $old60 = make_part(-60);
my $old31 = make_part(-31);
$t->dbh->do('SELECT activity_drop_partitions(30)');
ok(!$t->table_exists($old60) && !$t->table_exists($old31),
    'activity_drop_partitions(30) drops older partitions');
ok($t->table_exists($recent) && $t->table_exists(part(0)),
    'and keeps the newer ones');
ok($t->table_exists('activity_logs_default'), 'and the default one');
is($t->row_count('id = ?', $ev{recent}{id}), 1, 'rows of kept days kept');

# Next week's event went to the default partition: making next week's
# partition must still work (and keep the row).

ok(!$t->table_exists(part(12)), 'no partition 12 days ahead yet');
ok(eval { $t->dbh->do('SELECT activity_ensure_partitions(14)'); 1 },
    'activity_ensure_partitions(14)') or diag($@);
ok($t->table_exists(part(12)), 'made the partition 12 days ahead');
ok($t->table_exists(part(7)), 'and next week\'s');
ok(eval { $t->dbh->do('SELECT activity_ensure_partitions(14)'); 1 },
    'activity_ensure_partitions is idempotent') or diag($@);
is($t->row_count('id = ?', $ev{nextweek}{id}), 1,
    'next week\'s event still stored once');

# Retention on restart.

my $old50 = make_part(-50);
my $status = $t->worker_stop;
is($status, 0, 'worker exits 0 on SIGTERM');
$t->worker_start(args => [ '--retain-days', 30, '--partitions-ahead', 3 ]);
ok(wait_for(sub { !$t->table_exists($old50) }, 15),
    'old partition dropped when the worker restarts');
ok($t->table_exists($recent), 'recent partition still there');

# Without a default partition, retention detaches CONCURRENTLY (which
# cannot run in a transaction block: a mistake there would fail here).

is($t->worker_stop, 0, 'worker stopped');
$t->dbh->do('DELETE FROM activity_logs_default');
$t->dbh->do('DROP TABLE activity_logs_default');
my $old40 = make_part(-40);
my $ev40 = make_event(time => $now - 40 * $day + 3600, endpoint => '/old40');
$t->dbh->do(q{INSERT INTO activity_logs (id, action, created_at)
    VALUES (?, 'API_CALL', ?)}, undef, $ev40->{id}, $ev40->{timestamp});
$t->worker_start(args => [ '--retain-days', 30, '--partitions-ahead', 3 ]);
ok(wait_for(sub { !$t->table_exists($old40) }, 15),
    'old partition detached and dropped without a default partition');
is($t->row_count('id = ?', $ev40->{id}), 0, 'its rows are gone');
my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
unlike($log, qr/msg="partition maintenance failed"/, 'no failed run');

$t->done;
