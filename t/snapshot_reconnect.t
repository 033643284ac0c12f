#!/usr/bin/perl

# The snapshot a dashboard gets on connect holds each recent event once,
# however often the subscriber reconnected (it reads the recent list
# again each time).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis node)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
worker_processes 1;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "snap";

    server {
        listen 127.0.0.1:%%PORT%%;
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

$t->redis_start;

# the recent list, as the worker keeps it: newest first
my @events = map { ActivityTest::make_event(endpoint => "/recent/$_") } 1 .. 3;
$t->redis->lpush('dashboard:events:recent',
    map { ActivityTest::to_json($_) } @events);

$t->nginx_start;

my $token = jwt_hs256('snap', { sub => 'dash', role => 'admin',
    exp => time + 600 });
my $url = 'ws://127.0.0.1:' . $t->port('http') . "/ws?token=$token";

# A value of the status page (NAME{LABELS} as one string); undef if absent.
sub metric { $t->status_metric('/status', $_[0]) }

sub snapshot_ids {
    my $c = $t->node('ws-client.js', url => $url, brief => 1,
        timeout => 10000);
    my $snap = $c->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10);
    $c->finish(5);
    return undef unless $snap;
    return [ map { $_->{id} } @{ $snap->{data}{events} } ];
}

my $want = [ map { $_->{id} } reverse @events ];

ok(wait_for(sub {
    metric('activity_redis_connected{connection="subscriber"}') == 1 }, 10),
    'subscribed');
is_deeply(snapshot_ids(), $want, 'the snapshot holds the recent events');

for my $round (1 .. 3) {
    my $before = metric(
        'activity_redis_reconnects_total{connection="subscriber"}');
    $t->redis->client_kill('TYPE', 'pubsub');
    ok(wait_for(sub {
        metric('activity_redis_reconnects_total{connection="subscriber"}')
            > $before
        && metric('activity_redis_connected{connection="subscriber"}') == 1
    }, 15), "reconnect $round");
}

is_deeply(snapshot_ids(), $want,
    'after three reconnects, each recent event once');

$t->done;
