#!/usr/bin/perl

# Resume (issue 12): a stream trimmed while a resume reads it never
# gives a recovered client a hole.  The relay t/lib/held_reply_proxy.pl
# (split) holds every command after the resume's first XRANGE, and the
# answers, until the test has trimmed the stream: a first read that
# found the offset's entry and a second one that read the gap after the
# trim would send the gap without its first events.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Socket::INET;
use POSIX ();
use ActivityTest qw(wait_for jwt_hs256 make_event to_json);

my $t = ActivityTest->new(needs => [qw(module redis node)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%

http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%PORT_proxy%%;
    activity_jwt_secret "trim-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /socket.io/ {
            activity_dashboard socketio;
        }

        location = /status {
            activity_status;
        }
    }
}
EOF

$t->redis_start;
my $r = $t->redis;

my $proxy = fork;
die "fork: $!" unless defined $proxy;
if ($proxy == 0) {
    exec($^X, "$FindBin::Bin/lib/held_reply_proxy.pl", $t->port('proxy'),
        $t->redis_port, 'split') or POSIX::_exit(127);
}
END { kill 'TERM', $proxy if $proxy }
ok(wait_for(sub { IO::Socket::INET->new(PeerAddr => '127.0.0.1',
    PeerPort => $t->port('proxy')) }, 10), 'the relay listens');

$t->nginx_start;

sub metric {
    my ($name) = @_;
    my $text = $t->http(GET => '/status')->{content} // '';
    return $text =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

ok(wait_for(sub {
    (metric('activity_redis_connected{connection="subscriber"}') // 0) == 1
    && $r->info('clients')->{connected_clients} >= 3 }, 20),
    "nginx's subscriber and resume connections are up");

# what the worker does: the event into the stream, then published with
# its entry id as "offset"
sub publish {
    my ($user) = @_;
    my $text = to_json(make_event(type => 'API_CALL', user => $user));
    my $id = $r->xadd('dashboard:events:stream', '*', e => $text);
    (my $msg = $text) =~ s/\}\s*$/,"offset":"$id"}/;
    $r->publish('dashboard:events', "[$msg]");
    return $id;
}

sub sees {
    my ($c, $user, $event) = @_;
    return $c->wait_line(sub { ($_->{event} // '') eq $event
        && ($_->{user} // '') eq $user }, 20);
}

sub users {
    my ($c, $event) = @_;
    return [ map { $_->{user} } grep { ($_->{t} // '') eq 'event'
        && $_->{event} eq $event } $c->lines ];
}

sub xranges {
    my $info = $r->info('commandstats');
    return ($info->{cmdstat_xrange} // '') =~ /calls=(\d+)/ ? $1 : 0;
}

my $token = jwt_hs256('trim-secret', { sub => 'dash', role => 'admin',
    exp => time + 3600 });
my $sio = $t->node('sio-resume.js',
    url => 'http://127.0.0.1:' . $t->port('http') . '/dashboard',
    token => $token, timeout => 60000);
ok($sio->wait_line(sub { ($_->{t} // '') eq 'connect' }, 20), 'connected');

publish('u0');
ok(sees($sio, 'u0', 'activity:new'), 'an event, so an offset');

$sio->send({ drop => 1 });
ok($sio->wait_line(sub { ($_->{t} // '') eq 'disconnect' }, 20),
    'the transport dropped');
ok(wait_for(sub { !metric('activity_dashboard_connections{protocol="socketio"}') },
    20), 'nginx saw it go');

publish($_) for qw(u1 u2);

# the resume's first read, then the stream trimmed to its newest entry
my $x0 = xranges();
$sio->send({ connect => 1 });
ok(wait_for(sub { xranges() > $x0 }, 20), 'redis read the stream');
is($r->xtrim('dashboard:events:stream', 'MAXLEN', 1), 2,
    'the stream trimmed to its newest entry');
kill 'USR1', $proxy;

ok(wait_for(sub { (grep { ($_->{t} // '') eq 'connect' } $sio->lines) >= 2 },
    20), 'reconnected');
my ($again) = (grep { ($_->{t} // '') eq 'connect' } $sio->lines)[1];
ok($again && $again->{recovered},
    'recovered: the gap was read before the trim, in one read');

publish('u3');
ok(sees($sio, 'u3', 'activity:new'), 'the next live event');
is_deeply(users($sio, 'activity:new'), [qw(u0 u1 u2 u3)],
    'no hole: every event once, in order');

$sio->finish;
$t->nginx_stop;
kill 'TERM', $proxy;
waitpid $proxy, 0;
$proxy = 0;

$t->done;
