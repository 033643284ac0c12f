#!/usr/bin/perl

# The dashboard page (web/) across nginx restarts (issue 12), in a real
# browser (Debian's chromium, playwright-core as in t/browser.t). While
# nginx is down the worker goes on publishing. When the page reconnects
# it is either recovered (Socket.IO connection state recovery: the
# missed events arrive over the socket, no history request) or not (the
# stream was trimmed): then the snapshot holds only the newest 50, and
# the page fetches the rest of the gap from the history API, so its feed
# has every event once, in time order, no hole.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time);
use ActivityTest qw(wait_for jwt_hs256 to_json make_event);

my $ROOT = ActivityTest->root;
my $CHROMIUM = $ENV{TEST_CHROMIUM} || '/usr/bin/chromium';

my @missing;
push @missing, "chromium ($CHROMIUM)" unless -x $CHROMIUM;
push @missing, 'playwright-core (t/browser/node_modules)'
    unless -d "$ROOT/t/browser/node_modules/playwright-core";
push @missing, "the page's socket.io-client (web/node_modules)"
    unless -f "$ROOT/web/node_modules/socket.io-client/dist/"
        . 'socket.io.min.js';
BAIL_OUT('missing: ' . join(', ', @missing) . '; run make deps-test')
    if @missing;

my $t = ActivityTest->new(needs => [qw(module redis pg worker node)]);

my $conf = <<'EOF';
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "browser-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /dashboard/ {
            alias @ROOT@/web/;
            include /etc/nginx/mime.types;
            default_type application/octet-stream;
            add_header Cache-Control no-cache always;
        }

        location /dashboard/vendor/ {
            alias @ROOT@/web/node_modules/socket.io-client/dist/;
            include /etc/nginx/mime.types;
        }

        location /dashboard/api/ {
            activity_auth_jwt role=admin;
            proxy_pass http://127.0.0.1:%%PORT_wapi%%/api/;
        }

        location /socket.io/ {
            activity_dashboard socketio;
        }
    }
}
EOF
my $web = $t->web_copy;
$conf =~ s/\@ROOT\@\/web/$web/g;
$t->write_conf($conf);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--flush-ms', 20,
    '--listen', '127.0.0.1:' . $t->port('wapi')]);
$t->nginx_start;

my $r = $t->redis;
my $token = jwt_hs256('browser-secret', { sub => 'browser-admin',
    role => 'admin', exp => int(time) + 3600 });

# events with distinct, rising timestamps (a little in the past)
my $clock = time - 120;
sub events {
    my ($prefix, $n) = @_;
    return map { $clock += 0.01; make_event(user => "$prefix$_",
        endpoint => "/resume/$prefix$_", time => $clock) } 1 .. $n;
}

sub published {
    my (@users) = @_;
    my %want = map { $_ => 1 } @users;
    return wait_for(sub {
        my $rows = $t->sql_rows('SELECT user_id FROM activity_logs');
        delete $want{ $_->{user_id} } for @$rows;
        !%want;
    }, 30);
}

my $b = ActivityTest::Node->new(
    script => "$ROOT/t/browser/dashboard.js",
    args   => [ to_json({ timeout => 240000 }) ],
    log    => $t->dir . '/browser.log',
    name   => 'browser',
);
ok($b->wait_line(sub { $_->{t} eq 'ready' }, 20), 'browser driver ready');

my $ntag = 0;

