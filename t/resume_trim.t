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
use ActivityTest qw(wait_for);
use ResumeRelay qw(resume_conf resume_bind relay_start relay_listens
    relay_stop resume_client metric connections_up publish sees users xranges);

my $t = ActivityTest->new(needs => [qw(module redis node)]);

$t->write_conf(resume_conf('trim-secret'));

$t->redis_start;
my $r = $t->redis;
resume_bind($t, $r);

my $proxy = relay_start('split');
END { kill 'TERM', $proxy if $proxy }
ok(wait_for(sub { relay_listens() }, 10), 'the relay listens');

$t->nginx_start;

ok(wait_for(sub { connections_up() }, 20),
    "nginx's subscriber and resume connections are up");

my $sio = resume_client('trim-secret');
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
relay_stop($proxy);
$proxy = 0;

$t->done;
