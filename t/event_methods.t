#!/usr/bin/perl

# The module under the level-triggered event methods (events { use poll; }
# and use select;): with Redis (queue and subscriber connections) and idle
# dashboards (plain WebSocket and socket.io), events flow to the
# dashboards, and an idle nginx worker stays idle: an event left
# registered with nothing to do (a write event after the buffer is
# drained, a read event after the end) fires on every loop iteration of
# these methods, a busy loop burning a whole core.
#
# Debian's nginx has neither method: this file needs TEST_NGINX_POLL, an
# nginx 1.22.1 built with --with-compat --with-poll_module
# --with-select_module (README "Building" says how), and is skipped
# without it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);
use ActivityTest qw(wait_for jwt_hs256 make_event to_json);

# not set: skipped (CI runs Debian's nginx); set to a binary without
# poll or select: a mistake, stop loudly
my ($nginx, $why) = ActivityTest::poll_nginx();
BAIL_OUT($why) if !$nginx && $ENV{TEST_NGINX_POLL};
plan skip_all => $why unless $nginx;

my $t = ActivityTest->new(needs => [qw(module redis pg worker node)]);
$t->event_method(undef, nginx => $nginx);

my $conf = <<'EOF';
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "em-secret";
    activity_user $http_x_user;

    server {
        # small socket buffers: writes to a client that does not read
        # soon wait for the write event
        listen 127.0.0.1:%%PORT%% sndbuf=16k;
        server_name localhost;

        location /ws {
            activity_dashboard websocket;
        }

        location /socket.io/ {
            activity_dashboard socketio;
        }

        location /api/ {
            activity_track on;
            return 200 "ok\n";
        }
    }
}
EOF

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--flush-ms', 20]);

my $token = jwt_hs256('em-secret', { sub => 'dash-em', role => 'admin',
    exp => time + 600 });

for my $method (qw(poll select)) {
    $t->event_method($method);
    $t->write_conf($conf);
    $t->nginx_start;

    ok(wait_for(sub {
        $t->log_lines(qr/using the "\Q$method\E" event method/) }, 10),
        "$method: nginx uses the $method event method");

    my $ws_url = 'ws://127.0.0.1:' . $t->port('http') . "/ws?token=$token";
    my @ws = map { $t->node('ws-client.js', url => $ws_url,
        timeout => 60000) } 1 .. 2;
    my $sio = $t->node('sio-client.js', url => $t->base_url . '/dashboard',
        token => $token, timeout => 60000);

    for my $i (0 .. $#ws) {
        ok($ws[$i]->wait_line(sub { $_->{t} eq 'message'
            && ($_->{event} // '') eq 'snapshot' }, 15),
            "$method: websocket dashboard $i: snapshot");
    }
    ok($sio->wait_line(sub { $_->{t} eq 'event'
        && $_->{event} eq 'snapshot' }, 15),
        "$method: socket.io dashboard: snapshot");

    # events flow: request, queue, worker, PUBLISH, every dashboard

    my $user = "em-$method";
    is($t->http(GET => "/api/$method", headers => { 'X-User' => $user })
        ->{status}, 200, "$method: tracked request");
    for my $i (0 .. $#ws) {
        ok($ws[$i]->wait_line(sub { $_->{t} eq 'message'
            && ($_->{event} // '') eq 'activity:new'
            && ($_->{data}{userId} // '') eq $user }, 20),
            "$method: websocket dashboard $i: activity:new");
    }
    ok($sio->wait_line(sub { $_->{t} eq 'event'
        && $_->{event} eq 'activity:new'
        && ($_->{data}{userId} // '') eq $user }, 20),
        "$method: socket.io dashboard: activity:new");

    # a dashboard that falls behind and catches up: a small receive
    # buffer, nothing read while 32 x 64 KiB events go out (far more than
    # the socket buffers hold: nginx waits for the write event), then
    # everything read

    my $raw = $t->ws_raw("/ws?token=$token", rcvbuf => 4096);
    ok(ref $raw, "$method: raw websocket dashboard upgraded");
    my $snapped = ref $raw && $raw->next_text(qr/"snapshot"/, 10);
    ok($snapped, "$method: raw websocket dashboard: snapshot");
    my @ids;
    for (1 .. 32) {
        my $e = make_event(type => 'API_CALL', user => "slow-$method",
            details => { blob => 'x' x 65536 });
        push @ids, $e->{id};
        $t->redis->publish('dashboard:events', to_json([$e]));
    }
    my $last = 0;
    if (ref $raw) {
        my $end = time + 30;
        while (time < $end) {
            my $text = $raw->next_text(qr/activity:new/, 5) // last;
            last if index($text, $ids[-1]) >= 0 && ($last = 1);
        }
    }
    ok($last, "$method: the dashboard that fell behind has every event");
    ok(!$t->log_lines(qr/does not read/),
        "$method: and was not dropped");

    # the worker now idle, with both Redis connections and three held
    # dashboards: its CPU time over a few seconds.  A busy loop burns
    # about 100 % of a core; the bound, 20 % of the interval, is five
    # times below that: a behaviour check (loops or not), not a timing
    # assertion (an idle worker uses well under 1 %)

    my @workers = $t->nginx_worker_pids;
    is(scalar @workers, 1, "$method: one nginx worker");
    my $pid = $workers[0];
    my $interval = 4;
    my ($cpu0, $t0) = (ActivityTest::cpu_seconds($pid), time);
    sleep $interval;
    my ($cpu1, $t1) = (ActivityTest::cpu_seconds($pid), time);
    my $share = ($cpu1 - $cpu0) / ($t1 - $t0);
    ok($share < 0.20, sprintf('%s: idle worker used %.1f %% of a core'
        . ' over %.1f s (a busy loop: ~100 %%)', $method, 100 * $share,
        $t1 - $t0));
    diag(sprintf '%s: idle worker cpu %.2f s in %.2f s', $method,
        $cpu1 - $cpu0, $t1 - $t0) if $ENV{TEST_VERBOSE};

    # still serving after the idle period

    $user = "em-$method-after";
    $t->http(GET => "/api/$method", headers => { 'X-User' => $user });
    ok($sio->wait_line(sub { $_->{t} eq 'event'
        && $_->{event} eq 'activity:new'
        && ($_->{data}{userId} // '') eq $user }, 20),
        "$method: socket.io dashboard: activity:new after idling");

    $_->finish for @ws, $sio;
    $raw->close_socket if ref $raw;
    $t->nginx_stop;
}

$t->done;
