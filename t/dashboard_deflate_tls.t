#!/usr/bin/perl

# t/dashboard_deflate.t again, over TLS (the harness's TLS mode).

use strict;
use warnings;

use FindBin;
use Test::More;

$ENV{TEST_TLS} = 1;

# the TLS mode makes its throwaway certificate with openssl
like(`openssl version 2>&1`, qr/^OpenSSL \d/, 'openssl is there for TLS');

my $file = "$FindBin::Bin/dashboard_deflate.t";
do $file;
die $@ if $@;
