#!/usr/bin/perl

# activity_status: Prometheus text exposition for the whole nginx
# instance. The page parses (HELP/TYPE well-formed, one TYPE a family,
# samples grouped under it); counters move with traffic summed over two
# worker processes (tracked, queued, ingested); auth refusals are counted
# by reason; dashboard connections are a gauge; redis_connected follows
# Redis going down and coming back; allow/deny restricts the page.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(hmac_sha384);
use HTTP::Tiny;
use IO::Socket::INET;
use MIME::Base64 qw(encode_base64);
use POSIX ();
use Test::More;
use ActivityPrometheus qw(parse_prometheus);
use ActivityTest qw(wait_for jwt_hs256 jwt_unsigned to_json);

my $t = ActivityTest->new(needs => [qw(module redis)]);

# reuseport: the kernel spreads new connections over both worker
# processes, so every counter below is a sum over the two of them.

$t->write_conf(<<'EOF');
%%GLOBALS%%
worker_processes 2;

http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "status-secret";
    large_client_header_buffers 4 32k;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        listen 127.0.0.2:%%PORT%%;
        server_name localhost;

        location /api/ {
            activity_track on;
            add_header X-Pid $pid;
            return 200 "ok\n";
        }

        location = /ingest {
            activity_ingest;
        }

        location /private/ {
            activity_auth_jwt role=admin;
            alias %%TESTDIR%%/html/;
        }

        location = /ws {
            activity_dashboard websocket;
        }

        location = /metrics {
            allow 127.0.0.1;
            allow ::1;
            deny all;
            activity_status;
        }
    }
}
EOF

mkdir $t->dir . '/html' or die "mkdir: $!";
{
    open my $fh, '>', $t->dir . '/html/index.html' or die "$!";
    print $fh "private\n";
}

$t->redis_start;
$t->nginx_start;

my $secret = 'status-secret';
my $workers = 2;

# --- the exposition format ---------------------------------------------


sub scrape {
    my $r = $t->http(GET => '/metrics');
    die "GET /metrics: $r->{status}\n" unless $r->{status} == 200;
    my ($s) = parse_prometheus($r->{content});
    return $s;
}

sub metric {
    my ($name) = @_;
    return scrape()->{$name};
}

# the checker itself finds what it should
for my $bad ("x 1", "# TYPE x counter\nx{a=b} 1\n",
    "# TYPE x counter\n# TYPE x counter\nx_total 1\n",
    "# TYPE y gauge\n# TYPE z gauge\ny 1\nz 1\ny{a=\"b\"} 2\n",
    "# TYPE x counter\nx 1\n", "w 1\n")
{
    my (undef, $e) = parse_prometheus($bad);
    ok(@$e, 'checker refuses ' . to_json($bad));
}

my $r = $t->http(GET => '/metrics');
is($r->{status}, 200, 'status page answers');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4\b},
    'Content-Type of the text exposition format');
my ($samples, $errors) = parse_prometheus($r->{content});
is_deeply($errors, [], 'parses as Prometheus text exposition')
    or diag($r->{content});

my @families = (
    [ 'activity_events_tracked_total', 'counter', [''] ],
    [ 'activity_events_ingested_total', 'counter', [''] ],
    [ 'activity_events_queued_total', 'counter', [''] ],
    [ 'activity_events_dropped_total', 'counter', [''] ],
    [ 'activity_events_buffered', 'gauge', [''] ],
    [ 'activity_redis_connected', 'gauge',
        [ map { qq({connection="$_"}) } qw(queue subscriber) ] ],
    [ 'activity_redis_reconnects_total', 'counter',
        [ map { qq({connection="$_"}) } qw(queue subscriber) ] ],
    [ 'activity_pubsub_messages_total', 'counter', [''] ],
    [ 'activity_frames_broadcast_total', 'counter', [''] ],
    [ 'activity_frames_deflated_total', 'counter', [''] ],
    [ 'activity_dashboard_connections', 'gauge',
        [ map { qq({protocol="$_"}) } qw(websocket socketio) ] ],
    [ 'activity_dashboard_clients_dropped_total', 'counter',
        [ '{reason="slow"}' ] ],
    [ 'activity_auth_refusals_total', 'counter',
        [ map { qq({reason="$_"}) } qw(no_token too_long invalid_token
            wrong_algorithm expired not_yet_valid missing_role no_key) ] ],
);

