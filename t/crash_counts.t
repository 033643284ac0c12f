#!/usr/bin/perl

# A worker process that dies without its exit code (SIGKILL here) takes
# its dashboard sockets with it, and their places with them: the next
# dashboards are admitted up to activity_dashboard_max_connections,
# max_pending and max_per_ip again, and activity_status counts only the
# connections that are open.

use strict;
use warnings;

use lib 't/lib';

use Test::More;
use ActivityTest qw(wait_for jwt_hs256);
use Time::HiRes qw(time);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
worker_processes 2;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "crash-secret";
    activity_dashboard_max_connections 2;
    activity_dashboard_max_pending 2;
    activity_dashboard_max_per_ip 4;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /ws {
            activity_dashboard websocket;
            activity_dashboard_ping_timeout 60s;
        }

        location /socket.io/ {
            activity_dashboard socketio;
            activity_dashboard_auth_timeout 60s;
            activity_dashboard_ping_timeout 60s;
        }

        location = /status {
            activity_status;
        }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $token = jwt_hs256('crash-secret', { sub => 'admin', role => 'admin',
    exp => time + 600 });

# an upgrade: the socket on 101, else the status and the body
sub dash {
    my ($path, %o) = @_;
    my $s = $t->socket(%o);
    print $s "GET $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        . "Sec-WebSocket-Version: 13\r\n\r\n";
    my ($buf, $end) = ('', time + 10);
    while ($buf !~ /\r\n\r\n/ && time < $end) {
        ActivityTest::can_read($s, $end - time) or last;
        sysread($s, $buf, 65536, length $buf) or last;
    }
    my ($status) = $buf =~ m{^HTTP/1\.1 (\d+)};
    return $s if ($status // 0) == 101;
    my ($len) = $buf =~ /Content-Length: (\d+)/i;
    $buf =~ s/^.*?\r\n\r\n//s;
    while (length $buf < ($len // 0) && time < $end) {
        ActivityTest::can_read($s, $end - time) or last;
        sysread($s, $buf, 65536, length $buf) or last;
    }
    return ($status // 'none', $buf);
}

sub admin { dash("/ws?token=$token", @_) }
sub waiting { dash('/socket.io/?EIO=4&transport=websocket', @_) }

sub metric {
    my ($protocol) = @_;
    return $t->status_metric('/status', 'activity_dashboard_connections',
        "protocol=\"$protocol\"");
}

# the worker process that holds the server side of a client socket
sub holder {
    my ($s) = @_;
    my $port = sprintf '%04X', $s->sockport;
    my $server = sprintf '%04X', $t->port('http');
    my $inode;
    for (split /\n/, do { local (@ARGV, $/) = '/proc/net/tcp'; <> }) {
        my @f = split ' ';
        next unless @f > 9;
        if ($f[1] =~ /:$server$/ && $f[2] =~ /:$port$/) {
            $inode = $f[9];
            last;
        }
    }
    return undef unless $inode;
    for my $pid ($t->nginx_worker_pids) {
        for my $fd (glob "/proc/$pid/fd/*") {
            my $l = readlink $fd // next;
            return $pid if $l eq "socket:[$inode]";
        }
    }
    return undef;
}

ok(wait_for(sub { defined metric('websocket') }, 10), 'status is up');

# --- the places taken -------------------------------------------------

my @admins = map { scalar admin() } 1 .. 2;
is(scalar(grep { ref } @admins), 2, 'two admin dashboards (max 2)');
my @waiting = map { scalar waiting() } 1 .. 2;
is(scalar(grep { ref } @waiting), 2,
    'two sockets waiting to authenticate (max_pending 2)');

my ($status, $body) = admin(local => '127.0.0.2');
is($status, 503, 'a third admin: 503');
like($body // '', qr/too many dashboard connections"/, 'max_connections');
($status, $body) = waiting(local => '127.0.0.2');
is($status, 503, 'a third waiting socket: 503');
like($body // '', qr/waiting to authenticate/, 'max_pending');
($status, $body) = admin();
is($status, 503, 'a fifth socket from 127.0.0.1: 503');
like($body // '', qr/from this address/, 'max_per_ip');

is(metric('websocket'), 2, 'status: 2 websocket dashboards');
is(metric('socketio'), 2, 'status: 2 socketio dashboards');

# --- the workers holding them are killed ----------------------------------

my %killed = map { (holder($_) // 'none') => 1 } @admins, @waiting;
ok(!$killed{none}, 'the worker of every socket found: '
    . join(' ', sort keys %killed));
my $kills = keys %killed;
kill 'KILL', $_ for grep { /^\d+$/ } keys %killed;

ok(wait_for(sub {
    my @now = $t->nginx_worker_pids;
    return @now == 2 && !grep { $killed{$_} } @now;
}, 15), 'the master replaced the killed workers');

# the replacement gives the places back as it starts: a status read
# from either worker sees it once both answer
ok(wait_for(sub {
    (metric('websocket') // -1) == 0 && (metric('socketio') // -1) == 0
}, 15), 'status: no dashboards left counted');

# from an address that held none: max_connections and max_pending alone

my $w = waiting(local => '127.0.0.3');
ok(ref $w, 'a waiting socket from another address admitted');
my $a = admin(local => '127.0.0.3');
ok(ref $a, 'an admin from another address admitted');
close $_ for grep { ref } $w, $a;
ok(wait_for(sub {
    metric('websocket') == 0 && metric('socketio') == 0
}, 15), 'and closed');

my $given = 0;
$given += $_ for map { /its (\d+) dashboard connections are no longer/ }
    $t->log_lines(qr/is gone, its \d+ dashboard connections/);
is($given, 4, 'logged: the 4 dashboards of the killed workers given back');

# --- the places are free again, exactly ---------------------------------

@waiting = map { scalar waiting() } 1 .. 2;
is(scalar(grep { ref } @waiting), 2, 'two waiting sockets admitted again');
($status, $body) = waiting(local => '127.0.0.2');
is($status, 503, 'a third waiting socket: 503 again');
like($body // '', qr/waiting to authenticate/, 'max_pending');

@admins = map { scalar admin() } 1 .. 2;
is(scalar(grep { ref } @admins), 2, 'two admins admitted again');
($status, $body) = admin(local => '127.0.0.2');
is($status, 503, 'a third admin: 503 again');
like($body // '', qr/too many dashboard connections"/, 'max_connections');
($status, $body) = waiting();
is($status, 503, 'a fifth socket from 127.0.0.1: 503 again');
like($body // '', qr/from this address/, 'max_per_ip');

is(metric('websocket'), 2, 'status: 2 websocket dashboards');
is(metric('socketio'), 2, 'status: 2 socketio dashboards');

close $_ for @admins, @waiting;
ok(wait_for(sub {
    metric('websocket') == 0 && metric('socketio') == 0
}, 15), 'closed: none counted');

$t->nginx_stop;

# the kills are what this test made: the master's alert about them is
# expected, any other alert is not
my $log = $t->error_log;
my $text = do { local (@ARGV, $/) = $log; <> };
is(scalar(() = $text =~ /\[alert\].*exited on signal 9/g), $kills,
    'the master saw the kills');
$text =~ s/^.*\[alert\].*exited on signal 9.*\n//mg;
open my $fh, '>', $log or die;
print $fh $text;
close $fh;

$t->done;
