#!/usr/bin/perl

# activity_redis_url and the worker's --redis at run time: a password
# (or a user and a password; or redis://password@host) is sent with AUTH (and a wrong one is
# refused, nothing queued), /db selects
# the database the events land in (for the module and the worker alike),
# and unix:/path talks over the unix socket.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis pg worker node)]);

my $pw = 'pw-Zq81xk';
my $conf = <<'EOF';
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url URL;
    activity_jwt_secret "url-secret";

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

        location = /status {
            activity_status;
        }
    }
}
EOF

sub conf_with {
    my ($url) = @_;
    return $conf =~ s/URL/$url/r;
}

sub endpoints {
    my ($r) = @_;
    return [ map { ActivityTest::from_json($_)->{metadata}{endpoint} }
        reverse $r->lrange('activity:events', 0, -1) ];
}

sub connected {
    my ($which) = @_;
    return $t->status_metric('/status', 'activity_redis_connected',
        "connection=\"$which\"") // 0;
}

# --- AUTH and /db ---------------------------------------------------------

$t->redis_start_opts(args => ['--requirepass', $pw]);
my $db3 = $t->redis_client(password => $pw, db => 3);
my $db0 = $t->redis_client(password => $pw, db => 0);

my $port = $t->redis_port;
my $url = "redis://:$pw\@127.0.0.1:$port/3";
$t->write_conf(conf_with($url));
$t->nginx_start;

ok(wait_for(sub { connected('queue') == 1 && connected('subscriber') == 1 },
    20), 'with AUTH: queue and subscriber connections up');

is($t->http(GET => "/api/auth/$_")->{status}, 200, "request $_")
    for 1 .. 3;
ok(wait_for(sub { $db3->llen('activity:events') == 3 }, 20),
    'the events land in database 3');
is_deeply(endpoints($db3), [ map { "/api/auth/$_" } 1 .. 3 ],
    'in request order');
is($db0->llen('activity:events'), 0, 'nothing in database 0');

# the worker with the same URL stores them and feeds the dashboards
$t->pg_start;
$t->worker_migrate('--redis', $url);
$t->worker_start(args => ['--redis', $url, '--flush-ms', 20]);
ok(wait_for(sub { $t->row_count("endpoint LIKE '/api/auth/%'") == 3 }, 30),
    'worker --redis with AUTH and /db stores them');
ok(wait_for(sub { $db3->llen('dashboard:events:recent') == 3 }, 10),
    'its recent cache is in database 3');
is($db0->exists('dashboard:events:recent'), 0, 'and not in database 0');

my $token = jwt_hs256('url-secret', { sub => 'u', role => 'admin',
    exp => time + 600 });
my $c = $t->node('ws-client.js',
    url => 'ws://127.0.0.1:' . $t->port('http') . "/ws?token=$token",
    timeout => 30000, brief => 1);