for my $f (@families) {
    my ($name, $type, $series) = @$f;
    like($r->{content}, qr/^# TYPE \Q$name\E \Q$type\E$/m, "$name: $type");
    like($r->{content}, qr/^# HELP \Q$name\E \S/m, "$name: HELP");
    my @missing = grep { !defined $samples->{"$name$_"} } @$series;
    is_deeply(\@missing, [], "$name: every series present");
}

is($t->http(POST => '/metrics', content => 'x')->{status}, 405,
    'POST to the status page: 405');
my $head = $t->http(HEAD => '/metrics');
is($head->{status}, 200, 'HEAD answers');
is($head->{content} // '', '', 'HEAD without a body');

# --- allow/deny ----------------------------------------------------------

# A request from 127.0.0.2, which is loopback but not in the allow list.
sub get_from {
    my ($local, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.2',
        PeerPort => $t->port('http'), LocalAddr => $local, Timeout => 10)
        or return "connect: $!";
    print $s "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";
    local $/;
    my $res = <$s> // '';
    return $res;
}

like(get_from('127.0.0.2', '/metrics'), qr{^HTTP/1\.[01] 403 },
    'status page refused to an address outside the allow list');
like(get_from('127.0.0.1', '/metrics'), qr{^HTTP/1\.[01] 200 },
    'and answered from 127.0.0.1 on that same listener');

# --- Redis connections ---------------------------------------------------

sub connected {
    my ($conn, $want) = @_;
    return wait_for(sub {
        my $v = metric(qq(activity_redis_connected{connection="$conn"}));
        defined $v && $v == $want;
    }, 20);
}

ok(connected('queue', $workers),
    "redis_connected{queue} = $workers worker processes");
ok(connected('subscriber', $workers),
    "redis_connected{subscriber} = $workers worker processes");

# --- counters move with traffic ------------------------------------------

my $before = scrape();

my $n = 200;
my $clients = 4;
my @pids;
pipe(my $rd, my $wr) or die "pipe: $!";
for my $c (0 .. $clients - 1) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $rd;
        # a new connection for every request: reuseport spreads them
        my $ua = HTTP::Tiny->new(timeout => 10, keep_alive => 0);
        my ($bad, %pids) = (0);
        for (my $i = $c; $i < $n; $i += $clients) {
            my $res = $t->http(GET => "/api/items/$i", ua => $ua);
            $bad++ unless $res->{status} == 200;
            $pids{ $res->{headers}{'x-pid'} // '?' } = 1;
        }
        print $wr join(' ', $bad, keys %pids), "\n";
        close $wr;
        POSIX::_exit(0);
    }
    push @pids, $pid;
}
close $wr;
my ($bad, %nginx_pids) = (0);
while (my $l = <$rd>) {
    my ($b, @p) = split ' ', $l;
    $bad += $b;
    $nginx_pids{$_} = 1 for @p;
}
waitpid($_, 0) for @pids;

is($bad, 0, "$n tracked requests answered 200");
is(scalar keys %nginx_pids, $workers,
    "the requests were served by both worker processes");

sub delta {
    my ($name, $after) = @_;
    return ($after // scrape())->{$name} - ($before->{$name} // 0);
}

ok(wait_for(sub {
    delta('activity_events_queued_total') >= $n
        && metric('activity_events_buffered') == 0;
}, 15), 'queued events acknowledged, nothing left buffered');

my $after = scrape();
is(delta('activity_events_tracked_total', $after), $n,
    "events_tracked_total rose by $n");
is(delta('activity_events_queued_total', $after), $n,
    "events_queued_total rose by $n");
is($t->redis->llen('activity:events'), $n + 0, "$n events in Redis");
is(delta('activity_events_dropped_total', $after), 0, 'none dropped');
is(delta('activity_events_ingested_total', $after), 0, 'none ingested');

# ingested events count as ingested and queued, not tracked

$before = scrape();
$r = $t->http(POST => '/ingest',
    headers => { 'Content-Type' => 'application/json' },
    content => to_json([ map { { eventType => 'STATUS_TEST' } } 1 .. 3 ]));
is($r->{status}, 202, 'ingest answers 202') or diag($r->{content});
ok(wait_for(sub { delta('activity_events_queued_total') >= 3 }, 15),
    'ingested events queued');
$after = scrape();
is(delta('activity_events_ingested_total', $after), 3,
    'events_ingested_total rose by 3');
is(delta('activity_events_queued_total', $after), 3,
    'events_queued_total rose by 3');
is(delta('activity_events_tracked_total', $after), 0,
    'events_tracked_total unchanged by ingest');

# --- auth refusals by reason ---------------------------------------------

sub b64url {
    my $s = encode_base64($_[0], '');
    $s =~ tr{+/}{-_};
    $s =~ s/=+$//;
    return $s;
}

my $now = time;
my %ok = (sub => 'ops', role => 'admin', exp => $now + 600);
my $hs384 = do {
    my $in = b64url(to_json({ alg => 'HS384', typ => 'JWT' })) . '.'
        . b64url(to_json(\%ok));
    $in . '.' . b64url(hmac_sha384($in, $secret));
};

# [ reason, token (undef: none), status ]
my @refusals = (
    [ 'no_token', undef, 401 ],
    [ 'too_long', 'x' x 9000, 401 ],
    [ 'invalid_token', jwt_hs256('not-the-secret', \%ok), 401 ],
    [ 'invalid_token', 'not.a.token', 401 ],
    [ 'wrong_algorithm', $hs384, 401 ],
    [ 'expired', jwt_hs256($secret, { %ok, exp => $now - 60 }), 401 ],
    [ 'not_yet_valid', jwt_hs256($secret, { %ok, nbf => $now + 600 }),
        401 ],
    [ 'missing_role', jwt_hs256($secret, { %ok, role => 'viewer' }), 403 ],
);

$before = scrape();
my %want;
for my $c (@refusals) {
    my ($reason, $token, $status) = @$c;
    my $res = $t->http(GET => '/private/', headers => defined $token
        ? { Authorization => "Bearer $token" } : {});
    is($res->{status}, $status, "$reason: $status");
    $want{$reason}++;
}
is($t->http(GET => '/private/', headers => {
    Authorization => 'Bearer ' . jwt_hs256($secret, \%ok) })->{status},
    200, 'a valid token passes');

$after = scrape();
for my $reason (qw(no_token too_long invalid_token wrong_algorithm expired
    not_yet_valid missing_role no_key))
{
    my $name = qq(activity_auth_refusals_total{reason="$reason"});
    is(delta($name, $after), $want{$reason} // 0,
        "auth_refusals_total{reason=\"$reason\"} rose by "
        . ($want{$reason} // 0));
}

# --- dashboard connections -----------------------------------------------

sub ws_open {
    my ($token) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port('http'), Timeout => 10) or die "connect: $!";
    print $s "GET /ws?token=$token HTTP/1.1\r\nHost: localhost\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        . "Sec-WebSocket-Version: 13\r\n\r\n";
    my $head = '';
    while ($head !~ /\r\n\r\n/) {
        my $n = sysread($s, $head, 1, length $head);
        last unless $n;
    }
    return ($s, $head);
}

my $ws_name = 'activity_dashboard_connections{protocol="websocket"}';
my @ws;
for (1 .. 3) {
    my ($s, $head) = ws_open(jwt_hs256($secret, \%ok));
    like($head, qr{^HTTP/1\.1 101 }, "dashboard $_ upgraded");
    push @ws, $s;
}
ok(wait_for(sub { metric($ws_name) == 3 }, 10),
    'dashboard_connections{websocket} = 3 with 3 open')
    or diag(metric($ws_name));
is(metric('activity_dashboard_connections{protocol="socketio"}'), 0,
    'dashboard_connections{socketio} = 0');
close $_ for splice @ws, 0, 2;
ok(wait_for(sub { metric($ws_name) == 1 }, 10),
    'dashboard_connections{websocket} = 1 after 2 closed')
    or diag(metric($ws_name));

# --- Redis down and back -------------------------------------------------

$before = scrape();
$t->redis_stop;

ok(connected('queue', 0), 'redis_connected{queue} = 0 while Redis is down');
ok(connected('subscriber', 0),
    'redis_connected{subscriber} = 0 while Redis is down');

$t->http(GET => "/api/down/$_") for 1 .. 5;
ok(wait_for(sub { metric('activity_events_buffered') == 5 }, 10),
    'events_buffered = 5 while Redis is down')
    or diag(metric('activity_events_buffered'));

ok(wait_for(sub {
    my $s = scrape();
    return !grep { delta(qq(activity_redis_reconnects_total{connection="$_"}),
        $s) < $workers } qw(queue subscriber);
}, 15), 'reconnect attempts counted while Redis is down');
$t->redis_start;

ok(connected('queue', $workers), "redis_connected{queue} = $workers again");
ok(connected('subscriber', $workers),
    "redis_connected{subscriber} = $workers again");
ok(wait_for(sub { metric('activity_events_buffered') == 0 }, 15),
    'buffered events sent after Redis came back');

$after = scrape();
for my $conn (qw(queue subscriber)) {
    my $name = qq(activity_redis_reconnects_total{connection="$conn"});
    cmp_ok(delta($name, $after), '>=', $workers,
        "redis_reconnects_total{$conn} rose by at least $workers");
}
is(delta('activity_events_queued_total', $after), 5,
    'the 5 buffered events counted as queued once sent');

close $_ for @ws;

$t->done;
