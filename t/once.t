#!/usr/bin/perl

# Once: one event id is one row whatever timestamps it arrives with (a
# client's retry, a replay); a batch PostgreSQL refuses for one event's
# data is split at once, without the retry waits, the good events
# stored and the bad one dead-lettered; text reaches PostgreSQL as UTF-8
# whatever client encoding the environment asks for.

use strict;
use warnings;
use utf8;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for make_event from_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

{
    # libpq honours PGCLIENTENCODING unless the worker pins UTF8
    local $ENV{PGCLIENTENCODING} = 'LATIN1';
    $t->worker_start(args => ['--flush-ms', 100, '--batch', 100]);
}

my $r = $t->redis;
my $day = 86400;
my $now = time;

sub rows { $t->row_count('id = ?', $_[0]) }


# --- one id, one row ---------------------------------------------------

# a client retries with a timestamp of its own, a day later
my $first = make_event(time => $now - 3 * $day, endpoint => '/once/a');
my $retry = { %$first, timestamp => ActivityTest::iso_time($now - $day) };

$t->push_events($first);
ok(wait_for(sub { rows($first->{id}) == 1 }, 20), 'the event is stored');
$t->push_events($retry);
my $marker = make_event(endpoint => '/once/marker');
$t->push_events($marker);
ok(wait_for(sub { rows($marker->{id}) == 1 }, 20), 'a later event stored');
is(rows($first->{id}), 1, 'the retry with another timestamp is no new row');
is($t->sql_value("SELECT to_char(created_at AT TIME ZONE 'UTC',"
    . " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM activity_logs WHERE id = ?",
    $first->{id}), $first->{timestamp}, 'the first timestamp stays');

# the same id twice in one batch, two timestamps
my $twin = make_event(time => $now - 2 * $day, endpoint => '/once/twin');
my $twin2 = { %$twin, timestamp => ActivityTest::iso_time($now - 5 * $day) };
$t->push_events($twin, $twin2);
ok(wait_for(sub { rows($twin->{id}) >= 1 }, 20), 'twins stored');
my $m2 = make_event(endpoint => '/once/marker2');
$t->push_events($m2);
ok(wait_for(sub { rows($m2->{id}) == 1 }, 20), 'a later event stored');
is(rows($twin->{id}), 1, 'twins in one batch are one row');


# --- a data error splits at once ---------------------------------------

$t->dbh->do(q{ALTER TABLE activity_logs ADD CONSTRAINT test_refuse
    CHECK (endpoint IS DISTINCT FROM '/refuse')});

my @batch = map { make_event(endpoint => "/good/$_") } 1 .. 30;
my $bad = make_event(endpoint => '/refuse');
splice @batch, 11, 0, $bad;
$t->push_events(@batch);

ok(wait_for(sub { $r->llen('activity:dead') == 1 }, 30),
    'the refused event is dead-lettered');
ok(wait_for(sub { $t->row_count("endpoint LIKE '/good/%'") == 30 }, 20),
    'its 30 neighbours are stored');
my $letter = from_json($r->lindex('activity:dead', 0));
is(from_json($letter->{event})->{id}, $bad->{id}, 'the letter holds it');
like($letter->{error}, qr/test_refuse/, 'with PostgreSQL\'s reason');
is($letter->{attempts}, 1, 'attempts: 1');

my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
unlike($log, qr/msg="batch store failed"/,
    'no retry with backoff for a data error');
like($log, qr/msg="batch refused for its data, splitting".*sqlstate=23514/,
    'the batch was split at once');


# --- UTF-8 whatever the environment ------------------------------------

my $text = "Grüße, 日本, ✓";
my $utf = make_event(agent => $text, endpoint => '/utf8');
$t->push_events($utf);
ok(wait_for(sub { rows($utf->{id}) == 1 }, 20), 'stored');
is($t->sql_value('SELECT user_agent FROM activity_logs WHERE id = ?',
    $utf->{id}), $text, 'text stored as sent despite PGCLIENTENCODING');

$t->done;
