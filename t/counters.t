#!/usr/bin/perl

# Live counters and the dashboard feed: after a known mix of requests
# through nginx, dashboard:stats (key and channel) shows the exact
# numbers, every event is published once as part of a JSON array and
# cached in dashboard:events:recent, and an event handled again (resent,
# or recovered from a processing list) changes nothing and is not
# published again.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Redis;
use Test::More;
use Time::HiRes qw(time);
use ActivityTest qw(wait_for jwt_hs256 make_event to_json from_json);

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "counters-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /api/ {
            activity_track on;
            return 200 "ok\n";
        }

        location = /auth/login {
            activity_event USER_LOGIN method=POST status=2xx;
            return 200;
        }

        location = /auth/logout {
            activity_event USER_LOGOUT method=POST status=2xx;
            return 204;
        }

        location = /products {
            activity_event PRODUCT_CREATED method=POST status=201;
            return 201;
        }
    }
}
EOF

$t->redis_start;
$t->pg_start;
$t->worker_migrate;

# A second connection, subscribed before anything is published.

my (@stats_msgs, @event_msgs, %synced);

my $sub = Redis->new(server => '127.0.0.1:' . $t->redis_port,
    cnx_timeout => 2);
$sub->subscribe('dashboard:stats', 'dashboard:events', sub {
    my ($msg, $channel) = @_;
    if ($msg =~ /^sync-\d+$/) {
        $synced{$msg} = 1;
    } elsif ($channel eq 'dashboard:stats') {
        push @stats_msgs, { at => time, text => $msg };
    } else {
        push @event_msgs, { at => time, text => $msg };
    }
});

sub pump {
    my ($seconds) = @_;
    my $end = time + $seconds;
    while ((my $left = $end - time) > 0) {
        $sub->wait_for_messages($left > 0.1 ? 0.1 : $left);
    }
}

# Publishes a marker and pumps until it arrives: every message published
# before it has arrived too (one connection, in order).
my $nsync = 0;
sub sync {
    my $tag = 'sync-' . ++$nsync;
    $t->redis->publish('dashboard:stats', $tag);
    return pump_until(sub { $synced{$tag} }, 30);
}

