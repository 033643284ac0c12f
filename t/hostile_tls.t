#!/usr/bin/perl

# t/hostile.t again, over TLS (the harness's TLS mode).

use strict;
use warnings;

use FindBin;

$ENV{TEST_TLS} = 1;

my $file = "$FindBin::Bin/hostile.t";
do $file;
die $@ if $@;
