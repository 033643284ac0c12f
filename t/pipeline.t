#!/usr/bin/perl

# End to end: tracked requests through nginx, Redis and the worker become
# exactly one row each in activity_logs, with the right fields.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use HTTP::Tiny;
use POSIX ();
use Test::More;
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
worker_processes 2;

http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "pipeline-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /api/ {
            activity_track on;
            return 200 "ok\n";
        }

        location = /items {
            activity_track on;
            return 201 "created\n";
        }

        location = /untracked {
            return 200;
        }
    }
}
EOF

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start;
$t->nginx_start;

my $token = jwt_hs256('pipeline-secret', { sub => '42', exp => time + 3600 });

my $n = 1000;
my $clients = 4;
my %expected;

# request $i: method, path, endpoint, status, user
sub request_of {
    my ($i) = @_;
    my $method = $i % 2 ? 'POST' : 'GET';
    my ($path, $endpoint, $status) = $i % 5 == 0
        ? ('/items', '/items', 201)
        : $i % 3 == 0
        ? ("/api/orders?page=$i", '/api/orders', 200)
        : ('/api/users/7', '/api/users/7', 200);
    my $user = $i % 4 == 0 ? '42' : undef;
    return ($method, $path, $endpoint, $status, $user);
}

for my $i (0 .. $n - 1) {
    my ($method, undef, $endpoint, $status, $user) = request_of($i);
    $expected{ join '|', 'API_CALL', $user // 'null', $method, $endpoint,
        $status }++;
}

# Client $c sends every $clients-th request; returns how many answers
# were not the expected status.
sub client {
    my ($c) = @_;
    my $ua = HTTP::Tiny->new(agent => 'activity-test/1.0', timeout => 10);
    my $bad = 0;
    for (my $i = $c; $i < $n; $i += $clients) {
        my ($method, $path, undef, $status, $user) = request_of($i);
        my $r = $t->http($method => $path, ua => $ua,
            headers => $user ? { Authorization => "Bearer $token" } : {},
            # a body only now and then: HTTP::Tiny writes it apart from
            # the headers, which costs a delayed ACK each time
            content => $method eq 'POST'
                ? ($i % 50 == 1 ? '{"n":1}' : '') : undef);
        $bad++ if $r->{status} != $status;
    }
    return $bad;
}

# $clients concurrent clients, so both nginx worker processes see
# traffic; each exits with its client() result.
my @pids;
for my $c (0 .. $clients - 1) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $bad = eval { client($c) } // 255;
        POSIX::_exit($bad > 255 ? 255 : $bad);
    }
    push @pids, $pid;
}
my $bad = 0;
for my $pid (@pids) {
    waitpid($pid, 0);
    $bad += $? >> 8;
}
is($bad, 0, "$n requests from $clients clients answered as expected");

$t->http(GET => '/untracked') for 1 .. 10;

ok(wait_for(sub { $t->row_count >= $n }, 60), "$n rows stored")
    or diag('rows: ' . $t->row_count);

ok(wait_for(sub {
    my $r = $t->redis;
    $r->llen('activity:events') == 0
        && $r->llen('activity:processing:w1') == 0;
}, 30), 'queue and processing list drained');

is($t->row_count, $n, "exactly $n rows");
is($t->sql_value('SELECT count(DISTINCT id) FROM activity_logs'), $n,
    'ids unique');

my %got;
for my $row (@{ $t->sql_rows(
    'SELECT action, user_id, method, endpoint, status FROM activity_logs') })
{
    $got{ join '|', $row->{action}, $row->{user_id} // 'null',
        $row->{method}, $row->{endpoint}, $row->{status} }++;
}
is_deeply(\%got, \%expected,
    'action, user, method, endpoint (no query string), status');

is($t->row_count("ip_address = '127.0.0.1'"), $n, 'ip_address');
is($t->row_count("user_agent = 'activity-test/1.0'"), $n, 'user_agent');
is($t->row_count('duration_ms >= 0'), $n, 'duration_ms');
is($t->row_count(
    "created_at BETWEEN now() - interval '10 minutes' AND now()"
    . " + interval '1 minute'"), $n, 'created_at is the request time');
is($t->row_count("endpoint = '/untracked'"), 0, 'untracked location');
is($t->redis->llen('activity:dead'), 0, 'no dead letters');

$t->done;
