#!/usr/bin/perl

# activity_event: domain events by method, final status and if=;
# activity_meta details; activity_user; locations without tracking stay
# silent. Checked on the Redis queue itself (no worker runs here).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for jwt_hs256);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "rules-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location = /login {
            activity_event USER_LOGIN method=POST status=2xx;
            return 200;
        }

        location = /login/denied {
            activity_event USER_LOGIN method=POST status=2xx;
            return 401;
        }

        location = /products {
            activity_track on;
            activity_event PRODUCT_CREATED method=POST status=201;
            activity_event PRODUCT_UPDATED method=PUT,PATCH status=2xx;
            return 201;
        }

        location = /products/gone {
            activity_event PRODUCT_DELETED method=DELETE status=204|200;
            return 204;
        }

        location = /products/missing {
            activity_event PRODUCT_DELETED method=DELETE status=204|200;
            return 404;
        }

        location = /denied {
            activity_event ACCESS_DENIED status=4xx;
            return 403;
        }

        location = /maybe {
            activity_event MAYBE_EVENT if=$arg_track;
            return 200;
        }

        location = /meta {
            activity_track on;
            activity_meta ref $arg_ref;
            activity_meta agent $http_x_agent;
            return 200;
        }

        location = /as-user {
            activity_track on;
            activity_user $http_x_user_id;
            return 200;
        }

        location = /quiet {
            return 200;
        }

        location = /marker {
            activity_event TEST_MARKER;
            return 200;
        }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $marks = 0;

# Requests, then a marker event: with one nginx worker process events are
# queued in order, so once the marker is in the queue, so is everything
# before it. Returns the events before the marker and empties the queue.
sub events_of {
    my (@requests) = @_;
    for my $r (@requests) {
        my ($method, $path, %o) = @$r;
        my $res = $t->http($method => $path, %o);
        diag("$method $path: $res->{status} $res->{content}")
            if $res->{status} >= 500;
    }
    my $mark = ++$marks;
    $t->http(GET => "/marker?m=$mark");
    my $seen = wait_for(sub {
        grep { ($_->{eventType} // '') eq 'TEST_MARKER' }
            $t->queued_events;
    }, 15);
    my @events = $t->queued_events;
    $t->redis->del('activity:events');
    unless ($seen) {
        diag('marker event never reached the queue');
        return ();
    }
    return grep { ($_->{eventType} // '') ne 'TEST_MARKER' } @events;
}

sub summary {
    return [ map {
        join ' ', $_->{eventType} // '?', $_->{metadata}{method} // '?',
            $_->{metadata}{endpoint} // '?', $_->{metadata}{status} // '?'
    } @_ ];
}

# method and status

is_deeply(summary(events_of([POST => '/login'])),
    ['USER_LOGIN POST /login 200'], 'USER_LOGIN on POST 200');

is_deeply(summary(events_of([GET => '/login'], [PUT => '/login'])), [],
    'no USER_LOGIN for other methods');

is_deeply(summary(events_of([POST => '/login/denied'])), [],
    'no USER_LOGIN on 401');

is_deeply(summary(events_of(
    [POST => '/products'], [PUT => '/products'], [PATCH => '/products'],
    [GET => '/products'])),
    [
        'API_CALL POST /products 201', 'PRODUCT_CREATED POST /products 201',
        'API_CALL PUT /products 201', 'PRODUCT_UPDATED PUT /products 201',
        'API_CALL PATCH /products 201', 'PRODUCT_UPDATED PATCH /products 201',
        'API_CALL GET /products 201',
    ], 'activity_track together with rules: both events, per method');

is_deeply(summary(events_of([DELETE => '/products/gone'],
    [GET => '/products/gone'])),
    ['PRODUCT_DELETED DELETE /products/gone 204'], 'status list 204|200');

is_deeply(summary(events_of([DELETE => '/products/missing'])), [],
    'no PRODUCT_DELETED on 404');

is_deeply(summary(events_of([GET => '/denied'], [POST => '/denied'])),
    ['ACCESS_DENIED GET /denied 403', 'ACCESS_DENIED POST /denied 403'],
    'status=4xx, any method');

# if=

is_deeply(summary(events_of(
    [GET => '/maybe?track=1'], [GET => '/maybe?track=0'],
    [GET => '/maybe'], [GET => '/maybe?track='],
    [GET => '/maybe?track=yes'])),
    ['MAYBE_EVENT GET /maybe 200', 'MAYBE_EVENT GET /maybe 200'],
    'if= fires on non-empty values other than "0"');

# activity_meta

my @e = events_of([GET => '/meta?ref=newsletter',
    headers => { 'X-Agent' => 'robot "7"' }]);
is(scalar @e, 1, 'one event with meta');
is_deeply($e[0]{metadata}{details}, { ref => 'newsletter',
    agent => 'robot "7"' }, 'activity_meta details');

# activity_user

my $token = jwt_hs256('rules-secret', { sub => '42', exp => time + 600 });

@e = events_of(
    [GET => '/as-user', headers => { 'X-User-Id' => 'u-77' }],
    [GET => '/as-user', headers => { 'X-User-Id' => 'u-78',
        Authorization => "Bearer $token" }]);
is_deeply([ map { $_->{userId} } @e ], ['u-77', 'u-78'],
    'activity_user sets userId, over a bearer token');

@e = events_of([GET => '/products', headers => {
    Authorization => "Bearer $token" }]);
is($e[0]{userId}, '42', 'default userId: sub of the verified token');

# untracked locations

is_deeply(summary(events_of(map { [GET => '/quiet'] } 1 .. 5)), [],
    'a location without activity_track or rules queues nothing');

$t->done;
