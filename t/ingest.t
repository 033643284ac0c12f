#!/usr/bin/perl

# activity_ingest: POSTed events, one object or an array of 1..1000,
# JSON only (415), POST only (405), body bounded by client_max_body_size
# and activity_ingest_max_body (413), events by activity_ingest_max_events
# (413). Missing id (a UUIDv7) and timestamp are filled in; every kind of
# invalid input is refused with 400 and per-item reasons, and nothing of
# that request is queued (checked on the Redis list while no worker
# consumes it). Behind activity_auth_jwt role=service. Finally, with the
# worker running, ingested events are stored in activity_logs.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for jwt_hs256 uuid iso_time to_json from_json);

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "ingest-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        client_max_body_size 1m;

        location = /events {
            activity_ingest;
        }

        location = /events/small {
            client_max_body_size 1k;
            activity_ingest;
        }

        location = /events/tiny {
            activity_ingest_max_body 300;
            activity_ingest_max_events 3;
            activity_ingest;
        }

        location = /api/events {
            activity_auth_jwt role=service;
            activity_ingest;
        }
    }
}
EOF

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->nginx_start;

my $queue = $t->queue;
my $json_type = { 'Content-Type' => 'application/json' };

sub post {
    my ($body, %o) = @_;
    my $r = $t->http(POST => $o{path} // '/events',
        headers => $o{headers} // $json_type,
        content => ref $body ? to_json($body) : $body);
    $r->{json} = eval { from_json($r->{content}) } if $r->{content};
    return $r;
}

my $marks = 0;

