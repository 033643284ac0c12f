#!/usr/bin/perl

# activity_buffer_size: while Redis is down, events beyond the buffer are
# dropped, counted and logged; requests are never refused for it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF2');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_buffer_size 64k;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location / {
            activity_track on;
            return 200;
        }

        location = /status {
            activity_status;
        }
    }
}
EOF2

$t->redis_start;
$t->nginx_start;

is($t->http(GET => '/warm')->{status}, 200, 'warm up');
my $r = $t->redis;
ok(wait_for(sub { $r->llen('activity:events') == 1 }, 15), 'event queued');
$t->redis_stop;

my $n = 300;
my $ok = 0;
my $agent = 'x' x 4000;
for my $i (1 .. $n) {
    $ok++ if $t->http(GET => "/full/$i",
        headers => { 'User-Agent' => $agent })->{status} == 200;
}
is($ok, $n, "$n requests answered 200 with the buffer full");

ok(wait_for(sub {
    open my $fh, '<', $t->error_log or return 0;
    grep { /\[error\].*activity.*(buffer|drop)/i } <$fh>;
}, 10), 'dropped events logged at error level');

# A value of the status page (NAME{LABELS} as one string); undef if absent.
sub metric { $t->status_metric('/status', $_[0]) }

my $dropped = metric('activity_events_dropped_total');
my $kept = metric('activity_events_buffered');
ok($dropped > 0, "the ones beyond 64k were dropped and counted ($dropped)");
is($kept + $dropped, $n, "the others are buffered ($kept)");

$t->redis_start;
$r = $t->redis;
ok(wait_for(sub { metric('activity_events_buffered') == 0 }, 20),
    'buffered events sent when Redis is back');
# (Redis keeps nothing over a restart: /warm is gone)
is($r->llen('activity:events'), $kept, 'each of them once');

my @e = map { $_->{metadata}{endpoint} } $t->queued_events;
is_deeply(\@e, [ map { "/full/$_" } 1 .. $kept ],
    'the oldest ones are kept, in order');

is($t->http(GET => '/later')->{status}, 200, 'request after recovery');
ok(wait_for(sub {
    grep { ($_->{metadata}{endpoint} // '') eq '/later' } $t->queued_events
}, 15), 'and its event is queued');

$t->done;
