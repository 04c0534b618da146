"""The outgoing-connect part of ``Socket``, mixed into it.

``danga.connect`` starts a non-blocking connect and hands the socket to the
factory; ``begin_connect`` then waits for writability (or an error, or the
timeout).  Meanwhile writes are queued, in the write queue made here, and
go out after ``event_connected()``; ``write(None)`` leaves them queued.

This is part of ``Socket``, so it uses Socket's own name-mangled slots
(``self._Socket__state``: written ``self.__state`` inside socket.py).
"""
from __future__ import annotations

import errno
import socket as _socket
from typing import TYPE_CHECKING, Any, Optional

from . import loop as _loop
from .checks import errno_name
from .pollers import WRITE
from .sockstate import CONNECTING, Extras
from .timers import cancel

# connect_ex's "under way": EINPROGRESS, and WSAEWOULDBLOCK on Windows
_IN_PROGRESS = {0, errno.EINPROGRESS, getattr(errno, "WSAEWOULDBLOCK", errno.EINPROGRESS)}


class Connecting:
    """Mixed into ``Socket``: everything about an outgoing connect."""

    if not TYPE_CHECKING:
        __slots__ = ()  # keeps Socket free of a __dict__ (mypy would check Socket's slots against it)
    else:
        sock: Any
        closed: bool
        _Socket__mask: int
        _Socket__state: int
        _Socket__wq: Any
        _Socket__x: Optional[Extras]
        _queue_class: Any

        def _extras(self) -> Extras:
            raise NotImplementedError

        def _set_mask(self, mask: int) -> None: ...

        def _flush(self) -> bool:
            raise NotImplementedError

        def close(self, reason: str = "") -> None: ...

    def begin_connect(self, timeout: Optional[float] = None, error: int = 0) -> None:
        """Wait for a non-blocking connect already started on this socket
        (``danga.connect`` calls it); ``error`` is ``connect_ex``'s result.
        Writes meanwhile are queued, and go out after ``event_connected()``."""
        self._Socket__state |= CONNECTING
        if self._Socket__wq is None:
            self._Socket__wq = self._queue_class(self)
        self._set_mask(self._Socket__mask | WRITE)
        loop = _loop.current()
        if timeout is not None:
            self._extras().connect_timer = loop.add_timer(timeout, lambda: self._connect_failed("ETIMEDOUT"))
        if error not in _IN_PROGRESS:
            name = errno_name(error)
            loop.add_timer(0, lambda: self._connect_failed(name))

    def _connect_finished(self) -> None:
        err = self.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if not err:  # a backend may have read, and so cleared, it first (kqueue over libkqueue)
            err = getattr(_loop.current().poller(), "socket_error", _no_error)(self.sock.fileno())
        if err:
            self._connect_failed(errno_name(err))
            return
        self._Socket__state &= ~CONNECTING
        x = self._Socket__x
        if x is not None:
            x.connect_timer = cancel(x.connect_timer)
        self._set_mask(self._Socket__mask & ~WRITE)
        if x is not None and x.tls_start is not None:
            start, x.tls_start = x.tls_start, None
            start()  # event_connected() follows the TLS handshake
            return
        if not self._Socket__wq.items:
            self._Socket__wq = None  # nothing was written while connecting: back to the fast path
        self.event_connected()
        if not self.closed and self._Socket__wq is not None:
            self._flush()

    def _connect_failed(self, name: str) -> None:
        if not self._Socket__state & CONNECTING or self.closed:
            return
        self._Socket__state &= ~CONNECTING
        x = self._extras()
        x.connect_timer = cancel(x.connect_timer)
        try:
            self.event_connect_failed(name)
        finally:
            self.close(f"connect_failed: {name}")

    def event_connected(self) -> None:
        """A ``danga.connect`` completed (EventMachine's ``connection_completed``)."""

    def event_connect_failed(self, error: str) -> None:
        """A ``danga.connect`` failed; ``error`` is the errno name
        ("ECONNREFUSED", "ETIMEDOUT" for the connect timeout...).  The socket
        is closed right after, with reason ``"connect_failed: <error>"``."""

    @property
    def connecting(self) -> bool:
        """True while a ``danga.connect`` is in progress."""
        return bool(self._Socket__state & CONNECTING)


def _no_error(fd: int) -> int:
    return 0
