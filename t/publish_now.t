#!/usr/bin/perl

# Publishing never waits for a batch to fill: with a storage window far
# longer than the test (--flush-ms 60000) and a batch of 5, three events
# reach the dashboard:events channel while none of them is stored yet;
# they are stored once two more events fill the batch, and a SIGTERM
# stores what was published but not yet stored.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Redis;
use Test::More;
use ActivityTest qw(wait_for make_event from_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

my @published;
my $sub = Redis->new(server => '127.0.0.1:' . $t->redis_port,
    cnx_timeout => 2);
$sub->subscribe('dashboard:events', sub {
    push @published, map { $_->{id} } @{ from_json($_[0]) };
});

sub published {
    my ($ids, $timeout) = @_;
    return wait_for(sub {
        $sub->wait_for_messages(0.05);
        my %got = map { $_ => 1 } @published;
        return !grep { !$got{$_} } @$ids;
    }, $timeout // 20, 0.01);
}

$t->worker_start(args => ['--flush-ms', 60000, '--batch', 5]);

my @first = map { make_event(endpoint => "/now/$_") } 1 .. 3;
$t->push_events(@first);

ok(published([ map { $_->{id} } @first ]),
    'three events are published without waiting for the batch window');
is($t->row_count("endpoint LIKE '/now/%'"), 0,
    'and none of them is stored yet: storage still batches');
is($t->redis->llen('activity:processing:w1'), 3,
    'they wait in the processing list');

my @more = map { make_event(endpoint => "/now/$_") } 4 .. 5;
$t->push_events(@more);

ok(published([ map { $_->{id} } @more ]), 'two more are published');
ok(wait_for(sub { $t->row_count("endpoint LIKE '/now/%'") == 5 }, 20),
    'the full batch of five is stored');
ok(wait_for(sub { $t->redis->llen('activity:processing:w1') == 0 }, 20),
    'and leaves the processing list');

# a stop stores what was published but not yet stored

my @last = map { make_event(endpoint => "/now/$_") } 6 .. 7;
$t->push_events(@last);
ok(published([ map { $_->{id} } @last ]), 'two more published');
is($t->row_count("endpoint LIKE '/now/%'"), 5, 'not stored yet');
is($t->worker_stop, 0, 'SIGTERM: exit 0');
is($t->row_count("endpoint LIKE '/now/%'"), 7, 'stored on the way out');
is($t->redis->llen('activity:processing:w1'), 0, 'list empty');

is(scalar @published, 7, 'each event published once');

$t->done;
