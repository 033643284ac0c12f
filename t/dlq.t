#!/usr/bin/perl

# Dead letters: an event PostgreSQL refuses (valid JSON, valid event) is
# retried, then isolated by splitting its batch: it alone goes to
# activity:dead while its neighbours are stored; "activity-worker dlq"
# lists, replays and purges the letters.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for make_event from_json to_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

# the refused event's batch fails (logged at error) before it is split
$t->allow_worker_errors(qr/msg="batch store failed" .* sqlstate=54000 /);

my $r = $t->redis;
my @args = ('--batch', 100, '--flush-ms', 300,
    '--retry-delays', '100,200,300');

# A user id PostgreSQL cannot index: a btree entry holds at most 2704
# bytes, and random text does not compress below that. Nothing in the
# event contract bounds userId, so the worker passes it on.
my $big = join '', map { ('a' .. 'z', 'A' .. 'Z', 0 .. 9)[rand 62] }
    1 .. 8000;

my @batch = map { make_event(endpoint => "/dlq/$_") } 1 .. 40;
my $poison = make_event(endpoint => '/dlq/poison', user => $big);
splice @batch, 17, 0, $poison;

# all in the queue before the worker starts: one batch
$t->push_events(@batch);
$t->worker_start(args => \@args);

ok(wait_for(sub { $r->llen('activity:dead') >= 1 }, 30),
    'the poison event is dead-lettered');
ok(wait_for(sub { $t->row_count("endpoint LIKE '/dlq/%'") == 40 }, 20),
    'its 40 batch neighbours are stored');
ok(wait_for(sub { $r->llen('activity:processing:w1') == 0 }, 10),
    'the batch left the processing list');
is($r->llen('activity:dead'), 1, 'one dead letter');
is($t->row_count('id = ?', $poison->{id}), 0, 'the poison is not stored');

my $letter = from_json($r->lindex('activity:dead', 0));
is_deeply([ sort keys %$letter ], [qw(attempts error event failedAt)],
    'letter fields');
is($letter->{attempts}, 3, 'attempts: 3');
like($letter->{error}, qr/index row size/, 'error: PostgreSQL\'s message');
like($letter->{failedAt}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    'failedAt: ISO time');
is(from_json($letter->{event})->{id}, $poison->{id}, 'event: the poison');

my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
like($log, qr/msg="batch store failed".*attempt=3 of=3/,
    'three attempts logged');
like($log, qr/msg="splitting batch/, 'then the batch was split');

# An event that is not valid is dead-lettered at once (attempts 1).

my $bad = '{"id":"not-a-uuid","eventType":"API_CALL"}';
$t->push_events($bad);
ok(wait_for(sub { $r->llen('activity:dead') == 2 }, 20),
    'an invalid event is dead-lettered too');
is(from_json($r->lindex('activity:dead', 0))->{attempts}, 1,
    'without retries');

# dlq list / replay / purge, with the worker stopped.

$t->worker_stop;

sub dlq {
    my (@a) = @_;
    my ($rc, $out) = $t->run_cmd($t->{bin}{worker}, 'dlq', @a,
        '--redis', $t->redis_url);
    return ($rc, $out);
}

my ($rc, $out) = dlq('list');
is($rc, 0, 'dlq list exits 0');
my @lines = map { from_json($_) } split /\n/, $out;
is(scalar @lines, 2, 'lists both letters');
is(from_json($lines[0]{event})->{id}, $poison->{id}, 'oldest first');
is($lines[1]{event}, $bad, 'the invalid event verbatim');

($rc, $out) = dlq('list', '--limit', 1);
is(scalar(split /\n/, $out), 1, 'list --limit 1: one line');

# a letter whose cause was fixed: replaying it stores the event
my $fixed = make_event(endpoint => '/dlq/fixed');
$r->rpush('activity:dead', to_json({ event => to_json($fixed),
    error => 'test', attempts => 3, failedAt => '2026-01-01T00:00:00Z' }));

($rc, $out) = dlq('replay', 1);
is($rc, 0, 'dlq replay 1 exits 0');
like($out, qr/replayed 1 dead letter/, 'says how many');
is($r->llen('activity:dead'), 2, 'one letter left the dead list');
is_deeply([ $r->lrange('activity:events', 0, -1) ], [ to_json($fixed) ],
    'its event, exactly, is on the queue');

$t->worker_start(args => \@args);
ok(wait_for(sub { $t->row_count('id = ?', $fixed->{id}) == 1 }, 20),
    'the replayed event is stored');
$t->worker_stop;

($rc, $out) = dlq('replay', '--all');
like($out, qr/replayed 2 dead letter/, 'replay --all');
is($r->llen('activity:dead'), 0, 'dead list empty');
is($r->llen('activity:events'), 2, 'both events requeued');
is(($t->queued_events)[0]{id}, $poison->{id}, 'oldest letter first');

# replayed and still refused: back to the dead list, nothing lost
$t->worker_start(args => \@args);
ok(wait_for(sub { $r->llen('activity:dead') == 2 }, 30),
    'still refused, dead-lettered again');
$t->worker_stop;

($rc, $out) = dlq('purge');
is($rc, 0, 'dlq purge exits 0');
like($out, qr/purged 2 dead letter/, 'purge says how many');
is($r->llen('activity:dead'), 0, 'dead list gone');

($rc, $out) = dlq('frobnicate');
is($rc, 2, 'unknown action: exit 2');

is($t->row_count("endpoint LIKE '/dlq/%'"), 41, 'nothing else stored');

$t->done;
