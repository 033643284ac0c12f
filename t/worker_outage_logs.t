#!/usr/bin/perl

# The worker logs an outage once (README "Failure modes", "In the
# worker"): while Redis is away, "redis unavailable" once and "redis
# connected" once it is back, however many reconnects fail meanwhile;
# while PostgreSQL is away with a batch in hand, "postgres unavailable",
# "batch held until postgres is back", "postgres connected" and "batch
# resumed" once each. The failed reconnects are counted on a stand-in
# listener that accepts and closes on the server's port.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Socket::INET;
use Test::More;
use ActivityTest qw(wait_for make_event);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);
$t->allow_worker_errors(qr/msg="redis unavailable"/, qr/msg="postgres unavailable"/,
    qr/msg="partition maintenance failed"/);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--flush-ms', 20]);

sub log_since {
    my ($offset) = @_;
    return substr(ActivityTest::_slurp($t->worker_log), $offset);
}

sub count {
    my ($text, $msg) = @_;
    return scalar(() = $text =~ /msg="\Q$msg\E"/g);
}

# Accepts and closes connections on $port until $n came in (or 60 s).
sub refuse_connections {
    my ($port, $n) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
        LocalPort => $port, Listen => 64, ReuseAddr => 1, Blocking => 0)
        or die "listen on $port: $!";
    my $seen = 0;
    wait_for(sub {
        while (my $c = $l->accept) {
            $seen++;
            close $c;
        }
        $seen >= $n }, 60);
    close $l;
    return $seen;
}

$t->push_events(make_event(endpoint => '/warm'));
ok(wait_for(sub { $t->row_count("endpoint = '/warm'") == 1 }, 30),
    'the worker stores');

# --- Redis away -------------------------------------------------------------

my $from = length ActivityTest::_slurp($t->worker_log);
$t->redis_stop;
cmp_ok(refuse_connections($t->redis_port, 4), '>=', 4,
    'four reconnects to Redis failed');
$t->redis_start;
$t->push_events(make_event(endpoint => '/after-redis'));
ok(wait_for(sub { $t->row_count("endpoint = '/after-redis'") == 1 }, 30),
    'stored again once Redis is back');
my $text = log_since($from);
is(count($text, 'redis unavailable'), 1, 'once: "redis unavailable"')
    or diag($text);
is(count($text, 'redis connected'), 1, 'once: "redis connected"');

# --- PostgreSQL away with a batch in hand ------------------------------------

$from = length ActivityTest::_slurp($t->worker_log);
$t->pg_stop;
$t->push_events(map { make_event(endpoint => "/held/$_") } 1 .. 3);
ok(wait_for(sub { log_since($from) =~ /msg="batch held until postgres/ },
    30), 'the batch is held');
cmp_ok(refuse_connections($t->pg_port, 4), '>=', 4,
    'four reconnects to PostgreSQL failed');
$t->pg_start;
ok(wait_for(sub { $t->row_count("endpoint LIKE '/held/%'") == 3 }, 60),
    'the held batch is stored once PostgreSQL is back');
$text = log_since($from);
is(count($text, 'postgres unavailable'), 1, 'once: "postgres unavailable"')
    or diag($text);
is(count($text, 'batch held until postgres is back'), 1,
    'once: "batch held until postgres is back"');
is(count($text, 'postgres connected'), 1, 'once: "postgres connected"');
is(count($text, 'batch resumed'), 1, 'once: "batch resumed"');

$t->done;
