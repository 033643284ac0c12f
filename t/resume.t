#!/usr/bin/perl

# Resume after reconnect (issue 12): dashboards get the events they
# missed, once each and in order, from the recent-events stream the
# worker writes, across an nginx reload and on another nginx instance;
# Socket.IO's connection state recovery (socket.recovered) with an
# unchanged socket.io-client, the plain protocol with ?offset=.  Beyond
# the window, with the offset trimmed from the stream, or with a forged
# pid or offset: not recovered, and a fresh snapshot.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use POSIX ();
use Redis;
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis pg worker node)]);

my $conf = <<'EOF';
%%GLOBALS%%

http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "resume-secret";
    activity_user $http_x_user;

    server {
        listen 127.0.0.1:LISTEN;
        server_name localhost;

        location /socket.io/ {
            activity_dashboard socketio;
        }

        location /short/socket.io/ {
            activity_dashboard socketio;
            activity_dashboard_recovery 2s;
            activity_dashboard_ping_interval 500ms;
        }

        location /small/socket.io/ {
            activity_dashboard socketio;
            activity_dashboard_recovery 2m max=3;
        }

        location /ws {
            activity_dashboard websocket;
        }

        location /api/ {
            activity_track on;
            return 200 "ok\n";
        }

        location = /status {
            activity_status;
        }
    }
}
EOF

# the directive's errors, at nginx -t, naming it

for my $case (
    [ '0', qr/invalid recovery window "0" in "activity_dashboard_recovery"/ ],
    [ 'soon', qr/invalid recovery window "soon"/ ],
    [ '2m max=0', qr/invalid "max=0" in "activity_dashboard_recovery"/ ],
    [ '2m most=5', qr/invalid parameter "most=5"/ ],
    [ 'off max=5', qr/"activity_dashboard_recovery off" takes no other/ ],
    [ '1m; activity_dashboard_recovery 2m', qr/is duplicate/ ],
) {
    my ($value, $want) = @$case;
    (my $bad = $conf) =~ s/LISTEN/%%PORT%%/;
    $bad =~ s/activity_dashboard_recovery 2s;/activity_dashboard_recovery $value;/;
    my ($rc, $out) = $t->nginx_test($bad);
    isnt($rc, 0, "nginx -t refuses activity_dashboard_recovery $value");
    like($out, $want, '  and says why');
}
(my $ok_conf = $conf) =~ s/LISTEN/%%PORT%%/;
$ok_conf =~ s/activity_dashboard_recovery 2s;/activity_dashboard_recovery 90s max=20;/;
is(($t->nginx_test($ok_conf))[0], 0, 'a window with max= is taken');
$ok_conf =~ s/activity_dashboard_recovery 90s max=20;/activity_dashboard_recovery off;/;
is(($t->nginx_test($ok_conf))[0], 0, 'off is taken');

(my $a_conf = $conf) =~ s/LISTEN/%%PORT%%/;
(my $b_conf = $conf) =~ s/LISTEN/%%PORT_b%%/;

# instance b reaches Redis through a relay that delays its resume reads
# (t/lib/slow_xrange_proxy.pl): live events then reach b's dashboards
# while their gap is being read, and must be neither lost nor doubled
$b_conf =~ s/%%REDIS_PORT%%/%%PORT_proxy%%/;
$t->write_conf($a_conf);
$t->write_conf($b_conf, undef, 'b');

$t->redis_start;

my $proxy = fork;
die "fork: $!" unless defined $proxy;
if ($proxy == 0) {
    exec($^X, "$FindBin::Bin/lib/slow_xrange_proxy.pl", $t->port('proxy'),
        $t->redis_port, 0.3) or POSIX::_exit(127);
}
END { kill 'TERM', $proxy if $proxy }
ok(wait_for(sub { IO::Socket::INET->new(PeerAddr => '127.0.0.1',
    PeerPort => $t->port('proxy')) }, 10), 'the slow relay listens');
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--flush-ms', 20]);
$t->nginx_start;
$t->nginx_start(name => 'b');

my $r = $t->redis;
my $token = jwt_hs256('resume-secret', { sub => 'dash', role => 'admin',
    exp => time + 600 });
my $a = $t->port('http');
my $b = $t->port('b');
my $url_a = "http://127.0.0.1:$a/dashboard";
my $url_b = "http://127.0.0.1:$b/dashboard";

