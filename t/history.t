#!/usr/bin/perl

# The worker's read API: GET /api/events pages (keyset, newest first)
# return every row exactly once, ties on created_at included; filters by
# userId, type and time; bad parameters get 400 naming the parameter;
# the page query uses an index and prunes partitions (EXPLAIN);
# /api/timeseries matches the counts of the stored rows, from the rollup
# table, which a replayed batch does not inflate; /api/stats is the live
# stats JSON; through nginx behind activity_auth_jwt role=admin the API
# answers 401 / 403 / 200.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use HTTP::Tiny;
use POSIX qw(floor strftime);
use Test::More;
use ActivityTest qw(wait_for make_event jwt_hs256 iso_time from_json);

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%

http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "history-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /dashboard/api/ {
            activity_auth_jwt role=admin;
            proxy_pass http://127.0.0.1:%%PORT_wapi%%/api/;
        }
    }
}
EOF

sub uri_escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf '%%%02X', ord $1/ge;
    return $s;
}

my $api = 'http://127.0.0.1:' . $t->port('wapi');
my $ua = HTTP::Tiny->new(timeout => 10);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--listen', '127.0.0.1:' . $t->port('wapi')]);
$t->nginx_start;

ok(wait_for(sub { $ua->get("$api/healthz")->{status} == 200 }, 15),
    'worker listening');


# --- the data -------------------------------------------------------------

# 237 events yesterday (UTC) from 12:00:00, five to a timestamp (ties
# broken by id), users u0..u4, three types: a day apart from everything
# else, so the partitions of other days must be pruned.
my $day0 = floor(time / 86400) * 86400 - 86400;
my $t0 = $day0 + 12 * 3600;
my $day = strftime('%Y%m%d', gmtime $day0);
my @types = qw(API_CALL USER_LOGIN PRODUCT_CREATED);

my @events = map {
    make_event(time => $t0 + int($_ / 5) + 0.25, user => 'u' . ($_ % 5),
        type => $types[$_ % 3])
} 0 .. 236;
my %by_id = map { $_->{id} => $_ } @events;

$t->push_events(@events);
ok(wait_for(sub { $t->row_count == 237 }, 20), '237 events stored');

# background, other hours and days, so the planner sees real tables
$t->dbh->do(q{
    INSERT INTO activity_logs (id, action, user_id, created_at)
    SELECT gen_random_uuid(), 'BACKGROUND', 'bg' || (g % 1000),
           to_timestamp(?) + g * interval '2 seconds'
      FROM generate_series(1, 20000) g
}, undef, $day0);
$t->dbh->do(q{
    INSERT INTO activity_logs (id, action, user_id, created_at)
    SELECT gen_random_uuid(), 'BACKGROUND', 'bg' || (g % 1000),
           to_timestamp(?) + g * interval '4 seconds'
      FROM generate_series(1, 20000) g
}, undef, $day0 + 86400);
$t->dbh->do('ANALYZE activity_logs');

my $from = iso_time($t0 - 60);
my $to = iso_time($t0 + 3600);

sub api {
    my ($path, %q) = @_;
    my $qs = join '&', map { "$_=" . uri_escape($q{$_}) } sort keys %q;
    my $r = $ua->get("$api$path" . ($qs ? "?$qs" : ''));
    my $body = eval { from_json($r->{content}) };
    return ($r->{status}, $body, $r);
}

# Every page of a query; dies on anything but 200.
sub all_pages {
    my (%q) = @_;
    my (@rows, $pages, %seen_cursor);
    my $cursor;
    while (1) {
        my ($st, $b) = api('/api/events', %q,
            defined $cursor ? (cursor => $cursor) : ());
        die "status $st\n" unless $st == 200;
        $pages++;
        push @rows, @{ $b->{events} };
        $cursor = $b->{nextCursor} // last;
        die "cursor repeats\n" if $seen_cursor{$cursor}++;
        die "too many pages\n" if $pages > 100;
    }
    return (\@rows, $pages);
}

sub newest_first {
    my ($rows) = @_;
    for my $i (1 .. $#$rows) {
        my ($a, $b) = @$rows[$i - 1, $i];
        return 0 if $a->{timestamp} lt $b->{timestamp}
            || ($a->{timestamp} eq $b->{timestamp} && $a->{id} le $b->{id});
    }
    return 1;
}


