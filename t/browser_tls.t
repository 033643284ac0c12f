#!/usr/bin/perl

# t/browser.t again, over TLS (the harness's TLS mode).

use strict;
use warnings;

use FindBin;

$ENV{TEST_TLS} = 1;

my $file = "$FindBin::Bin/browser.t";
do $file;
die $@ if $@;
