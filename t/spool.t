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

# A value of the status page (NAME{LABELS} as one string); undef if absent.
sub metric { $t->status_metric('/status', $_[0]) }

sub spool_lines {
    open my $fh, '<', "$spool/events" or return undef;
    my $n = 0;
    $n++ while <$fh>;
    return $n;
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
ok(wait_for(sub {
    my $elog = do { local (@ARGV, $/) = $t->error_log; <> };
    return () = $elog =~ /worker process \d+ exited with code 0/g;
}, 30) >= 2, 'the old worker processes exited');

is(burst('a', 1201, 1500), 300, 'requests answer after the reload');

# nothing reached Redis yet: every event is in a buffer or the spool
my $spooled_a;
wait_for(sub {
    $spooled_a = metric('activity_events_spooled_total');
    return $spooled_a > 0 && (spool_lines() // -1) == $spooled_a;
}, 10);
ok($spooled_a > 0, 'activity_events_spooled_total counts them');
is(spool_lines(), $spooled_a, 'the spool holds every event counted');
my $sum;
wait_for(sub {
    $spooled_a = metric('activity_events_spooled_total');
    $sum = metric('activity_events_buffered') + $spooled_a;
    return $sum == 1500 && (spool_lines() // -1) == $spooled_a;
}, 10);
is($sum, 1500, 'every event is buffered or spooled');

$t->redis_start;

ok(wait_for(sub {
    my $n = endpoints();
    return scalar(keys %$n) == 1500;
}, 30, 0.5), 'every request\'s event arrives once Redis is back');

my $n = endpoints();
is(scalar(grep { !$n->{"/api/a/$_"} } 1 .. 1500), 0, 'none is missing');

# an event may reach Redis twice only when an LPUSH reply or a claim's
# owner is lost; Redis stopped cleanly and no process died here
my $repeats = grep { $_ > 1 } values %$n;
is($repeats, 0, 'no event arrives twice');

ok(wait_for(sub { !-e "$spool/events" && !glob("$spool/events.replay.*") },
    10), 'the spool is replayed and removed');

is(metric('activity_events_dropped_total'), 0, 'nothing dropped');

# --- beyond max_size: dropped and counted ------------------------------

ok(wait_for(sub { metric('activity_events_buffered') == 0 }, 10),
    'nothing is buffered once everything is delivered');

# a new nginx: its metrics start at zero
$t->redis->del('activity:events');
$t->nginx_stop;
$t->nginx_start;
my $spooled_b = metric('activity_events_spooled_total');
is($spooled_b, 0, 'a new nginx has spooled nothing');
$t->redis_stop;

# ~300 bytes an event: 64k of buffer and 1m of spool hold ~3,700
is(burst('b', 1, 5000), 5000, 'requests answer beyond the spool');

# (spool writes and their counts may come a moment after the responses)
my ($dropped, $spooled);
wait_for(sub {
    $dropped = metric('activity_events_dropped_total');
    $spooled = metric('activity_events_spooled_total') - $spooled_b;
    return (spool_lines() // -1) == $spooled
        && metric('activity_events_buffered') + $spooled + $dropped == 5000;
}, 10);
ok($dropped > 0, 'beyond the spool, events are dropped and counted');
is(spool_lines(), $spooled, 'the spool holds every event counted');
is(metric('activity_events_buffered') + $spooled + $dropped, 5000,
    'every event is buffered, spooled or dropped');
my $size = -s "$spool/events";
ok(defined $size && $size <= 1024 * 1024 && $size > 1024 * 1024 - 1024,
    'the spool is full, within max_size (' . ($size // 'missing') . ')');

my $elog;
wait_for(sub {
    $elog = do { local (@ARGV, $/) = $t->error_log; <> };
    return $elog =~ /dropped/;
}, 5);
like($elog, qr/(event buffer full|the spool is full) .* dropped/,
    'the drops are logged');

$t->redis_start;

$t->done;