# --- pagination -----------------------------------------------------------

my ($rows, $pages) = all_pages(from => $from, to => $to, limit => 50);
is($pages, 5, '237 rows in 5 pages of 50');
is(scalar @$rows, 237, 'every row returned');
my %count;
$count{ $_->{id} }++ for @$rows;
is(scalar(grep { $count{$_} != 1 } keys %count), 0, 'none twice');
is_deeply([ sort keys %count ], [ sort keys %by_id ], 'the very rows');
ok(newest_first($rows), 'newest first, ties by id descending');

my ($e) = sort {
    $b->{timestamp} cmp $a->{timestamp} || $b->{id} cmp $a->{id}
} @events;
is_deeply($rows->[0], {
    id => $e->{id}, eventType => $e->{eventType}, userId => $e->{userId},
    timestamp => $e->{timestamp}, metadata => $e->{metadata},
}, 'a row is an event of the contract');

my ($st, $b) = api('/api/events', from => $from, to => $to);
is(scalar @{ $b->{events} }, 50, 'limit defaults to 50');
($st, $b) = api('/api/events', from => $from, to => $to, limit => 500);
is(scalar @{ $b->{events} }, 237, 'limit 500 in one page');
is($b->{nextCursor}, undef, 'no next page');

# rows arriving between pages (newer) do not shift the pages
my ($first) = api('/api/events', from => $from, to => $to, limit => 100);
($st, $b) = api('/api/events', from => $from, to => $to, limit => 100);
my $c1 = $b->{nextCursor};
$t->push_events(make_event(time => $t0 + 500, user => 'late'));
ok(wait_for(sub { $t->row_count("user_id = 'late'") == 1 }, 10),
    'a newer row arrives');
($st, $b) = api('/api/events', from => $from, to => $to, limit => 100,
    cursor => $c1);
is($b->{events}[0]{id}, $rows->[100]{id}, 'page 2 continues where it was');


# --- filters --------------------------------------------------------------

($rows) = all_pages(userId => 'u3', from => $from, to => $to, limit => 7);
my @want = grep { $_->{userId} eq 'u3' } @events;
is_deeply([ sort map { $_->{id} } @$rows ], [ sort map { $_->{id} } @want ],
    'userId filter, in pages of 7');

($rows) = all_pages(type => 'USER_LOGIN', from => $from, to => $to,
    limit => 13);
@want = grep { $_->{eventType} eq 'USER_LOGIN' } @events;
is_deeply([ sort map { $_->{id} } @$rows ], [ sort map { $_->{id} } @want ],
    'type filter');

($rows) = all_pages(type => 'PRODUCT_CREATED', userId => 'u1',
    from => $from, to => $to);
@want = grep { $_->{eventType} eq 'PRODUCT_CREATED' && $_->{userId} eq 'u1' }
    @events;
is_deeply([ sort map { $_->{id} } @$rows ], [ sort map { $_->{id} } @want ],
    'type and userId');

# [from, to): seconds 10 to 19 hold events 50 .. 99
($rows) = all_pages(from => iso_time($t0 + 10),
    to => int(($t0 + 20) * 1000));
@want = @events[50 .. 99];
is_deeply([ sort map { $_->{id} } @$rows ], [ sort map { $_->{id} } @want ],
    'time window (ISO from, epoch-ms to)');

($st, $b) = api('/api/events', userId => 'nobody');
is_deeply([ $st, $b->{events}, $b->{nextCursor} ], [ 200, [], undef ],
    'no rows: an empty page');


# --- bad parameters -------------------------------------------------------

for my $case (
    [ { limit => 0 }, 'limit' ], [ { limit => 501 }, 'limit' ],
    [ { limit => 'ten' }, 'limit' ], [ { from => 'yesterday' }, 'from' ],
    [ { to => '2026-02-30T00:00:00Z' }, 'to' ],
    [ { from => $to, to => $from }, 'to' ],
    [ { type => 'user_login' }, 'type' ], [ { userId => '' }, 'userId' ],
    [ { cursor => 'bm90IGEgY3Vyc29y' }, 'cursor' ],
    [ { cursor => '!!!' }, 'cursor' ], [ { sort => 'asc' }, 'sort' ],
    # well-formed but tampered: times PostgreSQL cannot hold
    (map { [ { cursor => ActivityTest::b64url("$_." . ActivityTest::uuid()) },
             'cursor' ] }
        '-9000000000000000000', '9223372036854775807',
        '-62135596800000001'))
{
    my ($q, $param) = @$case;
    my ($s, $body) = api('/api/events', %$q);
    my $what = join '&', map { "$_=$q->{$_}" } sort keys %$q;
    is($s, 400, "400 for $what");
    is($body->{parameter}, $param, "names $param")
        && ok(length $body->{reason}, 'with a reason');
}

