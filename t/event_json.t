#!/usr/bin/perl

# The event contract: what the module puts on the queue is the JSON the
# architecture describes (id, eventType, userId, timestamp, metadata), with
# strings escaped properly.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::Local qw(timegm);
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_queue test:queue;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        activity_track on;

        location / {
            return 200 "ok\n";
        }

        location = /nothing {
            return 404;
        }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $agent = "odd \"agent\" \\ tab\t caf\x{e9} \x{263a} end";
my $before = time;

is($t->http(GET => '/a/b?x=1&y=2')->{status}, 200, 'request 1');
is($t->http(POST => '/form', content => 'a=1')->{status}, 200, 'request 2');
is($t->http(GET => '/nothing')->{status}, 404, 'request 3');
my $ua = $agent;
utf8::encode($ua);
like($t->http_raw("GET /ua HTTP/1.0\r\nHost: localhost\r\n"
    . "User-Agent: $ua\r\n\r\n"), qr{^HTTP/1\.1 200 }, 'request 4');

my $r = $t->redis;
ok(wait_for(sub { $r->llen('test:queue') >= 4 }, 15),
    'events on the configured activity_queue');
is($r->llen('activity:events'), 0, 'nothing on the default queue');

my @raw = reverse $r->lrange('test:queue', 0, -1);
is(scalar @raw, 4, 'one event a request');

my @e = map { eval { ActivityTest::from_json($_) } } @raw;
is(scalar @e, 4, 'every event is valid JSON');

my $uuid = qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
my %ids = map { ($_->{id} // '') => 1 } @e;
is(scalar(grep { ($_->{id} // '') =~ $uuid } @e), 4, 'ids are UUIDs');
is(scalar keys %ids, 4, 'ids differ');

is_deeply([ map { $_->{eventType} } @e ], [ ('API_CALL') x 4 ], 'eventType');
is_deeply([ map { exists $_->{userId} && !defined $_->{userId} } @e ],
    [ (1) x 4 ], 'userId null without a user');

my $ts = qr/^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.\d{3}Z$/;
my @t_ok = grep {
    my @p = ($_->{timestamp} // '') =~ $ts;
    @p && do {
        my $epoch = timegm($p[5], $p[4], $p[3], $p[2], $p[1] - 1, $p[0]);
        $epoch >= int($before) - 60 && $epoch <= time + 60;
    }
} @e;
is(scalar @t_ok, 4, 'timestamp: ISO 8601 UTC with milliseconds, now');

my @m = map { $_->{metadata} || {} } @e;
is_deeply([ map { $_->{endpoint} } @m ], ['/a/b', '/form', '/nothing', '/ua'],
    'endpoint: the path without the query string');
is_deeply([ map { $_->{method} } @m ], [qw(GET POST GET GET)], 'method');
is_deeply([ map { $_->{status} } @m ], [200, 200, 404, 200], 'status');
is_deeply([ map { $_->{ipAddress} } @m ], [ ('127.0.0.1') x 4 ],
    'ipAddress');
is($m[0]{userAgent}, 'activity-test/1.0', 'userAgent');
is($m[3]{userAgent}, $agent, 'userAgent with quotes, controls, UTF-8');
is(scalar(grep { ref $_->{details} eq 'HASH' } @m), 4, 'details object');
is(scalar(grep { defined $_->{durationMs} && $_->{durationMs} >= 0 } @m), 4,
    'durationMs');

is(scalar(grep { /"status":\s*\d+[,}]/ } @raw), 4, 'status is a number');
is(scalar(grep { /"durationMs":\s*[\d.eE+-]+[,}]/ } @raw), 4,
    'durationMs is a number');

# the timestamp is the moment in the id (UUIDv7), to the millisecond,
# across second boundaries
$r->del('test:queue');
my $until = time + 2;
my $sent = 0;
while (time <= $until) {
    $t->http(GET => '/tick');
    $sent++;
    select undef, undef, undef, 0.05;
}
ok(wait_for(sub { $r->llen('test:queue') >= $sent }, 15),
    "$sent events over 2 s");
my @bad = grep {
    my $hex = substr($_->{id}, 0, 8) . substr($_->{id}, 9, 4);
    my $ms = hex $hex;
    my @g = gmtime int($ms / 1000);
    my $want = sprintf '%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', $g[5] + 1900,
        $g[4] + 1, @g[3, 2, 1, 0], $ms % 1000;
    $_->{timestamp} ne $want;
} map { ActivityTest::from_json($_) } $r->lrange('test:queue', 0, -1);
is(scalar @bad, 0, 'timestamp and id name the same millisecond')
    or diag(ActivityTest::to_json($bad[0]));

$t->done;
