#!/usr/bin/perl

# activity_auth_jwt: 401 without a token (WWW-Authenticate: Bearer), 401
# with a bad one (Bearer error="invalid_token"), 403 without the role,
# the content otherwise, for HS256, RS256 and ES256 keys; exp/nbf with
# 5 s leeway (activity_jwt_leeway), exp required unless
# activity_jwt_require_exp off; role from "role" or "roles"; $activity_jwt_sub and
# $activity_jwt_role; "off" in a nested location; inheritance from the
# server level; a proxied location; refusals logged without the token;
# a location without a key refused by nginx -t.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 qw(encode_base64);
use Test::More;
use ActivityTest qw(wait_for jwt_hs256 jwt_hmac jwt_unsigned b64url
    to_json);

my $t = ActivityTest->new(needs => [qw(module redis)]);
my $d = $t->dir;

for my $cmd (
    [ qw(openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048
        -out), "$d/rsa.key" ],
    [ qw(openssl pkey -pubout -in), "$d/rsa.key", '-out', "$d/rsa.pub" ],
    [ qw(openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256
        -out), "$d/ec.key" ],
    [ qw(openssl pkey -pubout -in), "$d/ec.key", '-out', "$d/ec.pub" ],
) {
    my ($rc, $out) = $t->run_cmd(@$cmd);
    BAIL_OUT("@$cmd: $out") if $rc;
}

