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
import os
import platform
import socket
import subprocess
import sys

import pytest

from danga import pollers
from danga.pollers import READ, WRITE

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
    c, d = socket.socketpair()  # ...and the number goes to a new, idle socket
    with c, d:
        if c.fileno() != fd:
            os.dup2(c.fileno(), fd)
            c.close()
            c = socket.socket(fileno=fd)
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
