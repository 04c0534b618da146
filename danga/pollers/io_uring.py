"""io_uring(7) through cffi and liburing: the only importer of ``danga._ffi_uring``.

Two kinds of operation share one ring, and a pass is one foreign call,
``danga_ur_wait``, which arms what needs arming, gives back the buffers
Python has copied, submits and waits in one ``io_uring_enter``, and
flattens the completions into the loop's ``[fd, mask, ...]`` list, as the
epoll helper does.

Receives complete in the ring
-----------------------------
A connected stream socket (``channel(sock)`` hands it a ``RecvChannel``)
that is reading has one multishot ``IORING_OP_RECV`` armed, which takes
its bytes out of the kernel into a ring of provided buffers (128 of 64 KiB,
one per completed receive; only the pages a receive writes are touched).
After the wait the bytes are copied into ``bytes`` objects on the socket's
channel, and ``read()`` returns them without a system call; the loop gets
READ for the socket in the same list as everything else.  What keeps the
contract:

* Level-triggered: a channel still holding bytes (or an EOF, or an error)
  after its handler ran is reported again at the next pass
  (``danga_ur_ready``), which then does not block.
* Flow control: a channel holding ``HOLD`` unread bytes stops receiving
  (the peer's sends wait in the kernel, as with readiness) until it is
  read down to half.
* ``read()`` when nothing is buffered and no receive is armed (the socket
  is not reading, or not yet armed) is the socket's own ``recv``: data that
  is there is returned now, as on epoll, and the order of bytes holds
  because nothing of the socket's is in the ring then.
* A receive's user data carries its owner's generation (a new one per
  registration): the data a receive being cancelled still delivers goes to
  the owner that asked for it, and never to the next owner of the number.
  ``unregister`` cancels at once (an armed receive holds the file).  What a
  channel received but the socket did not read stays on the channel, so a
  socket taken out with ``steal_socket()`` and wrapped again keeps it.
* A socket that reads its descriptor itself (``Socket.reads_descriptor``:
  the PROXY header reader peeks) gets the plain socket, and readiness.
* Listening, still-connecting and datagram sockets and pipes keep
  readiness too.

Known differences from epoll: closing a socket whose bytes the ring
already took is an orderly close for its peer (a FIN), where the kernel
would reset a connection closed with unread data; a socket that stops
reading (``watch_read(False)``) keeps what its receive had taken; and a
completion that did not fit in one pass's lists (over 1,024) is delivered
at the next pass, so a socket stolen in between loses it.

Measured (``bench/optimisations.md``): at 64 B the receive saves the
``recv`` system call and this backend costs what epoll does; at 16 KiB
the second copy (kernel to buffer, buffer to ``bytes``) makes it dearer;
at 1 MiB it is dearer still, as epoll's reads grow to 256 KiB while the
ring's pieces stay 64 KiB and are joined.

Sends are the socket's own ``send``.  Taking them into the ring, to go
out with the next wait's ``io_uring_enter``, measured about 15% of the
C floor cheaper, but it breaks what ``write()`` returning True promises:
that the kernel has the bytes.  A write-queue callable that uses the
descriptor itself (``os.sendfile`` after a head) or a ``shutdown`` after a
write would overtake bytes the ring still held, and the water marks would
not count them.  ``bench/optimisations.md`` lists what a correct version
needs.

Readiness, for everything else
------------------------------
Each other registered descriptor (and a receiving socket that also wants
WRITE) has one one-shot ``IORING_OP_POLL_ADD`` armed with its interest,
re-armed in the same ``io_uring_enter`` as the wait each time it fires.
Arming a poll looks at the file's state at once, so a socket that stays
readable completes again immediately: level-triggered, with no extra
system call.  Multishot polls report wake-ups, not states: they are
edge-triggered in effect.

* Generations.  Every armed poll carries ``(generation << 33) | fd`` in
  its user data.  A changed interest cancels the armed poll and arms a new
  one; a completion whose generation is not the descriptor's current one
  is dropped.  So a completion can never reach a reused descriptor
  number's new owner: ``unregister`` cancels by user data, never by number.
* An armed poll holds a reference to its file, so a socket closed while
  its poll is armed would not really close (its peer would see no FIN).
  ``unregister`` therefore submits its cancellation at once, and the loop
  unregisters before it closes (``LoopSide.release``).  For the same reason
  a descriptor closed behind the loop's back stays open in the kernel until
  it is unregistered: close danga sockets with ``close()``.
* A poll that cannot be armed (a number closed behind the loop's back)
  completes with an error: reported as ERR on that fd.

The ring
--------
Made with ``IORING_SETUP_SINGLE_ISSUER`` and ``IORING_SETUP_DEFER_TASKRUN``
where the kernel has them (6.1+: completions are processed only when the
loop waits, in its own thread), else without; kernels without
``IORING_FEAT_EXT_ARG`` (before 5.11) are refused, and kernels without
provided-buffer rings (before 5.19) get readiness for every socket.  A
forked child never submits to its parent's ring (the loop's fork rule);
its own loop makes a ring of its own.

Where io_uring is refused (seccomp in containers,
``/proc/sys/kernel/io_uring_disabled``, an old kernel), ``refused()`` says
why; ``danga.pollers.create("io_uring")`` then falls back to epoll and logs
that reason once.
"""
from __future__ import annotations

