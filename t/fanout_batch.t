#!/usr/bin/perl

# The fan-out reads the usual message of the events channel without a
# JSON tree and leaves anything else to jansson: the same events
# published both ways (compact, as the worker publishes them, and with a
# space inside each event, which only jansson takes) reach a dashboard
# as the same frames, byte for byte.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "batch-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;
        location /ws { activity_dashboard websocket; }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $token = jwt_hs256('batch-secret', { sub => 'dash', role => 'admin',
    exp => time + 600 });

my $c = $t->ws_raw("/ws?token=$token");
ok(ref $c, 'upgraded') or BAIL_OUT("status $c");
my ($op0, $snap) = $c->next_frame(10);
like($snap // '', qr/^\{"event":"snapshot"/, 'snapshot');

# the text frames of activity events a client reads, as sent
sub frames {
    my ($n) = @_;
    my @f;
    while (@f < $n) {
        my ($op, $payload) = $c->next_frame(30);
        last unless defined $op;
        next unless $op == 1 && $payload =~ /^\{"event":"activity:new"/;
        push @f, $payload;
    }
    return @f;
}

my $id = '0b5c1f0e-8a4e-4f5e-9c1e-1d2f3a4b5c6d';
my %events = (
    'module event' => qq({"id":"$id","eventType":"API_CALL","userId":"u1",)
        . qq("timestamp":"2026-11-29T10:00:00.000Z","metadata":{"ipAddress":)
        . qq("127.0.0.1","userAgent":"curl/8","endpoint":"/a","method":"GET",)
        . qq("status":200,"durationMs":12,"details":{}}}),
    'escapes and UTF-8' => qq({"eventType":"page_view","userId":"u\\"2\\n",)
        . qq("metadata":{"details":{"k":["\xc3\xa9",true,null,-3,0.5]}}}),
    'a real jansson writes otherwise' =>
        qq({"eventType":"page_view","metadata":{"durationMs":12.3}}),
    'an escape jansson writes otherwise' =>
        qq({"eventType":"page_view","userId":"a\\/b"}),
    'a duplicate key' => qq({"eventType":"login","eventType":"page_view"}),
    'no offset (an older worker)' => qq({"eventType":"login"}),
);

my $seq = 0;
for my $name (sort keys %events) {
    my $e = $events{$name};
    $seq++;
    my $with = $name =~ /no offset/ ? $e
        : substr($e, 0, -1) . qq(,"offset":"1764410400000-$seq"});
    (my $spaced = $with) =~ s/^\{/{ /;
    $t->redis->publish('dashboard:events', "[$with,$with]");
    $t->redis->publish('dashboard:events', "[ $spaced , $spaced ]");
    my @f = frames(4);
    is(scalar @f, 4, "$name: four frames");
    is($f[0], $f[2], "$name: the same frame either way");
    is($f[1], $f[3], "$name: the second one too");
    unlike($f[0] // '', qr/"offset":"[^"]*"\}\s*,"offset"/,
        "$name: the offset member is not in the event");
}

done_testing;
