#!/usr/bin/perl

# `make run` (scripts/stack) from a checkout under a folder only root can
# enter, the way a clone under /root is: the stack starts (PostgreSQL as
# postgres, nginx's workers as nobody), its state goes to
# /var/tmp/nginx-activity-<hash> with .run in the checkout leading there,
# the front door's / leads to the dashboard, the page, its vendored
# socket.io-client and the front door answer, a tracked request reaches
# PostgreSQL and the history API through nginx, and `scripts/stack stop`
# stops every process it started.
#
# The checkout is a copy of what the stack uses (scripts/, conf/, sql/,
# web/ and the build in build/), made in a 0700 folder inside the test
# folder; the stack's ports are free ones (ACTIVITY_*_PORT). It runs the
# regular build (build/), also under make test-asan: the stack does not
# preload the sanitizer runtime into nginx.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Path qw(make_path rmtree);
use HTTP::Tiny;
use Test::More;
use ActivityTest qw(wait_for from_json);

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);
my $ROOT = ActivityTest->root;

for my $f ("$ROOT/build/ngx_http_activity_module.so",
           "$ROOT/build/activity-worker",
           "$ROOT/web/node_modules/socket.io-client/dist/socket.io.min.js")
{
    BAIL_OUT("missing: $f; run make") unless -f $f;
}

# the clone: a checkout under a parent that only root can enter
my $private = $t->dir . '/private';
my $clone = "$private/nginx-activity";
make_path("$clone/build");
chmod 0700, $private or die "chmod $private: $!";
my ($rc, $out) = $t->run_cmd('sh', '-c', '
    set -e
    tar -C "$1" --exclude=./web/node_modules -cf - scripts conf sql web \
        | tar -C "$2" -xf -
    mkdir -p "$2/web/node_modules/socket.io-client"
    cp -r "$1/web/node_modules/socket.io-client/dist" \
        "$2/web/node_modules/socket.io-client/"
    cp "$1/build/ngx_http_activity_module.so" "$1/build/activity-worker" \
        "$2/build/"', 'clone', $ROOT, $clone);
is($rc, 0, 'copied the checkout under a 0700 folder') or diag($out);

my %port = map { $_ => $t->port("stack_$_") } qw(http redis pg api);
local $ENV{ACTIVITY_HTTP_PORT} = $port{http};
local $ENV{ACTIVITY_REDIS_PORT} = $port{redis};
local $ENV{ACTIVITY_PG_PORT} = $port{pg};
local $ENV{ACTIVITY_API_PORT} = $port{api};
delete local $ENV{ACTIVITY_RUN_DIR};

my $state;
# from the checkout, as `make run` does
sub stack {
    return $t->run_cmd('sh', '-c', 'cd "$1" && exec scripts/stack "$2"',
        'stack', $clone, @_);
}

# whatever happens below, stop what the stack started and remove its
# state folder
END {
    if ($clone && -x "$clone/scripts/stack") {
        stack('stop');
        rmtree($state) if $state && $state =~ m{^/var/tmp/nginx-activity-};
    }
}

($rc, $out) = stack('start');
is($rc, 0, 'scripts/stack start from the 0700 clone') or diag($out);
unlike($out, qr/cannot reach/, 'no "cannot reach" complaint');
unlike($out, qr/Permission denied/, 'no "Permission denied" on the way');

ok(-l "$clone/.run", '.run in the checkout is a symbolic link');
$state = readlink "$clone/.run";
like($state, qr{^/var/tmp/nginx-activity-[0-9a-f]{12}$},
    '.run leads to /var/tmp/nginx-activity-<hash>');
ok(-f "$clone/.run/logs/nginx-error.log", 'logs under .run/logs/');

my ($token) = $out =~ /^Dev admin token[^\n]*:\n\s*(\S+)/m;
ok($token, 'start printed a dev admin token');
like($out, qr{http://127\.0\.0\.1:$port{http}/dashboard/},
    'start printed the dashboard URL');

my $ua = HTTP::Tiny->new(max_redirect => 0, timeout => 10);
my $base = "http://127.0.0.1:$port{http}";

my $r = $ua->get("$base/");
is($r->{status}, 302, '/ redirects');
like($r->{headers}{location} // '', qr{^(?:http://[^/]+)?/dashboard/$},
    '... to the dashboard');

$r = $ua->get("$base/dashboard/");
is($r->{status}, 200, 'the dashboard page');
my $index = do {
    local $/;
    open my $fh, '<', "$ROOT/web/index.html" or die "$!";
    <$fh>;
};
is($r->{content}, $index, '... is web/index.html');

$r = $ua->get("$base/dashboard/vendor/socket.io.min.js");
is($r->{status}, 200, "the page's socket.io-client bundle");

$r = $ua->get("$base/api/products?from=stack");
is($r->{status}, 200, 'the front door answers');

# the tracked request, through Redis, the worker and PostgreSQL, read
# back through nginx's /dashboard/api/ (activity_auth_jwt)
my $seen = wait_for {
    my $h = $ua->get("$base/dashboard/api/events?limit=50",
        { headers => { Authorization => "Bearer $token" } });
    return 0 unless $h->{status} == 200;
    my $j = eval { from_json($h->{content}) } or return 0;
    return grep { ($_->{metadata}{endpoint} // '') eq '/api/products' }
        @{ $j->{events} || [] };
} 60, 0.2;
ok($seen, 'the tracked request is in the history API');

($rc, $out) = stack('stop');
is($rc, 0, 'scripts/stack stop') or diag($out);
unlike($out, qr/Permission denied/, '... without "Permission denied"');
($rc, $out) = stack('status');
is($rc, 3, 'nothing runs after stop') or diag($out);
for my $p (sort keys %port) {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $port{$p}, Timeout => 2);
    ok(!$s, "nothing listens on the $p port");
}

done_testing;
