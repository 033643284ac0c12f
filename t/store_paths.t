#!/usr/bin/perl

# The worker's two ways into PostgreSQL (worker/pgwriter.c) store the
# same rows: the direct path (COPY of the ids, COPY of the rows), again
# without the ids already stored when the batch holds some; the staged
# path when a row key is already there without its id, or when
# metadata.details cannot be cut out of the event's text.
# metadata.details is stored exactly as the producer wrote it on both.

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
$t->worker_start(args => ['--flush-ms', 100, '--batch', 100,
    '--log-level', 'debug']);

my $r = $t->redis;
my $now = time;

# today's partition is made at start (the rows below go there)
ok(wait_for(sub { $t->log_lines(qr/partitions maintained/, $t->worker_log) },
    30), 'partitions made');

sub rows { $t->row_count('id = ?', $_[0]) }

# the stored details equal the producer's text parsed as jsonb
sub details_match {
    my ($id, $text) = @_;
    return $t->sql_value('SELECT details = ?::jsonb FROM activity_logs'
        . ' WHERE id = ?', $text, $id);
}

# An event as raw JSON text: $details goes in as written.
sub raw_event {
    my (%o) = @_;
    my $id = $o{id} // ActivityTest::uuid();
    my $ts = ActivityTest::iso_time($o{time} // $now);
    my $key = $o{key} // '"details"';
    return ($id, qq({"id":"$id","eventType":"API_CALL","userId":"u1",)
        . qq("timestamp":"$ts","metadata":{"endpoint":"$o{endpoint}",)
        . qq("note":{"details":[1]},$key:$o{details},"method":"GET"}}));
}

# how many batches went the staged path (for that cause)
sub staged {
    my ($cause) = @_;
    my $re = defined $cause ? qr/staged path.*cause="?\Q$cause\E/
                            : qr/staged path/;
    return scalar $t->log_lines($re, $t->worker_log);
}

sub wait_marker {
    my ($name) = @_;
    my $m = make_event(endpoint => "/marker/$name");
    $t->push_events($m);
    return wait_for(sub { rows($m->{id}) == 1 }, 30);
}


# --- details as written ------------------------------------------------

# numbers jansson would print otherwise, brackets and quotes in strings,
# escapes, and whitespace COPY must escape (tab, newline)
my $tricky = qq({ "n" :\t0.1, "e": 1.5e3, "big": 123456789012345678,)
    . qq(\n "s": "a}\\"b{[", "esc": "tab\\there\\\\", "arr": [1, {"x": "]"}],)
    . qq( "nested": {"details": {"deep": true}}, "nul": null });
my ($id1, $text1) = raw_event(endpoint => '/paths/tricky',
    details => $tricky);
# a details key spelled with an escape: found by jansson, not by name
my ($id2, $text2) = raw_event(endpoint => '/paths/escaped',
    key => '"det\\u0061ils"', details => '{"k": 0.30}');
# empty and absent details are {}
my $empty = make_event(endpoint => '/paths/empty');
my $none = make_event(endpoint => '/paths/none');
delete $none->{metadata}{details};

$t->push_events($text1);
ok(wait_for(sub { rows($id1) == 1 }, 30), 'an event with details stored');
ok(details_match($id1, $tricky), 'details stored as written')
    or diag $t->sql_value('SELECT details::text FROM activity_logs'
        . ' WHERE id = ?', $id1);
is($t->sql_value(q{SELECT details->>'n' FROM activity_logs WHERE id = ?},
    $id1), '0.1', '0.1 stays 0.1');
is(staged(), 0, 'by the direct path');

$t->push_events($text2, $empty, $none);
ok(wait_for(sub { rows($id2) == 1 && rows($empty->{id}) == 1
    && rows($none->{id}) == 1 }, 30), 'a batch with an escaped key stored');
ok(details_match($id2, '{"k": 0.30}'), 'details under an escaped key');
is(staged('details'), 1, 'by the staged path');
is($t->sql_value('SELECT details::text FROM activity_logs WHERE id = ?',
    $empty->{id}), '{}', 'empty details: {}');
is($t->sql_value('SELECT details::text FROM activity_logs WHERE id = ?',
    $none->{id}), '{}', 'no details: {}');


# --- ids already stored ------------------------------------------------

# a later batch mixing a known id (another timestamp) with new ones
my $old = make_event(time => $now - 3600, endpoint => '/paths/old');
$t->push_events($old);
ok(wait_for(sub { rows($old->{id}) == 1 }, 30), 'an event stored');

my $again = { %$old, timestamp => ActivityTest::iso_time($now - 60) };
my @new = map { make_event(endpoint => "/paths/new/$_") } 1 .. 20;
$t->push_events(@new[0 .. 9], $again, @new[10 .. 19]);
ok(wait_for(sub { $t->row_count("endpoint LIKE '/paths/new/%'") == 20 },
    30), 'the new events of a batch holding a known id are stored');
is(rows($old->{id}), 1, 'the known id is no second row');
is(scalar $t->log_lines(qr/batch holds stored ids.*stored=1\b/,
    $t->worker_log), 1, 'left out of the direct path after one query');
is(staged('stored key'), 0, 'not by the staged path');
is($t->sql_value(q{SELECT to_char(created_at AT TIME ZONE 'UTC',
    'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') FROM activity_logs WHERE id = ?},
    $old->{id}), $old->{timestamp}, 'with its first timestamp');

# the same id three times in one batch: the earliest timestamp wins
my $tri = make_event(time => $now - 120, endpoint => '/paths/tri');
my @tri = ($tri, { %$tri, timestamp => ActivityTest::iso_time($now - 300) },
    { %$tri, timestamp => ActivityTest::iso_time($now - 200) });
$t->push_events(@tri);
ok(wait_for(sub { rows($tri->{id}) == 1 }, 30), 'one of three stored');
ok(wait_marker('tri'), 'a later event stored');
is(rows($tri->{id}), 1, 'three timestamps, one row');
is($t->sql_value(q{SELECT to_char(created_at AT TIME ZONE 'UTC',
    'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') FROM activity_logs WHERE id = ?},
    $tri->{id}), $tri[1]{timestamp}, 'the earliest timestamp');
is($t->sql_value(q{SELECT to_char(created_at AT TIME ZONE 'UTC',
    'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') FROM activity_event_ids WHERE id = ?},
    $tri->{id}), $tri[1]{timestamp}, 'the id is kept with it');

# a row written by hand, its id not in activity_event_ids
my $hand = make_event(endpoint => '/paths/hand');
$t->dbh->do(q{INSERT INTO activity_logs (id, action, created_at, endpoint)
    VALUES (?, 'API_CALL', ?, '/paths/hand')}, undef, $hand->{id},
    $hand->{timestamp});
my @with = map { make_event(endpoint => "/paths/with/$_") } 1 .. 5;
$t->push_events(@with, $hand);
ok(wait_for(sub { $t->row_count("endpoint LIKE '/paths/with/%'") == 5 },
    30), 'a batch holding a row key written by hand is stored');
is(rows($hand->{id}), 1, 'that row stays one row');
is(staged('stored key'), 1, 'by the staged path');
is($r->llen('activity:dead'), 0, 'nothing dead-lettered');
ok(wait_for(sub { !$r->exists('activity:processing:w1') }, 30),
    'every batch retired');

is($t->sql_value('SELECT count(*) FROM activity_logs l WHERE NOT EXISTS'
    . ' (SELECT 1 FROM activity_event_ids i WHERE i.id = l.id'
    . ' AND i.created_at = l.created_at)'), 0,
    'every row has its id kept, with its timestamp');

is_deeply([ $t->log_lines(qr/level=(?:warn|error)/, $t->worker_log) ], [],
    'no warning in the worker log');

$t->done;
