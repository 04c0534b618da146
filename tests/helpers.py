"""Small helpers the tests share: run the loop until a condition holds, and
a listener that accepts into a given Socket class and remembers what it made."""
import os
import random
import socket
import struct
import sys
import threading
from pathlib import Path

import danga

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from echo_server import Echo  # noqa: E402,F401  the README's echo, the server of many tests


class LoopTimeout(AssertionError):
    pass


def run(until=None, timeout=10.0):
    """Run the loop until ``until()`` is true after a pass; fail after ``timeout`` s."""
    expired = []
    guard = danga.add_timer(timeout, lambda: expired.append(True))
    danga.set_post_loop_callback(lambda dm, of: not (expired or (until is not None and until())))
    try:
        danga.event_loop()
    finally:
        guard.cancel()
        danga.set_post_loop_callback(None)
    if expired:
        raise LoopTimeout(f"condition not reached within {timeout} s")


def run_for(seconds):
    """Run the loop for ``seconds`` (a timer ends it)."""
    done = []
    t = danga.add_timer(seconds, lambda: done.append(1))
    try:
        run(lambda: done, timeout=seconds + 10)
    finally:
        t.cancel()


def listen(handler, url="tcp://127.0.0.1:0"):
    """``danga.listen(url, handler)``, the library's own Listener, keeping
    the objects it accepted in ``.conns``."""
    conns = []

    def factory(sock):
        obj = handler(sock)
        conns.append(obj)
        return obj

    lst = danga.listen(url, factory)
    lst.conns = conns
    return lst


def pair():
    """A connected AF_UNIX stream pair (TCP on Windows), both ends blocking (wrapping one in a
    danga.Socket makes that end non-blocking)."""
    a, b = socket.socketpair()
    return a, b


def pair_at(fd):
    """A connected socket pair whose first socket has the number ``fd`` (which
    must be free): the lowest free number, usually, else moved there."""
    c, d = socket.socketpair()
    if d.fileno() == fd:
        c, d = d, c
    if c.fileno() != fd:
        os.dup2(c.fileno(), fd)
        c.close()
        c = socket.socket(fileno=fd)
    return c, d


def hang_up(peer):
    """Close ``peer`` so that the other end sees a hang-up (HUP).  Over
    AF_UNIX a close is one; a TCP pair (socketpair() on Windows) needs a
    reset, since its orderly close is a FIN, which reads as EOF."""
    if peer.family != getattr(socket, "AF_UNIX", None):
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("hh", 1, 0))
    peer.close()


def pattern(n, seed=0):
    """n bytes of a position-dependent pattern, to catch loss and reordering."""
    block = bytes((i * 7 + seed) & 0xFF for i in range(251))
    reps = n // len(block) + 1
    return (block * reps)[:n]


class Plain(danga.Socket):
    """A Socket subclass with a __dict__, so tests can set handlers on it."""


class Collector(danga.Socket):
    """Reads everything into ``got``; closes with ``"eof"`` at EOF."""

    def __init__(self, sock):
        super().__init__(sock)
        self.got = bytearray()

    def event_read(self):
        data = self.read(65536)
        if data is None:
            self.close("eof")
        else:
            self.got += data


def shutdown(*objs):
    """Close ``objs``, let the peers see EOF and close, then close listeners."""
    for o in objs:
        o.close()
    run(lambda: all(s.closed for s in list(danga.descriptor_map().values()) if not isinstance(s, danga.Listener)))
    for s in list(danga.descriptor_map().values()):
        s.close()


def reader_thread(sock, want, chunks=(1, 100, 4096, 65536, 1 << 20)):
    got = bytearray()

    def go():
        rnd = random.Random(7)
        while len(got) < want:
            try:
                chunk = sock.recv(rnd.choice(chunks))
            except OSError:  # the test closed the socket: done
                return
            if not chunk:
                return
            got.extend(chunk)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, got
