"""A socket-shaped wrapper for descriptors that are not sockets.

``danga.Socket`` talks to its descriptor through ``recv``, ``send``,
``sendmsg``, ``setblocking``, ``close`` and ``detach``.  Pipes, FIFOs and
terminals have ``read``/``write``/``writev`` instead; ``FdStream`` maps one
onto the other, so the one write path serves them all.
"""
from __future__ import annotations

import os
from typing import Iterable, NoReturn, Union


class FdStream:
    """An owned file descriptor with the socket methods danga uses."""

    __slots__ = ("_fd",)
    family = 0  # not a socket family: address helpers return None

    def __init__(self, fd: int) -> None:
        os.fstat(fd)  # EBADF now, not at the first read
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def setblocking(self, flag: bool) -> None:
        os.set_blocking(self._fd, flag)

    def recv(self, n: int) -> bytes:
        return os.read(self._fd, n)

    def send(self, data: Union[bytes, bytearray, memoryview]) -> int:
        return os.write(self._fd, data)

    def sendmsg(self, buffers: Iterable[Union[bytes, bytearray, memoryview]]) -> int:
        return os.writev(self._fd, list(buffers))

    def getpeername(self) -> NoReturn:
        raise OSError("not a socket")

    getsockname = getpeername

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def detach(self) -> int:
        fd, self._fd = self._fd, -1
        return fd

    def __repr__(self) -> str:
        return f"<FdStream fd={self._fd}>"
