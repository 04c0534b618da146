"""send_timeout: a peer that stops reading is closed, a slow one that keeps
reading is not; both served by the one sweep timer."""
import socket
import sys
import time

import danga

from .helpers import run, run_for


class Flood(danga.Socket):
    send_timeout = 0.3

    def __init__(self, sock):
        super().__init__(sock)
        self.write(b"x" * 8_000_000)  # far more than the kernel buffers hold


def test_a_peer_that_never_reads_is_closed_with_send_timeout():
    a, b = socket.socketpair()
    s = Flood(a)
    t0 = time.monotonic()
    run(lambda: s.closed, timeout=10)
    assert s.close_reason == "send_timeout"
    assert s.unsent > 0  # what was never sent is reported
    assert time.monotonic() - t0 >= 0.3
    b.close()


def test_a_slow_reader_that_keeps_reading_is_not_closed():
    a, b = socket.socketpair()
    b.setblocking(False)
    s = Flood(a)
    got = [0]

    # a TCP pair (Windows) reopens its window only once a segment's worth
    # (64 KiB on loopback) is free: read more per tick than that
    chunk = 65536 if b.family == getattr(socket, "AF_UNIX", None) else 4 * 65536

    def drain():
        try:
            got[0] += len(b.recv(chunk))
        except BlockingIOError:
            pass
    timer = danga.add_periodic_timer(0.05, drain)
    run_for(1.5)  # five times the send timeout
    timer.cancel()
    assert not s.closed, s.close_reason
    assert got[0] > 0
    s.close()
    b.close()


def test_nothing_queued_never_times_out():
    a, b = socket.socketpair()

    class Quiet(danga.Socket):
        send_timeout = 0.1

    s = Quiet(a)
    s.write(b"small")  # goes out at once
    run_for(0.5)
    assert not s.closed
    s.close()
    b.close()


def test_raise_fd_limit():
    if sys.platform == "win32":
        assert danga.raise_fd_limit() == -1  # no such limit there
        return
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        got = danga.raise_fd_limit()
        now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert got == now
        assert now == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
