#!/usr/bin/perl

# t/dashboard_socketio.t again, over TLS (the harness's TLS mode).

use strict;
use warnings;

use FindBin;

$ENV{TEST_TLS} = 1;

my $file = "$FindBin::Bin/dashboard_socketio.t";
do $file;
die $@ if $@;
