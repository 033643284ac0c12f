#!/usr/bin/perl

# Tokens remembered by an nginx worker process after verification are
# shared by activity_auth_jwt and the dashboard handshake (issue 11 §5):
# a remembered token is honoured only with the key it was verified with,
# only while its exp still holds, and the role each location requires is
# checked at every use, against the token's roles one by one.  One nginx
# worker process, so every use after the first meets the remembered
# token.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use Test::More;
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF2');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "cache-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        add_header X-Sub $activity_jwt_sub always;
        add_header X-Role $activity_jwt_role always;

        location /admin/ {
            activity_auth_jwt role=admin;
            alias %%TESTDIR%%/html/;
        }

        location /viewer/ {
            activity_auth_jwt role=viewer;
            alias %%TESTDIR%%/html/;
        }

        location /any/ {
            activity_auth_jwt;
            alias %%TESTDIR%%/html/;
        }

        location /other/ {
            activity_jwt_secret "other-secret";
            activity_auth_jwt;
            alias %%TESTDIR%%/html/;
        }

        location /strict/ {
            activity_jwt_leeway 0;
            activity_auth_jwt;
            alias %%TESTDIR%%/html/;
        }

        location /ws {
            activity_dashboard websocket;
            activity_dashboard_role admin;
        }

        location /ws-strict {
            activity_jwt_leeway 0;
            activity_dashboard websocket;
            activity_dashboard_role admin;
        }
    }
}
EOF2

mkdir $t->dir . '/html' or die "mkdir: $!";
open my $fh, '>', $t->dir . '/html/index.html' or die "index.html: $!";
print $fh "ok\n";
close $fh;

$t->redis_start;
$t->nginx_start;

sub get {
    my ($path, $token) = @_;
    my $r = $t->http(GET => $path,
        headers => { Authorization => "Bearer $token" });
    return $r->{status};
}

# the status of a WebSocket handshake with the token as a bearer
sub upgrade {
    my ($path, $token) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port, Timeout => 10) or return "connect: $!";
    print $s "GET $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        . "Sec-WebSocket-Version: 13\r\n"
        . "Authorization: Bearer $token\r\n\r\n";
    my $line = <$s> // '';
    close $s;
    return $line =~ m{^HTTP/1\.1 (\d+)} ? $1 : "no answer";
}

my $now = time;
my $admin = jwt_hs256('cache-secret',
    { sub => 'ann', role => 'admin', exp => $now + 600 });
my $viewer = jwt_hs256('cache-secret',
    { sub => 'vic', roles => ['viewer'], exp => $now + 600 });

# the role is checked at every use, remembered or not
is(get('/admin/', $admin), 200, 'admin token where admin is required');
my $r = $t->http(GET => '/admin/',
    headers => { Authorization => "Bearer $admin" });
is($r->{status}, 200, 'again: remembered');
is($r->{headers}{'x-sub'}, 'ann', '$activity_jwt_sub from the remembered');
is($r->{headers}{'x-role'}, 'admin', '$activity_jwt_role from it too');
is(get('/viewer/', $admin), 403, 'remembered admin token: no viewer role');
is(upgrade('/ws', $admin), 101, 'dashboard handshake with the admin token');
is(upgrade('/ws', $admin), 101, 'and again');

is(get('/viewer/', $viewer), 200, 'viewer token where viewer is required');
is(get('/admin/', $viewer), 403, 'remembered viewer token: no admin role');
is(upgrade('/ws', $viewer), 403,
    'remembered viewer token refused by the admin dashboard');
is(upgrade('/ws', $viewer), 403, 'and again');

# roles are remembered one by one: "x,admin" is not "admin"
my $comma = jwt_hs256('cache-secret',
    { sub => 'cat', roles => ['x,admin'], exp => $now + 600 });
$r = $t->http(GET => '/any/',
    headers => { Authorization => "Bearer $comma" });
is($r->{status}, 200, 'a role holding a comma, no role required');
is($r->{headers}{'x-role'}, 'x,admin', 'its roles as the variable says');
is(get('/admin/', $comma), 403, 'remembered: "x,admin" is not "admin"');
is(upgrade('/ws', $comma), 403, 'nor for the dashboard');

# the key is part of what is remembered
is(get('/other/', $admin), 401,
    'remembered under one secret, refused under another');
is(upgrade('/ws', $admin), 101, 'still honoured under its own');

# exp is checked again at every use, with the leeway of the location
my $exp = time + 4;
my $soon = jwt_hs256('cache-secret',
    { sub => 'sue', role => 'admin', exp => $exp });
is(get('/strict/', $soon), 200, 'a token about to expire');
is(upgrade('/ws-strict', $soon), 101, 'dashboard: the same token');
is(upgrade('/ws-strict', $soon), 101, 'again: remembered');
wait_for(sub { time >= $exp + 1 }, 30, 0.2);
is(get('/strict/', $soon), 401, 'expired: refused, remembered or not');
is(upgrade('/ws-strict', $soon), 401, 'dashboard: refused too');
is(upgrade('/ws-strict', $soon), 401, 'and again');

$t->done;
