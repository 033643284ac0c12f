#!/usr/bin/perl

# The dashboard page (web/) in a real browser: Debian's chromium, headless,
# driven by playwright-core (t/browser/dashboard.js). nginx serves the page
# and the Socket.IO endpoint; tracked requests go request -> nginx ->
# Redis -> worker -> PUBLISH -> nginx -> the page. A wrong token shows an
# error; a valid one connects, gets the snapshot, then live events and
# stats; a user agent holding markup renders as text; rooms, the type
# filter and pause work. Screenshots go to t/tmp/browser/ (laptop and
# phone); TEST_DOCS_SCREENSHOT=docs/dashboard.png also refreshes the
# README's picture.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Copy qw(copy);
use File::Path qw(make_path);
use Test::More;
use Time::HiRes qw(time);
use ActivityTest qw(wait_for jwt_hs256 to_json);

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

# the same locations as conf/nginx.conf serves the page with
my $conf = <<'EOF';
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "browser-secret";
    activity_user $http_x_user;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location = /dashboard {
            return 301 /dashboard/;
        }

        location /dashboard/ {
            alias @ROOT@/web/;
            include /etc/nginx/mime.types;
            default_type application/octet-stream;
            add_header Content-Security-Policy "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'" always;
            add_header X-Content-Type-Options nosniff always;
            add_header Cache-Control no-cache always;
        }

        location /dashboard/vendor/ {
            alias @ROOT@/web/node_modules/socket.io-client/dist/;
            include /etc/nginx/mime.types;
        }

        location ^~ /dashboard/node_modules/ {
            return 404;
        }

        location /socket.io/ {
            activity_dashboard socketio;
        }

        location /api/ {
            activity_track on;
            return 200 "ok\n";
        }

        location = /api/auth/login {
            activity_track on;
            activity_event USER_LOGIN method=POST status=2xx;
            return 200 "welcome\n";
        }

        location = /api/products {
            activity_track on;
            activity_event PRODUCT_CREATED method=POST status=201;
            return 201 "created\n";
        }
    }
}
EOF
$conf =~ s/\@ROOT\@/$ROOT/g;
$t->write_conf($conf);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--flush-ms', 20]);
$t->nginx_start;

my $token = jwt_hs256('browser-secret', { sub => 'browser-admin',
    role => 'admin', exp => int(time) + 3600 });
my $forged = jwt_hs256('not-the-secret', { sub => 'mallory',
    role => 'admin', exp => int(time) + 3600 });
my $no_role = jwt_hs256('browser-secret', { sub => 'viewer',
    role => 'viewer', exp => int(time) + 3600 });

my $HOSTILE = '<img src=x onerror=alert(1)>';

sub get {
    my ($path, $user, $agent) = @_;
    return $t->http(GET => $path, headers => {
        'X-User' => $user,
        defined $agent ? ('User-Agent' => $agent) : () });
}


# --- what nginx serves ----------------------------------------------------

my $r = $t->http(GET => '/dashboard/');
is($r->{status}, 200, 'the page');
like($r->{headers}{'content-type'}, qr{^text/html}, 'as text/html');
like($r->{headers}{'content-security-policy'} // '',
    qr/script-src 'self'/, 'with a strict Content-Security-Policy');
unlike($r->{content}, qr/<script>|\son[a-z]+=/i,
    'no inline script, no inline handler');
$r = $t->http(GET => '/dashboard/vendor/socket.io.min.js');
is($r->{status}, 200, 'socket.io-client browser bundle');
like($r->{headers}{'content-type'}, qr/javascript/, 'as JavaScript');
is($t->http(GET => '/dashboard/js/dashboard.js')->{status}, 200,
    "the page's module");
is($t->http(GET => '/dashboard/node_modules/socket.io-client/'
    . 'package.json')->{status}, 404, 'node_modules not served');

# an event before the page opens: the snapshot holds it

is(get('/api/before', 'before-1')->{status}, 200, 'a request before');
ok(wait_for(sub {
    grep { /"before-1"/ }
        $t->redis->lrange('dashboard:events:recent', 0, -1);
}, 15), 'the worker put it on dashboard:events:recent');


# --- the browser ------------------------------------------------------------

