"""The narrow interface between the one event loop and its poller backends.

A backend knows nothing of sockets, timers or callbacks.  It keeps the
kernel's interest set and translates masks, and that is all:

* ``register(fd, mask)``, ``modify(fd, mask)``, ``unregister(fd)``;
* ``poll(timeout_ms)`` waits once and returns the ready descriptors as a flat
  list ``[fd, mask, fd, mask, ...]`` (pairs, flattened so that the C helper
  can fill it in one call and the loop can walk it with ``zip(it, it)``);
* ``channel(sock, direct)``: the object the socket's bytes go through (see
  ``danga.contract.ByteChannel``); the readiness backends return ``sock``;
* ``close()``;
* optionally ``wake()``, callable from any thread: a backend that has one
  ends its wait itself (IOCP posts a completion) and reports the wake-up as
  ``(WAKE, READ)``; the loop uses it instead of a wake-up pipe.

``danga/contract.py`` holds the other half of the loop's contracts: what
the loop calls on a socket and what a socket may call on the loop.

Masks are danga's own, the numbers Danga::Socket used (which are also
Linux's POLL* and EPOLL* numbers).  ``READ`` and ``WRITE`` are interest;
``ERR`` and ``HUP`` are always reported and cannot be asked for.
"""
from __future__ import annotations

import errno
import os
import time
from typing import TYPE_CHECKING, Any, Callable, List, Protocol

if TYPE_CHECKING:
    from ..contract import ByteChannel

READ = 1
WRITE = 4
ERR = 8
HUP = 16

#: The descriptor a backend that wakes its own wait (``wake()``, IOCP) reports
#: for a wake-up; never a real descriptor.
WAKE = -2


class Poller(Protocol):
    """What the loop needs of a backend."""

    name: str

    def register(self, fd: int, mask: int) -> None:
        """Start watching ``fd`` for ``mask`` (READ|WRITE, or 0 for ERR/HUP only).

        Raises OSError naming the fd when the kernel refuses it."""

    def modify(self, fd: int, mask: int) -> None:
        """Change the interest of a registered ``fd``."""

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``.  Never closes it; an fd the kernel no longer
        knows (closed behind the loop's back) is not an error."""

    def poll(self, timeout_ms: int) -> List[int]:
        """Wait up to ``timeout_ms`` (-1 forever, 0 not at all) and return the
        ready ``[fd, mask, ...]`` pairs.  EINTR is retried with the time left."""

    def channel(self, sock: Any, direct: bool = False) -> ByteChannel:
        """What ``sock``'s bytes go through (``recv``/``send``/``sendmsg``).

        ``direct``: the socket reads its descriptor itself (it peeks, or hands
        the descriptor on before its bytes are read), so its bytes must stay
        in the kernel until read: a completion backend gives ``sock``."""

    def close(self) -> None:
        """Release the backend's own descriptor, if it has one."""


def refused(fd: int, err: int, backend: str) -> OSError:
    """The error raised when a backend cannot watch ``fd``, naming both."""
    reason = os.strerror(err)
    hint = " (epoll cannot watch regular files)" if backend == "epoll" and err == 1 else ""
    return OSError(err, f"danga: {backend} refused to watch fd {fd}: {reason}{hint}")


def retry_eintr(wait: Callable[[int], int], timeout_ms: int, get_errno: Callable[[], int], what: str) -> int:
    """``wait(timeout_ms)`` just returned < 0: retry it while it fails with
    EINTR, with the time that is left, and return its first result >= 0.
    Returning to Python between tries lets signal handlers run.  Any other
    error is raised as OSError naming ``what``."""
    deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
    while True:
        err = get_errno()
        if err != errno.EINTR:
            raise OSError(err, f"danga: {what} failed: {os.strerror(err)}")
        left = -1
        if deadline is not None:
            left = max(0, int((deadline - time.monotonic()) * 1000 + 0.999))
        n = wait(left)
        if n >= 0:
            return n
