"""What is particular to the io_uring backend (danga/pollers/io_uring.py).

The contract every backend meets is in test_pollers.py, and the whole suite
runs on io_uring through the ``backend`` fixture.  These tests check what
the ring adds on top: level-triggered reports from one-shot polls re-armed
each pass, generations (a cancelled poll's completion never reaches the
next owner of its fd number), the file really closing after
``unregister`` (an armed poll holds it), and the fall-back to epoll with one
log line where the kernel refuses io_uring (for real, under a seccomp
filter in a child process).  Each test makes a ring of its
own, whatever the fixture's backend.
"""
import logging
import platform
import socket
import subprocess
import sys
import time

import pytest

import danga
from danga import pollers
from danga.pollers import READ, WRITE

from .helpers import pair, pair_at, pattern, run, run_for

BUILT = "io_uring" in pollers.available()
pytestmark = pytest.mark.skipif(
    not BUILT,
    reason="io_uring is Linux-only" if not sys.platform.startswith("linux")
    else "io_uring not built or refused here: apt-get install liburing-dev, then pip install -e .")


@pytest.fixture
def ring():
    from danga.pollers.io_uring import IoUringPoller
    p = IoUringPoller()
    yield p
    p.close()


def pairs(events):
    it = iter(events)
    return dict(zip(it, it))


def test_unread_data_is_reported_every_pass(ring):
    a, b = socket.socketpair()
    with a, b:
        ring.register(a.fileno(), READ)
        b.send(b"x")
        for _ in range(3):  # never read: reported again each pass (level-triggered)
            assert pairs(ring.poll(1000)) == {a.fileno(): READ}
        a.recv(1)
        assert ring.poll(50) == []
        ring.unregister(a.fileno())


def test_a_cancelled_poll_never_reaches_the_numbers_next_owner(ring):
    a, b = socket.socketpair()
    ring.register(a.fileno(), READ | WRITE)  # armed at the next wait; writable at once
    assert pairs(ring.poll(1000)) == {a.fileno(): WRITE}
    fd = a.fileno()
    ring.modify(fd, READ)  # the re-armed READ|WRITE poll is cancelled...
    ring.unregister(fd)
    a.close()
    b.close()
    c, d = pair_at(fd)  # ...and the number goes to a new, idle socket
    with c, d:
        ring.register(fd, READ)
        assert ring.poll(100) == []  # nothing of the old socket's WRITE
        d.send(b"y")
        assert pairs(ring.poll(1000)) == {fd: READ}
        ring.unregister(fd)


def test_changed_interest_is_armed_before_the_wait(ring):
    a, b = socket.socketpair()
    with a, b:
        ring.register(a.fileno(), READ)
        assert ring.poll(50) == []
        ring.modify(a.fileno(), READ | WRITE)
        assert pairs(ring.poll(1000)) == {a.fileno(): WRITE}
        ring.modify(a.fileno(), READ)
        assert ring.poll(50) == []
        ring.unregister(a.fileno())


def test_the_peer_sees_the_close_of_an_unregistered_socket(ring):
    a, b = socket.socketpair()
    with b:
        ring.register(a.fileno(), READ)
        assert ring.poll(0) == []  # its poll is armed now, holding the file
        ring.unregister(a.fileno())
        a.close()
        b.settimeout(5)
        assert b.recv(10) == b""  # the file is gone, not kept open by the ring


def test_a_number_closed_behind_its_back_is_reported_as_an_error(ring):
    a, b = socket.socketpair()
    with b:
        fd = a.fileno()
        ring.register(fd, READ)
        a.close()  # before its poll was ever armed
        assert pairs(ring.poll(1000)) == {fd: pollers.ERR}
        ring.unregister(fd)


def test_refused_io_uring_falls_back_to_epoll_with_one_log_line(monkeypatch, caplog):
    from danga.pollers import io_uring
    monkeypatch.setattr(io_uring, "_refused", "io_uring_setup: Operation not permitted")  # the sysctl's refusal
    monkeypatch.setattr(pollers, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="danga"):
        first, second = pollers.create("io_uring"), pollers.create("io_uring")
    try:
        assert first.name == second.name == "epoll"
        lines = [r.getMessage() for r in caplog.records]
        assert lines == ["danga: the kernel refuses io_uring (io_uring_setup: Operation not permitted); "
                         "using epoll instead"]
        assert "io_uring" not in pollers.available()
    finally:
        first.close()
        second.close()


