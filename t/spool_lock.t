#!/usr/bin/perl

# The spool never blocks nginx's event loop:
#   1. another process holds the lock of a spool that is due for replay:
#      requests are answered and live events flow meanwhile; the spooled
#      events arrive once the lock is released;
#   2. another process holds the lock while Redis is away and events go to
#      the spool: requests are answered, nothing is dropped, every event
#      arrives once the lock is released and Redis is back;
#   3. an event longer than the 64 KiB read chunk is replayed whole.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Fcntl qw(:flock);
use File::Path qw(make_path);
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis)]);

my $dir = $t->dir . '/spool';
make_path($dir);
chmod 0777, $dir;
my $spool = "$dir/events";

$t->write_conf(<<"EOF");
%%GLOBALS%%
worker_processes 1;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_buffer_size 64k;
    activity_spool $spool max_size=8m;

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

# A value of the status page (NAME{LABELS} as one string); undef if absent.
sub metric { $t->status_metric('/status', $_[0]) }

sub queued {
    my %n;
    for my $json (@{ $t->redis->lrange('activity:events', 0, -1) }) {
        my $e = eval { ActivityTest::from_json($json) }
            or do { $n{'(not JSON)'}++; next };
        $n{ $e->{id} }++;
        $n{ $e->{metadata}{endpoint} }++;
    }
    return \%n;
}

# events "a previous process spooled": one of them over 64 KiB
my @old = map { ActivityTest::make_event(endpoint => "/old/$_") } 1 .. 3;
$old[1]{metadata}{details} = { blob => 'x' x 200_000 };

open my $fh, '>', $spool or die "$spool: $!";
print $fh ActivityTest::to_json($_), "\n" for @old;
close $fh;
chmod 0666, $spool;

# --- 1. the lock of a spool due for replay is held elsewhere ----------

open my $lock, '<', $spool or die;
flock($lock, LOCK_SH) or die "flock: $!";

$t->redis_start;
$t->nginx_start;

my $answered = 0;
for my $i (1 .. 5) {
    my $r = $t->http(GET => "/api/live/$i");
    $answered++ if $r->{status} == 200;
}
is($answered, 5, 'requests answered while the spool lock is held');
ok(wait_for(sub {
    my $n = queued();
    return !grep { !$n->{"/api/live/$_"} } 1 .. 5;
}, 10), 'and their events flow');
ok(!grep({ queued()->{$_->{id}} } @old), 'the spool waits for the lock');

close $lock;

ok(wait_for(sub {
    my $n = queued();
    return !grep { !$n->{ $_->{id} } } @old;
}, 15), 'the spooled events arrive once the lock is released');

# --- 3. the long one, whole ---------------------------------------------

my ($long) = grep { ref $_->{metadata}{details} eq 'HASH'
    && $_->{metadata}{details}{blob} } map { ActivityTest::from_json($_) }
    grep { /"blob"/ } @{ $t->redis->lrange('activity:events', 0, -1) };
ok($long && $long->{id} eq $old[1]{id}
    && length($long->{metadata}{details}{blob}) == 200_000,
    'an event over 64 KiB is replayed whole');
is(queued()->{'(not JSON)'}, undef, 'and no fragment of it is pushed');
is(scalar(@{ $t->redis->lrange('activity:events', 0, -1) }), 8,
    'every event once');
ok(wait_for(sub { !-e $spool && !glob("$spool.replay.*") }, 10),
    'the spool is removed');

# --- 2. the lock is held while events go to the spool -------------------

$t->redis->del('activity:events');
$t->redis_stop;

open $fh, '>>', $spool or die;
chmod 0666, $spool;
flock($fh, LOCK_EX) or die "flock: $!";

$answered = 0;
for my $i (1 .. 600) {
    $answered++ if $t->http(GET => "/api/held/$i")->{status} == 200;
}
is($answered, 600, 'requests answered while Redis is away and the lock held');
is(-s $spool, 0, 'nothing written under the lock');

close $fh;
ok(wait_for(sub { -s $spool }, 10), 'written once the lock is released');

$t->redis_start;
ok(wait_for(sub {
    my $n = queued();
    return !grep { !$n->{"/api/held/$_"} } 1 .. 600;
}, 30), 'every event arrives');
is(metric('activity_events_dropped_total'), 0, 'nothing dropped');
ok(metric('activity_events_spooled_total') > 0, 'some went through the spool');

$t->done;
