#!/usr/bin/perl

# Dashboard admission and lifetime: sockets that never authenticate
# (activity_dashboard_auth_timeout, activity_dashboard_max_pending, not
# counted against activity_dashboard_max_connections), sockets per
# address (activity_dashboard_max_per_ip), a handshake that ends on a
# worker already shutting down, pings at every interval, and the Engine.IO
# maxPayload that the server really accepts.

use strict;
use warnings;

use lib 't/lib';

use Test::More;
use ActivityTest qw(wait_for jwt_hs256 from_json);
use Time::HiRes qw(time);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "hard-secret";
    activity_dashboard_max_connections 3;
    activity_dashboard_max_pending 4;
    activity_dashboard_max_per_ip 6;

    server {
        listen 127.0.0.1:%%PORT%% %%SSL%%;
        server_name localhost;

        location /ws {
            activity_dashboard websocket;
        }

        location /socket.io/ {
            activity_dashboard socketio;
            activity_dashboard_auth_timeout 60s;
            activity_dashboard_ping_timeout 60s;
        }

        location /slow-auth/ {
            activity_dashboard socketio;
            activity_dashboard_auth_timeout 1s;
            activity_dashboard_ping_timeout 60s;
        }

        location /ws-ping {
            activity_dashboard websocket;
            activity_dashboard_ping_interval 1s;
            activity_dashboard_ping_timeout 60s;
        }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $token = jwt_hs256('hard-secret', { sub => 'admin', role => 'admin',
    exp => time + 600 });


# --- a raw WebSocket client ---------------------------------------------
# A connection is an ActivityTest::RawWS (frames are built and parsed by
# the harness); the handshake is written here, so that a test can send it
# in parts and read the body of a refusal.

# a masked client frame
sub frame { ActivityTest::RawWS::frame(@_) }

# a connection on a new socket to nginx, nothing written yet
sub conn {
    my (%o) = @_;
    return bless { sock => $t->socket(%o), buf => '' },
        'ActivityTest::RawWS';
}

sub request {
    my ($path) = @_;
    return "GET $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        . "Sec-WebSocket-Version: 13\r\n\r\n";
}

sub fill {
    my ($c, $timeout) = @_;
    return 0 unless ActivityTest::can_read($c->{sock}, $timeout);
    my $n = sysread $c->{sock}, $c->{buf}, 65536, length $c->{buf};
    return $n ? 1 : 0;
}

# After the request was written: the connection (a hash) on 101, else
# the status and the body.
sub response {
    my ($c) = @_;
    my $end = time + 10;
    while ($c->{buf} !~ /\r\n\r\n/) {
        return ('timeout') if time > $end;
        fill($c, $end - time) or return ('closed');
    }
    $c->{buf} =~ s/^(.*?)\r\n\r\n//s;
    my $head = $1;
    my ($status) = $head =~ m{^HTTP/1\.1 (\d+)};
    my ($len) = $head =~ /Content-Length: (\d+)/i;
    return $c if $status == 101;
    fill($c, $end - time) while length $c->{buf} < ($len // 0)
        && time < $end;
    return ($status, $c->{buf});
}

sub ws_open {
    my ($path, %o) = @_;
    my $c = conn(%o);
    syswrite $c->{sock}, request($path);
    return response($c);
}

# the next server frame as (opcode, payload); () on EOF or timeout
sub next_frame {
    my ($c, $timeout) = @_;
    return $c->next_frame($timeout // 10);
}

# skips other frames; the close code, or 'eof or timeout'
sub close_code {
    my ($c, $timeout) = @_;
    my $end = time + ($timeout // 10);
    while (time < $end) {
        my ($op, $data) = next_frame($c, $end - time);
        return 'eof or timeout' unless defined $op;
        next unless $op == 8;
        return unpack 'n', $data;
    }
    return 'timeout';
}

# all of it: a TLS socket's syswrite() takes one record at a time
sub send_frame {
    my ($c, $op, $payload) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $bytes = frame($op, $payload);
    while (length $bytes) {
        my $n = syswrite $c->{sock}, $bytes;
        return unless $n;
        substr($bytes, 0, $n, '');
    }
}

# a clean close: ours, then the server's answer and the end of it
sub bye {
    my ($c) = @_;
    send_frame($c, 8, pack 'n', 1000);
    close_code($c, 10);
    1 while fill($c, 5);
    close $c->{sock};
}

sub sio_open {
    my ($path, %o) = @_;
    my @r = ws_open("$path?EIO=4&transport=websocket", %o);
    return @r unless ref $r[0];
    my $c = $r[0];
    my ($op, $open) = next_frame($c, 10);
    $c->{open} = ($open // '') =~ /^0(\{.*\})$/ ? from_json($1) : undef;
    return $c;
}


# --- admission ------------------------------------------------------------

my @pending = map { scalar sio_open('/socket.io/') } 1 .. 4;
is(scalar(grep { ref } @pending), 4,
    'four sockets that send no token upgrade (max_pending 4)');

my ($status, $body) = sio_open('/socket.io/');
is($status, 503, 'a fifth waiting socket: 503');
like($body // '', qr/waiting to authenticate/, 'saying why');

my @admins = map { scalar ws_open("/ws?token=$token") } 1 .. 2;
is(scalar(grep { ref } @admins), 2,
    'admins still connect: waiting sockets do not count against '
    . 'max_connections 3');
ok(ref $admins[0] && defined((next_frame($admins[0]))[0]),
    'and get their snapshot');

($status, $body) = ws_open("/ws?token=$token");
is($status, 503, 'a seventh socket from one address: 503 (max_per_ip 6)');
like($body // '', qr/from this address/, 'saying why');

my $other = ws_open("/ws?token=$token", local => '127.0.0.2');
ok(ref $other, 'another address still connects');

bye($_) for grep { ref } splice @pending, 0, 2;

($status, $body) = ws_open("/ws?token=$token");
is($status, 503, 'a fourth admin: 503 (max_connections 3)');
is($body, '{"message":"too many dashboard connections"}', 'saying why');

my ($op, $data);
if (ref $pending[0]) {
    send_frame($pending[0], 1, '40/dashboard,' . "{\"token\":\"$token\"}");
    ($op, $data) = next_frame($pending[0], 10);
}
is($data, '44/dashboard,{"message":"too many dashboard connections",'
    . '"data":{"status":503}}',
    'a waiting socket that authenticates when every place is taken: '
    . 'CONNECT_ERROR');
is(ref $pending[0] ? close_code($pending[0], 10) : 'none', 1013,
    'then close 1013');

bye($_) for grep { ref } @pending[1 .. $#pending], @admins, $other;


# --- activity_dashboard_auth_timeout -------------------------------------

{
    my $c = sio_open('/slow-auth/');
    ok(ref $c, 'a socket.io socket that sends no CONNECT');
    is(ref $c ? close_code($c, 15) : $c, 1008,
        'is closed with 1008 after activity_dashboard_auth_timeout');
    like(do { local (@ARGV, $/) = ($t->error_log); <> },
        qr/dashboard 127\.0\.0\.1 sent no CONNECT in time/, 'logged');
}


# --- Engine.IO maxPayload -------------------------------------------------

{
    my $c = sio_open('/socket.io/');
    my $max = ref $c && $c->{open} ? $c->{open}{maxPayload} : 0;
    ok($max > 0, "the open packet advertises maxPayload $max");

    # a noop packet ("6") as long as maxPayload
    send_frame($c, 1, '6' . ('x' x ($max - 1)));
    send_frame($c, 1, '40/dashboard,' . "{\"token\":\"$token\"}");
    my ($op, $data) = next_frame($c, 10);
    like($data // 'closed', qr/^40\/dashboard,\{"sid"/,
        'a message of maxPayload bytes is accepted');
    bye($c);

    $c = sio_open('/socket.io/');
    send_frame($c, 1, '6' . ('x' x $max));
    is(close_code($c, 10), 1009, 'one byte more: close 1009');
}


# --- pings at every interval ---------------------------------------------

{
    my $c = ws_open("/ws-ping?token=$token");
    my $pings = 0;
    my $end = time + 20;
    while ($pings < 3 && time < $end) {
        my ($op, $data) = next_frame($c, $end - time);
        last unless defined $op;
        next unless $op == 9;
        $pings++;
        send_frame($c, 10, $data);
    }
    is($pings, 3, 'three pings, each answered, with ping_interval 1s and '
        . 'ping_timeout 60s');
    bye($c);
}


# --- a handshake that ends on a worker shutting down ---------------------

# The worker processes of the master that the harness started, sorted.
sub worker_pids { $t->nginx_worker_pids }

# Whether nginx has accepted the connection from local port $cport and
# read all it was sent: the server side's receive queue in /proc/net/tcp.
sub server_read_all {
    my ($cport) = @_;
    my ($srv, $cli) = map { sprintf ':%04X', $_ } $t->port('http'), $cport;
    open my $fh, '<', '/proc/net/tcp' or return 0;
    while (<$fh>) {
        my (undef, $local, $remote, $st, $queues) = split ' ';
        next unless $local =~ /\Q$srv\E$/ && $remote =~ /\Q$cli\E$/;
        my (undef, $rx) = split /:/, $queues;
        return $st eq '01' && hex($rx) == 0;
    }
    return 0;
}

{
    my @old = worker_pids();
    is(scalar @old, 1, 'one worker');

    my $c = conn();
    my $req = request("/ws?token=$token");
    syswrite $c->{sock}, substr($req, 0, -2);
    ok(wait_for(sub { server_read_all($c->{sock}->sockport) }, 20),
        'the old worker has read the handshake so far');

    open my $fh, '<', $t->dir . '/nginx.pid' or die "nginx.pid: $!";
    chomp(my $master = <$fh>);
    kill 'HUP', $master;
    ok(wait_for(sub {
        my @now = worker_pids();
        grep { my $p = $_; !grep { $_ == $p } @old } @now;
    }, 20), 'reloaded: a new worker runs');
    ok(wait_for(sub {
        do { local (@ARGV, $/) = ($t->error_log); <> }
            =~ /\] $old[0]#\d+: gracefully shutting down/;
    }, 20), 'the old worker is shutting down');
    ok(kill(0, $old[0]), 'and waits for the handshake it reads');

    syswrite $c->{sock}, "\r\n";
    ok(ref response($c), 'the handshake ends on the old worker: 101');
    is(close_code($c, 10), 1001, 'then at once close 1001 "going away"');
    1 while fill($c, 5);
    close $c->{sock};
    ok(wait_for(sub { !kill(0, $old[0]) }, 20), 'and the old worker exits');
}

$t->done;