sub hit {
    my ($port, @n) = @_;
    for my $n (@n) {
        is($t->http(GET => "/api/item/$n", port => $port,
            headers => { 'X-User' => "u$n" })->{status}, 200, "request u$n");
    }
}

sub sees {
    my ($c, $user, $event) = @_;
    $event //= 'activity:new';
    return $c->wait_line(sub {
        ($_->{event} // '') eq $event && ($_->{user} // '') eq $user }, 20);
}

# [offset, user] of every activity:new (or $event) a client got
sub feed {
    my ($c, $event) = @_;
    $event //= 'activity:new';
    return map { [ $_->{offset}, $_->{user} ] }
        grep { ($_->{t} // '') eq 'event' && $_->{event} eq $event }
        $c->lines;
}

sub ordered {
    my (@feed) = @_;
    for my $i (1 .. $#feed) {
        my ($p, $q) = map { [ split /-/, $_->[0] // '' ] } @feed[$i - 1, $i];
        return 0 unless @$p == 2 && @$q == 2
            && ($q->[0] > $p->[0] || ($q->[0] == $p->[0] && $q->[1] > $p->[1]));
    }
    return 1;
}

sub connects {
    my ($c) = @_;
    return grep { ($_->{t} // '') eq 'connect' } $c->lines;
}

sub wait_connect {
    my ($c, $n) = @_;
    ok(wait_for(sub { connects($c) >= $n }, 20), "connect #$n")
        or return undef;
    return (connects($c))[$n - 1];
}

# a reference dashboard that never disconnects, on instance b
my $ref = $t->node('sio-resume.js', url => $url_b, token => $token,
    timeout => 120000);
my $sio = $t->node('sio-resume.js', url => $url_a, token => $token,
    timeout => 120000);
my $ws = $t->node('ws-client.js', url => "ws://127.0.0.1:$a/ws?token=$token",
    timeout => 120000, brief => 1);

for ([ ref => $ref ], [ sio => $sio ]) {
    my ($name, $c) = @$_;
    my $first = wait_connect($c, 1);
    ok($first && !$first->{recovered}, "$name: a first connect recovers "
        . 'nothing');
    ok($c->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
        "$name: snapshot");
}
ok($ws->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
    'ws: snapshot');

$sio->send({ emit => 'subscribe', args => [['dashboard:api-activity']],
    tag => 'rooms' });
ok($sio->wait_line(sub { ($_->{t} // '') eq 'ack' }, 10), 'sio: in a room');

hit($a, 1 .. 3);
ok(sees($_, 'u3'), 'live events') for $ref, $sio;
ok($ws->wait_line(sub { ($_->{event} // '') eq 'activity:new'
    && ($_->{data}{userId} // '') eq 'u3' }, 20), 'ws: live events');

my @sio_feed = feed($sio);
like($sio_feed[-1][0] // '', qr/^\d+-\d+$/,
    'each event carries its stream offset as the last argument');
my ($ws_last) = map { $_->{offset} } grep { ($_->{event} // '') eq
    'activity:new' } reverse $ws->lines;
like($ws_last // '', qr/^\d+-\d+$/, 'each websocket frame has an offset');

# 1. nginx reload: the old worker process closes the dashboards (1001);
# events come while they are away

my $master = do { open my $fh, '<', $t->dir . '/nginx.pid'; <$fh> };
chomp $master;
ok(kill('HUP', $master), 'nginx a reloaded');
ok($sio->wait_line(sub { ($_->{t} // '') eq 'disconnect' }, 20),
    'sio: disconnected by the reload');
ok($ws->wait_line(sub { ($_->{t} // '') eq 'close' }, 20),
    'ws: closed by the reload');

hit($b, 4 .. 8);
ok(sees($ref, 'u8'), 'the reference saw them');

$sio->send({ connect => 1 });
my $again = wait_connect($sio, 2);
ok($again && $again->{recovered}, 'after the reload: socket.recovered');
ok(sees($sio, 'u8'), 'the missed events arrived');
ok(sees($sio, 'u8', 'api:call'), 'and the room events: rooms restored');

hit($a, 9);
ok(sees($ref, 'u9') && sees($sio, 'u9') && sees($sio, 'u9', 'api:call'),
    'then live ones');

is_deeply([ feed($sio) ], [ feed($ref) ],
    'every event once, in the stream order, as the reference got them');
ok(ordered(feed($sio)), 'offsets only grow');
is_deeply([ map { $_->[1] } feed($sio, 'api:call') ],
    [ map { "u$_" } 1 .. 9 ], 'room events once each, in order');
is(scalar(grep { ($_->{event} // '') eq 'snapshot' } $sio->lines), 1,
    'a recovered session gets no second snapshot');

my $log = do { open my $fh, '<', $t->error_log; local $/; <$fh> };
like($log, qr/dashboard \S+ recovered [1-9]\d* missed events/,
    'the log says how many it recovered');

# 2. the same session on another nginx instance

$sio->send({ drop => 1 });
ok(wait_for(sub { (grep { ($_->{t} // '') eq 'disconnect' } $sio->lines)
    == 2 }, 10), 'sio: dropped');

hit($a, 10 .. 12);
ok(sees($ref, 'u12'), 'the reference saw them');

$sio->send({ connect => 1, url => $url_b });
my $moved = wait_connect($sio, 3);
ok($moved && $moved->{recovered}, 'instance b recovered the session');
ok(sees($sio, 'u12') && sees($sio, 'u12', 'api:call'),
    'with its missed events and its rooms');
is_deeply([ feed($sio) ], [ feed($ref) ], 'still every event once, in order');

# 2b. under a steady stream of events: drops and resumes in the middle
# of it (events arrive while the gap is read, or both ways): still every
# event once, in order

my $pid = fork;
die "fork: $!" unless defined $pid;
if ($pid == 0) {
    my $q = Redis->new(server => '127.0.0.1:' . $t->redis_port);
    for my $i (1 .. 200) {
        $q->lpush($t->queue, ActivityTest::to_json(ActivityTest::make_event(
            user => "s$i", endpoint => "/steady/$i")));
        select undef, undef, undef, 0.01;
    }
    POSIX::_exit(0);
}
for my $cycle (1 .. 6) {
    my $seen = my @before = feed($ref);
    $sio->send({ drop => 1 });
    ok(wait_for(sub { (grep { ($_->{t} // '') eq 'disconnect' }
        $sio->lines) == 2 + $cycle }, 10), "steady: drop $cycle");
    ok(wait_for(sub { (my @now = feed($ref)) > $seen + 3 }, 20),
        "steady: events while away $cycle");
    $sio->send({ connect => 1, url => $cycle % 2 ? $url_a : $url_b });
    my $c = wait_connect($sio, 3 + $cycle);
    ok($c && $c->{recovered}, "steady: recovered $cycle");
}
waitpid $pid, 0;
ok(sees($ref, 's200') && sees($sio, 's200'), 'steady: all arrived');
is_deeply([ feed($sio) ], [ feed($ref) ],
    'steady: every event once, in order, as the reference got them');

# 3. the plain protocol: ?offset= with the last offset it had

my $ws2 = $t->node('ws-client.js',
    url => "ws://127.0.0.1:$a/ws?token=$token&offset=$ws_last",
    timeout => 60000, brief => 1);
my $first = $ws2->wait_line(sub { ($_->{t} // '') eq 'message' }, 20);
is_deeply($first && [ $first->{event}, $first->{data} ],
    [ 'resume', { recovered => \1 } ], 'ws: resumed');
ok($ws2->wait_line(sub { ($_->{event} // '') eq 'activity:new'
    && ($_->{data}{userId} // '') eq 's200' }, 20), 'ws: the gap arrived');
my @ws_users = map { $_->{data}{userId} }
    grep { ($_->{event} // '') eq 'activity:new' } $ws2->lines;
my @after = map { $_->[1] } feed($ref);
shift @after while @after && $after[0] ne 'u4';
is_deeply(\@ws_users, \@after,
    'ws: every event after its offset, once, in order');
is(scalar @ws_users, 209, 'ws: that is u4 .. u12 and the steady 200');
ok(!grep({ ($_->{event} // '') eq 'snapshot' } $ws2->lines),
    'ws: no snapshot when recovered');

# 4. the offset trimmed from the stream: not recovered, a snapshot

$sio->send({ drop => 1 });
ok(wait_for(sub { (grep { ($_->{t} // '') eq 'disconnect' } $sio->lines)
    == 9 }, 10), 'sio: dropped again');
hit($a, 13);
ok(sees($ref, 'u13'), 'the reference saw it');
$r->xtrim('dashboard:events:stream', 'MAXLEN', 0);
is($r->xlen('dashboard:events:stream'), 0, 'stream trimmed');

my $n_snap = grep { ($_->{event} // '') eq 'snapshot' } $sio->lines;
$sio->send({ connect => 1, url => $url_a });
my $trimmed = wait_connect($sio, 10);
ok($trimmed && !$trimmed->{recovered},
    'trimmed stream: socket.recovered === false');
ok(wait_for(sub { (grep { ($_->{event} // '') eq 'snapshot' } $sio->lines)
    > $n_snap }, 10), 'and a fresh snapshot');
hit($a, 14);
ok(sees($sio, 'u14'), 'the live feed goes on');

my $ws3 = $t->node('ws-client.js',
    url => "ws://127.0.0.1:$a/ws?token=$token&offset=$ws_last",
    timeout => 30000, brief => 1);
$first = $ws3->wait_line(sub { ($_->{t} // '') eq 'message' }, 20);
is_deeply($first && [ $first->{event}, $first->{data} ],
    [ 'resume', { recovered => \0 } ], 'ws: trimmed offset not recovered');
ok($ws3->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
    'ws: and a snapshot');

# 5. beyond the window (2s on /short/): the session is gone

my $short = $t->node('sio-resume.js', url => $url_a, token => $token,
    path => '/short/socket.io/', timeout => 60000);
ok(wait_connect($short, 1), 'short window: connected');
hit($a, 15);
ok(sees($short, 'u15'), 'short window: an event, so an offset');
my ($short_key) = grep { my $p = $r->pttl($_); $p > 0 && $p <= 2000 }
    $r->keys('dashboard:resume:*');
ok($short_key, 'its session record lives for the window');
$short->send({ drop => 1 });
ok($short->wait_line(sub { ($_->{t} // '') eq 'disconnect' }, 10),
    'short window: dropped');
ok(wait_for(sub { !$r->exists($short_key) }, 20),
    'the window passed: the record expired');
hit($a, 16);
$short->send({ connect => 1 });
my $late = wait_connect($short, 2);
ok($late && !$late->{recovered}, 'beyond the window: not recovered');
ok(wait_for(sub { (grep { ($_->{event} // '') eq 'snapshot' } $short->lines)
    == 2 }, 10), 'and a fresh snapshot');

# 5b. a worker process killed: its dashboards' records, refreshed at
# the heartbeats, outlive it, though it never closed them

my $killed = $t->node('sio-resume.js', url => $url_a, token => $token,
    path => '/short/socket.io/', timeout => 60000);
ok(wait_connect($killed, 1), 'kill: connected');
hit($a, 25);
ok(sees($killed, 'u25'), 'kill: an event, so an offset');
my ($kill_key) = grep { my $p = $r->pttl($_); $p > 0 && $p <= 2000 }
    $r->keys('dashboard:resume:*');
ok($kill_key, 'kill: its session record');
select undef, undef, undef, 3;      # longer than the 2 s window
ok($r->exists($kill_key), 'kept past the window by the heartbeats');
my ($victim) = map { /^\s*(\d+)/ ? $1 : () }
    `ps -o pid= --ppid $master`;
ok($victim && kill('KILL', $victim), 'the worker process killed');
ok($killed->wait_line(sub { ($_->{t} // '') eq 'disconnect' }, 20),
    'kill: disconnected');
hit($b, 26, 27);
ok(sees($ref, 'u27'), 'kill: events while away');
$killed->send({ connect => 1 });
my $after_kill = wait_connect($killed, 2);
ok($after_kill && $after_kill->{recovered},
    'kill: recovered on the new worker process');
ok(sees($killed, 'u27'), 'kill: with what it missed');
$killed->finish;

# 6. a gap longer than max= (3 on /small/): not recovered, a snapshot;
# one within it: recovered

my $small = $t->node('sio-resume.js', url => $url_a, token => $token,
    path => '/small/socket.io/', timeout => 60000);
ok(wait_connect($small, 1), 'max=3: connected');
hit($a, 17);
ok(sees($small, 'u17'), 'max=3: an event, so an offset');
$small->send({ drop => 1 });
ok($small->wait_line(sub { ($_->{t} // '') eq 'disconnect' }, 10),
    'max=3: dropped');
hit($a, 18 .. 20);
ok(sees($ref, 'u20'), 'three events while away');
$small->send({ connect => 1 });
my $fits = wait_connect($small, 2);
ok($fits && $fits->{recovered}, 'max=3: three missed events recovered');
ok(sees($small, 'u20'), 'max=3: and sent');
$small->send({ drop => 1 });
ok(wait_for(sub { (grep { ($_->{t} // '') eq 'disconnect' } $small->lines)
    == 2 }, 10), 'max=3: dropped again');
hit($a, 21 .. 24);
ok(sees($ref, 'u24'), 'four events while away');
$small->send({ connect => 1 });
my $over = wait_connect($small, 3);
ok($over && !$over->{recovered}, 'max=3: four missed events: not recovered');
ok(wait_for(sub { (grep { ($_->{event} // '') eq 'snapshot' } $small->lines)
    == 2 }, 10), 'max=3: a fresh snapshot instead');
ok(!grep({ ($_->{event} // '') eq 'activity:new'
    && ($_->{user} // '') eq 'u21' } $small->lines),
    'max=3: none of the gap replayed');
$small->finish;

# 7. forged or garbage pid and offset: not recovered, nothing breaks

sub resumes {
    my $text = $t->http(GET => '/status', port => $a)->{content} // '';
    return map { $text =~ /^activity_dashboard_resumes_total\{result="$_"\} (\d+)$/m
        ? $1 : undef } qw(recovered not_recovered);
}
my @resumes0 = resumes();
ok($resumes0[0] > 0 && $resumes0[1] > 0,
    "activity_status counts resumes (@resumes0)");

my ($last_off) = map { $_->[0] } (feed($ref))[-1];
for my $case (
    [ 'garbage pid', { pid => 'x' x 5000, offset => $last_off } ],
    [ 'unknown pid', { pid => 'A' x 20, offset => $last_off } ],
    [ 'garbage offset', { pid => 'B' x 20, offset => "1-\x{2603}" } ],
    [ 'huge offset', { pid => 'C' x 20,
        offset => '99999999999999999999999-1' } ],
    [ 'no offset', { pid => 'D' x 20 } ],
    [ 'numbers', { pid => 12, offset => 13 } ],
) {
    my ($name, $auth) = @$case;
    my $c = $t->node('sio-resume.js', url => $url_a, token => $token,
        auth => $auth, timeout => 30000);
    my $con = wait_connect($c, 1);
    ok($con && !$con->{recovered}, "$name: not recovered");
    ok($c->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
        "$name: snapshot");
    $c->finish;
}

for my $off ('abc', '1-0', '99999999999999999999999-1', '-', '1-2-3') {
    my $c = $t->node('ws-client.js',
        url => "ws://127.0.0.1:$a/ws?token=$token&offset=$off",
        timeout => 30000, brief => 1);
    my $m = $c->wait_line(sub { ($_->{t} // '') eq 'message' }, 20);
    is_deeply($m && [ $m->{event}, $m->{data} ],
        [ 'resume', { recovered => \0 } ], "ws offset $off: not recovered");
    ok($c->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
        "ws offset $off: snapshot");
    $c->finish;
}

# a pid that is not a string asks for no resume: the 10 others count
is_deeply([ resumes() ], [ $resumes0[0], $resumes0[1] + 10 ],
    'the forgeries counted as not recovered, none as recovered')
    or diag(explain([ resumes() ], \@resumes0));

# the token is still checked on a resume

my $bad = $t->node('sio-resume.js', url => $url_a, token => 'not-a-token',
    auth => { pid => 'E' x 20, offset => $last_off }, timeout => 30000);
ok($bad->wait_line(sub { ($_->{t} // '') eq 'connect_error' }, 10),
    'a resume with a bad token is refused');
$bad->finish;

$_->finish for $sio, $ref, $ws2, $ws3, $short;

ok(kill(0, $master), 'nginx a still runs');
$t->nginx_stop('QUIT', 'b');
$t->nginx_stop;
kill 'TERM', $proxy;
waitpid $proxy, 0;
$proxy = 0;

# the kill above is this test's: the master's alert about it is expected
my $alog = $t->error_log;
my $atext = do { local (@ARGV, $/) = $alog; <> };
is(scalar(() = $atext =~ /\[alert\].*exited on signal 9/g), 1,
    'the master saw the kill');
$atext =~ s/^.*\[alert\].*exited on signal 9.*\n//mg;
open my $afh, '>', $alog or die;
print $afh $atext;
close $afh;

$t->done;
