"""io_uring(7) through cffi and liburing: the only importer of ``danga._ffi_uring``.

What this backend is today: readiness from a ring.  Each registered
descriptor has one one-shot ``IORING_OP_POLL_ADD`` armed with its interest.
A pass is one foreign call, ``danga_ur_wait``, which arms the polls that
fired last pass (or whose interest changed), submits them and waits in one
``io_uring_enter``, and flattens the completions into the loop's
``[fd, mask, ...]`` list, as the epoll helper does.

Why one-shot polls, re-armed every pass: arming a poll looks at the file's
state at once, so a socket that still has unread data completes again
immediately: the level-triggered contract (a socket that stays readable is
reported again), with no extra system call because the re-arms travel in
the same ``io_uring_enter`` as the wait.  Multishot polls report wake-ups,
not states: they are edge-triggered in effect.

The rules the C helper keeps:

* Generations.  Every armed poll carries ``(generation << 32) | fd`` in its
  user data.  A changed interest cancels the armed poll and arms a new one;
  a completion whose generation is not the descriptor's current one is
  dropped.  So a completion can never reach a reused descriptor number's
  new owner: ``unregister`` cancels by user data, never by number.
* An armed poll holds a reference to its file, so a socket closed while
  its poll is armed would not really close (its peer would see no FIN).
  ``unregister`` therefore submits its cancellation at once, and the loop
  unregisters before it closes (``LoopSide.release``).  For the same reason
  a descriptor closed behind the loop's back stays open in the kernel until
  it is unregistered: close danga sockets with ``close()``.
* A poll that cannot be armed (a number closed behind the loop's back)
  completes with an error: reported as ERR on that fd.
* The ring is made with ``IORING_SETUP_SINGLE_ISSUER`` and
  ``IORING_SETUP_DEFER_TASKRUN`` where the kernel has them (6.1+: completions
  are processed only when the loop waits, in its own thread), else without;
  kernels without ``IORING_FEAT_EXT_ARG`` (before 5.11) are refused.  A
  forked child never submits to its parent's ring (the loop's fork rule);
  its own loop makes a ring of its own.

Where io_uring is refused (seccomp in containers,
``/proc/sys/kernel/io_uring_disabled``, an old kernel), ``refused()`` says
why; ``danga.pollers.create("io_uring")`` then falls back to epoll and logs
that reason once.

Not yet here: completion-based receives (multishot ``recv`` into a provided
buffer ring, handed over through ``Poller.channel``) and batched sends.
"""
from __future__ import annotations

import os
from typing import Any, Callable, List, Optional

from danga._ffi_uring import ffi, lib

from .base import refused, retry_eintr

MAX_EVENTS = 1024
ENTRIES = 1024  # submission queue; the completion queue is four times that


class IoUringPoller:
    """A ring of one-shot polls, re-armed each pass (level-triggered)."""

    name = "io_uring"
    __slots__ = ("_ur", "_out", "_unpack", "_wait", "setup_flags")

    def __init__(self) -> None:
        self._out = ffi.new("int[]", 2 * MAX_EVENTS)
        err = ffi.new("int *")
        flags = ffi.new("unsigned *")
        ur = lib.danga_ur_new(ENTRIES, MAX_EVENTS, self._out, err, flags)
        if ur == ffi.NULL:
            raise OSError(err[0], f"danga: io_uring_setup failed: {os.strerror(err[0])}")
        self._ur: Any = ur
        #: the ``IORING_SETUP_*`` flags the ring was made with
        self.setup_flags: int = flags[0]
        self._unpack: Callable[[Any, int], List[int]] = ffi.unpack
        self._wait: Callable[[Any, int], int] = lib.danga_ur_wait

    @staticmethod
    def refused() -> str:
        """Why this machine refuses io_uring ("" when it does not)."""
        return _refusal()

    def fileno(self) -> int:
        return int(lib.danga_ur_fd(self._ur)) if self._ur is not None else -1

    def register(self, fd: int, mask: int) -> None:
        if lib.danga_ur_register(self._ur, fd, mask) < 0:
            raise refused(fd, ffi.errno, self.name)

    def modify(self, fd: int, mask: int) -> None:
        if lib.danga_ur_modify(self._ur, fd, mask) < 0:
            raise refused(fd, ffi.errno, self.name)

    def unregister(self, fd: int) -> None:
        if lib.danga_ur_unregister(self._ur, fd) < 0:
            err = ffi.errno
            raise OSError(err, f"danga: io_uring could not cancel the poll of fd {fd}: {os.strerror(err)}")

    def poll(self, timeout_ms: int) -> List[int]:
        n = self._wait(self._ur, timeout_ms)
        if n > 0:
            return self._unpack(self._out, n + n)
        if n == 0:
            return []
        n = retry_eintr(lambda ms: self._wait(self._ur, ms), timeout_ms, lambda: ffi.errno,
                        "io_uring_enter")
        return self._unpack(self._out, n + n)

    def channel(self, sock: Any) -> Any:
        return sock  # readiness: the socket's own recv/send

    def close(self) -> None:
        if self._ur is not None:
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
