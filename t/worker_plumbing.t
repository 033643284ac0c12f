#!/usr/bin/perl

# The worker as a daemon: SIGHUP does not kill it; a request path cannot
# forge a log line; the read API is not open to whoever can reach it
# (--api-token, and no address other than loopback without one).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use HTTP::Tiny;
use Test::More;
use ActivityTest qw(wait_for make_event from_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

my $port = $t->port('worker_http');
my $base = "http://127.0.0.1:$port";
my $ua = HTTP::Tiny->new(timeout => 10);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

sub slurp_log {
    open my $fh, '<', $t->worker_log or return '';
    local $/;
    return <$fh>;
}


# --- a non-loopback listener needs a token --------------------------------

my ($rc, $out) = $t->run_cmd($t->_worker_cmd('x'), '--listen',
    "0.0.0.0:$port");
is($rc, 2, 'a non-loopback --listen without --api-token: exit 2');
like($out, qr/--listen.*--api-token/s, 'saying why');

($rc, $out) = $t->run_cmd($t->_worker_cmd('x'), '--listen',
    "[::]:$port");
is($rc, 2, 'nor [::]');


# --- SIGHUP --------------------------------------------------------------

$t->worker_start(args => ['--listen', "127.0.0.1:$port",
    '--api-token', 's3cret', '--log-level', 'debug', '--flush-ms', 50]);
ok(wait_for(sub { $ua->get("$base/healthz")->{status} == 200 }, 15),
    'healthz 200 without a token');

my $pid = $t->{procs}{'worker:w1'};
ok($pid && kill('HUP', $pid), 'SIGHUP sent');
my $ev = make_event(endpoint => '/after-hup');
$t->push_events($ev);
ok(wait_for(sub { $t->row_count('id = ?', $ev->{id}) == 1 }, 20),
    'still storing after SIGHUP');
ok($t->worker_running, 'still running');


# --- the read API wants the token ---------------------------------------

my $r = $ua->get("$base/api/events?limit=1");
is($r->{status}, 401, '401 without a token');
like($r->{headers}{'www-authenticate'} // '', qr/^Bearer/,
    'with a Bearer challenge');
$r = $ua->get("$base/api/events?limit=1",
    { headers => { Authorization => 'Bearer s3creT' } });
is($r->{status}, 401, '401 with a wrong token');
$r = $ua->get("$base/api/stats",
    { headers => { Authorization => 'Bearer s3cret' } });
is($r->{status}, 200, '200 with the token');
$r = $ua->get("$base/api/events?limit=1",
    { headers => { Authorization => 'Bearer s3cret' } });
is($r->{status}, 200, 'history with the token');
is($ua->get("$base/metrics")->{status}, 200, '/metrics stays open');


# --- no forged log line ---------------------------------------------------

$r = $ua->get("$base/x%0Alevel=error%20msg=forged%0D%0Aa");
is($r->{status}, 404, 'a path with CR LF: 404');
ok(wait_for(sub { slurp_log() =~ /msg="http request".*forged/ }, 10),
    'the request is logged');
my @forged = grep { /^level=|^a path=/ || /^\s*msg=forged/ }
    split /\r?\n|\r/, slurp_log();
is_deeply(\@forged, [], 'no line forged by the path');
like(slurp_log(), qr{path="/x\\nlevel=error msg=forged\\r\\na"},
    'the path quoted and escaped');

is($t->worker_stop, 0, 'SIGTERM after SIGHUP: exit 0');

$t->done;
