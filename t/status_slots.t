#!/usr/bin/perl

# The per-process gauges of activity_status stay true across a reload
# (old and new workers never share a slot) and after a worker crashes
# (its slot is left out): activity_redis_connected and
# activity_events_buffered.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
worker_processes 2;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "slots";

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

# A value of the status page (NAME{LABELS} as one string); undef if absent.
sub metric { $t->status_metric('/status', $_[0]) }

my $queue = 'activity_redis_connected{connection="queue"}';
my $sub = 'activity_redis_connected{connection="subscriber"}';

sub master { $t->nginx_master_pid }

sub workers { $t->nginx_worker_pids }

ok(wait_for(sub { metric($queue) == 2 && metric($sub) == 2 }, 10),
    'two workers, both connections up');

# --- reload ---------------------------------------------------------------

my @old = workers();
kill 'HUP', master();
ok(wait_for(sub {
    my %now = map { $_ => 1 } workers();
    return !grep { $now{$_} } @old;
}, 15), 'the old workers are gone');
sleep 0.5;
is(metric($queue), 2, 'after a reload: 2 queue connections up');
is(metric($sub), 2, 'and 2 subscribers');

# --- events held, then a reload and a crash -----------------------------

$t->redis_stop;
ok(wait_for(sub { metric($queue) == 0 }, 10), 'Redis down: none up');

my $ua = HTTP::Tiny->new(keep_alive => 0, timeout => 5);
$t->http(GET => "/api/held/$_", ua => $ua) for 1 .. 10;
is(metric('activity_events_buffered'), 10, '10 events buffered');

@old = workers();
kill 'HUP', master();
ok(wait_for(sub {
    my %now = map { $_ => 1 } workers();
    return !grep { $now{$_} } @old;
}, 15), 'reloaded');
is(metric('activity_events_buffered'), 0,
    'the exited workers\' events are no longer counted');

$t->http(GET => "/api/held2/$_", ua => $ua) for 1 .. 6;
is(metric('activity_events_buffered'), 6, '6 new events buffered');

my @before = workers();
kill 'KILL', $_ for @before;
ok(wait_for(sub {
    my @now = workers();
    my %was = map { $_ => 1 } @before;
    return @now == 2 && !grep { $was{$_} } @now;
}, 15), 'both workers killed and replaced');
is(metric('activity_events_buffered'), 0,
    'a crashed worker\'s events are no longer counted');

$t->redis_start;
ok(wait_for(sub { metric($queue) == 2 && metric($sub) == 2 }, 15),
    'after the crash: 2 of each up');

$t->nginx_stop;

# the two crashes are what this test made: the master's alert about them
# is expected, any other alert is not
my $log = $t->error_log;
my $text = do { local (@ARGV, $/) = $log; <> };
is(scalar(() = $text =~ /\[alert\].*exited on signal 9/g), 2,
    'the master saw the two crashes');
$text =~ s/^.*\[alert\].*exited on signal 9.*\n//mg;
open my $fh, '>', $log or die;
print $fh $text;
close $fh;

$t->done;
