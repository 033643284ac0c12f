#!/usr/bin/perl

# activity_redis_wait_replica on a Redis that refuses WAIT (an ACL user
# without it): the LPUSHes were answered, so the events are in Redis;
# they are let go as unreplicated, once each, with one error line,
# instead of being pushed again and again on a new connection.
# And a connection lost while a WAIT is pending: the events are sent
# again (a duplicate the worker's dedupe absorbs) but counted once in
# activity_events_queued_total.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->redis_start;
my $r = $t->redis_client;
$r->acl('SETUSER', 'pusher', 'on', '>pusher-pw', '~*', '&*', '+@all',
    '-wait');

my $port = $t->redis_port;
$t->write_conf(<<"EOF");
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://pusher:pusher-pw\@127.0.0.1:$port;
    activity_redis_wait_replica 200ms;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /api/ {
            activity_track on;
            return 200 "ok\\n";
        }

        location = /status {
            activity_status;
        }
    }
}
EOF
$t->nginx_start;

sub metric {
    my ($name, $labels) = @_;
    return $t->status_metric('/status', $name, $labels) // 0;
}

sub endpoints {
    return [ sort map { ActivityTest::from_json($_)->{metadata}{endpoint} }
        $r->lrange('activity:events', 0, -1) ];
}

ok(wait_for(sub { metric('activity_redis_connected', 'connection="queue"')
    == 1 }, 20), 'the queue is connected');

is($t->http(GET => "/api/w/$_")->{status}, 200, "request $_") for 1 .. 3;

ok(wait_for(sub { metric('activity_events_unreplicated_total') == 3 }, 20),
    'WAIT refused: the 3 events are let go, counted as unreplicated')
    or diag(join ',', @{ endpoints() });
my @refused = $t->log_lines(qr/WAIT refused/);
is(scalar @refused, 1, 'one line says so') or diag(join "\n", @refused);
like($refused[0] // '', qr/\[error\].*activity: WAIT refused \(NOPERM[^)]*\), needed by activity_redis_wait_replica; until it is answered, events are on the master only/,
    '... at error, naming the directive');

# one more: pushed once, and the first three are not pushed again
is($t->http(GET => '/api/w/4')->{status}, 200, 'request 4');
ok(wait_for(sub { $r->llen('activity:events') >= 4 }, 20), 'it is queued');
is_deeply(endpoints(), [ map { "/api/w/$_" } 1 .. 4 ],
    'every event is in Redis exactly once');
is(metric('activity_redis_reconnects_total', 'connection="queue"'), 0,
    'the connection was not dropped for it');
is(metric('activity_events_queued_total'), 4, '4 events queued');
$t->nginx_stop;

# --- the connection lost while WAIT waits ----------------------------------
# no replica: WAIT waits its 4 s; the event was pushed, the connection
# is killed meanwhile, the event is pushed again on the next one

$t->write_conf(<<"EOF", undef, 'drop');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:$port;
    activity_queue drop:events;
    activity_redis_wait_replica 4s;

    server {
        listen 127.0.0.1:%%PORT_drop%%;
        server_name localhost;

        location /api/ {
            activity_track on;
            return 200 "ok\\n";
        }

        location = /status {
            activity_status;
        }
    }
}
EOF
$t->nginx_start(name => 'drop');

sub dmetric {
    my ($name, $labels) = @_;
    my $r = $t->http(GET => '/status', port => $t->port('drop'));
    my $l = defined $labels ? "\\{\Q$labels\E\\}" : '';
    return ($r->{content} // '') =~ /^\Q$name\E$l (\d+)$/m ? $1 : 0;
}

ok(wait_for(sub { dmetric('activity_redis_connected', 'connection="queue"')
    == 1 }, 20), 'drop: the queue is connected');
is($t->http(GET => '/api/d/1', port => $t->port('drop'))->{status}, 200,
    'drop: a request');
ok(wait_for(sub { $r->llen('drop:events') == 1 }, 20), 'its event is pushed');
$r->client('KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
ok(wait_for(sub { dmetric('activity_events_unreplicated_total') == 1 }, 30),
    'sent again on a new connection, then let go unreplicated');
is($r->llen('drop:events'), 2, 'pushed twice (the worker stores it once)');
is(dmetric('activity_events_queued_total'), 1, 'counted once as queued');
$t->nginx_stop('QUIT', 'drop');

$t->done;
