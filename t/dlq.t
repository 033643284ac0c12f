#!/usr/bin/perl

# Dead letters: an event PostgreSQL refuses (valid JSON, valid event) is
# isolated by splitting its batch at once: it alone goes to
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

# An event PostgreSQL refuses on its own: the test's trigger raises
# program_limit_exceeded (class 54, what an oversized index entry gave
# before the worker bounded every field) for this one endpoint.
$t->dbh->do(<<'SQL');
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.endpoint = '/dlq/poison' THEN
        RAISE EXCEPTION 'refused by the test' USING ERRCODE = '54000';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON activity_logs
    FOR EACH ROW EXECUTE FUNCTION refuse_poison();
SQL

my @batch = map { make_event(endpoint => "/dlq/$_") } 1 .. 40;
my $poison = make_event(endpoint => '/dlq/poison');
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
is($letter->{attempts}, 1, 'attempts: 1 (a data error is not retried)');
like($letter->{error}, qr/refused by the test/,
    'error: PostgreSQL\'s message');
like($letter->{failedAt}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    'failedAt: ISO time');
is(from_json($letter->{event})->{id}, $poison->{id}, 'event: the poison');

my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
unlike($log, qr/msg="batch store failed"/,
    'no retry with backoff for a data error');
like($log, qr/msg="batch refused for its data, splitting" events=41/,
    'the batch was split at once');

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
is($rc, 0, 'replay --all exits 0');
like($out, qr/replayed 1 dead letter/, 'replay --all replays one');
like($out, qr/\Qleft 1 dead letter(s) in activity:dead: their event is\E
    \Q not a valid event\E/x, 'and says it left the invalid one');
is($r->llen('activity:dead'), 1, 'the invalid event stays dead');
is(from_json($r->lindex('activity:dead', 0))->{event}, $bad,
    'that is the one');
is($r->llen('activity:events'), 1, 'one event requeued');
is(($t->queued_events)[0]{id}, $poison->{id}, 'the valid one');

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
