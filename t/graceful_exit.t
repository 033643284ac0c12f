#!/usr/bin/perl

# An nginx worker that shuts down gracefully (reload, SIGQUIT) with events
# Redis has not acknowledged yet:
#   1. Redis answers within the reply timeout: the worker waits for the
#      replies, nothing is lost, nothing is logged as lost;
#   2. Redis never answers: the worker exits after the reply timeout and
#      logs exactly how many events it could not confirm;
#   3. with activity_spool, those events are spooled instead;
#   4. all of them, more than the spool gathers in memory at once (1 MiB).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use File::Path qw(make_path);
use Time::HiRes qw(sleep);
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis)]);

my $dir = $t->dir . '/spool';
make_path($dir);
chmod 0777, $dir;

my $conf = <<'EOF';
%%GLOBALS%%
worker_processes 1;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_meta pad $http_x_pad;
    SPOOL

    server {
        listen 127.0.0.1:LISTEN;
        server_name localhost;

        location /api/ {
            activity_track on;
            return 200 "ok\n";
        }
    }
}
EOF

(my $plain = $conf) =~ s/SPOOL//;
$plain =~ s/LISTEN/%%PORT%%/;
(my $spooled = $conf) =~ s{SPOOL}{activity_spool $dir/events;};
$spooled =~ s/LISTEN/%%PORT_sp%%/;
$t->write_conf($plain);
$t->write_conf($spooled, undef, 'sp');

$t->redis_start;
my $redis_pid = $t->{procs}{redis};

sub endpoints {
    my %n;
    for my $json (@{ $t->redis->lrange('activity:events', 0, -1) }) {
        $n{ ActivityTest::from_json($json)->{metadata}{endpoint} }++;
    }
    return \%n;
}

sub lost_lines {
    my ($name) = @_;
    open my $fh, '<', $t->error_log($name) or return ();
    return grep { /exiting: .*event\(s\)/ } <$fh>;
}

# Redis stopped, three requests (their LPUSH is written, no reply comes),
# then nginx is asked to quit.
sub quit_with_events_in_flight {
    my ($tag, $name) = @_;
    $t->redis->ping;
    kill 'STOP', $redis_pid;
    for my $i (1 .. 3) {
        $t->http(GET => "/api/$tag/$i",
            defined $name ? (port => $t->port($name)) : ());
    }
    sleep 0.5;
    my $pidfile = $t->dir . (defined $name ? "/nginx-$name.pid"
        : '/nginx.pid');
    my $pid = do { local (@ARGV, $/) = $pidfile; <> };
    chomp $pid;
    kill 'QUIT', $pid;
}

# --- 1. Redis answers late, within the reply timeout -------------------

$t->nginx_start;
quit_with_events_in_flight('late');
sleep 1.5;
ok($t->nginx_running, 'the worker waits for the replies');
kill 'CONT', $redis_pid;
ok(wait_for(sub { !$t->nginx_running }, 10), 'then exits');
my $n = endpoints();
is(scalar(grep { $n->{"/api/late/$_"} } 1 .. 3), 3, 'all three stored');
is(scalar(lost_lines()), 0, 'nothing logged as lost');
$t->nginx_stop;

# --- 2. Redis never answers ----------------------------------------------

$t->nginx_start;
quit_with_events_in_flight('never');
ok(wait_for(sub { !$t->nginx_running }, 15),
    'the worker exits after the reply timeout');
kill 'CONT', $redis_pid;
$t->nginx_stop;
my @lost = lost_lines();
is(scalar(@lost), 1, 'one line about them');
like($lost[0] // '', qr/3 event\(s\) not acknowledged by redis/,
    'naming exactly how many');

# --- 3. with a spool, they are spooled -----------------------------------

$t->nginx_start(name => 'sp');
quit_with_events_in_flight('spool', 'sp');
ok(wait_for(sub { !$t->_alive('nginx:sp') }, 15), 'the worker exits');
kill 'CONT', $redis_pid;
my $text = do { local (@ARGV, $/) = "$dir/events"; <> } // '';
is(scalar(() = $text =~ m{"/api/spool/\d"}g), 3, 'the three are spooled');
like(join('', lost_lines('sp')), qr/exiting: 3 event\(s\) spooled/,
    'and the log says so');

# --- 4. megabytes held while Redis is away, all spooled ------------------

unlink "$dir/events";
$t->redis_stop;
$t->nginx_start(name => 'sp');
my $pad = 'p' x 8000;
my $answered = 0;
for my $i (1 .. 300) {
    $answered++ if $t->http(GET => "/api/big/$i", port => $t->port('sp'),
        headers => { 'X-Pad' => $pad })->{status} == 200;
}
is($answered, 300, '300 events of 8 KB held while Redis is away');
$t->nginx_stop('QUIT', 'sp');
$text = do { local (@ARGV, $/) = "$dir/events"; <> } // '';
is(scalar(() = $text =~ m{"/api/big/\d+"}g), 300,
    'all 2.4 MB of them spooled at exit');
like(join('', lost_lines('sp')), qr/exiting: 300 event\(s\) spooled$/m,
    'none lost');

$t->done;
