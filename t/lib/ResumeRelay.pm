package ResumeRelay;

# What the resume tests behind the relay t/lib/held_reply_proxy.pl
# (t/resume_rooms.t, t/resume_trim.t) share: the nginx conf (Redis
# reached through the relay on %%PORT_proxy%%, a Socket.IO dashboard,
# the status page), the relay's start, and the helpers below.
#
#   $t->write_conf(resume_conf('x-secret'));
#   resume_bind($t, $r);             # the test and its Redis handle
#   my $proxy = relay_start(@args);  # extra arguments of the relay
#   relay_listens()                  # true once the relay accepts
#   relay_stop($proxy)               # ends the relay and reaps it
#   my $sio = resume_client('x-secret');  # t/js/sio-resume.js, an admin
#   metric($name)                    # a value of /status
#   connections_up()                 # nginx's subscriber and resume
#                                    # connections to Redis are up
#   publish($user)                   # what the worker does; entry id
#   sees($client, $user, $event)     # waits for that event
#   users($client, $event)           # the users of those events, in order
#   xranges()                        # XRANGE calls Redis has served

use strict;
use warnings;

use Exporter 'import';
use FindBin;
use IO::Socket::INET;
use POSIX ();
use ActivityTest qw(jwt_hs256 make_event to_json);

our @EXPORT_OK = qw(resume_conf resume_bind relay_start relay_listens
    relay_stop resume_client metric connections_up publish sees users xranges);

my ($t, $r);

sub resume_conf {
    my ($secret) = @_;
    (my $c = <<'EOF') =~ s/SECRET/$secret/;
%%GLOBALS%%

http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%PORT_proxy%%;
    activity_jwt_secret "SECRET";

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
    return $c;
}

sub resume_bind {
    ($t, $r) = @_;
}

sub relay_start {
    my (@args) = @_;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        exec($^X, "$FindBin::Bin/lib/held_reply_proxy.pl", $t->port('proxy'),
            $t->redis_port, @args) or POSIX::_exit(127);
    }
    return $pid;
}

sub relay_listens {
    return IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port('proxy'));
}

sub relay_stop {
    my ($pid) = @_;
    kill 'TERM', $pid;
    waitpid $pid, 0;
}

sub resume_client {
    my ($secret) = @_;
    my $token = jwt_hs256($secret, { sub => 'dash', role => 'admin',
        exp => time + 3600 });
    return $t->node('sio-resume.js',
        url => 'http://127.0.0.1:' . $t->port('http') . '/dashboard',
        token => $token, timeout => 60000);
}

sub metric {
    my ($name) = @_;
    my $text = $t->http(GET => '/status')->{content} // '';
    return $text =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

sub connections_up {
    return (metric('activity_redis_connected{connection="subscriber"}') // 0)
        == 1 && $r->info('clients')->{connected_clients} >= 3;
}

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

1;
