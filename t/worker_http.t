#!/usr/bin/perl

# activity-worker --listen: /metrics parses as Prometheus text and its
# counters move with traffic (consumed, stored, dead letters; a replayed
# batch is consumed but not stored again); the queue gauges follow
# Redis; /healthz answers 200, then 503 with the reason while
# PostgreSQL or Redis is stopped, and 200 again once it is back.
# Wrong methods and paths, a bad --listen, a port in use.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use HTTP::Tiny;
use IO::Socket::INET;
use Test::More;
use ActivityPrometheus qw(parse_prometheus);
use ActivityTest qw(wait_for make_event to_json from_json);

my $t = ActivityTest->new(needs => [qw(redis pg worker)]);

my $port = $t->port('worker_http');
my $base = "http://127.0.0.1:$port";
my $ua = HTTP::Tiny->new(timeout => 10, agent => 'activity-test/1.0');

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--listen', "127.0.0.1:$port"]);

ok(wait_for(sub { get('/healthz')->{status} == 200 }, 15),
    'healthz 200 once connected');
is_deeply(from_json(get('/healthz')->{content}),
    { status => 'ok', redis => 'ok', postgres => 'ok' }, 'healthz body');


# --- the exposition format ---------------------------------------------


sub get {
    my ($path, %o) = @_;
    return $ua->request($o{method} // 'GET', $base . $path);
}

sub scrape {
    my $r = get('/metrics');
    die "GET /metrics: $r->{status}\n" unless $r->{status} == 200;
    my ($s, $e) = parse_prometheus($r->{content});
    return wantarray ? ($s, $e, $r) : $s;
}

my ($m, $errors, $r) = scrape();
is_deeply($errors, [], 'parses as Prometheus text exposition')
    or diag($r->{content});
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
    'content type of the text format');
is($m->{activity_worker_up}, 1, 'activity_worker_up 1');
is($m->{activity_worker_redis_up}, 1, 'redis_up 1');
is($m->{activity_worker_postgres_up}, 1, 'postgres_up 1');
ok(defined $m->{activity_worker_redis_ping_seconds}
    && defined $m->{activity_worker_postgres_ping_seconds},
    'round-trip gauges present');
is($m->{activity_worker_queue_length}, 0, 'queue empty');
is($m->{activity_worker_processing_length}, 0, 'processing list empty');
is($m->{activity_worker_events_consumed_total}, 0, 'nothing consumed yet');

for my $bad ("x 1", "# TYPE x counter\nx{a=b} 1\n",
    "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
    . "h_count 1\nh_sum 1\n")
{
    my (undef, $e) = parse_prometheus($bad);
    ok(@$e, 'checker refuses ' . to_json($bad));
}


# --- counters move with traffic -----------------------------------------

my @events = map { make_event(user => "u$_", time => time - $_) } 1 .. 50;
$t->push_events(@events, '{"not":"an event"}');

ok(wait_for(sub {
    scrape()->{activity_worker_events_consumed_total} == 51 }, 15),
    'consumed counts 51 events') or diag(explain scrape());
$m = scrape();
is($m->{activity_worker_events_stored_total}, 50, 'stored 50 rows');
is($t->row_count, 50, 'rows in activity_logs');
is($m->{activity_worker_dead_letters_total}, 1, 'one dead letter');
is($m->{activity_worker_dead_length}, 1, 'dead-letter list length 1');
cmp_ok($m->{activity_worker_batches_total}, '>=', 1, 'batches counted');
is($m->{activity_worker_batch_size_count},
    $m->{activity_worker_batches_total}, 'batch size histogram count');
# the element that is not an event is dead-lettered before any batch
is($m->{activity_worker_batch_size_sum}, 50, 'batch size sum');
is($m->{activity_worker_batch_store_seconds_count},
    $m->{activity_worker_batches_total}, 'store time histogram count');
is($m->{activity_worker_store_failures_total}, 0, 'no failed store');

# the same events again: consumed, not stored twice
$t->push_events(@events);
ok(wait_for(sub {
    scrape()->{activity_worker_events_consumed_total} == 101 }, 15),
    'replayed batch consumed');
$m = scrape();
is($m->{activity_worker_events_stored_total}, 50, 'replay stores nothing');
is($t->row_count, 50, 'still 50 rows');

