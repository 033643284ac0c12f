package ActivityPrometheus;

# A strict reader of the Prometheus text exposition format (0.0.4), for
# the tests of nginx's activity_status and the worker's /metrics: HELP
# and TYPE well-formed and once per family, samples grouped by family,
# counters named *_total, no duplicate series, histograms with
# cumulative buckets ending in +Inf equal to _count.

use strict;
use warnings;

use Exporter 'import';
our @EXPORT_OK = qw(parse_prometheus);

my $name_re = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
my $label_re = qr/[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"/;
my $value_re = qr/[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?
    |\.[0-9]+(?:[eE][-+]?[0-9]+)?|NaN|Inf)/x;

# Returns (\%samples, \@errors); samples maps 'name{labels}' (labels
# as sent) to its value.
sub parse_prometheus {
    my ($text) = @_;
    my (%samples, @errors, %type, %help, %seen_family, $current);

    push @errors, 'does not end with a newline' unless $text =~ /\n\z/;

    my $n = 0;
    for my $line (split /\n/, $text) {
        $n++;
        if ($line =~ /^#\s*(HELP|TYPE)\s/) {
            if ($line =~ /^# HELP ($name_re) (.*)$/) {
                push @errors, "line $n: second HELP for $1" if $help{$1}++;
            } elsif ($line =~
                /^# TYPE ($name_re) (counter|gauge|histogram|summary|untyped)$/)
            {
                push @errors, "line $n: second TYPE for $1" if $type{$1};
                push @errors, "line $n: TYPE after samples of $1"
                    if $seen_family{$1};
                $type{$1} = $2;
            } else {
                push @errors, "line $n: malformed: $line";
            }
            next;
        }
        next if $line =~ /^#/;
        if ($line !~ /^($name_re)(\{(?:$label_re(?:,$label_re)*,?)?\})?
            [ \t]+($value_re)(?:[ \t]+-?[0-9]+)?$/x)
        {
            push @errors, "line $n: malformed: $line";
            next;
        }
        my ($name, $labels, $value) = ($1, $2 // '', $3);
        my $family = $name;
        $family =~ s/_(?:bucket|sum|count)$//
            unless $type{$family};
        push @errors, "line $n: $name has no TYPE" unless $type{$family};
        push @errors, "line $n: samples of $family are not grouped"
            if $seen_family{$family} && ($current // '') ne $family;
        push @errors, "line $n: counter $name does not end in _total"
            if ($type{$family} // '') eq 'counter' && $name !~ /_total$/;
        $seen_family{$family} = 1;
        $current = $family;
        push @errors, "line $n: duplicate series $name$labels"
            if exists $samples{"$name$labels"};
        $samples{"$name$labels"} = $value;
    }
    for my $h (grep { $type{$_} eq 'histogram' } keys %type) {
        my @le = sort { $a->[0] <=> $b->[0] }
            map { /^\Q$h\E_bucket\{le="([^"]+)"\}$/
                    && $1 ne '+Inf' ? [ $1, $samples{$_} ] : () }
            keys %samples;
        my $prev = 0;
        for (@le) {
            push @errors, "$h: buckets not cumulative" if $_->[1] < $prev;
            $prev = $_->[1];
        }
        my $inf = $samples{"${h}_bucket{le=\"+Inf\"}"};
        push @errors, "$h: no +Inf bucket" unless defined $inf;
        push @errors, "$h: +Inf bucket below a finite one"
            if defined $inf && $inf < $prev;
        push @errors, "$h: +Inf bucket differs from _count"
            unless defined $inf && defined $samples{"${h}_count"}
                && $inf == $samples{"${h}_count"};
    }

    return (\%samples, \@errors);
}

1;