SECCOMP_CHILD = r"""
import ctypes, logging, struct, sys
# A seccomp filter that makes io_uring_setup fail with EPERM, as container runtimes do (x86-64 numbers).
LD_NR, JEQ, RET = 0x20, 0x15, 0x06
prog = [(LD_NR, 0, 0, 0), (JEQ, 0, 1, 425), (RET, 0, 0, 0x00050000 | 1), (RET, 0, 0, 0x7FFF0000)]
buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *insn) for insn in prog))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(Fprog(len(prog), ctypes.addressof(buf))), 0, 0) == 0, ctypes.get_errno()
logging.basicConfig(stream=sys.stdout, format="%(message)s")
from danga import pollers
print("available:", pollers.available())
print("got:", pollers.create("io_uring").name, pollers.create("io_uring").name)
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter uses x86-64 system call numbers")
def test_a_kernel_that_refuses_io_uring_gets_epoll_and_one_log_line():
    """A real refusal: a child process whose seccomp filter fails io_uring_setup with EPERM."""
    out = subprocess.run([sys.executable, "-c", SECCOMP_CHILD], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "available: ['epoll', 'poll']", lines
    assert lines[1:] == ["danga: the kernel refuses io_uring (io_uring_setup: Operation not permitted); "
                         "using epoll instead",
                         "got: epoll epoll"], lines


# -- receives completed by the ring (RecvChannel) ------------------------------------
# These run danga Sockets on the loop, so only under the io_uring parameter of
# conftest's backend fixture.


@pytest.fixture
def uring_loop(backend):
    if backend != "io_uring":
        pytest.skip("the loop runs on another backend in this parameter")
    if not danga.loop.current().poller().completes_receives:
        pytest.skip("this kernel has no provided-buffer rings (Linux 5.19+)")


class Sipper(danga.Socket):
    """Reads ``size`` bytes per event, keeping them in ``got``."""

    def __init__(self, sock, size=3, reading=True):
        super().__init__(sock)
        self.size, self.got, self.events, self.eof = size, bytearray(), 0, False
        self.watch_read(reading)

    def event_read(self):
        self.events += 1
        if self.size:
            data = self.read(self.size)
            if data is None:
                self.eof = True
                self.watch_read(False)
            elif data:
                self.got += data


def channel_of(s):
    return s._Socket__io


def test_a_connected_stream_socket_receives_through_the_ring(uring_loop):
    from danga.pollers.io_uring import RecvChannel
    a, b = pair()
    with b:
        s = Sipper(a)
        assert isinstance(channel_of(s), RecvChannel)
        lst = danga.listen("tcp://127.0.0.1:0", lambda c: None)
        try:
            assert not isinstance(channel_of(lst), RecvChannel)  # a listening socket keeps readiness
        finally:
            lst.close()
        s.close()


def test_bytes_left_in_the_channel_are_offered_again_until_read(uring_loop):
    """Level-triggered over a buffer: one send, read 3 bytes per event, all of it arrives in order."""
    a, b = pair()
    with b:
        s = Sipper(a, size=3)
        b.sendall(b"0123456789")
        run(lambda: len(s.got) == 10)
        assert bytes(s.got) == b"0123456789"
        assert s.events >= 4
        b.shutdown(socket.SHUT_WR)
        run(lambda: s.eof)  # EOF after all the data
        s.close()


def test_a_channel_that_is_not_read_stops_receiving(uring_loop):
    """The ring's flow control: a socket that never reads holds at most about
    HOLD bytes (plus what one wait received), and the peer's sends then wait in the
    kernel, as with readiness; reading resumes the flow, in order."""
    from danga.pollers import io_uring
    a, b = pair()
    with b:
        b.setblocking(False)
        s = Sipper(a, size=0)  # reading, but event_read takes nothing
        sent = 0
        chunk = pattern(65536)
        stalled = 0
        while sent < 64 << 20 and stalled < 20:
            try:
                sent += b.send(chunk[sent % 65536:] + chunk[:sent % 65536])
                stalled = 0
            except BlockingIOError:
                stalled += 1
                run_for(0.01)
        ch = channel_of(s)
        held = len(ch.buf) + ch.queued
        assert ch.held and held >= io_uring.HOLD
        assert sent < 32 << 20, f"the peer sent {sent} bytes into a socket that reads nothing"
        s.size = 1 << 20
        got = sent

        def drained():
            nonlocal got
            return len(s.got) == got
        run(drained, timeout=30)
        assert bytes(s.got) == (chunk * (sent // 65536 + 1))[:sent]
        s.close()


def test_received_bytes_never_reach_the_next_owner_of_the_number(uring_loop):
    a, b = pair()
    s = Sipper(a, size=0)
    fd = s.fd
    b.sendall(b"old")
    run(lambda: len(channel_of(s).buf) == 3)  # received by the ring, unread
    b.sendall(b"more")  # perhaps received too, perhaps in flight
    s.close()
    b.close()
    c, d = pair_at(fd)
    with d:
        t = Sipper(c, size=100)
        d.sendall(b"new")
        run(lambda: len(t.got) >= 3)
        run_for(0.05)
        assert bytes(t.got) == b"new"
        t.close()


def test_a_stolen_socket_keeps_the_bytes_the_ring_received(uring_loop):
    a, b = pair()
    with b:
        s = Sipper(a, size=0)
        b.sendall(b"hello")
        run(lambda: channel_of(s).buf == b"hello")  # in the channel, not in the kernel
        raw = s.steal_socket()
        t = Sipper(raw, size=100)
        run(lambda: len(t.got) == 5)
        assert bytes(t.got) == b"hello"
        t.close()


def test_a_socket_that_reads_its_descriptor_itself_keeps_its_bytes_in_the_kernel(uring_loop):
    class Peeker(Sipper):
        reads_descriptor = True

    a, b = pair()
    with b:
        s = Peeker(a, size=0)
        assert channel_of(s) is a
        b.sendall(b"peek")
        run(lambda: s.events)
        assert a.recv(10, socket.MSG_PEEK) == b"peek"
        s.close()


def test_read_without_read_interest_takes_what_the_kernel_has(uring_loop):
    a, b = pair()
    with b:
        s = Sipper(a, reading=False)
        b.sendall(b"now")
        time.sleep(0.05)
        assert s.read(10) == b"now"  # no receive armed: the socket's own recv
        s.watch_read(True)
        b.sendall(b"later")
        s.size = 10
        run(lambda: len(s.got) == 5)
        assert bytes(s.got) == b"later"
        s.close()
