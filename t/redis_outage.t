#!/usr/bin/perl

# Redis down: requests still answer, events are buffered in nginx and sent
# in order when Redis is back; the worker rides the outage out.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time);
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
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
$t->pg_start;
$t->worker_migrate;
$t->worker_start;
$t->nginx_start;

# Sends $n tracked requests to /api/$tag/<i>; returns how many answered
# 200.
sub burst {
    my ($tag, $n) = @_;
    my $ok = 0;
    for my $i (1 .. $n) {
        my $start = time;
        my $r = $t->http(GET => "/api/$tag/$i");
        my $took = time - $start;
        if ($r->{status} == 200) {
            $ok++;
        } else {
            diag(sprintf '/api/%s/%d: %s in %.2fs', $tag, $i, $r->{status},
                $took);
        }
    }
    return $ok;
}

# How often the worker logged losing Redis.
sub worker_outages {
    my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
    return () = $log =~ /level=error msg="redis unavailable"/g;
}

sub rows_of {
    my ($tag) = @_;
    return $t->row_count('endpoint LIKE ?', "/api/$tag/%");
}

is(burst('warm', 5), 5, 'requests answered with Redis up');
ok(wait_for(sub { rows_of('warm') == 5 }, 20), 'pipeline flows');

# 1: Redis down, no worker; the buffered events reach the queue in order.

$t->allow_worker_errors(qr/msg="redis unavailable"/);
$t->worker_stop;
$t->redis_stop;

is(burst('down', 30), 30, 'with Redis down, requests answer 200');
ok($t->nginx_running, 'nginx still running');

$t->redis_start;
my $r = $t->redis;
ok(wait_for(sub { $r->llen('activity:events') >= 30 }, 20),
    'buffered events sent after Redis is back')
    or diag('queue length ' . $r->llen('activity:events'));

my @endpoints = map { $_->{metadata}{endpoint} // '?' } $t->queued_events;
is_deeply(\@endpoints, [ map { "/api/down/$_" } 1 .. 30 ],
    'in request order, none twice');

$t->worker_start;
ok(wait_for(sub { rows_of('down') == 30 }, 20), 'and stored');

# 2: Redis down with the worker running: both recover.

my $outages = worker_outages();
$t->redis_stop;
is(burst('again', 20), 20, 'second outage: requests answer 200');
ok(wait_for(sub { worker_outages() > $outages }, 30),
    'the worker saw the outage');
$t->redis_start;

wait_for(sub { rows_of('again') == 20 || !$t->worker_running }, 30);
ok($t->worker_running, 'the worker survived the outage')
    or $t->worker_start;
ok(wait_for(sub { rows_of('again') == 20 }, 30),
    'events of the second outage stored')
    or diag('rows ' . rows_of('again'));

is(burst('after', 5), 5, 'requests after recovery');
ok(wait_for(sub { rows_of('after') == 5 }, 20), 'stored as usual');

is($t->row_count, 60, 'every event stored once');

$t->done;
