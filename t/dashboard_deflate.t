#!/usr/bin/perl

# permessage-deflate (RFC 7692) on both dashboard protocols.
#
# The answer to an offer in the 101 (always both no_context_takeover
# parameters, server_max_window_bits echoed, offers the server cannot
# honour declined, several headers read as one list, window 8 inflating
# with 256 bytes); RSV1 on broadcast and snapshot frames, whose payload
# inflates to exactly the JSON a plain client gets of the same message on
# the same worker; one compressed frame per message per worker
# (activity_frames_deflated_total), shared by every compressing client;
# short messages plain; compressed client messages inflated (single and
# fragmented, ending with a final block or its 00 00 ff ff kept), 1009
# on one that inflates past the message bound (one frame, fragments,
# hundreds of two-byte frames), 1007 on data that is not deflate or follows
# the final block, 1002 on RSV1 without the extension, on a
# control frame or on a continuation; a compressed message counted
# against activity_dashboard_rate once per started 4 KiB it inflates to;
# activity_dashboard_deflate off;
# the `ws` package and socket.io-client with compression on.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Compress::Raw::Zlib;
use Test::More;
use Time::HiRes qw(time);
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis node)]);

my $conf = <<'EOF';
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "deflate-secret";

    server {
        listen 127.0.0.1:%%PORT%% %%SSL%%;
        server_name localhost;

        location /ws {
            activity_dashboard websocket;
        }

        location /plain {
            activity_dashboard websocket;
            activity_dashboard_deflate off;
        }

        location /socket.io/ {
            activity_dashboard socketio;
        }

        location = /status {
            activity_status;
        }
    }
}
EOF

# --- configuration errors at nginx -t --------------------------------------

(my $bad = $conf) =~ s/activity_dashboard_deflate off;/activity_dashboard_deflate maybe;/;
my ($rc, $out) = $t->nginx_test($bad);
isnt($rc, 0, 'nginx -t refuses activity_dashboard_deflate maybe');
like($out, qr/invalid value "maybe" in "activity_dashboard_deflate" directive, it must be "on" or "off"/,
    'naming the directive') or diag($out);

($bad = $conf) =~ s/activity_dashboard_deflate off;/activity_dashboard_deflate on off;/;
($rc, $out) = $t->nginx_test($bad);
isnt($rc, 0, 'nginx -t refuses two arguments');
like($out, qr/invalid number of arguments in "activity_dashboard_deflate"/,
    'naming the directive') or diag($out);

(my $http = $conf) =~ s/(activity_jwt_secret[^\n]*\n)/$1    activity_dashboard_deflate off;\n/;
($rc, $out) = $t->nginx_test($http);
is($rc, 0, 'activity_dashboard_deflate in http') or diag($out);

$t->write_conf($conf);
$t->redis_start;

# a snapshot worth compressing: recent events and stats already there

sub event {
    my ($user, $n) = @_;
    return sprintf '{"id":"0193a1b2-c3d4-7e5f-8a9b-%012d","eventType":'
        . '"API_CALL","userId":"%s","timestamp":"2026-11-29T10:00:00.%03dZ",'
        . '"metadata":{"ipAddress":"203.0.113.7","userAgent":"Mozilla/5.0 '
        . '(X11; Linux x86_64) deflate-test","endpoint":"/api/items/%d",'
        . '"method":"GET","status":200,"durationMs":2,"details":{}}}',
        $n, $user, $n % 1000, $n;
}

$t->redis->rpush('dashboard:events:recent', map { event("early-$_", $_) }
    1 .. 5);
$t->redis->set('dashboard:stats', '{"activeUsers":3,"apiRequestsPerMinute":'
    . '12,"productsCreatedToday":0,"loginsPerHour":1,"logoutsPerHour":0,'
    . '"timestamp":"2026-11-29T10:00:00.000Z"}');

$t->nginx_start;

my $token = jwt_hs256('deflate-secret', { sub => 'dash-z', role => 'admin',
    exp => time + 600 });

my $OFFER = 'permessage-deflate; client_max_window_bits';
my $ANSWER = 'permessage-deflate; server_no_context_takeover; '
    . 'client_no_context_takeover';

# --- helpers ---------------------------------------------------------------

