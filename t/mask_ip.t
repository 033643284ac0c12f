#!/usr/bin/perl

# activity_mask_ip: events carry the IPv4 /24 and the IPv6 /48 of the
# client address only, on the queue and in activity_logs; off by default;
# inherited from the server level and turned off again in a location.
# Client addresses: 127.0.0.1 and 127.1.2.3 (a loopback alias), ::1 when
# the machine has it, and any address through the realip module.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use IO::Socket::IP;
use Socket qw(AF_INET6);
use Test::More;
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);

my $v6 = IO::Socket::IP->new(LocalHost => '::1', LocalPort => 0,
    Listen => 1, Family => AF_INET6);
my $no_v6 = $v6 ? undef : "no IPv6 loopback here (::1: $@)";
close $v6 if $v6;

my $listen6 = $no_v6 ? '' : 'listen [::1]:%%PORT%%;';
my $listen6_inherit = $no_v6 ? '' : 'listen [::1]:%%PORT_inherit%%;';

(my $conf = <<'EOF') =~ s/LISTEN6_INHERIT/$listen6_inherit/;
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;

    server {
        listen 127.0.0.1:%%PORT%%;
        LISTEN6
        server_name localhost;

        activity_track on;

        location /masked/ {
            activity_mask_ip on;
            return 200;
        }

        location /plain/ {
            return 200;
        }

        location /login/ {
            activity_track off;
            activity_mask_ip on;
            activity_event USER_LOGIN;
            return 200;
        }

    }

    # realip on the server level: it runs before "return" (post-read
    # phase); in a location it would run after it (preaccess)
    server {
        listen 127.0.0.1:%%PORT_rip%%;
        server_name localhost;

        set_real_ip_from 127.0.0.1;
        real_ip_header X-Real-IP;
        activity_track on;

        location /rip-masked/ {
            activity_mask_ip on;
            return 200;
        }

        location /rip-plain/ {
            return 200;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_inherit%%;
        LISTEN6_INHERIT
        server_name localhost;

        activity_track on;
        activity_mask_ip on;

        location /inherit/ {
            return 200;
        }

        location /inherit-off/ {
            activity_mask_ip off;
            return 200;
        }
    }
}
EOF
$conf =~ s/LISTEN6/$listen6/;
$t->write_conf($conf);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->nginx_start;

# One request on a new connection from $local to $peer; returns the
# status code.
sub request {
    my (%o) = @_;
    my $v6 = $o{peer} =~ /:/;
    my $s = $v6
        ? IO::Socket::IP->new(PeerHost => $o{peer}, PeerPort => $o{port},
            Family => AF_INET6, Timeout => 10)
        : IO::Socket::INET->new(PeerAddr => $o{peer}, PeerPort => $o{port},
            $o{local} ? (LocalAddr => $o{local}) : (), Timeout => 10);
    die "connect to $o{peer}: $!" unless $s;
    my $h = $o{real_ip} ? "X-Real-IP: $o{real_ip}\r\n" : '';
    print $s "GET $o{path} HTTP/1.0\r\nHost: localhost\r\n$h\r\n";
    local $/;
    my $res = <$s> // '';
    return $res =~ m{^HTTP/1\.[01] (\d+)} ? $1 : 0;
}

my $http = $t->port('http');
my $inherit = $t->port('inherit');
my $rip = $t->port('rip');

# [ path, port, peer, local, real_ip, expected ipAddress, stored ]
# stored: host(ip_address) in activity_logs
my @cases = (
    [ '/masked/v4', $http, '127.0.0.1', undef, undef, '127.0.0.0' ],
    [ '/masked/alias', $http, '127.0.0.1', '127.1.2.3', undef,
        '127.1.2.0' ],
    [ '/plain/alias', $http, '127.0.0.1', '127.1.2.3', undef,
        '127.1.2.3' ],
    [ '/plain/v4', $http, '127.0.0.1', undef, undef, '127.0.0.1' ],
    [ '/login/alias', $http, '127.0.0.1', '127.1.2.3', undef,
        '127.1.2.0' ],
    [ '/rip-masked/v4', $rip, '127.0.0.1', undef, '203.0.113.77',
        '203.0.113.0' ],
    [ '/rip-masked/v6', $rip, '127.0.0.1', undef,
        '2001:db8:abcd:ffff:1:2:3:4', '2001:db8:abcd::' ],
    [ '/rip-masked/v6-short', $rip, '127.0.0.1', undef,
        '2001:db8:abcd:12::5', '2001:db8:abcd::' ],
    [ '/rip-masked/v4-mapped', $rip, '127.0.0.1', undef,
        '::ffff:198.51.100.9', '198.51.100.0' ],
    [ '/rip-plain/v4', $rip, '127.0.0.1', undef, '203.0.113.77',
        '203.0.113.77' ],
    [ '/rip-plain/v6', $rip, '127.0.0.1', undef,
        '2001:db8:abcd:ffff:1:2:3:4', '2001:db8:abcd:ffff:1:2:3:4' ],
    [ '/inherit/alias', $inherit, '127.0.0.1', '127.1.2.3', undef,
        '127.1.2.0' ],
    [ '/inherit-off/alias', $inherit, '127.0.0.1', '127.1.2.3', undef,
        '127.1.2.3' ],
);

unless ($no_v6) {
    push @cases,
        [ '/masked/v6', $http, '::1', undef, undef, '::' ],
        [ '/plain/v6', $http, '::1', undef, undef, '::1' ],
        [ '/inherit/v6', $inherit, '::1', undef, undef, '::' ],
        [ '/inherit-off/v6', $inherit, '::1', undef, undef, '::1' ];
}

for my $c (@cases) {
    my ($path, $port, $peer, $local, $real_ip) = @$c;
    is(request(path => $path, port => $port, peer => $peer,
        local => $local, real_ip => $real_ip), 200, "GET $path: 200");
}

ok(wait_for(sub { $t->redis->llen($t->queue) >= @cases }, 15),
    scalar(@cases) . ' events queued');

my @queued = $t->queued_events;
is_deeply([ sort map { $_->{metadata}{endpoint} } @queued ],
    [ sort map { $_->[0] } @cases ], 'one event a request, none other');
my %queued = map { $_->{metadata}{endpoint} => $_ } @queued;

for my $c (@cases) {
    my ($path, undef, $peer, $local, $real_ip, $want) = @$c;
    my $from = $real_ip // $local // $peer;
    is($queued{$path}{metadata}{ipAddress}, $want,
        "$path: queued ipAddress of $from is $want");
}
is($queued{'/login/alias'}{eventType}, 'USER_LOGIN',
    'a domain event is masked too');

if ($no_v6) {
    SKIP: { skip "the IPv6 loopback sub-cases: $no_v6", 1 }
}

# --- stored ---------------------------------------------------------------

$t->worker_start;
ok(wait_for(sub { $t->row_count >= @cases }, 30),
    scalar(@cases) . ' rows stored') or diag('rows: ' . $t->row_count);

my $rows = $t->sql_rows(
    'SELECT endpoint, host(ip_address) AS ip FROM activity_logs');
is_deeply([ sort map { $_->{endpoint} } @$rows ],
    [ sort map { $_->[0] } @cases ], 'one row a request, none other');
my %stored = map { $_->{endpoint} => $_->{ip} } @$rows;

for my $c (@cases) {
    my ($path, undef, $peer, $local, $real_ip, $want) = @$c;
    is($stored{$path}, $want, "$path: stored ip_address $want");
}

$t->done;
