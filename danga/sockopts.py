"""Per-socket settings behind ``Socket``'s methods, mixed into it: TCP
options, deadlines, the idle timeout, the post-loop callback.

Each works on any descriptor ``Socket`` wraps: an option the socket or the
platform does not have is ignored, never an error (corking a UNIX socket or
a pipe does nothing).
"""
from __future__ import annotations

import errno
import logging
import socket as _socket
from time import monotonic
from typing import TYPE_CHECKING, Any, Optional, cast

from . import loop as _loop
from . import shedding
from .contract import SocketSide
from .timers import cancel

log = logging.getLogger("danga")


def set_cork(sock: Any, on: bool) -> None:
    """Linux TCP_CORK on or off (nothing where the platform has none)."""
    opt = getattr(_socket, "TCP_CORK", None)
    if opt is not None:
        sock.setsockopt(_socket.IPPROTO_TCP, opt, 1 if on else 0)


class SocketOptions:
    """Mixed into ``Socket``: per-socket settings."""

    if not TYPE_CHECKING:
        __slots__ = ()  # keeps Socket free of a __dict__ (mypy would check Socket's slots against it)
    else:
        sock: Any
        closed: bool

        def _extras(self) -> Any: ...

        def as_string(self) -> str:
            raise NotImplementedError

        def close(self, reason: str = "") -> None: ...

        max_idle_time: float
        _Socket__active: bool
        _Socket__wq: Any

    # -- the sweep's questions (danga/sweep.py, danga.contract.SocketSide) ------------

    def loop_idle_for(self, now: float) -> float:
        x = self._extras()
        if self._Socket__active:
            self._Socket__active = False
            x.idle_since = now
            return 0.0
        return float(now - x.idle_since)

    def loop_send_stalled_for(self, now: float) -> float:
        q = self._Socket__wq
        x = self._extras()
        if not q or q.moved or x.send_queue is not q:  # nothing queued, progress, or a new backlog
            if q:
                q.moved = False
            x.send_queue = q or None
            x.send_since = now
            return 0.0
        return float(now - x.send_since)

    def tcp_cork(self, on: bool) -> None:
        """Hold back partial frames (Linux TCP_CORK) until ``tcp_cork(False)``.
        Ignored where the socket or the platform has no such option."""
        if self.closed:
            return
        x = self._extras()
        on = bool(on)
        if x.corked == on:
            return
        try:
            set_cork(self.sock, on)
        except OSError as e:
            if e.errno in (errno.EBADF, errno.ENOTSOCK):
                log.warning("danga: tcp_cork failed on %s: %s", self.as_string(), e)
                self.close("tcp_cork_failed")
                return
            if e.errno not in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                raise
            return  # not a TCP socket: nothing to cork
        x.corked = on

    def set_deadline(self, seconds: Optional[float], reason: str = "deadline") -> None:
        """Close the socket with ``reason`` unless ``set_deadline(None)`` is
        called within ``seconds``.  A total deadline, not reset by activity:
        the protection against a client that trickles a request slowly.

        While a deadline is set the socket also counts as not yet productive
        (``mark_unproductive()``): under descriptor pressure a listener may
        shed it (danga/shedding.py).  ``set_deadline(None)`` clears both."""
        if self.closed:
            return
        x = self._extras()
        x.deadline = cancel(x.deadline)
        if seconds is not None:
            x.deadline = _loop.current().add_timer(seconds, lambda: self.close(reason))
            shedding.registry().mark(self)
        else:
            shedding.registry().unmark(self)

    def mark_unproductive(self) -> None:
        """Say that this connection has not finished its request yet (no
        deadline): under descriptor pressure, listeners shed such
        connections, oldest first, with reason ``"shed"``.  Marking again
        makes it the youngest.  ``mark_productive()`` clears it."""
        if not self.closed:
            shedding.registry().mark(self)

    def mark_productive(self) -> None:
        """Clear ``mark_unproductive()`` (a deadline set stays set)."""
        shedding.registry().unmark(self)

    @property
    def productive(self) -> bool:
        """False while marked as not yet productive (a deadline or
        ``mark_unproductive()``), so that shedding may choose it."""
        return not shedding.registry().is_marked(self)

    def set_idle_timeout(self, seconds: float) -> None:
        """Close with reason ``"idle_timeout"`` after ``seconds`` without data
        moving (this socket's own ``max_idle_time``; 0 turns it off).  Needs
        an instance ``__dict__``, which every subclass without ``__slots__`` has."""
        try:
            self.max_idle_time = seconds  # the instance's own: needs a __dict__
        except AttributeError:
            raise TypeError(f"danga: set_idle_timeout needs an instance __dict__, and {type(self).__name__} "
                            "declares __slots__; set max_idle_time on the class instead") from None
        if seconds and not self.closed:
            self._extras().idle_since = monotonic()
            _loop.current().track_idle(cast(SocketSide, self))

    def set_post_loop_callback(self, cb: Optional[_loop.PostLoopCallback]) -> None:
        """Run ``cb(descriptor_map, other_fds)`` after every loop pass while
        this socket is open; a false return ends ``event_loop()``.  None
        removes it."""
        _loop.current().set_post_loop_callback(cast(SocketSide, self), cb)