sub raw {
    my ($path, $ext) = @_;
    my $c = $t->ws_raw("$path?token=$token", sock => $t->socket,
        timeout => 5,
        headers => defined $ext ? { 'Sec-WebSocket-Extensions' => $ext }
                                : {});
    die "no 101: $c" unless ref $c;
    return $c;
}

sub answer {
    my ($c) = @_;
    return $c->{head} =~ /^Sec-WebSocket-Extensions: ([^\r\n]*)/mi ? $1
        : undef;
}

sub inflate_payload {
    my ($data) = @_;
    my ($i, $st) = Compress::Raw::Zlib::Inflate->new(-WindowBits => -15,
        -Bufsize => 65536);
    die "inflate: $st" unless $i;
    my $in = $data . "\x00\x00\xff\xff";
    my $text = '';
    $st = $i->inflate($in, $text);
    die "inflate: $st" unless $st == Z_OK || $st == Z_STREAM_END
        || $st == Z_BUF_ERROR;
    return $text;
}

sub deflate_payload {
    my ($text) = @_;
    my ($d, $st) = Compress::Raw::Zlib::Deflate->new(-WindowBits => -15,
        -AppendOutput => 1);
    die "deflate: $st" unless $d;
    my $z = '';
    $d->deflate($text, $z) == Z_OK or die 'deflate';
    $d->flush($z, Z_SYNC_FLUSH) == Z_OK or die 'flush';
    $z =~ s/\x00\x00\xff\xff\z// or die 'no sync flush tail';
    return $z;
}

