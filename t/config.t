#!/usr/bin/perl

# nginx -t: every malformed activity_* directive is refused with an
# [emerg] that names the directive (and the bad value where there is one)
# and points at its line; a valid configuration using every directive in
# every context it allows passes.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest;

my $t = ActivityTest->new(needs => [qw(module)]);

# A configuration with %%HTTP%%, %%SERVER%% and %%LOCATION%% slots.
my $skeleton = <<'EOF';
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%
    %%HTTP%%
    server {
        listen 127.0.0.1:%%PORT%%;
        %%SERVER%%
        location / {
            %%LOCATION%%
            return 200;
        }
    }
}
EOF

sub conf {
    my (%slot) = @_;
    my $c = $skeleton;
    for my $s (qw(HTTP SERVER LOCATION)) {
        my $v = $slot{ lc $s } // '';
        $c =~ s/%%$s%%/$v/;
    }
    return $c;
}

# keys for activity_jwt_key: RSA and EC public keys, and a file that is
# not a key
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
{
    open my $fh, '>', "$d/not-a-key.pem" or die "$d/not-a-key.pem: $!";
    print $fh "just some text, no PEM here\n";
}

my ($rc, $out) = $t->nginx_test(conf(
    http => join("\n",
        'activity_redis_url redis://:pass@127.0.0.1:6380/2;',
        'activity_queue app:events;',
        'activity_buffer_size 1m;',
        'activity_track off;',
        'activity_user $remote_user;',
        'activity_meta host $host;',
        'activity_jwt_secret "http-secret";'),
    server => join("\n",
        'activity_track on;',
        'activity_user $http_x_user;',
        'activity_meta server $server_name;',
        'activity_jwt_secret server-secret;'),
    location => join("\n",
        'activity_track on;',
        'activity_event USER_LOGIN method=POST status=2xx;',
        'activity_event PRODUCT_UPDATED method=PUT,PATCH status=200|204;',
        'activity_event ACCESS_DENIED status=4xx;',
        'activity_event CUSTOM_EVENT_2 if=$arg_track;',
        'activity_event X method=GET,HEAD,POST,PUT,PATCH,DELETE,OPTIONS'
            . ' status=201|3xx|5xx if=$cookie_t;',
        'activity_user $arg_user;',
        'activity_meta ref $arg_ref;',
        'activity_meta ua $http_user_agent;',
        'activity_jwt_secret location-secret;'),
));
is($rc, 0, 'a valid configuration with every directive passes nginx -t')
    or diag($out);

($rc, $out) = $t->nginx_test(conf(http =>
    'activity_redis_url unix:/run/redis/redis.sock;'));
is($rc, 0, 'activity_redis_url unix:/path passes') or diag($out);

($rc, $out) = $t->nginx_test(conf(http =>
    'activity_redis_url redis://127.0.0.1:6379/0;'));
is($rc, 0, 'activity_redis_url with a database passes') or diag($out);

# the dashboard directives, keys in every context
($rc, $out) = $t->nginx_test(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%
    activity_redis_url redis://127.0.0.1:6379;
    activity_jwt_secret "http-secret";
    activity_dashboard_role admin;
    activity_dashboard_ping_interval 25s;
    activity_dashboard_ping_timeout 20s;
    activity_dashboard_queue 4k;
    activity_dashboard_queue_time 5s;
    activity_dashboard_rate 1;
    activity_dashboard_max_connections 1000;
    activity_dashboard_max_pending 100;
    activity_dashboard_max_per_ip 20;
    activity_dashboard_auth_timeout 5s;
    server {
        listen 127.0.0.1:%%PORT%%;
        activity_dashboard_queue 1024m;
        activity_dashboard_rate 1000;
        location /socket.io/ {
            activity_dashboard socketio;
            activity_dashboard_role ops;
        }
        location /ws {
            activity_dashboard websocket;
            activity_dashboard_ping_interval 5s;
            activity_dashboard_ping_timeout 2s;
        }
        location /rs/ws {
            activity_jwt_key %%TESTDIR%%/rsa.pub;
            activity_dashboard websocket;
        }
        location /rs256/ws {
            activity_jwt_key %%TESTDIR%%/rsa.pub RS256;
            activity_dashboard websocket;
        }
    }
    server {
        listen 127.0.0.1:%%PORT_es%%;
        activity_jwt_key %%TESTDIR%%/ec.pub ES256;
        location /socket.io/ {
            activity_dashboard socketio;
        }
    }
}
EOF
is($rc, 0, 'a valid configuration with every dashboard directive passes')
    or diag($out);

