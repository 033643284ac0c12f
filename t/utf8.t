#!/usr/bin/perl

# Bytes that are not UTF-8 never keep a request out of the audit trail:
# the module writes every string of an event as valid UTF-8 (an invalid
# sequence becomes U+FFFD, one per maximal subpart), the worker repairs
# rather than refuses such bytes when a producer sends them all the same
# (and \u0000, which PostgreSQL cannot store), and ingest answers 400
# naming the field.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MIME::Base64 qw(encode_base64);
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

        location / {
            activity_track on;
            activity_user $remote_user;
            activity_meta header $http_x_meta;
            return 200;
        }

        # the body is read (proxied), so $request_body holds any bytes
        location = /body {
            activity_track on;
            activity_meta body $request_body;
            proxy_pass http://127.0.0.1:%%PORT%%/sink;
        }

        location = /sink {
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
my $R = "\x{FFFD}";

# --- the module: what it queues is valid UTF-8 ---------------------------

my $user = encode_base64("u\xFFv:pw", '');
like($t->http_raw("GET /p\xC3\xC3x\xFFy HTTP/1.0\r\nHost: localhost\r\n"
        . "User-Agent: ua\xC3\xC3\xFF\xF0\x9F\x98\r\n"
        . "X-Meta: m\xED\xA0\x80\r\n"
        . "Authorization: Basic $user\r\n\r\n"),
    qr{^HTTP/1\.1 200 }, 'a request with invalid UTF-8 is answered');

my $body = "a\x00b\xC3\xC3";
like($t->http_raw("POST /body HTTP/1.0\r\nHost: localhost\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body"),
    qr{^HTTP/1\.1 200 }, 'a body with NUL and invalid UTF-8 is answered');

ok(wait_for(sub { $r->llen('activity:events') >= 2 }, 15),
    'both requests queued');

my @raw = reverse $r->lrange('activity:events', 0, -1);
is(scalar(grep { my $s = $_; utf8::decode($s) } @raw), 2,
    'the queued events are valid UTF-8');
is(scalar(grep { defined eval { from_json($_) } } @raw), 2,
    'and valid JSON');
like($raw[1], qr/"body":"a\\u0000b\xEF\xBF\xBD\xEF\xBF\xBD"/,
    'NUL is escaped as \u0000, invalid bytes become U+FFFD');

# --- the worker stores them, repaired ------------------------------------

# pushed by a producer other than the module: raw invalid bytes, \u0000
# and a lone surrogate escape
my $pushed = make_event(endpoint => '/pushed', agent => 'PLACE_AGENT',
    details => { k => 'PLACE_DETAIL' });
my $text = to_json($pushed);
$text =~ s/PLACE_AGENT/x\xC3\xC3y\xFF/;
$text =~ s/PLACE_DETAIL/a\\u0000b\\ud800c\xE0\x80\xAF/;
$t->push_events($text);

$t->worker_start;

ok(wait_for(sub { $t->row_count == 3 }, 30), 'three rows stored');
is($r->llen('activity:dead'), 0, 'nothing dead-lettered');

my $row = $t->dbh->selectrow_hashref(
    "SELECT * FROM activity_logs WHERE endpoint LIKE '/p%'"
    . " AND endpoint <> '/pushed'");
is($row->{endpoint}, "/p${R}${R}x${R}y", 'endpoint: U+FFFD for each');
is($row->{user_agent}, "ua${R}${R}${R}${R}",
    'user agent: a truncated 4-byte sequence is one U+FFFD');
is($row->{user_id}, "u${R}v", 'userId ($remote_user)');
is($t->sql_value("SELECT details->>'header' FROM activity_logs"
    . " WHERE endpoint LIKE '/p%' AND endpoint <> '/pushed'"),
    "m${R}${R}${R}",
    'activity_meta value: a surrogate is three U+FFFD');

is($t->sql_value("SELECT details->>'body' FROM activity_logs"
    . " WHERE endpoint = '/body'"), "a${R}b${R}${R}",
    'NUL (\u0000) is stored as U+FFFD');

$row = $t->dbh->selectrow_hashref(
    "SELECT * FROM activity_logs WHERE endpoint = '/pushed'");
ok($row, 'the pushed event is stored');
is($row->{id}, $pushed->{id}, 'under its id');
is($row->{user_agent}, "x${R}${R}y${R}", 'raw invalid bytes repaired');
is($t->sql_value("SELECT details->>'k' FROM activity_logs"
    . " WHERE endpoint = '/pushed'"), "a${R}b${R}c${R}${R}${R}",
    'details: \u0000, a lone surrogate and an overlong form repaired');

# --- ingest: 400 naming the field ----------------------------------------

my $good = to_json({ eventType => 'GOOD' });
my $bad = qq({"eventType":"BAD","userId":"\xFF",)
    . qq("metadata":{"userAgent":"ok","details":{"note":"x\xC3\xC3"}}});
my $res = $t->http(POST => '/ingest',
    headers => { 'Content-Type' => 'application/json' },
    content => "[$good,$bad]");
is($res->{status}, 400, 'ingest: invalid UTF-8 is a 400');
my $answer = eval { from_json($res->{content}) } || {};
is($answer->{error}, "invalid events", "error: invalid events") or diag $res->{content};
is_deeply($answer->{items}, [ { index => 1, errors => [
        'userId is not valid UTF-8',
        'metadata.details.note is not valid UTF-8' ] } ],
    'the fields are named, with the event index');

$res = $t->http(POST => '/ingest',
    headers => { 'Content-Type' => 'application/json' },
    content => qq({"eventType":"BAD","metadata":{"\xFFkey":1}}));
is($res->{status}, 400, 'ingest: an invalid key');
like($res->{content}, qr/metadata \(a key\) is not valid UTF-8/,
    'named by the object that holds it');

$t->done;
