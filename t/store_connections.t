#!/usr/bin/perl

# --store-connections (2 by default): a batch is stored while an older
# one waits in PostgreSQL, yet leaves the processing list only after
# it; every event is stored once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use DBI;
use Test::More;
use ActivityTest qw(wait_for make_event);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--batch', 10, '--flush-ms', 50]);

ok(wait_for(sub { $t->log_lines(qr/partitions maintained/, $t->worker_log) },
    30), 'partitions made');

my $r = $t->redis;
my $proc = 'activity:processing:w1';
my @events = map { make_event(user => "u$_") } 1 .. 20;
my @first = map { $_->{id} } @events[0 .. 9];
my @second = map { $_->{id} } @events[10 .. 19];

sub stored {
    my @ids = @_;
    return $t->row_count('id = ANY(?)', \@ids);
}

# another session holds the first batch's first id, uncommitted: the
# first batch's COPY waits for it
my $blocker = DBI->connect('dbi:Pg:dbname=activity;host=127.0.0.1;port='
    . $t->pg_port, 'postgres', '', { RaiseError => 1, AutoCommit => 0,
    PrintError => 0 });
$blocker->do('INSERT INTO activity_event_ids (id, created_at)'
    . ' VALUES (?, ?)', undef, $first[0], $events[0]{timestamp});

$t->push_events(@events);

ok(wait_for(sub { stored(@second) == 10 }, 30),
    'the second batch is stored while the first waits');
ok(wait_for(sub { $t->sql_value(q{SELECT count(*) FROM pg_stat_activity
    WHERE wait_event_type = 'Lock' AND application_name
    = 'activity-worker'}) == 1 }, 30), 'the first batch waits on the lock');
is(stored(@first), 0, 'the first batch is not stored yet');

# a chance for a wrong order to show
select undef, undef, undef, 0.5;
is($r->llen($proc), 20,
    'the second batch stays in the processing list behind the first');

$blocker->rollback;
$blocker->disconnect;

ok(wait_for(sub { !$r->exists($proc) }, 30),
    'both batches leave the processing list');
is(stored(@first, @second), 20, 'every event stored');
is($t->sql_value('SELECT count(*) FROM activity_event_ids'), 20,
    'every id once');

$t->worker_stop;
like(scalar($t->log_lines(qr/msg="summary"/, $t->worker_log)), qr/^1$/,
    'one summary');
my ($sum) = $t->log_lines(qr/msg="summary"/, $t->worker_log);
like($sum, qr/\bbatches=2 events=20 inserted=20\b/, 'two batches, 20 rows');

$t->done;
