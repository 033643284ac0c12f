#!/usr/bin/perl

# The worker's side of resume (issue 12): every published event is
# appended to the stream (--stream-key, default dashboard:events:stream)
# in the same script that publishes it, and goes out on the channel with
# its entry id as a last member "offset": the published offsets are the
# stream's ids, in the stream's order, each event once. The stream stays
# bounded (--stream-max, MAXLEN ~); --stream-max 0: no stream, and the
# events go out as queued.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Redis;
use Test::More;
use ActivityTest qw(wait_for make_event to_json from_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

my $r = $t->redis;
my @msgs;
my $sub = Redis->new(server => '127.0.0.1:' . $t->redis_port);
$sub->subscribe('dashboard:events', sub { push @msgs, $_[0] });
sub published {
    $sub->wait_for_messages(0.05);
    return map { @{ from_json($_) } } @msgs;
}

# two workers share the one stream

$t->worker_start(args => ['--stream-max', 100, '--batch', 50]);
$t->worker_start(id => 'w2', args => ['--stream-max', 100,
    '--batch', 50]);

my $n = 600;
$t->push_events(map { make_event(user => "s$_", endpoint => "/s/$_") }
    1 .. $n);

ok(wait_for(sub { (my @p = published()) >= $n }, 60), 'all published');
my @events = published();
is(scalar @events, $n, 'each once');

my @offsets = map { $_->{offset} } @events;
is(scalar(grep { defined && /^\d+-\d+$/ } @offsets), $n,
    'each event with an offset');
my $rising = 1;
for my $i (1 .. $#offsets) {
    my ($p, $q) = map { [ split /-/ ] } @offsets[$i - 1, $i];
    $rising = 0 unless $q->[0] > $p->[0]
        || ($q->[0] == $p->[0] && $q->[1] > $p->[1]);
}
ok($rising, 'offsets rise in the order published, across both workers');

my $len = $r->xlen('dashboard:events:stream');
ok($len >= 100 && $len < 100 + 200, "stream bounded near --stream-max: $len");

# the stream's tail is what was published last, with the same ids
my @tail = $r->xrange('dashboard:events:stream', '-', '+');
my %by_id = map { $_->{offset} => $_ } @events;
my $same = 0;
for my $entry (@tail) {
    my ($id, $fields) = @$entry;
    my %f = @$fields;
    my $e = $by_id{$id} or next;
    my $stored = from_json($f{e});
    $same++ if !exists $stored->{offset}
        && $stored->{id} eq $e->{id};
}
is($same, scalar @tail, 'every entry left is a published event, same id');
is($tail[-1][0], $offsets[-1], 'the newest entry is the last published');

# --stream-max 0: as before, no stream

$t->worker_stop(id => 'w2');
$t->worker_restart(args => ['--stream-max', 0]);
$r->del('dashboard:events:stream');
@msgs = ();
my $plain = make_event(user => 'plain');
$t->push_events($plain);
ok(wait_for(sub { (my @p = published()) >= 1 }, 30), 'published');
is($msgs[0], '[' . to_json($plain) . ']',
    '--stream-max 0: the event text as queued, no offset');
is($r->exists('dashboard:events:stream'), 0, 'and no stream');

$t->done;
