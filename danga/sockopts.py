"""Socket options behind ``Socket``'s methods, mixed into it.

Each method works on any descriptor ``Socket`` wraps: an option the socket
or the platform does not have is ignored, never an error (corking a UNIX
socket or a pipe does nothing).
"""
from __future__ import annotations

import errno
import logging
import socket as _socket
from typing import TYPE_CHECKING, Any

log = logging.getLogger("danga")


def set_cork(sock: Any, on: bool) -> None:
    """Linux TCP_CORK on or off (nothing where the platform has none)."""
    opt = getattr(_socket, "TCP_CORK", None)
    if opt is not None:
        sock.setsockopt(_socket.IPPROTO_TCP, opt, 1 if on else 0)


class SocketOptions:
    """Mixed into ``Socket``: TCP options."""

    __slots__ = ()
    if TYPE_CHECKING:
        sock: Any
        closed: bool

        def _extras(self) -> Any: ...

        def as_string(self) -> str: ...

        def close(self, reason: str = "") -> None: ...

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
