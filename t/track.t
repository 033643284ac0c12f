#!/usr/bin/perl

# activity_track: inherited from http to server to location, switched off
# where asked, one event per client request (internal redirects, rewrites
# and subrequests add none), endpoint as the client asked for it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_track on;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location / {
            return 200;
        }

        location /off/ {
            activity_track off;
            return 200;
        }

        location /nested/ {
            location /nested/in/ {
                return 200;
            }
            return 200;
        }

        location = /redirect {
            error_page 404 = /target;
            return 404;
        }

        location = /rewrite {
            rewrite ^ /target last;
        }

        location = /target {
            return 200;
        }

        location = /auth-main {
            auth_request /auth;
            return 200;
        }

        location = /auth {
            return 204;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_B%%;
        server_name localhost;

        activity_track off;

        location / {
            return 200;
        }

        location /on/ {
            activity_track on;
            return 200;
        }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $b = 'http://127.0.0.1:' . $t->port('B');

for my $path (qw(/ /off/x /nested/in/x /redirect?a=1 /rewrite /auth-main)) {
    is($t->http(GET => $path)->{status}, 200, "GET $path");
}
is($t->ua->get("$b/")->{status}, 200, 'GET / on the untracked server');
is($t->ua->get("$b/on/x")->{status}, 200, 'GET /on/x there');
is($t->http(GET => '/marker')->{status}, 200, 'GET /marker');

ok(wait_for(sub {
    grep { ($_->{metadata}{endpoint} // '') eq '/marker' } $t->queued_events
}, 15), 'marker queued');

my @got = map { "$_->{metadata}{endpoint} $_->{metadata}{status}" }
    $t->queued_events;

is_deeply(\@got, [
    '/ 200',
    '/nested/in/x 200',
    '/redirect 200',
    '/rewrite 200',
    '/auth-main 200',
    '/on/x 200',
    '/marker 200',
], 'one event per tracked client request, none for activity_track off');

$t->done;
