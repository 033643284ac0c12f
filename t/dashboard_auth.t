#!/usr/bin/perl

# Dashboard authentication: bad signature, expired, "alg": "none", another
# algorithm than the configured one (HS384/HS512 with the right secret;
# HS256 signed with the RS256 public key), missing role and no token are
# each refused: HTTP 401/403 before the upgrade for a token on the
# handshake (websocket, and socketio with ?token=), a Socket.IO
# CONNECT_ERROR with the reason for a token in the CONNECT auth object.
# A role in a "roles" array is accepted. Refusals are logged without the
# token.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 qw(encode_base64);
use Test::More;
use ActivityTest qw(wait_for jwt_hs256 jwt_hmac jwt_unsigned b64url
    to_json);

my $t = ActivityTest->new(needs => [qw(module redis node)]);
my $d = $t->dir;

# an RSA key pair for the RS256 server

my ($rc, $out) = $t->run_cmd('openssl', 'genpkey', '-algorithm', 'RSA',
    '-pkeyopt', 'rsa_keygen_bits:2048', '-out', "$d/rsa.key");
BAIL_OUT("openssl genpkey: $out") if $rc;
($rc, $out) = $t->run_cmd('openssl', 'pkey', '-in', "$d/rsa.key",
    '-pubout', '-out', "$d/rsa.pub");
