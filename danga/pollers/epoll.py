"""epoll(7) through cffi: the only importer of ``danga._ffi_epoll``.

Level-triggered on purpose.  Danga::Socket's contract is level-triggered
(an fd that stays readable is reported again on the next pass), and users'
``event_read`` methods read one chunk and return; edge-triggering would lose
the rest of the data for every such handler.
"""
from __future__ import annotations

import os
from typing import Any, Callable, List

from danga._ffi_epoll import ffi, lib

from .base import refused, retry_eintr

MAX_EVENTS = 1024


class EpollPoller:
    """A level-triggered epoll instance, close-on-exec."""

    name = "epoll"
    __slots__ = ("_epfd", "_ep", "_events", "_out", "_unpack", "_wait")

    def __init__(self) -> None:
        epfd = lib.epoll_create1(lib.EPOLL_CLOEXEC)
        if epfd < 0:
            err = ffi.errno
            raise OSError(err, f"danga: epoll_create1 failed: {_strerror(err)}")
        self._epfd: int = epfd
        self._events = ffi.new("struct epoll_event[]", MAX_EVENTS)
        self._out = ffi.new("int[]", 2 * MAX_EVENTS)
        self._ep = ffi.new("struct danga_ep *", (epfd, MAX_EVENTS, self._events, self._out))
        self._unpack: Callable[[Any, int], List[int]] = ffi.unpack
        self._wait: Callable[[Any, int], int] = lib.danga_epoll_wait

    def fileno(self) -> int:
        return self._epfd

    def register(self, fd: int, mask: int) -> None:
        if lib.danga_epoll_ctl(self._epfd, lib.EPOLL_CTL_ADD, fd, mask) < 0:
            raise refused(fd, ffi.errno, self.name)

    def modify(self, fd: int, mask: int) -> None:
        if lib.danga_epoll_ctl(self._epfd, lib.EPOLL_CTL_MOD, fd, mask) < 0:
            raise refused(fd, ffi.errno, self.name)

    def unregister(self, fd: int) -> None:
        # ENOENT/EBADF: the fd was closed behind our back, or never added.
        lib.danga_epoll_ctl(self._epfd, lib.EPOLL_CTL_DEL, fd, 0)

    def poll(self, timeout_ms: int) -> List[int]:
        n = self._wait(self._ep, timeout_ms)
        if n > 0:
            return self._unpack(self._out, n + n)
        if n == 0:
            return []
        n = retry_eintr(lambda ms: self._wait(self._ep, ms), timeout_ms, lambda: ffi.errno,
                        "epoll_wait")
        return self._unpack(self._out, n + n)

    def channel(self, sock: Any, direct: bool = False) -> Any:
        return sock  # readiness: the socket's own recv/send

    def close(self) -> None:
        if self._epfd >= 0:
            lib.close(self._epfd)
            self._epfd = -1


def _strerror(err: int) -> str:
    return os.strerror(err)
