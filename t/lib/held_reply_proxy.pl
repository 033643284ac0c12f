#!/usr/bin/perl

# A TCP relay to Redis for t/resume_review.t: everything passes at once,
# except what Redis answers on a connection that has sent XRANGE (the
# module's resume connection): that is held until the relay gets
# SIGUSR1, then sent in order; the next XRANGE is held again.  A test so
# decides what happens between Redis reading a resume's gap and nginx
# getting it.  With "split", the commands sent after a resume's first
# XRANGE are held too (until SIGUSR1): the test acts between two
# commands of one pipeline.
#
#   perl held_reply_proxy.pl LISTEN_PORT REDIS_PORT [split]

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;

my ($listen_port, $redis_port, $split) = @ARGV;

my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
    LocalPort => $listen_port, Listen => 64, ReuseAddr => 1)
    or die "listen $listen_port: $!\n";

my $sel = IO::Select->new($listener);
my %peer;       # fileno -> the other socket
my %client;     # fileno -> 1 for client-side sockets
my %held;       # fileno of a client socket -> { to => it, data => [..] }
my %out;        # fileno of a client socket -> { to => redis, data => [..] }
my $release = 0;

$SIG{TERM} = sub { exit 0 };
$SIG{USR1} = sub { $release = 1 };

while (1) {
    if ($release) {
        $release = 0;
        for my $h (values %out, values %held) {
            syswrite $h->{to}, $_ for @{ $h->{data} };
        }
        %held = ();
        %out = ();
    }

    for my $fh ($sel->can_read(0.05)) {
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

        my $fd = fileno $fh;
        my $other = defined $fd ? $peer{$fd} : undef;
        $other or next;
        my $n = sysread $fh, my $buf, 65536;
        if (!$n) {
            for my $x ($fh, $other) {
                $sel->remove($x);
                delete $held{ fileno $x };
                delete $out{ fileno $x };
                delete $peer{ fileno $x };
                delete $client{ fileno $x };
                close $x;
            }
            next;
        }

        if ($client{ fileno $fh }) {
            my $fd = fileno $fh;
            if ($out{$fd}) {
                push @{ $out{$fd}{data} }, $buf;
                next;
            }
            my @at;
            while ($buf =~ /\*\d+\r\n\$6\r\nXRANGE\r\n/gi) {
                push @at, $-[0];
            }
            $held{$fd} //= { to => $fh, data => [] } if @at;
            if ($split && @at > 1) {
                $out{$fd} = { to => $other,
                              data => [ substr($buf, $at[1]) ] };
                $buf = substr($buf, 0, $at[1]);
            }
            syswrite $other, $buf;
            next;
        }

        my $cfd = fileno $other;
        if ($held{$cfd}) {
            push @{ $held{$cfd}{data} }, $buf;
            next;
        }
        syswrite $other, $buf;
    }
}
