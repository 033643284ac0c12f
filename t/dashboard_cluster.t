#!/usr/bin/perl

# Two nginx instances (two worker processes each) on one Redis and one
# worker: dashboards on either instance see every event, exactly once,
# whichever instance served the request; each event is stored once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis pg worker node)]);

# one configuration for both, apart from the port
my $conf = <<'EOF';
%%GLOBALS%%
worker_processes 2;

http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "cluster-secret";
    activity_user $http_x_user;

    server {
        listen 127.0.0.1:LISTEN reuseport;
        server_name localhost;

        location /socket.io/ {
            activity_dashboard socketio;
        }

        location /ws {
            activity_dashboard websocket;
        }

        location /api/ {
            activity_track on;
            return 200 "ok\n";
        }
    }
}
EOF

(my $a_conf = $conf) =~ s/LISTEN/%%PORT%%/;
(my $b_conf = $conf) =~ s/LISTEN/%%PORT_b%%/;
$t->write_conf($a_conf);
$t->write_conf($b_conf, undef, 'b');

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--flush-ms', 20]);
$t->nginx_start;
$t->nginx_start(name => 'b');

my $token = jwt_hs256('cluster-secret', { sub => 'dash', role => 'admin',
    exp => time + 600 });
my $a = $t->port('http');
my $b = $t->port('b');

# clients: several on each instance (reuseport spreads them over the
# worker processes), more until both worker processes of each hold
# some; every one must see everything
my %clients = (
    (map { ("sio-a$_" => $t->node('sio-client.js', brief => 1,
        url => "http://127.0.0.1:$a/dashboard", token => $token,
        timeout => 30000)) } 1 .. 3),
    (map { ("ws-a$_" => $t->node('ws-client.js', brief => 1,
        url => "ws://127.0.0.1:$a/ws?token=$token",
        timeout => 30000)) } 1 .. 2),
    (map { ("sio-b$_" => $t->node('sio-client.js', brief => 1,
        url => "http://127.0.0.1:$b/dashboard", token => $token,
        timeout => 30000)) } 1 .. 2),
);

for my $name (sort keys %clients) {
    my $c = $clients{$name};
    ok($c->wait_line(sub {
        ($_->{event} // '') eq 'snapshot' }, 10), "$name: snapshot");
}

# the nginx worker processes (pids) of an instance that logged a
# dashboard connection
sub dashboard_pids {
    my ($instance) = @_;
    my $log = do { open my $fh, '<', $t->error_log($instance); local $/;
        <$fh> // '' };
    my %pid;
    $pid{$1} = 1
        while $log =~ /\] (\d+)#\d+: [^\n]*activity: dashboard \S+ connected \(/g;
    return scalar keys %pid;
}

my $extra = 0;
for my $i ([ 'a', undef, $a ], [ 'b', 'b', $b ]) {
    my ($label, $instance, $port) = @$i;
    while (dashboard_pids($instance) < 2 && $extra < 40) {
        my $name = "sio-$label-extra" . ++$extra;
        my $c = $clients{$name} = $t->node('sio-client.js', brief => 1,
            url => "http://127.0.0.1:$port/dashboard", token => $token,
            timeout => 30000);
        ok($c->wait_line(sub {
            ($_->{event} // '') eq 'snapshot' }, 10), "$name: snapshot");
    }
    is(dashboard_pids($instance), 2,
        "instance $label: clients on both of its worker processes");
}

# requests on both instances
my @users;
for my $i (1 .. 6) {
    my ($port, $user) = $i % 2 ? ($b, "b-$i") : ($a, "a-$i");
    push @users, $user;
    is($t->http(GET => "/api/item/$i", port => $port,
        headers => { 'X-User' => $user })->{status}, 200,
        "request $i on instance " . ($port == $a ? 'a' : 'b'));
}

for my $name (sort keys %clients) {
    my $c = $clients{$name};
    my %want = map { $_ => 1 } @users;
    my $done = $c->wait_line(sub {
        if (($_->{event} // '') eq 'activity:new') {
            delete $want{ $_->{data}{userId} // '' };
        }
        return !%want;
    }, 15);
    ok($done, "$name: every event, from both instances")
        or diag('missing: ' . join ' ', sort keys %want);
}

for my $name (sort keys %clients) {
    my @lines = $clients{$name}->finish;
    my %n;
    $n{ $_->{data}{userId} // '' }++
        for grep { ($_->{event} // '') eq 'activity:new' } @lines;
    is_deeply([ map { $n{$_} // 0 } @users ], [ (1) x @users ],
        "$name: each event once");
}

ok(wait_for(sub { $t->row_count >= @users }, 15), 'events stored');
is($t->row_count, scalar @users, 'each stored once');

my $log_b = do { open my $fh, '<', $t->error_log('b'); local $/; <$fh> };
like($log_b, qr/activity: dashboard 127\.0\.0\.1 connected \(socketio\)/,
    'instance b served dashboards (its own error log)');

$t->done;
