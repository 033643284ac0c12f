package ActivityLoad;

# A steady tracked load for the fault tests (t/fault_*.t): a child
# process sends GET /load/<tag>/<n> to nginx at a fixed rate for a fixed
# time over keep-alive connections and counts, itself, the requests that
# were answered 200 (the number of rows the pipeline owes).
#
#   my $load = ActivityLoad->start($t, tag => 'kill', seconds => 15,
#       rate => 300);
#   ... inject a fault ...
#   my $res = $load->finish;       # { ok => N, failed => M, errors => [] }
#   ActivityLoad::check_stored($t, $res, 'kill');

use strict;
use warnings;

use Carp qw(croak);
use HTTP::Tiny;
use POSIX ();
use Scalar::Util ();
use Test::More;
use Time::HiRes qw(sleep time);

# issue 14 (tests14): the loads running, by pid
my %LIVE;

sub start {
    my ($class, $t, %o) = @_;
    my $tag = $o{tag} // 'load';
    my $seconds = $o{seconds} // 15;
    my $rate = $o{rate} // 300;
    my $file = $t->dir . "/load-$tag.txt";

    my $pid = fork;
    croak "fork: $!" unless defined $pid;

    if ($pid == 0) {
        my $ua = HTTP::Tiny->new(keep_alive => 1, timeout => 10,
            agent => 'activity-load/1.0');
        my $base = $t->base_url . "/load/$tag/";
        my ($ok, $failed, %errors) = (0, 0);
        my $start = time;
        my $n = 0;

        while (time - $start < $seconds) {
            $n++;
            my $r = $ua->get($base . $n);
            if ($r->{status} == 200) {
                $ok++;
            } else {
                $failed++;
                my $why = "$r->{status} "
                    . ($r->{status} == 599 ? $r->{content} : $r->{reason});
                $why =~ s/\s+/ /g;
                $errors{substr $why, 0, 100}++;
            }
            my $due = $start + $n / $rate;
            my $now = time;
            sleep($due - $now) if $due > $now;
        }

        open my $fh, '>', $file or POSIX::_exit(1);
        print $fh "ok $ok\nfailed $failed\nsent $n\n";
        print $fh "error $errors{$_} $_\n" for sort keys %errors;
        close $fh;
        POSIX::_exit(0);
    }

    my $self = bless { pid => $pid, file => $file, tag => $tag,
        seconds => $seconds, started => time, owner => $$ }, $class;
    $LIVE{$pid} = $self;
    Scalar::Util::weaken($LIVE{$pid});
    return $self;
}

# a load still running when the test file ends (however: END runs after
# a die too) or when its object goes away is killed
sub _kill {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    delete $LIVE{$pid};
    return unless $self->{owner} == $$;
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $@, $!);
    $self->_kill;
}

END {
    my $status = $?;
    $_->_kill for grep { defined } values %LIVE;
    $? = $status;
}

sub elapsed { time - $_[0]{started} }

# Sleeps until $s seconds after the load started.
sub at {
    my ($self, $s) = @_;
    my $left = $self->{started} + $s - time;
    sleep $left if $left > 0;
}

# Waits for the load to end; returns its counts.
sub finish {
    my ($self) = @_;
    my $pid = delete $self->{pid};
    delete $LIVE{$pid};
    waitpid $pid, 0;
    my %res = (ok => 0, failed => 0, sent => 0, errors => []);
    open my $fh, '<', $self->{file} or croak "no load result: $!";
    while (<$fh>) {
        chomp;
        if (/^(ok|failed|sent) (\d+)$/) {
            $res{$1} = $2;
        } elsif (/^error (.*)$/) {
            push @{ $res{errors} }, $1;
        }
    }
    return \%res;
}

# The checks every fault test ends with: every request answered 200 is
# stored exactly once, nothing went to the dead letters, nothing is left
# in the queue or a processing list. $timeout bounds the drain.
sub check_stored {
    my ($t, $res, $tag, $timeout) = @_;
    my $like = "/load/$tag/%";
    my $r = $t->redis;

    note(sprintf 'load %s: sent %d, 200: %d, failed %d', $tag, $res->{sent},
        $res->{ok}, $res->{failed});
    diag("request errors: @{ $res->{errors} }") if @{ $res->{errors} };

    ok($res->{ok} > 0, "the load got 200s ($res->{ok})");
    is($res->{failed}, 0, 'every request answered 200');

    my $rows = 0;
    ActivityTest::wait_for(sub {
        $rows = $t->row_count('endpoint LIKE ?', $like);
        return $rows >= $res->{ok} && $r->llen($t->queue) == 0
            && !grep { $r->llen($_) } $r->keys('activity:processing:*');
    }, $timeout // 60, 0.25);

    is($rows, $res->{ok}, 'count(rows) == count(200 responses)');
    is($t->sql_value('SELECT count(DISTINCT id) FROM activity_logs'
        . ' WHERE endpoint LIKE ?', $like), $rows,
        'no duplicate ids');
    is($t->sql_value('SELECT count(DISTINCT endpoint) FROM activity_logs'
        . ' WHERE endpoint LIKE ?', $like), $rows,
        'no request stored twice');
    is($r->llen('activity:dead'), 0, 'no dead letters');
}

# nginx.conf for the fault tests: one tracked location.
sub nginx_conf {
    my (%o) = @_;
    my $workers = $o{workers} // 1;
    return <<"EOF";
%%GLOBALS%%
worker_processes $workers;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /load/ {
            activity_track on;
            return 200 "ok\\n";
        }
    }
}
EOF
}

1;
