"""The poller contract, run against each backend (the ``backend`` fixture)."""
import errno
import os
import signal
import socket
import struct
import tempfile
import threading
import time

import pytest

from danga import pollers
from danga.pollers import HUP, READ, WRITE


@pytest.fixture
def poller(backend):
    p = pollers.create(backend)
    yield p
    p.close()


def pairs(events):
    it = iter(events)
    return dict(zip(it, it))


def test_read_write_interest(poller):
    a, b = socket.socketpair()
    with a, b:
        poller.register(a.fileno(), READ)
        assert poller.poll(0) == []
        b.send(b"x")
        assert pairs(poller.poll(1000)) == {a.fileno(): READ}
        poller.modify(a.fileno(), READ | WRITE)
        assert pairs(poller.poll(1000)) == {a.fileno(): READ | WRITE}
        poller.modify(a.fileno(), 0)
        assert poller.poll(0) == []
        poller.unregister(a.fileno())
        poller.unregister(a.fileno())  # twice: harmless


def test_hangup_is_reported_without_interest(poller):
    a, b = socket.socketpair()
    with a:
        poller.register(a.fileno(), 0)
        if b.family != getattr(socket, "AF_UNIX", None):
            # Windows: socketpair() is TCP, whose orderly close is a FIN, not a hang-up: reset instead
            b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("hh", 1, 0))
        b.close()
        mask = pairs(poller.poll(1000))[a.fileno()]
        assert mask & HUP


def test_many_descriptors(poller):
    socks = [socket.socketpair() for _ in range(300)]
    try:
        for a, _ in socks:
            poller.register(a.fileno(), READ)
        for i, (_, b) in enumerate(socks):
            if i % 3 == 0:
                b.send(b"!")
        ready = pairs(poller.poll(1000))
        assert set(ready) == {a.fileno() for i, (a, _) in enumerate(socks) if i % 3 == 0}
        for a, _ in socks[::2]:
            poller.unregister(a.fileno())
        ready = pairs(poller.poll(1000))
        assert set(ready) == {a.fileno() for i, (a, _) in enumerate(socks) if i % 3 == 0 and i % 2}
    finally:
        for a, b in socks:
            a.close()
            b.close()


def test_regular_file_refusal_names_fd_and_reason(poller):
    with tempfile.TemporaryFile() as f:
        if poller.name == "epoll":
            with pytest.raises(OSError, match=f"fd {f.fileno()}.*regular files") as ei:
                poller.register(f.fileno(), READ)
            assert ei.value.errno == errno.EPERM
        elif poller.name == "kqueue":  # readable while there are bytes past the offset
            f.write(b"x")
            f.flush()
            f.seek(0)
            poller.register(f.fileno(), READ)
            assert pairs(poller.poll(0))[f.fileno()] & READ
            poller.unregister(f.fileno())
        elif poller.name == "iocp":  # the AFD poll request takes sockets only
            with pytest.raises(OSError, match=f"fd {f.fileno()}: not a socket") as ei:
                poller.register(f.fileno(), READ)
            assert ei.value.errno == errno.ENOTSOCK
        else:  # poll(2) accepts regular files: always readable
            poller.register(f.fileno(), READ)
            assert pairs(poller.poll(0))[f.fileno()] & READ
            poller.unregister(f.fileno())


def test_closed_fd_is_refused(poller):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError, match=f"fd {r}"):
        poller.register(r, READ)


@pytest.mark.posix("SIGALRM and setitimer")
def test_eintr_is_retried_with_the_time_left(poller):
    got = []
    old = signal.signal(signal.SIGALRM, lambda *a: got.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
        t0 = time.monotonic()
        assert poller.poll(200) == []
        elapsed = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert got, "no signal arrived during the wait"
    assert elapsed >= 0.19  # never early, whatever the interruptions


def test_poll_wakes_for_another_thread(poller):
    a, b = socket.socketpair()
    with a, b:
        poller.register(a.fileno(), READ)
        threading.Timer(0.05, b.send, args=(b"x",)).start()
        assert pairs(poller.poll(5000)) == {a.fileno(): READ}


def test_epoll_fd_is_close_on_exec(poller):
    if poller.name not in ("epoll", "kqueue"):
        pytest.skip("poll has no descriptor of its own")
    import fcntl

    assert fcntl.fcntl(poller.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