import errno
import os
import socket
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional

from danga._ffi_uring import ffi, lib

from .base import READ, refused, retry_eintr

MAX_EVENTS = 1024
ENTRIES = 1024  # submission queue; the completion queue is four times that
#: a channel holding this many unread bytes stops receiving until it is read
#: down to half (the ring's own flow control: the peer's sends then wait in
#: the kernel, as they would with readiness)
HOLD = 256 * 1024


class RecvChannel:
    """A connected stream socket's bytes on io_uring (``danga.contract.ByteChannel``).

    ``recv`` returns what the ring's multishot receive already delivered;
    ``send``/``sendmsg`` are the socket's own."""

    __slots__ = ("sock", "fd", "buf", "more", "queued", "eof", "err", "reading", "live", "held", "listed",
                 "send", "sendmsg", "_poller", "__weakref__")

    def __init__(self, sock: socket.socket, poller: "IoUringPoller") -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = b""  # received, not yet read: the first piece
        self.more: Optional[Deque[bytes]] = None  # the later pieces (None when buf is all)
        self.queued = 0  # bytes in more
        self.eof = False
        self.err = 0  # the receive's errno, raised by the next recv
        self.reading = False  # READ interest (the loop's)
        self.live = False  # registered with the ring
        self.held = False  # receiving paused: buf reached HOLD
        self.listed = False  # on the poller's list of channels that may have unread data
        self.send: Callable[[Any], int] = sock.send
        self.sendmsg: Callable[[Any], int] = sock.sendmsg
        self._poller = poller

    def recv(self, n: int, flags: int = 0) -> bytes:
        b = self.buf
        if flags:
            return self._peek(n, flags)
        if b:
            if len(b) <= n:
                if self.more is not None:
                    return self._gather(b, n)
                self.buf = b""
                if self.held:
                    self._poller._hold(self, False)
                return b
            self.buf = b[n:]  # a piece is at most one provided buffer: a short copy
            return b[:n]
        if self.err:
            e, self.err, self.eof = self.err, 0, True
            raise OSError(e, os.strerror(e))
        if self.eof:
            return b""
        if self.live and not self._poller._quiet(self.fd):
            raise BlockingIOError(errno.EAGAIN, "danga: nothing received on this socket yet")
        # No receive in the ring (not reading, or not armed yet): the socket's
        # own recv, so that read() returns what is there now, as on epoll.
        return self.sock.recv(n)

    def _gather(self, b: bytes, n: int) -> bytes:
        """``b`` and as many whole later pieces as fit in ``n`` bytes."""
        more = self.more
        assert more is not None
        parts = [b]
        total = len(b)
        while more and total + len(more[0]) <= n:
            c = more.popleft()
            parts.append(c)
            total += len(c)
        self.queued -= total - len(b)
        if more:
            self.buf = more.popleft()
            self.queued -= len(self.buf)
        else:
            self.buf = b""
        if not more:
            self.more = None
        if self.held and self.queued + len(self.buf) < HOLD // 2:
            self._poller._hold(self, False)
        return b"".join(parts) if len(parts) > 1 else b

    def _peek(self, n: int, flags: int) -> bytes:
        if flags != socket.MSG_PEEK:
            raise ValueError(f"danga: an io_uring channel's recv takes MSG_PEEK or no flags, not {flags:#x}")
        if self.buf:
            return self.buf[:n]
        if self.err or self.eof or self.live and not self._poller._quiet(self.fd):
            return b""
        return self.sock.recv(n, flags)

    def unread(self) -> bool:
        return bool(self.buf or self.eof or self.err)


