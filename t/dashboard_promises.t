#!/usr/bin/perl

# Dashboard promises of the README with no test elsewhere:
# - activity_dashboard_max_connections counts authenticated dashboards,
#   across the worker processes of an instance: more are refused with
#   503 at the handshake, or with a CONNECT_ERROR and 1013 for a Socket.IO
#   CONNECT; a closed dashboard frees its place;
# - activity_dashboard_max_pending: sockets still to authenticate are
#   counted apart, do not take those places, and more are refused (503);
# - heartbeats: a WebSocket ping (or an Engine.IO "2") every
#   activity_dashboard_ping_interval, announced in the Engine.IO open
#   packet, the next one a whole interval after the answer; a client that
#   answers stays, one that does not is closed after
#   activity_dashboard_ping_timeout; a Socket.IO client must send its
#   CONNECT within activity_dashboard_auth_timeout (1008 "no CONNECT");
# - a custom activity_dashboard_role;
# - Socket.IO: emitting "auth" with a fresh token extends the session;
#   without it the server says "token expired" and closes;
# - the snapshot holds the last 50 events (newest first) and the latest
#   stats;
# - activity_status counters that must move: pub/sub messages, frames
#   encoded once per protocol and message (not per connection), clients
#   dropped for not reading (more than activity_dashboard_queue bytes
#   waiting: close 1008 "too slow").
# Events and stats are PUBLISHed straight to the channels (no worker).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes ();
use ActivityTest qw(wait_for jwt_hs256 make_event to_json from_json);

my $t = ActivityTest->new(needs => [qw(module redis node)]);

my $conf = <<'EOF';
%%GLOBALS%%
worker_processes 1;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "dash-secret";
    MAX

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /ws-ping {
            activity_dashboard websocket;
            activity_dashboard_ping_interval 1s;
            activity_dashboard_ping_timeout 1s;
        }

        location /socket.io/ {
            activity_dashboard socketio;
            activity_dashboard_ping_interval 2s;
            activity_dashboard_ping_timeout 1s;
        }

        location /sio-quiet/ {
            activity_dashboard socketio;
            activity_dashboard_auth_timeout 60s;
        }

        location /sio-auth/ {
            activity_dashboard socketio;
            activity_dashboard_auth_timeout 1s;
            activity_dashboard_ping_interval 60s;
            activity_dashboard_ping_timeout 60s;
        }

        location /ws-pong {
            activity_dashboard websocket;
            activity_dashboard_ping_interval 2s;
            activity_dashboard_ping_timeout 60s;
        }

        location /ws {
            activity_dashboard websocket;
        }

        location /viewer {
            activity_dashboard websocket;
            activity_dashboard_role viewer;
        }

        location = /status {
            activity_status;
        }
    }
SLOW
}
EOF

# a narrow link for the client that does not read: nginx's send buffer
# fixed small, so a few large frames fill what the kernels hold
my $slow_server = <<'EOF';
    server {
        listen 127.0.0.1:%%PORT_slow%% sndbuf=8k;
        server_name localhost;

        location /ws-slow {
            activity_dashboard websocket;
            activity_dashboard_queue 4k;
        }
    }
EOF

