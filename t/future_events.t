#!/usr/bin/perl

# An event stamped far in the future (more than 60 s ahead of Redis's
# clock) is stored but neither counted nor published: the mark that
# would keep it from being published twice would have to outlive its
# own freshness. Sent again, it is still not published; events within
# the 60 s tolerance are published once. A mark of the previous release
# (activity:seen:<id>) is still read.

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
my $pump = sub { $sub->wait_for_messages(0.05) };

$t->worker_start;

my $far = make_event(endpoint => '/future/far', time => time + 86400);
my $near = make_event(endpoint => '/future/near', time => time + 30);
my $now = make_event(endpoint => '/future/now');

$t->push_events($far, $near, $now);
ok(wait_for(sub { $pump->(); grep { $_ eq $now->{id} } @published }, 20),
    'an event of now is published');
ok(wait_for(sub { $t->row_count("endpoint LIKE '/future/%'") == 3 }, 20),
    'all three are stored');

# the same events again (a resend), then a marker
my $marker = make_event(endpoint => '/future/marker');
$t->push_events($far, $near, $now, $marker);
ok(wait_for(sub { $pump->(); grep { $_ eq $marker->{id} } @published },
    20), 'the marker behind the resend is published');

is(scalar(grep { $_ eq $far->{id} } @published), 0,
    'the far-future event was never published');
is(scalar(grep { $_ eq $near->{id} } @published), 1,
    'one 30 s ahead was published once');
is(scalar(grep { $_ eq $now->{id} } @published), 1,
    'the event of now once');
ok(!grep({ /\/future\/far/ } $t->redis->lrange('dashboard:events:recent',
    0, -1)), 'nor is it in the recent list');
is($t->row_count('id = ?', $far->{id}), 1, 'it is stored once');

# a mark left by a worker of the previous release (one key an id) is
# still honoured: a rolling upgrade publishes nothing twice
my $marked = make_event(endpoint => '/future/old-mark');
$t->redis->set("activity:seen:$marked->{id}", 1, 'EX', 600);
my $marker2 = make_event(endpoint => '/future/marker2');
$t->push_events($marked, $marker2);
ok(wait_for(sub { $pump->(); grep { $_ eq $marker2->{id} } @published },
    20), 'the event behind it is published');
is(scalar(grep { $_ eq $marked->{id} } @published), 0,
    'an event marked the old way is not published again');

$t->done;
