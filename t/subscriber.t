#!/usr/bin/perl

# The subscriber (one SUBSCRIBE connection per nginx worker) comes back by
# itself, and dashboards connected before keep receiving without
# reconnecting, when:
#   1. Redis kills it (CLIENT KILL TYPE pubsub) while the nginx worker is
#      stopped with a message in flight: data and end of file arrive in one
#      event, the end must still be seen;
#   2. Redis is killed (-9) and started again;
#   3. a proxy between nginx and Redis stops forwarding the flow without a
#      word (a NAT or a load balancer that forgot it): only the PING with a
#      reply timer can tell.
# One warn line when it breaks and one when it is back; the state and the
# reconnects in activity_status.
#
# Instance "main" talks to Redis directly and pings only every 5 minutes,
# so cases 1 and 2 are seen without the PING; instance "px" goes through
# the proxy and pings every second.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);
use ActivityTest qw(wait_for jwt_hs256);
use ActivityProxy;

my $t = ActivityTest->new(needs => [qw(module redis node)]);

my $conf = <<'EOF';
%%GLOBALS%%
worker_processes 1;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:REDIS;
    activity_redis_ping_interval PING;
    activity_redis_ping_timeout 1s;
    activity_jwt_secret "sub-secret";

    server {
        listen 127.0.0.1:LISTEN;
        server_name localhost;

        location /ws {
            activity_dashboard websocket;
        }

        location = /status {
            activity_status;
        }
    }
}
EOF

my %port = (main => $t->port('http'), px => $t->port('px'));

(my $main = $conf) =~ s/REDIS/%%REDIS_PORT%%/;
$main =~ s/PING/5m/;
$main =~ s/LISTEN/%%PORT%%/;
$t->write_conf($main);

(my $px = $conf) =~ s/REDIS/%%PORT_proxy%%/;
$px =~ s/PING/1s/;
$px =~ s/LISTEN/%%PORT_px%%/;
$t->write_conf($px, undef, 'px');

# a PING without a reply timer is refused by nginx -t, naming both
(my $bad = $main) =~ s/(activity_redis_ping_timeout) 1s;/$1 0;/;
my ($rc, $out) = $t->nginx_test($bad);
ok($rc != 0, 'nginx -t refuses activity_redis_ping_timeout 0 with a PING');
like($out, qr/"activity_redis_ping_timeout" must not be 0 while/,
    'and says why');

$t->redis_start;
my $proxy = ActivityProxy->start(listen => $t->port('proxy'),
    to => $t->redis_port, log => $t->dir . '/proxy.log');

$t->nginx_start;
$t->nginx_start(name => 'px');

my $token = jwt_hs256('sub-secret', { sub => 'dash', role => 'admin',
    exp => time + 3600 });

my %dash;
for my $name (qw(main px)) {
    $dash{$name} = $t->node('ws-client.js', timeout => 120000,
        url => "ws://127.0.0.1:$port{$name}/ws?token=$token");
    ok($dash{$name}->wait_line(sub { ($_->{event} // '') eq 'snapshot' },
        10), "$name: dashboard connected");
}

sub metric {
    my ($name, $metric) = @_;
    my $r = $t->http(GET => '/status', port => $port{$name});
    return $r->{content} =~ /^\Q$metric\E (\d+)$/m ? $1 : undef;
}

sub subscribed {
    my ($name) = @_;
    return (metric($name,
        'activity_redis_connected{connection="subscriber"}') // 0) == 1;
}

ok(wait_for(sub { subscribed('main') && subscribed('px') }, 10),
    'both subscribers up');

my $n = 0;

# Publishes events until every named dashboard got one (each was connected
# before and never reconnected); the deadline is the 10 s the issue sets.
sub delivered {
    my (@names) = @_;
    my %got;
    my $ok = wait_for(sub {
        my $id = ActivityTest::uuid();
        $t->redis->publish('dashboard:events', ActivityTest::to_json([
            ActivityTest::make_event(id => $id, type => 'API_CALL',
                endpoint => '/e/' . ++$n) ]));
        for my $name (grep { !$got{$_} } @names) {
            $got{$name} = 1 if $dash{$name}->wait_line(sub {
                ($_->{event} // '') eq 'activity:new'
                    && ($_->{data}{id} // '') eq $id }, 0.3);
        }
        return @names == keys %got;
    }, 10, 0.1);
    diag('not delivered to: ' . join ' ', grep { !$got{$_} } @names)
        unless $ok;
    return $ok;
}

ok(delivered(qw(main px)), 'events reach both dashboards');

sub log_count {
    my ($name, $re) = @_;
    open my $fh, '<', $t->error_log($name eq 'main' ? undef : $name)
        or return 0;
    return scalar grep { /$re/ } <$fh>;
}

my $lost = qr/\[warn\].*subscriber on redis .*lost the connection/;
my $back = qr/\[warn\].*subscriber is back on redis/;

# --- 1. killed while the worker is stopped, a message in flight --------

sub worker_pid {
    my $master = do { local (@ARGV, $/) = $t->dir . '/nginx.pid'; <> };
    chomp $master;
    my ($pid) = map { s/\s+//gr } `ps --ppid $master -o pid=`;
    return $pid;
}

my $worker = worker_pid();
ok($worker, "nginx worker $worker");

my $reconnects = metric('main',
    'activity_redis_reconnects_total{connection="subscriber"}');

kill 'STOP', $worker;
my $id = ActivityTest::uuid();
$t->redis->publish('dashboard:events', ActivityTest::to_json([
    ActivityTest::make_event(id => $id, type => 'API_CALL') ]));
ok($t->redis->client_kill('TYPE', 'pubsub') >= 2,
    'Redis killed the subscribers');
sleep 0.5;
kill 'CONT', $worker;

ok($dash{main}->wait_line(sub { ($_->{data}{id} // '') eq $id }, 10),
    'the message that came with the end is delivered');
ok(delivered(qw(main px)), 'and events after it, without reconnecting');
is(log_count('main', $lost), 1, 'one warn line when it broke');
ok(wait_for(sub { log_count('main', $back) == 1 }, 5),
    'one warn line when it was back');
ok(metric('main', 'activity_redis_reconnects_total{connection="subscriber"}')
    > $reconnects, 'the reconnect is counted');
ok(subscribed('main'), 'activity_redis_connected says the subscriber is up');

# --- 2. Redis killed and started again -------------------------------

$t->_stop('redis', 'KILL', 5);
ok(wait_for(sub { !subscribed('main') }, 10),
    'activity_redis_connected says the subscriber is down');
$t->redis_start;
ok(delivered(qw(main px)), 'after a Redis restart, events flow again');
is(log_count('main', $lost), 2, 'one more warn line when it broke');
ok(wait_for(sub { log_count('main', $back) == 2 }, 5),
    'and one when it was back');

# --- 3. the proxy forgets the flow -----------------------------------

my $flows = $proxy->flows;
$proxy->stall;
ok(delivered(qw(px)), 'a silently dropped flow is noticed, events flow');
ok($proxy->flows > $flows, 'through a new connection');
ok(log_count('px', qr/\[warn\].*subscriber on redis .*no answer to PING/),
    'the missing answer to PING is logged');
ok(delivered(qw(main px)), 'both dashboards still receive');

for my $name (qw(main px)) {
    ok(!grep({ $_->{t} eq 'close' } $dash{$name}->lines),
        "$name: the dashboard was never disconnected");
}

$_->finish(5) for values %dash;
$proxy->stop;

$t->done;
