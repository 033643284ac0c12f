#!/usr/bin/perl

# userId: the sub claim of a bearer JWT that verifies (HS256 with
# activity_jwt_secret, with an exp, not expired beyond
# activity_jwt_leeway), else null; activity_user overrides it. The
# basic-auth user ($remote_user) is only taken when activity_user says
# so: without auth_basic nothing checked it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use MIME::Base64 qw(encode_base64);
use ActivityTest qw(wait_for jwt_hs256 jwt_unsigned);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF2');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "user-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        activity_track on;

        location / {
            return 200;
        }

        location /other/ {
            activity_jwt_secret "other-secret";
            return 200;
        }

        location /explicit/ {
            activity_user $http_x_uid;
            return 200;
        }

        location /basic/ {
            activity_user $remote_user;
            return 200;
        }

        location /noexp/ {
            activity_jwt_require_exp off;
            return 200;
        }

        location /lenient/ {
            activity_jwt_leeway 2m;
            return 200;
        }

        location /strict/ {
            activity_jwt_leeway 0;
            return 200;
        }
    }
}
EOF2

$t->redis_start;
$t->nginx_start;

my $n = 0;

# userId of the event made by one request.
sub user_of {
    my ($path, %headers) = @_;
    $t->redis->del('activity:events');
    my $tag = ++$n;
    my $res = $t->http(GET => "$path$tag", headers => \%headers);
    return "HTTP $res->{status}" unless $res->{status} == 200;
    my $e = wait_for(sub {
        (grep { ($_->{metadata}{endpoint} // '') eq "$path$tag" }
            $t->queued_events)[0];
    }, 10);
    return 'no event' unless $e;
    return exists $e->{userId} ? $e->{userId} // 'null' : 'missing';
}

sub bearer { (Authorization => "Bearer $_[0]") }

my $now = time;
my $good = jwt_hs256('user-secret', { sub => '42', exp => $now + 600 });

is(user_of('/a', bearer($good)), '42', 'sub of a valid token');
my $noexp = jwt_hs256('user-secret', { sub => 'alice' });
is(user_of('/a', bearer($noexp)), 'null',
    'a token without exp: refused by default');
is(user_of('/noexp/', bearer($noexp)), 'alice',
    'taken with activity_jwt_require_exp off');
is(user_of('/a', bearer(jwt_hs256('user-secret',
    { sub => 7, exp => $now + 600 }))), '7',
    'a numeric sub becomes a string');
is(user_of('/a'), 'null', 'no token, no user: null');
is(user_of('/a', bearer(jwt_hs256('wrong-secret',
    { sub => '42', exp => $now + 600 }))), 'null', 'wrong secret: null');
is(user_of('/a', bearer(jwt_hs256('user-secret',
    { sub => '42', exp => $now - 60 }))), 'null', 'expired: null');

my $just = jwt_hs256('user-secret', { sub => 'just', exp => $now - 2 });
is(user_of('/a', bearer($just)), 'just',
    'expired 2 s ago: within the default leeway (5 s)');
is(user_of('/strict/', bearer($just)), 'null',
    'but not with activity_jwt_leeway 0');
is(user_of('/lenient/', bearer(jwt_hs256('user-secret',
    { sub => 'late', exp => $now - 60 }))), 'late',
    'expired a minute ago: within activity_jwt_leeway 2m');
is(user_of('/lenient/', bearer(jwt_hs256('user-secret',
    { sub => 'early', exp => $now + 600, nbf => $now + 60 }))), 'early',
    'the leeway applies to nbf too');
is(user_of('/a', bearer(jwt_unsigned({ sub => '42' }))), 'null',
    'alg none: null');
is(user_of('/a', bearer(jwt_hs256('user-secret',
    { sub => '42', exp => $now + 600 }, { alg => 'HS512' }))), 'null',
    'another alg in the header: null');
is(user_of('/a', bearer('not.a.token')), 'null', 'garbage token: null');
is(user_of('/a', bearer(substr($good, 0, -2))), 'null',
    'truncated signature: null');

is(user_of('/other/', bearer($good)), 'null',
    'location secret overrides the http one');
is(user_of('/other/', bearer(jwt_hs256('other-secret',
    { sub => '9', exp => $now + 600 }))), '9',
    'token for the location secret');

# curl -u victim:x: nothing checked that password
my $basic = 'Basic ' . encode_base64('victim:x', '');
is(user_of('/a', Authorization => $basic), 'null',
    'an unchecked basic-auth user is not taken by default');
is(user_of('/basic/', Authorization => $basic), 'victim',
    'activity_user $remote_user takes it');

is(user_of('/explicit/', bearer($good), 'X-Uid' => 'carol'), 'carol',
    'activity_user overrides the token');

$t->done;
