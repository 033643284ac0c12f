#!/usr/bin/perl

# A dashboard client that never reads is dropped once its queue
# (activity_dashboard_queue) is full, and logged; a normal client on the
# same nginx worker process keeps receiving every event, in order. Events
# are PUBLISHed straight to dashboard:events (no worker needed), in
# batches smaller than the queue, each read by the normal client before
# the next goes out: only the client that never reads falls behind.
# Last, a reading client gets a burst larger than the queue (one worker
# batch published as one message).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Select;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_RCVBUF inet_aton pack_sockaddr_in);
use Test::More;
use ActivityTest qw(wait_for jwt_hs256 make_event to_json);

my $t = ActivityTest->new(needs => [qw(module redis node)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "slow-secret";

    server {
        listen 127.0.0.1:%%PORT%% %%SSL%%;
        server_name localhost;

        location /ws {
            activity_dashboard websocket;
            activity_dashboard_queue 64k;
        }

        location /socket.io/ {
            activity_dashboard socketio;
            activity_dashboard_queue 64k;
        }

        location /ws-default {
            activity_dashboard websocket;
        }

        location /ws-time {
            activity_dashboard websocket;
            activity_dashboard_queue 64m;
            activity_dashboard_queue_time 1s;
        }
    }

    # a slow link: nginx's send buffer fixed small
    server {
        listen 127.0.0.1:%%PORT_narrow%% sndbuf=8k %%SSL%%;
        server_name localhost;

        location /ws {
            activity_dashboard websocket;
        }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $token = jwt_hs256('slow-secret', { sub => 'dash', role => 'admin',
    exp => time + 600 });
my $port = $t->port('http');

sub log_text {
    open my $fh, '<', $t->error_log or return '';
    local $/;
    return <$fh> // '';
}

# A raw client: a small receive buffer, the WebSocket handshake, then it
# never reads again.
sub slow_client {
    my ($path) = @_;
    my $s = $t->socket(rcvbuf => 4096);
    print $s "GET $path HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        . "Sec-WebSocket-Version: 13\r\n\r\n";
    my $head = '';
    while ($head !~ /\r\n\r\n/ && ActivityTest::can_read($s, 10)) {
        sysread($s, $head, 1, length $head) or last;
    }
    return ($s, $head);
}

# Reads the server's frames until the peer closes; returns them as
# [opcode, payload] ([8, code, reason] for a close frame).
sub read_frames {
    my ($s, $timeout) = @_;
    my $buf = '';
    my $end = time + $timeout;
    while (time < $end) {
        next unless ActivityTest::can_read($s, 1);
        my $n = sysread $s, $buf, 1 << 20, length $buf;
        last if !defined $n || $n == 0;
    }
    my @frames;
    while (length $buf >= 2) {
        my ($b0, $b1) = unpack 'CC', $buf;
        my ($len, $hl) = ($b1 & 0x7f, 2);
        if ($len == 126) {
            ($len, $hl) = (unpack('n', substr($buf, 2, 2)), 4);
        } elsif ($len == 127) {
            my ($hi, $lo) = unpack 'NN', substr($buf, 2, 8);
            ($len, $hl) = ($hi * 2**32 + $lo, 10);
        }
        last if length $buf < $hl + $len;
        my $payload = substr($buf, $hl, $len);
        substr($buf, 0, $hl + $len, '');
        my $op = $b0 & 0x0f;
        push @frames, $op == 8
            ? [8, unpack('n', $payload), substr($payload, 2)]
            : [$op, $payload];
    }
    push @frames, [-1, length $buf] if length $buf;
    return @frames;
}

# Reads until the peer closes (EOF or reset); true if it did within
# $timeout seconds.
sub closed_by_peer {
    my ($s, $timeout) = @_;
    my $end = time + $timeout;
    while (time < $end) {
        next unless ActivityTest::can_read($s, 1);
        my $n = sysread $s, my $buf, 1 << 20;
        return 1 if !defined $n || $n == 0;
    }
    return 0;
}

my $normal = $t->node('ws-client.js', brief => 1,
    url => $t->ws_url("/ws?token=$token"), timeout => 50000);
ok($normal->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
    'normal client: snapshot');

my ($slow, $head) = slow_client("/ws?token=$token");
like($head, qr{^HTTP/1\.1 101 }, 'slow client: upgraded');

# batches of large events until nginx gives up on the slow client; the
# normal client has each batch before the next goes out
my $blob = 'x' x 32768;
my @ids;
my $batch = 0;
my $dropped = 0;
my $in_order = 1;
while (!$dropped && $batch < 200) {
    $batch++;
    for (1 .. 8) {
        my $e = make_event(type => 'API_CALL', user => "slow-$batch",
            details => { blob => $blob });
        push @ids, $e->{id};
        $t->redis->publish('dashboard:events', to_json([$e]));
    }
    my $last = $ids[-1];
    $in_order &&= $normal->wait_line(sub {
        ($_->{event} // '') eq 'activity:new' && $_->{data}{id} eq $last
    }, 15);
    $dropped = log_text() =~ /does not read/;
}
ok($dropped, "slow client dropped after $batch batches of 8 x 32 KiB");
like(log_text(), qr/\[warn\]\ .*activity:\ dashboard\ 127\.0\.0\.1
    \ does\ not\ read,\ \d+\ bytes\ queued,\ the\ oldest\ for\ \d+\ ms,
    \ closing/x,
    'logged: does not read');
my @frames = read_frames($slow, 20);
is_deeply($frames[-1], [8, 1008, 'too slow'],
    'slow client: its stream ends with close 1008 "too slow"');
ok(!(grep { $_->[0] == 1 && $_->[1] !~ /^\{"event":/ } @frames),
    'slow client: only whole frames before it');
close $slow;

# the normal client still gets everything (fewer than the queue holds)
for (1 .. 8) {
    my $e = make_event(type => 'API_CALL', user => 'after');
    push @ids, $e->{id};
    $t->redis->publish('dashboard:events', to_json([$e]));
}
ok($normal->wait_line(sub {
    ($_->{event} // '') eq 'activity:new' && $_->{data}{id} eq $ids[-1]
}, 15), 'normal client: events after the drop');
ok($in_order, 'normal client: each batch arrived');

my @lines = $normal->finish;
my @got = map { $_->{data}{id} }
    grep { ($_->{event} // '') eq 'activity:new' } @lines;
is(scalar @got, scalar @ids, 'normal client: every event (' . @ids . ')');
is_deeply(\@got, \@ids, 'normal client: in order, none twice');
ok(!(grep { $_->{t} eq 'close' } @lines), 'normal client never closed');

# the same on the socketio protocol: the slow client sends no CONNECT,
# so it gets only the open packet; one that connects and then stops
# reading is the case that matters
{
    my $sio = $t->node('sio-client.js', brief => 1,
        url => $t->base_url . '/dashboard', token => $token,
        timeout => 50000);
    ok($sio->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
        'socketio client: snapshot');

    my ($s, $h) = slow_client(
        "/socket.io/?EIO=4&transport=websocket&token=$token");
    like($h, qr{^HTTP/1\.1 101 }, 'slow socketio client: upgraded');
    # a masked text frame "40/dashboard," (Socket.IO CONNECT)
    my $payload = '40/dashboard,';
    my $mask = pack 'N', 0x01020304;
    my $masked = $payload ^ substr($mask x 8, 0, length $payload);
    syswrite $s, pack('CC', 0x81, 0x80 | length $payload) . $mask . $masked;

    my $before = () = log_text() =~ /does not read/g;
    my $n = 0;
    my $sio_dropped = 0;
    my @sio_ids;
    while (!$sio_dropped && $n < 200) {
        $n++;
        for (1 .. 8) {
            my $e = make_event(user => "sio-$n", details => { b => $blob });
            push @sio_ids, $e->{id};
            $t->redis->publish('dashboard:events', to_json([$e]));
        }
        my $last = $sio_ids[-1];
        $sio->wait_line(sub {
            ($_->{event} // '') eq 'activity:new' && $_->{data}{id} eq $last
        }, 15);
        $sio_dropped = (() = log_text() =~ /does not read/g) > $before;
    }
    ok($sio_dropped, 'slow socketio client dropped');
    my @f = read_frames($s, 20);
    is_deeply($f[-1], [8, 1008, 'too slow'],
        'slow socketio client: close 1008 "too slow"');
    close $s;

    my @l = $sio->finish;
    my @g = map { $_->{data}{id} }
        grep { ($_->{event} // '') eq 'activity:new' } @l;
    is_deeply(\@g, \@sio_ids, 'socketio client: every event, in order');
}

# a burst larger than the default queue (256), as the worker publishes a
# batch (up to --batch 500 events) in one message, to a client that reads

{
    my $c = $t->node('ws-client.js', brief => 1,
        url => $t->ws_url("/ws-default?token=$token"),
        timeout => 30000);
    ok($c->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
        'burst: client connected');

    my @burst = map { make_event(user => 'burst') } 1 .. 300;
    $t->redis->publish('dashboard:events', to_json(\@burst));

    ok($c->wait_line(sub {
        ($_->{event} // '') eq 'activity:new'
            && $_->{data}{id} eq $burst[-1]{id}
    }, 15), 'burst: the last event of the message arrives');
    my @got = map { $_->{data}{id} }
        grep { ($_->{event} // '') eq 'activity:new' } $c->finish;
    is_deeply(\@got, [ map { $_->{id} } @burst ],
        'burst: a reading client gets all 300 events of one message, in order');
}

# the queue is counted in bytes: one message of 1000 events (1 MiB) to a
# client that reads, behind a narrow link (an 8 KiB send buffer), comes
# whole; a count of 256 frames dropped it

{
    my $c = $t->node('ws-client.js', brief => 1,
        url => $t->ws_url("/ws?token=$token", $t->port('narrow')),
        timeout => 40000);
    ok($c->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
        'narrow link: client connected');

    my $kib = 'k' x 1000;
    my @batch = map { make_event(user => "narrow-$_",
        details => { pad => $kib }) } 1 .. 1000;
    $t->redis->publish('dashboard:events', to_json(\@batch));

    ok($c->wait_line(sub {
        ($_->{event} // '') eq 'activity:new'
            && $_->{data}{id} eq $batch[-1]{id}
    }, 30), 'narrow link: the last of 1000 events arrived');
    my @l = $c->finish;
    my @g = map { $_->{data}{id} }
        grep { ($_->{event} // '') eq 'activity:new' } @l;
    is_deeply(\@g, [map { $_->{id} } @batch],
        'narrow link: all 1000 events of the one message, in order');
    ok(!(grep { $_->{t} eq 'close' } @l), 'narrow link: never closed');
}

# and by time: a client whose oldest queued frame waited longer than
# activity_dashboard_queue_time is dropped, however few bytes wait

{
    my ($s, $h) = slow_client("/ws-time?token=$token");
    like($h, qr{^HTTP/1\.1 101 }, 'time-bound client: upgraded');
    my $before = () = log_text() =~ /does not read/g;
    my $dropped = wait_for(sub {
        $t->redis->publish('dashboard:events', to_json([make_event(
            user => 'late', details => { pad => 'x' x 32768 })]));
        (() = log_text() =~ /does not read/g) > $before;
    }, 30, 0.2);
    ok($dropped, 'time-bound client dropped');
    my ($ms) = log_text() =~ /.*the oldest for (\d+) ms, closing/s;
    cmp_ok($ms // 0, '>', 1000, 'its oldest frame had waited over 1 s');
    my @f = read_frames($s, 20);
    is_deeply($f[-1], [8, 1008, 'too slow'],
        'time-bound client: close 1008 "too slow"');
    close $s;
}

$t->done;
