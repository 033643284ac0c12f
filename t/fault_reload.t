#!/usr/bin/perl

# Fault: nginx is reloaded twice (SIGHUP to the master) under a steady
# tracked load: the old worker processes hand over, their buffered
# events are not lost, every request answered 200 is stored once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use ActivityTest qw(wait_for);

use ActivityLoad;

my $t = ActivityTest->new(needs => [qw(module redis pg worker)]);

$t->write_conf(ActivityLoad::nginx_conf(workers => 2));
$t->redis_start;
$t->pg_start;
$t->worker_migrate;
$t->worker_start(args => [ '--batch', 200 ]);
$t->nginx_start;

sub master_pid {
    open my $fh, '<', $t->dir . '/nginx.pid' or return;
    my $pid = <$fh>;
    chomp $pid;
    return $pid;
}

my $load = ActivityLoad->start($t, tag => 'reload', seconds => 15,
    rate => 300);

for my $at (4, 9) {
    $load->at($at);
    ok(kill('HUP', master_pid()), "reload at ${at}s");
}

my $res = $load->finish;
ok($t->nginx_running, 'nginx still running');
ActivityLoad::check_stored($t, $res, 'reload');

my $elog = do { local (@ARGV, $/) = $t->error_log; <> };
my %pids = map { $_ => 1 } $elog =~ /start worker process (\d+)/g;
ok(keys %pids >= 6, 'two new generations of worker processes started');

$t->done;