my $b = ActivityTest::Node->new(
    script => "$ROOT/t/browser/dashboard.js",
    args   => [ to_json({ timeout => 180000 }) ],
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

# Polls the page's summary until $pred (on $_) holds; returns the last
# summary either way.
sub page_until {
    my ($pred, $timeout) = @_;
    my $s;
    wait_for(sub { local $_ = $s = call('summary'); $pred->() },
        $timeout // 10, 0.1);
    return $s;
}

sub users { map { $_->{user} } @{ $_[0]{rows} } }

my $open = call('open', url => $t->base_url . '/dashboard/');
is($open->{status}, 200, 'browser opened the page');
my $s = call('summary');
ok($s->{signin} && !$s->{board}, 'sign-in form first');
is($s->{state}, 'signed-out', 'state: signed out');

# wrong tokens: an error on the page, the form again

call('signin', token => $forged);
$s = page_until(sub { defined $_->{error} }, 10);
like($s->{error} // '', qr/invalid token/, 'forged token: "invalid token"')
    or diag(explain($s));
ok($s->{signin} && !$s->{board}, 'and the sign-in form again');
is($s->{state}, 'error', 'state: error');
ok(!(grep { $_ eq 'activity.token' } @{ $s->{stored} }),
    'a refused token is not kept');

call('signin', token => $no_role);
$s = page_until(sub { ($_->{error} // '') =~ /role/ }, 10);
like($s->{error} // '', qr/missing role/,
    'token without the admin role: "missing role"') or diag(explain($s));

# the valid token

call('signin', token => $token);
$s = page_until(sub { $_->{state} eq 'connected' }, 10);
is($s->{state}, 'connected', 'valid token: state connected')
    or diag(explain($s));
like($s->{connText}, qr/connected/, 'it says connected');
ok($s->{board} && !$s->{signin} && !defined $s->{error},
    'board shown, no error');
like($s->{who} // '', qr/browser-admin/, "signed in as the token's sub");
unlike($s->{url}, qr/ey[A-Za-z0-9_-]{10}/, 'the token is not in the URL');
ok((grep { $_ eq 'activity.token' } @{ $s->{stored} }),
    'the token is in sessionStorage');
is_deeply($s->{local}, [], 'nothing in localStorage');

$s = page_until(sub { grep { $_ eq 'before-1' } users($_) }, 5);
ok((grep { $_ eq 'before-1' } users($s)), 'the snapshot fills the feed')
    or diag(explain([ users($s) ]));

# live: tracked requests show in the feed, the API counter rises

(my $before = $s->{tiles}{apiRequestsPerMinute} // '') =~ tr/,//d;
$before = 0 unless $before =~ /^\d+$/;

my $t0 = time;
get("/api/items/$_", "live-$_") for 1 .. 4;
get('/api/hostile', 'hostile-1', $HOSTILE);
$t->http(POST => '/api/products', headers => { 'X-User' => 'seller-1' });

my @want = ((map { "live-$_" } 1 .. 4), 'hostile-1', 'seller-1');
my $all_in = sub {
    my %have = map { $_ => 1 } users($_[0]);
    return !grep { !$have{$_} } @want;
};
$s = page_until(sub { $all_in->($_) }, 2);
ok($all_in->($s), sprintf('the feed shows the 6 requests within 2 s'
    . ' (%.2f s)', time - $t0))
    or diag(explain([ map { "$_->{type} $_->{user}" } @{ $s->{rows} } ]));

my ($row) = grep { $_->{user} eq 'live-1' } @{ $s->{rows} };
is($row && $row->{req}, 'GET/api/items/1', 'row: method and endpoint');
is($row && $row->{status}, '200', 'row: status');
is($row && $row->{type}, 'API_CALL', 'row: type');
is($s->{rows}[0]{user}, 'seller-1', 'newest on top');
ok((grep { $_->{type} eq 'PRODUCT_CREATED' } @{ $s->{rows} }),
    'the PRODUCT_CREATED domain event too');

$s = page_until(sub {
    (my $v = $_->{tiles}{apiRequestsPerMinute} // '') =~ tr/,//d;
    $v =~ /^\d+$/ && $v > $before;
}, 2);
(my $after = $s->{tiles}{apiRequestsPerMinute} // '') =~ tr/,//d;
ok($after =~ /^\d+$/ && $after > $before, sprintf(
    'API requests counter rose within 2 s (%s -> %s, %.2f s)', $before,
    $after, time - $t0)) or diag(explain($s->{tiles}));
like($s->{tiles}{productsCreatedToday} // '', qr/^[1-9]/,
    'products created today counted');
ok($s->{chartPaths} >= 2, 'the chart draws a line');

# the hostile user agent: text, never markup

my ($evil) = grep { $_->{user} eq 'hostile-1' } @{ $s->{rows} };
like($evil && $evil->{agent}, qr/\Q$HOSTILE\E/,
    'a user agent with markup renders as its text');
is($s->{feedImages}, 0, 'no img element in the feed');
is($s->{images}, 0, 'no img element on the page');
is_deeply($s->{dialogs}, [], 'no alert() ran');

# rooms

my $user_room = 'input[data-room="dashboard:user-activity"]';
call('click', selector => $user_room);
$s = page_until(sub { $_->{roomsStatus} =~ /in rooms: .*user-activity/ },
    5);
like($s->{roomsStatus}, qr/in rooms: dashboard:user-activity/,
    'room toggle: subscribed') or diag($s->{roomsStatus});
$t->http(POST => '/api/auth/login', headers => { 'X-User' => 'login-1' });
$s = page_until(sub { $_->{rooms}{'dashboard:user-activity'} eq '1' }, 5);
is($s->{rooms}{'dashboard:user-activity'}, '1',
    'a login counted in the user-activity room');
is($s->{rooms}{'dashboard:api-activity'}, '0', 'nothing in the API room');
call('click', selector => $user_room);
$s = page_until(sub { $_->{roomsStatus} =~ /in rooms: none/ }, 5);
like($s->{roomsStatus}, qr/in rooms: none/, 'room toggle: unsubscribed');

# filter by type

call('select', selector => '#filter', value => 'USER_LOGIN');
$s = call('summary');
my @shown = grep { !$_->{hidden} } @{ $s->{rows} };
ok(@shown && !(grep { $_->{type} ne 'USER_LOGIN' } @shown),
    'filter USER_LOGIN shows only logins')
    or diag(explain([ map { "$_->{type} $_->{hidden}" } @{ $s->{rows} } ]));
call('select', selector => '#filter', value => '');
$s = call('summary');
ok(!(grep { $_->{hidden} } @{ $s->{rows} }), 'filter "all": every row');

# pause holds new events, resume shows them

call('click', selector => '#pause');
get('/api/paused', 'paused-1');
$s = page_until(sub { $_->{feedStatus} =~ /1 new event waiting/ }, 5);
like($s->{feedStatus}, qr/paused: 1 new event waiting/, 'paused: held');
ok(!(grep { $_ eq 'paused-1' } users($s)), 'paused: not in the feed');
call('click', selector => '#pause');
$s = call('summary');
is($s->{rows}[0]{user}, 'paused-1', 'resumed: on top');

# nginx goes away and comes back: the page retries with backoff and
# reconnects by itself; the new snapshot adds no duplicate rows

my $rows_before = @{ call('summary')->{rows} };
$t->nginx_stop;
$s = page_until(sub { $_->{state} eq 'reconnecting' }, 10);
is($s->{state}, 'reconnecting', 'nginx stopped: state reconnecting');
like($s->{connText}, qr/retry \d+ in \d+ s/, 'it shows the next retry')
    or diag($s->{connText});
$t->nginx_start;
$s = page_until(sub { $_->{state} eq 'connected' }, 20);
is($s->{state}, 'connected', 'nginx back: connected again');
my %ids;
is(scalar(grep { $ids{ $_->{id} }++ } @{ $s->{rows} }), 0,
    'no event twice in the feed after the new snapshot');
is(scalar @{ $s->{rows} }, $rows_before, 'no row lost or added');

# screenshots of the populated dashboard

get("/api/orders/$_", "shopper-$_") for 1 .. 3;
get('/api/cart', 'shopper-2', 'Mozilla/5.0 (X11; Linux x86_64)');
$t->http(POST => '/api/auth/login', headers => { 'X-User' => 'login-2' });
page_until(sub { grep { $_ eq 'login-2' } users($_) }, 5);

my $shots = "$ROOT/t/tmp/browser";
make_path($shots);
call('screenshot', path => "$shots/dashboard.png", width => 1280,
    height => 900);
call('screenshot', path => "$shots/dashboard-phone.png", width => 390,
    height => 844, fullPage => 1);
ok(-s "$shots/dashboard.png" && -s "$shots/dashboard-phone.png",
    'screenshots in t/tmp/browser/');
if (my $docs = $ENV{TEST_DOCS_SCREENSHOT}) {
    copy("$shots/dashboard.png", $docs) or diag("copy to $docs: $!");
}

$s = call('summary');
is_deeply($s->{pageErrors}, [], 'no page errors');
is_deeply([ grep { /Content.Security.Policy|Refused/i } @{ $s->{console} } ],
    [], 'no Content-Security-Policy violations');

# sign out

call('click', selector => '#signout');
$s = call('summary');
ok($s->{signin} && !$s->{board}, 'signed out: the form again');
ok(!(grep { $_ eq 'activity.token' } @{ $s->{stored} }),
    'signed out: the token is gone from sessionStorage');

$b->finish(30);

$t->done;
