#!/usr/bin/perl

# The dashboard page (web/) in a real browser: Debian's chromium, headless,
# driven by playwright-core (t/browser/dashboard.js). nginx serves the page
# and the Socket.IO endpoint; tracked requests go request -> nginx ->
# Redis -> worker -> PUBLISH -> nginx -> the page. A wrong token shows an
# error; a valid one connects, gets the snapshot, then live events and
# stats; a user agent holding markup renders as text; rooms, the type
# filter and pause work. "Load older" pages back through the worker's
# history API (proxied at /dashboard/api/ behind activity_auth_jwt) until
# nothing is older, every stored event once in the feed; it follows the
# type filter, shows an error with a retry, and a refused token signs
# out. Screenshots (laptop and phone) go to the test folder's
# screenshots/ (kept with TEST_KEEP=1); TEST_DOCS_SCREENSHOT=
# docs/dashboard.png also refreshes the README's picture.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Copy qw(copy);
use File::Path qw(make_path);
use Test::More;
use Time::HiRes qw(time);
use ActivityTest qw(wait_for jwt_hs256 to_json from_json);

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
        listen 127.0.0.1:%%PORT%% %%SSL%%;
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

        location /dashboard/api/ {
            activity_auth_jwt role=admin;
            proxy_pass http://127.0.0.1:%%PORT_wapi%%/api/;
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
# the page from a copy in the test folder: nginx's workers (nobody) may
# not reach the checkout (a clone under /root)
my $web = $t->web_copy;
$conf =~ s/\@ROOT\@\/web/$web/g;
$t->write_conf($conf);

$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => ['--flush-ms', 20,
    '--listen', '127.0.0.1:' . $t->port('wapi')]);
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
my $product = sub {
    return grep { $_->{type} eq 'PRODUCT_CREATED' } @{ $_[0]{rows} };
};
# nothing promises that one request's two events share a message: wait
# for both
$s = page_until(sub { $all_in->($_) && $product->($_) }, 30);
note(sprintf 'the feed showed them after %.2f s', time - $t0);
ok($all_in->($s), 'the feed shows the 6 requests')
    or diag(explain([ map { "$_->{type} $_->{user}" } @{ $s->{rows} } ]));

my ($row) = grep { $_->{user} eq 'live-1' } @{ $s->{rows} };
is($row && $row->{req}, 'GET/api/items/1', 'row: method and endpoint');
is($row && $row->{status}, '200', 'row: status');
is($row && $row->{type}, 'API_CALL', 'row: type');
is($s->{rows}[0]{user}, 'seller-1', 'newest on top');
ok($product->($s), 'the PRODUCT_CREATED domain event too')
    or diag(explain([ map { "$_->{type} $_->{user}" } @{ $s->{rows} } ]));