# [ name, slot, directive text, regexes the message must match ]
my @bad = (
    [ 'activity_track value', location => 'activity_track maybe;',
        qr/activity_track/, qr/maybe/ ],
    [ 'activity_event type', location => 'activity_event login;',
        qr/activity_event/, qr/login/ ],
    [ 'activity_event type with a dash', location =>
        'activity_event USER-LOGIN;', qr/activity_event/, qr/USER-LOGIN/ ],
    [ 'activity_event method', location =>
        'activity_event USER_LOGIN method=FOO;', qr/activity_event/,
        qr/FOO/ ],
    [ 'activity_event empty method list', location =>
        'activity_event USER_LOGIN method=;', qr/activity_event/,
        qr/method/ ],
    [ 'activity_event status', location =>
        'activity_event USER_LOGIN status=2yx;', qr/activity_event/,
        qr/2yx/ ],
    [ 'activity_event unknown parameter', location =>
        'activity_event USER_LOGIN colour=red;', qr/activity_event/,
        qr/colour/ ],
    [ 'activity_event if= empty', location =>
        'activity_event USER_LOGIN if=;', qr/activity_event/, qr/if=/ ],
    [ 'activity_event if= bad variable name', location =>
        'activity_event USER_LOGIN if=$;', qr/variable/ ],
    # nginx itself reports unknown variables after parsing, without a line
    [ 'activity_event if= unknown variable', location =>
        'activity_event USER_LOGIN if=$no_such_variable_here;',
        'noline', qr/unknown.*no_such_variable_here/ ],
    [ 'activity_event without a type', location => 'activity_event;',
        qr/activity_event/ ],
    [ 'activity_event in server', server => 'activity_event USER_LOGIN;',
        qr/activity_event/ ],
    [ 'activity_event in http', http => 'activity_event USER_LOGIN;',
        qr/activity_event/ ],
    [ 'activity_redis_url scheme', http =>
        'activity_redis_url http://127.0.0.1:6379;',
        qr/activity_redis_url/, qr{http://} ],
    [ 'activity_redis_url port', http =>
        'activity_redis_url redis://127.0.0.1:99999;',
        qr/activity_redis_url/, qr/99999/ ],
    [ 'activity_redis_url db', http =>
        'activity_redis_url redis://127.0.0.1:6379/x;',
        qr/activity_redis_url/, qr{6379/x} ],
    [ 'activity_redis_url in location', location =>
        'activity_redis_url redis://127.0.0.1:6379;',
        qr/activity_redis_url/ ],
    [ 'activity_buffer_size', http => 'activity_buffer_size 4q;',
        qr/activity_buffer_size/ ],
    [ 'activity_spool without its directory', http =>
        'activity_spool /nonexistent/dir/events;',
        qr/activity_spool/, qr{/nonexistent/dir} ],
    [ 'activity_spool max_size', http =>
        'activity_spool /tmp/events max_size=1q;',
        qr/activity_spool/, qr/1q/ ],
    [ 'activity_spool max_size too small', http =>
        'activity_spool /tmp/events max_size=1k;',
        qr/activity_spool/, qr/1k/ ],
    [ 'activity_spool parameter', http =>
        'activity_spool /tmp/events size=1m;',
        qr/activity_spool/, qr/size=1m/ ],
    [ 'activity_spool in location', location =>
        'activity_spool /tmp/events;',
        qr/activity_spool/ ],
    [ 'activity_meta name', location => 'activity_meta "" $arg_x;',
        qr/activity_meta/ ],
    [ 'activity_meta without a value', location => 'activity_meta ref;',
        qr/activity_meta/ ],
    [ 'activity_jwt_secret empty', location => 'activity_jwt_secret "";',
        qr/activity_jwt_secret/ ],
    [ 'activity_user without a value', location => 'activity_user;',
        qr/activity_user/ ],
    [ 'activity_queue empty', http => 'activity_queue "";',
        qr/activity_queue/ ],
    [ 'activity_dashboard protocol', location =>
        'activity_jwt_secret s; activity_dashboard sse;',
        qr/activity_dashboard/, qr/sse/ ],
    [ 'activity_dashboard without a protocol', location =>
        'activity_jwt_secret s; activity_dashboard;',
        qr/activity_dashboard/ ],
    [ 'activity_dashboard in server', server =>
        'activity_jwt_secret s; activity_dashboard socketio;',
        qr/activity_dashboard/ ],
    [ 'activity_dashboard twice', location =>
        'activity_jwt_secret s; activity_dashboard socketio;'
        . ' activity_dashboard websocket;', qr/activity_dashboard/ ],
    # the key is looked for when the configuration is merged
    [ 'activity_dashboard without a key', location =>
        'activity_dashboard socketio;', 'noline',
        qr/activity_dashboard/, qr/key/ ],
    [ 'activity_jwt_key missing file', location =>
        'activity_jwt_key %%TESTDIR%%/no-such-key.pem;',
        qr/activity_jwt_key/, qr/no-such-key\.pem/ ],
    [ 'activity_jwt_key not a PEM file', location =>
        'activity_jwt_key %%TESTDIR%%/not-a-key.pem;',
        qr/activity_jwt_key/, qr/not-a-key\.pem/ ],
    [ 'activity_jwt_key algorithm', location =>
        'activity_jwt_key %%TESTDIR%%/rsa.pub HS256;',
        qr/activity_jwt_key/, qr/HS256/ ],
    [ 'activity_jwt_key algorithm none', location =>
        'activity_jwt_key %%TESTDIR%%/rsa.pub none;',
        qr/activity_jwt_key/, qr/none/ ],
    [ 'activity_jwt_secret and activity_jwt_key', location =>
        'activity_jwt_secret s; activity_jwt_key %%TESTDIR%%/rsa.pub;',
        qr/activity_jwt_key/, qr/activity_jwt_secret/ ],
    [ 'activity_jwt_key and activity_jwt_secret', server =>
        'activity_jwt_key %%TESTDIR%%/rsa.pub; activity_jwt_secret s;',
        qr/activity_jwt_secret/, qr/activity_jwt_key/ ],
    [ 'activity_jwt_secret twice', http =>
        'activity_jwt_secret a; activity_jwt_secret b;',
        qr/activity_jwt_secret/ ],
    # out of bounds: the directive, the value and the range
    # a count of frames, as before 2026-11: now too small a size
    [ 'activity_dashboard_queue too small', location =>
        'activity_dashboard_queue 256;',
        qr/invalid value "256" in "activity_dashboard_queue" directive/,
        qr/it must be between 4096 and 1073741824/ ],
    [ 'activity_dashboard_queue too large', location =>
        'activity_dashboard_queue 1025m;',
        qr/invalid value "1025m" in "activity_dashboard_queue" directive/,
        qr/it must be between 4096 and 1073741824/ ],
    [ 'activity_dashboard_queue_time not a time', location =>
        'activity_dashboard_queue_time soon;',
        qr/activity_dashboard_queue_time/ ],
    [ 'activity_dashboard_queue not a number', location =>
        'activity_dashboard_queue lots;', qr/activity_dashboard_queue/ ],
    [ 'activity_dashboard_rate 0', location =>
        'activity_dashboard_rate 0;',
        qr/invalid value "0" in "activity_dashboard_rate" directive/,
        qr/it must be between 1 and 1000/ ],
    [ 'activity_dashboard_rate too large', location =>
        'activity_dashboard_rate 1001;',
        qr/invalid value "1001" in "activity_dashboard_rate" directive/,
        qr/it must be between 1 and 1000/ ],
    [ 'activity_dashboard_max_connections 0', http =>
        'activity_dashboard_max_connections 0;',
        qr/invalid value "0" in "activity_dashboard_max_connections" directive/,
        qr/it must be between 1 and 10000000/ ],
    [ 'activity_dashboard_max_connections in server', server =>
        'activity_dashboard_max_connections 10;',
        qr/activity_dashboard_max_connections/ ],
    [ 'activity_dashboard_max_pending 0', http =>
        'activity_dashboard_max_pending 0;',
        qr/invalid value "0" in "activity_dashboard_max_pending" directive/,
        qr/it must be between 1 and 10000000/ ],
    [ 'activity_dashboard_max_per_ip too large', http =>
        'activity_dashboard_max_per_ip 65536;',
        qr/invalid value "65536" in "activity_dashboard_max_per_ip" directive/,
        qr/it must be between 0 and 65535/ ],
    [ 'activity_dashboard_max_per_ip in location', location =>
        'activity_dashboard_max_per_ip 5;',
        qr/activity_dashboard_max_per_ip/ ],
    [ 'activity_dashboard_auth_timeout', location =>
        'activity_dashboard_auth_timeout soon;',
        qr/activity_dashboard_auth_timeout/ ],
    [ 'activity_dashboard_ping_interval', location =>
        'activity_dashboard_ping_interval soon;',
        qr/activity_dashboard_ping_interval/ ],
);

for my $case (@bad) {
    my ($name, $slot, $text, @re) = @$case;
    my $noline = $re[0] eq 'noline' && shift @re;
    my ($rc, $out, $file) = $t->nginx_test(conf($slot => $text));

    my $line = 0;
    my $expanded = $t->expand_conf($text);
    open my $fh, '<', $file or die "$file: $!";
    while (<$fh>) {
        if (index($_, $expanded) >= 0) { $line = $.; last }
    }
    close $fh;

    isnt($rc, 0, "$name: nginx -t fails");
    my ($emerg) = grep { /\[emerg\]/ } split /\n/, $out;
    $emerg //= '';
    like($emerg, qr/\Q$file\E:$line\b/, "$name: [emerg] at line $line")
        or diag($out)
        unless $noline;
    for my $re (@re) {
        like($emerg, $re, "$name: message names $re");
    }
}

$t->done;
