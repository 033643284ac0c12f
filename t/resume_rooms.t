#!/usr/bin/perl

# Resume (issue 12): the room events of a Socket.IO session come back
# with it, also for an event that reaches nginx while the gap is read,
# after Redis answered the read (it is not in the gap, and the session's
# rooms are not known yet).  The relay t/lib/held_reply_proxy.pl holds
# Redis's answer to the resume read until the test has published such
# an event and nginx has heard it.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for);
use ResumeRelay qw(resume_conf resume_bind relay_start relay_listens
    relay_stop resume_client metric connections_up publish sees users xranges);

my $t = ActivityTest->new(needs => [qw(module redis node)]);

$t->write_conf(resume_conf('rooms-secret'));

$t->redis_start;
my $r = $t->redis;
resume_bind($t, $r);

my $proxy = relay_start();
END { kill 'TERM', $proxy if $proxy }
ok(wait_for(sub { relay_listens() }, 10), 'the relay listens');

$t->nginx_start;

ok(wait_for(sub { connections_up() }, 20),
    "nginx's subscriber and resume connections are up");

my $sio = resume_client('rooms-secret');
ok($sio->wait_line(sub { ($_->{t} // '') eq 'connect' }, 20), 'connected');
$sio->send({ emit => 'subscribe', args => [ ['dashboard:api-activity'] ],
    tag => 'rooms' });
ok($sio->wait_line(sub { ($_->{t} // '') eq 'ack' }, 10), 'in the api room');

publish('u0');
ok(sees($sio, 'u0', 'activity:new') && sees($sio, 'u0', 'api:call'),
    'an event and its room event, so an offset');

$sio->send({ drop => 1 });
ok($sio->wait_line(sub { ($_->{t} // '') eq 'disconnect' }, 20),
    'the transport dropped');
ok(wait_for(sub { !metric('activity_dashboard_connections{protocol="socketio"}') },
    20), 'nginx saw it go');

# the resume: Redis reads the gap (nothing), the relay keeps the answer
my $x0 = xranges();
$sio->send({ connect => 1 });
ok(wait_for(sub { xranges() > $x0 }, 20), 'redis read the gap');

# an event after the read, before nginx has the answer
my $heard = metric('activity_pubsub_messages_total');
publish('u1');
ok(wait_for(sub { metric('activity_pubsub_messages_total') > $heard }, 20),
    'nginx heard the next event while the resume was read');

kill 'USR1', $proxy;
my $con = $sio->wait_line(sub { ($_->{t} // '') eq 'connect'
    && $_->{recovered} }, 20);
ok($con, 'recovered');

publish('u2');
ok(sees($sio, 'u2', 'activity:new') && sees($sio, 'u2', 'api:call'),
    'the next live event and its room event');

is_deeply(users($sio, 'activity:new'), [qw(u0 u1 u2)],
    'activity:new once each, in order');
is_deeply(users($sio, 'api:call'), [qw(u0 u1 u2)],
    'the room events too: none lost while the resume was read');

# a reload while a resume is read: the old worker process closes the
# connection (1001) with the read in flight, and exits with it pending;
# the client resumes from the same offset on a new worker process

$sio->send({ drop => 1 });
ok($sio->wait_line(sub { ($_->{t} // '') eq 'disconnect'
    && (grep { ($_->{t} // '') eq 'disconnect' } $sio->lines) >= 2 }, 20),
    'reload: the transport dropped');
ok(wait_for(sub { !metric('activity_dashboard_connections{protocol="socketio"}') },
    20), 'reload: nginx saw it go');
publish('u3');

$x0 = xranges();
$sio->send({ connect => 1 });
ok(wait_for(sub { xranges() > $x0 }, 20), 'reload: redis read the gap');

my $master = do { open my $fh, '<', $t->dir . '/nginx.pid'; <$fh> };
chomp $master;
my ($old) = map { /^\s*(\d+)/ ? $1 : () } `ps -o pid= --ppid $master`;
ok(kill('HUP', $master), 'reload: nginx reloaded mid-resume');
ok(wait_for(sub { (grep { ($_->{t} // '') eq 'disconnect' } $sio->lines)
    >= 3 }, 20), 'reload: the old worker process closed the connection');
ok(wait_for(sub { !kill(0, $old) }, 30),
    'reload: the old worker process exited, its read pending');
kill 'USR1', $proxy;

ok(wait_for(sub {
    (metric('activity_redis_connected{connection="subscriber"}') // 0) == 1
    }, 20), 'reload: the new worker process subscribed');
$x0 = xranges();
$sio->send({ connect => 1 });
ok(wait_for(sub { xranges() > $x0 }, 20), 'reload: redis read the gap again');
kill 'USR1', $proxy;
ok(wait_for(sub { (grep { ($_->{t} // '') eq 'connect' } $sio->lines) >= 3 },
    20), 'reload: connected to the new worker process');
my $last = (grep { ($_->{t} // '') eq 'connect' } $sio->lines)[-1];
ok($last->{recovered}, 'reload: recovered');

publish('u4');
ok(sees($sio, 'u4', 'activity:new') && sees($sio, 'u4', 'api:call'),
    'reload: the next live event and its room event');
is_deeply(users($sio, 'activity:new'), [qw(u0 u1 u2 u3 u4)],
    'reload: activity:new once each, in order');
is_deeply(users($sio, 'api:call'), [qw(u0 u1 u2 u3 u4)],
    'reload: the room events too');

$sio->finish;
$t->nginx_stop;
relay_stop($proxy);
$proxy = 0;

$t->done;
