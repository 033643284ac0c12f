#!/usr/bin/perl

# Resume (issue 12), what a client cannot make of it: a Socket.IO pid is
# not derived from facts anyone knows (random() as nginx seeds it: the
# worker's pid and start time); an offset that cannot be recovered costs
# no read of the stream (the plain protocol's offset older than the
# window) and no error in the log (the largest stream id, which Redis
# refuses to read after).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes ();
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis node)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%

http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "review-secret";
    limit_req_zone $binary_remote_addr zone=dash:1m rate=1r/m;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /socket.io/ {
            activity_dashboard socketio;
        }

        location /ws {
            activity_dashboard websocket;
        }

        location /limited/socket.io/ {
            limit_req zone=dash burst=1 nodelay;
            activity_dashboard socketio;
        }

        location = /status {
            activity_status;
        }
    }
}
EOF

$t->redis_start;
my $r = $t->redis;

my $t0 = int(Time::HiRes::time());
$t->nginx_start;
my $t1 = int(Time::HiRes::time()) + 1;

my $port = $t->port('http');
my $url = "http://127.0.0.1:$port/dashboard";
my $token = jwt_hs256('review-secret', { sub => 'dash', role => 'admin',
    exp => time + 3600 });

my $master = do { open my $fh, '<', $t->dir . '/nginx.pid'; <$fh> };
chomp $master;
my ($worker) = map { /^\s*(\d+)/ ? $1 : () } `ps -o pid= --ppid $master`;
ok($worker, "nginx's worker process ($worker)");

sub resumes {
    my $text = $t->http(GET => '/status')->{content} // '';
    return map { $text =~ /^activity_dashboard_resumes_total\{result="$_"\} (\d+)$/m
        ? $1 : undef } qw(recovered not_recovered);
}