$s = page_until(sub {
    (my $v = $_->{tiles}{apiRequestsPerMinute} // '') =~ tr/,//d;
    $v =~ /^\d+$/ && $v > $before;
}, 30);
(my $after = $s->{tiles}{apiRequestsPerMinute} // '') =~ tr/,//d;
ok($after =~ /^\d+$/ && $after > $before, sprintf(
    'API requests counter rose (%s -> %s)', $before, $after))
    or diag(explain($s->{tiles}));
# stats go out at most every so often: the product may be in the next
$s = page_until(sub { ($_->{tiles}{productsCreatedToday} // '') =~ /^[1-9]/ },
    30);
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

my $shots = $t->dir . '/screenshots';
make_path($shots);
call('screenshot', path => "$shots/dashboard.png", width => 1280,
    height => 900);
call('screenshot', path => "$shots/dashboard-phone.png", width => 390,
    height => 844, fullPage => 1);
ok(-s "$shots/dashboard.png" && -s "$shots/dashboard-phone.png",
    'screenshots in the test folder');
if (my $docs = $ENV{TEST_DOCS_SCREENSHOT}) {
    copy("$shots/dashboard.png", $docs) or diag("copy to $docs: $!");
}

$s = call('summary');
is_deeply($s->{pageErrors}, [], 'no page errors');
# a violation reads "Refused to load ... Content Security Policy"; a
# reconnect while nginx restarts may log net::ERR_CONNECTION_REFUSED
is_deeply([ grep { /Content.Security.Policy|\bRefused to / }
    @{ $s->{console} } ], [], 'no Content-Security-Policy violations');

# sign out

call('click', selector => '#signout');
$s = call('summary');
ok($s->{signin} && !$s->{board}, 'signed out: the form again');
ok(!(grep { $_ eq 'activity.token' } @{ $s->{stored} }),
    'signed out: the token is gone from sessionStorage');


# --- load older: the history API --------------------------------------------

# through nginx: the module checks the token, the worker answers

sub api_get {
    my ($path, $tok) = @_;
    return $t->http(GET => "/dashboard/api/$path",
        headers => { defined $tok ? (Authorization => "Bearer $tok") : () });
}

is(api_get('events?limit=1')->{status}, 401, 'history API: no token 401');
is(api_get('events?limit=1', $forged)->{status}, 401,
    'history API: forged token 401');
is(api_get('events?limit=1', $no_role)->{status}, 403,
    'history API: no admin role 403');
$r = api_get('events?limit=1', $token);
is($r->{status}, 200, 'history API: the admin token 200');
my $page = eval { from_json($r->{content}) } // {};
ok(ref $page->{events} eq 'ARRAY' && @{ $page->{events} } == 1
    && defined $page->{nextCursor}, 'one event and a next cursor')
    or diag($r->{content});
is(api_get('metrics', $token)->{status}, 404,
    'only the API is proxied, not /metrics');

# 120 requests while signed out: the snapshot on sign-in holds at most 50
# events, the others only the history API has

my @hist = map { sprintf 'hist-%03d', $_ } 1 .. 120;
my $bad = grep { get("/api/history/$_", $_)->{status} != 200 } @hist;
is($bad, 0, '120 tracked requests');
ok(wait_for(sub {
    $t->row_count(q{user_id LIKE 'hist-%'}) == 120
        && !$t->redis->llen('activity:events')
}, 20), 'all 120 stored');

my %stored = map { $_->[0] => 1 }
    @{ $t->dbh->selectall_arrayref('SELECT id::text FROM activity_logs') };
my $nstored = keys %stored;

call('signin', token => $token);
$s = page_until(sub { $_->{state} eq 'connected' && @{ $_->{rows} } }, 10);
is($s->{state}, 'connected', 'signed in again') or diag(explain($s));
is($s->{older}{button}, 'Load older', 'a "Load older" button');
cmp_ok(scalar @{ $s->{rows} }, '<', $nstored,
    sprintf('the snapshot shows %d of the %d stored events',
        scalar @{ $s->{rows} }, $nstored));

# click until it says nothing is older; each click adds rows

my ($clicks, $stuck) = (0, 0);
my $t1 = time;
while ($clicks < 10) {
    my $n = @{ $s->{rows} };
    call('click', selector => '#older-btn');
    $clicks++;
    $s = page_until(sub { $_->{older}{state} ne 'loading' }, 15);
    last if $s->{older}{state} ne 'idle';
    $stuck++ unless @{ $s->{rows} } > $n;
}
is($s->{older}{state}, 'done', "nothing older after $clicks clicks"
    . sprintf(' (%.2f s)', time - $t1)) or diag(explain($s->{older}));
like($s->{older}{text}, qr/nothing older/, 'it says so');
ok(!defined $s->{older}{button}, 'and the button is gone');
is($stuck, 0, 'every click added rows');
cmp_ok($clicks, '>=', 2, 'more than one click was needed');

my (%count, %user);
$count{ $_->{id} }++ for @{ $s->{rows} };
$user{ $_->{user} }++ for @{ $s->{rows} };
is(scalar(grep { $count{$_} != 1 } keys %count), 0,
    'no event twice in the feed');
is_deeply([ sort keys %count ], [ sort keys %stored ],
    "every stored event in the feed ($nstored)");
is(scalar(grep { ($user{$_} // 0) != 1 } @hist), 0,
    "each of the 120 requests' events exactly once");

my @rows = @{ $s->{rows} };
my $first_older = (grep { $rows[$_]{older} } 0 .. $#rows)[0] // @rows;
ok(!(grep { !$_->{older} } @rows[ $first_older .. $#rows ]),
    'older rows below the live ones');
my @ts = map { $_->{ts} } grep { $_->{older} } @rows;
ok(!(grep { $ts[$_] gt $ts[ $_ - 1 ] } 1 .. $#ts),
    'older rows newest first');
my ($hrow) = grep { $_->{user} eq 'hist-001' } @rows;
is($hrow && $hrow->{req}, 'GET/api/history/hist-001',
    'an older row: method and endpoint');
is($hrow && $hrow->{status}, '200', 'an older row: status');

my @reqs = @{ call('requests', match => '/dashboard/api/') };
ok(@reqs && !(grep { !$_->{authorization} } @reqs),
    'every API request carries an Authorization header');
ok(!(grep { $_->{url} =~ /ey[A-Za-z0-9_-]{10}/ } @reqs),
    'the token is never in the URL');
ok(!(grep { $_->{url} !~ /[?&]limit=50\b/ } @reqs), 'pages of 50');

# the type filter: older rows follow it (type=)

call('select', selector => '#filter', value => 'PRODUCT_CREATED');
$s = call('summary');
ok(!(grep { $_->{older} } @{ $s->{rows} }),
    'a new filter drops the older rows');
is($s->{older}{button}, 'Load older', 'and offers to load them again');
my $nreq = @reqs;
call('click', selector => '#older-btn');
$s = page_until(sub { $_->{older}{state} eq 'done' }, 15);
is($s->{older}{state}, 'done', 'filtered: nothing older')
    or diag(explain($s->{older}));
@reqs = @{ call('requests', match => '/dashboard/api/') };
ok(@reqs > $nreq && !(grep { $_->{url} !~ /[?&]type=PRODUCT_CREATED\b/ }
    @reqs[ $nreq .. $#reqs ]), 'fetched with type=PRODUCT_CREATED');
ok(!(grep { $_->{older} && $_->{type} ne 'PRODUCT_CREATED' }
    @{ $s->{rows} }), 'older rows of that type only');
call('select', selector => '#filter', value => '');

# an error: a message and a retry; the retry works

my $API = '**/dashboard/api/**';
call('route', pattern => $API, status => 503,
    body => '{"error":"database unavailable"}');
call('click', selector => '#older-btn');
$s = page_until(sub { $_->{older}{state} eq 'error' }, 10);
like($s->{older}{text}, qr/Could not load older events: HTTP 503/,
    'a failed page: the error') or diag(explain($s->{older}));
is($s->{older}{button}, 'Retry', 'and a retry button');
call('unroute', pattern => $API);
call('click', selector => '#older-btn');
$s = page_until(sub { $_->{older}{state} !~ /^(error|loading)$/ }, 15);
# more than 100 events, 50 of them live: a page is left after this one
ok($s->{older}{state} eq 'idle' && (grep { $_->{older} } @{ $s->{rows} }),
    'retry: older rows again') or diag(explain($s->{older}));
is($s->{older}{button}, 'Load older', 'and "Load older" again');

# a refused token: the sign-in form with the reason

call('route', pattern => $API, status => 401, body => '');
call('click', selector => '#older-btn');
$s = page_until(sub { $_->{signin} }, 10);
ok($s->{signin} && !$s->{board}, 'API refuses the token: signed out');
like($s->{error} // '', qr/refused the token/, 'with the reason');
ok(!(grep { $_ eq 'activity.token' } @{ $s->{stored} }),
    'and the token is gone');
call('unroute', pattern => $API);

is_deeply($s->{pageErrors}, [], 'no page errors');
is_deeply([ grep { /Content.Security.Policy|Refused to/i }
    @{ $s->{console} } ], [], 'no Content-Security-Policy violations');

$b->finish(30);

$t->done;