mkdir "$d/html" or die "mkdir: $!";
for my $f (qw(index.html page.html)) {
    open my $fh, '>', "$d/html/$f" or die "$f: $!";
    print $fh "content of $f\n";
}

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        activity_jwt_secret "access-secret";

        add_header X-Sub $activity_jwt_sub always;
        add_header X-Role $activity_jwt_role always;

        location /any/ {
            activity_auth_jwt;
            alias %%TESTDIR%%/html/;
        }

        location /admin/ {
            activity_auth_jwt role=admin;
            alias %%TESTDIR%%/html/;

            location /admin/public/ {
                activity_auth_jwt off;
                alias %%TESTDIR%%/html/;
            }
        }

        location /proxied/ {
            activity_auth_jwt role=admin;
            proxy_set_header X-Jwt-Sub $activity_jwt_sub;
            proxy_set_header X-Jwt-Role $activity_jwt_role;
            proxy_pass http://127.0.0.1:%%PORT_backend%%/;
        }

        location = /returned {
            activity_auth_jwt role=admin;
            return 200 "return answers before the access phase\n";
        }

        location /open/ {
            alias %%TESTDIR%%/html/;
        }

        location /noexp/ {
            activity_auth_jwt role=admin;
            activity_jwt_require_exp off;
            alias %%TESTDIR%%/html/;
        }

        location /lenient/ {
            activity_auth_jwt role=admin;
            activity_jwt_leeway 2m;
            alias %%TESTDIR%%/html/;
        }
    }

    # activity_auth_jwt on the server level, inherited
    server {
        listen 127.0.0.1:%%PORT_inherit%%;
        server_name localhost;

        activity_jwt_secret "access-secret";
        activity_auth_jwt role=ops;

        location / {
            root %%TESTDIR%%/html;
        }

        location /free/ {
            activity_auth_jwt off;
            alias %%TESTDIR%%/html/;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_rs%%;
        server_name localhost;

        activity_jwt_key %%TESTDIR%%/rsa.pub RS256;

        location / {
            activity_auth_jwt role=admin;
            add_header X-Sub $activity_jwt_sub;
            root %%TESTDIR%%/html;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_es%%;
        server_name localhost;

        activity_jwt_key %%TESTDIR%%/ec.pub ES256;

        location / {
            activity_auth_jwt role=admin;
            add_header X-Sub $activity_jwt_sub;
            root %%TESTDIR%%/html;
        }
    }

    server {
        listen 127.0.0.1:%%PORT_backend%%;
        server_name localhost;

        location / {
            return 200 "sub=$http_x_jwt_sub role=$http_x_jwt_role\n";
        }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $secret = 'access-secret';
my %port = map { $_ => $t->port($_) } qw(http inherit rs es);

# --- tokens --------------------------------------------------------------

sub slurp_raw {
    my ($f) = @_;
    open my $fh, '<:raw', $f or die "$f: $!";
    local $/;
    return <$fh>;
}

# An ECDSA DER signature (SEQUENCE of INTEGER r, s) as JOSE's r || s.
sub der_to_jose {
    my ($der, $size) = @_;
    my @b = unpack 'C*', $der;
    my $i = 2;
    $i++ if $b[1] & 0x80;    # long form length (not for P-256)
    my @ints;
    for (1 .. 2) {
        die 'not an INTEGER' unless $b[$i++] == 0x02;
        my $len = $b[$i++];
        my $v = pack 'C*', @b[$i .. $i + $len - 1];
        $i += $len;
        $v =~ s/^\x00+//;
        push @ints, ("\x00" x ($size - length $v)) . $v;
    }
    return join '', @ints;
}

# RS256 or ES256, signed with the test's private key.
sub jwt_pk {
    my ($alg, $claims) = @_;
    my $input = b64url(to_json({ alg => $alg, typ => 'JWT' })) . '.'
        . b64url(to_json($claims));
    open my $fh, '>', "$d/input" or die "$d/input: $!";
    print $fh $input;
    close $fh;
    my $key = $alg eq 'RS256' ? "$d/rsa.key" : "$d/ec.key";
    my ($rc, $out) = $t->run_cmd('openssl', 'dgst', '-sha256', '-sign',
        $key, '-out', "$d/sig", "$d/input");
    die "openssl dgst: $out" if $rc;
    my $sig = slurp_raw("$d/sig");
    $sig = der_to_jose($sig, 32) if $alg eq 'ES256';
    return $input . '.' . b64url($sig);
}

my $pub = slurp_raw("$d/rsa.pub");
my $now = time;
my %admin = (sub => 'alice', role => 'admin', exp => $now + 600);

sub hs { jwt_hs256($secret, { @_ }) }

# --- the cases -----------------------------------------------------------

# [ name, port, path, token (undef: none), status, sub, role ]
# for 401: sub is the expected WWW-Authenticate value
my $bearer = 'Bearer';
my $invalid = 'Bearer error="invalid_token"';

my @cases = (
    # no or malformed token
    [ 'no token', 'http', '/admin/', undef, 401, $bearer ],
    [ 'no token, any role', 'http', '/any/', undef, 401, $bearer ],
    [ 'Basic credentials are no token', 'http', '/admin/',
        \'Basic YWxpY2U6c2VjcmV0', 401, $bearer ],
    [ 'empty Bearer', 'http', '/admin/', \'Bearer ', 401, $bearer ],
    [ 'garbage', 'http', '/admin/', 'garbage', 401, $invalid ],
    [ 'three dots of garbage', 'http', '/admin/', 'not.a.token', 401,
        $invalid ],
    [ 'truncated signature', 'http', '/admin/',
        substr(hs(%admin), 0, -5), 401, $invalid ],

    # signature and algorithm
    [ 'bad signature', 'http', '/admin/',
        jwt_hs256('not-the-secret', \%admin), 401, $invalid ],
    [ 'alg none', 'http', '/admin/', jwt_unsigned(\%admin), 401, $invalid ],
    [ 'HS384 with the right secret', 'http', '/admin/',
        jwt_hmac('HS384', $secret, \%admin), 401, $invalid ],
    [ 'HS512 with the right secret', 'http', '/admin/',
        jwt_hmac('HS512', $secret, \%admin), 401, $invalid ],
    [ 'RS256 token on the HS256 server', 'http', '/admin/',
        jwt_pk('RS256', \%admin), 401, $invalid ],
    [ 'HS256 signed with the RS256 public key', 'rs', '/',
        jwt_hmac('HS256', $pub, \%admin), 401, $invalid ],
    [ 'ES256 token on the RS256 server', 'rs', '/',
        jwt_pk('ES256', \%admin), 401, $invalid ],
    [ 'RS256 token on the ES256 server', 'es', '/',
        jwt_pk('RS256', \%admin), 401, $invalid ],
    [ 'alg none on the RS256 server', 'rs', '/', jwt_unsigned(\%admin),
        401, $invalid ],

    # validity window, 5 s leeway; a token made when its request is sent
    # (a code ref) has 4 s of margin
    [ 'expired a minute ago', 'http', '/admin/',
        hs(%admin, exp => $now - 60), 401, $invalid ],
    [ 'expired a second ago, within the leeway', 'http', '/admin/',
        sub { hs(%admin, exp => int(time) - 1) }, 200, 'alice', 'admin' ],
    [ 'not valid for a minute', 'http', '/admin/',
        hs(%admin, nbf => $now + 60), 401, $invalid ],
    [ 'valid in 2 s, within the leeway', 'http', '/admin/',
        sub { hs(%admin, nbf => int(time) + 2) }, 200, 'alice', 'admin' ],
    [ 'no exp: refused', 'http', '/admin/',
        hs(sub => 'alice', role => 'admin'), 401, $invalid ],
    [ 'no exp, with activity_jwt_require_exp off', 'http', '/noexp/',
        hs(sub => 'alice', role => 'admin'), 200, 'alice', 'admin' ],
    [ 'RS256 no exp: refused', 'rs', '/', jwt_pk('RS256',
        { sub => 'alice', role => 'admin' }), 401, $invalid ],
    [ 'expired a minute ago, activity_jwt_leeway 2m', 'http', '/lenient/',
        hs(%admin, exp => $now - 60), 200, 'alice', 'admin' ],
    [ 'expired 3 minutes ago, activity_jwt_leeway 2m', 'http',
        '/lenient/', hs(%admin, exp => $now - 180), 401, $invalid ],

    # roles
    [ 'role viewer', 'http', '/admin/', hs(%admin, role => 'viewer'), 403 ],
    [ 'no role claim', 'http', '/admin/', hs(sub => 'alice',
        exp => $now + 600), 403 ],
    [ 'roles without admin', 'http', '/admin/', hs(sub => 'alice',
        exp => $now + 600, roles => ['viewer', 'ops']), 403 ],
    [ 'role admins is not admin', 'http', '/admin/',
        hs(%admin, role => 'admins'), 403 ],
    [ 'roles containing admin', 'http', '/admin/', hs(sub => 'alice',
        exp => $now + 600, roles => ['viewer', 'admin']), 200, 'alice',
        'viewer,admin' ],
    [ 'no role needed', 'http', '/any/', hs(sub => 'bob',
        exp => $now + 600), 200, 'bob', '' ],
    [ 'numeric sub', 'http', '/any/', hs(sub => 42, role => 'x',
        exp => $now + 600), 200, '42', 'x' ],
    [ 'admin', 'http', '/admin/page.html', hs(%admin), 200, 'alice',
        'admin' ],

    # public keys
    [ 'RS256 admin', 'rs', '/', jwt_pk('RS256', \%admin), 200, 'alice' ],
    [ 'RS256 viewer', 'rs', '/', jwt_pk('RS256', { %admin,
        role => 'viewer' }), 403 ],
    [ 'RS256 expired', 'rs', '/', jwt_pk('RS256', { %admin,
        exp => $now - 60 }), 401, $invalid ],
    [ 'RS256 no token', 'rs', '/', undef, 401, $bearer ],
    [ 'ES256 admin', 'es', '/', jwt_pk('ES256', \%admin), 200, 'alice' ],
    [ 'ES256 roles containing admin', 'es', '/', jwt_pk('ES256', {
        sub => 'alice', exp => $now + 600, roles => ['admin'] }), 200,
        'alice' ],
    [ 'ES256 viewer', 'es', '/', jwt_pk('ES256', { %admin,
        role => 'viewer' }), 403 ],
    [ 'ES256 bad signature', 'es', '/', do {
        my $tk = jwt_pk('ES256', \%admin);
        my $other = jwt_pk('ES256', { %admin, sub => 'mallory' });
        join '.', (split /\./, $other)[0, 1], (split /\./, $tk)[2];
    }, 401, $invalid ],

    # off, inheritance
    [ 'off in a nested location', 'http', '/admin/public/', undef, 200 ],
    [ 'no directive, no check', 'http', '/open/', undef, 200 ],
    [ 'inherited from the server: no token', 'inherit', '/', undef, 401,
        $bearer ],
    [ 'inherited from the server: role admin is not ops', 'inherit', '/',
        hs(%admin), 403 ],
    [ 'inherited from the server: role ops', 'inherit', '/',
        hs(%admin, role => 'ops'), 200 ],
    [ 'inherited, then off', 'inherit', '/free/', undef, 200 ],
);

my @tokens = grep { defined && !ref } map { $_->[3] } @cases;

for my $c (@cases) {
    my ($name, $port, $path, $token, $status, $sub, $role) = @$c;
    if (ref $token eq 'CODE') {
        $token = $token->();
        push @tokens, $token;
    }
    my %h;
    if (ref $token) {
        $h{Authorization} = $$token;
    } elsif (defined $token) {
        $h{Authorization} = "Bearer $token";
    }
    my $r = $t->http(GET => $path, port => $port{$port}, headers => \%h);
    is($r->{status}, $status, "$name: $status")
        or diag($r->{content});

    if ($status == 401) {
        is($r->{headers}{'www-authenticate'}, $sub,
            "$name: WWW-Authenticate: $sub");
    } elsif ($status == 403) {
        ok(!defined $r->{headers}{'www-authenticate'},
            "$name: no WWW-Authenticate on 403");
    } elsif ($status == 200) {
        like($r->{content}, qr/^content of /, "$name: the content");
        is($r->{headers}{'x-sub'}, $sub, "$name: \$activity_jwt_sub")
            if defined $sub;
        is($r->{headers}{'x-role'} // '', $role,
            "$name: \$activity_jwt_role") if defined $role;
    }
}

# variables without a token are empty, not an error
my $r = $t->http(GET => '/open/');
is($r->{headers}{'x-sub'} // '', '', 'no token: $activity_jwt_sub empty');

# --- proxy_pass: the variables reach the upstream -------------------------

$r = $t->http(GET => '/proxied/', headers => {
    Authorization => 'Bearer ' . hs(sub => 'carol', exp => $now + 600,
        roles => ['admin', 'ops']) });
is($r->{status}, 200, 'proxied: 200');
is($r->{content}, "sub=carol role=admin,ops\n",
    'proxied: sub and roles passed upstream');
is($t->http(GET => '/proxied/')->{status}, 401, 'proxied: no token 401');
is($t->http(GET => '/proxied/', headers => {
    Authorization => 'Bearer ' . hs(%admin, role => 'x') })->{status}, 403,
    'proxied: wrong role 403');

# --- return runs first (documented) ---------------------------------------

is($t->http(GET => '/returned')->{status}, 200,
    'return answers in the rewrite phase, before the check (documented)');

# --- the error log -------------------------------------------------------

my $log = do {
    open my $fh, '<', $t->error_log or die "error log: $!";
    local $/;
    <$fh>;
};
for my $reason ('no token', 'invalid token', 'wrong algorithm',
    'token expired', 'token not yet valid', 'missing role',
    'token without exp')
{
    like($log, qr/\[info\].*activity: access refused: \Q$reason\E/,
        "refusal logged at info: $reason");
}
my @leaked = grep { index($log, (split /\./, $_)[-1] // $_) >= 0 }
    grep { length > 20 } @tokens;
is(scalar @leaked, 0, 'no token signature in the error log');

# --- configuration -------------------------------------------------------

my $conf = <<'EOF';
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%
    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    server {
        listen 127.0.0.1:%%PORT_conf%%;
        location / { LOCATION }
    }
}
EOF

for my $c (
    [ 'activity_auth_jwt; root /tmp;', qr/needs a key/,
        'without a key' ],
    [ 'activity_jwt_secret s; activity_auth_jwt admin;',
        qr/invalid parameter "admin"/, 'a parameter other than role=' ],
    [ 'activity_jwt_secret s; activity_auth_jwt role=;',
        qr/invalid parameter "role="/, 'an empty role' ],
    [ 'activity_jwt_secret s; activity_auth_jwt; activity_auth_jwt;',
        qr/is duplicate/, 'twice' ],
    [ 'activity_jwt_leeway soon;',
        qr/"activity_jwt_leeway" directive invalid value/,
        'activity_jwt_leeway that is not a time' ],
    [ 'activity_jwt_leeway 2d;',
        qr/"activity_jwt_leeway" must be at most 1d/,
        'activity_jwt_leeway over a day' ],
    [ 'activity_jwt_require_exp maybe;',
        qr/invalid value "maybe" in "activity_jwt_require_exp"/,
        'activity_jwt_require_exp that is not on or off' ],
) {
    my ($loc, $re, $name) = @$c;
    (my $text = $conf) =~ s/LOCATION/$loc/;
    my ($rc, $out) = $t->nginx_test($text);
    ok($rc != 0, "nginx -t refuses activity_auth_jwt $name");
    like($out, $re, "  and says why ($name)");
}

(my $text = $conf) =~ s/LOCATION/activity_jwt_secret s;
        activity_auth_jwt role=service; root \/tmp;/;
my ($rc, $out) = $t->nginx_test($text);
is($rc, 0, 'nginx -t accepts activity_auth_jwt role=service')
    or diag($out);

$t->done;