sub call {
    my ($cmd, %o) = @_;
    my $tag = ++$ntag;
    $b->send({ cmd => $cmd, tag => $tag, %o });
    my $reply = $b->wait_line(sub {
        $_->{t} eq 'reply' && ($_->{tag} // 0) == $tag }, 60);
    die "browser: no answer to $cmd\n" unless $reply;
    die "browser: $cmd: $reply->{error}\n" unless $reply->{ok};
    return $reply->{data};
}

sub page_until {
    my ($pred, $timeout) = @_;
    my $s;
    wait_for(sub { local $_ = $s = call('summary'); $pred->() },
        $timeout // 10, 0.2);
    return $s;
}

sub users { map { $_->{user} } @{ $_[0]{rows} } }

sub has_all {
    my ($s, @want) = @_;
    my %have = map { $_ => 1 } users($s);
    return !grep { !$have{$_} } @want;
}

sub history_requests {
    scalar @{ call('requests', match => '/dashboard/api/events') };
}

is(call('open', url => $t->base_url . '/dashboard/')->{status}, 200,
    'page opened');
call('signin', token => $token);
my $s = page_until(sub { $_->{state} eq 'connected' }, 15);
is($s->{state}, 'connected', 'connected');

my @first = events('a', 3);
$t->push_events(@first);
$s = page_until(sub { has_all($_, qw(a1 a2 a3)) }, 30);
ok(has_all($s, qw(a1 a2 a3)), 'live events in the feed');

# 1. nginx stops; events go on; nginx is back: recovered over the socket

$t->nginx_stop('QUIT');
$s = page_until(sub { $_->{state} ne 'connected' }, 20);
isnt($s->{state}, 'connected', 'the page lost its connection');

my @away = events('b', 5);
$t->push_events(@away);
ok(published(map { "b$_" } 1 .. 5), 'published and stored while away');

my $before = history_requests();
$t->nginx_start;
$s = page_until(sub { has_all($_, map { "b$_" } 1 .. 5) }, 60);
ok(has_all($s, map { "b$_" } 1 .. 5), 'recovered: the missed events');
is(history_requests(), $before, 'recovered: no history request');
my $log = do { open my $fh, '<', $t->error_log; local $/; <$fh> };
like($log, qr/recovered 5 missed events/, 'nginx recovered 5 for it');

# 2. away again, 70 events, the stream trimmed: not recovered; the
# snapshot has the newest 50, the history API the rest

$t->nginx_stop('QUIT');
$s = page_until(sub { $_->{state} ne 'connected' }, 20);
isnt($s->{state}, 'connected', 'the page lost its connection again');

my @gap = events('c', 70);
$t->push_events(@gap);
ok(published(map { "c$_" } 1 .. 70), 'published and stored while away');
$r->xtrim('dashboard:events:stream', 'MAXLEN', 0);

$t->nginx_start;
my @want = map { "c$_" } 1 .. 70;
$s = page_until(sub { has_all($_, @want) }, 60);
ok(has_all($s, @want), 'not recovered: every missed event all the same')
    or diag(explain([ users($s) ]));
cmp_ok(history_requests(), '>', $before, 'fetched from the history API');

my @order = grep { /^[abc]\d+$/ } users($s);
is_deeply(\@order,
    [ reverse((map { "a$_" } 1 .. 3), (map { "b$_" } 1 .. 5), @want) ],
    'each once, newest first: no hole, no duplicate');
is_deeply($s->{pageErrors}, [], 'no page errors');

# 3. (review) an event missed at the very millisecond of the newest row
# the page has: the gap it fetches has that event too

$clock += 0.01;
my $same = $clock;
$t->push_events(make_event(user => 'd1', endpoint => '/resume/d1',
    time => $same));
$s = page_until(sub { has_all($_, 'd1') }, 30);
ok(has_all($s, 'd1'), 'an event live');

$t->nginx_stop('QUIT');
$s = page_until(sub { $_->{state} ne 'connected' }, 20);
isnt($s->{state}, 'connected', 'the page lost its connection a third time');

$t->push_events(make_event(user => 'd2', endpoint => '/resume/d2',
    time => $same), events('e', 60));
my @same = ('d2', map { "e$_" } 1 .. 60);
ok(published(@same), 'one at the same millisecond, then 60, stored');
$r->xtrim('dashboard:events:stream', 'MAXLEN', 0);

$t->nginx_start;
$s = page_until(sub { has_all($_, @same) }, 60);
ok(has_all($s, @same), 'not recovered: the same millisecond one too')
    or diag(explain([ users($s) ]));
is_deeply($s->{pageErrors}, [], 'still no page errors');

$b->finish(20);
$t->done;
