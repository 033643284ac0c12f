#!/usr/bin/perl

# Fault: Redis is stopped for 10 s under a steady tracked load and
# started again on the same port (with its data: it saves on shutdown).
# nginx buffers and resends, the worker reconnects: every request
# answered 200 is stored exactly once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for);

use ActivityLoad;

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);

$t->write_conf(ActivityLoad::nginx_conf());
$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => [ '--batch', 200 ]);
$t->nginx_start;

# a real Redis keeps its data across a restart: save on shutdown
$t->redis->config_set('save', '3600 1');

my $load = ActivityLoad->start($t, tag => 'redis', seconds => 20,
    rate => 300);

$load->at(4);
$t->allow_worker_errors(qr/msg="redis unavailable"/);
$t->redis_stop;
note('Redis stopped');

$load->at(14);
$t->redis_start;
note('Redis started');

my $res = $load->finish;
ok($t->worker_running, 'the worker rode the outage out');
ok($t->nginx_running, 'nginx still running');
ActivityLoad::check_stored($t, $res, 'redis');

$t->done;
