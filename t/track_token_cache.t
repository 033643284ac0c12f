#!/usr/bin/perl

# userId from a bearer token that an nginx worker process has already
# verified (and remembers, so as not to verify it on every request): a
# remembered token is only honoured with the key and settings it was
# verified under, while its exp/nbf still hold for the location asking,
# and byte for byte the same token.  One nginx worker process, so every
# request after the first meets the remembered token.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for jwt_hs256 b64url);

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

        location /same/ {
            activity_jwt_secret "user-secret";
            return 200;
        }

        location /noexp/ {
            activity_jwt_require_exp off;
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

is(user_of('/a', bearer($good)), '42', 'a valid token');
is(user_of('/a', bearer($good)), '42', 'the same token again');

# the key is part of what is remembered
is(user_of('/other/', bearer($good)), 'null',
    'remembered under one secret, not honoured under another');
my $other = jwt_hs256('other-secret', { sub => '9', exp => $now + 600 });
is(user_of('/other/', bearer($other)), '9', 'token of the other secret');
is(user_of('/a', bearer($other)), 'null',
    'and that one is not honoured under the first secret');
is(user_of('/same/', bearer($good)), '42',
    'the same secret set again in a location: verified there too');

# a token is remembered byte for byte
my ($h, $p, $s) = split /\./, $good;
my $forged = b64url('{"sub":"666","exp":' . ($now + 600) . '}');
is(user_of('/a', bearer("$h.$forged.$s")), 'null',
    'another payload with the remembered signature');
my $flip = substr($s, 0, -1) . (substr($s, -1) eq 'A' ? 'B' : 'A');
is(user_of('/a', bearer("$h.$p.$flip")), 'null',
    'the remembered token with its last character changed');
is(user_of('/a', bearer("${good}x")), 'null',
    'the remembered token with a character appended');
is(user_of('/a', bearer(substr($good, 0, -1))), 'null',
    'the remembered token less its last character');
is(user_of('/a', bearer($good)), '42', 'the original is still honoured');

# settings are part of what is remembered: no exp is only fine where
# activity_jwt_require_exp is off
my $noexp = jwt_hs256('user-secret', { sub => 'alice' });
is(user_of('/noexp/', bearer($noexp)), 'alice',
    'a token without exp, with activity_jwt_require_exp off');
is(user_of('/a', bearer($noexp)), 'null',
    'not honoured where exp is required');

# the times are checked again at every use, with the leeway of the
# location asking
my $just = jwt_hs256('user-secret', { sub => 'just', exp => $now - 2 });
is(user_of('/a', bearer($just)), 'just',
    'expired 2 s ago: within the default leeway (5 s)');
is(user_of('/strict/', bearer($just)), 'null',
    'remembered, but not honoured with activity_jwt_leeway 0');
my $early = jwt_hs256('user-secret',
    { sub => 'early', exp => $now + 600, nbf => $now + 3 });
is(user_of('/a', bearer($early)), 'early',
    'valid 3 s from now: within the default leeway');
is(user_of('/strict/', bearer($early)), 'null',
    'remembered, but not yet valid with activity_jwt_leeway 0');

my $exp = time + 4;
my $soon = jwt_hs256('user-secret', { sub => 'soon', exp => $exp });
is(user_of('/strict/', bearer($soon)), 'soon', 'a token about to expire');
is(user_of('/strict/', bearer($soon)), 'soon', 'used again: remembered');
wait_for(sub { time >= $exp + 1 }, 30, 0.2);
is(user_of('/strict/', bearer($soon)), 'null',
    'once expired it is not honoured, remembered or not');
is(user_of('/strict/', bearer($soon)), 'null', 'nor the next time');

$t->done;
