#!/usr/bin/perl

# Poison on the queue: elements holding a NUL byte (inside a JSON
# string, after the JSON, in garbage) leave the processing list at once
# as dead letters that keep their exact bytes (eventBase64); the valid
# events around them are stored, nothing wedges, Redis is not blamed,
# and "dlq replay" does not put the poison back.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 qw(decode_base64);
use Test::More;
use ActivityTest qw(wait_for make_event to_json from_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

my $r = $t->redis;

my @good = map { make_event(endpoint => "/poison/ok/$_") } 1 .. 3;
(my $in_string = to_json(make_event(endpoint => '/poison/x')))
    =~ s{/poison/x}{/poison/\0x};
my $after = to_json(make_event(endpoint => '/poison/after')) . "\0";
my $garbage = "\0\xff\xfe not json \0";

# oldest first: the poison at both ends of the batch and in between
$t->push_events($in_string, $good[0], $after, $good[1], $good[2],
    $garbage);
$t->worker_start(args => ['--batch', 10, '--flush-ms', 200]);

ok(wait_for(sub { $t->row_count("endpoint LIKE '/poison/ok/%'") == 3 }, 30),
    'the valid events are stored');
ok(wait_for(sub { $r->llen('activity:processing:w1') == 0 }, 20),
    'the processing list empties');
is($r->llen('activity:dead'), 3, 'three dead letters');

my %raw = map { $_ => 1 } ($in_string, $after, $garbage);
my @letters = map { from_json($_) } $r->lrange('activity:dead', 0, -1);
for my $l (@letters) {
    ok($l->{eventBase64} && $raw{ decode_base64($l->{eventBase64}) },
        'a letter keeps the exact bytes in eventBase64');
    is($l->{attempts}, 1, 'dead-lettered at once');
    like($l->{error}, qr/NUL/, 'error: ' . $l->{error});
}

sleep 2;    # a wedged batch was stored again every second
is($t->row_count("endpoint LIKE '/poison/%'"), 3, 'nothing else stored');
is($r->llen('activity:dead'), 3, 'no letter twice');

my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
is(() = $log =~ /msg="event dead-lettered"/g, 3, 'three letters logged');
unlike($log, qr/redis unavailable|batch left in processing list/,
    'Redis is not blamed');

# replay leaves the poison where it is

$t->worker_stop;
my ($rc, $out) = $t->run_cmd($t->{bin}{worker}, 'dlq', 'replay', '--all',
    '--redis', $t->redis_url);
is($rc, 0, 'dlq replay exits 0');
like($out, qr/replayed 0 dead letter/, 'replays none');
like($out, qr/left 3 dead letter/, 'says it left three');
is($r->llen('activity:events'), 0, 'no poison back on the queue');
is($r->llen('activity:dead'), 3, 'the letters stay');

$t->done;
