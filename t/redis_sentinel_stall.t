#!/usr/bin/perl

# redis+sentinel:// when sentinels misbehave (review of issue 12 §3):
#   1. the first sentinel accepts connections and never answers, the
#      second refuses them: the third, a real redis-sentinel, is asked
#      in turn and the queue reaches the master;
#   2. no sentinel answers at all: requests still answer 200, one warn
#      line per connection, attempts go on;
#   3. nginx asked to quit while a connection waits on the silent
#      sentinel exits, without an alert;
#   4. a sentinel naming an IPv6 master: used, and shown as [::1]:port;
#   5. sentinels answering nonsense (scripted peers, each with one reply
#      no redis-sentinel would give): nginx keeps serving, asks again
#      and again, and says why for the last one asked.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use POSIX ();
use Test::More;
use ActivityTest qw(wait_for);
use SentinelConf qw(sentinel_conf);

my $t = ActivityTest->new(needs => [qw(module redis)]);

sub conf_with {
    my ($url, $name) = @_;
    return sentinel_conf(url => $url, port => $name, workers => 1,
        secret => 'stall-secret');
}

$t->redis_start;
my $sport = $t->sentinel_start_extra('one', 'mymaster', '127.0.0.1',
    $t->redis_port);

# accepts (the kernel completes the handshake), never reads or answers
my $silent = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
    Listen => 1024, ReuseAddr => 1) or die "listen: $!";
my $sp = $silent->sockport;
my $closed = $t->port('closed');

sub metric {
    my ($name, $re) = @_;
    my $r = $t->http(GET => '/status', port => $t->port($name));
    return ($r->{content} // '') =~ $re ? $1 : 0;
}

# --- 1. a silent and a closed sentinel before a real one --------------------

$t->write_conf(conf_with(
    "redis+sentinel://127.0.0.1:$sp,127.0.0.1:$closed,127.0.0.1:$sport/mymaster",
    'mixed'), undef, 'mixed');
$t->nginx_start(name => 'mixed');

is($t->http(GET => '/t/1', port => $t->port('mixed'))->{status}, 200,
    'a request while the silent sentinel is asked');
my $r = $t->redis_client;
ok(wait_for(sub { $r->llen('activity:events') == 1 }, 30),
    'the event reaches the master through the third sentinel');
my $port = $t->redis_port;
ok(scalar $t->log_lines(
    qr/\[notice\].*event queue on redis "[^"]+" uses the master at 127\.0\.0\.1:$port/,
    $t->error_log('mixed')), 'the master is named in the log');
$t->nginx_stop('QUIT', 'mixed');

# --- 2. no sentinel answers -----------------------------------------------

$t->write_conf(conf_with(
    "redis+sentinel://127.0.0.1:$closed,127.0.0.1:$sp/mymaster", 'none'),
    undef, 'none');
$t->nginx_start(name => 'none');
is($t->http(GET => "/t/none/$_", port => $t->port('none'))->{status}, 200,
    "no sentinel: request $_ answers 200") for 1 .. 2;
ok(wait_for(sub {
    metric('none',
        qr/^activity_redis_reconnects_total\{connection="queue"\} (\d+)$/m)
        >= 3 }, 60), 'the sentinels are asked again and again');
my @none = $t->log_lines(qr/no sentinel named the master/,
    $t->error_log('none'));
is(scalar @none, 3, 'one warn line for each connection')
    or diag(join "\n", @none);
like($none[0] // '', qr/\[warn\].*no sentinel named the master, the last: sentinel 127\.0\.0\.1:$sp: no answer in time; retrying with backoff/,
    'naming the silent sentinel, the last asked');
is(metric('none', qr/^activity_redis_connected\{connection="queue"\} (\d+)$/m),
    0, 'the queue is not connected');

# --- 3. quit while waiting on the silent sentinel --------------------------

$t->write_conf(conf_with("redis+sentinel://127.0.0.1:$sp/mymaster", 'quit'),
    undef, 'quit');
$t->nginx_start(name => 'quit');
is($t->http(GET => '/t/quit', port => $t->port('quit'))->{status}, 200,
    'a request while the only sentinel is silent');
$t->nginx_stop('QUIT', 'quit');
ok(!grep({ /\[(alert|crit|emerg)\]/ } $t->log_lines(qr/./,
    $t->error_log('quit'))), 'nginx quits, no alert');

$t->nginx_stop('QUIT', 'none');

# --- 4. an IPv6 master ------------------------------------------------------

