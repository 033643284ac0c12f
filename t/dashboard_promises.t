#!/usr/bin/perl

# Dashboard promises of the README with no test elsewhere:
# - activity_dashboard_max_connections, counted across the worker
#   processes of an instance: more are refused with 503, and a
#   closed dashboard frees its place;
# - heartbeats: a WebSocket ping (or an Engine.IO "2") every
#   activity_dashboard_ping_interval, announced in the Engine.IO open
#   packet; a client that answers stays, one that does not is closed
#   after activity_dashboard_ping_timeout; a Socket.IO client must send
#   its CONNECT within the timeout (1008 "no CONNECT");
# - a custom activity_dashboard_role;
# - Socket.IO: emitting "auth" with a fresh token extends the session;
#   without it the server says "token expired" and closes;
# - the snapshot holds the last 50 events (newest first) and the latest
#   stats;
# - activity_status counters that must move: pub/sub messages, frames
#   encoded once per protocol and message (not per connection), clients
#   dropped for not reading.
# Events and stats are PUBLISHed straight to the channels (no worker).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
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
        }

        location /ws {
            activity_dashboard websocket;
        }

        location /viewer {
            activity_dashboard websocket;
            activity_dashboard_role viewer;
        }

        location /ws-slow {
            activity_dashboard websocket;
            activity_dashboard_queue 16;
        }

        location = /status {
            activity_status;
        }
    }
}
EOF

$t->write_conf($conf =~ s/MAX//r);
# two worker processes sharing the port (reuseport): the limit holds for
# the instance, across them
$t->write_conf(($conf =~ s/MAX/activity_dashboard_max_connections 2;/r)
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

my $slow = $t->ws_raw("/ws-slow?token=$token", rcvbuf => 4096);
ok(ref $slow, 'a client that will not read connects');
my $dropped0 = metric('activity_dashboard_clients_dropped_total',
    'reason="slow"');
my $big = make_event(endpoint => '/slow', agent => 'y' x 8000);
my $published = 0;
ok(wait_for(sub {
    $t->redis->publish('dashboard:events', to_json([$big])) for 1 .. 20;
    $published += 20;
    metric('activity_dashboard_clients_dropped_total', 'reason="slow"')
        == $dropped0 + 1 || $published > 5000 }, 60)
    && metric('activity_dashboard_clients_dropped_total', 'reason="slow"')
        == $dropped0 + 1,
    'activity_dashboard_clients_dropped_total{reason="slow"}: +1');
ok(scalar $t->log_lines(qr/\[warn\].*does not read/),
    'logged at warn');
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

# a client that does not answer is closed
$c = $t->ws_raw("/ws-ping?token=$token");
my ($code, $reason, @seen) = ref $c ? $c->close_code(30) : ('none');
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

($s, $open) = sio_raw('/socket.io/', no_connect => 1);
ok($open, 'socketio: open packet');
($code, $reason) = ref $s ? $s->close_code(30) : ('none');
is_deeply([ $code, $reason ], [ 1008, 'no CONNECT' ],
    'no CONNECT within the ping timeout: 1008 "no CONNECT"');

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
is(ActivityTest::RawWS->open($mp, "/ws?token=$token"), 503,
    'a third is refused with 503');
my ($sx) = ActivityTest::RawWS->open($mp,
    '/socket.io/?EIO=4&transport=websocket');
is($sx, 503, 'Socket.IO counts against the same limit');
$held[0]->close_socket;
ok(wait_for(sub {
    my $c = ActivityTest::RawWS->open($mp, "/ws?token=$token");
    return 0 unless ref $c;
    push @held, $c;
    1 }, 20), 'a closed dashboard frees its place');
ok(scalar $t->log_lines(qr/\[warn\].*dashboard refused.*2 connections/,
    $t->error_log('max')), 'the refusal is logged at warn');
$_->close_socket for grep { ref } @held;
$t->nginx_stop('QUIT', 'max');

$t->done;