# the queue gauge is LLEN of the queue: stop the worker, fill, measure
$t->worker_stop;
$t->push_events(map { make_event() } 1 .. 7);
$t->worker_start(args => ['--listen', "127.0.0.1:$port", '--batch', 1000,
    '--flush-ms', 0]);
ok(wait_for(sub { my $s = eval { scrape() }; $s && $s->{activity_worker_up} },
    10), 'listening again after a restart');
ok(wait_for(sub { $t->row_count == 57 }, 15), 'queued events stored');
is(scrape()->{activity_worker_queue_length}, 0, 'queue drained');


# --- health follows PostgreSQL and Redis ---------------------------------

$t->allow_worker_errors(qr/msg="postgres unavailable"/,
    qr/msg="partition maintenance failed"/, qr/msg="redis unavailable"/);
$t->pg_stop;
$r = get('/healthz');
is($r->{status}, 503, 'healthz 503 while PostgreSQL is stopped');
my $h = eval { from_json($r->{content}) } || {};
is($h->{status}, 'unavailable', 'status unavailable');
is($h->{redis}, 'ok', 'redis still ok');
isnt($h->{postgres} // 'ok', 'ok', "postgres reason: $h->{postgres}");
like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON reason');
$m = scrape();
is($m->{activity_worker_postgres_up}, 0, 'postgres_up 0');
is($m->{activity_worker_redis_up}, 1, 'redis_up still 1');
ok(!defined $m->{activity_worker_postgres_ping_seconds},
    'no round trip measured without a server');

$t->pg_start;
ok(wait_for(sub { get('/healthz')->{status} == 200 }, 15),
    'healthz 200 once PostgreSQL is back');

$t->redis_stop;
$r = get('/healthz');
is($r->{status}, 503, 'healthz 503 while Redis is stopped');
$h = eval { from_json($r->{content}) } || {};
isnt($h->{redis} // 'ok', 'ok', "redis reason: $h->{redis}");
is($h->{postgres}, 'ok', 'postgres ok');
$m = scrape();
is($m->{activity_worker_redis_up}, 0, 'redis_up 0');
ok(!defined $m->{activity_worker_queue_length}, 'no queue length');

my $connected = sub {
    my $log = do { local (@ARGV, $/) = $t->worker_log; <> };
    return () = $log =~ /msg="redis connected"/g;
};
my $before = $connected->();
$t->redis_start;
ok(wait_for(sub { get('/healthz')->{status} == 200 }, 15),
    'healthz 200 once Redis is back');
ok(wait_for(sub { $connected->() > $before }, 15),
    'the consumer is connected again');

# a batch stored after the outages still counts
$t->push_events(map { make_event() } 1 .. 3);
ok(wait_for(sub { $t->row_count == 60 }, 20), 'stored after outages');
# counters start at 0 with the process: 7 + 3 since the restart. The
# store thread's own Redis connection is always stale after the Redis
# restart: the 3 are committed, their retirement fails, and the replay,
# the batch that finishes, finds their rows there and inserts none.
ok(wait_for(sub {
    scrape()->{activity_worker_events_consumed_total} == 10 }, 10),
    'consumed counter moves (counted since the restart)');
is(scrape()->{activity_worker_events_stored_total}, 7,
    'stored counter: rows inserted by finished batches');


# --- the rest of HTTP -----------------------------------------------------

is(get('/metrics', method => 'POST')->{status}, 405, 'POST 405');
is(get('/metrics', method => 'POST')->{headers}{allow}, 'GET, HEAD',
    'Allow header');
is(get('/nothing')->{status}, 404, 'unknown path 404');
is(get('/metrics', method => 'HEAD')->{status}, 200, 'HEAD 200');

my ($rc, $out) = $t->run_cmd($t->{bin}{worker}, '--listen', 'nonsense');
is($rc, 2, 'a bad --listen exits 2');
like($out, qr/invalid value "nonsense" for --listen/, 'and says why');

($rc, $out) = $t->run_cmd($t->{bin}{worker}, '--redis', $t->redis_url,
    '--pg', $t->pg_url, '--id', 'second', '--sql-dir', $t->root . '/sql',
    '--listen', "127.0.0.1:$port");
is($rc, 1, 'a port in use exits 1');
like($out, qr/--listen 127\.0\.0\.1:$port: cannot listen/,
    'and says why');

is($t->worker_stop, 0, 'SIGTERM: exits 0 with the listener running');

$t->done;
