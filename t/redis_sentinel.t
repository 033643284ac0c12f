#!/usr/bin/perl

# redis+sentinel:// (issue 12, section 3). The module's queue and
# subscriber connections and the worker ask Redis Sentinel where the
# master is, check ROLE, and find it again after a failover:
#   1. nginx -t (and the worker) refuse malformed sentinel URLs, naming
#      the directive and never showing the password;
#   2. with a master, a replica (--replicaof) and three redis-sentinel
#      processes, the master is killed (-9) in the middle of a steady
#      stream of tracked requests: every request that got a response is
#      stored in PostgreSQL exactly once, and a dashboard connected
#      before the failover receives events after it on the same
#      connection;
#   3. the log says what happened once per change of state;
#   4. with min-replicas-to-write on a master that lost its replica,
#      events are refused, held, and stored once a replica is back;
#   5. a master name no sentinel knows: one log line, attempts go on;
#   6. a sentinel naming the master by host name is refused (hiredis
#      would resolve it blockingly);
#   7. a sentinel naming a replica: ROLE says so, nginx and the worker
#      do not use it.
#
# TEST_SENTINEL_WAIT=off measures the replication window instead: the
# queue then does not wait for a replica (activity_redis_wait_replica
# off), and the events acknowledged by the old master but lost with it
# are counted and reported (diag), not failed on.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use HTTP::Tiny;
use POSIX ();
use Test::More;
use Time::HiRes qw(sleep time);
use ActivityTest qw(wait_for jwt_hs256);
use SentinelConf qw(sentinel_conf);

my $t = ActivityTest->new(needs => [qw(module redis pg worker node)]);

my $measure = ($ENV{TEST_SENTINEL_WAIT} // '') eq 'off';

sub conf_with {
    my ($url, $wait) = @_;
    return sentinel_conf(url => $url, wait => $wait, workers => 2,
        secret => 'sentinel-secret');
}

# --- 1. nginx -t ----------------------------------------------------------

my $dir = qr/in "activity_redis_url"/;

for my $case (
    [ 'redis+sentinel://127.0.0.1:1',
      qr/missing master name in redis url "redis\+sentinel:\/\/127\.0\.0\.1:1" $dir/ ],
    [ 'redis+sentinel://:s3cretpw@127.0.0.1:1/',
      qr/missing master name in redis url "redis\+sentinel:\/\/:\*\*\*\@127\.0\.0\.1:1\/" $dir/ ],
    [ 'redis+sentinel://:s3cretpw@127.0.0.1:1,/mymaster',
      qr/invalid redis url "redis\+sentinel:\/\/:\*\*\*\@127\.0\.0\.1:1,\/mymaster" $dir/ ],
    [ 'redis+sentinel://127.0.0.1:1/mymaster/x',
      qr/invalid database number in redis url "[^"]+" $dir/ ],
    [ 'redis+sentinel://127.0.0.1:99999/mymaster',
      qr/invalid redis url "[^"]+" $dir: invalid port/ ],
    [ 'sentinel://127.0.0.1/mymaster',
      qr/expected redis:\/\/host:port, redis\+sentinel:\/\/host:port\/MASTER or unix:\/path/ ],
) {
    my ($url, $re) = @$case;
    my ($rc, $out) = $t->nginx_test(conf_with($url));
    ok($rc != 0, "nginx -t refuses $url");
    like($out, $re, '... and says why');
    unlike($out, qr/s3cretpw/, '... without the password');
}

my ($rc, $out) = $t->nginx_test(conf_with(
    'redis+sentinel://:pw@127.0.0.1:1,127.0.0.1,[::1]:3/mymaster/3'));
is($rc, 0, 'nginx -t takes several sentinels, a default port, a db')
    or diag($out);

# the worker refuses the same, without echoing the password
{
    local %ENV = map { $_ => $ENV{$_} } grep { !/^ACTIVITY_/ } keys %ENV;
    my ($wrc, $wout) = $t->run_cmd($t->{bin}{worker},
        '--redis', 'redis+sentinel://:s3cretpw@127.0.0.1:1', '--migrate');
    is($wrc, 2, 'the worker refuses a sentinel URL without a master name');
    like($wout, qr/missing master name/, '... and says why');
    unlike($wout, qr/s3cretpw/, '... without the password');
}

# --- 2. failover under a steady stream -----------------------------------

$t->sentinel_start;
my $old_master = $t->redis_port;
my $replica = $t->port('replica');
is($t->sentinel_master_port, $old_master, 'the sentinels name the master');

$t->write_conf(conf_with($t->sentinel_url,
    $measure ? 'activity_redis_wait_replica off;' : ''));

$t->pg_start;
$t->worker_migrate;
$t->allow_worker_errors(qr/msg="redis unavailable"/);
$t->worker_start(args => [ '--redis', $t->sentinel_url ]);
$t->nginx_start;

sub metric {
    my ($name, $labels) = @_;
    return $t->status_metric('/status', $name, $labels) // 0;
}

sub all_up {
    return metric('activity_redis_connected', 'connection="queue"') == 2
        && metric('activity_redis_connected', 'connection="subscriber"')
           == 2;
}

ok(wait_for(\&all_up, 20),
    'queue and subscriber connections up in both nginx workers');
is(metric('activity_redis_master',
    qq{connection="queue",address="127.0.0.1:$old_master"}), 2,
    'activity_status names the master both queues use');

my $token = jwt_hs256('sentinel-secret', { sub => 'dash', role => 'admin',
    exp => time + 3600 });
my $dash = $t->node('ws-client.js', timeout => 300000,
    url => $t->ws_url("/ws?token=$token"));
ok($dash->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
    'a dashboard is connected');

# the stream: one request after another in a child process, each answer
# written to a file as "N STATUS"
my $acked = $t->dir . '/acked';
my $stop = $t->dir . '/stop';
my $base = $t->base_url;
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    open my $fh, '>', $acked or POSIX::_exit(1);
    $fh->autoflush(1);
    my $ua = HTTP::Tiny->new(timeout => 10, keep_alive => 1);
    for (my $n = 1; !-e $stop; $n++) {
        my $r = $ua->get("$base/t/$n");
        print $fh "$n $r->{status}\n";
        sleep 0.004;
    }
    close $fh;
    POSIX::_exit(0);
}

