#!/usr/bin/perl

# activity_dashboard socketio with the real socket.io-client v4: a valid
# admin token connects to /dashboard, gets a snapshot holding an earlier
# event, then activity:new for requests made afterwards (request -> nginx
# -> Redis list -> worker -> PUBLISH -> nginx -> client), and room events
# only after subscribe. The polling transport is refused with a 400.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis pg worker node)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "sio-secret";
    activity_user $http_x_user;

    server {
        listen 127.0.0.1:%%PORT%% %%SSL%%;
        server_name localhost;

        location /socket.io/ {
            activity_dashboard socketio;
        }

        location /api/ {
            activity_track on;
            return 200 "ok\n";
        }

        location = /login {
            activity_event USER_LOGIN method=POST status=2xx;
            return 200 "welcome\n";
        }
    }
}
EOF

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--flush-ms', 20]);
$t->nginx_start;

my $token = jwt_hs256('sio-secret', { sub => 'dash-1', role => 'admin',
    exp => time + 600 });

sub is_event {
    my ($line, $name, $type, $user) = @_;
    return $line->{t} eq 'event' && $line->{event} eq $name
        && ref $line->{data} eq 'HASH'
        && ($line->{data}{eventType} // '') eq $type
        && ($line->{data}{userId} // '') eq $user;
}

# an event before any client: the worker publishes it and keeps it on the
# recent list, so the snapshot holds it

is($t->http(GET => '/api/before', headers => { 'X-User' => 'before-1' })
    ->{status}, 200, 'tracked request before connecting');
ok(wait_for(sub {
    grep { /"before-1"/ }
        $t->redis->lrange('dashboard:events:recent', 0, -1);
}, 15), 'the worker put it on dashboard:events:recent');

my $c = $t->node('sio-client.js', url => $t->base_url . '/dashboard',
    token => $token, timeout => 30000);

ok($c->wait_line(sub { $_->{t} eq 'connect' }, 10), 'connected')
    or diag(explain([ $c->lines ]));

my $snap = $c->wait_line(sub {
    $_->{t} eq 'event' && $_->{event} eq 'snapshot' }, 10);
ok($snap, 'snapshot');
my @snap_events = @{ ($snap && $snap->{data}{events}) || [] };
ok((grep { ($_->{userId} // '') eq 'before-1' } @snap_events),
    'snapshot holds the earlier event')
    or diag(explain($snap));
ok($snap && exists $snap->{data}{stats}, 'snapshot has stats');

my @first = grep { $_->{t} eq 'event' } $c->lines;
is($first[0]{event}, 'snapshot', 'snapshot is the first event');

# activity:new for a request made afterwards

$t->http(GET => '/api/after', headers => { 'X-User' => 'after-1' });
my $new = $c->wait_line(sub {
    is_event($_, 'activity:new', 'API_CALL', 'after-1') }, 15);
ok($new, 'activity:new for a tracked request made after connecting');
is($new && $new->{data}{metadata}{endpoint}, '/api/after', 'its endpoint');
like($new && $new->{data}{id}, qr/^[0-9a-f-]{36}$/, 'its id');

# room events: none before subscribe, then user:login

$t->http(POST => '/login', headers => { 'X-User' => 'login-1' });
ok($c->wait_line(sub {
    is_event($_, 'activity:new', 'USER_LOGIN', 'login-1') }, 15),
    'activity:new for a login before subscribing');

$c->send({ emit => 'subscribe', args => [['dashboard:user-activity']],
    tag => 'sub' });
my $ack = $c->wait_line(sub { $_->{t} eq 'ack' && $_->{tag} eq 'sub' }, 10);
is_deeply($ack && $ack->{data}, { ok => JSON::PP::true(),
    rooms => ['dashboard:user-activity'] }, 'subscribe ack');

$t->http(POST => '/login', headers => { 'X-User' => 'login-2' });
ok($c->wait_line(sub {
    is_event($_, 'activity:new', 'USER_LOGIN', 'login-2') }, 15),
    'activity:new for a login after subscribing');
ok($c->wait_line(sub {
    is_event($_, 'user:login', 'USER_LOGIN', 'login-2') }, 15),
    'user:login after subscribing');

$c->send({ emit => 'subscribe', args => [['dashboard:no-such-room']],
    tag => 'bad' });
$ack = $c->wait_line(sub { $_->{t} eq 'ack' && $_->{tag} eq 'bad' }, 10);
ok($ack && !$ack->{data}{ok}, 'subscribe to an unknown room: ok false')
    or diag(explain($ack));

$c->send({ emit => 'unsubscribe', args => [['dashboard:user-activity']],
    tag => 'unsub' });
$ack = $c->wait_line(sub { $_->{t} eq 'ack' && $_->{tag} eq 'unsub' }, 10);
ok($ack && $ack->{data}{ok}, 'unsubscribe ack') or diag(explain($ack));

$t->http(POST => '/login', headers => { 'X-User' => 'login-3' });
ok($c->wait_line(sub {
    is_event($_, 'activity:new', 'USER_LOGIN', 'login-3') }, 15),
    'activity:new for a login after unsubscribing');

# a last event: frames go out in order, so once it is in, every frame for
# login-3 is too
$t->http(GET => '/api/last', headers => { 'X-User' => 'last-1' });
ok($c->wait_line(sub {
    is_event($_, 'activity:new', 'API_CALL', 'last-1') }, 15),
    'activity:new for the last request');

my @lines = $c->finish;
my @logins = map { $_->{data}{userId} }
    grep { $_->{t} eq 'event' && $_->{event} eq 'user:login' } @lines;
is_deeply(\@logins, ['login-2'],
    'user:login only for the login made while subscribed');
ok(!(grep { $_->{t} eq 'event' && $_->{event} eq 'api:call' } @lines),
    'no api:call without subscribing to dashboard:api-activity');
my %seen;
my @dups = grep { $_->{t} eq 'event' && $_->{event} eq 'activity:new'
    && $seen{ $_->{data}{id} }++ } @lines;
is(scalar @dups, 0, 'no event delivered twice');

# the polling transport

my $r = $t->http(GET => '/socket.io/?EIO=4&transport=polling');
is($r->{status}, 400, 'polling transport: 400');
like($r->{content}, qr/transports.*websocket/, 'it says to use websocket')
    or diag($r->{content});

$c = $t->node('sio-client.js', url => $t->base_url . '/dashboard',
    token => $token, transports => ['polling'], timeout => 15000);
ok($c->wait_line(sub { $_->{t} eq 'connect_error' }, 10),
    'socket.io-client with polling only: connect_error');
$c->finish;

$t->done;
