#!/usr/bin/perl

# A TCP relay to Redis for t/resume.t (issue 12): everything passes at
# once, except on a connection that has sent XRANGE (the module's resume
# connection): from then on each chunk either way waits DELAY seconds,
# so live events reach nginx while a resume is being read.
#
#   perl slow_xrange_proxy.pl LISTEN_PORT REDIS_PORT DELAY

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use sort 'stable';
use Time::HiRes qw(time);

my ($listen_port, $redis_port, $delay) = @ARGV;

my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
    LocalPort => $listen_port, Listen => 64, ReuseAddr => 1)
    or die "listen $listen_port: $!\n";

my $sel = IO::Select->new($listener);
my %peer;       # fileno -> the other socket
my %slow;       # fileno of a client socket -> 1 once it sent XRANGE
my %client;     # fileno -> 1 for client-side sockets
my @due;        # [time, to-socket, data], in order per direction

$SIG{TERM} = sub { exit 0 };

while (1) {
    my $now = time;
    while (@due && $due[0][0] <= $now) {
        my (undef, $to, $data) = @{ shift @due };
        syswrite $to, $data if $to->connected;
    }
    my $wait = @due ? $due[0][0] - $now : 1;
    $wait = 0 if $wait < 0;

    for my $fh ($sel->can_read($wait)) {
        if ($fh == $listener) {
            my $c = $listener->accept or next;
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                PeerPort => $redis_port) or do { close $c; next };
            $peer{ fileno $c } = $s;
            $peer{ fileno $s } = $c;
            $client{ fileno $c } = 1;
            $sel->add($c, $s);
            next;
        }

        my $other = $peer{ fileno $fh } or next;
        my $n = sysread $fh, my $buf, 65536;
        if (!$n) {
            for my $x ($fh, $other) {
                $sel->remove($x);
                delete $peer{ fileno $x };
                delete $slow{ fileno $x };
                delete $client{ fileno $x };
                close $x;
            }
            @due = grep { $_->[1] != $fh && $_->[1] != $other } @due;
            next;
        }

        my $cfd = $client{ fileno $fh } ? fileno $fh : fileno $other;
        $slow{$cfd} = 1 if $client{ fileno $fh } && $buf =~ /XRANGE/i;

        # a direction that has something waiting keeps its order
        my ($last) = map { $_->[0] } grep { $_->[1] == $other }
            reverse @due;
        if (!$slow{$cfd} && !defined $last) {
            syswrite $other, $buf;
            next;
        }
        my $at = $slow{$cfd} ? time + $delay : time;
        $at = $last if defined $last && $last > $at;
        push @due, [ $at, $other, $buf ];
        @due = sort { $a->[0] <=> $b->[0] } @due;
    }
}