# the subscriber, the resume connection and this test's (the queue's
# comes with the first event)
ok(wait_for(sub { ($t->http(GET => '/status')->{content} // '')
    =~ /^activity_redis_connected\{connection="subscriber"\} 1$/m
    && $r->info('clients')->{connected_clients} >= 3 }, 20),
    "nginx's connections to redis are up");

# 1. the pid: glibc's random() as nginx seeds it in a worker process,
# srandom((pid << 16) ^ sec ^ msec), reproduced; no seed of the worker's
# start window may yield the pid (with random() one does, at once)

sub glibc_random {
    my ($seed, $n) = @_;
    my @r;
    $seed = 1 if $seed == 0;
    {
        use integer;
        my $w = $seed >= 2147483648 ? $seed - 4294967296 : $seed;
        $r[0] = $w;
        for my $i (1 .. 30) {
            my $hi = $w / 127773;
            my $lo = $w % 127773;
            $w = 16807 * $lo - 2836 * $hi;
            $w += 2147483647 if $w < 0;
            $r[$i] = $w;
        }
    }
    $_ &= 4294967295 for @r;
    $r[$_] = $r[$_ - 31] for 31 .. 33;
    my @out;
    for my $i (34 .. 343 + $n) {
        $r[$i] = ($r[$i - 31] + $r[$i - 3]) & 4294967295;
        push @out, $r[$i] >> 1 if $i >= 344;
    }
    return @out;
}

is(join(',', glibc_random(123456789, 3)), '1965102536,1639725855,706684578',
    "the model of glibc's random() matches glibc");

my $sio = $t->node('sio-resume.js', url => $url, token => $token,
    timeout => 30000);
my $con = $sio->wait_line(sub { ($_->{t} // '') eq 'connect' }, 20);
my $pid = $con && $con->{pid};
like($pid // '', qr/^[A-Za-z0-9_-]{20}$/, 'a Socket.IO pid of 20 characters');

my @alphabet = split //,
    'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
my $found;
SEED: for my $sec ($t0 - 1 .. $t1) {
    for my $msec (0 .. 999) {
        my $seed = ((($worker << 16) & 4294967295) ^ $sec ^ $msec)
                   & 4294967295;
        my $chars = join '', map { $alphabet[$_ & 63] }
            glibc_random($seed, 600);
        if (index($chars, $pid // '') >= 0) {
            $found = "sec $sec msec $msec";
            last SEED;
        }
    }
}
ok(!$found, 'the pid is not random() of the seed nginx gives a worker')
    or diag("reproduced from the worker's pid and start time: $found");
$sio->finish;

# 2. the largest stream id: nothing can follow it, and Redis refuses
# "XRANGE (<it>": not recovered, and not asked (no error logged)

my @before = resumes();
my $max = '18446744073709551615-18446744073709551615';

my $ws = $t->node('ws-client.js',
    url => "ws://127.0.0.1:$port/ws?token=$token&offset=$max",
    timeout => 30000, brief => 1);
my $m = $ws->wait_line(sub { ($_->{t} // '') eq 'message' }, 20);
is_deeply($m && [ $m->{event}, $m->{data} ],
    [ 'resume', { recovered => \0 } ], 'ws: the largest id, not recovered');
ok($ws->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
    'ws: the largest id, a snapshot');
$ws->finish;

$sio = $t->node('sio-resume.js', url => $url, token => $token,
    auth => { pid => 'P' x 20, offset => $max }, timeout => 30000);
$con = $sio->wait_line(sub { ($_->{t} // '') eq 'connect' }, 20);
ok($con && !$con->{recovered}, 'sio: the largest id, not recovered');
ok($sio->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
    'sio: the largest id, a snapshot');
$sio->finish;

is_deeply([ resumes() ], [ $before[0], $before[1] + 2 ],
    'both counted as not recovered');

my $log = do { local (@ARGV, $/) = $t->error_log; <> };
my @refused = $log =~ /^(.*resume read refused.*)$/mg;
is(scalar @refused, 0, 'no error logged for a forged offset')
    or diag(join "\n", @refused);

# 3. a plain client's offset older than the window (2m) is not recovered
# without reading the stream; one within it is read and recovered

sub xranges {
    my $info = $r->info('commandstats');
    return ($info->{cmdstat_xrange} // '') =~ /calls=(\d+)/ ? $1 : 0;
}

my $id = $r->xadd('dashboard:events:stream', '*', e => '{"id":"x"}');
like($id, qr/^\d+-\d+$/, 'an entry in the stream');
my $old = ($id =~ /^(\d+)/)[0] - 180_000;

my $x0 = xranges();
$ws = $t->node('ws-client.js',
    url => "ws://127.0.0.1:$port/ws?token=$token&offset=$old-0",
    timeout => 30000, brief => 1);
$m = $ws->wait_line(sub { ($_->{t} // '') eq 'message' }, 20);
is_deeply($m && [ $m->{event}, $m->{data} ],
    [ 'resume', { recovered => \0 } ], 'ws: 3 minutes old, not recovered');
ok($ws->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 10),
    'ws: 3 minutes old, a snapshot');
$ws->finish;
is(xranges(), $x0, '  and the stream was not read for it');

$ws = $t->node('ws-client.js',
    url => "ws://127.0.0.1:$port/ws?token=$token&offset=$id",
    timeout => 30000, brief => 1);
$m = $ws->wait_line(sub { ($_->{t} // '') eq 'message' }, 20);
is_deeply($m && [ $m->{event}, $m->{data} ],
    [ 'resume', { recovered => \1 } ], 'ws: the newest offset, recovered');
$ws->finish;
is(xranges(), $x0 + 1, '  read from the stream');

# 4. Redis refusing the session records (full: maxmemory, noeviction):
# one warning, not one per dashboard; one line when it takes them again

sub log_count {
    my ($re) = @_;
    my $text = do { local (@ARGV, $/) = $t->error_log; <> };
    return scalar(() = $text =~ /$re/g);
}

$r->config_set('maxmemory-policy', 'noeviction');
$r->config_set('maxmemory', 1);
for my $n (1 .. 3) {
    my $c = $t->node('sio-resume.js', url => $url, token => $token,
        timeout => 30000);
    ok($c->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 20),
        "redis full: dashboard $n connected");
    $c->finish;
}
ok(wait_for(sub { ($t->http(GET => '/status')->{content} // '')
    =~ /^activity_dashboard_connections\{protocol="socketio"\} 0$/m },
    20), 'redis full: the dashboards are gone');
ok(wait_for(sub { log_count(qr/cannot save a dashboard session/) }, 20),
    'redis full: a record refused is logged');
is(log_count(qr/cannot save a dashboard session/), 1,
    '  once, for six records refused');

$r->config_set('maxmemory', 0);
my $keys0 = scalar $r->keys('dashboard:resume:*');
$sio = $t->node('sio-resume.js', url => $url, token => $token,
    timeout => 30000);
ok($sio->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 20),
    'room again: a dashboard connected');
ok(wait_for(sub { scalar($r->keys('dashboard:resume:*')) > $keys0 }, 20),
    '  its record saved');
ok(wait_for(sub { log_count(qr/sessions saved for resume again/) == 1 },
    20), '  and that logged once');
$sio->finish;

# 5. the stream key of another type: every read refused, logged once

$r->del('dashboard:events:stream');
$r->set('dashboard:events:stream', 'not a stream');
for my $n (1 .. 3) {
    my $off = int(Time::HiRes::time() * 1000) . '-0';
    my $c = $t->node('ws-client.js',
        url => "ws://127.0.0.1:$port/ws?token=$token&offset=$off",
        timeout => 30000, brief => 1);
    my $m = $c->wait_line(sub { ($_->{t} // '') eq 'message' }, 20);
    is_deeply($m && [ $m->{event}, $m->{data} ],
        [ 'resume', { recovered => \0 } ], "wrong type: $n not recovered");
    $c->finish;
}
is(log_count(qr/resume read refused by redis: WRONGTYPE/), 1,
    '  logged once for three');

$r->del('dashboard:events:stream');
my $off = int(Time::HiRes::time() * 1000) . '-0';
$ws = $t->node('ws-client.js',
    url => "ws://127.0.0.1:$port/ws?token=$token&offset=$off",
    timeout => 30000, brief => 1);
ok($ws->wait_line(sub { ($_->{t} // '') eq 'message' }, 20),
    'a stream again: answered');
$ws->finish;
ok(wait_for(sub { log_count(qr/resume reads answered by redis again/) == 1 },
    20), '  and that logged once');

# 6. what bounds how often a client reconnects (README): nginx's
# limit_req in the dashboard location sees every handshake

my @limited = map {
    my $c = $t->node('sio-resume.js', url => $url,
        path => '/limited/socket.io/', token => $token,
        auth => { pid => 'Q' x 20, offset => '1-0' }, timeout => 30000);
    my $l = $c->wait_line(sub { ($_->{t} // '') =~ /^connect/ }, 20);
    $c->finish;
    $l->{t};
} 1 .. 3;
is_deeply(\@limited, [qw(connect connect connect_error)],
    'limit_req refuses the reconnect past its burst');

$t->done;
