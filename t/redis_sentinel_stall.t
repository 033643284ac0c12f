#!/usr/bin/perl

# redis+sentinel:// when sentinels misbehave (review of issue 12 §3):
#   1. the first sentinel accepts connections and never answers, the
#      second refuses them: the third, a real redis-sentinel, is asked
#      in turn and the queue reaches the master;
#   2. no sentinel answers at all: requests still answer 200, one warn
#      line per connection, attempts go on;
#   3. nginx asked to quit while a connection waits on the silent
#      sentinel exits, without an alert;
#   4. a sentinel naming an IPv6 master: used, and shown as [::1]:port.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use Test::More;
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis)]);

my $conf = <<'EOF';
%%GLOBALS%%
worker_processes 1;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url URL;
    activity_jwt_secret "stall-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /t/ {
            activity_track on;
            return 200 "ok\n";
        }

        location /ws {
            activity_dashboard websocket;
        }

        location = /status {
            activity_status;
        }
    }
}
EOF

sub conf_with {
    my ($url, $name) = @_;
    (my $c = $conf) =~ s/URL/$url/;
    $c =~ s/%%PORT%%/%%PORT_$name%%/ if defined $name;
    return $c;
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

$t->done;
