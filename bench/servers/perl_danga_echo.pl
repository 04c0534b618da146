#!/usr/bin/perl
# Echo on Perl's real Danga::Socket (1.62, Debian libdanga-socket-perl).
use strict;
use warnings;
use IO::Socket::INET;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Danga::Socket;
$SIG{PIPE} = 'IGNORE';

package EchoConn;
use base 'Danga::Socket';
sub new {
    my ($class, $sock) = @_;
    my $self = fields::new($class);
    $self->SUPER::new($sock);
    $self->watch_read(1);
    return $self;
}
sub event_read {
    my $self = shift;
    my $bref = $self->read(65536);
    return $self->close('eof') unless defined $bref;
    $self->write($bref) if length $$bref;
}
sub event_hup { $_[0]->close('hup') }
sub event_err { $_[0]->close('err') }

package main;
my $port = 7000;
for my $i (0 .. $#ARGV) { $port = $ARGV[$i + 1] if $ARGV[$i] eq '--port' }
my $ls = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Listen => 4096,
                               ReuseAddr => 1, Blocking => 0) or die "listen: $!";
Danga::Socket->AddOtherFds(fileno($ls) => sub {
    for (1 .. 64) {
        my $c = $ls->accept or return;
        IO::Handle::blocking($c, 0);
        setsockopt($c, IPPROTO_TCP, TCP_NODELAY, 1);
        EchoConn->new($c);
    }
});
$| = 1;
print "listening on 127.0.0.1:$port\n";
Danga::Socket->EventLoop;
