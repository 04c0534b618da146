"""poll(2) through cffi: the only importer of ``danga._ffi_poll``.

The ``struct pollfd`` array lives in C memory and is edited in place
(an fd -> slot index; unregister moves the last slot into the hole), so a
pass costs one call and no per-pass rebuild of the set, unlike
Danga::Socket's PollEventLoop.
"""
from __future__ import annotations

import errno
import os
from typing import Any, Dict, List

from danga._ffi_poll import ffi, lib

from .base import refused, retry_eintr


class PollPoller:
    """poll(2) with a persistent descriptor array."""

    name = "poll"
    __slots__ = ("_fds", "_out", "_n", "_cap", "_slot")

    def __init__(self) -> None:
        self._cap = 64
        self._fds = ffi.new("struct pollfd[]", self._cap)
        self._out = ffi.new("int[]", 2 * self._cap)
        self._n = 0
        self._slot: Dict[int, int] = {}

    def register(self, fd: int, mask: int) -> None:
        if fd < 0:
            raise refused(fd, errno.EBADF, self.name)
        if fd in self._slot:
            raise refused(fd, errno.EEXIST, self.name)
        try:
            os.fstat(fd)
        except OSError as e:
            raise refused(fd, e.errno or errno.EBADF, self.name) from None
        if self._n == self._cap:
            self._grow()
        i = self._n
        self._fds[i].fd = fd
        self._fds[i].events = lib.danga_to_poll(mask)
        self._fds[i].revents = 0
        self._slot[fd] = i
        self._n = i + 1

    def _grow(self) -> None:
        cap = self._cap * 2
        fds = ffi.new("struct pollfd[]", cap)
        ffi.memmove(fds, self._fds, ffi.sizeof("struct pollfd") * self._n)
        self._fds, self._cap = fds, cap
        self._out = ffi.new("int[]", 2 * cap)

    def modify(self, fd: int, mask: int) -> None:
        i = self._slot.get(fd)
        if i is None:
            raise refused(fd, errno.ENOENT, self.name)
        self._fds[i].events = lib.danga_to_poll(mask)

    def unregister(self, fd: int) -> None:
        i = self._slot.pop(fd, None)
        if i is None:
            return
        last = self._n - 1
        if i != last:
            self._fds[i] = self._fds[last]
            self._slot[self._fds[i].fd] = i
        self._n = last

    def poll(self, timeout_ms: int) -> List[int]:
        n = lib.danga_poll(self._fds, self._n, timeout_ms, self._out)
        if n > 0:
            ready: List[int] = ffi.unpack(self._out, n + n)
            return ready
        if n == 0:
            return []
        n = retry_eintr(lambda ms: lib.danga_poll(self._fds, self._n, ms, self._out), timeout_ms,
                        lambda: ffi.errno, "poll")
        ready = ffi.unpack(self._out, n + n)
        return ready

    def channel(self, sock: Any, direct: bool = False) -> Any:
        return sock  # readiness: the socket's own recv/send

    def close(self) -> None:
        self._slot.clear()
        self._n = 0
