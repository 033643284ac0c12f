#!/usr/bin/perl

# Hostile dashboard clients on raw TCP sockets: frames that break RFC 6455
# (oversized, unmasked, bad opcodes, fragmented or long control frames,
# a continuation without a start, invalid UTF-8, binary), a ping flood, a
# message flood, a slowloris handshake and garbage Socket.IO packets.
# Each gets the RFC's close code (read from the server's close frame) or
# a timeout, and the nginx worker processes survive all of it: their
# pids do not change and the error log has no [alert] or [crit].

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
worker_processes 2;

http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "hostile-secret";
    activity_dashboard_rate 20;

    server {
        listen 127.0.0.1:%%PORT%% %%SSL%%;
        server_name localhost;

        client_header_timeout 2s;

        location /ws {
            activity_dashboard websocket;
        }

        location /socket.io/ {
            activity_dashboard socketio;
        }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $secret = 'hostile-secret';
my $token = jwt_hs256($secret, { sub => 'mallory', role => 'admin',
    exp => time + 600 });

# The worker processes of the master that the harness started, sorted.
sub worker_pids { $t->nginx_worker_pids }

my @workers;
wait_for { (@workers = worker_pids()) == 2 } 10;
is(scalar @workers, 2, 'two nginx worker processes');


# --- a raw WebSocket client ---------------------------------------------

# A masked client frame: frame(OPCODE, PAYLOAD, fin => 0, mask => 0,
# rsv => 0x40, len => N (the length field, when it must lie)).
sub frame {
    my ($op, $payload, %o) = @_;
    $payload //= '';
    my $fin = exists $o{fin} ? $o{fin} : 1;
    my $masked = exists $o{mask} ? $o{mask} : 1;
    my $n = $o{len} // length $payload;

    my $h = pack 'C', ($fin ? 0x80 : 0) | ($o{rsv} // 0) | $op;
    my $m = $masked ? 0x80 : 0;
    if ($n < 126 && !$o{long}) {
        $h .= pack 'C', $m | $n;
    } elsif ($n <= 0xffff && !$o{long}) {
        $h .= pack 'Cn', $m | 126, $n;
    } else {
        $h .= pack 'CNN', $m | 127, int($n / 2**32), $n % 2**32;
    }
    return $h . $payload unless $masked;

    my $key = pack 'N', 0x5a17c3e9;
    my $mask = substr($key x (int(length($payload) / 4) + 1), 0,
        length $payload);
    return $h . $key . ($payload ^ $mask);
}

# Opens a WebSocket on $path over $t->socket (TLS in TLS mode) with the
# harness's raw client (ActivityTest::RawWS, which also checks that server
# frames are not masked); returns it after the 101, or the status line
# when the server answers otherwise.
sub ws_open {
    my ($path) = @_;
    return $t->ws_raw($path, sock => $t->socket, timeout => 5);
}

sub ws { ws_open('/ws?token=' . $token) }

sub sio {
    my $c = ws_open('/socket.io/?EIO=4&transport=websocket');
    return $c unless ref $c;
    my ($op, $data) = $c->next_frame(5);
    die "no Engine.IO open packet" unless ($data // '') =~ /^0\{/;
    return $c;
}

# Skips data frames up to the close frame; returns its code ('none' for
# a close without one), or 'eof' / 'timeout' when none came.
sub close_code {
    my ($c, $timeout) = @_;
    my ($code) = $c->close_code($timeout);
    return $code;
}

sub send_raw {
    my ($c, $bytes) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $s = $c->{sock};
    return print $s $bytes;
}

# One connection, the bytes, the close code it must get.
sub closes_with {
    my ($bytes, $code, $name) = @_;
    my $c = ws();
    unless (ref $c) {
        fail("$name: handshake ($c)");
        return;
    }
    send_raw($c, $bytes);
    is(close_code($c), $code, "$name: close $code");
}


# --- RFC 6455 violations ------------------------------------------------

my $c = ws();
ok(ref $c, 'websocket handshake') or BAIL_OUT('no websocket');
ok(defined $c->next_text(qr/"snapshot"/), 'snapshot first');
send_raw($c, frame(1, '{"subscribe":"dashboard:api-activity"}'));
like($c->next_text(qr/subscribed/) // '', qr/"ok":true/,
    'a well-formed client gets answers');
send_raw($c, frame(8, pack('n', 1000) . 'bye'));
is(close_code($c), 1000, 'close 1000 is echoed');

# exactly 64 KiB is allowed, one byte more is not
my $big = '{"subscribe":"' . ('x' x (65536 - 16)) . '"}';
is(length $big, 65536, '64 KiB message built');
$c = ws();
send_raw($c, frame(1, $big));
like($c->next_text(qr/subscribed/, 10) // '', qr/"ok":false/,
    'a 64 KiB frame is read and answered');
send_raw($c, frame(8, pack 'n', 1000));
is(close_code($c), 1000, 'and the connection is still in order');

closes_with(frame(1, '', len => 65537) . 'abcd', 1009,
    'frame header announcing 64 KiB + 1');
closes_with(frame(1, '', len => 2**40, long => 1), 1009,
    'frame header announcing 1 TiB');
closes_with(frame(1, '', len => 2**63, long => 1), 1002,
    'frame length with the top bit set');
closes_with(frame(1, '{"subscribe":"' . ('y' x 40000), fin => 0)
    . frame(0, ('y' x 30000) . '"}'), 1009,
    'fragments adding up to more than 64 KiB');

closes_with(frame(1, '{"subscribe":[]}', mask => 0), 1002,
    'unmasked client frame');
for my $op (3, 4, 7, 0xb, 0xf) {
    closes_with(frame($op, 'x'), 1002, sprintf 'opcode 0x%x', $op);
}
closes_with(frame(1, '{}', rsv => 0x40), 1002, 'RSV1 without extension');
closes_with(frame(9, 'ping', fin => 0), 1002, 'fragmented ping');
closes_with(frame(8, pack('n', 1000), fin => 0), 1002, 'fragmented close');
closes_with(frame(9, 'p' x 126), 1002, 'ping of 126 bytes');
closes_with(frame(0, '{}'), 1002, 'continuation without a start');
closes_with(frame(1, '{"sub', fin => 0) . frame(1, '{}'), 1002,
    'new message inside a fragmented one');

closes_with(frame(1, "{\"auth\":\"\xc3\x28\"}"), 1007,
    'invalid UTF-8 in a text frame');
closes_with(frame(1, "{\"auth\":\"\xed\xa0\x80\"}"), 1007,
    'UTF-8 encoded surrogate');
closes_with(frame(1, "{\"auth\":\"\xe2\x82", fin => 0)
    . frame(0, "\"}"), 1007, 'UTF-8 sequence cut by the message end');
closes_with(frame(8, pack('n', 1000) . "\xff"), 1007,
    'invalid UTF-8 in a close reason');
closes_with(frame(8, pack('n', 1005)), 1002, 'reserved close code 1005');
closes_with(frame(8, 'x'), 1002, 'close payload of one byte');
closes_with(frame(2, "\x00\x01\x02"), 1003, 'binary frame');
closes_with(frame(1, '[1,2,3]'), 1007, 'JSON that is not an object');

# a character split across fragments is fine
$c = ws();
send_raw($c, frame(1, "{\"subscribe\":\"caf\xc3", fin => 0)
    . frame(9, 'between') . frame(0, "\xa9\"}"));
like($c->next_text(qr/subscribed/) // '', qr/caf\\u00e9|caf\xc3\xa9/,
    'UTF-8 split across fragments, a ping in between');
send_raw($c, frame(8, pack 'n', 1000));
is(close_code($c), 1000, 'closed normally');

# header bytes trickled one at a time
$c = ws();
send_raw($c, $_), sleep 0.05 for split //, frame(9, 'slow');
my ($op, $data) = $c->next_frame(5);
($op, $data) = $c->next_frame(5) while defined $op && $op != 0xa;
is($data, 'slow', 'a frame sent byte by byte is answered');
send_raw($c, frame(8, pack 'n', 1000));
is(close_code($c), 1000, 'closed normally');


# --- floods -------------------------------------------------------------

# Pings are answered (or the client is dropped for not reading): never
# a crash. Written in bursts while reading, so the socket never wedges.
$c = ws();
my ($pongs, $sent, $end_code) = (0, 0, undef);
my $ping = frame(9, 'p' x 125);
while ($sent < 5000) {
    send_raw($c, $ping x 100) or last;
    $sent += 100;
    while (my ($o, $d) = $c->next_frame(0)) {
        $pongs++ if $o == 0xa;
        if ($o == 8) { $end_code = unpack 'n', $d; last }
    }
    last if defined $end_code;
}
unless (defined $end_code) {
    while (my ($o, $d) = $c->next_frame(2)) {
        $pongs++ if $o == 0xa;
        if ($o == 8) { $end_code = unpack 'n', $d; last }
        last if $pongs >= $sent;
    }
}
# pings are not messages (activity_dashboard_rate) and a client that
# reads is never too slow: each one is answered and nothing is closed
is($pongs, $sent, "ping flood: a pong for each of the $sent pings");
is($end_code, undef, 'ping flood: the connection is not closed');
send_raw($c, frame(8, pack 'n', 1000));
is(close_code($c), 1000, 'ping flood: then closed normally');

# messages beyond activity_dashboard_rate: 1008, sent one at a time so
# that nothing unread is left in the server's socket when it closes
$c = ws();
my $flood = 'eof';
for (1 .. 60) {
    send_raw($c, frame(1, '{"subscribe":[]}')) or last;
    while (my ($o, $d) = $c->next_frame(0.01)) {
        next unless $o == 8;
        $flood = length $d >= 2 ? unpack('n', $d) : 'none';
        last;
    }
    last if $flood ne 'eof';
}
is($flood, 1008, 'message flood: close 1008');

# The same flood in one write: the server closes with most of it unread
# in its socket buffer, so the kernel answers with a reset and the 1008
# frame (and the last replies) may never reach the client.
$c = ws();
send_raw($c, frame(1, '{"subscribe":[]}') x 60);
is(close_code($c, 5), 1008, 'pipelined message flood: close 1008');


# --- slowloris ----------------------------------------------------------

{
    my $s = $t->socket;
    my @parts = ("GET /ws?token=$token HTTP/1.1\r\n", "Host: localhost\r\n",
        "Upgrade: websocket\r\n", "Connection: Upgrade\r\n",
        map { "X-Slow-$_: " . ('z' x 10) . "\r\n" } 1 .. 100);
    my $start = time;
    my $closed;
    local $SIG{PIPE} = 'IGNORE';
    for my $part (@parts) {
        for my $ch (split //, $part) {
            unless (print $s $ch) { $closed = 1; last }
            if (ActivityTest::can_read($s, 0.1)) {
                my $n = sysread $s, my $x, 4096;
                unless ($n) { $closed = 1; last }
            }
            last if time - $start > 60;
        }
        last if $closed || time - $start > 60;
    }
    ok($closed, 'slowloris: nginx closes the trickling handshake');
    my $elog = do { local (@ARGV, $/) = $t->error_log; <> };
    like($elog, qr/client timed out .* while reading client request line/,
        'closed by client_header_timeout');
}


# --- Socket.IO garbage --------------------------------------------------

sub sio_closes_with {
    my ($packets, $code, $name, $expect) = @_;
    my $c = sio();
    unless (ref $c) {
        fail("$name: handshake ($c)");
        return;
    }
    send_raw($c, join '', map { frame(1, $_) } @$packets);
    if ($expect) {
        like($c->next_text($expect) // '', $expect, "$name: answered");
    }
    is(close_code($c), $code, "$name: close $code");
}

sio_closes_with(['2'], 1002, 'client ping (wrong direction)');
sio_closes_with(['7'], 1002, 'unknown Engine.IO type');
sio_closes_with([''], 1002, 'empty packet');
sio_closes_with(['4x'], 1002, 'Socket.IO type x');
sio_closes_with(['45-/dashboard,["x"]'], 1002, 'binary Socket.IO event');
sio_closes_with(['40/dashboard,nonsense'], 1002, 'CONNECT with non-JSON');
sio_closes_with(['42/dashboard,["subscribe",["dashboard:api-activity"]]'],
    1002, 'EVENT before CONNECT');
sio_closes_with(['40/' . ('n' x 200) . ','], 1002, 'namespace of 200 bytes');
sio_closes_with(['42/dashboard,9999999999["x"]'], 1002, 'ack id overflow');
sio_closes_with(['40/dashboard,{"token":"not.a.token"}'], 1008,
    'CONNECT with a garbage token', qr/^44\/dashboard,.*invalid token/);
sio_closes_with(['40/dashboard,{"token":"a","token":"b"}'], 1008,
    'CONNECT with duplicate keys', qr/^44\/dashboard,/);
sio_closes_with(['40/dashboard,{"token":' . ('[' x 5000) . '}'], 1008,
    'CONNECT with deeply nested JSON', qr/^44\/dashboard,/);

my $auth = '40/dashboard,{"token":"' . $token . '"}';
$c = sio();
send_raw($c, frame(1, '40/elsewhere,'));
like($c->next_text(qr/^44/) // '', qr/Invalid namespace/,
    'unknown namespace: CONNECT_ERROR, connection kept');
send_raw($c, frame(1, $auth));
like($c->next_text(qr/^40\/dashboard,/) // '', qr/"sid"/, 'then CONNECT');
send_raw($c, frame(1, '42/dashboard,7["subscribe",{"a":1}]'));
like($c->next_text(qr/^43\/dashboard,7/) // '', qr/"ok":false/,
    'subscribe with an object: refused in the ack');
send_raw($c, frame(1, '42/dashboard,8["nonsense",1,2,3]'));
like($c->next_text(qr/^43\/dashboard,8/) // '', qr/unknown event/,
    'unknown event: refused in the ack');
send_raw($c, frame(1, '42/dashboard,[1,2]'));
is(close_code($c), 1002, 'event name not a string: close 1002');

for my $bad ('42/dashboard,', '42/dashboard,{"a":1}', '42/dashboard,[',
    '42/dashboard,["\u0000"]', '42/dashboard,5')
{
    sio_closes_with([$auth, $bad], 1002, "after CONNECT, '$bad'",
        qr/^40\/dashboard,/);
}


# --- tokens with absurd times -------------------------------------------

# found by fuzz/jwt_token: exp/nbf beyond time_t were cast unchecked
{
    my $future = jwt_hs256($secret, { sub => 'm', role => 'admin',
        nbf => 1e19 });
    my $r = ws_open('/ws?token=' . $future);
    is(ref $r ? 101 : $r, 401, 'nbf = 1e19 is not yet valid');
}


# --- the stream itself (also over TLS, TEST_TLS=1) ----------------------

# one 101, then frames: over TLS nginx once kept the 101 and the first
# frames in its write buffer and the dashboard wrote them again and again
{
    my $c = ws();
    my ($op, $data) = ref $c ? $c->next_frame(5) : ();
    is($op, 1, 'the first bytes after the 101 are a text frame');
    like($data // '', qr/^\{"event":"snapshot"/, 'the snapshot');
    my $more = '';
    while (ActivityTest::can_read($c->{sock}, 0.5)) {
        sysread($c->{sock}, $more, 65536, length $more) or last;
    }
    unlike($c->{buf} . $more, qr/HTTP\/1\.1/, 'no second 101 behind it');

    send_raw($c, frame(8, pack('n', 1000)));
    is(close_code($c, 5), 1000, 'close frame echoed');

    # a clean TLS close is close_notify: sysread() then says 0 (end of
    # stream), not undef (an error)
    my $n;
    my $end = time + 5;
    while (time < $end) {
        next unless ActivityTest::can_read($c->{sock}, 1);
        $n = sysread($c->{sock}, my $x, 4096);
        last unless $n;
    }
    is($n, 0, 'then the end of the stream');

    # over TLS that end is the server's close_notify, not a bare FIN
    if ($t->tls) {
        my $ssl = $c->{sock}->_get_ssl_object;
        ok($ssl && (Net::SSLeay::get_shutdown($ssl)
            & Net::SSLeay::RECEIVED_SHUTDOWN()), 'close_notify received');
    }
}


# --- afterwards ---------------------------------------------------------

$c = ws();
ok(ref $c && defined $c->next_text(qr/"snapshot"/),
    'a new dashboard still connects and gets its snapshot');

is_deeply([worker_pids()], \@workers, 'nginx worker pids unchanged');

my @bad = grep { /\[(alert|crit)\]/ } split /\n/,
    do { local (@ARGV, $/) = ($t->error_log); <> // '' };
ok(!@bad, 'no [alert] or [crit] in the error log') or diag(join "\n", @bad);

$t->done;
