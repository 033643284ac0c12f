package ActivityTest;

# A small test harness for nginx-activity, in the spirit of nginx-tests'
# lib/Test/Nginx.pm: every test file gets its own temporary directory and
# its own servers (nginx with the module, Redis, PostgreSQL, the worker) on
# free loopback ports, talks to them, and ends by checking the logs.
#
#   use lib 't/lib';
#   use ActivityTest qw(wait_for);
#
#   my $t = ActivityTest->new(needs => [qw(module redis)]);
#   $t->write_conf(<<'EOF');
#   %%GLOBALS%%
#   http {
#       %%GLOBALS_HTTP%%
#       activity_redis_url redis://127.0.0.1:%%REDIS_PORT%%;
#       server {
#           listen 127.0.0.1:%%PORT%%;
#           location / { activity_track on; return 200; }
#       }
#   }
#   EOF
#   $t->redis_start;
#   $t->nginx_start;
#   is($t->http(GET => '/')->{status}, 200, 'answered');
#   $t->done;
#
# Environment: TEST_KEEP=1 keeps the temporary directory; TEST_NGINX,
# TEST_PG_BIN, TEST_REDIS_SERVER, TEST_ACTIVITY_MODULE and
# TEST_ACTIVITY_WORKER override the binaries used; TEST_NGINX_PRELOAD
# is preloaded into nginx alone (make test-asan: the ASan runtime that a
# sanitized module needs in a stock nginx), see _nginx_cmd.

use strict;
use warnings;

use Carp qw(croak);
use Cwd qw(abs_path);
use Digest::SHA qw(hmac_sha256 hmac_sha384 hmac_sha512);
use Exporter qw(import);
use File::Basename qw(basename dirname);
use File::Copy qw(copy);
use File::Path qw(make_path rmtree);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use JSON::PP ();
use MIME::Base64 qw(encode_base64);
use POSIX qw(WNOHANG strftime);
use Test::More;
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(wait_for jwt_hs256 jwt_hmac jwt_unsigned b64url uuid
    iso_time make_event to_json from_json);

our $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/../..');

our %BIN = (
    nginx  => $ENV{TEST_NGINX} || '/usr/sbin/nginx',
    redis  => $ENV{TEST_REDIS_SERVER} || _which('redis-server')
        || '/usr/bin/redis-server',
    pg     => $ENV{TEST_PG_BIN} || '/usr/lib/postgresql/15/bin',
    module => $ENV{TEST_ACTIVITY_MODULE}
        || "$ROOT/build/ngx_http_activity_module.so",
    worker => $ENV{TEST_ACTIVITY_WORKER} || "$ROOT/build/activity-worker",
);

my $JSON = JSON::PP->new->canonical->utf8;
my @INSTANCES;
my %PORTS_GIVEN;


# --- construction -------------------------------------------------------

# needs: which pieces the test file uses; a missing binary stops the whole
# run (BAIL_OUT) with the reason, never a silent skip.
sub new {
    my ($class, %opts) = @_;

    my $needs = $opts{needs} || [qw(nginx module redis pg worker)];
    my %needs = map { $_ => 1 } @$needs;
    $needs{nginx} = 1 if $needs{module};

    _check_binaries(\%needs);

    my $name = basename($0, '.t');
    $name =~ s/[^A-Za-z0-9_-]/_/g;
    my $base = _reachable_tmp($ENV{TEST_TMPDIR} || File::Spec->tmpdir);
    my $dir = tempdir("activity-$name-XXXXXX", DIR => $base, CLEANUP => 0);
    chmod 0755, $dir;

    # Snapshots of the build artefacts: a rebuild while tests run then
    # cannot change (or, overwriting a mapped .so, crash) what they test.
    my %bin = %BIN;
    for my $b (grep { $needs{$_} } qw(module worker)) {
        $bin{$b} = "$dir/" . basename($BIN{$b});
        copy($BIN{$b}, $bin{$b}) or BAIL_OUT("copy $BIN{$b}: $!");
        chmod 0755, $bin{$b};
    }

    my $self = bless {
        owner   => $$,
        bin     => \%bin,
        dir     => $dir,
        ports   => {},
        procs   => {},
        workers => {},
        queue   => 'activity:events',
        conf    => undef,
    }, $class;

    push @INSTANCES, $self;

    $SIG{INT} = $SIG{TERM} = sub { die "interrupted\n" };
    $SIG{PIPE} = 'IGNORE';

    return $self;
}

sub _which {
    my ($cmd) = @_;
    for my $d (split /:/, $ENV{PATH} || '') {
        return "$d/$cmd" if -x "$d/$cmd";
    }
    return undef;
}

sub _check_binaries {
    my ($needs) = @_;
    my @missing;

    push @missing, "nginx ($BIN{nginx})"
        if $needs->{nginx} && !-x $BIN{nginx};
    push @missing, "the module ($BIN{module}; run make)"
        if $needs->{module} && !-f $BIN{module};
    push @missing, "redis-server ($BIN{redis})"
        if $needs->{redis} && !-x $BIN{redis};
    push @missing, "the worker ($BIN{worker}; run make)"
        if $needs->{worker} && !-x $BIN{worker};
    if ($needs->{pg}) {
        for my $b (qw(initdb pg_ctl createdb)) {
            push @missing, "PostgreSQL $b ($BIN{pg}/$b)"
                unless -x "$BIN{pg}/$b";
        }
        push @missing, 'the postgres user'
            unless defined getpwnam('postgres');
        push @missing, 'runuser' unless _which('runuser');
    }
    if ($needs->{wrk}) {
        push @missing, 'wrk' unless _which('wrk');
    }
    if ($needs->{node}) {
        push @missing, 'node' unless _which('node');
        push @missing, "the test clients' packages (t/js/node_modules;"
            . ' run make deps-test)'
            unless -d "$ROOT/t/js/node_modules/socket.io-client"
                && -d "$ROOT/t/js/node_modules/ws";
    }

    BAIL_OUT("missing: " . join(', ', @missing)) if @missing;
}

sub dir { $_[0]{dir} }
sub root { $ROOT }
sub queue { $_[0]{queue} }

# A free loopback port, the same one for the same name for the life of the
# test file (so a server can be restarted on the port it had).
sub port {
    my ($self, $name) = @_;
    $name //= 'http';

    return $self->{ports}{$name} if $self->{ports}{$name};

    for (1 .. 50) {
        my $s = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
            Listen => 1, ReuseAddr => 0,
        ) or croak "cannot bind a port: $!";
        my $port = $s->sockport;
        close $s;
        next if $PORTS_GIVEN{$port}++;
        return $self->{ports}{$name} = $port;
    }
    croak "no free port found";
}


# --- helpers ------------------------------------------------------------

# Polls $code every $interval seconds until it returns a true value, which
# is returned; false after $timeout seconds.
sub wait_for (&;$$) {
    my ($code, $timeout, $interval) = @_;
    $timeout //= 10;
    $interval //= 0.05;

    my $end = time + $timeout;
    while (1) {
        my $v = $code->();
        return $v if $v;
        return $v if time > $end;
        sleep $interval;
    }
}

sub to_json { $JSON->encode($_[0]) }
sub from_json { $JSON->decode($_[0]) }

sub b64url {
    my $s = encode_base64($_[0], '');
    $s =~ tr{+/}{-_};
    $s =~ s/=+$//;
    return $s;
}

sub _b64url { b64url(@_) }

# An HMAC token (HS256, HS384, HS512) really signed with the algorithm
# its header names: for tests of algorithm pinning.
sub jwt_hmac {
    my ($alg, $key, $claims) = @_;
    my %mac = (HS256 => \&hmac_sha256, HS384 => \&hmac_sha384,
        HS512 => \&hmac_sha512);
    my $input = b64url($JSON->encode({ alg => $alg, typ => 'JWT' })) . '.'
        . b64url($JSON->encode($claims));
    return $input . '.' . b64url($mac{$alg}->($input, $key));
}

# An HS256 JSON Web Token; %$header may override the header fields.
sub jwt_hs256 {
    my ($secret, $claims, $header) = @_;
    my $h = { alg => 'HS256', typ => 'JWT', %{ $header || {} } };
    my $input = _b64url($JSON->encode($h)) . '.'
        . _b64url($JSON->encode($claims));
    return $input . '.' . _b64url(hmac_sha256($input, $secret));
}

