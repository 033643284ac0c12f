#!/usr/bin/perl

# Persistent Redis errors do not cause a storm: while every LPUSH is
# refused (WRONGTYPE on the queue key, NOAUTH, OOM at maxmemory, READONLY
# after the master became a replica), nginx reconnects with a backoff that keeps growing, logs one
# line when the trouble starts and one when it is over, and answers every
# request; once the cause is fixed, the held events arrive.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
worker_processes 1;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /api/ {
            activity_track on;
            return 200 "ok\n";
        }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $r = $t->redis;

sub connections {
    my $info = $r->info('stats');
    return $info->{total_connections_received};
}

sub log_count {
    my ($re) = @_;
    open my $fh, '<', $t->error_log or return 0;
    return scalar grep { /$re/ } <$fh>;
}

is($t->http(GET => '/api/warm')->{status}, 200, 'warm request');
ok(wait_for(sub { $r->llen('activity:events') == 1 }, 10), 'events flow');

# Breaks Redis with $break, sends a request every 0.2 s for 6 s, then
# repairs it with $fix; checks connections, log lines and delivery.
sub storm {
    my ($name, $code, $break, $fix) = @_;

    # after 10 s of health the backoff starts over: each case from scratch
    sleep 11 if $main::backs;

    $r->del('activity:events');
    $break->();

    my $before = connections();
    my $answered = 0;
    my $end = time + 6;
    my $sent = 0;
    while (time < $end) {
        $sent++;
        $answered++
            if $t->http(GET => "/api/$name/$sent")->{status} == 200;
        sleep 0.2;
    }
    my $connects = connections() - $before;

    is($answered, $sent, "$name: every request answered");
    # a reset backoff reconnects about ten times a second (60 here);
    # growing from 0.1 s with jitter it cannot pass 8 in 6 s
    ok($connects <= 10, "$name: $connects connections in 6 s, not a storm");
    is(log_count(qr/\Q$code\E/), 1, "$name: one log line for the trouble");

    $fix->();

    ok(wait_for(sub {
        my @e = grep { $_->{metadata}{endpoint} =~ m{^/api/$name/} }
            $t->queued_events;
        return @e >= $sent;
    }, 20), "$name: the held events arrive once it is fixed");
    my $backs = ++$main::backs;
    ok(wait_for(sub {
        log_count(qr/event queue is back on redis/) == $backs }, 10),
        "$name: and the recovery is logged");
    return $sent;
}

storm('wrongtype', 'WRONGTYPE',
    sub { $r->set('activity:events', 'not a list') },
    sub { $r->del('activity:events') });

# NOAUTH: a password was set and the connection made again (ours stays
# authenticated: SKIPME)
storm('noauth', 'NOAUTH',
    sub {
        $r->config_set('requirepass', 'now-secret');
        $r->client_kill('TYPE', 'normal', 'SKIPME', 'yes');
    },
    sub { $r->config_set('requirepass', '') });

# OOM: Redis at maxmemory with noeviction refuses writes
storm('oom', 'OOM',
    sub { $r->config_set('maxmemory', '1') },
    sub { $r->config_set('maxmemory', '0') });

# READONLY: the master was turned into a replica (as after a failover);
# nginx reconnects rather than keep pushing to it
my $nowhere = $t->port('nowhere');
storm('readonly', 'READONLY',
    sub { $r->replicaof('127.0.0.1', $nowhere) },
    sub { $r->replicaof('no', 'one') });

is(log_count(qr/event queue is back on redis/), 4,
    'one recovery line for each');

$t->done;
