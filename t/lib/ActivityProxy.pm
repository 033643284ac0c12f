package ActivityProxy;

# A small TCP proxy for fault tests, run in a child process: it forwards
# every flow from a loopback port to another, and on command stops
# forwarding the flows it has (silently, as a NAT or a load balancer that
# forgot them) or drops them (closes both sides).  New flows are forwarded
# as usual in both cases.
#
#   my $p = ActivityProxy->start(listen => $port, to => $redis_port,
#                                log => "$dir/proxy.log");
#   $p->stall;   # current flows: nothing more goes through, no close
#   $p->drop;    # current flows: closed on both sides
#   $p->flows;   # flows seen so far (from the log)
#   $p->stop;

use strict;
use warnings;

use Carp qw(croak);
use IO::Select;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep);

sub start {
    my ($class, %o) = @_;

    my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
        LocalPort => $o{listen}, Listen => 128, ReuseAddr => 1)
        or croak "proxy: listen on $o{listen}: $!";

    my $pid = fork;
    croak "fork: $!" unless defined $pid;

    if ($pid == 0) {
        _run($listener, $o{to}, $o{log});
        POSIX::_exit(0);
    }

    close $listener;
    return bless { %o, pid => $pid, owner => $$ }, $class;
}

sub stall { kill 'USR1', $_[0]{pid} }
sub drop { kill 'USR2', $_[0]{pid} }

# how many flows were accepted so far
sub flows {
    my ($self) = @_;
    open my $fh, '<', $self->{log} or return 0;
    return scalar grep { /^accepted/ } <$fh>;
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid} && $self->{owner} == $$;
    kill 'TERM', $self->{pid};
    waitpid($self->{pid}, 0);
    delete $self->{pid};
}

sub DESTROY { $_[0]->stop }

sub _run {
    my ($listener, $to, $log) = @_;

    open my $lf, '>>', $log or POSIX::_exit(1);
    $lf->autoflush(1);

    my ($stall, $drop, $term) = (0, 0, 0);
    local $SIG{USR1} = sub { $stall = 1 };
    local $SIG{USR2} = sub { $drop = 1 };
    local $SIG{TERM} = sub { $term = 1 };

    my $sel = IO::Select->new($listener);
    my %peer;       # fileno => the other socket
    my %stalled;    # fileno => 1: left alone for good
    my %sock;       # fileno => socket

    my $close = sub {
        my ($s) = @_;
        my $o = $peer{ fileno $s };
        for my $x (grep { defined } $s, $o) {
            my $fd = fileno $x;
            next unless defined $fd;
            $sel->remove($x);
            delete $peer{$fd};
            delete $stalled{$fd};
            delete $sock{$fd};
            close $x;
        }
    };

    until ($term) {
        if ($stall) {
            $stall = 0;
            for my $fd (keys %peer) {
                $stalled{$fd} = 1;
                $sel->remove($sock{$fd});
            }
            print $lf "stalled\n";
        }

        if ($drop) {
            $drop = 0;
            $close->($sock{$_}) for grep { $sock{$_} } keys %peer;
            print $lf "dropped\n";
        }

        for my $s ($sel->can_read(0.1)) {
            if ($s == $listener) {
                my $c = $listener->accept or next;
                my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                    PeerPort => $to, Timeout => 2);
                if (!$u) {
                    print $lf "refused\n";
                    close $c;
                    next;
                }
                $peer{ fileno $c } = $u;
                $peer{ fileno $u } = $c;
                $sock{ fileno $c } = $c;
                $sock{ fileno $u } = $u;
                $sel->add($c, $u);
                print $lf "accepted\n";
                next;
            }

            next unless $sock{ fileno $s };

            my $n = sysread $s, my $buf, 65536;
            if (!$n) {
                $close->($s);
                next;
            }

            my $o = $peer{ fileno $s };
            my $off = 0;
            while ($off < $n) {
                my $w = syswrite $o, $buf, $n - $off, $off;
                last unless defined $w;
                $off += $w;
            }
        }
    }
}

1;