BAIL_OUT("openssl pkey: $out") if $rc;

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        activity_jwt_secret "auth-secret";

        location /socket.io/ {
            activity_dashboard socketio;
        }

        location /ws {
            activity_dashboard websocket;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_rs%%;
        server_name localhost;

        activity_jwt_key %%TESTDIR%%/rsa.pub RS256;

        location /socket.io/ {
            activity_dashboard socketio;
        }

        location /ws {
            activity_dashboard websocket;
        }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $secret = 'auth-secret';
my $http = $t->port('http');
my $rs = $t->port('rs');

# An RS256 token signed with the test's private key.
sub jwt_rs256 {
    my ($claims) = @_;
    my $input = b64url(to_json({ alg => 'RS256', typ => 'JWT' })) . '.'
        . b64url(to_json($claims));
    open my $fh, '>', "$d/input" or die "$d/input: $!";
    print $fh $input;
    close $fh;
    my ($rc, $out) = $t->run_cmd('openssl', 'dgst', '-sha256', '-sign',
        "$d/rsa.key", '-out', "$d/sig", "$d/input");
    die "openssl dgst: $out" if $rc;
    open $fh, '<:raw', "$d/sig" or die "$d/sig: $!";
    local $/;
    my $sig = <$fh>;
    return $input . '.' . b64url($sig);
}

my $pub = do { open my $fh, '<', "$d/rsa.pub" or die; local $/; <$fh> };

my $now = time;
my %ok = (sub => 'dash', role => 'admin', exp => $now + 600);

# [ name, port, token (undef: none), status, CONNECT_ERROR reason ]
my @cases = (
    [ 'bad signature', $http,
        jwt_hs256('not-the-secret', \%ok), 401, qr/^invalid token$/ ],
    [ 'expired', $http,
        jwt_hs256($secret, { %ok, exp => $now - 60 }), 401,
        qr/^token expired$/ ],
    [ 'alg none', $http, jwt_unsigned(\%ok), 401,
        qr/^(invalid token|wrong algorithm)$/ ],
    [ 'HS384 with the right secret', $http,
        jwt_hmac('HS384', $secret, \%ok), 401, qr/^wrong algorithm$/ ],
    [ 'HS512 with the right secret', $http,
        jwt_hmac('HS512', $secret, \%ok), 401, qr/^wrong algorithm$/ ],
    [ 'HS256 signed with the RS256 public key', $rs,
        jwt_hmac('HS256', $pub, \%ok), 401,
        qr/^(wrong algorithm|invalid token)$/ ],
    [ 'RS256 token on the HS256 server', $http, jwt_rs256(\%ok), 401,
        qr/^(wrong algorithm|invalid token)$/ ],
    [ 'role viewer', $http,
        jwt_hs256($secret, { %ok, role => 'viewer' }), 403,
        qr/^missing role$/ ],
    [ 'no role claim', $http,
        jwt_hs256($secret, { sub => 'dash', exp => $now + 600 }), 403,
        qr/^missing role$/ ],
    [ 'roles without admin', $http,
        jwt_hs256($secret, { %ok, role => undef, roles => ['viewer'] }),
        403, qr/^missing role$/ ],
    [ 'garbage', $http, 'not.a.token', 401, qr/^invalid token$/ ],
    [ 'no token', $http, undef, 401, qr/^no token$/ ],
    [ 'admin', $http, jwt_hs256($secret, \%ok), 101 ],
    [ 'roles containing admin', $http,
        jwt_hs256($secret, { sub => 'dash', exp => $now + 600,
            roles => ['viewer', 'admin'] }), 101 ],
    [ 'RS256 admin', $rs, jwt_rs256(\%ok), 101 ],
    [ 'RS256 roles containing admin', $rs,
        jwt_rs256({ sub => 'dash', exp => $now + 600,
            roles => ['admin'] }), 101 ],
);

my @tokens = grep { defined } map { $_->[2] } @cases;

# websocket: the token on the handshake, ?token= or Authorization: Bearer

sub ws_try {
    my ($port, %o) = @_;
    my $c = $t->node('ws-client.js', timeout => 10000, %o,
        url => "ws://127.0.0.1:$port$o{path}");
    my $r = $c->wait_line(sub { $_->{t} =~ /^(open|http|close)$/ }, 10);
    $c->finish;
    return $r ? $r->{t} eq 'open' ? 101 : $r->{status} // 'closed'
        : 'nothing';
}

for my $case (@cases) {
    my ($name, $port, $token, $status) = @$case;

    my $q = defined $token ? "?token=$token" : '';
    is(ws_try($port, path => "/ws$q"), $status,
        "websocket, ?token=, $name: $status");

    next unless defined $token;
    is(ws_try($port, path => '/ws',
        headers => { Authorization => "Bearer $token" }), $status,
        "websocket, Authorization: Bearer, $name: $status");

    # socketio with the token on the handshake
    is(ws_try($port, path => "/socket.io/?EIO=4&transport=websocket"
        . "&token=$token"), $status,
        "socketio, ?token=, $name: $status");
}

# socketio: the token in the CONNECT auth object

for my $case (@cases) {
    my ($name, $port, $token, $status, $reason) = @$case;

    my $c = $t->node('sio-client.js', timeout => 10000,
        url => "http://127.0.0.1:$port/dashboard",
        defined $token ? (token => $token) : ());
    my $r = $c->wait_line(sub { $_->{t} =~ /^connect(_error)?$/ }, 10);
    if ($status == 101) {
        is($r && $r->{t}, 'connect', "socketio, auth, $name: connected");
        ok($c->wait_line(sub {
            $_->{t} eq 'event' && $_->{event} eq 'snapshot' }, 10),
            "socketio, auth, $name: snapshot");
    } else {
        is($r && $r->{t}, 'connect_error',
            "socketio, auth, $name: connect_error");
        like($r && $r->{message}, $reason,
            "socketio, auth, $name: reason");
        is_deeply($r && $r->{data}, { status => $status },
            "socketio, auth, $name: data.status $status");
    }
    $c->finish;
}

# no handshake token, no CONNECT either: no dashboard data flows
{
    my $c = $t->node('ws-client.js', timeout => 10000,
        url => "ws://127.0.0.1:$http/socket.io/?EIO=4&transport=websocket");
    ok($c->wait_line(sub { $_->{t} eq 'open' }, 10),
        'socketio without a handshake token: upgraded (CONNECT decides)');
    ok(!$c->wait_line(sub { $_->{t} eq 'text' && $_->{text} =~ /snapshot/ },
        1), 'no snapshot before CONNECT');
    $c->finish;
}

# the log: one line a refusal, with the reason, never the token

my $log = do {
    open my $fh, '<', $t->error_log or die;
    local $/;
    <$fh>;
};
for my $reason ('invalid token', 'token expired', 'wrong algorithm',
    'missing role', 'no token')
{
    ok((grep { /\[warn\] .*activity: dashboard refused 127\.0\.0\.1: /
        && /: \Q$reason\E$/ } split /\n/, $log),
        "refusal logged: $reason");
}
my @leaks;
for my $token (@tokens) {
    for my $part (grep { length > 8 } split /\./, $token) {
        push @leaks, $part if index($log, $part) >= 0;
    }
}
is_deeply(\@leaks, [], 'no token text in the error log');

$t->done;
