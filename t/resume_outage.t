#!/usr/bin/perl

# The recent-events stream (issue 12) also fills a subscriber's outage:
# when nginx's subscriber connection is back, the dashboards that stayed
# connected get what was published while it was away, in order, once
# each, before the live events; a stream that no longer reaches back
# that far is logged instead.  The outage: the subscriber's connection
# killed while Redis refuses new connections (requirepass).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for jwt_hs256 make_event to_json);

my $t = ActivityTest->new(needs => [qw(module redis node)]);

$t->write_conf(<<'EOF');
%%GLOBALS%%

http {
    %%GLOBALS_HTTP%%

    activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
    activity_jwt_secret "outage-secret";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /ws {
            activity_dashboard websocket;
        }

        location = /status {
            activity_status;
        }
    }
}
EOF

$t->redis_start;
my $r = $t->redis;

$t->nginx_start;

sub metric {
    my ($name) = @_;
    my $text = $t->http(GET => '/status')->{content} // '';
    return $text =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

sub subscribed {
    return (metric('activity_redis_connected{connection="subscriber"}')
        // 0) == 1;
}

ok(wait_for(sub { subscribed() }, 20), 'subscribed');

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

sub users {
    my ($c) = @_;
    return [ map { $_->{data}{userId} } grep { ($_->{event} // '') eq
        'activity:new' } $c->lines ];
}

sub outage {
    my (@users) = @_;
    $r->config_set('requirepass', 'outage-pass');
    $r->client_kill('TYPE', 'pubsub');
    ok(wait_for(sub { !subscribed() }, 20), 'the subscriber is away');
    publish($_) for @users;
    $r->config_set('requirepass', '');
    ok(wait_for(sub { subscribed() }, 30), 'the subscriber is back');
}

my $token = jwt_hs256('outage-secret', { sub => 'dash', role => 'admin',
    exp => time + 3600 });
my $ws = $t->node('ws-client.js',
    url => 'ws://127.0.0.1:' . $t->port('http') . "/ws?token=$token",
    timeout => 60000, brief => 1);
ok($ws->wait_line(sub { ($_->{event} // '') eq 'snapshot' }, 20),
    'a dashboard connected');

publish('u0');
ok($ws->wait_line(sub { ($_->{event} // '') eq 'activity:new' }, 20),
    'a live event');

outage(qw(u1 u2));

publish('u3');
ok($ws->wait_line(sub { ($_->{event} // '') eq 'activity:new'
    && ($_->{data}{userId} // '') eq 'u3' }, 20), 'the next live event');
is_deeply(users($ws), [qw(u0 u1 u2 u3)],
    'what was published during the outage, once each, in order');
my @offsets = map { $_->{offset} } grep { ($_->{event} // '') eq
    'activity:new' } $ws->lines;
is(scalar(grep { /^\d+-\d+$/ } @offsets), 4, '  each with its offset');

# the stream no longer reaches back: nothing sent, said once

$r->config_set('requirepass', 'outage-pass');
$r->client_kill('TYPE', 'pubsub');
ok(wait_for(sub { !subscribed() }, 20), 'away again');
publish($_) for qw(u4 u5);
$r->xtrim('dashboard:events:stream', 'MAXLEN', 0);
$r->config_set('requirepass', '');
ok(wait_for(sub { subscribed() }, 30), 'back again');
publish('u6');
ok($ws->wait_line(sub { ($_->{event} // '') eq 'activity:new'
    && ($_->{data}{userId} // '') eq 'u6' }, 20), 'a live event again');
is_deeply(users($ws), [qw(u0 u1 u2 u3 u6)],
    'a trimmed stream: the outage is not filled');
my $log = do { local (@ARGV, $/) = $t->error_log; <> };
is(scalar(() = $log =~ /no longer in the stream: connected dashboards/g),
    1, '  and that is logged once');

$ws->finish;
$t->done;