# The next data frame as { op, rsv1, raw (payload as sent), text (inflated
# when RSV1) }; pings are skipped; undef on close, EOF or timeout.
sub next_msg {
    my ($c, $timeout) = @_;
    my $end = time + ($timeout // 10);
    while (time < $end) {
        my ($op, $data) = $c->next_frame($end - time);
        return undef if !defined $op || $op == 8;
        next if $op == 9 || $op == 10;
        return { op => $op, rsv1 => $c->{rsv1}, raw => $data,
            text => $c->{rsv1} ? inflate_payload($data) : $data };
    }
    return undef;
}

sub wait_msg {
    my ($c, $re, $timeout) = @_;
    my $end = time + ($timeout // 10);
    while (time < $end) {
        my $m = next_msg($c, $end - time) or return undef;
        return $m if $m->{text} =~ $re;
    }
    return undef;
}

# A masked client frame: frame(OPCODE, PAYLOAD, fin => 0, rsv => 0x40).
sub frame { ActivityTest::RawWS::frame(@_) }

# all of it: over TLS one syswrite takes at most a record
sub send_raw {
    my ($c, $bytes) = @_;
    local $SIG{PIPE} = 'IGNORE';
    while (length $bytes) {
        my $n = syswrite $c->{sock}, $bytes;
        return unless $n;
        substr($bytes, 0, $n, '');
    }
}

sub metric {
    return $t->status_metric('/status', $_[0]) // -1;
}

sub publish {
    my (@events) = @_;
    $t->redis->publish('dashboard:events', '[' . join(',', @events) . ']');
}

# --- the handshake's answer ---------------------------------------------

my $z1 = raw('/ws', $OFFER);
is(answer($z1), $ANSWER, 'offer with client_max_window_bits: both '
    . 'no_context_takeover, no window parameter in the answer');

my $z2 = raw('/ws', 'permessage-deflate');
is(answer($z2), $ANSWER, 'bare offer accepted');

my $p1 = raw('/ws');
is(answer($p1), undef, 'no offer: no extension in the 101');

my $off = raw('/plain', $OFFER);
is(answer($off), undef, 'activity_dashboard_deflate off: offer declined');

my %answers = (
    'permessage-deflate; server_max_window_bits=10'
        => "$ANSWER; server_max_window_bits=10",
    'permessage-deflate; server_max_window_bits="9"; '
        . 'client_max_window_bits=12' => "$ANSWER; server_max_window_bits=9",
    'Permessage-Deflate ; Server_No_Context_Takeover' => $ANSWER,
    'x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover'
        => $ANSWER,
    'permessage-deflate; server_max_window_bits=7, permessage-deflate'
        => $ANSWER,
    'permessage-deflate; server_max_window_bits=7' => undef,
    'permessage-deflate; server_max_window_bits=16' => undef,
    'permessage-deflate; server_max_window_bits=010' => undef,
    'permessage-deflate; server_max_window_bits' => undef,
    'permessage-deflate; client_max_window_bits=99' => undef,
    'permessage-deflate; server_no_context_takeover=1' => undef,
    'permessage-deflate; server_no_context_takeover; '
        . 'server_no_context_takeover' => undef,
    'permessage-deflate; mystery' => undef,
    'x-webkit-deflate-frame' => undef,
    'permessage-deflate; server_max_window_bits="10' => undef,
    'permessage-deflate;; client_max_window_bits' => undef,
);
for my $offer (sort keys %answers) {
    my $c = raw('/ws', $offer);
    is(answer($c), $answers{$offer}, "offer \"$offer\"");
    $c->close_socket;
}

# several Sec-WebSocket-Extensions headers are one list, in order (RFC
# 7230, 3.2.2); the first offer taken wins
my %headers = (
    "x-foo\r\nSec-WebSocket-Extensions: permessage-deflate" => $ANSWER,
    "permessage-deflate; server_max_window_bits=7\r\n"
        . "Sec-WebSocket-Extensions: permessage-deflate; "
        . "server_max_window_bits=12" => "$ANSWER; server_max_window_bits=12",
    "permessage-deflate; server_max_window_bits=11\r\n"
        . "Sec-WebSocket-Extensions: permessage-deflate"
        => "$ANSWER; server_max_window_bits=11",
);
for my $h (sort keys %headers) {
    my $c = raw('/ws', $h);
    (my $name = $h) =~ s/\r\nSec-WebSocket-Extensions: / | /;
    is(answer($c), $headers{$h}, "two headers \"$name\"");
    $c->close_socket;
}

# --- the snapshot -------------------------------------------------------

my $snap_z = next_msg($z1);
my $snap_p = next_msg($p1);
like($snap_p && $snap_p->{text}, qr/^\{"event":"snapshot","data":\{"events":\[\{"id"/,
    'plain client: snapshot first');
ok($snap_p && !$snap_p->{rsv1}, 'plain client: RSV1 clear');
ok($snap_z && $snap_z->{rsv1}, 'compressing client: snapshot has RSV1');
is($snap_z && $snap_z->{text}, $snap_p && $snap_p->{text},
    'it inflates to exactly the plain snapshot');
ok($snap_z && length $snap_z->{raw} < length $snap_p->{raw},
    'and is shorter on the wire ('
    . ($snap_z ? length $snap_z->{raw} : '?') . ' < '
    . ($snap_p ? length $snap_p->{raw} : '?') . ' bytes)');
my $snap_z2 = next_msg($z2);
is($snap_z2 && $snap_z2->{raw}, $snap_z && $snap_z->{raw},
    'a second compressing client gets the same compressed bytes');
for my $c ($off) {
    my $m = next_msg($c);
    ok($m && !$m->{rsv1} && $m->{text} eq $snap_p->{text},
        'activity_dashboard_deflate off: the plain snapshot');
}

# --- broadcasts: compressed once, shared; plain for the others -----------

my $deflated0 = metric('activity_frames_deflated_total');
my $frames0 = metric('activity_frames_broadcast_total');

my $ev = event('late-1', 101);
publish($ev);
my $want = qq({"event":"activity:new","data":$ev});

my $m1 = wait_msg($z1, qr/"late-1"/);
my $m2 = wait_msg($z2, qr/"late-1"/);
my $mp = wait_msg($p1, qr/"late-1"/);
ok($m1 && $m1->{rsv1}, 'activity:new to a compressing client: RSV1 set');
is($m1 && $m1->{op}, 1, 'a text frame');
is($m1 && $m1->{text}, $want, 'inflating it gives exactly the JSON');
is($m2 && $m2->{raw}, $m1 && $m1->{raw},
    'the other compressing client: the same bytes');
ok($mp && !$mp->{rsv1}, 'uncompressed client on the same worker: RSV1 '
    . 'clear');
is($mp && $mp->{raw}, $want, 'and the plain JSON of the same message');
my $mo = wait_msg($off, qr/"late-1"/);
ok($mo && !$mo->{rsv1} && $mo->{raw} eq $want,
    'deflate off location: plain frame');

ok(wait_for(sub { metric('activity_frames_deflated_total')
    == $deflated0 + 1 }, 5), 'one compressed frame for two compressing '
    . 'clients (activity_frames_deflated_total +1)')
    or diag(metric('activity_frames_deflated_total') . " vs $deflated0");
is(metric('activity_frames_broadcast_total'), $frames0 + 1,
    'one plain frame too (activity_frames_broadcast_total +1)');

# a short message stays plain: stats:update below the threshold

$t->redis->publish('dashboard:stats', '{"activeUsers":4}');
my $st = wait_msg($z1, qr/stats:update/);
ok($st && !$st->{rsv1}, 'a short message goes plain to a compressing '
    . 'client');
is($st && $st->{raw}, '{"event":"stats:update","data":{"activeUsers":4}}',
    'its JSON');

# the stats invalidated the snapshot: the next compressing client has it
# compressed, and that compressed copy is counted in
# activity_frames_deflated_total (not in activity_frames_broadcast_total)

my $d0 = metric('activity_frames_deflated_total');
my $b0 = metric('activity_frames_broadcast_total');
my $sn = raw('/ws', $OFFER);
my $sm = next_msg($sn);
ok($sm && $sm->{rsv1} && $sm->{text} =~ /^\{"event":"snapshot"/,
    'a new compressing client: the snapshot, compressed');
is(metric('activity_frames_deflated_total'), $d0 + 1,
    'made then: activity_frames_deflated_total +1');
is(metric('activity_frames_broadcast_total'), $b0,
    'activity_frames_broadcast_total unchanged');
my $sn2 = raw('/ws', $OFFER);
my $sm2 = next_msg($sn2);
is($sm2 && $sm2->{raw}, $sm && $sm->{raw}, 'the next client: the same bytes');
is(metric('activity_frames_deflated_total'), $d0 + 1, 'compressed once');
$_->close_socket for $sn, $sn2;

# server_max_window_bits=10: a message longer than 1,024 bytes goes plain

my $w10 = raw('/ws', 'permessage-deflate; server_max_window_bits=10');
next_msg($w10);    # the snapshot
my $long = event('long-1', 102);
$long =~ s/"details":\{\}/'"details":{"note":"' . ('x' x 1200) . '"}'/e;
publish(event('short-1', 103), $long);
my $s10 = wait_msg($w10, qr/"short-1"/);
my $l10 = wait_msg($w10, qr/"long-1"/);
ok($s10 && $s10->{rsv1}, 'window 10: a message within 1,024 bytes is '
    . 'compressed');
ok($l10 && !$l10->{rsv1}, 'a longer one goes plain');
is($l10 && $l10->{raw}, qq({"event":"activity:new","data":$long}),
    'its JSON');
my $l1 = wait_msg($z1, qr/"long-1"/);
ok($l1 && $l1->{rsv1}, 'the same long message compressed for a client '
    . 'with the full window');
is($l1 && $l1->{text}, qq({"event":"activity:new","data":$long}),
    'inflating to its JSON');
$w10->close_socket;

# server_max_window_bits=8, the smallest: a message of 128 to 256 bytes
# compressed, and it inflates with a window of 256 bytes

my $w8 = raw('/ws', 'permessage-deflate; server_max_window_bits=8');
is(answer($w8), "$ANSWER; server_max_window_bits=8", 'window 8 echoed');
next_msg($w8);    # the snapshot, longer than 256 bytes
my $s8 = '{"activeUsers":4,"apiRequestsPerMinute":1200,"productsCreatedToday"'
    . ':7,"loginsPerHour":12,"logoutsPerHour":5,"timestamp":'
    . '"2026-11-29T10:00:00.000Z","note":"' . ('ab' x 30) . '"}';
$t->redis->publish('dashboard:stats', $s8);
my $m8 = wait_msg($w8, qr/stats:update/);
my $want8 = qq({"event":"stats:update","data":$s8});
ok(length $want8 > 128 && length $want8 <= 256, 'a message of '
    . length($want8) . ' bytes');
ok($m8 && $m8->{rsv1}, 'window 8: compressed');
my ($i8) = Compress::Raw::Zlib::Inflate->new(-WindowBits => -8);
my ($in8, $out8) = (($m8 ? $m8->{raw} : '') . "\x00\x00\xff\xff", '');
$i8->inflate($in8, $out8);
is($out8, $want8, 'and inflates with a 256-byte window');
$w8->close_socket;

# --- client to server ------------------------------------------------------

my $sub = '{"subscribe":["dashboard:api-activity"]}';
send_raw($z1, frame(1, deflate_payload($sub), rsv => 0x40));
my $ack = wait_msg($z1, qr/"subscribed"/);
is($ack && $ack->{text}, '{"event":"subscribed","data":{"ok":true,'
    . '"rooms":["dashboard:api-activity"]}}',
    'a compressed client message is inflated and answered');

# fragmented: RSV1 on the first frame only

my $unsub = deflate_payload('{"unsubscribe":["dashboard:api-activity"]}');
my $half = int(length($unsub) / 2);
send_raw($z1, frame(1, substr($unsub, 0, $half), rsv => 0x40, fin => 0)
    . frame(0, substr($unsub, $half)));
$ack = wait_msg($z1, qr/"unsubscribed"/);
ok($ack, 'a compressed message in two fragments is inflated')
    or diag('no unsubscribed reply');

# the bound: 65,536 bytes inflated are taken, one more is a bomb

my $edge = '{"subscribe":[]' . (' ' x (65536 - 16)) . '}';
is(length $edge, 65536, 'a message of exactly 65,536 bytes');
send_raw($z1, frame(1, deflate_payload($edge), rsv => 0x40));
$ack = wait_msg($z1, qr/"subscribed"/);
ok($ack, 'inflated to 65,536 bytes: taken');

my $bomb = deflate_payload('{"subscribe":[]' . (' ' x (65536 - 15)) . '}');
ok(length $bomb < 200, 'a 65,537-byte message compressed to '
    . length($bomb) . ' bytes');
send_raw($z1, frame(1, $bomb, rsv => 0x40));
my ($code, $reason) = $z1->close_code(10);
is($code, 1009, 'inflating past the message bound closes with 1009');
is($reason, 'message too big', 'its reason');

my $big = raw('/ws', $OFFER);
next_msg($big);
send_raw($big, frame(1, deflate_payload('[' . ('0,' x 500000) . '0]'),
    rsv => 0x40));
is(($big->close_code(10))[0], 1009, 'a 1 MB bomb: 1009');

# the same bound on the other paths: a bomb in fragments (RSV1 on the
# first), and one cut into hundreds of two-byte frames
my $fb = deflate_payload('[' . ('0,' x 500000) . '0]');
my $third = int(length($fb) / 3);
$big = raw('/ws', $OFFER);
next_msg($big);
send_raw($big, frame(1, substr($fb, 0, $third), rsv => 0x40, fin => 0)
    . frame(0, substr($fb, $third, $third), fin => 0)
    . frame(0, substr($fb, 2 * $third)));
is(($big->close_code(10))[0], 1009, 'a bomb in three fragments: 1009');

$big = raw('/ws', $OFFER);
next_msg($big);
my @bits = unpack '(a2)*', $fb;
send_raw($big, frame(1, shift(@bits), rsv => 0x40, fin => 0)
    . join('', map { frame(0, $_, fin => 0) } @bits[0 .. $#bits - 1])
    . frame(0, $bits[-1]));
is(($big->close_code(10))[0], 1009,
    'a bomb in ' . (@bits + 1) . ' frames of two bytes: 1009');

# what else a sender may do (RFC 7692, 7.2.3): end with a final block
# (BFINAL) instead of an empty stored one, or leave 00 00 ff ff on

my $c = raw('/ws', $OFFER);
next_msg($c);
for my $flush (Z_FINISH, Z_SYNC_FLUSH) {
    my ($d) = Compress::Raw::Zlib::Deflate->new(-WindowBits => -15,
        -AppendOutput => 1);
    my $z = '';
    $d->deflate($sub, $z);
    $d->flush($z, $flush);
    send_raw($c, frame(1, $z, rsv => 0x40));
    ok(wait_msg($c, qr/"subscribed"/), $flush == Z_FINISH
        ? 'a message ending with a final block is taken'
        : 'a message that kept its 00 00 ff ff is taken');
}

my ($fin) = Compress::Raw::Zlib::Deflate->new(-WindowBits => -15,
    -AppendOutput => 1);
my $fz = '';
$fin->deflate($sub, $fz);
$fin->flush($fz, Z_FINISH);
send_raw($c, frame(1, "$fz\x01", rsv => 0x40));
is(($c->close_code(10))[0], 1007, 'data after the final block: 1007');

$c = raw('/ws', $OFFER);
next_msg($c);
send_raw($c, frame(1, "\xff\xfe\xfd\xfc garbage", rsv => 0x40));
is(($c->close_code(10))[0], 1007, 'data that is not deflate: 1007');

$c = raw('/ws', $OFFER);
next_msg($c);
send_raw($c, frame(9, 'hi', rsv => 0x40));
is(($c->close_code(10))[0], 1002, 'RSV1 on a control frame: 1002');

$c = raw('/ws', $OFFER);
next_msg($c);
my $cz = deflate_payload($sub);
send_raw($c, frame(1, substr($cz, 0, 3), fin => 0)
    . frame(0, substr($cz, 3), rsv => 0x40));
is(($c->close_code(10))[0], 1002, 'RSV1 on a continuation: 1002');

send_raw($p1, frame(1, deflate_payload($sub), rsv => 0x40));
is(($p1->close_code(10))[0], 1002, 'RSV1 without the extension: 1002');

send_raw($off, frame(1, deflate_payload($sub), rsv => 0x40));
is(($off->close_code(10))[0], 1002,
    'RSV1 where deflate is off (offer declined): 1002');

ok(scalar $t->log_lines(qr/sent a compressed message of more than 65536 bytes, closing/) >= 2,
    'the bombs are logged (info)');

$_->close_socket for $z2;

# --- what a compressed message costs the rate limit ------------------------

# Inflating and reading 65,000 bytes costs the server the same however
# few bytes they came in: a compressed message counts once per started
# 4 KiB it inflates to. Five of ~100 bytes that inflate to 65,000 each
# (16 a message): two fit activity_dashboard_rate 20's second, the third
# closes with 1008. The same five plain, and twenty short compressed
# ones, are all answered.

sub acks_then_close {
    my ($c, $max) = @_;
    my ($acks, $close) = (0, 'none');
    while (my ($op, $data) = $c->next_frame(10)) {
        if ($op == 8) {
            $close = unpack('n', $data) . ' ' . substr($data, 2);
            last;
        }
        next unless $op == 1;
        $acks++ if ($c->{rsv1} ? inflate_payload($data) : $data)
            =~ /"subscribed"/;
        last if $acks == $max;
    }
    return ($acks, $close);
}

my $wide = '{"subscribe":["dashboard:api-activity"]' . (' ' x (65000 - 42))
    . '}';
my $wide_z = deflate_payload($wide);
ok(length $wide_z < 200, 'a 65,000-byte message compressed to '
    . length($wide_z) . ' bytes');

my $rl = raw('/ws', $OFFER);
next_msg($rl);
send_raw($rl, join '', map { frame(1, $wide_z, rsv => 0x40) } 1 .. 5);
my ($acks, $close) = acks_then_close($rl, 5);
is($acks, 2, 'compressed, inflating to 65,000 bytes: two answered');
is($close, '1008 rate limit', 'the third closes with 1008');
ok(wait_for(sub { scalar $t->log_lines(
    qr/\[warn\].*dashboard 127\.0\.0\.1 sent more than 20 messages a second, closing/) }, 5),
    'logged at warn as the rate limit');

$rl = raw('/ws', $OFFER);
next_msg($rl);
send_raw($rl, join '', map { frame(1, $wide) } 1 .. 5);
($acks, $close) = acks_then_close($rl, 5);
$rl->close_socket;
is($acks, 5, 'the same five sent plain: all answered');

$rl = raw('/ws', $OFFER);
next_msg($rl);
send_raw($rl, join '', map { frame(1, deflate_payload($sub), rsv => 0x40) }
    1 .. 20);
($acks, $close) = acks_then_close($rl, 20);
$rl->close_socket;
is($acks, 20, 'twenty short compressed messages at once: all answered');


# --- the ws package -------------------------------------------------------

my $ws = $t->node('ws-client.js', url => $t->ws_url("/ws?token=$token"),
    timeout => 30000, deflate => { threshold => 0 });
my $open = $ws->wait_line(sub { $_->{t} eq 'open' }, 10);
like($open && $open->{extensions}, qr/^permessage-deflate/,
    'ws: permessage-deflate negotiated') or diag(explain([ $ws->lines ]));
my $snap = $ws->wait_line(sub { $_->{t} eq 'message'
    && $_->{event} eq 'snapshot' }, 10);
is(ref($snap && $snap->{data}{events}), 'ARRAY', 'ws: the snapshot');
is($snap && $snap->{data}{events}[0]{userId}, 'long-1',
    'ws: newest event first');
is($snap && $snap->{data}{stats}{activeUsers}, 4, 'ws: the latest stats');

my $ev2 = event('late-2', 104);
publish($ev2);
my $got = $ws->wait_line(sub { $_->{t} eq 'message'
    && $_->{event} eq 'activity:new'
    && ($_->{data}{userId} // '') eq 'late-2' }, 10);
is_deeply($got && $got->{data}, ActivityTest::from_json($ev2),
    'ws: activity:new, the event as published');

# threshold 0: the ws package compresses what it sends
$ws->send({ send => { subscribe => ['dashboard:user-activity'] } });
ok($ws->wait_line(sub { $_->{t} eq 'message'
    && $_->{event} eq 'subscribed' }, 10), 'ws: compressed subscribe '
    . 'answered');

# the same message again: told client_no_context_takeover, the ws
# package compresses it alone, as the server inflates it
$ws->send({ send => { subscribe => ['dashboard:user-activity'] } });
ok(wait_for(sub { (grep { $_->{t} eq 'message'
    && $_->{event} eq 'subscribed' } $ws->lines) == 2 }, 10),
    'ws: the same message compressed again, answered too')
    or diag(explain([ $ws->lines ]));

my $wsp = $t->node('ws-client.js', url => $t->ws_url("/ws?token=$token"),
    timeout => 30000, deflate => JSON::PP::false());
$open = $wsp->wait_line(sub { $_->{t} eq 'open' }, 10);
is($open && $open->{extensions}, '', 'ws without perMessageDeflate: no '
    . 'extension');
ok($wsp->wait_line(sub { $_->{t} eq 'message'
    && $_->{event} eq 'snapshot' }, 10), 'and its snapshot');

# --- socket.io-client -----------------------------------------------------

my $sio = $t->node('sio-client.js', url => $t->base_url . '/dashboard',
    token => $token, timeout => 30000, deflate => { threshold => 0 });
my $conn = $sio->wait_line(sub { $_->{t} eq 'connect' }, 10);
like($conn && $conn->{extensions}, qr/^permessage-deflate/,
    'socket.io-client: permessage-deflate negotiated')
    or diag(explain([ $sio->lines ]));
my $ssnap = $sio->wait_line(sub { $_->{t} eq 'event'
    && $_->{event} eq 'snapshot' }, 10);
is($ssnap && $ssnap->{data}{events}[0]{userId}, 'late-2',
    'socket.io-client: the snapshot');

$sio->send({ emit => 'subscribe', args => [['dashboard:api-activity']],
    tag => 's1' });
ok($sio->wait_line(sub { $_->{t} eq 'ack' && $_->{tag} eq 's1' }, 10),
    'socket.io-client: compressed emit acknowledged');

$deflated0 = metric('activity_frames_deflated_total');
my $ev3 = event('late-3', 105);
publish($ev3);
my $sgot = $sio->wait_line(sub { $_->{t} eq 'event'
    && $_->{event} eq 'activity:new'
    && ($_->{data}{userId} // '') eq 'late-3' }, 10);
is_deeply($sgot && $sgot->{data}, ActivityTest::from_json($ev3),
    'socket.io-client: activity:new, the event as published');
ok($sio->wait_line(sub { $_->{t} eq 'event' && $_->{event} eq 'api:call'
    && ($_->{data}{userId} // '') eq 'late-3' }, 10),
    'socket.io-client: the room event');
ok($ws->wait_line(sub { $_->{t} eq 'message'
    && $_->{event} eq 'activity:new'
    && ($_->{data}{userId} // '') eq 'late-3' }, 10), 'ws: it too');
# one compressed frame per protocol and event name: ws and Socket.IO
# activity:new, Socket.IO api:call
ok(wait_for(sub { metric('activity_frames_deflated_total')
    == $deflated0 + 3 }, 5), 'three compressed frames: one per protocol '
    . 'and event name')
    or diag(metric('activity_frames_deflated_total') . " vs $deflated0");

$_->finish(10) for $ws, $wsp, $sio;

$t->done;
