#!/usr/bin/perl
#
# The dashboard latency harness (bench/dashboard.js driving
# bench/dashclient.c) measures real delivery: against the module's
# `socketio` and `websocket` endpoints every tracked request it sends
# reaches every client as `activity:new`, and clients the endpoint
# refuses are counted as refused, not as delivered. (The Node baseline
# of `make bench-dashboard` is not installed by `make test`, so only our
# stack is driven here.)

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest;

my $t = ActivityTest->new(needs => [qw(module redis pg worker node)]);
my $secret = 'bench-secret';

my $client = $t->dir . '/dashclient';
my ($rc, $out) = $t->run_cmd('cc', '-O2', '-Wall', '-Wextra', '-Werror',
    '-std=gnu11', '-D_GNU_SOURCE', '-o', $client,
    $t->root . '/bench/dashclient.c');
is($rc, 0, 'bench/dashclient.c builds without a warning') or diag($out);

$t->write_conf(<<"EOF");
load_module %%MODULE%%;
pid %%TESTDIR%%/nginx.pid;
error_log %%TESTDIR%%/error.log info;
daemon off;
worker_processes 1;
events { worker_connections 1024; }
http {
    %%GLOBALS_HTTP%%
    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret $secret;
    server {
        listen 127.0.0.1:%%PORT%%;
        location /api/ { activity_track on; return 200; }
        location /ws { activity_dashboard websocket; }
        location /socket.io/ { activity_dashboard socketio; }
    }
}
EOF

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start;
$t->nginx_start;

my $token = ActivityTest::jwt_hs256($secret,
    { sub => 'bench', role => 'admin', exp => time + 3600 });
my $http = $t->base_url;
(my $ws = $http) =~ s/^http/ws/;
my $eio = "$ws/socket.io/?EIO=4&transport=websocket";

# runs the harness; its last line of output is the result as JSON
sub bench {
    my ($label, @args) = @_;
    my ($rc, $out) = $t->run_cmd('node', $t->root . '/bench/dashboard.js',
        '--http', $http, '--clients', 3, '--rate', 5, '--seconds', 2,
        '--settle', 60, '--dashclient', $client, @args);
    is($rc, 0, "$label: dashboard.js exits 0") or diag($out);
    my ($json) = reverse grep { /^\{/ } split /\n/, $out;
    return ActivityTest::from_json($json // '{}');
}

my $r = bench('socketio', '--ws', $eio, '--proto', 'sio', '--token', $token);
is($r->{sent}, 10, 'socketio: 10 tracked requests sent');
is($r->{failed}, 0, 'socketio: every request answered 200');
is($r->{refused}, 0, 'socketio: every client connected');
is($r->{delivered}, 1, 'socketio: every event reached every client');

$r = bench('websocket', '--ws', "$ws/ws?token=$token", '--proto', 'ws');
is($r->{sent}, 10, 'websocket: 10 tracked requests sent');
is($r->{delivered}, 1, 'websocket: every event reached every client');

my $bad = ActivityTest::jwt_hs256('not-the-secret',
    { sub => 'bench', role => 'admin', exp => time + 3600 });
$r = bench('bad token', '--ws', $eio, '--proto', 'sio', '--token', $bad);
is($r->{refused}, 3, 'socketio with a bad token: all 3 clients refused');
is($r->{delivered}, 0, 'socketio with a bad token: nothing delivered');

$t->done;