($st, $b) = api('/api/timeseries', bucket => 'day');
is_deeply([ $st, $b->{parameter} ], [ 400, 'bucket' ], '400 bad bucket');
($st, $b) = api('/api/timeseries', bucket => 'minute',
    from => '2000-01-01T00:00:00Z');
is_deeply([ $st, $b->{parameter} ], [ 400, 'from' ],
    '400 for a range of too many buckets');
($st, $b) = api('/api/stats', x => 1);
is($st, 400, '400 for a parameter /api/stats does not take');


# --- the plan -------------------------------------------------------------

my @parts = @{ $t->dbh->selectcol_arrayref(q{
    SELECT c.relname FROM pg_inherits i JOIN pg_class c
        ON c.oid = i.inhrelid
     WHERE i.inhparent = 'activity_logs'::regclass }) };
cmp_ok(scalar @parts, '>', 3, scalar(@parts) . ' partitions');

sub plan_of {
    my (@args) = @_;
    my $sth = $t->dbh->prepare('EXPLAIN SELECT * FROM activity_history('
        . '?, ?, ?::timestamptz, ?::timestamptz, ?::timestamptz, ?::uuid,'
        . ' ?::int)');
    $sth->execute(@args);
    return join "\n", map { $_->[0] } @{ $sth->fetchall_arrayref };
}

sub scanned_partitions {
    my ($plan) = @_;
    my %p;
    $p{$1} = 1 while $plan =~ /\bon (activity_logs_\w+)/g;
    return sort keys %p;
}

my $cur = $rows->[0];
for my $case (
    [ 'time-bounded', undef, undef, $from, $to, undef, undef ],
    [ 'by user, second page', 'u1', undef, $from, $to,
        $cur->{timestamp}, $cur->{id} ],
    [ 'by type', undef, 'USER_LOGIN', $from, $to, undef, undef ])
{
    my ($name, @args) = @$case;
    my $plan = plan_of(@args, 51);
    like($plan, qr/Index (Only )?Scan/, "$name: an index scan")
        or diag($plan);
    unlike($plan, qr/Seq Scan|Sort Key: .*\n.*Seq/, "$name: no seq scan")
        or diag($plan);
    is_deeply([ scanned_partitions($plan) ], ["activity_logs_$day"],
        "$name: partitions pruned to activity_logs_$day") or diag($plan);
}

# the keyset row comparison alone would not prune: the extra
# created_at <= cursor does, even without from/to
my $plan = plan_of(undef, undef, undef, undef, $cur->{timestamp},
    $cur->{id}, 51);
ok(!grep({ $_ eq 'activity_logs_' . strftime('%Y%m%d', gmtime time) }
    scanned_partitions($plan)), 'a cursor alone prunes later days')
    or diag($plan);


# --- timeseries -----------------------------------------------------------

my %minute;
$minute{ strftime('%Y-%m-%dT%H:%M:00Z', gmtime int $_->{ts}) }++
    for map { { ts => $t0 + int($_ / 5) } } 0 .. 236;

($st, $b) = api('/api/timeseries', bucket => 'minute',
    from => iso_time($t0 - 120), to => iso_time($t0 + 300));
is($st, 200, 'timeseries 200');
is(scalar @{ $b->{points} }, 7, '7 minute buckets, zeros included');
my %got = map { $_->{t} => $_->{count} } grep { $_->{count} }
    @{ $b->{points} };
is_deeply(\%got, \%minute, 'per-minute counts match the events');
is($b->{total}, 237, 'total');