ok($c->wait_line(sub { $_->{t} eq 'message'
    && ($_->{event} // '') eq 'snapshot' }, 15), 'dashboard snapshot');
$t->http(GET => '/api/auth/live');
ok($c->wait_line(sub { $_->{t} eq 'message'
    && ($_->{event} // '') eq 'activity:new' }, 20),
    'pub/sub through the authenticated subscriber reaches the dashboard');
$c->finish(5);

# A second nginx instance NAME on URL: a request's event lands in
# database DB (the client to it is returned; the instance keeps running)
sub queues_through {
    my ($name, $url, $db, $what) = @_;
    $t->write_conf(conf_with($url) =~ s/%%PORT%%/%%PORT_$name%%/r, undef,
        $name);
    $t->nginx_start(name => $name);
    is($t->http(GET => "/api/$name/1", port => $t->port($name))->{status},
        200, "$what: request");
    my $r = $t->redis_client(password => $pw, db => $db);
    ok(wait_for(sub { $r->llen('activity:events') == 1 }, 20),
        "$what: AUTH succeeds, the event lands in database $db")
        or diag(join "\n", $t->log_lines(qr/activity/, $t->error_log($name)));
    return $r;
}

# the worker's dlq list with URL reads the dead letter put in R
sub worker_reads {
    my ($url, $r, $name, $what) = @_;
    $r->rpush("dead:$name", '{"event":"{}","error":"x","attempts":1,'
        . '"failedAt":"2026-11-27T12:00:00.000Z"}');
    my ($rc, $out) = $t->run_cmd($t->{bin}{worker}, 'dlq', 'list',
        '--redis', $url, '--dead', "dead:$name");
    is($rc, 0, "the worker takes $what too (dlq list)") or diag($out);
    is(scalar(split /\n/, $out), 1, '... and reads the same database');
}

# a user and a password (Redis 6 ACL): AUTH user password
$db0->acl('SETUSER', 'alice', 'on', '>alice-pw', '~*', '&*',
    '+@all');
my $acl = "redis://alice:alice-pw\@127.0.0.1:$port/2";
my $db2 = queues_through('acl', $acl, 2, 'user:password');
ok((grep { /\buser=alice\b.*\bcmd=lpush\b|\bcmd=lpush\b.*\buser=alice\b/ }
    split /\n/, $db0->client('list')), 'the LPUSH came as user alice');
$t->nginx_stop('QUIT', 'acl');
worker_reads($acl, $db2, 'acl', 'user:password and /db');

# a percent-encoded user and password (review-sentinel): the module sent
# them encoded, the worker decoded; both now send "p@ss/w%rd:1"
$db0->acl('SETUSER', 'b:o%b', 'on', '>p@ss/w%rd:1', '~*', '&*', '+@all');
my $pct = "redis://b%3Ao%25b:p%40ss%2Fw%25rd%3A1\@127.0.0.1:$port/4";
my $db4 = queues_through('pct', $pct, 4, 'percent-encoded user:password');
$t->nginx_stop('QUIT', 'pct');
worker_reads($pct, $db4, 'pct', 'the same URL');
is(scalar(grep { /p%40ss|p\@ss/ } $t->log_lines(qr/./, $t->error_log('pct'))),
    0, 'the password is not logged, encoded or not');

# redis://password@host, no ':': the password alone, as redis-cli and the
# worker read it (the module refused it at nginx -t)
my $short = "redis://$pw\@127.0.0.1:$port/6";
my $db6 = queues_through('short', $short, 6, 'password@host');
$t->nginx_stop('QUIT', 'short');
is(scalar $t->log_lines(qr/\Q$pw\E/, $t->error_log('short')), 0,
    'password@host: the password is not logged');
worker_reads($short, $db6, 'short', 'password@host');

# a wrong password: refused, logged, nothing queued, requests still 200
$t->write_conf(conf_with("redis://:wrong-Qv4\@127.0.0.1:$port/5")
    =~ s/%%PORT%%/%%PORT_bad%%/r, undef, 'bad');
$t->nginx_start(name => 'bad');
is($t->http(GET => '/api/bad/1', port => $t->port('bad'))->{status}, 200,
    'wrong password: requests answer 200');
ok(wait_for(sub { $t->log_lines(qr/AUTH refused/, $t->error_log('bad')) },
    20), 'wrong password: "AUTH refused" logged');
my $db5 = $t->redis_client(password => $pw, db => 5);
is($db5->llen('activity:events'), 0, 'wrong password: nothing queued');
$t->nginx_stop('QUIT', 'bad');

my @leaks = ($t->log_lines(qr/\Q$pw\E/),
    $t->log_lines(qr/wrong-Qv4/, $t->error_log('bad')));
is(scalar @leaks, 0, 'no password in the error logs') or diag($leaks[0]);
ok(scalar $t->log_lines(qr{redis://:\*\*\*@}, $t->error_log('bad')),
    'the error log shows the URL with its password as ***');

$t->worker_stop;
# (the harness's own "--- start" lines show the command line)
is(scalar(grep { !/^--- / } $t->log_lines(qr/\Q$pw\E/, $t->worker_log)), 0,
    'the worker does not log the password');
$t->nginx_stop;
$t->redis_stop;

# --- unix:/path -----------------------------------------------------------

my $sock = $t->redis_unix_path;
$t->redis_start_opts(args => ['--unixsocket', $sock,
    '--unixsocketperm', '777']);
$t->write_conf(conf_with("unix:$sock"));
$t->nginx_start;

my $r = $t->redis_client;
ok(wait_for(sub { connected('queue') == 1 && connected('subscriber') == 1 },
    20), 'unix: queue and subscriber connected');
is($t->http(GET => "/api/unix/$_")->{status}, 200, "unix request $_")
    for 1 .. 2;
ok(wait_for(sub { $r->llen('activity:events') == 2 }, 20),
    'unix: events queued');
is_deeply(endpoints($r), [ '/api/unix/1', '/api/unix/2' ], 'in order');

# every client of the module is on the unix socket (flags U); the only
# TCP client is this test's own
my @clients = split /\n/, $r->client('list');
my @unix = grep { /\bflags=\w*U/ } @clients;
my @tcp = grep { !/\bflags=\w*U/ } @clients;
ok((grep { /\bcmd=lpush\b/ } @unix), 'the LPUSH came over the unix socket')
    or diag(join "\n", @clients);
ok((grep { /\bsub=2\b/ } @unix), 'the subscriber is on the unix socket')
    or diag(join "\n", @clients);
is(scalar @tcp, 1, 'no TCP client but the test') or diag(join "\n", @tcp);

# --- nginx -t never echoes a password (review-sentinel) -------------------
# an unknown scheme, and a password holding a '/' (the part after it
# looks like a path), were refused with the URL as typed

for my $case (
    [ 'rediss://:s3cretpw@127.0.0.1:6379',
      qr{invalid redis url "rediss://:\*\*\*\@127\.0\.0\.1:6379" in "activity_redis_url": expected} ],
    [ 'http://alice:s3cretpw@127.0.0.1/',
      qr{invalid redis url "http://alice:\*\*\*\@127\.0\.0\.1/" in "activity_redis_url"} ],
    [ 'redis://:ab/s3cretpw@127.0.0.1:6379/1',
      qr{redis url "redis://:\*\*\*\@127\.0\.0\.1:6379/1" in "activity_redis_url"} ],
    [ 'redis+sentinel://:ab/s3cretpw@127.0.0.1:26379/mymaster',
      qr{redis url "redis\+sentinel://:\*\*\*\@127\.0\.0\.1:26379/mymaster" in "activity_redis_url"} ],
    # password@host, no ':' but the port's, and an '@' after the path
    [ 'redis://s3cretpw@127.0.0.1:6379/1@x',
      qr{redis url "redis://\*\*\*\@x" in "activity_redis_url"} ],
) {
    my ($url, $re) = @$case;
    my ($rc, $out) = $t->nginx_test(conf_with($url));
    ok($rc != 0, "nginx -t refuses a bad URL (" . ($url =~ s/:\/\/.*//r)
        . ')');
    like($out, $re, '... shows it with the password as ***') or diag($out);
    unlike($out, qr/s3cretpw/, '... never the password') or diag($out);
}

$t->done;