# Empties the queue, runs $code, then posts a marker event and waits for
# it: one nginx worker process queues in order, so what $code queued is
# in the list by then. Returns the events before the marker.
sub queued_by {
    my ($code) = @_;
    $t->redis->del($queue);
    my $r = $code->();
    my $mark = ++$marks;
    my $m = post({ eventType => 'INGEST_MARKER', userId => "m$mark" });
    die "marker refused: $m->{status} $m->{content}"
        unless $m->{status} == 202;
    my $seen = wait_for(sub {
        grep { ($_->{userId} // '') eq "m$mark" } $t->queued_events;
    }, 15);
    die 'the marker event never reached the queue' unless $seen;
    my @events = grep { ($_->{eventType} // '') ne 'INGEST_MARKER' }
        $t->queued_events;
    $t->redis->del($queue);
    return ($r, @events);
}

my $uuid_re = qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-
    [0-9a-f]{12}$/xi;
my $uuid7_re = qr/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-
    [0-9a-f]{12}$/x;
my $iso_re = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

# --- valid input ---------------------------------------------------------

my ($r, @q) = queued_by(sub { post({ eventType => 'ORDER_PLACED' }) });
is($r->{status}, 202, 'one event object: 202');
like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON answer');
is_deeply($r->{json}, { accepted => 1 }, '{"accepted":1}');
is(scalar @q, 1, 'one event queued');
like($q[0]{id}, $uuid7_re, 'a missing id is filled with a UUIDv7');
like($q[0]{timestamp}, $iso_re, 'a missing timestamp is filled');
ok(abs(epoch($q[0]{timestamp}) - time) < 60, 'with the current time');
is($q[0]{eventType}, 'ORDER_PLACED', 'eventType kept');

sub epoch {
    my ($iso) = @_;
    require Time::Local;
    my @p = $iso =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)/ or return 0;
    return Time::Local::timegm($p[5], $p[4], $p[3], $p[2], $p[1] - 1,
        $p[0]);
}

my $id = uuid();
my $full = {
    id => $id,
    eventType => 'PRODUCT_CREATED',
    userId => 'u-1',
    timestamp => '2026-11-27T12:00:00.123Z',
    metadata => {
        ipAddress => '203.0.113.7', userAgent => 'shop/2.1',
        endpoint => '/products', method => 'POST', status => 201,
        durationMs => 12.5, details => { sku => 'A-1', qty => 2,
            tags => ['x'] },
    },
};
($r, @q) = queued_by(sub { post($full) });
is($r->{status}, 202, 'a full event: 202');
is_deeply($q[0], $full, 'queued exactly as given (id, timestamp kept)');

my @batch = (
    { eventType => 'A' },
    { eventType => 'B' . ('_' x 63), userId => undef },
    { eventType => 'C1', userId => 'x', metadata => {} },
    { eventType => 'D', metadata => { ipAddress => '2001:db8::1',
        status => 100, durationMs => 0 } },
    { eventType => 'E', metadata => { status => 599, details => {} } },
    { eventType => 'F', timestamp => '2026-11-27T12:00:00+01:00' },
    { eventType => 'G', id => uc uuid() },
);
($r, @q) = queued_by(sub { post(\@batch) });
is($r->{status}, 202, 'an array of valid variants: 202')
    or diag($r->{content});
is_deeply($r->{json}, { accepted => scalar @batch },
    'accepted counts them all');
is_deeply([ map { $_->{eventType} } @q ], [ map { $_->{eventType} } @batch ],
    'all queued, in order');
is(scalar(grep { $_->{id} =~ $uuid_re } @q), scalar @batch,
    'every one has an id');

($r, @q) = queued_by(sub { post({ eventType => 'CHARSET' },
    headers => { 'Content-Type' => 'application/json; charset=utf-8' }) });
is($r->{status}, 202, 'Content-Type with charset: 202');
is(scalar @q, 1, '  queued');

my @thousand = map { { eventType => 'BULK', userId => "b$_" } } 1 .. 1000;
($r, @q) = queued_by(sub { post(\@thousand) });
is($r->{status}, 202, '1000 events: 202');
is_deeply($r->{json}, { accepted => 1000 }, '  accepted 1000');
is(scalar @q, 1000, '  1000 queued');
my %ids = map { $_->{id} => 1 } @q;
is(scalar keys %ids, 1000, '  1000 distinct ids filled in');

# --- method, type, size --------------------------------------------------

for my $m (qw(GET PUT DELETE PATCH)) {
    ($r, @q) = queued_by(sub {
        $t->http($m => '/events', headers => $json_type,
            content => $m eq 'GET' ? undef : '{"eventType":"X"}');
    });
    is($r->{status}, 405, "$m: 405");
    is(scalar @q, 0, "$m: nothing queued");
}

for my $c ([ 'no Content-Type', {} ],
    [ 'text/plain', { 'Content-Type' => 'text/plain' } ],
    [ 'form', { 'Content-Type' => 'application/x-www-form-urlencoded' } ])
{
    my ($name, $h) = @$c;
    ($r, @q) = queued_by(sub {
        post('{"eventType":"X"}', headers => $h) });
    is($r->{status}, 415, "$name: 415");
    is(scalar @q, 0, "$name: nothing queued");
}

my $big = to_json([ map { { eventType => 'BIG', userId => 'x' x 40 } }
    1 .. 30 ]);
cmp_ok(length $big, '>', 1024, 'a body over 1k');
($r, @q) = queued_by(sub { post($big, path => '/events/small') });
is($r->{status}, 413, 'over client_max_body_size: 413');
is(scalar @q, 0, '  nothing queued');
($r, @q) = queued_by(sub {
    post('[{"eventType":"SMALL"}]', path => '/events/small') });
is($r->{status}, 202, 'within client_max_body_size: 202');

# --- the work of one request is bounded -----------------------------------

# activity_ingest_max_body (default 64k): the body is parsed in one go in
# the event loop, so its size bounds what other connections wait for
my $mb = to_json([ map { { eventType => 'BULK', userId => 'u' x 200 } }
    1 .. 1000 ]);
$mb .= ' ' x (1024 * 1024 - length $mb);
($r, @q) = queued_by(sub { post($mb) });
is($r->{status}, 413, 'a 1 MB body, within client_max_body_size: 413');
is(scalar @q, 0, '  nothing queued');

my $just = to_json([ { eventType => 'JUST' } ]);
$just .= ' ' x (64 * 1024 - length $just);
($r, @q) = queued_by(sub { post($just) });
is($r->{status}, 202, 'a body of exactly 64k: 202');
($r, @q) = queued_by(sub { post("$just ") });
is($r->{status}, 413, '64k + 1 byte: 413');

my $three = [ map { { eventType => 'T', userId => "t$_" } } 1 .. 3 ];
($r, @q) = queued_by(sub { post($three, path => '/events/tiny') });
is($r->{status}, 202, 'activity_ingest_max_events 3: three events 202');
is(scalar @q, 3, '  three queued');

($r, @q) = queued_by(sub {
    post([ @$three, { eventType => 'T' } ], path => '/events/tiny') });
is($r->{status}, 413, 'four events: 413');
is($r->{json}{error}, 'too many events: 4, at most 3 a request '
    . '(activity_ingest_max_events)', '  saying so');
is(scalar @q, 0, '  nothing queued');

($r, @q) = queued_by(sub {
    post(to_json([ { eventType => 'T', userId => 'x' x 300 } ]),
        path => '/events/tiny') });
is($r->{status}, 413, 'activity_ingest_max_body 300: a longer body 413');
is(scalar @q, 0, '  nothing queued');

# a chunked body has no Content-Length to check first
my $chunk = to_json([ { eventType => 'T', userId => 'y' x 300 } ]);
($r, @q) = queued_by(sub {
    $t->http_raw("POST /events/tiny HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: application/json\r\nConnection: close\r\n"
        . "Transfer-Encoding: chunked\r\n\r\n"
        . sprintf('%x', length $chunk) . "\r\n$chunk\r\n0\r\n\r\n") });
like($r, qr{^HTTP/1\.1 413 }, 'the same body chunked: 413');
is(scalar @q, 0, '  nothing queued');

($r, @q) = queued_by(sub {
    post(to_json([ map { { eventType => 'BULK' } } 1 .. 1001 ])) });
is($r->{status}, 413, '1001 events (the default limit is 1000): 413');
like($r->{json}{error} // '', qr/at most 1000 a request/, '  saying so');

my ($rc, $out) = $t->nginx_test(<<'EOF2');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%
    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    server {
        listen 127.0.0.1:%%PORT_conf%%;
        location / { activity_ingest_max_events 0; activity_ingest; }
    }
}
EOF2
isnt($rc, 0, 'nginx -t refuses activity_ingest_max_events 0');
like($out, qr/"activity_ingest_max_events" must be at least 1/,
    '  naming the directive');

# --- invalid as a whole --------------------------------------------------

my @whole = (
    [ 'invalid JSON', '{"eventType":', qr/invalid JSON/ ],
    [ 'trailing garbage', '{"eventType":"X"} x', qr/invalid JSON/ ],
    [ 'empty body', '', qr/invalid JSON/ ],
    [ 'duplicate keys', '{"eventType":"X","eventType":"Y"}',
        qr/invalid JSON/ ],
    [ 'a \u0000 escape (no store holds NUL)',
        '{"eventType":"X","userId":"a\\u0000b"}', qr/invalid JSON/ ],
    [ 'an empty array', '[]', qr/1 to 1000/ ],
    # jansson refuses a bare scalar as JSON text: either reason will do
    [ 'a string', '"USER_LOGIN"', qr/invalid JSON|1 to 1000/ ],
    [ 'a number', '42', qr/invalid JSON|1 to 1000/ ],
    [ 'null', 'null', qr/invalid JSON|1 to 1000/ ],
);

for my $c (@whole) {
    my ($name, $body, $re) = @$c;
    ($r, @q) = queued_by(sub { post($body) });
    is($r->{status}, 400, "$name: 400");
    like($r->{json}{error} // '', $re, "$name: says why")
        or diag($r->{content});
    is(scalar @q, 0, "$name: nothing queued");
}
($r) = queued_by(sub { post('{"eventType":') });
ok(defined $r->{json}{reason} && length $r->{json}{reason},
    'invalid JSON: a reason from the parser');

# --- invalid items: each refused, nothing queued --------------------------

my %meta_ok = (eventType => 'ITEM');
my @items = (
    [ 'no eventType', { userId => 'x' }, qr/eventType/ ],
    [ 'lowercase eventType', { eventType => 'user_login' }, qr/eventType/ ],
    [ 'eventType starting with a digit', { eventType => '1ABC' },
        qr/eventType/ ],
    [ 'eventType with a dash', { eventType => 'A-B' }, qr/eventType/ ],
    [ 'eventType of 65 characters', { eventType => 'A' x 65 },
        qr/eventType/ ],
    [ 'empty eventType', { eventType => '' }, qr/eventType/ ],
    [ 'eventType a number', { eventType => 7 }, qr/eventType/ ],
    [ 'id not a UUID', { %meta_ok, id => 'abc' }, qr/\bid\b/ ],
    [ 'id a number', { %meta_ok, id => 12 }, qr/\bid\b/ ],
    [ 'timestamp not ISO-8601', { %meta_ok, timestamp => 'yesterday' },
        qr/timestamp/ ],
    [ 'timestamp Feb 30', { %meta_ok,
        timestamp => '2026-02-30T00:00:00Z' }, qr/timestamp/ ],
    [ 'timestamp a number', { %meta_ok, timestamp => 1764244800 },
        qr/timestamp/ ],
    [ 'userId an object', { %meta_ok, userId => { a => 1 } }, qr/userId/ ],
    [ 'userId a boolean', { %meta_ok, userId => JSON::PP::true() },
        qr/userId/ ],
    [ 'metadata an array', { %meta_ok, metadata => [] }, qr/metadata/ ],
    [ 'metadata a string', { %meta_ok, metadata => 'x' }, qr/metadata/ ],
    [ 'ipAddress not an address', { %meta_ok,
        metadata => { ipAddress => 'not-an-ip' } }, qr/ipAddress/ ],
    [ 'ipAddress 999.1.1.1', { %meta_ok,
        metadata => { ipAddress => '999.1.1.1' } }, qr/ipAddress/ ],
    [ 'ipAddress a number', { %meta_ok,
        metadata => { ipAddress => 127 } }, qr/ipAddress/ ],
    [ 'status 99', { %meta_ok, metadata => { status => 99 } },
        qr/status/ ],
    [ 'status 600', { %meta_ok, metadata => { status => 600 } },
        qr/status/ ],
    [ 'status a string', { %meta_ok, metadata => { status => '200' } },
        qr/status/ ],
    [ 'status a fraction', { %meta_ok, metadata => { status => 200.5 } },
        qr/status/ ],
    [ 'durationMs negative', { %meta_ok,
        metadata => { durationMs => -1 } }, qr/durationMs/ ],
    [ 'durationMs a string', { %meta_ok,
        metadata => { durationMs => '1' } }, qr/durationMs/ ],
    [ 'details an array', { %meta_ok, metadata => { details => [1] } },
        qr/details/ ],
    [ 'details a string', { %meta_ok, metadata => { details => 'x' } },
        qr/details/ ],
    [ 'userAgent a number', { %meta_ok, metadata => { userAgent => 5 } },
        qr/userAgent/ ],
    [ 'endpoint an object', { %meta_ok, metadata => { endpoint => {} } },
        qr/endpoint/ ],
    [ 'method a number', { %meta_ok, metadata => { method => 1 } },
        qr/method/ ],
    [ 'an unknown field', { %meta_ok, action => 'x' }, qr/action/ ],
    [ 'an unknown metadata field', { %meta_ok,
        metadata => { referer => 'x' } }, qr/referer/ ],
    [ 'an item that is not an object', 5, qr/object/ ],
    [ 'an item that is null', undef, qr/object/ ],
);

my $good = { eventType => 'GOOD', userId => 'g' };

for my $c (@items) {
    my ($name, $item, $re) = @$c;

    # alone, and as the second of three among valid events
    for my $shape ('alone', 'in an array') {
        my $body = $shape eq 'alone' ? $item : [ $good, $item, $good ];
        next if $shape eq 'alone' && !ref $item;
        my $index = $shape eq 'alone' ? 0 : 1;
        ($r, @q) = queued_by(sub { post($body) });
        is($r->{status}, 400, "$name ($shape): 400");
        my $j = $r->{json} // {};
        is($j->{error}, 'invalid events', "$name ($shape): invalid events");
        my @it = @{ $j->{items} || [] };
        is_deeply([ map { $_->{index} } @it ], [$index],
            "$name ($shape): item $index refused, the others not")
            or diag($r->{content});
        like(join(' | ', @{ $it[0]{errors} || [] }), $re,
            "$name ($shape): the reason names the field")
            or diag($r->{content});
        is(scalar @q, 0, "$name ($shape): nothing queued");
    }
}

# several bad items, several reasons each

($r, @q) = queued_by(sub { post([
    { eventType => 'bad', id => 'x', metadata => { status => 1 } },
    $good,
    { eventType => 'OK', extra => 1 },
    $good,
]) });
is($r->{status}, 400, 'two bad items among good ones: 400');
my @it = @{ $r->{json}{items} || [] };
is_deeply([ map { $_->{index} } @it ], [0, 2], 'items 0 and 2 refused');
cmp_ok(scalar @{ $it[0]{errors} || [] }, '>=', 3,
    'item 0: a reason for each of its three faults')
    or diag($r->{content});
is(scalar @q, 0, 'nothing queued');

my @late = (@thousand[0 .. 998], { eventType => 'late' });
($r, @q) = queued_by(sub { post(\@late) });
is($r->{status}, 400, 'the 1000th of 1000 invalid: 400');
is_deeply([ map { $_->{index} } @{ $r->{json}{items} || [] } ], [999],
    '  index 999');
is(scalar @q, 0, '  none of the 999 valid ones queued');

# --- behind activity_auth_jwt role=service -------------------------------

my $secret = 'ingest-secret';
my $service = jwt_hs256($secret, { sub => 'billing', role => 'service',
    exp => time + 600 });
my $admin = jwt_hs256($secret, { sub => 'alice', role => 'admin',
    exp => time + 600 });
my $roles = jwt_hs256($secret, { sub => 'shop', roles => ['x', 'service'],
    exp => time + 600 });

for my $c (
    [ 'no token', undef, 401, 0 ],
    [ 'an admin-only token', $admin, 403, 0 ],
    [ 'a service token', $service, 202, 1 ],
    [ 'roles containing service', $roles, 202, 1 ],
    [ 'a bad signature', jwt_hs256('nope', { sub => 'billing',
        role => 'service' }), 401, 0 ],
) {
    my ($name, $token, $status, $n) = @$c;
    ($r, @q) = queued_by(sub {
        post({ eventType => 'INVOICE_PAID' }, path => '/api/events',
            headers => { %$json_type, $token
                ? (Authorization => "Bearer $token") : () });
    });
    is($r->{status}, $status, "/api/events with $name: $status");
    is(scalar @q, $n, "/api/events with $name: $n queued");
}

# --- stored by the worker ------------------------------------------------

$t->redis->del($queue);
is($t->row_count, 0, 'no rows before the worker runs');

my @store = (
    { id => uuid(), eventType => 'STORED_ONE', userId => 's1',
        timestamp => iso_time(time - 30), metadata => {
            ipAddress => '198.51.100.23', userAgent => 'svc/1',
            endpoint => '/pay', method => 'POST', status => 201,
            durationMs => 3.25, details => { amount => 10 } } },
    { id => uuid(), eventType => 'STORED_TWO', userId => undef,
        metadata => { ipAddress => '2001:db8::7' } },
    { eventType => 'STORED_THREE' },
);
$r = post(\@store, path => '/api/events', headers => { %$json_type,
    Authorization => "Bearer $service" });
is($r->{status}, 202, 'three events for the worker: 202');

$t->worker_start;
ok(wait_for(sub { $t->row_count("action LIKE 'STORED_%'") == 3 }, 30),
    'the worker stored the three ingested events')
    or diag('rows: ' . $t->row_count);

my $row = $t->sql_rows('SELECT id::text AS id, user_id, host(ip_address)'
    . ' AS ip, user_agent, endpoint, method, status, duration_ms,'
    . " details->>'amount' AS amount, created_at = ?::timestamptz AS at"
    . ' FROM activity_logs WHERE action = ?', $store[0]{timestamp},
    'STORED_ONE')->[0] // {};
is_deeply($row, { id => $store[0]{id}, user_id => 's1',
    ip => '198.51.100.23', user_agent => 'svc/1', endpoint => '/pay',
    method => 'POST', status => 201, duration_ms => 3.25, amount => 10,
    at => 1 }, 'every field stored as posted');

$row = $t->sql_rows('SELECT id::text AS id, user_id, host(ip_address) AS ip'
    . ' FROM activity_logs WHERE action = ?', 'STORED_TWO')->[0] // {};
is_deeply($row, { id => $store[1]{id}, user_id => undef,
    ip => '2001:db8::7' }, 'null userId and an IPv6 address stored');

is($t->row_count("action = 'STORED_THREE' AND id IS NOT NULL"
    . " AND created_at > now() - interval '5 minutes'"), 1,
    'filled-in id and timestamp stored');
is($t->redis->llen('activity:dead'), 0, 'no dead letters');

$t->done;