my %db = map { @$_ } @{ $t->dbh->selectall_arrayref(q{
    SELECT to_char(date_trunc('minute', created_at, 'UTC')
                   AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:00"Z"'),
           count(*)
      FROM activity_logs
     WHERE created_at >= ? AND created_at < ? AND action = 'USER_LOGIN'
     GROUP BY 1 }, undef, iso_time($t0 - 120), iso_time($t0 + 300)) };
($st, $b) = api('/api/timeseries', bucket => 'minute', type => 'USER_LOGIN',
    from => iso_time($t0 - 120), to => iso_time($t0 + 300));
%got = map { $_->{t} => $_->{count} } grep { $_->{count} }
    @{ $b->{points} };
is_deeply(\%got, \%db, 'type filter: counts match activity_logs');

($st, $b) = api('/api/timeseries', bucket => 'hour', type => 'BACKGROUND',
    from => iso_time($day0), to => iso_time($day0 + 2 * 86400));
is(scalar @{ $b->{points} }, 48, '48 hour buckets');
is($b->{total}, 40000, 'hourly total from the rollups');
is($b->{points}[0]{count}, 1799, 'first hour (2 s apart from 00:00:02)');

# a replayed batch adds no rows and no counts
$t->push_events(@events[0 .. 99]);
ok(wait_for(sub { $t->redis->llen($t->queue) == 0
    && $t->redis->llen('activity:processing:w1') == 0 }, 10),
    'replayed batch consumed');
($st, $b) = api('/api/timeseries', bucket => 'minute',
    from => iso_time($t0 - 120), to => iso_time($t0 + 300));
is($b->{total}, 237, 'rollups unchanged by the replay');
is($t->sql_value(q{SELECT sum(count) FROM activity_rollup_minute}),
    $t->row_count, 'rollup total equals the rows stored');


# --- stats ----------------------------------------------------------------

ok(wait_for(sub { (api('/api/stats'))[0] == 200 }, 10), 'stats 200');
# what --stats-key holds, read at a moment it did not change meanwhile
my $held;
ok(wait_for(sub {
    my $before = $t->redis->get('dashboard:stats');
    ($st, $b) = api('/api/stats');
    $held = $before;
    return defined $before && $before eq ($t->redis->get('dashboard:stats')
        // '');
}, 10), 'stats read while the key held still');
is($st, 200, 'stats 200 again');
is_deeply($b, from_json($held), 'the live stats JSON of --stats-key');
is_deeply([ sort keys %$b ], [ sort qw(activeUsers apiRequestsPerMinute
    productsCreatedToday loginsPerHour logoutsPerHour timestamp) ],
    'every stat, nothing else');
is(scalar(grep { !defined $b->{$_} || $b->{$_} !~ /^\d+$/ }
    qw(activeUsers apiRequestsPerMinute productsCreatedToday loginsPerHour
       logoutsPerHour)), 0, 'counts are whole numbers');
like($b->{timestamp} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/,
    'timestamp in ISO 8601 UTC');


# --- through nginx --------------------------------------------------------

my $admin = jwt_hs256('history-secret',
    { sub => 'ops', role => 'admin', exp => time + 600 });
my $viewer = jwt_hs256('history-secret',
    { sub => 'v', role => 'viewer', exp => time + 600 });
my $path = '/dashboard/api/events?limit=3&userId=u2&from='
    . uri_escape($from);

my $r = $t->http(GET => $path);
is($r->{status}, 401, 'nginx: no token 401');
$r = $t->http(GET => $path,
    headers => { Authorization => 'Bearer not.a.token' });
is($r->{status}, 401, 'nginx: bad token 401');
$r = $t->http(GET => $path, headers => { Authorization => "Bearer $viewer" });
is($r->{status}, 403, 'nginx: wrong role 403');
$r = $t->http(GET => $path, headers => { Authorization => "Bearer $admin" });
is($r->{status}, 200, 'nginx: admin 200');
is_deeply(from_json($r->{content}),
    (api('/api/events', limit => 3, userId => 'u2', from => $from))[1],
    'the same page as the worker gives');
$r = $t->http(GET => '/dashboard/api/events?limit=0',
    headers => { Authorization => "Bearer $admin" });
is($r->{status}, 400, 'nginx: 400 passed through');
$r = $t->http(GET => '/dashboard/api/stats',
    headers => { Authorization => "Bearer $admin" });
is($r->{status}, 200, 'nginx: stats 200');

$t->done;
