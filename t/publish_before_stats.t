#!/usr/bin/perl

# An event's PUBLISH never waits for the stats sums. Redis sends what a
# script published only once the script returns, so the worker's call
# that counts and publishes events does not also sum the stats windows
# (MGET over up to an hour of keys, the slowest part): when the stats
# are due it answers "due in 1 ms" and a call of its own, without
# events, computes and publishes them right after. Watched with
# MONITOR, which lists the commands a script runs after the script's
# own line. --stats-min-ms 0 makes the stats due at every call.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use Redis;
use Test::More;
use ActivityTest qw(wait_for make_event from_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

my $mon = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
    PeerPort => $t->redis_port, Timeout => 5) or die "monitor: $!";
$mon->blocking(0);
print $mon "MONITOR\r\n";

my $buf = '';
sub monitor_lines {
    my $chunk;
    while (defined(my $n = sysread($mon, $chunk, 65536))) {
        last if $n == 0;
        $buf .= $chunk;
    }
    my @lines = split /\r\n/, $buf, -1;
    $buf = pop @lines;
    return @lines;
}

my @stats;
my $sub = Redis->new(server => '127.0.0.1:' . $t->redis_port,
    cnx_timeout => 2);
$sub->subscribe('dashboard:stats', sub { push @stats, from_json($_[0]) });

$t->worker_start(args => ['--stats-min-ms', 0]);

# one at a time, so that each is a call of its own
my @lines;
for my $i (1 .. 3) {
    $t->push_events(make_event(endpoint => "/stats-after/$i"));
    ok(wait_for(sub {
        push @lines, monitor_lines();
        return grep { /"PUBLISH" "dashboard:events" .*stats-after\/$i/ }
            @lines;
    }, 20, 0.02), "event $i is published");
}

ok(wait_for(sub {
    $sub->wait_for_messages(0.05);
    return grep { ($_->{apiRequestsPerMinute} // 0) >= 3 } @stats;
}, 20, 0.01), 'the stats that follow count all three events');
push @lines, monitor_lines();

# a script's commands follow its EVALSHA line, marked "lua"
my (@calls, $cur);
for (@lines) {
    if (/\[\d+ lua\]/) {
        push @$cur, $_ if $cur;
    } elsif (/"EVALSHA"/) {
        push @calls, $cur = [ $_ ];
    } else {
        $cur = undef;
    }
}

my @with_events = grep {
    grep { /"PUBLISH" "dashboard:events"/ } @$_
} @calls;
my @with_stats = grep {
    grep { /"PUBLISH" "dashboard:stats"/ } @$_
} @calls;

is(scalar @with_events, 3, 'three calls published the three events');
is(scalar(grep { grep { /"MGET"/ } @$_ } @with_events), 0,
    'none of them summed the stats windows');
is(scalar(grep { grep { /"PUBLISH" "dashboard:stats"/ } @$_ } @with_events),
    0, 'nor published the stats');
ok(scalar @with_stats >= 1, 'calls of their own published the stats');
ok(!(grep { grep { /"PUBLISH" "dashboard:events"/ } @$_ } @with_stats),
    'without events in them');

$t->stop_all;
done_testing;
