#!/usr/bin/perl

# activity_spool: an outage longer than the memory buffer lasts.  With
# Redis down and a 64k buffer, two worker processes spool what does not
# fit; a reload during the outage spools what the old workers still
# held; when Redis is back every event arrives, each request's once,
# and the spool file is gone.  Beyond max_size events are dropped and
# counted.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use File::Path qw(make_path);
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis)]);

my $spool = $t->dir . '/spool';
make_path($spool);
chmod 0777, $spool;

$t->write_conf(<<"EOF");
%%GLOBALS%%
worker_processes 2;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_buffer_size 64k;
    activity_spool $spool/events max_size=1m;

    server {
        listen 127.0.0.1:%%PORT%% reuseport;
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

$t->redis_start;
$t->nginx_start;

sub burst {
    my ($tag, $from, $to) = @_;
    my $ok = 0;
    for my $i ($from .. $to) {
        $ok++ if $t->http(GET => "/api/$tag/$i")->{status} == 200;
    }
    return $ok;
}

sub metric {
    my ($name) = @_;
    my $text = $t->http(GET => '/status')->{content} // '';
    return $text =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

sub endpoints {
    my %n;
    for my $json (@{ $t->redis->lrange('activity:events', 0, -1) }) {
        my $e = ActivityTest::from_json($json);
        $n{ $e->{metadata}{endpoint} }++;
    }
    return \%n;
}

# --- an outage longer than the buffer, with a reload in the middle -----

$t->redis_stop;

is(burst('a', 1, 1200), 1200, 'requests answer while Redis is down');
# written from a timer, a moment later
ok(wait_for(sub { -s "$spool/events" }, 5),
    'what the buffers could not hold is spooled');

my $pid = do { local (@ARGV, $/) = $t->dir . '/nginx.pid'; <> };
chomp $pid;
ok(kill('HUP', $pid), 'nginx reloaded during the outage');
sleep 2;

is(burst('a', 1201, 1500), 300, 'requests answer after the reload');

ok(metric('activity_events_spooled_total') > 0,
    'activity_events_spooled_total counts them');

$t->redis_start;

ok(wait_for(sub {
    my $n = endpoints();
    return scalar(keys %$n) == 1500;
}, 30, 0.5), 'every request\'s event arrives once Redis is back');

my $n = endpoints();
is(scalar(grep { !$n->{"/api/a/$_"} } 1 .. 1500), 0, 'none is missing');

# an event whose LPUSH reply was lost may be sent again; the worker
# stores ids once: here, nothing beyond a handful may repeat
my $repeats = grep { $_ > 1 } values %$n;
ok($repeats <= 20, "repeats stay rare ($repeats)");

ok(wait_for(sub { !-e "$spool/events" && !glob("$spool/events.replay.*") },
    10), 'the spool is replayed and removed');

is(metric('activity_events_dropped_total'), 0, 'nothing dropped');

# --- beyond max_size: dropped and counted ------------------------------

$t->redis->del('activity:events');
$t->redis_stop;

# ~300 bytes an event: 64k of buffer and 1m of spool hold ~3,700
burst('b', 1, 5000);

ok(wait_for(sub { metric('activity_events_dropped_total') > 0 }, 5),
    'beyond the spool, events are dropped and counted');
ok(-s "$spool/events" <= 1024 * 1024, 'the spool stays within max_size');

my $elog;
wait_for(sub {
    $elog = do { local (@ARGV, $/) = $t->error_log; <> };
    return $elog =~ /dropped/;
}, 5);
like($elog, qr/(event buffer full|the spool is full) .* dropped/,
    'the drops are logged');

$t->redis_start;

$t->done;