# A token with "alg":"none" and an empty signature.
sub jwt_unsigned {
    my ($claims) = @_;
    return _b64url($JSON->encode({ alg => 'none', typ => 'JWT' })) . '.'
        . _b64url($JSON->encode($claims)) . '.';
}

sub uuid {
    my @b = map { int rand 256 } 1 .. 16;
    $b[6] = ($b[6] & 0x0f) | 0x40;
    $b[8] = ($b[8] & 0x3f) | 0x80;
    my $h = unpack 'H*', pack 'C*', @b;
    return join '-', substr($h, 0, 8), substr($h, 8, 4), substr($h, 12, 4),
        substr($h, 16, 4), substr($h, 20, 12);
}

# ISO 8601 UTC with milliseconds, as in the event contract.
sub iso_time {
    my ($t) = @_;
    $t //= time;
    my $ms = int(($t - int $t) * 1000);
    return strftime('%Y-%m-%dT%H:%M:%S', gmtime int $t)
        . sprintf('.%03dZ', $ms);
}

# An event as the module would make it; any field can be overridden:
# id, type, user, time (epoch seconds), ip, agent, endpoint, method,
# status, duration, details.
sub make_event {
    my (%o) = @_;
    return {
        id        => $o{id} // uuid(),
        eventType => $o{type} // 'API_CALL',
        userId    => $o{user},
        timestamp => iso_time($o{time}),
        metadata  => {
            ipAddress  => $o{ip} // '127.0.0.1',
            userAgent  => $o{agent} // 'activity-test',
            endpoint   => $o{endpoint} // '/test',
            method     => $o{method} // 'GET',
            status     => $o{status} // 200,
            durationMs => $o{duration} // 0.5,
            details    => $o{details} // {},
        },
    };
}


# --- processes ----------------------------------------------------------

# Runs a command to completion; returns (exit status, combined output).
sub run_cmd {
    my ($self, @cmd) = @_;

    my $pid = open(my $fh, '-|');
    croak "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        exec @cmd or do { print "exec $cmd[0]: $!\n"; POSIX::_exit(127) };
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8 || ($? & 127 ? 128 + ($? & 127) : 0), $out);
}

# Starts a child process with stdout and stderr appended to $log.
sub _spawn {
    my ($self, $name, $log, @cmd) = @_;

    my $pid = fork;
    croak "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        exec @cmd or do { print "exec $cmd[0]: $!\n"; POSIX::_exit(127) };
    }
    $self->{procs}{$name} = $pid;
    return $pid;
}

sub _alive {
    my ($self, $name) = @_;
    my $pid = $self->{procs}{$name} or return 0;
    my $r = waitpid($pid, WNOHANG);
    if ($r == $pid) {
        $self->{exit}{$name} = $?;
        delete $self->{procs}{$name};
        return 0;
    }
    return 1;
}

# Sends $sig, waits up to $timeout seconds, then escalates to KILL.
# Returns the wait status ($?) of the process, undef if not running.
sub _stop {
    my ($self, $name, $sig, $timeout) = @_;
    my $pid = $self->{procs}{$name};

    unless ($pid) {
        return delete $self->{exit}{$name};
    }

    kill $sig, $pid;
    my $end = time + ($timeout // 10);
    while (time < $end) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{procs}{$name};
            delete $self->{exit}{$name};
            return $?;
        }
        sleep 0.02;
    }
    diag("$name (pid $pid) ignored SIG$sig for ${timeout}s, killing");
    kill 'KILL', $pid;
    waitpid($pid, 0);
    delete $self->{procs}{$name};
    return $?;
}

sub _port_open {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
        Timeout => 1,
    );
    return 0 unless $s;
    close $s;
    return 1;
}

sub _slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return <$fh> // '';
}

sub _tail {
    my ($file, $n) = @_;
    my @l = split /\n/, _slurp($file);
    splice @l, 0, @l - $n if @l > $n;
    return join "\n", @l;
}


# --- Redis --------------------------------------------------------------

sub redis_port { $_[0]->port('redis') }

sub redis_url { 'redis://127.0.0.1:' . $_[0]->redis_port }

sub redis_start {
    my ($self) = @_;
    return $self->_redis_start($self->{redis_args}, qr/^\+PONG/);
}

# Starts redis-server with @$args more and waits until a PING answers
# $ready (or it died).
sub _redis_start {
    my ($self, $args, $ready) = @_;
    my $port = $self->redis_port;
    my $d = "$self->{dir}/redis";
    make_path($d);

    croak "redis already running" if $self->_alive('redis');

    $self->_spawn('redis', "$d/redis.log", $BIN{redis},
        '--bind', '127.0.0.1', '--port', $port, '--save', '',
        '--appendonly', 'no', '--daemonize', 'no',
        '--pidfile', "$d/redis.pid", '--dir', $d, '--logfile', '',
        @{ $args || [] });

    my $dead;
    my $ok = wait_for {
        return $dead = 1 unless $self->_alive('redis');
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $port, Timeout => 1) or return 0;
        print $s "PING\r\n";
        my $l = <$s> // '';
        return $l =~ $ready;
    } 10;
    croak "redis-server did not start:\n" . _tail("$d/redis.log", 20)
        if !$ok || $dead;
    delete $self->{redis};
    return $self;
}

sub redis_stop {
    my ($self) = @_;
    delete $self->{redis};
    return $self->_stop('redis', 'TERM', 10);
}

sub redis_running { $_[0]->_alive('redis') }

# A Redis client (the Redis module), reconnected after a restart.
sub redis {
    my ($self) = @_;
    return $self->{redis} if $self->{redis} && eval { $self->{redis}->ping };
    require Redis;
    $self->{redis} = Redis->new(
        server => '127.0.0.1:' . $self->redis_port,
        reconnect => 2, every => 100_000, cnx_timeout => 2,
    );
    return $self->{redis};
}

# LPUSHes events (hashrefs or JSON strings) to the queue, as the module
# does, 1000 a command.
sub push_events {
    my ($self, @events) = @_;
    my $r = $self->redis;
    my @json = map { ref $_ ? $JSON->encode($_) : $_ } @events;
    while (my @chunk = splice @json, 0, 1000) {
        $r->lpush($self->{queue}, @chunk);
    }
    return scalar @events;
}

