"""The Loop–Socket contract: every call that crosses between them, typed.

The loop and its sockets live in different modules and call each other on
every event.  Those calls are the whole interface between them; nothing
else may cross (no reaching into the other's underscored state), so a new
transport (TLS), backend (IOCP, io_uring) or bridge (asyncio) can be added
by reading this file instead of both implementations.

Three protocols:

* ``LoopSide``: what a socket (and ``Listener``, ``Connection``, the
  services) may call on the loop.  The loop's plain public methods.
* ``SocketSide``: what the loop calls on a registered socket.  The methods
  are named ``loop_*`` so that a user's subclass cannot collide with them by
  accident while naming its own helpers.
* ``ByteChannel``: the seam through which a socket's bytes come and go.
  ``Socket`` never calls ``recv``/``send``/``sendmsg`` on ``self.sock``
  directly but on the channel the poller backend gave it
  (``Poller.channel(sock, direct)``).  The readiness backends (epoll, poll,
  kqueue) hand back the socket itself, so this costs nothing; IOCP hands
  back the socket's own bound methods with a gathering ``sendmsg``.  A
  completion backend hands back its own object instead (io_uring's
  ``RecvChannel``): ``recv`` returns bytes that a completed receive already
  delivered (``BlockingIOError`` when none are waiting and a receive is
  armed), and its READ event means "the channel has bytes".  A backend may
  also take sends (copy into a buffer submitted with the wait, and return
  how much it took: fewer bytes when that buffer is full, which is the
  backend's flow control); io_uring's channel sends with the socket's own
  ``send`` today.  Neither ``Socket`` nor the write queue need a branch for
  it: they already treat every short send as "the rest waits for WRITE".
  The loop's ``release`` unregisters the fd before closing the socket,
  which is where such a backend cancels what it posted.  A socket that
  reads its descriptor itself (it peeks) asks for ``direct``, and gets the
  socket whatever the backend.

Masks are ``danga.pollers`` ``READ``/``WRITE``/``ERR``/``HUP``.
"""
from __future__ import annotations

import errno
from typing import Any, Callable, Iterable, Optional, Protocol, Tuple

from .timers import Timer


class ChannelError(OSError):
    """A channel's failure that has no errno of its own (a TLS alert, a cut
    TLS connection): ``reason`` becomes the socket's ``read_error`` and close
    reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EPROTO, reason)
        self.reason = reason


class ByteChannel(Protocol):
    """Where a socket's bytes come from and go to (a ``socket.socket``
    satisfies it; so does ``danga.fdstream.FdStream`` for pipes)."""

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes; ``b""`` at EOF; BlockingIOError when none now."""

    def send(self, data: Any) -> int:
        """Take what fits of ``data``; return how many bytes were taken."""

    def sendmsg(self, buffers: Iterable[Any]) -> int:
        """Take what fits of the gathered ``buffers``; return the count."""


class DatagramChannel(ByteChannel, Protocol):
    """A datagram socket's channel: one datagram per call."""

    def recvfrom(self, n: int) -> Tuple[bytes, Any]: ...

    def sendto(self, data: Any, address: Any) -> int: ...


class SocketSide(Protocol):
    """What the loop calls on (and reads of) a registered socket."""

    fd: int
    max_idle_time: float
    send_timeout: float

    @property
    def closed(self) -> bool:
        """True once closed (the loop reads it; only the socket sets it)."""

    def event_read(self) -> None:
        """The plain READ event, called directly (the hot path)."""

    def loop_dispatch(self, mask: int) -> None:
        """Any other event mask, also for a socket closed during this pass
        (a lingering one still wants WRITE)."""

    def loop_push_back_pending(self) -> int:
        """Pushed-back bytes that ``event_read`` should be called for now:
        0 when there are none, or the socket is closed or not reading."""

    def loop_idle_for(self, now: float) -> float:
        """Seconds without data moving, as of ``now`` (0 if it moved since
        the last call)."""

    def loop_send_stalled_for(self, now: float) -> float:
        """Seconds that queued output has waited without the kernel taking a
        byte, as of ``now`` (0 when nothing is queued or it moved since the
        last call)."""

    def loop_lost_fd(self) -> None:
        """Another socket was registered on this fd number: detach from it
        without closing or unregistering anything."""

    def as_string(self) -> str: ...

    def close(self, reason: str = "") -> None: ...


class LoopSide(Protocol):
    """What a socket may call on the loop (``danga.loop.current()``)."""

    #: the monotonic time the current pass began
    now: float

    def channel(self, sock: Any, direct: bool = False) -> ByteChannel:
        """The channel ``sock``'s bytes go through (see ``ByteChannel``);
        ``direct``: the socket reads its descriptor itself (``Socket.reads_descriptor``)."""

    def add_socket(self, obj: SocketSide, mask: int) -> None:
        """Register ``obj`` (its fd) with interest ``mask``."""

    def set_interest(self, obj: SocketSide, mask: int) -> None:
        """Change a registered socket's interest."""

    def park(self, obj: SocketSide) -> None:
        """Stop all reports for ``obj`` (a HUP/ERR nobody closed) until
        ``unpark``."""

    def unpark(self, obj: SocketSide, mask: int) -> None:
        """Register a parked socket again, with ``mask``."""

    def release(self, obj: SocketSide, sock: Any, steal: bool = False) -> None:
        """``obj`` is closed: unregister it; close ``sock`` now, or at the
        end of the pass during dispatch (never when ``steal``)."""

    def lend(self, obj: SocketSide, helper: SocketSide, mask: int) -> None:
        """Deliver ``obj``'s events to ``helper`` (interest ``mask``) until
        ``reclaim``: a TLS handshake drives the fd while the user's socket
        hears nothing.  ``obj``'s own interest changes meanwhile are kept by
        ``obj`` and applied by ``reclaim``; ``release(obj)`` reclaims first."""

    def reclaim(self, obj: SocketSide, mask: int) -> None:
        """Events for ``obj``'s fd go to ``obj`` again, with interest ``mask``."""

    def want_push_back(self, obj: SocketSide) -> None:
        """``obj`` has pushed-back bytes to deliver at the end of the pass."""

    def track_idle(self, obj: SocketSide) -> None:  # also for send_timeout
        """``obj`` has a ``max_idle_time``: sweep it."""

    def add_timer(self, seconds: float, callback: Callable[[], object]) -> Timer: ...

    def report_error(self, obj: Optional[SocketSide], exc: BaseException, what: str = "") -> None:
        """A callback raised: the error handler, or log (and close ``obj``)."""


class Service(Protocol):
    """Process state that a module above the loop keeps on it (the signal
    pipe, the thread pool, worker pools, the EMFILE reserve descriptor).
    ``reset()`` closes every service in one pass; a forked child tells each
    at once, before any of the child's own code runs."""

    def close(self, in_child: bool) -> None:
        """Release it; ``in_child``: the loop was inherited through fork, so
        release only this process's copies and touch nothing the parent
        still uses."""

    def after_fork(self) -> None:
        """In the child, right after fork (before ``reset()``)."""
