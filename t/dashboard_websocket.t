#!/usr/bin/perl

# activity_dashboard websocket with a plain WebSocket client (Node ws):
# snapshot first, activity:new for requests made afterwards (through the
# worker's PUBLISH), subscribe/unsubscribe acks, room events only while
# subscribed, {"auth":…} extending a session, expiry closing with 1008.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use Test::More;
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis pg worker node)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "ws-secret";
    activity_user $http_x_user;

    server {
        listen 127.0.0.1:%%PORT%% %%SSL%%;
        server_name localhost;

        location /ws {
            activity_dashboard websocket;
        }

        location /api/ {
            activity_track on;
            return 200 "ok\n";
        }

        location = /login {
            activity_event USER_LOGIN method=POST status=2xx;
            return 200;
        }

        location = /logout {
            activity_event USER_LOGOUT method=POST status=2xx;
            return 200;
        }

        location = /products {
            activity_event PRODUCT_CREATED method=POST status=201;
            return 201;
        }
    }
}
EOF

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--flush-ms', 20]);
$t->nginx_start;

my $secret = 'ws-secret';
my $token = jwt_hs256($secret, { sub => 'dash-ws', role => 'admin',
    exp => time + 600 });
my $url = $t->ws_url('/ws');

sub is_msg {
    my ($line, $name, $type, $user) = @_;
    return $line->{t} eq 'message' && ($line->{event} // '') eq $name
        && ref $line->{data} eq 'HASH'
        && ($line->{data}{eventType} // '') eq $type
        && ($line->{data}{userId} // '') eq $user;
}

sub wait_msg {
    my ($c, $name, $type, $user) = @_;
    return $c->wait_line(sub { is_msg($_, $name, $type, $user) }, 15);
}

sub wait_reply {
    my ($c, $event, $n) = @_;
    my $seen = 0;
    return $c->wait_line(sub {
        $_->{t} eq 'message' && ($_->{event} // '') eq $event
            && ++$seen == ($n // 1) }, 10);
}

my $c = $t->node('ws-client.js', url => "$url?token=$token",
    timeout => 30000);

ok($c->wait_line(sub { $_->{t} eq 'open' }, 10), 'open')
    or diag(explain([ $c->lines ]));
my $snap = wait_reply($c, 'snapshot');
ok($snap, 'snapshot');
is(ref($snap && $snap->{data}{events}), 'ARRAY', 'snapshot events array');
ok($snap && exists $snap->{data}{stats}, 'snapshot stats');
my @first = grep { $_->{t} eq 'message' } $c->lines;
is($first[0]{event}, 'snapshot', 'snapshot is the first frame');

# activity:new for a request made afterwards

$t->http(GET => '/api/one', headers => { 'X-User' => 'u-1' });
my $new = wait_msg($c, 'activity:new', 'API_CALL', 'u-1');
ok($new, 'activity:new for a tracked request');
is($new && $new->{data}{metadata}{endpoint}, '/api/one', 'its endpoint');

# subscribe: acks and room events

$c->send({ send => { subscribe => ['dashboard:user-activity',
    'dashboard:product-activity'] } });
my $ack = wait_reply($c, 'subscribed');
is_deeply($ack && $ack->{data}, { ok => JSON::PP::true(),
    rooms => ['dashboard:user-activity', 'dashboard:product-activity'] },
    'subscribed ack');

$t->http(POST => '/login', headers => { 'X-User' => 'u-2' });
$t->http(POST => '/products', headers => { 'X-User' => 'u-3' });
$t->http(POST => '/logout', headers => { 'X-User' => 'u-4' });
$t->http(GET => '/api/two', headers => { 'X-User' => 'u-5' });

ok(wait_msg($c, 'user:login', 'USER_LOGIN', 'u-2'), 'user:login');
ok(wait_msg($c, 'product:created', 'PRODUCT_CREATED', 'u-3'),
    'product:created');
ok(wait_msg($c, 'user:logout', 'USER_LOGOUT', 'u-4'), 'user:logout');
ok(wait_msg($c, 'activity:new', 'API_CALL', 'u-5'),
    'activity:new for the API call');
for my $u (qw(u-2 u-3 u-4)) {
    ok((grep { $_->{t} eq 'message' && $_->{event} eq 'activity:new'
        && ($_->{data}{userId} // '') eq $u } $c->lines),
        "activity:new too for $u");
}

$c->send({ send => { subscribe => 'dashboard:api-activity' } });
$ack = wait_reply($c, 'subscribed', 2);
is_deeply($ack && $ack->{data}, { ok => JSON::PP::true(),
    rooms => ['dashboard:user-activity', 'dashboard:product-activity',
        'dashboard:api-activity'] }, 'a room name alone joins it too')
    or diag(explain($ack));

$t->http(GET => '/api/three', headers => { 'X-User' => 'u-6' });
ok(wait_msg($c, 'api:call', 'API_CALL', 'u-6'), 'api:call once subscribed');

$c->send({ send => { subscribe => ['dashboard:nope'] } });
$ack = wait_reply($c, 'subscribed', 3);
ok($ack && !$ack->{data}{ok}, 'unknown room: ok false')
    or diag(explain($ack));

$c->send({ send => { unsubscribe => ['dashboard:user-activity',
    'dashboard:api-activity'] } });
$ack = wait_reply($c, 'unsubscribed');
ok($ack && $ack->{data}{ok}, 'unsubscribed ack') or diag(explain($ack));

$t->http(POST => '/login', headers => { 'X-User' => 'u-7' });
$t->http(GET => '/api/four', headers => { 'X-User' => 'u-8' });
$t->http(POST => '/products', headers => { 'X-User' => 'u-9' });
ok(wait_msg($c, 'product:created', 'PRODUCT_CREATED', 'u-9'),
    'product:created while still subscribed to it');
ok(wait_msg($c, 'activity:new', 'API_CALL', 'u-8'), 'activity:new u-8');

$c->send({ send => { hello => 1 } });
my $err = wait_reply($c, 'error');
ok($err && !$err->{data}{ok}, 'an unknown client frame: error reply');

my @lines = $c->finish;
my %rooms;
for (grep { $_->{t} eq 'message' } @lines) {
    next unless $_->{event} =~ /^(user|product|api):/;
    push @{ $rooms{ $_->{event} } }, $_->{data}{userId};
}
is_deeply(\%rooms, {
    'user:login' => ['u-2'], 'user:logout' => ['u-4'],
    'product:created' => ['u-3', 'u-9'], 'api:call' => ['u-6'],
}, 'room events exactly while subscribed');
my %seen;
is(scalar(grep { $_->{t} eq 'message' && $_->{event} eq 'activity:new'
    && $seen{ $_->{data}{id} }++ } @lines), 0, 'no event twice');

# Authorization: Bearer

$c = $t->node('ws-client.js', url => $url, timeout => 10000,
    headers => { Authorization => "Bearer $token" });
ok(wait_reply($c, 'snapshot'), 'Authorization: Bearer: snapshot');
$c->finish;

# a token expired a second ago is within the 5 s leeway: made just
# before a handshake from here (no client to start), 4 s of margin
{
    my $late = jwt_hs256($secret, { sub => 'dash-ws', role => 'admin',
        exp => int(time) - 1 });
    my $s = $t->socket;
    print $s "GET /ws?token=$late HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        . "Sec-WebSocket-Version: 13\r\n\r\n";
    my $status = <$s> // '';
    like($status, qr{^HTTP/1\.1 101 }, 'token in the leeway: upgraded');
    close $s;
}

# expiry: the session ends at the token's exp unless {"auth": …} brings
# a fresh token; 15 s leave the clients time to start and refresh

my $soon = jwt_hs256($secret, { sub => 'dash-ws', role => 'admin',
    exp => int(time) + 15 });
my $fresh = jwt_hs256($secret, { sub => 'dash-ws', role => 'admin',
    exp => time + 600 });

my $a = $t->node('ws-client.js', url => "$url?token=$soon",
    timeout => 60000);
my $b = $t->node('ws-client.js', url => "$url?token=$soon",
    timeout => 60000);
ok(wait_reply($a, 'snapshot'), 'a connects');
ok(wait_reply($b, 'snapshot'), 'b connects');

$b->send({ send => { auth => 'garbage' } });
my $r = wait_reply($b, 'auth');
ok($r && !$r->{data}{ok}, 'auth with a bad token: ok false')
    or diag(explain($r));
$b->send({ send => { auth => $fresh } });
$r = wait_reply($b, 'auth', 2);
ok($r && $r->{data}{ok}, 'auth with a fresh token: ok') or diag(explain($r));

$r = $a->wait_line(sub { $_->{t} eq 'message' && $_->{event} eq 'error' },
    60);
is($r && $r->{data}{message}, 'token expired', 'a: token expired');
$r = $a->wait_line(sub { $_->{t} eq 'close' }, 10);
is($r && $r->{code}, 1008, 'a: closed with 1008');

$b->send({ send => { subscribe => ['dashboard:api-activity'] } });
ok(wait_reply($b, 'subscribed'), 'b, refreshed, still served after a ended');
ok(!(grep { $_->{t} eq 'close' } $b->lines), 'b not closed');
$a->finish;
$b->finish;

like(do { open my $fh, '<', $t->error_log; local $/; <$fh> },
    qr/activity: dashboard 127\.0\.0\.1 token expired, user "dash-ws"/,
    'expiry logged');

$t->done;