# Waits (pumping messages) until $code returns true.
sub pump_until {
    my ($code, $timeout) = @_;
    return wait_for(sub { pump(0.05); $code->() }, $timeout // 15, 0.01);
}

$t->worker_start;
$t->nginx_start;

my $r = $t->redis;

# The mix: 7 API calls by 3 users, 2 logins, 1 logout, 3 products.

my %token = map { $_ => jwt_hs256('counters-secret',
    { sub => $_, exp => int(time) + 3600 }) } qw(u1 u2);

# u3's token comes from "activity-worker token": the module must accept it
{
    local $ENV{ACTIVITY_JWT_SECRET} = 'counters-secret';
    my ($rc, $out) = $t->run_cmd($t->{bin}{worker}, 'token',
        '--sub', 'u3', '--role', 'admin', '--ttl', '10m');
    is($rc, 0, 'activity-worker token');
    like($out, qr/^[\w-]+\.[\w-]+\.[\w-]+\n\z/, 'prints one JWT');
    chomp($token{u3} = $out);
}

my @calls = qw(u1 u2 u3 u1 u2 u1 u3);
my %status;

for my $i (0 .. $#calls) {
    my $res = $t->http(GET => "/api/items/$i",
        headers => { Authorization => "Bearer $token{ $calls[$i] }" });
    $status{"api $res->{status}"}++;
}
$status{'login ' . $t->http(POST => '/auth/login')->{status}}++ for 1 .. 2;
$status{'logout ' . $t->http(POST => '/auth/logout')->{status}}++;
$status{'product ' . $t->http(POST => '/products')->{status}}++ for 1 .. 3;

is_deeply(\%status, { 'api 200' => 7, 'login 200' => 2, 'logout 204' => 1,
    'product 201' => 3 }, 'requests answered');

my $n = 13;
my %want = (activeUsers => 3, apiRequestsPerMinute => 7,
    productsCreatedToday => 3, loginsPerHour => 2, logoutsPerHour => 1);

sub counters {
    my ($json) = @_;
    my $s = eval { from_json($json // 'null') } or return {};
    return { map { $_ => $s->{$_} } grep { $_ ne 'timestamp' } keys %$s };
}

ok(pump_until(sub { $t->row_count == $n }, 30), "$n rows stored")
    or diag('rows: ' . $t->row_count);

ok(pump_until(sub {
    is_deeply_quiet(counters($r->get('dashboard:stats')), \%want);
}), 'dashboard:stats has the exact numbers')
    or diag('dashboard:stats: ' . ($r->get('dashboard:stats') // 'nil'));

my $stats = from_json($r->get('dashboard:stats'));
is_deeply([ sort keys %$stats ], [ sort 'timestamp', keys %want ],
    'stats fields');
like($stats->{timestamp}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    'stats timestamp: ISO-8601 UTC with milliseconds');

ok(pump_until(sub {
    grep { is_deeply_quiet(counters($_->{text}), \%want) } @stats_msgs;
}, 10), 'a stats message on dashboard:stats shows them');

# Every event on dashboard:events exactly once, as JSON arrays.

my @ids = map { $_->{id} } @{ $t->sql_rows('SELECT id FROM activity_logs') };

ok(pump_until(sub { published_count() >= $n }, 10),
    'all events published');

my (%published, $arrays);
for my $m (@event_msgs) {
    my $a = eval { from_json($m->{text}) };
    $arrays++ if ref $a eq 'ARRAY' && @$a;
    $published{ $_->{id} }++ for ref $a eq 'ARRAY' ? @$a : ();
}
is($arrays, scalar @event_msgs, 'each events message is a JSON array');
is_deeply(\%published, { map { $_ => 1 } @ids },
    'each stored event published exactly once');

my @recent = map { from_json($_) } $r->lrange('dashboard:events:recent',
    0, -1);
is_deeply([ sort map { $_->{id} } @recent ], [ sort @ids ],
    'dashboard:events:recent holds them');
my $ttl = $r->ttl('dashboard:events:recent');
ok($ttl > 0 && $ttl <= 300, "recent list expires ($ttl s)");

# Rate: published stats are at least 250 ms apart, by the server's
# stamps: the stamp and the gate come from one TIME in one script, so
# no load can move them.

my @times = map { iso_ms(from_json($_->{text})->{timestamp}) } @stats_msgs;
my @gaps = map { $times[$_] - $times[$_ - 1] } 1 .. $#times;
ok(!grep({ $_ < 250 } @gaps), 'stats published at most 4 times a second')
    or diag("gaps: @gaps");

# Idle: stats are still published, at least every 5 seconds.

my $before = @stats_msgs;
ok(pump_until(sub { @stats_msgs > $before }, 60), 'stats published while idle')
    or diag('stats messages: ' . scalar @stats_msgs);
my @idle = map { from_json($_->{text}) } @stats_msgs[$before - 1, $before];
is_deeply(counters(to_json($idle[1])), counters(to_json($idle[0])),
    'unchanged while idle');
cmp_ok(iso_ms($idle[1]{timestamp}) - iso_ms($idle[0]{timestamp}), '>=',
    5000, 'unchanged stats wait for --stats-max-ms (server clock)');

# A resent event (as nginx may after a lost connection): stored once,
# not counted, not published.

my $login = (grep { $_ =~ /"USER_LOGIN"/ }
    $r->lrange('dashboard:events:recent', 0, -1))[0];
my $login_id = from_json($login)->{id};

my $seen_msgs = @event_msgs;
$r->lpush('activity:events', $login);
ok(wait_for(sub { drained() }, 10), 'resent event handled');
ok(sync(), 'every message so far received');
is(scalar @event_msgs, $seen_msgs, 'a resent event is not published');
is_deeply(counters($r->get('dashboard:stats')), \%want,
    'a resent event changes no counter');
is($t->row_count, $n, 'and is stored once');

# A processing list left by a worker that died after publishing, before
# its COMMIT: handled again at start, published and counted once.

is($t->worker_stop, 0, 'worker stopped');
$r->lpush('activity:processing:w1',
    reverse $r->lrange('dashboard:events:recent', 0, -1));
$t->worker_start;
ok(wait_for(sub { drained() }, 20), 'processing list recovered');
ok(sync(), 'every message so far received');
is(scalar @event_msgs, $seen_msgs, 'a recovered batch is not published');
is_deeply(counters($r->get('dashboard:stats')), \%want,
    'a recovered batch changes no counter');
is($r->llen('dashboard:events:recent'), $n, 'nor the recent list');

# A new event still goes through: positive control.

my $marker = make_event(type => 'USER_LOGOUT', user => 'u4');
$t->push_events($marker);
ok(pump_until(sub { published_count() > $n }, 10), 'a new event published');
my $queued = to_json($marker);
$queued =~ s/\}$//;
like($event_msgs[-1]{text}, qr/^\[\Q$queued\E,"offset":"\d+-\d+"\}\]$/,
    'as the queued JSON text with its stream offset, in an array');
ok(pump_until(sub {
    my $c = counters($r->get('dashboard:stats'));
    $c->{logoutsPerHour} == 2 && $c->{activeUsers} == 4;
}), 'and counted') or diag($r->get('dashboard:stats'));

# Invalid events are dead-lettered: neither counted nor published.

$seen_msgs = @event_msgs;
$r->lpush('activity:events', '{"eventType":"API_CALL"}');
ok(wait_for(sub { $r->llen('activity:dead') == 1 && drained() }, 10),
    'invalid event dead-lettered');
ok(sync(), 'every message so far received');
is(scalar @event_msgs, $seen_msgs, 'and not published');

$t->done;


sub drained {
    return $r->llen('activity:events') == 0
        && $r->llen('activity:processing:w1') == 0;
}

sub published_count {
    my $c = 0;
    for my $m (@event_msgs) {
        my $a = eval { from_json($m->{text}) };
        $c += @$a if ref $a eq 'ARRAY';
    }
    return $c;
}

sub is_deeply_quiet {
    my ($got, $want) = @_;
    return 0 unless keys %$got == keys %$want;
    for (keys %$want) {
        return 0 unless defined $got->{$_} && $got->{$_} eq $want->{$_};
    }
    return 1;
}

sub iso_ms {
    my ($iso) = @_;
    my ($y, $mo, $d, $h, $mi, $s, $ms) =
        $iso =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)Z$/ or return 0;
    require Time::Local;
    return Time::Local::timegm($s, $mi, $h, $d, $mo - 1, $y) * 1000 + $ms;
}