sub acked {
    open my $fh, '<', $acked or return wantarray ? () : 0;
    my @n = map { /^(\d+) 200$/ ? $1 : () } <$fh>;
    return wantarray ? @n : scalar @n;
}

sub stored_rows {
    return $t->sql_value("SELECT count(*) FROM activity_logs"
        . " WHERE endpoint LIKE '/t/%'") // 0;
}

ok(wait_for(sub { acked() >= 300 && stored_rows() > 100 }, 30),
    'events flow through the first master');

# Kills the master (its process $proc) with -9, optionally after cutting
# the replica off for a moment (lag: it then misses what the master
# acknowledges meanwhile; a stopped process would not do, the kernel
# would keep the stream for it), and waits until the sentinels named
# $to, the connections are up again and 300 more requests were
# answered. Returns the number answered when the new master was named.
sub failover {
    my (%o) = @_;

    if ($o{lag}) {
        my $n = acked();
        require Redis;
        Redis->new(server => "127.0.0.1:$o{to}", cnx_timeout => 2)
            ->replicaof('127.0.0.1', $t->port('nowhere'));
        wait_for(sub { acked() >= $n + 30 }, 0.5);
        diag(sprintf '%d requests answered while the replica was cut off',
            acked() - $n);
    }

    $t->_stop($o{proc}, 'KILL', 5);
    my $killed_at = time;

    ok(wait_for(sub { ($t->sentinel_master_port // 0) == $o{to} }, 60, 0.2),
        "$o{name}: the sentinels promote the replica");
    diag(sprintf '%s: failover seen %.1fs after the kill', $o{name},
        time - $killed_at);

    my $after = acked();

    ok(wait_for(\&all_up, 30),
        "$o{name}: queue and subscriber connections up again");
    ok(wait_for(sub { acked() >= $after + 300 }, 30),
        "$o{name}: requests go on after the failover");
    return $after;
}

# 2a. the master dies, its replica is in sync: a replica confirmed every
# event so far
is(metric('activity_events_unreplicated_total'), 0,
    'a replica confirmed every event before the failover') unless $measure;

my $after = failover(name => 'kill', proc => 'redis', to => $replica);

is(metric('activity_redis_master',
    qq{connection="queue",address="127.0.0.1:$replica"}), 2,
    'activity_status names the new master of both queues');
is(metric('activity_redis_master',
    qq{connection="subscriber",address="127.0.0.1:$replica"}), 2,
    '... and of both subscribers');
is(metric('activity_redis_master',
    qq{connection="queue",address="127.0.0.1:$old_master"}), 0,
    '... and no longer the old one');

# the new master has no replica yet: the queue cannot wait for one
ok(wait_for(sub { metric('activity_events_unreplicated_total') > 0 }, 30),
    'events acknowledged by the new master alone are counted')
    unless $measure;

# 2b. the old master comes back, the sentinels make it a replica of the
# new one; then the new master dies while its replica lags: what it
# acknowledged in that moment is only in the module's memory
$t->redis_start;
ok(wait_for(sub { $t->sentinel_replica_ready($old_master) }, 60, 0.2),
    'the old master is back as a replica in sync');

ok(wait_for(sub {
    my @w = $t->log_lines(qr/no replica confirmed/);
    my @n = $t->log_lines(qr/a replica confirms the events again/);
    @w >= 1 && @n == @w
}, 30), 'the queue waited in vain for a replica, then one confirmed again')
    unless $measure;

my $after2 = failover(name => 'lagging replica', proc => 'redis:replica',
    to => $old_master, lag => 1);

{
    open my $sf, '>', $stop or die "$stop: $!";
}
waitpid $pid, 0;

my @acked = acked();
my $total = @acked;
my %status;
{
    open my $fh, '<', $acked or die "$acked: $!";
    $status{(split)[1]}++ for <$fh>;
}
is_deeply(\%status, { 200 => $total }, "all $total requests answered 200");

ok(wait_for(sub { stored_rows() >= $total }, 60),
    'the events reach PostgreSQL') unless $measure;
if ($measure) {
    my $n = -1;
    wait_for(sub { my $m = stored_rows(); my $same = $m == $n; $n = $m;
        $same }, 30, 2);
}

my %stored = map { $_->{endpoint} =~ m{^/t/(\d+)$} ? ($1 => $_->{n}) : () }
    @{ $t->sql_rows("SELECT endpoint, count(*) AS n FROM activity_logs"
        . " WHERE endpoint LIKE '/t/%' GROUP BY endpoint") };
my @lost = grep { !$stored{$_} } @acked;
my @twice = grep { $stored{$_} > 1 } keys %stored;
my @lost1 = grep { $_ <= $after } @lost;

diag(sprintf '%d requests; lost: %d at the first failover (in-sync'
    . ' replica), %d at the second (lagging replica): %s; %d stored twice',
    $total, scalar @lost1, @lost - @lost1,
    join(' ', @lost[0 .. ($#lost > 9 ? 9 : $#lost)]), scalar @twice);

is(scalar @twice, 0, 'no event stored twice');
is(scalar @lost, 0, 'every answered request is stored')
    unless $measure;

# the dashboard: an event of a request made after the last failover, on
# the connection opened before the first
ok($dash->wait_line(sub {
    ($_->{event} // '') eq 'activity:new'
        && (($_->{data}{metadata}{endpoint} // '') =~ m{^/t/(\d+)$})
        && $1 > $after2
}, 30), 'the dashboard receives events after the failovers');
is(scalar(grep { $_->{t} eq 'open' } $dash->lines), 1,
    'on the connection it had before');
is(scalar(grep { $_->{t} eq 'close' } $dash->lines), 0, 'never closed');

# --- 3. the log -------------------------------------------------------------

# per nginx worker and connection: one line for each master it used, one
# when each failover broke it and one when it was back
for my $port ($replica, $old_master) {
    my @notice = $t->log_lines(qr/uses the master at 127\.0\.0\.1:$port\b/);
    is(scalar(grep { /event queue on redis/ } @notice),
        $port == $replica ? 2 : 4,
        "each queue logs once that it uses the master on $port");
    is(scalar(grep { /subscriber on redis/ } @notice),
        $port == $replica ? 2 : 4, '... and each subscriber');
}

for my $role ('event queue', 'subscriber') {
    my @lines = $t->log_lines(qr/\[warn\].*\Q$role\E (on|is back on) redis/);
    my $down = grep { /lost the connection|cannot connect/ } @lines;
    my $back = grep { /is back on redis/ } @lines;
    is($down, 4, "$role: one warn line per nginx worker when it broke")
        or diag(join "\n", @lines);
    is($back, 4, "$role: one when it was back")
        or diag(join "\n", @lines);
}

# the worker: one "redis connected" line per master it used
ok(wait_for(sub {
    my @c = grep { /msg="redis connected"/ }
        split /\n/, ActivityTest::_slurp($t->worker_log);
    @c == 3 && $c[1] =~ /master=127\.0\.0\.1:$replica\b/
        && $c[2] =~ /master=127\.0\.0\.1:$old_master\b/
}, 30), 'the worker found each new master and says which')
    or diag(ActivityTest::_slurp($t->worker_log));

# --- 4. min-replicas-to-write: refused, held, stored once a replica is back

# the master now ($old_master) has no replica: the other one was killed
$t->sentinel_master_client->config_set('min-replicas-to-write', 1);

my $lpush_refused = qr/\[warn\].*event queue on redis .*LPUSH refused: NOREPLICAS/;
$t->http(GET => "/t/nr$_") for 1 .. 5;
ok(wait_for(sub { $t->log_lines($lpush_refused) >= 1 }, 10),
    'a master without a replica refuses the events (min-replicas-to-write)');
ok(wait_for(sub { metric('activity_events_buffered') >= 5 }, 10),
    'the events are held');

$t->sentinel_replica_start;
ok(wait_for(sub {
    ($t->sql_value("SELECT count(*) FROM activity_logs"
        . " WHERE endpoint LIKE '/t/nr%'") // 0) == 5 }, 60),
    'and stored once a replica is back');

my %per_pid;
$per_pid{$_}++ for map { /\[warn\] (\d+)#/ ? $1 : () }
    $t->log_lines($lpush_refused);
is_deeply([ grep { $_ > 1 } values %per_pid ], [],
    'one warn line per nginx worker for the refusals');

# --- 5. a master name the sentinels do not know: one line, many attempts

(my $lost_conf = conf_with($t->sentinel_url =~ s{/mymaster$}{/nosuch}r))
    =~ s/worker_processes 2;/worker_processes 1;/;
$lost_conf =~ s/%%PORT%%/%%PORT_lost%%/;
$t->write_conf($lost_conf, undef, 'lost');
$t->nginx_start(name => 'lost');

sub lost_metric {
    my ($re) = @_;
    my $r = $t->http(GET => '/status', port => $t->port('lost'));
    return ($r->{content} // '') =~ $re ? $1 : 0;
}

ok(wait_for(sub {
    lost_metric(qr/^activity_redis_reconnects_total\{connection="queue"\} (\d+)$/m)
        >= 4 }, 30), 'nginx asks the sentinels again and again');
my @nosuch = $t->log_lines(qr/no sentinel named the master/,
    $t->error_log('lost'));
is(scalar @nosuch, 3,
    'one warn line for each connection (queue, subscriber, resume)');
like($nosuch[0] // '', qr/\[warn\].* on redis "redis\+sentinel:\/\/[^"]+\/nosuch": no sentinel named the master, the last: sentinel 127\.0\.0\.1:\d+: does not know the master; retrying with backoff/,
    'saying why');
is(lost_metric(qr/^activity_redis_connected\{connection="queue"\} (\d+)$/m),
    0, 'the queue is not connected');

# --- 6. a sentinel that names the master by host name ---------------------
# hiredis would resolve it blockingly on nginx's event loop: refused

my $sport = $t->sentinel_start_extra('byname', 'byname', 'localhost',
    $old_master, 'sentinel resolve-hostnames yes',
    'sentinel announce-hostnames yes');
(my $byname_conf = conf_with("redis+sentinel://127.0.0.1:$sport/byname"))
    =~ s/worker_processes 2;/worker_processes 1;/;
$byname_conf =~ s/%%PORT%%/%%PORT_byname%%/;
$t->write_conf($byname_conf, undef, 'byname');
$t->nginx_start(name => 'byname');

my $hostname = qr/no sentinel named the master, the last: sentinel 127\.0\.0\.1:$sport: named a host name, not an IP address/;
ok(wait_for(sub {
    $t->log_lines($hostname, $t->error_log('byname')) == 3 }, 30),
    'a host name from a sentinel is refused, not resolved');
sleep 1;
is(scalar(() = $t->log_lines(qr/no sentinel named the master/,
    $t->error_log('byname'))), 3, 'once per connection');

# --- 7. a sentinel that names a replica: ROLE says so, it is not used ------

my $stale = $t->sentinel_start_extra('stale', 'stale', '127.0.0.1',
    $replica);
(my $stale_conf = conf_with("redis+sentinel://127.0.0.1:$stale/stale"))
    =~ s/worker_processes 2;/worker_processes 1;/;
$stale_conf =~ s/%%PORT%%/%%PORT_stale%%/;
$t->write_conf($stale_conf, undef, 'stale');
$t->nginx_start(name => 'stale');

my $named_replica = qr/\[warn\].*the sentinels named a replica: master 127\.0\.0\.1:$replica: is not a master \(yet\) by ROLE; retrying with backoff/;
ok(wait_for(sub {
    $t->log_lines($named_replica, $t->error_log('stale')) == 3 }, 30),
    'nginx: a replica named by a sentinel is not used (ROLE)');
ok(!grep({ /uses the master/ } $t->log_lines(qr/activity/,
    $t->error_log('stale'))), '... never');

$t->worker_start(id => 'w2', args => [ '--redis',
    "redis+sentinel://127.0.0.1:$stale/stale" ]);
ok(wait_for(sub {
    grep { /msg="redis unavailable".*master 127\.0\.0\.1:$replica: not a master \(yet\) by ROLE/ }
        split /\n/, ActivityTest::_slurp($t->worker_log('w2'))
}, 30), 'the worker: the same')
    or diag(ActivityTest::_slurp($t->worker_log('w2')));

$t->done;
