#!/usr/bin/perl

# Field limits, alike in the module, ingest and the worker (bytes of
# UTF-8): userId 256, userAgent 1024, endpoint 2048, method 32, details
# 8192 as compact JSON. The module cuts at a character boundary, ingest
# answers 400 naming the field, the worker cuts strings and refuses an
# oversized details object.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for make_event to_json from_json);

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);

$t->write_conf(<<'EOF2');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;
        large_client_header_buffers 4 32k;

        location / {
            activity_track on;
            activity_user $http_x_user;
            activity_meta one $http_x_one;
            activity_meta two $http_x_two;
            activity_meta three $http_x_three;
            return 200;
        }

        location = /ingest {
            activity_ingest;
        }
    }
}
EOF2

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->nginx_start;

my $r = $t->redis;

# random text: PostgreSQL cannot compress it below a btree entry's limit
sub random_text {
    join '', map { ('a' .. 'z', 'A' .. 'Z', 0 .. 9)[rand 62] } 1 .. $_[0];
}

sub bytes_of { my $s = shift; utf8::encode($s); length $s }

# --- the module cuts, at a character boundary -----------------------------

my $user = random_text(3000);
my $e_acute = "\xC3\xA9";                     # 2 bytes a character
my $agent = 'a' . ($e_acute x 1500);          # the cut falls mid-character
my $path = '/p' . ($e_acute x 1500);
like($t->http_raw("GET $path HTTP/1.0\r\nHost: localhost\r\n"
        . "User-Agent: $agent\r\nX-User: $user\r\n"
        . "X-One: " . ('1' x 5000) . "\r\nX-Two: " . ('2' x 5000) . "\r\n"
        . "X-Three: three\r\n\r\n"),
    qr{^HTTP/1\.1 200 }, 'a request with oversized fields is answered');

ok(wait_for(sub { $r->llen('activity:events') >= 1 }, 15), 'event queued');
my ($raw) = $r->lrange('activity:events', 0, 0);
my $e = from_json($raw);
my $m = $e->{metadata};

is(bytes_of($e->{userId}), 256, 'userId cut to 256 bytes');
is($e->{userId}, substr($user, 0, 256), 'its first 256 bytes');
is(bytes_of($m->{userAgent}), 1023, 'userAgent cut within 1024 bytes');
is($m->{userAgent}, 'a' . ("\x{e9}" x 511), 'at a character boundary');
is(bytes_of($m->{endpoint}), 2048, 'endpoint cut to 2048 bytes');
is($m->{endpoint}, '/p' . ("\x{e9}" x 1023), 'at a character boundary');
my $details = JSON::PP->new->canonical->encode($m->{details});
ok(length($details) <= 8192, 'details within 8192 bytes as JSON')
    or diag length $details;
is($m->{details}{one}, '1' x 5000, 'the first value whole');
ok(length($m->{details}{two}) > 3000 && length($m->{details}{two}) < 5000,
    'the second cut to what is left');
ok(!exists $m->{details}{three}, 'the third left out: no room');

$t->worker_start;

ok(wait_for(sub { $t->row_count == 1 }, 30), 'stored');
is($t->sql_value('SELECT user_id FROM activity_logs'), substr($user, 0, 256),
    'with its cut userId');
is($r->llen('activity:dead'), 0, 'not dead-lettered');

# --- the worker cuts strings from other producers ---------------------------

my $big = make_event(endpoint => '/w' . ('x' x 3000), user => random_text(3000),
    agent => 'b' . ("\x{263a}" x 2000), method => 'M' x 40);
my $huge = make_event(endpoint => '/huge', details => { blob => 'z' x 9000 });
$t->push_events($big, $huge);

ok(wait_for(sub { $t->row_count('id = ?', $big->{id}) == 1 }, 30),
    'an event with a 3,000-character userId is stored');
my $row = $t->dbh->selectrow_hashref(
    'SELECT * FROM activity_logs WHERE id = ?', undef, $big->{id});
is($row->{user_id}, substr($big->{userId}, 0, 256), 'userId cut to 256');
is($row->{user_agent}, 'b' . ("\x{263a}" x 341),
    'userAgent cut to 1024 bytes at a character boundary');
is(length $row->{endpoint}, 2048, 'endpoint cut to 2048');
is($row->{method}, 'M' x 32, 'method cut to 32');

ok(wait_for(sub { $r->llen('activity:dead') == 1 }, 30),
    'an event whose details exceed 8192 bytes is dead-lettered');
my $letter = from_json($r->lindex('activity:dead', 0));
is(from_json($letter->{event})->{id}, $huge->{id}, 'that event');
like($letter->{error}, qr/metadata\.details is larger than 8192 bytes/,
    'the letter names the field');
is($letter->{attempts}, 1, 'at once');

# --- ingest: 400 naming the field -----------------------------------------

sub ingest {
    my ($event) = @_;
    my $res = $t->http(POST => '/ingest',
        headers => { 'Content-Type' => 'application/json' },
        content => to_json($event));
    my $body = eval { from_json($res->{content}) } || {};
    return ($res->{status}, join ' | ', map { @{ $_->{errors} } }
        @{ $body->{items} || [] });
}

my @cases = (
    [ { userId => 'u' x 3000 }, 'userId must be a string of at most 256 bytes, or null' ],
    [ { metadata => { userAgent => 'a' x 1025 } },
        'metadata.userAgent must be a string of at most 1024 bytes' ],
    [ { metadata => { endpoint => '/' x 2049 } },
        'metadata.endpoint must be a string of at most 2048 bytes' ],
    [ { metadata => { method => 'M' x 33 } },
        'metadata.method must be a string of at most 32 bytes' ],
    [ { metadata => { details => { x => 'd' x 8200 } } },
        'metadata.details must be at most 8192 bytes as JSON' ],
    [ { userId => "\x{e9}" x 129 },
        'userId must be a string of at most 256 bytes, or null' ],
);

for my $c (@cases) {
    my ($status, $errors) = ingest({ eventType => 'BIG', %{ $c->[0] } });
    is($status, 400, "ingest refuses: $c->[1]");
    is($errors, $c->[1], '  naming the field');
}

my ($status) = ingest({ eventType => 'AT_LIMITS', userId => "\x{e9}" x 128,
    metadata => { userAgent => 'a' x 1024, endpoint => '/' x 2048,
        method => 'M' x 32, details => { x => 'd' x 8184 } } });
is($status, 202, 'ingest takes every field at its limit');

ok(wait_for(sub { $t->row_count("action = 'AT_LIMITS'") == 1 }, 30),
    'and the worker stores it');
is($t->sql_value("SELECT user_id FROM activity_logs WHERE action = 'AT_LIMITS'"),
    "\x{e9}" x 128, 'uncut');

$t->done;
