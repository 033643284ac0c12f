#!/usr/bin/perl

# nginx signals (README "Failure modes": nginx is reloaded or upgraded):
# a binary upgrade (SIGUSR2, then SIGQUIT to the old master) while
# requests keep coming loses no event and doubles none, and the old
# workers close their dashboards with 1001 (a Socket.IO client then
# reconnects, to the new ones); a fast stop (SIGTERM) sends
# what it holds in one non-blocking write: events waiting behind an
# unanswered LPUSH still reach Redis.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis node)]);

my $http = <<'EOF';
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "signals-secret";

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

        location /socket.io/ {
            activity_dashboard socketio;
        }
    }
}
EOF

# nginx changes its binary only as a daemon (a master whose parent is
# still the one that started it ignores SIGUSR2): this instance runs
# as one, outside the harness's process list
my $d = $t->dir;
my $conf = $t->write_conf(<<"EOF" . $http, 'upgrade.conf');
load_module %%MODULE%%;
pid $d/nginx-upgrade.pid;
error_log $d/error-upgrade.log info;
daemon on;
worker_processes 2;
events { }
EOF

$t->write_conf("%%GLOBALS%%\n" . $http);

$t->redis_start;
my ($rc, $out) = $t->run_cmd(ActivityTest::_nginx_cmd('-p', "$d/", '-c',
    $conf, '-e', "$d/error-upgrade.log"));
is($rc, 0, 'nginx started as a daemon') or diag($out);

my $token = jwt_hs256('signals-secret', { sub => 'd', role => 'admin',
    exp => time + 600 });
my ($old, $new_master);

END {
    # the daemons are not the harness's children: stop them here
    for my $pid (grep { $_ && !ActivityTest::pid_gone($_) } $old,
        $new_master)
    {
        kill 'TERM', $pid;
        wait_for(sub { ActivityTest::pid_gone($pid) }, 10);
    }
}

my $sent = 0;
my $answered = 0;

sub requests {
    my ($n) = @_;
    for (1 .. $n) {
        $sent++;
        $answered++ if $t->http(GET => "/api/up/$sent")->{status} == 200;
    }
}

sub pid_in {
    my ($file) = @_;
    open my $fh, '<', $t->dir . "/$file" or return undef;
    my $pid = <$fh> // '';
    chomp $pid;
    return $pid =~ /^\d+$/ ? $pid : undef;
}

# --- binary upgrade --------------------------------------------------------

ok(wait_for(sub { $old = pid_in('nginx-upgrade.pid') }, 10),
    'the daemon wrote its pid');
my @old_workers;
ok(wait_for(sub { (@old_workers = $t->nginx_worker_pids($old)) == 2 }, 10),
    'two worker processes');

# dashboards on the old workers (one at least lands on each, in time)
my @dash = grep { ref } map { $t->ws_raw("/ws?token=$token") } 1 .. 4;
is(scalar @dash, 4, 'four dashboards connected');
ok(!(grep { !$_->next_text(qr/"snapshot"/, 10) } @dash),
    'each got its snapshot');

# a Socket.IO client that reconnects by itself, as the page does
my $sio = $t->node('sio-reconnect.js', url => 'http://127.0.0.1:'
    . $t->port('http') . '/dashboard', token => $token, timeout => 60000);
ok($sio->wait_line(sub { $_->{t} eq 'event' && $_->{event} eq 'snapshot' },
    15), 'a Socket.IO dashboard connected');

requests(20);

kill 'USR2', $old;
ok(wait_for(sub {
    my $p = pid_in('nginx-upgrade.pid');
    $new_master = $p if $p && $p != $old;
    $new_master && $t->nginx_worker_pids($new_master) == 2 }, 20),
    'SIGUSR2: a new master with its own two workers');
is(pid_in('nginx-upgrade.pid.oldbin'), $old, 'the old master kept nginx.pid.oldbin');

requests(20);

kill 'QUIT', $old;
my @codes;
for my $c (@dash) {
    my ($code, $reason) = $c->close_code(20);
    push @codes, $code;
}
is_deeply(\@codes, [ (1001) x 4 ],
    'the old workers close their dashboards with 1001');
my $bye = $sio->wait_line(sub { $_->{t} eq 'disconnect' }, 20);
is($bye && $bye->{reason}, 'transport close',
    'the Socket.IO client sees its transport close');
ok($sio->wait_line(sub { $_->{t} eq 'connect' && $_->{n} == 2 }, 30),
    'and reconnects, to the new workers');
my $snaps = 0;
ok($sio->wait_line(sub { $_->{t} eq 'event' && $_->{event} eq 'snapshot'
    && ++$snaps == 2 }, 15), 'with a new snapshot');
$sio->finish(5);

ok(wait_for(sub { requests(2); ActivityTest::pid_gone($old) }, 30),
    'SIGQUIT: the old master exits (requests keep coming meanwhile)');
undef $old;
requests(20);

is($answered, $sent, "every one of the $sent requests answered 200");

my %n;
ok(wait_for(sub {
    %n = ();
    $n{ $_->{metadata}{endpoint} }++ for $t->queued_events;
    keys %n == $sent }, 30), 'every event reached Redis')
    or diag(scalar(keys %n) . " of $sent");
is(scalar(grep { $_ != 1 } values %n), 0, 'each once');

my $c = $t->ws_raw("/ws?token=$token");
ok(ref $c && $c->next_text(qr/"snapshot"/, 10),
    'a new dashboard connects to the new workers');
$c->close_socket if ref $c;

# --- SIGTERM: what is held goes out in one write ---------------------------

# the upgraded daemon stops; the harness's nginx (one worker) starts
kill 'QUIT', $new_master;
ok(wait_for(sub { ActivityTest::pid_gone($new_master) }, 20),
    'the new master stops');
undef $new_master;

$t->nginx_start;
$t->redis->del('activity:events');
requests(1);
ok(wait_for(sub { $t->redis->llen('activity:events') == 1 }, 20),
    'warm event queued');
$t->redis->del('activity:events');
$t->redis->quit;

# Redis stopped: the first LPUSH waits for its reply, those behind it wait
# in the buffer (one LPUSH round trip at a time)
my $first = $sent + 1;
kill 'STOP', $t->redis_pid;
my $stopped = 1;
END { kill 'CONT', $t->redis_pid if $stopped && $t->redis_pid }

requests(5);
my $wait = $t->nginx_stop('TERM');
is($wait, 0, 'SIGTERM: nginx exits 0');

kill 'CONT', $t->redis_pid;
$stopped = 0;

my @got;
ok(wait_for(sub {
    @got = map { $_->{metadata}{endpoint} } $t->queued_events;
    @got == 5 }, 20), 'all five events reached Redis')
    or diag("@got");
is_deeply(\@got, [ map { "/api/up/$_" } $first .. $first + 4 ],
    'in order, each once');
is(scalar $t->log_lines(qr/exiting with \d+ event\(s\) not sent/), 0,
    'nothing reported lost');

$t->done;