$t->write_conf($conf =~ s/MAX//r =~ s/SLOW\n/$slow_server/r);
# two worker processes sharing the port (reuseport): the limit holds for
# the instance, across them
# (and apart at most 2 sockets still to authenticate)
my $max = "activity_dashboard_max_connections 2;\n"
    . "    activity_dashboard_max_pending 2;";
$t->write_conf($conf =~ s/SLOW\n//r =~ s/MAX/$max/r
    =~ s/listen 127\.0\.0\.1:%%PORT%%;/listen 127.0.0.1:%%PORT_max%% reuseport;/r
    =~ s/worker_processes 1;/worker_processes 2;/r, undef, 'max');

# the snapshot at start comes from the recent list: 70 events in it
$t->redis_start;
my @recent = map { make_event(endpoint => "/recent/$_") } 1 .. 70;
$t->redis->lpush('dashboard:events:recent', map { to_json($_) } @recent);

$t->nginx_start;
$t->nginx_start(name => 'max');

my $secret = 'dash-secret';
sub token {
    my (%c) = @_;
    return jwt_hs256($secret, { sub => 'dash', role => 'admin',
        exp => time + 600, %c });
}
my $token = token();

sub metric {
    my ($name, $labels) = @_;
    return $t->status_metric('/status', $name, $labels) // -1;
}

sub connections {
    my ($protocol) = @_;
    return metric('activity_dashboard_connections',
        "protocol=\"$protocol\"");
}

# A Socket.IO client on a raw socket: open packet, CONNECT, its reply.
sub sio_raw {
    my ($path, %o) = @_;
    my $c = $t->ws_raw("$path?EIO=4&transport=websocket");
    return ($c) unless ref $c;
    my $open = $c->next_text(qr/^0\{/, 10);
    return ($c, $open) if $o{no_connect};
    $c->send_text('40/dashboard,' . to_json({ token => $o{token} // $token }));
    my $reply = $c->next_text(qr/^4[04]\/dashboard/, 10);
    return ($c, $open, $reply);
}

# --- snapshot: the last 50 of the recent list, newest first -----------------

my $c = $t->ws_raw("/ws?token=$token");
my $snap = ref $c ? $c->next_text(qr/"snapshot"/, 10) : undef;
my $data = $snap ? from_json($snap)->{data} : {};
is(scalar @{ $data->{events} || [] }, 50, 'snapshot at start: 50 events');
is_deeply([ map { $_->{metadata}{endpoint} } @{ $data->{events} || [] } ],
    [ map { "/recent/$_" } reverse 21 .. 70 ],
    'the newest 50 of the recent list, newest first');
$c->close_socket if ref $c;

# --- metrics that move --------------------------------------------------------

ok(wait_for(sub { connections('websocket') == 0 }, 10),
    'no dashboard open');

my $ws1 = $t->ws_raw("/ws?token=$token");
my $ws2 = $t->ws_raw("/ws?token=$token");
my ($sio, undef, $sio_reply) = sio_raw('/sio-quiet/');
ok(ref $ws1 && $ws1->next_text(qr/"snapshot"/, 10), 'websocket 1 open');
ok(ref $ws2 && $ws2->next_text(qr/"snapshot"/, 10), 'websocket 2 open');
like($sio_reply // '', qr/^40\/dashboard,\{"sid"/, 'socketio open');
ok(ref $sio && $sio->next_text(qr/^42\/dashboard,\["snapshot"/, 10),
    'socketio snapshot');
is(connections('websocket'), 2, 'activity_dashboard_connections websocket');
is(connections('socketio'), 1, 'activity_dashboard_connections socketio');

my $msgs0 = metric('activity_pubsub_messages_total');
my $frames0 = metric('activity_frames_broadcast_total');

my $ev = make_event(endpoint => '/metrics/1');
$t->redis->publish('dashboard:events', to_json([$ev]));
ok($ws1->next_text(qr/"activity:new".*\Q$ev->{id}\E/, 10)
    && $ws2->next_text(qr/"activity:new".*\Q$ev->{id}\E/, 10)
    && $sio->next_text(qr/^42\/dashboard,\["activity:new".*\Q$ev->{id}\E/,
    10), 'all three dashboards get the event');
is(metric('activity_pubsub_messages_total'), $msgs0 + 1,
    'activity_pubsub_messages_total: +1 for the message');
is(metric('activity_frames_broadcast_total'), $frames0 + 2,
    'activity_frames_broadcast_total: +2, one frame per protocol'
    . ' for three connections');

$sio->close_socket;
ok(wait_for(sub { connections('socketio') == 0 }, 10),
    'the socketio dashboard is gone');
$frames0 = metric('activity_frames_broadcast_total');
$ev = make_event(endpoint => '/metrics/2');
$t->redis->publish('dashboard:events', to_json([$ev]));
ok($ws1->next_text(qr/\Q$ev->{id}\E/, 10)
    && $ws2->next_text(qr/\Q$ev->{id}\E/, 10), 'both websockets get it');
is(metric('activity_frames_broadcast_total'), $frames0 + 1,
    'activity_frames_broadcast_total: +1, one frame shared by two');

my $stats = { activeUsers => 7, apiRequestsPerMinute => 3,
    productsCreatedToday => 0, loginsPerHour => 0, logoutsPerHour => 0,
    timestamp => '2026-11-27T12:00:00.000Z' };
$msgs0 = metric('activity_pubsub_messages_total');
$t->redis->publish('dashboard:stats', to_json($stats));
ok($ws1->next_text(qr/"stats:update"/, 10), 'stats:update');
is(metric('activity_pubsub_messages_total'), $msgs0 + 1,
    'activity_pubsub_messages_total: +1 for a stats message');

# --- snapshot cap with live events ------------------------------------------

my @live = map { make_event(endpoint => "/live/$_") } 1 .. 60;
$t->redis->publish('dashboard:events', to_json([ @live[0 .. 29] ]));
$t->redis->publish('dashboard:events', to_json([ @live[30 .. 59] ]));
ok($ws1->next_text(qr/\Q$live[59]{id}\E/, 10), 'the 60 live events arrive');

$c = $t->ws_raw("/ws?token=$token");
$snap = ref $c ? $c->next_text(qr/"snapshot"/, 10) : undef;
$data = $snap ? from_json($snap)->{data} : {};
is_deeply([ map { $_->{metadata}{endpoint} } @{ $data->{events} || [] } ],
    [ map { "/live/$_" } reverse 11 .. 60 ],
    'a new snapshot: the last 50 events, newest first');
is_deeply($data->{stats}, $stats, 'and the latest stats');
$c->close_socket if ref $c;
$ws1->close_socket;
$ws2->close_socket;

# --- a client that does not read is dropped, and counted --------------------

# activity_dashboard_queue 4k: once a frame finds more than 4 KiB waiting
# for a client that stopped reading, it is dropped with 1008 "too slow"
my $slow = ActivityTest::RawWS->open($t->port('slow'),
    "/ws-slow?token=$token", rcvbuf => 4096);
ok(ref $slow && $slow->next_text(qr/"snapshot"/, 10),
    'a client that will not read connects and gets its snapshot');
my $dropped0 = metric('activity_dashboard_clients_dropped_total',
    'reason="slow"');
my $published = 0;
ok(wait_for(sub {
    $t->redis->publish('dashboard:events', to_json([make_event(
        endpoint => '/slow', details => { pad => 'x' x 32768 })]));
    $published++;
    metric('activity_dashboard_clients_dropped_total', 'reason="slow"')
        == $dropped0 + 1 || $published >= 500 }, 60, 0.1)
    && metric('activity_dashboard_clients_dropped_total', 'reason="slow"')
        == $dropped0 + 1,
    'activity_dashboard_clients_dropped_total{reason="slow"}: +1');
note("dropped after $published frames of 32 KiB");
my $slow_log = '\[warn\] .*activity: dashboard 127\.0\.0\.1 does not read, '
    . '\d+ bytes queued, the oldest for \d+ ms, closing$';
ok(scalar $t->log_lines(qr/$slow_log/),
    'logged at warn with the bytes queued and the age of the oldest');
my ($code, $reason) = ref $slow ? $slow->close_code(30) : ('none', '');
is_deeply([ $code, $reason ], [ 1008, 'too slow' ],
    'reading again, its stream ends with close 1008 "too slow"');
$slow->close_socket if ref $slow;

# --- heartbeats --------------------------------------------------------------

# plain websocket, interval 1s, timeout 1s: a client that answers stays
$c = $t->ws_raw("/ws-ping?token=$token");
my $pings = 0;
my $closed = 0;
ok(ref $c && wait_for(sub {
    my ($op, $payload) = $c->next_frame(0.2);
    if (defined $op && $op == 9) {
        $pings++;
        $c->send_frame(10, $payload);
    }
    $closed = 1 if defined $op && $op == 8;
    $pings >= 3 || $closed }, 30) && !$closed,
    'websocket: pings come, answered with pongs the connection stays');
$c->send_text('{"subscribe":["dashboard:api-activity"]}');
ok($c->next_text(qr/"subscribed"/, 10), 'and still answers');
$c->close_socket;

# interval 2s, timeout 60s: a ping answered late, after 1 s, is followed
# by the next one a whole interval after the answer (not an interval
# after the ping, nor a timeout later)
sub next_ping {
    my ($c, $timeout) = @_;
    my $end = Time::HiRes::time() + $timeout;
    while (ref $c && Time::HiRes::time() < $end) {
        my ($op) = $c->next_frame($end - Time::HiRes::time());
        return undef unless defined $op;
        return $op if $op == 9 || $op == 8;
    }
    return undef;
}
$c = $t->ws_raw("/ws-pong?token=$token");
my $ping1 = next_ping($c, 30);
is($ping1, 9, 'websocket, interval 2s: a ping');
Time::HiRes::sleep(1);
my $answered = Time::HiRes::time();
$c->send_frame(10, '') if ref $c;
my $ping2 = next_ping($c, 30);
my $gap = Time::HiRes::time() - $answered;
is($ping2, 9, 'answered 1 s late: a next ping, long before the timeout');
cmp_ok($gap, '>=', 1.9, 'comes a whole interval after the answer');
$c->close_socket if ref $c;

# a client that does not answer is closed
$c = $t->ws_raw("/ws-ping?token=$token");
my @seen;
($code, $reason, @seen) = ref $c ? $c->close_code(30) : ('none');
ok((grep { $_->[0] == 9 } @seen), 'websocket: a ping came')
    or diag(explain(\@seen));
is($code, 'eof', 'websocket: unanswered, the connection is closed');
ok(wait_for(sub { $t->log_lines(qr/did not answer a ping/) }, 10),
    'logged: "did not answer a ping"');

# Socket.IO, interval 2s, timeout 1s
my ($s, $open, $reply) = sio_raw('/socket.io/');
my $eio = $open ? from_json(substr($open, 1)) : {};
is($eio->{pingInterval}, 2000, 'Engine.IO open: pingInterval 2000');
is($eio->{pingTimeout}, 1000, 'Engine.IO open: pingTimeout 1000');
like($reply // '', qr/^40\/dashboard,/, 'socketio connected');
$pings = 0;
$closed = 0;
ok(ref $s && wait_for(sub {
    my ($op, $payload) = $s->next_frame(0.2);
    if (defined $op && $op == 1 && $payload eq '2') {
        $pings++;
        $s->send_text('3');
    }
    $closed = 1 if defined $op && $op == 8;
    $pings >= 3 || $closed }, 30) && !$closed,
    'socketio: "2" pings come, answered with "3" the connection stays');
$s->send_text('42/dashboard,5["subscribe",["dashboard:api-activity"]]');
like($s->next_text(qr/^43\/dashboard,5/, 10) // '', qr/"ok":true/,
    'and still answers');
$s->close_socket;

($s) = sio_raw('/socket.io/');
my $n = () = $t->log_lines(qr/did not answer a ping/);
($code, $reason, @seen) = ref $s ? $s->close_code(30) : ('none');
ok((grep { $_->[0] == 1 && $_->[1] eq '2' } @seen),
    'socketio: a "2" ping came');
is($code, 'eof', 'socketio: unanswered, the connection is closed');
ok(wait_for(sub { $t->log_lines(qr/did not answer a ping/) > $n }, 10),
    'logged');

# the CONNECT deadline is activity_dashboard_auth_timeout (1s here; pings
# every 60s with a 60s timeout have no part in it)
($s, $open) = sio_raw('/sio-auth/', no_connect => 1);
ok($open, 'socketio: open packet');
($code, $reason) = ref $s ? $s->close_code(30) : ('none');
is_deeply([ $code, $reason ], [ 1008, 'no CONNECT' ],
    'no CONNECT within activity_dashboard_auth_timeout: 1008 "no CONNECT"');
my $no_connect = '\[info\] .*activity: dashboard 127\.0\.0\.1 sent no '
    . 'CONNECT in time$';
ok(wait_for(sub { $t->log_lines(qr/$no_connect/) }, 10), 'logged at info');

# --- activity_dashboard_role -------------------------------------------------

is($t->ws_raw('/viewer?token=' . token()), 403,
    'role viewer: an admin token gets 403');
$c = $t->ws_raw('/viewer?token=' . token(role => 'viewer'));
ok(ref $c && $c->next_text(qr/"snapshot"/, 10),
    'role viewer: a viewer token connects');
$c->close_socket if ref $c;
$c = $t->ws_raw('/viewer?token=' . jwt_hs256($secret, { sub => 'v',
    roles => [ 'ops', 'viewer' ], exp => time + 600 }));
ok(ref $c && $c->next_text(qr/"snapshot"/, 10),
    'role viewer: "roles":["ops","viewer"] connects');
$c->close_socket if ref $c;
is($t->ws_raw('/ws?token=' . token(role => 'viewer')), 403,
    'the default role is still admin elsewhere');

# --- Socket.IO auth refresh and expiry ----------------------------------------

my $exp = time + 6;
my $short = token(exp => $exp);
my $url = 'http://127.0.0.1:' . $t->port('http') . '/dashboard';
my $control = $t->node('sio-client.js', url => $url, token => $short,
    timeout => 40000, brief => 1);
my $fresh = $t->node('sio-client.js', url => $url, token => $short,
    timeout => 40000, brief => 1);
ok($control->wait_line(sub { $_->{t} eq 'connect' }, 10)
    && $fresh->wait_line(sub { $_->{t} eq 'connect' }, 10),
    'two Socket.IO clients with the same short token');

my $later = time + 600;
$fresh->send({ emit => 'auth', args => [ token(exp => $later) ],
    tag => 'a1' });
my $ack = $fresh->wait_line(sub { $_->{t} eq 'ack' && $_->{tag} eq 'a1' },
    10);
is_deeply($ack && $ack->{data}, { ok => JSON::PP::true(), exp => $later },
    'auth with a fresh token: ack ok with the new exp');
$fresh->send({ emit => 'auth', args => [ { token => 'not.a.token' } ],
    tag => 'a2' });
$ack = $fresh->wait_line(sub { $_->{t} eq 'ack' && $_->{tag} eq 'a2' }, 10);
is_deeply($ack && $ack->{data}, { ok => JSON::PP::false(),
    error => 'invalid token' }, 'auth with a bad token: refused in the ack');

my $gone = $control->wait_line(sub { $_->{t} eq 'connect_error'
    || $_->{t} eq 'disconnect' }, 30);
is($gone && $gone->{message}, 'token expired',
    'without a refresh: "token expired" at expiry');
ok(!(grep { $_->{t} =~ /^(disconnect|connect_error)$/ } $fresh->lines),
    'the refreshed client is still connected');
$fresh->send({ emit => 'subscribe', args => [ ['dashboard:api-activity'] ],
    tag => 's1' });
$ack = $fresh->wait_line(sub { $_->{t} eq 'ack' && $_->{tag} eq 's1' }, 10);
ok($ack && $ack->{data}{ok}, 'and its session goes on');
$fresh->finish(5);
$control->finish(5);

# --- activity_dashboard_max_connections ---------------------------------------

my $mp = $t->port('max');

# The pid of the nginx worker process that accepted the latest dashboard
# (from its "connected" line).
sub last_dashboard_pid {
    my @l = $t->log_lines(qr/activity: dashboard \S+ connected/,
        $t->error_log('max'));
    return @l ? ($l[-1] =~ /\] (\d+)#/)[0] : undef;
}

# An upgrade request on a new connection: (status, body) of the answer.
sub upgrade {
    my ($port, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $port, Timeout => 10) or return ('connect');
    print $s "GET $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        . "Sec-WebSocket-Version: 13\r\n\r\n";
    my $buf = '';
    my $end = time + 10;
    while (time < $end) {
        if ($buf =~ /\r\n\r\n/) {
            my ($head, $body) = split /\r\n\r\n/, $buf, 2;
            my ($len) = $head =~ /^Content-Length: (\d+)/mi;
            last if $head =~ m{^HTTP/1\.1 101 }
                || length $body >= ($len // 0);
        }
        next unless ActivityTest::can_read($s, 1);
        my $n = sysread $s, $buf, 65536, length $buf;
        last unless $n;
    }
    close $s;
    my ($status) = $buf =~ m{^HTTP/1\.1 (\d+)};
    my (undef, $body) = split /\r\n\r\n/, $buf, 2;
    return ($status // 'none', $body // '');
}

# one dashboard on each worker process: reconnect the second until the
# kernel hands it to the other process
my @held = (ActivityTest::RawWS->open($mp, "/ws?token=$token"));
ok(ref $held[0] && $held[0]->next_text(qr/"snapshot"/, 10),
    'max_connections 2: a first dashboard connects');
my $pid1 = last_dashboard_pid();
my $pid2;
for (1 .. 50) {
    my $c = ActivityTest::RawWS->open($mp, "/ws?token=$token");
    last unless ref $c && $c->next_text(qr/"snapshot"/, 10);
    $pid2 = last_dashboard_pid();
    if ($pid2 != $pid1) {
        push @held, $c;
        last;
    }
    $c->close_socket;
    # its place is free again before the next try
    wait_for(sub { ($t->http(GET => '/status', port => $mp)->{content}
        // '') =~ /^activity_dashboard_connections\{protocol="websocket"\} 1$/m
        }, 10);
}
ok(@held == 2 && $pid1 != $pid2,
    'a second one connects, on the other worker process')
    or diag("pids $pid1 " . ($pid2 // '?'));
is_deeply([ upgrade($mp, "/ws?token=$token") ],
    [ 503, '{"message":"too many dashboard connections"}' ],
    'a third is refused with 503');
is_deeply([ upgrade($mp, "/socket.io/?EIO=4&transport=websocket"
    . "&token=$token") ],
    [ 503, '{"message":"too many dashboard connections"}' ],
    'a Socket.IO client with its token in the handshake: the same 503');
my $refused = '\[warn\] .*activity: dashboard refused 127\.0\.0\.1: 2 ';
ok(scalar $t->log_lines(qr/${refused}connections already$/,
    $t->error_log('max')),
    'the refusal is logged at warn');

# sockets still to authenticate: apart, activity_dashboard_max_pending 2
my $sio_path = '/sio-quiet/?EIO=4&transport=websocket';
my @pending = map { scalar ActivityTest::RawWS->open($mp, $sio_path) } 1, 2;
ok(ref $pending[0] && ref $pending[1],
    'every place taken, two Socket.IO sockets without a token still '
    . 'upgrade');
is_deeply([ upgrade($mp, $sio_path) ], [ 503, '{"message":"too many '
    . 'dashboard connections waiting to authenticate"}' ],
    'a third waiting socket: 503 (max_pending 2)');
ok(scalar $t->log_lines(
    qr/${refused}connections waiting to authenticate already$/,
    $t->error_log('max')), 'logged at warn');

my $connect_error;
if (ref $pending[0]) {
    $pending[0]->next_text(qr/^0\{/, 10);
    $pending[0]->send_text('40/dashboard,' . to_json({ token => $token }));
    $connect_error = $pending[0]->next_text(qr/^4[04]\/dashboard/, 10);
}
is($connect_error, '44/dashboard,{"message":"too many dashboard '
    . 'connections","data":{"status":503}}',
    'one that sends its CONNECT with every place taken: CONNECT_ERROR');
($code) = ref $pending[0] ? $pending[0]->close_code(10) : ('none');
is($code, 1013, 'then close 1013');
$_->close_socket for grep { ref } @pending;

$held[0]->close_socket;
ok(wait_for(sub {
    my $c = ActivityTest::RawWS->open($mp, "/ws?token=$token");
    return 0 unless ref $c;
    push @held, $c;
    1 }, 20), 'a closed dashboard frees its place');
$_->close_socket for grep { ref } @held;
$t->nginx_stop('QUIT', 'max');

$t->done;
