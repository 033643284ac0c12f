#!/usr/bin/perl

# One frame alone in a connection's queue (the fan-out's usual case, sent
# with one send()) that the socket takes only in parts: behind a narrow
# link (an 8 KiB send buffer, a client that reads late) a 256 KiB event
# goes out in many partial writes and arrives whole, byte for byte, and
# the next event after it; a client on a normal link gets both as well.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(jwt_hs256 make_event to_json from_json);

my $t = ActivityTest->new(needs => [qw(module redis)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%
http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "single-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;
        location /ws { activity_dashboard websocket; }
    }

    # a slow link: nginx's send buffer fixed small
    server {
        listen 127.0.0.1:%%PORT_narrow%% sndbuf=8k;
        server_name localhost;
        location /ws { activity_dashboard websocket; }
    }
}
EOF

$t->redis_start;
$t->nginx_start;

my $token = jwt_hs256('single-secret', { sub => 'dash', role => 'admin',
    exp => time + 600 });

my %c;
for my $name (qw(narrow http)) {
    my $c = $t->ws_raw("/ws?token=$token", port_name => $name,
        $name eq 'narrow' ? (rcvbuf => 4096) : ());
    ok(ref $c, "$name: upgraded") or BAIL_OUT("status $c");
    my ($op, $payload) = $c->next_frame(10);
    like($payload // '', qr/^\{"event":"snapshot"/, "$name: snapshot");
    $c{$name} = $c;
}

my $pad = join '', map { chr(0x61 + $_ % 26) } 0 .. 256 * 1024 - 1;
my $big = make_event(user => 'big', details => { pad => $pad });
my $next = make_event(user => 'next');

# the next activity:new frame a client reads, decoded
sub next_event {
    my ($c) = @_;
    for (;;) {
        my ($op, $payload) = $c->next_frame(30);
        return undef unless defined $op;
        next unless $op == 1;
        my $m = eval { from_json($payload) } or next;
        return $m->{data} if ($m->{event} // '') eq 'activity:new';
    }
}

# alone in the queue, and the narrow client not reading yet: the frame
# goes out in parts, one per write event, as the client reads
$t->redis->publish('dashboard:events', to_json([$big]));

for my $name (qw(narrow http)) {
    my $e = next_event($c{$name});
    is($e->{id}, $big->{id}, "$name: the big event arrived");
    ok(($e->{metadata}{details}{pad} // '') eq $pad,
        "$name: its 256 KiB byte for byte");
}

$t->redis->publish('dashboard:events', to_json([$next]));

for my $name (qw(narrow http)) {
    my $e = next_event($c{$name});
    is($e->{id}, $next->{id}, "$name: then the next event, whole");
}

$t->done;