class IoUringPoller:
    """A ring of one-shot polls, re-armed each pass (level-triggered), and
    multishot receives for connected stream sockets."""

    name = "io_uring"
    __slots__ = ("_ur", "_out", "_rec", "_nrec", "_pool", "_chans", "_last", "_unpack", "_wait",
                 "_ready", "setup_flags")

    def __init__(self) -> None:
        self._out = ffi.new("int[]", 2 * MAX_EVENTS)
        self._rec = ffi.new("int[]", 3 * MAX_EVENTS)
        self._nrec = ffi.new("int *")
        err = ffi.new("int *")
        flags = ffi.new("unsigned *")
        ur = lib.danga_ur_new(ENTRIES, MAX_EVENTS, self._out, self._rec, self._nrec, err, flags)
        if ur == ffi.NULL:
            raise OSError(err[0], f"danga: io_uring_setup failed: {os.strerror(err[0])}")
        self._ur: Any = ur
        #: the ``IORING_SETUP_*`` flags the ring was made with
        self.setup_flags: int = flags[0]
        size = ffi.new("int *")
        pool = lib.danga_ur_pool(ur, size)
        #: the provided buffers, None where the kernel has no buffer rings (< 5.19)
        self._pool: Any = ffi.buffer(pool, size[0]) if pool != ffi.NULL else None
        self._chans: Dict[int, RecvChannel] = {}
        self._last: List[RecvChannel] = []  # channels that may hold unread data
        self._unpack: Callable[[Any, int], List[int]] = ffi.unpack
        self._wait: Callable[[Any, int], int] = lib.danga_ur_wait
        self._ready: Callable[[Any, int], int] = lib.danga_ur_ready

    @staticmethod
    def refused() -> str:
        """Why this machine refuses io_uring ("" when it does not)."""
        return _refusal()

    @property
    def completes_receives(self) -> bool:
        """Whether connected stream sockets receive through the ring."""
        return self._pool is not None

    def fileno(self) -> int:
        return int(lib.danga_ur_fd(self._ur)) if self._ur is not None else -1

    def channel(self, sock: Any, direct: bool = False) -> Any:
        """A ``RecvChannel`` for a connected stream socket; else ``sock``
        (listening and still-connecting sockets, datagrams, pipes, and a
        socket that reads its descriptor itself: ``direct``)."""
        if direct or self._pool is None or not isinstance(sock, socket.socket):
            return sock
        if sock.type != socket.SOCK_STREAM:
            return sock
        try:
            sock.getpeername()
        except OSError:
            return sock
        fd = sock.fileno()
        ch = self._chans.get(fd)
        if ch is not None and ch.sock is sock:
            return ch  # the same socket wrapped again (after steal_socket): its unread bytes kept
        ch = self._chans[fd] = RecvChannel(sock, self)
        return ch

    def register(self, fd: int, mask: int) -> None:
        ch = self._chans.get(fd)
        recv = 0
        if ch is not None:
            if ch.sock.fileno() == fd:
                recv = 1
                ch.reading = bool(mask & READ)
                ch.live = True
            else:
                del self._chans[fd]  # a closed socket's: the number has a new owner
        if lib.danga_ur_register(self._ur, fd, mask, recv) < 0:
            if ch is not None:
                ch.live = False
            raise refused(fd, ffi.errno, self.name)
        if recv and ch is not None and ch.unread():
            self._list(ch)

    def modify(self, fd: int, mask: int) -> None:
        ch = self._chans.get(fd)
        if ch is not None and ch.live:
            ch.reading = bool(mask & READ)
            if ch.reading and ch.unread():
                self._list(ch)
        if lib.danga_ur_modify(self._ur, fd, mask) < 0:
            raise refused(fd, ffi.errno, self.name)

    def unregister(self, fd: int) -> None:
        ch = self._chans.get(fd)
        if ch is not None:
            ch.live = ch.reading = ch.held = False
        if lib.danga_ur_unregister(self._ur, fd) < 0:
            err = ffi.errno
            raise OSError(err, f"danga: io_uring could not cancel the poll of fd {fd}: {os.strerror(err)}")

    def _list(self, ch: RecvChannel) -> None:
        if not ch.listed:
            ch.listed = True
            self._last.append(ch)

    def _quiet(self, fd: int) -> bool:
        return bool(lib.danga_ur_quiet(self._ur, fd))

    def _hold(self, ch: RecvChannel, hold: bool) -> None:
        ch.held = hold
        if ch.live:
            lib.danga_ur_hold(self._ur, ch.fd, int(hold))

    def poll(self, timeout_ms: int) -> List[int]:
        last = self._last
        if last:
            # Level-triggered: a channel still holding received bytes (or
            # EOF, or an error) is reported again while it is being read.
            keep = []
            for ch in last:
                if ch.live and (ch.buf or ch.eof or ch.err):
                    keep.append(ch)
                    if ch.reading:
                        self._ready(self._ur, ch.fd)
                else:
                    ch.listed = False
            self._last = keep
        n = self._wait(self._ur, timeout_ms)
        if n < 0:
            n = retry_eintr(lambda ms: self._wait(self._ur, ms), timeout_ms, lambda: ffi.errno,
                            "io_uring_enter")
        nrec = self._nrec[0]
        if nrec:
            self._deliver(nrec)
        return self._unpack(self._out, n + n) if n else []

    def _deliver(self, nrec: int) -> None:
        """Hand the received bytes (EOFs, errors) to their channels."""
        pool = self._pool
        chans = self._chans
        last = self._last
        it = iter(self._unpack(self._rec, 3 * nrec))
        for fd, off, ln in zip(it, it, it):
            ch = chans.get(fd)
            if ch is None:
                continue
            if off >= 0:
                data = pool[off:off + ln]
                if ch.buf:
                    if ch.more is None:
                        ch.more = deque()
                    ch.more.append(data)
                    ch.queued += ln
                    if ch.queued >= HOLD and not ch.held:
                        self._hold(ch, True)
                else:
                    ch.buf = data
            elif off == -1:
                ch.eof = True
            else:
                ch.err = ln
            if not ch.listed:
                ch.listed = True
                last.append(ch)

    def close(self) -> None:
        if self._ur is not None:
            self._pool = None
            self._chans.clear()
            self._last = []
            lib.danga_ur_free(self._ur)
            self._ur = None

_refused: Optional[str] = None


def _refusal() -> str:
    global _refused
    if _refused is None:
        try:
            IoUringPoller().close()
            _refused = ""
        except OSError as exc:
            _refused = f"io_uring_setup: {os.strerror(exc.errno)}" if exc.errno else str(exc)
    return _refused
