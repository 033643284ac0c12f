#!/usr/bin/perl

# The module's Redis failure promises (README "Failure modes", "In
# nginx"): an outage is logged once (lost, reconnected, sending N
# buffered), however many reconnects fail meanwhile; an LPUSH that gets
# no reply within 5 s (Redis stopped with SIGSTOP) counts as a lost
# connection, and the events not acknowledged are sent again, in order,
# once Redis answers.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "faults-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /api/ {
            activity_track on;
            return 200 "ok\n";
        }

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
$t->nginx_start;

sub metric {
    my ($name, $labels) = @_;
    return $t->status_metric('/status', $name, $labels) // -1;
}

sub reconnects { metric('activity_redis_reconnects_total',
    'connection="queue"') }
sub connected { metric('activity_redis_connected', 'connection="queue"') }

sub endpoints {
    return [ map { $_->{metadata}{endpoint} // '?' } $t->queued_events ];
}

sub count { scalar $t->log_lines($_[0]) }

ok(wait_for(sub { connected() == 1
    && metric('activity_redis_connected', 'connection="subscriber"') == 1 },
    20), 'queue and subscriber connected');
is($t->http(GET => '/api/warm')->{status}, 200, 'warm request');
ok(wait_for(sub { $t->redis->llen('activity:events') == 1 }, 20),
    'warm event queued');
$t->redis->del('activity:events');

# --- an outage: logged once, however many reconnects fail ----------------

$t->redis_stop;
ok(wait_for(sub { connected() == 0 }, 20), 'the loss is noticed');
is($t->http(GET => "/api/down/$_")->{status}, 200, "request $_ while down")
    for 1 .. 4;

my $before = reconnects();
ok(wait_for(sub { reconnects() >= $before + 3 }, 30),
    'the module keeps trying (three more reconnects failed)');

$t->redis_start;
ok(wait_for(sub { $t->redis->llen('activity:events') == 4 }, 30),
    'the buffered events are sent after the reconnect');
is_deeply(endpoints(), [ map { "/api/down/$_" } 1 .. 4 ], 'in order');
ok(wait_for(sub {
    metric('activity_redis_connected', 'connection="subscriber"') == 1 }, 20),
    'the subscriber is back too');
ok(wait_for(sub { count(qr/sending \d+ buffered/) }, 10),
    '"sending N buffered" logged');

is(count(qr/activity: event queue on redis "[^"]*": .*; retrying with backoff/),
    1, 'once: "event queue on redis …: …; retrying with backoff"');
is(count(qr/activity: event queue is back on redis/), 1,
    'once: "event queue is back on redis"');
is(count(qr/activity: sending 4 buffered event\(s\) to redis/), 1,
    'once: "sending 4 buffered event(s) to redis"');
is(count(qr/activity: subscriber on redis "[^"]*": .*; retrying with backoff/),
    1, 'the subscriber logs its outage once too');
is(count(qr/activity: subscriber is back on redis/), 1,
    'and its recovery once');

# --- no reply: Redis stopped with SIGSTOP ----------------------------------

$t->redis->del('activity:events');
my $lost_before = count(qr/event queue on redis .*retrying with backoff/);
my $reconnected_before = count(qr/event queue is back on redis/);
my $sending_before = count(qr/sending \d+ buffered/);

kill 'STOP', $t->redis_pid;
my $stopped = 1;
END { kill 'CONT', $t->redis_pid if $stopped && $t && $t->redis_pid }

is($t->http(GET => "/api/stopped/$_")->{status}, 200,
    "request $_ with Redis stopped") for 1 .. 3;

ok(wait_for(sub { count(qr/no answer to LPUSH: within 5000ms/) >= 1 }, 30),
    'no reply within 5 s: "no answer to LPUSH: within 5000ms" logged');

# two more reconnects: the outage lasts over at least a second timeout
$before = reconnects();
ok(wait_for(sub { reconnects() >= $before + 2 }, 40),
    'the module keeps reconnecting while Redis does not answer');

kill 'CONT', $t->redis_pid;
$stopped = 0;

# every event arrives, in order; one whose reply was lost may come twice
ok(wait_for(sub {
    my %seen = map { $_ => 1 } @{ endpoints() };
    3 == grep { $seen{"/api/stopped/$_"} } 1 .. 3 }, 30),
    'after SIGCONT every event reached Redis');
my @first;
my %had;
for (@{ endpoints() }) {
    push @first, $_ unless $had{$_}++;
}
is_deeply(\@first, [ map { "/api/stopped/$_" } 1 .. 3 ],
    'in request order (first arrivals)');
ok(wait_for(sub { connected() == 1 }, 20), 'queue connected again');
is($t->http(GET => '/api/after')->{status}, 200, 'request after');
ok(wait_for(sub { grep { $_ eq '/api/after' } @{ endpoints() } }, 20),
    'new events flow again');

is(count(qr/no answer to LPUSH/), 1,
    'the unanswered LPUSH is logged once for the outage');
is(count(qr/event queue on redis .*retrying with backoff/) - $lost_before, 1,
    'the outage is logged once');
is(count(qr/event queue is back on redis/) - $reconnected_before, 1,
    '"event queue is back on redis" logged once');
is(count(qr/sending \d+ buffered/) - $sending_before, 1,
    '"sending N buffered event(s)" logged once');

$t->done;
