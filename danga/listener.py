"""``Listener``: a listening stream socket that accepts into a factory.

A listener is an ordinary ``Socket`` whose ``event_read`` accepts.  It
accepts at most ``accept_per_pass`` connections each time it is readable, so
one busy listener cannot starve the other sockets of the pass.

Running out of descriptors
--------------------------
When ``accept`` fails with EMFILE/ENFILE the pending connection stays in the
kernel's backlog, the listener stays readable, and a level-triggered loop
would spin on it.  Listeners therefore share one reserve descriptor (a
``Service`` of the loop, opened with the first listener, closed with the
last or by ``reset()``): on EMFILE the listener releases it, accepts the
pending connection and closes it at once (the client sees a prompt close,
not a hang), takes the reserve back, and stops accepting for
``emfile_pause`` seconds.  Existing connections are served throughout.

Before that, a listener *sheds*: on EMFILE, and whenever a new descriptor's
number reaches ``shed_threshold`` of the limit, it asks its ``shed_policy``
to close connections that have not yet been productive, oldest first
(danga/shedding.py), and accepts again on the next pass, once their
descriptors are released.  Only when there is nothing to shed does it fall
back to dropping the pending connection.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import weakref
from time import monotonic
from typing import Any, Callable, List, Optional

from . import loop as _loop
from . import proxyproto, shedding
from .socket import Socket

log = logging.getLogger("danga")

Factory = Callable[[Any], Socket]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)  # Windows has none: os.open's descriptors are not inherited there
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class FdReserve:
    """One spare descriptor, held while any listener is open, to accept
    (and close) a connection with when the process is out of them."""

    def __init__(self, loop: "_loop.Loop") -> None:
        self.fd = -1
        self.users = 0

    def take(self) -> None:
        if self.users == 0 and self.fd < 0:
            self.fd = os.open(os.devnull, os.O_RDONLY | _CLOEXEC)
        self.users += 1

    def drop(self) -> None:
        self.users = max(0, self.users - 1)
        if self.users == 0:
            self.close(False)

    def release(self) -> bool:
        """Free the spare descriptor for a moment; False if there was none."""
        if self.fd < 0:
            return False
        os.close(self.fd)
        self.fd = -1
        return True

    def retake(self) -> None:
        """Hold a spare descriptor again (if the process has one to give)."""
        if self.fd >= 0:
            return
        try:
            self.fd = os.open(os.devnull, os.O_RDONLY | _CLOEXEC)
        except OSError:
            pass  # retried at the next shortage

    def close(self, in_child: bool) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def after_fork(self) -> None:
        pass


class Listener(Socket):
    """A listening stream socket that accepts into ``factory(sock)``.

    * ``max_connections``: at most this many accepted connections open at
      once; beyond it a new connection is accepted and closed at once (after
      ``reject``, bytes to send it first, if given), so the client learns
      promptly instead of waiting in the backlog.  None: no limit.
    * ``accept_per_pass``: accepts per readable event (fairness).
    * ``nodelay``: set TCP_NODELAY on accepted TCP connections.
    * ``emfile_pause``: seconds to stop accepting after running out of fds.
    * ``proxy_protocol``: each connection starts with a PROXY protocol
      header (v1 or v2, as HAProxy sends it); it is read first, within
      ``proxy_timeout`` seconds, and the factory gets a socket whose peer
      and local addresses are the ones the header gives (danga/proxyproto.py).
    * ``shed_threshold``: the share of the descriptor limit (0.9) at which
      the listener starts shedding connections not yet productive; None
      sheds only when accepting fails.  ``shed_policy(listener, wanted)``
      chooses and closes them and returns how many
      (``danga.shedding.shed_oldest_unproductive``: the oldest marked by
      ``set_deadline``/``mark_unproductive``).
    """

    def __init__(self, sock: socket.socket, factory: Factory, *, max_connections: Optional[int] = None,
                 accept_per_pass: int = 64, nodelay: bool = True, reject: Optional[bytes] = None,
                 emfile_pause: float = 0.25, unlink: Optional[str] = None, proxy_protocol: bool = False,
                 proxy_timeout: float = 5.0, shed_threshold: Optional[float] = 0.9,
                 shed_policy: shedding.ShedPolicy = shedding.shed_oldest_unproductive) -> None:
        if not callable(factory):
            raise TypeError(f"danga: a listener needs a Socket class or factory, got {factory!r}")
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"danga: max_connections must be >= 1 or None, got {max_connections}")
        if shed_threshold is not None and not 0 < shed_threshold <= 1:
            raise ValueError(f"danga: shed_threshold is a share of the descriptor limit in (0, 1], or None; "
                             f"got {shed_threshold}")
        if not callable(shed_policy):
            raise TypeError(f"danga: shed_policy must be callable(listener, wanted) -> int, got {shed_policy!r}")
        super().__init__(sock)
        self.factory = factory
        self.max_connections = max_connections
        self.accept_per_pass = max(1, int(accept_per_pass))
        self.nodelay = nodelay and sock.family in (socket.AF_INET, socket.AF_INET6)
        self.reject = reject
        self.emfile_pause = emfile_pause
        self.proxy_protocol = proxy_protocol
        self.proxy_timeout = proxy_timeout
        self.accepted = 0  # connections handed to the factory
        self.rejected = 0  # connections closed at once for max_connections
        self.dropped = 0  # connections closed at once for lack of descriptors
        self.shed = 0  # connections the shed policy closed for this listener
        self.shed_threshold = shed_threshold
        self.shed_policy = shed_policy
        self.__shed_at = 1 << 62  # the descriptor number at which shedding starts
        self.__shed_pass = -1  # the loop pass of the last shedding
        self.__shed_last = 0  # how many it closed
        self._read_fd_limit()
        self.__children: "weakref.WeakSet[Socket]" = weakref.WeakSet()
        self.__unlink = unlink
        self.__paused = False
        self.__reserve = _loop.current().service("fd_reserve", FdReserve)
        self.__reserve.take()
        self.watch_read(True)

    @property
    def port(self) -> int:
        """The bound port (for ``tcp://host:0``)."""
        port: int = self.sock.getsockname()[1]
        return port

    def children(self) -> List[Socket]:
        """The connections it accepted that are still open."""
        return [c for c in self.__children if not c.closed]

    @property
    def connections(self) -> int:
        """Open connections accepted by this listener."""
        return sum(1 for c in self.__children if not c.closed)

    def event_read(self) -> None:
        sock = self.sock
        limit = self.max_connections
        for _ in range(self.accept_per_pass):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _OUT_OF_FDS:
                    self._out_of_descriptors(e)
                    return
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # that client gave up or was filtered; the next may be fine
                log.warning("danga: accept on %s failed: %s", self.local_addr_string(), e)
                return
            if limit is not None and self.connections >= limit:
                self.rejected += 1
                if self.reject:
                    try:
                        conn.send(self.reject)
                    except OSError:
                        pass
                conn.close()
                continue
            if self.nodelay:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            fd = conn.fileno()
            pressed = fd >= self.__shed_at
            if pressed:  # shed before the new one is marked: it is never the one shed
                self._shed(f"{fd + 1} descriptors in use", fd + 1 - self.__shed_at)
            if self.proxy_protocol:
                reader = proxyproto.expect_header(conn, self.proxy_timeout, self.hand_over)
                if reader is not None:
                    self.__children.add(reader)  # counted by max_connections and waited for by drain()
            else:
                self.hand_over(conn)
            if pressed:
                return  # accept more on the next pass, when what was shed is released
            if self.closed:
                return

    def hand_over(self, conn: socket.socket) -> Optional[Socket]:
        """Give an accepted connection to the factory (and count it); the
        object it made, or None if it raised."""
        try:
            obj = self.factory(conn)
        except Exception as exc:
            conn.close()
            _loop.current().report_error(None, exc, f"connection factory {self.factory!r}")
            return None
        self.accepted += 1
        self.__children.add(obj)
        return obj

    def _read_fd_limit(self) -> None:
        limit = shedding.fd_limit()
        if limit is not None and self.shed_threshold is not None:
            self.__shed_at = max(1, int(limit * self.shed_threshold)) - 1
        self.fd_limit = limit

    def _shed(self, why: str, excess: int = 0) -> int:
        """Ask the policy for room: at least a batch, or ``excess``; how many
        it closed.  At most once a pass, since what it closes is released at
        the end of the pass: a second call in the same pass returns what the
        first one closed."""
        loop = _loop.current()
        if self.__shed_pass == loop.passes:
            return self.__shed_last
        self.__shed_pass = loop.passes
        self.__shed_last = 0
        wanted = max(shedding.shed_batch(self.fd_limit or 1024), excess)
        try:
            closed = int(self.shed_policy(self, wanted))
        except Exception as exc:
            loop.report_error(None, exc, f"shed policy {self.shed_policy!r}")
            return 0
        self.shed += closed
        self.__shed_last = closed
        if closed:
            log.warning("danga: %s: %s (limit %s); shed %d connection(s) not yet productive",
                        self.local_addr_string(), why, self.fd_limit, closed)
        return closed

    def _out_of_descriptors(self, e: OSError) -> None:
        self._read_fd_limit()  # someone may have changed it
        if self._shed("accept failed: " + errno.errorcode.get(e.errno or 0, str(e))):
            return  # accepted again on the next pass, once the shed descriptors are released
        log.warning("danga: %s: accept failed (%s); dropping a pending connection and pausing %.2fs",
                    self.local_addr_string(), errno.errorcode.get(e.errno or 0, e), self.emfile_pause)
        if self.__reserve.release():
            try:
                conn, _ = self.sock.accept()
                conn.close()
                self.dropped += 1
            except OSError:
                pass
        self.__reserve.retake()
        self.pause_accepting(self.emfile_pause)

    def pause_accepting(self, seconds: Optional[float] = None) -> None:
        """Stop accepting; resume after ``seconds`` (or at ``resume_accepting()``)."""
        if self.closed or self.__paused:
            return
        self.__paused = True
        self.watch_read(False)
        if seconds is not None:
            _loop.current().add_timer(seconds, self.resume_accepting)

    def resume_accepting(self) -> None:
        if self.closed or not self.__paused:
            return
        self.__paused = False
        self.watch_read(True)

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        super().close(reason)
        self.__reserve.drop()
        if self.__unlink:
            try:
                os.unlink(self.__unlink)
            except OSError:
                pass


def drain(grace: float) -> None:
    """Stop gracefully: every listener takes what is already waiting in its
    backlog and closes; ``event_loop()`` returns once the connections they
    accepted have all closed, or after ``grace`` seconds, when the rest are
    closed with reason ``"shutdown"``.  Other sockets are not waited for."""
    loop = _loop.current()
    conns: "weakref.WeakSet[Socket]" = weakref.WeakSet()
    for s in list(loop.descriptor_map.values()):
        if isinstance(s, Listener) and not s.closed:
            s.accept_per_pass = 1 << 30
            s.event_read()  # what clients already connected expect to be served
            conns.update(s.children())
            s.close("shutdown")
    deadline = monotonic() + grace

    def check() -> None:
        left = [c for c in conns if not c.closed]
        if left and monotonic() < deadline:
            loop.add_timer(0.02, check)
            return
        for c in left:
            c.close("shutdown")
        loop.stop()

    check()