$t->redis_stop;
$t->redis_start_opts(args => ['--bind', '127.0.0.1', '::1']);
my $v6 = $t->sentinel_start_extra('v6', 'v6', '::1', $port);
$t->write_conf(conf_with("redis+sentinel://127.0.0.1:$v6/v6", 'v6'),
    undef, 'v6');
$t->nginx_start(name => 'v6');
is($t->http(GET => '/t/v6', port => $t->port('v6'))->{status}, 200,
    'v6: a request');
$r = $t->redis_client;
ok(wait_for(sub { $r->llen('activity:events') == 1 }, 30),
    'the event reaches the master on ::1');
my @v6 = $t->log_lines(qr/uses the master at/, $t->error_log('v6'));
like($v6[0] // '', qr/uses the master at \[::1\]:$port$/,
    'the log shows it as [::1]:port') or diag(join "\n", @v6);
my $st = $t->http(GET => '/status', port => $t->port('v6'))->{content} // '';
like($st, qr/^activity_redis_master\{connection="queue",address="\[::1\]:$port"\} 1$/m,
    'and so does activity_status')
    or diag(join "\n", grep { /master/ } split /\n/, $st);
$t->nginx_stop('QUIT', 'v6');

# --- 5. nonsense answers ------------------------------------------------------

my @replies = (
    ":1\r\n",                                          # an integer
    "+OK\r\n",                                         # a status
    "*0\r\n",                                          # an empty array
    "*3\r\n\$1\r\na\r\n\$1\r\nb\r\n\$1\r\nc\r\n",      # three elements
    "*2\r\n*1\r\n\$1\r\na\r\n\$4\r\n6379\r\n",         # a nested array
    "*2\r\n:1\r\n:2\r\n",                              # integers
    "*2\r\n\$0\r\n\r\n\$4\r\n6379\r\n",                # an empty host
    "*2\r\n\$200\r\n" . ('1' x 200) . "\r\n\$4\r\n6379\r\n",  # a long host
    "*2\r\n\$-1\r\n\$4\r\n6379\r\n",                   # a nil host
    "-ERR no such command\r\n",                        # an error
    "HTTP/1.1 400 Bad Request\r\n\r\n",                # not RESP at all
    "*2\r\n\$9\r\n127.0.0.1\r\n\$5\r\n99999\r\n",      # a bad port, last
);
my @socks = map {
    IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
        Listen => 128, ReuseAddr => 1) or die "listen: $!"
} @replies;
my $parent = $$;
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    require IO::Select;
    my %reply = map { fileno($socks[$_]) => $replies[$_] } 0 .. $#socks;
    my $sel = IO::Select->new(@socks);
    my %peer;    # fileno => reply for an accepted connection
    for (;;) {
        POSIX::_exit(0) if getppid() != $parent;    # the test is gone
        for my $fh ($sel->can_read(1)) {
            if (exists $reply{ fileno $fh }) {
                my $c = $fh->accept or next;
                $peer{ fileno $c } = $reply{ fileno $fh };
                $sel->add($c);
                next;
            }
            my $n = sysread($fh, my $buf, 4096);
            if (!$n) {
                delete $peer{ fileno $fh };
                $sel->remove($fh);
                close $fh;
                next;
            }
            syswrite($fh, $peer{ fileno $fh });
        }
    }
}
my $fuzz = join ',', map { '127.0.0.1:' . $_->sockport } @socks;
$t->write_conf(conf_with("redis+sentinel://$fuzz/mymaster", 'fuzz'),
    undef, 'fuzz');
$t->nginx_start(name => 'fuzz');
is($t->http(GET => "/t/fuzz/$_", port => $t->port('fuzz'))->{status}, 200,
    "nonsense from the sentinels: request $_ answers 200") for 1 .. 3;
ok(wait_for(sub {
    metric('fuzz',
        qr/^activity_redis_reconnects_total\{connection="queue"\} (\d+)$/m)
        >= 3 }, 60), 'every sentinel asked, again and again');
my $lastp = $socks[-1]->sockport;
my @fz = $t->log_lines(qr/no sentinel named the master/,
    $t->error_log('fuzz'));
is(scalar @fz, 3, 'one warn line for each connection')
    or diag(join "\n", @fz);
like($fz[0] // '', qr/the last: sentinel 127\.0\.0\.1:$lastp: named no valid port; retrying with backoff/,
    'saying why for the last one asked (a bad port, not "a host name")');
is(scalar(grep { /exited on signal|\[alert\]/ } $t->log_lines(qr/./,
    $t->error_log('fuzz'))), 0, 'no nginx worker died');
$t->nginx_stop('QUIT', 'fuzz');
kill 'TERM', $pid;
waitpid $pid, 0;

$t->done;