# The events in the queue, oldest first, decoded.
sub queued_events {
    my ($self, $key) = @_;
    my @raw = reverse $self->redis->lrange($key // $self->{queue}, 0, -1);
    return map { my $e = eval { $JSON->decode($_) }; $e // { raw => $_ } }
        @raw;
}


# --- PostgreSQL ---------------------------------------------------------

sub pg_port { $_[0]->port('pg') }

sub pg_url {
    my ($self) = @_;
    return 'postgresql://postgres@127.0.0.1:' . $self->pg_port . '/activity';
}

sub _as_postgres {
    my ($self, @cmd) = @_;
    return $self->run_cmd('runuser', '-u', 'postgres', '--', @cmd);
}

sub pg_start {
    my ($self) = @_;
    my $d = "$self->{dir}/pg";
    my $port = $self->pg_port;
    my ($uid, $gid) = (getpwnam 'postgres')[2, 3];

    unless (-d "$d/data") {
        make_path($d);
        chown $uid, $gid, $d or croak "chown $d: $!";
        my ($rc, $out) = $self->_as_postgres("$BIN{pg}/initdb",
            '-D', "$d/data", '-U', 'postgres', '-A', 'trust', '-E', 'UTF8',
            '--locale=C.UTF-8', '--no-sync');
        croak "initdb failed:\n$out" if $rc;
    }

    my ($rc, $out) = $self->_as_postgres("$BIN{pg}/pg_ctl",
        '-D', "$d/data", '-w', '-t', '60', '-l', "$d/postgresql.log",
        '-o', "-c listen_addresses=127.0.0.1 -p $port -k $d"
            . " -c fsync=off -c synchronous_commit=off"
            . " -c full_page_writes=off -c timezone=UTC"
            . " -c log_timezone=UTC -c max_connections=50",
        'start');
    croak "pg_ctl start failed:\n$out\n" . _tail("$d/postgresql.log", 20)
        if $rc;
    $self->{pg_running} = 1;

    unless ($self->{pg_created}++) {
        ($rc, $out) = $self->_as_postgres("$BIN{pg}/createdb",
            '-h', '127.0.0.1', '-p', $port, '-U', 'postgres', 'activity');
        croak "createdb failed:\n$out" if $rc;
    }
    return $self;
}

sub pg_stop {
    my ($self) = @_;
    return unless $self->{pg_running};
    if ($self->{dbh}) {
        eval { $self->{dbh}->disconnect };
        delete $self->{dbh};
    }
    my ($rc, $out) = $self->_as_postgres("$BIN{pg}/pg_ctl",
        '-D', "$self->{dir}/pg/data", '-m', 'fast', '-w', 'stop');
    diag("pg_ctl stop: $out") if $rc;
    $self->{pg_running} = 0;
}

# A DBI handle on the activity database (RaiseError on).
sub dbh {
    my ($self) = @_;
    return $self->{dbh} if $self->{dbh} && $self->{dbh}->ping;
    require DBI;
    $self->{dbh} = DBI->connect(
        'dbi:Pg:dbname=activity;host=127.0.0.1;port=' . $self->pg_port,
        'postgres', '',
        { RaiseError => 1, AutoCommit => 1, PrintError => 0,
          pg_server_prepare => 0 },
    );
    $self->{dbh}->do("SET client_min_messages = warning");
    $self->{dbh}->do("SET timezone = 'UTC'");
    return $self->{dbh};
}

# The first column of the first row.
sub sql_value {
    my ($self, $sql, @bind) = @_;
    my ($v) = $self->dbh->selectrow_array($sql, undef, @bind);
    return $v;
}

# Every row, as hashrefs.
sub sql_rows {
    my ($self, $sql, @bind) = @_;
    return $self->dbh->selectall_arrayref($sql, { Slice => {} }, @bind);
}

# Whether a table (e.g. a partition) exists.
sub table_exists {
    my ($self, $name) = @_;
    return defined $self->sql_value('SELECT to_regclass(?)', $name) ? 1 : 0;
}

# The number of rows in activity_logs; 0 while the table does not exist.
sub row_count {
    my ($self, $where, @bind) = @_;
    my $sql = 'SELECT count(*) FROM activity_logs';
    $sql .= " WHERE $where" if defined $where;
    return eval { $self->sql_value($sql, @bind) } // 0;
}


# --- worker -------------------------------------------------------------

sub _worker_cmd {
    my ($self, $id, @extra) = @_;
    return ($self->{bin}{worker},
        '--redis', $self->redis_url,
        '--pg', $self->pg_url,
        '--queue', $self->{queue},
        '--id', $id,
        '--sql-dir', "$ROOT/sql",
        @extra);
}

sub worker_log { "$_[0]{dir}/worker-" . ($_[1] // 'w1') . '.log' }

# Runs the worker with --migrate; dies (with its output) unless it exits 0.
sub worker_migrate {
    my ($self, @extra) = @_;
    local %ENV = _clean_env();
    my ($rc, $out) = $self->run_cmd($self->_worker_cmd('migrate'),
        '--migrate', @extra);
    croak "activity-worker --migrate exited $rc:\n$out" if $rc;
    return $out;
}

# Starts a worker in the background; id defaults to w1, args are extra
# flags (e.g. '--batch', 100).
sub worker_start {
    my ($self, %o) = @_;
    my $id = $o{id} // 'w1';
    my $log = $self->worker_log($id);

    croak "worker $id already running" if $self->_alive("worker:$id");

    {
        open my $fh, '>>', $log;
        printf $fh "--- %s start %s\n", iso_time(),
            join ' ', @{ $o{args} || [] };
    }
    local %ENV = _clean_env();
    $self->_spawn("worker:$id", $log,
        $self->_worker_cmd($id, @{ $o{args} || [] }));
    $self->{workers}{$id} = $o{args} || [];
    return $self;
}

# Stops a worker (SIGTERM by default); returns its wait status.
sub worker_stop {
    my ($self, %o) = @_;
    my $id = $o{id} // 'w1';
    return $self->_stop("worker:$id", $o{signal} // 'TERM',
        $o{timeout} // 20);
}

sub worker_kill {
    my ($self, %o) = @_;
    return $self->worker_stop(%o, signal => 'KILL');
}

sub worker_restart {
    my ($self, %o) = @_;
    my $id = $o{id} // 'w1';
    my $args = $o{args} // $self->{workers}{$id};
    $self->worker_stop(id => $id, signal => $o{signal} // 'TERM');
    return $self->worker_start(id => $id, args => $args);
}

sub worker_running {
    my ($self, %o) = @_;
    return $self->_alive('worker:' . ($o{id} // 'w1'));
}

sub _clean_env {
    return map { $_ => $ENV{$_} } grep { !/^ACTIVITY_/ } keys %ENV;
}


# --- nginx --------------------------------------------------------------

# The error log of nginx, or of the named second instance.
sub error_log {
    my ($self, $name) = @_;
    return "$self->{dir}/error.log" unless defined $name;
    return "$self->{dir}/error-$name.log";
}

# Substitutes the %%NAME%% placeholders:
#   %%GLOBALS%%       main context: load_module, pid, error_log, daemon off,
#                     events { }
#   %%GLOBALS_HTTP%%  http context: access_log off, every *_temp_path
#   %%MODULE%%        absolute path of the module
#   %%TESTDIR%%       the test's temporary directory
#   %%PORT%%          the http port; %%PORT_name%% more free ports
#   %%REDIS_PORT%%    Redis's port
#   %%SSL%%           "ssl" in TLS mode (TEST_TLS=1), else nothing: for
#                     "listen 127.0.0.1:%%PORT%% %%SSL%%;"
# With $name (a second nginx instance), %%GLOBALS%% names that instance's
# pid file and error log (error-NAME.log).
sub expand_conf {
    my ($self, $text, $name) = @_;
    my $d = $self->{dir};
    my $pid = defined $name ? "$d/nginx-$name.pid" : "$d/nginx.pid";
    my $error_log = $self->error_log($name);

    my $globals = <<"EOF";
load_module $self->{bin}{module};
pid $pid;
error_log $error_log info;
daemon off;
events { }
EOF
    my $http = join "\n", 'access_log off;',
        map({ "${_}_temp_path $d/${_}_temp;" }
            qw(client_body proxy fastcgi uwsgi scgi)),
        $self->_tls_http, '';

    # pollloop: the event method asked for with event_method()
    $globals =~ s/events \{ \}/events { use $self->{event_method}; }/
        if $self->{event_method};
    $text =~ s/%%GLOBALS%%/$globals/g;
    $text =~ s/%%GLOBALS_HTTP%%/$http/g;
    $text =~ s/%%MODULE%%/$self->{bin}{module}/g;
    $text =~ s/%%TESTDIR%%/$d/g;
    $text =~ s/%%REDIS_PORT%%/$self->redis_port/ge;
    $text =~ s/%%PG_PORT%%/$self->pg_port/ge;
    $text =~ s/%%PORT_(\w+)%%/$self->port($1)/ge;
    $text =~ s/%%PORT%%/$self->port('http')/ge;
    $text =~ s/%%SSL%%/$self->tls ? 'ssl' : ''/ge;
    return $text;
}

# write_conf($text) writes nginx.conf; write_conf($text, $file) any other
# file; write_conf($text, undef, $name) the configuration of a second
# nginx instance NAME (nginx-NAME.conf, see expand_conf and nginx_start).
sub write_conf {
    my ($self, $text, $file, $name) = @_;
    $file //= defined $name ? "nginx-$name.conf" : 'nginx.conf';
    my $path = "$self->{dir}/$file";
    open my $fh, '>', $path or croak "$path: $!";
    print $fh $self->expand_conf($text, $name);
    close $fh;
    $self->{conf} = $path if $file eq 'nginx.conf' && !defined $name;
    $self->{confs}{$name} = $path if defined $name;
    return $path;
}

# The nginx command line. With TEST_NGINX_PRELOAD set, nginx (and only
# nginx: not Perl, Redis or PostgreSQL) runs with that LD_PRELOAD and
# with ASAN_OPTIONS from TEST_NGINX_ASAN_OPTIONS, by default
# detect_leaks=0: nginx frees its pools, not each allocation, at exit.
# Reports go to nginx's stderr or error log, both checked by done().
sub _nginx_cmd {
    my @cmd = ($BIN{nginx}, @_);
    my $preload = $ENV{TEST_NGINX_PRELOAD} or return @cmd;
    return ('env', "LD_PRELOAD=$preload", 'ASAN_OPTIONS='
        . ($ENV{TEST_NGINX_ASAN_OPTIONS} // 'detect_leaks=0'), @cmd);
}

# nginx -t on a configuration text (or nginx.conf when none is given);
# returns (exit status, output, path of the file tested).
sub nginx_test {
    my ($self, $text) = @_;
    my $file = 'nginx.conf';
    if (defined $text) {
        $file = sprintf 'test-%d.conf', ++$self->{ntest};
        $self->write_conf($text, $file);
    }
    my $path = "$self->{dir}/$file";
    my ($rc, $out) = $self->run_cmd(_nginx_cmd('-t', '-q',
        '-p', "$self->{dir}/", '-c', $path));
    return ($rc, $out, $path);
}

# nginx_start() starts nginx on nginx.conf, waiting for %%PORT%%;
# nginx_start(name => NAME) a second instance on its own configuration
# (write_conf($text, undef, NAME)), waiting for its port %%PORT_NAME%%.
sub nginx_start {
    my ($self, %o) = @_;
    return $self->_nginx_start_instance($o{name}) if defined $o{name};
    croak "write_conf first" unless $self->{conf};
    croak "nginx already running" if $self->_alive('nginx');

    $self->_spawn('nginx', "$self->{dir}/nginx.stderr", _nginx_cmd(
        '-p', "$self->{dir}/", '-c', $self->{conf},
        '-e', "$self->{dir}/error.log"));

    my $port = $self->port('http');
    my $dead;
    my $ok = wait_for {
        return $dead = 1 unless $self->_alive('nginx');
        return -s "$self->{dir}/nginx.pid" && _port_open($port);
    } 10;
    if (!$ok || $dead) {
        croak "nginx did not start:\n"
            . _tail("$self->{dir}/nginx.stderr", 10) . "\n"
            . _tail($self->error_log, 20);
    }
    return $self;
}

sub _nginx_start_instance {
    my ($self, $name) = @_;
    my $conf = $self->{confs}{$name}
        or croak "write_conf(\$text, undef, '$name') first";
    my $proc = "nginx:$name";
    croak "nginx $name already running" if $self->_alive($proc);

    my $d = $self->{dir};
    $self->_spawn($proc, "$d/nginx-$name.stderr", _nginx_cmd(
        '-p', "$d/", '-c', $conf, '-e', $self->error_log($name)));

    my $port = $self->port($name);
    my $dead;
    my $ok = wait_for {
        return $dead = 1 unless $self->_alive($proc);
        return -s "$d/nginx-$name.pid" && _port_open($port);
    } 10;
    if (!$ok || $dead) {
        croak "nginx $name did not start:\n"
            . _tail("$d/nginx-$name.stderr", 10) . "\n"
            . _tail($self->error_log($name), 20);
    }
    return $self;
}

# nginx_stop($sig) stops nginx; nginx_stop($sig, NAME) a second instance.
sub nginx_stop {
    my ($self, $sig, $name) = @_;
    return $self->_stop(defined $name ? "nginx:$name" : 'nginx',
        $sig // 'QUIT', 15);
}

sub nginx_running { $_[0]->_alive('nginx') }

sub base_url {
    ($_[0]->tls ? 'https' : 'http') . '://127.0.0.1:' . $_[0]->port('http');
}

sub ua {
    my ($self) = @_;
    return $self->{ua} //= HTTP::Tiny->new(
        agent => 'activity-test/1.0', timeout => 10, keep_alive => 1,
        max_redirect => 0,
    );
}

# An HTTP request to nginx: $t->http(GET => '/path', headers => {...},
# content => '...'); port => N sends it to another port (a second nginx
# instance); returns HTTP::Tiny's response hash.
sub http {
    my ($self, $method, $path, %o) = @_;
    my $ua = $o{ua} || $self->ua;
    my $base = defined $o{port}
        ? ($self->tls ? 'https' : 'http') . "://127.0.0.1:$o{port}"
        : $self->base_url;
    return $ua->request($method, $base . $path, {
        headers => $o{headers} || {},
        defined $o{content} ? (content => $o{content}) : (),
    });
}

# Sends a raw request text (bytes, for what HTTP::Tiny refuses to send)
# on a new connection; returns the raw response.
sub http_raw {
    my ($self, $request) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $self->port('http'), Timeout => 10)
        or croak "connect: $!";
    print $s $request;
    local $/;
    my $response = <$s> // '';
    close $s;
    return $response;
}


# --- Node test clients --------------------------------------------------

# Starts a client script from t/js (needs => [..., 'node']) with %opts as
# its one JSON argument; returns an ActivityTest::Node that collects the
# JSON lines the script prints and sends it commands. Its stderr goes to
# node-N.log in the test directory.
sub node {
    my ($self, $script, %opts) = @_;
    my $n = ++$self->{nnode};
    my $node = ActivityTest::Node->new(
        script => "$ROOT/t/js/$script",
        args   => [ $JSON->encode(\%opts) ],
        log    => "$self->{dir}/node-$n.log",
        name   => "$script #$n",
    );
    $self->{nodes}{$n} = $node;
    return $node;
}


# --- the end ------------------------------------------------------------

# Stops everything that is still running.
sub stop_all {
    my ($self) = @_;
    $self->nginx_stop if $self->{procs}{nginx};
    for my $name (grep { /^nginx:/ } keys %{ $self->{procs} }) {
        $self->_stop($name, 'QUIT', 15);
    }
    $_->stop for grep { defined } values %{ $self->{nodes} || {} };
    for my $name (grep { /^worker:/ } keys %{ $self->{procs} }) {
        $self->_stop($name, 'TERM', 20);
    }
    $self->redis_stop if $self->{procs}{redis};
    $self->pg_replica_stop;
    $self->pg_stop;
    $self->sentinel_stop;
}

# The lines of nginx's error log (and of every log our processes wrote to
# stderr) that must never appear: [alert], [crit], [emerg], sanitizers.
sub bad_log_lines {
    my ($self) = @_;
    my @bad;
    for my $f ($self->error_log, "$self->{dir}/nginx.stderr",
        glob("$self->{dir}/error-*.log"), glob("$self->{dir}/nginx-*.stderr"))
    {
        push @bad, grep {
            /\[(alert|crit|emerg)\]/ || /Sanitizer|runtime error:/
        } split /\n/, _slurp($f);
    }
    for my $f (glob "$self->{dir}/worker-*.log") {
        push @bad, grep { /Sanitizer|runtime error:/
            || $self->_unexpected_worker_error($_) } split /\n/, _slurp($f);
    }
    return @bad;
}

# Ends a test file: stops everything, checks the logs (one test), calls
# done_testing, removes the temporary directory unless TEST_KEEP=1.
sub done {
    my ($self) = @_;
    $self->stop_all;

    my @bad = $self->bad_log_lines;
    ok(!@bad, 'no alert, crit, emerg, sanitizer report or unexpected'
        . ' worker error in the logs')
        or diag(join "\n", @bad[0 .. ($#bad > 19 ? 19 : $#bad)]);

    $self->_report unless Test::More->builder->is_passing;
    done_testing();
    $self->{done} = 1;
    $self->_cleanup;
}

sub _report {
    my ($self) = @_;
    my $d = $self->{dir};
    for my $f ($self->error_log, glob("$d/error-*.log"),
        glob("$d/worker-*.log"), "$d/nginx.stderr", glob("$d/node-*.log"),
        "$d/redis/redis.log")
    {
        next unless -s $f;
        diag("--- tail of $f\n" . _tail($f, 15));
    }
}

sub _cleanup {
    my ($self) = @_;
    return if $self->{cleaned}++;
    $self->stop_all;
    if ($ENV{TEST_KEEP}) {
        diag("kept $self->{dir}");
    } else {
        rmtree($self->{dir});
    }
}

# --- wqueue: Redis shared with other data, Redis at maxmemory ---------

# Extra redis-server flags for the next redis_start, e.g.
# $t->redis_args('--enable-debug-command', 'yes').
sub redis_args {
    my ($self, @args) = @_;
    $self->{redis_args} = \@args;
    return $self;
}


END {
    my $status = $?;
    for my $t (@INSTANCES) {
        # not in a child process a test forked
        next if $t->{cleaned} || $t->{owner} != $$;
        $t->_report unless $t->{done};
        eval { $t->_cleanup };
    }
    $? = $status;
}


# --- issue 13 (ops): checkouts and TMPDIR anywhere ----------------------

# The test folder must be reachable by the postgres user and by nginx's
# workers (nobody): under a parent that others cannot enter (/root is
# 0700), use /tmp instead, and say so once.
my $TMP_NOTED;

sub _reachable_tmp {
    my ($base) = @_;
    my $p = abs_path($base) // $base;
    while (1) {
        my @st = stat $p;
        if (!@st || !($st[2] & 0001)) {
            diag("$base: not reachable by other users ($p),"
                . ' using /tmp for the test folders')
                unless $TMP_NOTED++;
            return '/tmp';
        }
        last if $p eq '/';
        $p = dirname($p);
    }
    return $base;
}

# A copy of the dashboard page (web/ without node_modules, plus
# socket.io-client's browser bundle at the same relative path) in the
# test folder, readable by nginx's workers wherever the checkout is.
# Returns its path.
sub web_copy {
    my ($self) = @_;
    my $dst = "$self->{dir}/web";
    my $src = "$ROOT/web";
    my $dist = 'node_modules/socket.io-client/dist';
    make_path("$dst/$dist");
    my ($rc, $out) = $self->run_cmd('sh', '-c',
        'tar -C "$1" --exclude=./node_modules -cf - . | tar -C "$2" -xf -'
        . ' && cp -r "$1/$3/." "$2/$3/" && chmod -R a+rX "$2"',
        'web_copy', $src, $dst, $dist);
    croak "copying $src to $dst failed:\n$out" if $rc;
    return $dst;
}


# --- issue 14 (tests14): tests that can fail --------------------------

# The process id of a running worker (id defaults to w1), for tests that
# signal it themselves; undef when it is not running.
sub worker_pid {
    my ($self, %o) = @_;
    return $self->{procs}{'worker:' . ($o{id} // 'w1')};
}

# A worker log line at level=error fails the test (done's final check)
# unless the test expects it: allow_worker_errors(qr/msg="redis
# unavailable"/, ...) allows the lines that match any of the patterns,
# for the rest of the test file.
sub allow_worker_errors {
    my ($self, @patterns) = @_;
    push @{ $self->{worker_errors_allowed} }, @patterns;
    return $self;
}

sub _unexpected_worker_error {
    my ($self, $line) = @_;
    return 0 unless $line =~ /^ts=\S+ level=error /;
    for my $re (@{ $self->{worker_errors_allowed} || [] }) {
        return 0 if $line =~ $re;
    }
    return 1;
}


# --- TLS mode (dash, issue 9) -------------------------------------------
# TEST_TLS=1 runs a test file over TLS: %%SSL%% in a listen directive
# becomes "ssl", %%GLOBALS_HTTP%% names a throwaway self-signed
# certificate made in the test dir with `openssl req -x509`, base_url()
# is https, ws_url() wss, and socket() opens TLS connections. Clients do
# not verify the certificate.

sub tls { $ENV{TEST_TLS} ? 1 : 0 }

sub _tls_http {
    my ($self) = @_;
    return () unless $self->tls;
    my ($crt, $key) = $self->tls_cert;
    return ("ssl_certificate $crt;", "ssl_certificate_key $key;");
}

# The certificate and key files, made on first use.
sub tls_cert {
    my ($self) = @_;
    my $crt = "$self->{dir}/tls.crt";
    my $key = "$self->{dir}/tls.key";
    unless (-s $crt && -s $key) {
        my ($rc, $out) = $self->run_cmd('openssl', 'req', '-x509',
            '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
            '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
            '-addext', 'subjectAltName=IP:127.0.0.1',
            '-keyout', $key, '-out', $crt);
        croak "openssl req -x509 failed:\n$out" if $rc;
        chmod 0644, $key;
    }
    return ($crt, $key);
}

# ws://127.0.0.1:PORT/path, or wss:// in TLS mode.
sub ws_url {
    my ($self, $path, $port) = @_;
    return ($self->tls ? 'wss' : 'ws') . '://127.0.0.1:'
        . ($port // $self->port('http')) . $path;
}

# A connected client socket to nginx (port => N, rcvbuf => bytes set
# before connecting, local => a loopback address to connect from); over
# TLS in TLS mode.
sub socket {
    my ($self, %o) = @_;
    my $port = $o{port} // $self->port('http');
    my $s = IO::Socket::INET->new(Proto => 'tcp',
        $o{local} ? (LocalAddr => $o{local}) : ()) or croak "socket: $!";
    if ($o{rcvbuf}) {
        setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(),
            $o{rcvbuf}) or croak "SO_RCVBUF: $!";
    }
    connect($s, Socket::pack_sockaddr_in($port,
        Socket::inet_aton('127.0.0.1'))) or croak "connect: $!";
    setsockopt($s, Socket::IPPROTO_TCP(), Socket::TCP_NODELAY(), 1);
    binmode $s;
    $s->autoflush(1);
    return $s unless $self->tls;
    require IO::Socket::SSL;
    IO::Socket::SSL->start_SSL($s, SSL_verify_mode => 0,
        SSL_hostname => '', Timeout => 10)
        or croak "TLS handshake: " . IO::Socket::SSL::errstr();
    return $s;
}

# Whether $sock has bytes to read within $timeout seconds; bytes a TLS
# socket already decrypted count (select() does not see them).
sub can_read {
    my ($sock, $timeout) = @_;
    return 1 if $sock->can('pending') && $sock->pending;
    require IO::Select;
    return IO::Select->new($sock)->can_read($timeout) ? 1 : 0;
}


package ActivityTest::Node;

# A running Node client: $c->lines (every JSON line so far, decoded),
# $c->wait_line(sub { $_->{t} eq 'open' }, $timeout) (the first line, old
# or new, that matches; undef after $timeout seconds), $c->send(\%cmd),
# $c->finish($timeout) (closes its stdin, waits for it to exit).

use strict;
use warnings;

use Carp qw(croak);
use IO::Handle;
use IO::Select;
use POSIX qw(WNOHANG);
use Scalar::Util ();
use Time::HiRes qw(time);

# issue 14 (tests14): every client still running, by pid; stopped when
# the test file ends however it ends (END: also after a die), or when
# its object goes away
my %LIVE;

END {
    my $status = $?;
    for my $c (grep { defined } values %LIVE) {
        eval { $c->stop };
    }
    $? = $status;
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $@, $!);
    eval { $self->stop };
}

sub new {
    my ($class, %o) = @_;

    pipe(my $out_r, my $out_w) or croak "pipe: $!";
    pipe(my $in_r, my $in_w) or croak "pipe: $!";

    my $pid = fork;
    croak "fork: $!" unless defined $pid;
    if ($pid == 0) {
        close $out_r;
        close $in_w;
        # its own process group: stop() reaches what it starts (the
        # browser driver's chromium) too
        POSIX::setpgid(0, 0);
        open STDIN, '<&', $in_r or POSIX::_exit(126);
        open STDOUT, '>&', $out_w or POSIX::_exit(126);
        open STDERR, '>>', $o{log} or POSIX::_exit(126);
        exec 'node', $o{script}, @{ $o{args} }
            or do { print STDERR "exec node: $!\n"; POSIX::_exit(127) };
    }
    POSIX::setpgid($pid, $pid);
    close $out_w;
    close $in_r;
    $in_w->autoflush(1);

    my $self = bless {
        %o,
        pid   => $pid,
        out   => $out_r,
        in    => $in_w,
        buf   => '',
        lines => [],
        eof   => 0,
        owner => $$,
    }, $class;
    $LIVE{$pid} = $self;
    Scalar::Util::weaken($LIVE{$pid});
    return $self;
}

# Reads what is available, waiting at most $timeout seconds for it.
sub _read {
    my ($self, $timeout) = @_;
    return 0 if $self->{eof};

    my $sel = IO::Select->new($self->{out});
    return 0 unless $sel->can_read($timeout);

    my $n = sysread $self->{out}, my $chunk, 65536;
    if (!$n) {
        $self->{eof} = 1;
        return 0;
    }
    $self->{buf} .= $chunk;
    while ($self->{buf} =~ s/^([^\n]*)\n//) {
        my $line = $1;
        my $v = eval { ActivityTest::from_json($line) };
        push @{ $self->{lines} }, $v // { t => 'unparsed', line => $line };
    }
    return 1;
}

sub lines {
    my ($self) = @_;
    1 while $self->_read(0);
    return @{ $self->{lines} };
}

sub wait_line {
    my ($self, $pred, $timeout) = @_;
    my $end = time + ($timeout // 10);
    my $i = 0;
    while (1) {
        my $lines = $self->{lines};
        for (; $i < @$lines; $i++) {
            local $_ = $lines->[$i];
            return $lines->[$i] if $pred->();
        }
        my $left = $end - time;
        return undef if $left <= 0 || $self->{eof};
        $self->_read($left > 0.2 ? 0.2 : $left);
    }
}

sub send {
    my ($self, $cmd) = @_;
    my $fh = $self->{in} or return;
    print $fh ActivityTest::to_json($cmd), "\n";
}

# Closes the client's stdin (it disconnects and exits), reads the rest of
# its output; kills it after $timeout seconds. Returns every line.
sub finish {
    my ($self, $timeout) = @_;
    if ($self->{in}) {
        close $self->{in};
        delete $self->{in};
    }
    my $end = time + ($timeout // 10);
    while (!$self->{eof} && time < $end) {
        $self->_read($end - time);
    }
    $self->stop;
    return @{ $self->{lines} };
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid} && $self->{owner} == $$;
    if (waitpid($self->{pid}, WNOHANG) == 0) {
        kill 'TERM', -$self->{pid};
        my ($end, $gone) = (time + 10, 0);
        until ($gone = waitpid($self->{pid}, WNOHANG) != 0) {
            last if time > $end;
            select undef, undef, undef, 0.05;
        }
        unless ($gone) {
            kill 'KILL', -$self->{pid};
            waitpid($self->{pid}, 0);
        }
    }
    delete $LIVE{ $self->{pid} };
    delete $self->{pid};
    close $self->{in} if $self->{in};
    delete $self->{in};
}

1;


# promises ----------------------------------------------------------------
# Helpers of the tests of README promises (t/redis_url.t, t/module_*.t,
# t/dashboard_promises.t, t/worker_*.t).

package ActivityTest;

# redis_start with more server arguments (args => [...]); password => PW
# when the server requires one (readiness then accepts the NOAUTH reply).
sub redis_start_opts {
    my ($self, %o) = @_;
    return $self->_redis_start($o{args}, qr/^(\+PONG|-NOAUTH)/);
}

# The path of a unix socket for Redis (pass "--unixsocket", this).
sub redis_unix_path { "$_[0]{dir}/redis/redis.sock" }

# A new Redis client of its own: password => PW, db => N, sock => PATH.
sub redis_client {
    my ($self, %o) = @_;
    require Redis;
    my $r = Redis->new(
        $o{sock} ? (sock => $o{sock})
            : (server => '127.0.0.1:' . $self->redis_port),
        defined $o{password} ? (password => $o{password}) : (),
        cnx_timeout => 2, reconnect => 2, every => 100_000,
    );
    $r->select($o{db}) if defined $o{db};
    return $r;
}

# The pid of the running Redis server (for SIGSTOP / SIGCONT).
sub redis_pid { $_[0]{procs}{redis} }

# The nginx master's pid (from nginx.pid, or nginx-NAME.pid).
sub nginx_master_pid {
    my ($self, $name) = @_;
    my $f = defined $name ? "$self->{dir}/nginx-$name.pid"
        : "$self->{dir}/nginx.pid";
    my $pid = _slurp($f);
    chomp $pid;
    return $pid =~ /^\d+$/ ? $pid : undef;
}

# The worker processes of an nginx master, sorted.
sub nginx_worker_pids {
    my ($self, $master) = @_;
    $master //= $self->nginx_master_pid or return ();
    my @pids = sort { $a <=> $b } grep { /^\d+$/ }
        map { s/\s+//gr } `ps --ppid $master -o pid=`;
    return @pids;
}

# Whether a process (not necessarily our child) is gone: no such pid, or
# a zombie that its parent has not reaped yet.
sub pid_gone {
    my ($pid) = @_;
    return 1 unless kill 0, $pid;
    my $stat = _slurp("/proc/$pid/stat");
    return $stat =~ /^\d+ \(.*\) Z /s ? 1 : 0;
}

# A value of the activity_status page at $path: metric("/status",
# 'activity_events_dropped_total') or with a label set string
# ('connection="queue"'); undef when absent.
sub status_metric {
    my ($self, $path, $name, $labels) = @_;
    my $text = $self->http(GET => $path)->{content} // '';
    my $l = defined $labels ? "\\{\Q$labels\E\\}" : '';
    return $text =~ /^\Q$name\E$l (\d+(?:\.\d+)?)$/m ? $1 : undef;
}

# The lines of a log file (nginx's error log by default) matching $re.
sub log_lines {
    my ($self, $re, $file) = @_;
    $file //= $self->error_log;
    return grep { $_ =~ $re } split /\n/, _slurp($file);
}

# A raw WebSocket client on $path (see ActivityTest::RawWS).
sub ws_raw {
    my ($self, $path, %o) = @_;
    return ActivityTest::RawWS->open($self->port($o{port_name} // 'http'),
        $path, %o);
}


package ActivityTest::RawWS;

# A WebSocket client on a raw socket that answers nothing by itself (no
# pongs): for heartbeat and protocol tests.
#   my $c = ActivityTest::RawWS->open($port, '/ws?token=...');
#   ref $c or die "status $c";          # the status when not 101
#   my ($op, $payload) = $c->next_frame(5);
#   $c->send_text('{"subscribe":[...]}'); $c->close_code(10);
# Options: headers => {...}, timeout => S, rcvbuf => BYTES, sock => a
# connected socket to use (e.g. $t->socket: TLS in TLS mode).

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use Socket qw(IPPROTO_TCP TCP_NODELAY SOL_SOCKET SO_RCVBUF inet_aton
    pack_sockaddr_in);
use Time::HiRes qw(time);

sub open {
    my ($class, $port, $path, %o) = @_;
    my $s;
    if ($o{sock}) {
        # a socket the caller connected (e.g. $t->socket, TLS in TLS mode)
        $s = $o{sock};
    } elsif ($o{rcvbuf}) {
        # a small receive buffer, set before connecting: a client that
        # does not read fills the server's queue sooner
        $s = IO::Socket::INET->new(Proto => 'tcp') or return 'socket';
        setsockopt($s, SOL_SOCKET, SO_RCVBUF, $o{rcvbuf});
        connect($s, pack_sockaddr_in($port, inet_aton('127.0.0.1')))
            or return 'connect';
    } else {
        $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $port, Timeout => 5) or return 'connect';
    }
    setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
    binmode $s;
    my $extra = join '', map { "$_: $o{headers}{$_}\r\n" }
        sort keys %{ $o{headers} || {} };
    print $s "GET $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        . "Sec-WebSocket-Version: 13\r\n$extra\r\n";

    my $c = bless { sock => $s, buf => '' }, $class;
    my $end = time + ($o{timeout} // 10);
    while ($c->{buf} !~ /\r\n\r\n/) {
        return 'timeout' if time > $end;
        $c->_fill($end - time) or return 'closed';
    }
    $c->{buf} =~ s/^(.*?)\r\n\r\n//s;
    my $head = $1;
    # deflate (issue 11): the 101's headers, for its extension answer
    $c->{head} = $head;
    my ($status) = $head =~ m{^HTTP/1\.1 (\d+)};
    return $status unless ($status // 0) == 101;
    return $c;
}

# Reads more bytes; false on EOF, error or timeout. ActivityTest::can_read
# counts the bytes a TLS socket already decrypted.
sub _fill {
    my ($c, $timeout) = @_;
    return 0 unless ActivityTest::can_read($c->{sock},
        $timeout > 0 ? $timeout : 0);
    my $n = sysread $c->{sock}, my $chunk, 65536;
    return 0 unless $n;
    $c->{buf} .= $chunk;
    return 1;
}

# The next server frame as (opcode, payload); () on EOF or timeout.
sub next_frame {
    my ($c, $timeout) = @_;
    my $end = time + ($timeout // 5);
    for (;;) {
        my $b = $c->{buf};
        if (length $b >= 2) {
            my ($b0, $b1) = unpack 'CC', $b;
            my $n = $b1 & 0x7f;
            my $hl = 2;
            if ($n == 126 && length $b >= 4) {
                $n = unpack 'n', substr($b, 2, 2);
                $hl = 4;
            } elsif ($n == 127 && length $b >= 10) {
                my ($hi, $lo) = unpack 'NN', substr($b, 2, 8);
                $n = $hi * 2**32 + $lo;
                $hl = 10;
            }
            if (($b1 & 0x7f) < 126 || $hl > 2) {
                die 'server frames are not masked' if $b1 & 0x80;
                if (length $b >= $hl + $n) {
                    substr($c->{buf}, 0, $hl + $n, '');
                    # deflate (issue 11): RSV1 of the frame returned
                    $c->{rsv1} = ($b0 & 0x40) ? 1 : 0;
                    return ($b0 & 0x0f, substr($b, $hl, $n));
                }
            }
        }
        return () if time > $end;
        $c->_fill($end - time) or return ();
    }
}

# A masked client frame: frame(OPCODE, PAYLOAD[, fin => 0, rsv => 0x40]).
sub frame {
    my ($op, $payload, %o) = @_;
    $payload //= '';
    my $fin = exists $o{fin} ? $o{fin} : 1;
    my $n = length $payload;
    my $h = pack 'C', ($fin ? 0x80 : 0) | ($o{rsv} // 0) | $op;
    if ($n < 126) {
        $h .= pack 'C', 0x80 | $n;
    } elsif ($n <= 0xffff) {
        $h .= pack 'Cn', 0x80 | 126, $n;
    } else {
        $h .= pack 'CNN', 0x80 | 127, 0, $n;
    }
    my $key = pack 'N', 0x1d2c3b4a;
    my $mask = substr($key x (int($n / 4) + 1), 0, $n);
    return $h . $key . ($payload ^ $mask);
}

sub send_frame {
    my ($c, $op, $payload) = @_;
    local $SIG{PIPE} = 'IGNORE';
    return syswrite $c->{sock}, frame($op, $payload);
}

sub send_text { $_[0]->send_frame(1, $_[1]) }

# Every frame up to the close frame; returns (code, reason, @frames seen
# before as [op, payload]); code is 'eof' or 'timeout' when none came.
sub close_code {
    my ($c, $timeout) = @_;
    my $end = time + ($timeout // 5);
    my @seen;
    while (time < $end) {
        my ($op, $data) = $c->next_frame($end - time);
        unless (defined $op) {
            return ((time >= $end ? 'timeout' : 'eof'), '', @seen);
        }
        if ($op == 8) {
            return ('none', '', @seen) if length $data < 2;
            return (unpack('n', $data), substr($data, 2), @seen);
        }
        push @seen, [ $op, $data ];
    }
    return ('timeout', '', @seen);
}

# The next text frame matching $re within $timeout (other frames are
# skipped, pings unanswered); undef otherwise.
sub next_text {
    my ($c, $re, $timeout) = @_;
    my $end = time + ($timeout // 5);
    while (time < $end) {
        my ($op, $data) = $c->next_frame($end - time);
        return undef unless defined $op;
        return $data if $op == 1 && $data =~ $re;
        return undef if $op == 8;
    }
    return undef;
}

sub close_socket { close $_[0]{sock} if $_[0]{sock}; delete $_[0]{sock} }

1;


# pollloop: nginx under level-triggered event methods -------------------

package ActivityTest;

# An nginx binary that has the poll and select event methods (built with
# --with-poll_module --with-select_module; Debian's has neither): the
# path in TEST_NGINX_POLL, or undef with the reason.
sub poll_nginx {
    my $bin = $ENV{TEST_NGINX_POLL}
        or return (undef, 'TEST_NGINX_POLL not set: an nginx built with'
            . ' --with-poll_module --with-select_module is needed (see'
            . ' README "Building")');
    return (undef, "TEST_NGINX_POLL=$bin: not an executable") unless -x $bin;
    my $v = `"$bin" -V 2>&1`;
    for my $m (qw(poll select)) {
        return (undef, "TEST_NGINX_POLL=$bin: built without"
            . " --with-${m}_module") unless $v =~ /--with-${m}_module/;
    }
    return ($bin);
}

# The next configurations written say events { use METHOD; } (undef: the
# default again); nginx => PATH runs that nginx binary from now on, for
# every instance of this test file.
sub event_method {
    my ($self, $method, %o) = @_;
    $self->{event_method} = $method;
    $BIN{nginx} = $o{nginx} if defined $o{nginx};
    return $self;
}

# CPU time (user + system) a process has used so far, in seconds.
sub cpu_seconds {
    my ($pid) = @_;
    my $stat = _slurp("/proc/$pid/stat");
    $stat =~ s/^.*\)\s+//s or return undef;
    my @f = split ' ', $stat;
    my $hz = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
    # fields 14 and 15 (utime, stime), counted after the "(comm)"
    return ($f[11] + $f[12]) / $hz;
}

# --- issue 12 §3 (sentinel): a master, a replica, three sentinels -------
# sentinel_start(name => 'mymaster') starts Redis (the master, on
# redis_port, as redis_start does), a replica on port('replica')
# (--replicaof) and three redis-sentinel processes on port('sentinel1')
# .. port('sentinel3'), each with its own writable config file, quick to
# fail over (down-after-milliseconds 1000, failover-timeout 5000); waits
# until the sentinels know the replica and each other, and the replica
# is in sync.

sub sentinel_name { $_[0]{sentinel_name} // 'mymaster' }

# redis+sentinel://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/NAME[/db]
sub sentinel_url {
    my ($self, %o) = @_;
    return 'redis+sentinel://'
        . (defined $o{password} ? ":$o{password}@" : '')
        . join(',', map { '127.0.0.1:' . $self->port("sentinel$_") } 1 .. 3)
        . '/' . $self->sentinel_name
        . (defined $o{db} ? "/$o{db}" : '');
}

sub sentinel_start {
    my ($self, %o) = @_;
    $self->{sentinel_name} = $o{name} if defined $o{name};
    my $name = $self->sentinel_name;
    my $bin = _which('redis-sentinel') || '/usr/bin/redis-sentinel';
    croak "missing: redis-sentinel (Debian package redis-sentinel)"
        unless -x $bin;

    # a replica syncs at once (Redis 7 waits 5 s for others to join)
    $self->redis_args('--repl-diskless-sync-delay', '0')
        unless $self->{redis_args};
    $self->redis_start;

    $self->sentinel_replica_start;

    for my $i (1 .. 3) {
        my $sd = "$self->{dir}/sentinel$i";
        make_path($sd);
        my $port = $self->port("sentinel$i");
        open my $fh, '>', "$sd/sentinel.conf" or croak "$sd: $!";
        print $fh <<"EOC";
bind 127.0.0.1
port $port
daemonize no
dir $sd
logfile ""
sentinel monitor $name 127.0.0.1 @{[ $self->redis_port ]} 2
sentinel down-after-milliseconds $name 1000
sentinel failover-timeout $name 5000
sentinel parallel-syncs $name 1
EOC
        close $fh;
        $self->_spawn("sentinel:$i", "$sd/sentinel.log", $bin,
            "$sd/sentinel.conf");
    }

    my $ok = wait_for {
        for my $i (1 .. 3) {
            my $r = eval { $self->sentinel_client($i) } or return 0;
            my @l = eval { $r->sentinel('master', $name) };
            @l = @{ $l[0] } if @l == 1 && ref $l[0] eq 'ARRAY';
            my %m = @l % 2 ? () : @l;
            return 0 unless ($m{'num-slaves'} // 0) == 1
                && ($m{'num-other-sentinels'} // 0) == 2;
        }
        return 1;
    } 30, 0.2;
    croak "the sentinels did not find the replica and each other"
        unless $ok;
    croak "the replica did not get in sync"
        unless wait_for { $self->sentinel_replica_ready($self->port('replica')) }
            30, 0.2;
    return $self;
}

# (Re)starts the replica process on port('replica'), replica of
# redis_port.
sub sentinel_replica_start {
    my ($self) = @_;
    my $d = "$self->{dir}/replica";
    make_path($d);
    $self->_spawn('redis:replica', "$d/redis.log", $BIN{redis},
        '--bind', '127.0.0.1', '--port', $self->port('replica'),
        '--save', '', '--appendonly', 'no', '--daemonize', 'no',
        '--dir', $d, '--logfile', '', '--repl-diskless-sync-delay', '0',
        '--replicaof', '127.0.0.1', $self->redis_port);
    return $self;
}

# One more sentinel, on port("sentinel-$label"), monitoring $host:$port
# as $name, with extra config @lines; returns its port.
sub sentinel_start_extra {
    my ($self, $label, $name, $host, $port, @lines) = @_;
    my $bin = _which('redis-sentinel') || '/usr/bin/redis-sentinel';
    my $sd = "$self->{dir}/sentinel-$label";
    make_path($sd);
    my $sport = $self->port("sentinel-$label");
    open my $fh, '>', "$sd/sentinel.conf" or croak "$sd: $!";
    print $fh join "\n", "bind 127.0.0.1", "port $sport", "daemonize no",
        "dir $sd", 'logfile ""', @lines,
        "sentinel monitor $name $host $port 1", '';
    close $fh;
    $self->_spawn("sentinel:$label", "$sd/sentinel.log", $bin,
        "$sd/sentinel.conf");
    wait_for { _port_open($sport) } 10 or croak "sentinel $label: no port";
    return $sport;
}

# A Redis client on sentinel $i (1..3).
sub sentinel_client {
    my ($self, $i) = @_;
    require Redis;
    return Redis->new(server => '127.0.0.1:' . $self->port("sentinel$i"),
        cnx_timeout => 2, reconnect => 0);
}

# The port of the master as sentinel $i (default 1) names it, or undef.
sub sentinel_master_port {
    my ($self, $i) = @_;
    my $r = eval { $self->sentinel_client($i // 1) } or return undef;
    my @a = eval { $r->sentinel('get-master-addr-by-name',
        $self->sentinel_name) };
    return ref $a[0] eq 'ARRAY' ? $a[0][1] : $a[1];
}

# A Redis client on whichever server the sentinels name master now.
sub sentinel_master_client {
    my ($self) = @_;
    my $port = $self->sentinel_master_port or croak "no master named";
    require Redis;
    return Redis->new(server => "127.0.0.1:$port", cnx_timeout => 2,
        reconnect => 2, every => 100_000);
}

# The name under which _spawn knows the Redis process on $port.
sub sentinel_proc_of {
    my ($self, $port) = @_;
    return $port == $self->redis_port ? 'redis'
        : $port == $self->port('replica') ? 'redis:replica' : undef;
}

# Whether every sentinel sees the server on $port as a replica in sync
# (flags "slave", master link "ok"): one it may promote.
sub sentinel_replica_ready {
    my ($self, $port) = @_;
    for my $i (1 .. 3) {
        my $r = eval { $self->sentinel_client($i) } or return 0;
        my @l = eval { $r->sentinel('replicas', $self->sentinel_name) };
        @l = @{ $l[0] } if @l == 1 && ref $l[0] eq 'ARRAY'
            && ref $l[0][0] eq 'ARRAY';
        my $ok = grep {
            my %h = @$_;
            ($h{port} // 0) == $port && ($h{flags} // '') eq 'slave'
                && ($h{'master-link-status'} // '') eq 'ok'
        } grep { ref eq 'ARRAY' } @l;
        return 0 unless $ok;
    }
    return 1;
}

# Stops the replica and the sentinels (stop_all does the master).
sub sentinel_stop {
    my ($self) = @_;
    for my $name (grep { /^(sentinel:|redis:replica)/ }
        keys %{ $self->{procs} })
    {
        $self->_stop($name, 'TERM', 10);
    }
}

# --- scaleout (issue 12 section 4): a streaming replica ------------------
# A hot standby of the harness's PostgreSQL for tests of --pg-read: made
# with pg_basebackup -R (streaming replication from pg_start's server,
# whose initdb -A trust already lets loopback replicate), started on a
# port of its own, stopped by stop_all.

package ActivityTest;

sub pg_replica_port { $_[0]->port('pg_replica') }

sub pg_replica_url {
    my ($self) = @_;
    return 'postgresql://postgres@127.0.0.1:' . $self->pg_replica_port
        . '/activity';
}

# Makes the replica (first call only) and starts it; returns once it
# accepts connections as a standby.
sub pg_replica_start {
    my ($self) = @_;
    my $d = "$self->{dir}/pg_replica";
    my $port = $self->pg_replica_port;
    my ($uid, $gid) = (getpwnam 'postgres')[2, 3];

    croak "pg_start first" unless $self->{pg_running};

    unless (-d "$d/data") {
        make_path($d);
        chown $uid, $gid, $d or croak "chown $d: $!";
        my ($rc, $out) = $self->_as_postgres("$BIN{pg}/pg_basebackup",
            '-h', '127.0.0.1', '-p', $self->pg_port, '-U', 'postgres',
            '-D', "$d/data", '-R', '-X', 'stream', '--no-sync',
            '-c', 'fast');
        croak "pg_basebackup failed:\n$out" if $rc;
    }

    my ($rc, $out) = $self->_as_postgres("$BIN{pg}/pg_ctl",
        '-D', "$d/data", '-w', '-t', '60', '-l', "$d/postgresql.log",
        '-o', "-c listen_addresses=127.0.0.1 -p $port -k $d"
            . " -c fsync=off -c hot_standby=on -c timezone=UTC"
            . " -c log_timezone=UTC -c max_connections=50",
        'start');
    croak "pg_ctl start (replica) failed:\n$out\n"
        . _tail("$d/postgresql.log", 20) if $rc;
    $self->{pg_replica_running} = 1;
    return $self;
}

sub pg_replica_stop {
    my ($self) = @_;
    return unless $self->{pg_replica_running};
    if ($self->{replica_dbh}) {
        eval { $self->{replica_dbh}->disconnect };
        delete $self->{replica_dbh};
    }
    my ($rc, $out) = $self->_as_postgres("$BIN{pg}/pg_ctl",
        '-D', "$self->{dir}/pg_replica/data", '-m', 'fast', '-w', 'stop');
    diag("pg_ctl stop (replica): $out") if $rc;
    $self->{pg_replica_running} = 0;
}

# A DBI handle on the replica's activity database (RaiseError on). Its
# statements stop after 30 s: a read can wait behind a lock the standby
# replays (and holds while replay is paused), and a test must not hang.
sub replica_dbh {
    my ($self) = @_;
    return $self->{replica_dbh}
        if $self->{replica_dbh} && $self->{replica_dbh}->ping;
    require DBI;
    $self->{replica_dbh} = DBI->connect(
        'dbi:Pg:dbname=activity;host=127.0.0.1;port='
            . $self->pg_replica_port, 'postgres', '',
        { RaiseError => 1, AutoCommit => 1, PrintError => 0,
          pg_server_prepare => 0 },
    );
    $self->{replica_dbh}->do("SET statement_timeout = '30s'");
    return $self->{replica_dbh};
}

# The first column of the first row, on the replica.
sub replica_value {
    my ($self, $sql, @bind) = @_;
    my ($v) = $self->replica_dbh->selectrow_array($sql, undef, @bind);
    return $v;
}

# Waits until the replica has replayed everything the primary has
# written so far; false after $timeout seconds (60).
sub pg_replica_caught_up {
    my ($self, $timeout) = @_;
    my $lsn = $self->sql_value('SELECT pg_current_wal_lsn()::text');
    return wait_for(sub {
        eval { $self->replica_value('SELECT pg_last_wal_replay_lsn()'
            . ' >= ?::pg_lsn', $lsn) } }, $timeout // 60);
}


1;
