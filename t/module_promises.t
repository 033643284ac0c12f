#!/usr/bin/perl

# README promises of the module with no test of their own elsewhere:
# activity_event rules inherited into nested locations; an empty
# activity_user value is a null userId (even with a bearer token that
# would name one); activity_ingest answers 503 when the event buffer has
# no room for a whole batch, and queues none of it; a ?token= value is
# blanked in the request line, so the access and error logs never show
# it; a spool claim (PATH.replay.PID) left by a dead process is taken
# over and replayed in order before the spool, one of a live process is
# left alone.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use File::Path qw(make_path);
use POSIX qw(_exit);
use ActivityTest qw(wait_for jwt_hs256 make_event to_json from_json);

my $t = ActivityTest->new(needs => [qw(module redis)]);

my $spool = $t->dir . '/spool';
make_path($spool);
chmod 0777, $spool;

$t->write_conf(<<"EOF");
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "promises-secret";
    activity_buffer_size 64k;
    activity_spool $spool/events;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;
        client_max_body_size 1m;

        access_log %%TESTDIR%%/access.log;

        location /outer/ {
            activity_event PRODUCT_CREATED method=POST status=201;

            location /outer/inner/ {
                return 201;
            }

            location /outer/own/ {
                activity_event PRODUCT_DELETED method=DELETE status=2xx;
                return 201;
            }

            return 201;
        }

        location /user/ {
            activity_track on;
            activity_user \$http_x_user;
            return 200;
        }

        location = /events {
            activity_ingest;
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

$t->redis_start;
$t->nginx_start;

my $marks = 0;

# Empties the queue, runs $code, then sends a marker request and waits
# for it: one nginx worker process queues in order, so what $code queued
# is in the list by then. Returns the events before the marker.
sub queued_by {
    my ($code) = @_;
    $t->redis->del('activity:events');
    $code->();
    my $mark = '/user/mark-' . ++$marks;
    $t->http(GET => $mark);
    my @events;
    wait_for(sub {
        @events = $t->queued_events;
        grep { ($_->{metadata}{endpoint} // '') eq $mark } @events;
    }, 20) or return undef;
    return [ grep { ($_->{metadata}{endpoint} // '') ne $mark } @events ];
}

sub types { [ map { $_->{eventType} } @{ $_[0] || [] } ] }

# --- activity_event inherited into nested locations -----------------------

my $ev = queued_by(sub { $t->http(POST => '/outer/inner/x') });
is_deeply(types($ev), ['PRODUCT_CREATED'],
    'a nested location without activity_event inherits the outer rule');
is($ev && $ev->[0]{metadata}{endpoint}, '/outer/inner/x', 'its endpoint');

$ev = queued_by(sub { $t->http(GET => '/outer/inner/x') });
is_deeply(types($ev), [], 'the inherited rule keeps its method=POST');

$ev = queued_by(sub { $t->http(DELETE => '/outer/own/x') });
is_deeply(types($ev), ['PRODUCT_DELETED'],
    'a nested location with its own rule uses it');

$ev = queued_by(sub { $t->http(POST => '/outer/x') });
is_deeply(types($ev), ['PRODUCT_CREATED'], 'the outer location itself');

# --- an empty activity_user is null ----------------------------------------

$ev = queued_by(sub { $t->http(GET => '/user/named',
    headers => { 'X-User' => 'u-42' }) });
is($ev && $ev->[0]{userId}, 'u-42', 'activity_user with a value');

$ev = queued_by(sub { $t->http(GET => '/user/empty') });
ok($ev && @$ev == 1 && exists $ev->[0]{userId}
    && !defined $ev->[0]{userId}, 'activity_user empty: userId null');

my $bearer = jwt_hs256('promises-secret', { sub => 'from-token',
    exp => time + 600 });
$ev = queued_by(sub { $t->http(GET => '/user/empty-bearer',
    headers => { Authorization => "Bearer $bearer" }) });
ok($ev && @$ev == 1 && exists $ev->[0]{userId}
    && !defined $ev->[0]{userId},
    'activity_user empty: null, not the bearer token\'s sub')
    or diag(explain($ev));

# --- ?token= blanked in the logs -------------------------------------------

my $good = jwt_hs256('promises-secret', { sub => 'dash', role => 'admin',
    exp => time + 600 });
my $bad = jwt_hs256('another-secret', { sub => 'dash', role => 'admin',
    exp => time + 600 });

my $c = $t->ws_raw("/ws?token=$good&x=1");
ok(ref $c, 'dashboard with ?token= connects');
ok(ref $c && $c->next_text(qr/"snapshot"/, 10), 'and gets its snapshot');
$c->close_socket if ref $c;
is($t->ws_raw("/ws?token=$bad"), 401, 'a bad ?token= is refused with 401');

ok(wait_for(sub { 2 <= grep { m{GET /ws\?token=} }
    split /\n/, ActivityTest::_slurp($t->dir . '/access.log') }, 20),
    'both requests are in the access log');
my $access = ActivityTest::_slurp($t->dir . '/access.log');
my $errors = ActivityTest::_slurp($t->error_log);
for my $tok ([ good => $good ], [ bad => $bad ]) {
    my ($name, $value) = @$tok;
    my (undef, $claims, $sig) = split /\./, $value;
    for my $where ([ access => $access ], [ error => $errors ]) {
        ok(index($where->[1], $sig) < 0 && index($where->[1], $claims) < 0,
            "the $name token is not in the $where->[0] log");
    }
}
like($errors, qr/\[warn\].*invalid token/,
    'the refusal is logged at warn with the reason');

# --- ingest 503 when the buffer has no room --------------------------------

# with Redis away, batches of 50 events (about 12 KB) fill the 64k buffer
$t->redis->del('activity:events');
$t->redis_stop;
my (@status, $n);
for my $batch (1 .. 20) {
    my @events = map { make_event(type => 'APP_EVENT',
        endpoint => "/ingest/$batch/$_", agent => 'x' x 100) } 1 .. 50;
    my $r = $t->http(POST => '/events',
        headers => { 'Content-Type' => 'application/json' },
        content => to_json(\@events));
    push @status, $r->{status};
    if ($r->{status} == 503) {
        my $body = eval { from_json($r->{content}) } // {};
        ok($body->{error}, "503 with a JSON error: $body->{error}");
        last;
    }
}
$n = grep { $_ == 202 } @status;
is($status[-1], 503, 'a batch that does not fit: 503')
    or diag("statuses: @status");
ok($n >= 1 && $n == @status - 1, "the $n batches before it: 202");
is($t->status_metric('/status', 'activity_events_ingested_total'), 50 * $n,
    'only the accepted batches are counted as ingested');

$t->redis_start;
ok(wait_for(sub { $t->redis->llen('activity:events') >= 50 * $n }, 30),
    'the accepted batches reach Redis');
my %batches;
$batches{ (split m{/}, $_->{metadata}{endpoint})[2] }++
    for $t->queued_events;
is_deeply(\%batches, { map { $_ => 50 } 1 .. $n },
    'every accepted event once, nothing of the refused batch')
    or diag(explain(\%batches));

# --- spool: a dead process's claim is taken over ---------------------------

# a pid that is surely gone: a child that exited and was reaped
my $dead = fork // die "fork: $!";
_exit(0) unless $dead;
waitpid($dead, 0);

sub spool_file {
    my ($file, $tag, $n) = @_;
    open my $fh, '>', "$spool/$file" or die "$file: $!";
    print $fh to_json(make_event(endpoint => "/$tag/$_")), "\n" for 1 .. $n;
    close $fh;
    chmod 0666, "$spool/$file";
}

$t->redis->del('activity:events');
# written in the order they would be: the claim first, the spool after it
spool_file("events.replay.$$", 'live', 5);
spool_file("events.replay.$dead", 'orphan', 300);
spool_file('events', 'newer', 100);

ok(wait_for(sub { $t->redis->llen('activity:events') >= 400 }, 30),
    'the orphaned claim and the spool are replayed')
    or diag('queued ' . $t->redis->llen('activity:events'));
sub spool_files {
    opendir my $d, $spool or return ();
    return sort grep { !/^\./ } readdir $d;
}
ok(wait_for(sub { join(" ", spool_files()) eq "events.replay.$$" }, 20),
    "the replayed files are gone, the live claim stays")
    or diag(join " ", spool_files());
my @got = map { $_->{metadata}{endpoint} } $t->queued_events;
is_deeply(\@got, [ (map { "/orphan/$_" } 1 .. 300),
    (map { "/newer/$_" } 1 .. 100) ],
    'the dead claim first, in order, then the spool, in order, each once');
ok(-e "$spool/events.replay.$$", 'a claim of a live process is left alone');
is(scalar(grep { m{/live/} } @got), 0, 'and none of its events replayed');
unlink "$spool/events.replay.$$";

$t->done;
