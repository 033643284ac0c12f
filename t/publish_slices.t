#!/usr/bin/perl

# With the default --batch (2000 events a transaction) a dashboard
# message still holds at most 500 events: events are counted and
# published at most 500 at a time, whether taken from the queue or
# recovered from a processing list a crashed worker left; every event
# is published once, in order, and stored.

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

my (@messages, @published);
my $sub = Redis->new(server => '127.0.0.1:' . $t->redis_port,
    cnx_timeout => 2);
$sub->subscribe('dashboard:events', sub {
    my $events = from_json($_[0]);
    push @messages, scalar @$events;
    push @published, map { $_->{id} } @$events;
});

sub all_published {
    my ($n) = @_;
    return wait_for(sub {
        $sub->wait_for_messages(0.05);
        return @published >= $n;
    }, 60, 0.01);
}

my $r = $t->redis;

# a processing list of 1200 events, as a crashed worker leaves it
my @crashed = map { make_event(endpoint => "/slices/crashed/$_") } 1 .. 1200;
$r->lpush('activity:processing:w1',
    map { ActivityTest::to_json($_) } @crashed);

$t->worker_start;

ok(all_published(1200), 'the recovered events are published');
ok(wait_for(sub { $t->row_count("endpoint LIKE '/slices/crashed/%'")
    == 1200 }, 60), 'and stored');
is_deeply(\@published, [ map { $_->{id} } @crashed ],
    'each once, oldest first');
ok(!grep({ $_ > 500 } @messages), 'at most 500 events a message')
    or diag "messages: @messages";

# 1200 more at once on the queue
(@messages, @published) = ();
my @burst = map { make_event(endpoint => "/slices/burst/$_") } 1 .. 1200;
$t->push_events(@burst);

ok(all_published(1200), 'a burst is published');
ok(wait_for(sub { $t->row_count("endpoint LIKE '/slices/burst/%'")
    == 1200 }, 60), 'and stored');
is_deeply(\@published, [ map { $_->{id} } @burst ],
    'each once, oldest first');
ok(!grep({ $_ > 500 } @messages), 'at most 500 events a message')
    or diag "messages: @messages";
ok(wait_for(sub { !$r->exists('activity:processing:w1') }, 30),
    'every batch retired');

$t->done;
