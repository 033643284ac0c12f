package SentinelConf;

# The nginx conf of the Redis Sentinel tests (t/redis_sentinel.t,
# t/redis_sentinel_stall.t): tracking on /t/, a WebSocket dashboard on
# /ws, the status page, Redis reached through the url given.
#
#   sentinel_conf(url => $url, workers => 2, secret => 'x-secret',
#                 wait => $line,   # optional: a line after the url
#                 port => $name);  # optional: listen on %%PORT_name%%

use strict;
use warnings;

use Exporter 'import';

our @EXPORT_OK = qw(sentinel_conf);

my $conf = <<'EOF';
%%GLOBALS%%
worker_processes WORKERS;
http {
    %%GLOBALS_HTTP%%

    activity_redis_url URL;
    WAIT
    activity_jwt_secret "SECRET";

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

        location /t/ {
            activity_track on;
            return 200 "ok\n";
        }

        location /ws {
            activity_dashboard websocket;
        }

        location = /status {
            activity_status;
        }
    }
}
EOF

sub sentinel_conf {
    my (%o) = @_;
    (my $c = $conf) =~ s/WORKERS/$o{workers}/;
    $c =~ s/SECRET/$o{secret}/;
    $c =~ s/URL/$o{url}/;
    if (exists $o{wait}) {
        $c =~ s/WAIT/$o{wait} \/\/ ''/e;
    } else {
        $c =~ s/^ *WAIT\n//m;
    }
    $c =~ s/%%PORT%%/%%PORT_$o{port}%%/ if defined $o{port};
    return $c;
}

1;
