"""The module-level functions: every one acts on the process's one loop.

``danga`` re-exports them all; ``danga.perl`` gives them their Danga::Socket
spellings.
"""
from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, cast

from . import loop as _loop
from . import signals
from .loop import PostLoopCallback
from .timers import PeriodicTimer, Timer

if TYPE_CHECKING:
    from .socket import Socket

log = logging.getLogger("danga")


def event_loop() -> None:
    """Run the loop until a post-loop callback returns false or ``stop()``.

    Exceptions from socket callbacks are logged and close that socket only;
    from timers and other callbacks they are logged (see ``set_error_handler``).
    KeyboardInterrupt and SystemExit raised by a callback propagate; Ctrl-C
    (while SIGINT has Python's default handler) ends the loop after the
    current pass."""
    signals.run_loop(_loop.current())


def stop(grace: Optional[float] = None) -> None:
    """Make ``event_loop()`` return after the current pass; with ``grace``
    (seconds), stop gracefully: stop accepting, let the open connections
    finish for up to ``grace`` seconds (then close them with
    ``"shutdown"``), then return."""
    if grace is None:
        _loop.current().stop()
        return
    from .listener import drain  # listener.py sits above this module (it subclasses Socket)

    drain(grace)


def add_timer(seconds: float, callback: Callable[[], object]) -> Timer:
    """Run ``callback()`` once, ``seconds`` from now (monotonic clock).
    Returns a Timer; ``timer.cancel()`` stops it.  A delay of 0 runs on the
    next pass.  Raises ValueError for a negative delay."""
    return _loop.current().add_timer(seconds, callback)


def add_periodic_timer(seconds: float, callback: Callable[[], object]) -> PeriodicTimer:
    """Run ``callback()`` every ``seconds`` until ``.cancel()`` (EventMachine's
    ``add_periodic_timer``)."""
    return PeriodicTimer(seconds, callback, add_timer)


def next_tick(callback: Callable[[], object]) -> Timer:
    """Run ``callback()`` at the start of the next loop pass, in the order
    scheduled (EventMachine's ``next_tick``)."""
    return _loop.current().add_timer(0, callback)


def add_other_fds(fdmap: Dict[int, Callable[[int], object]]) -> None:
    """Watch descriptors you own for reading: ``{fd: callback(mask)}``.
    Takes effect at once, also while the loop runs.  The loop never closes
    them."""
    _loop.current().add_other_fds(fdmap)


def remove_other_fd(fd: int) -> bool:
    """Stop watching an fd added with ``add_other_fds`` (it is not closed).
    Returns False if it was not being watched."""
    return _loop.current().remove_other_fd(fd)


def other_fds() -> Dict[int, Callable[[int], object]]:
    """The live ``{fd: callback}`` map of ``add_other_fds``."""
    return _loop.current().other_fds


def set_loop_timeout(ms: int) -> int:
    """The longest a pass waits for events, in ms: -1 (the default) blocks
    until an event or a timer, 0 never blocks.  Returns the value set."""
    ms = int(ms)
    if ms < -1:
        raise ValueError(f"danga: loop timeout must be -1 (block) or >= 0 ms, got {ms}")
    _loop.current().loop_timeout = ms
    return ms


def set_post_loop_callback(cb: Optional[PostLoopCallback]) -> None:
    """Run ``cb(descriptor_map, other_fds)`` after every pass; a false return
    ends ``event_loop()``.  None removes it."""
    _loop.current().set_post_loop_callback(None, cb)


def set_error_handler(handler: Optional[Callable[[Optional[Socket], BaseException], object]]) -> None:
    """Choose what happens when a callback raises: ``handler(socket_or_None,
    exc)`` is called instead of logging and closing the socket.  Raise from
    it to end ``event_loop()`` (Danga::Socket's behaviour).  None restores
    the default."""
    _loop.current().error_handler = handler


def descriptor_map() -> Dict[int, Socket]:
    """The live ``{fd: Socket}`` map.  Closed sockets stay until the end of
    the pass in which they were closed."""
    return cast("Dict[int, Socket]", _loop.current().descriptor_map)


def watched_sockets() -> int:
    """How many sockets are in the descriptor map."""
    return len(_loop.current().descriptor_map)


def to_close() -> List[object]:
    """The raw sockets closed during this pass and waiting to be released."""
    return _loop.current().pending_close()


def reset(close_inherited: bool = False) -> None:
    """Forget all loop state (sockets are forgotten, not closed, unless
    ``close_inherited``).  Call it first in a forked child, which may not use
    the parent's loop."""
    _loop.reset(close_inherited)


def call_from_thread(callback: Callable[[], object]) -> None:
    """Run ``callback()`` on the loop's thread in its next pass.  The one
    danga call that is safe from another thread."""
    _loop.current().call_from_thread(callback)


def poller_name() -> str:
    """The backend in use: "epoll" or "poll" (creates the poller)."""
    return _loop.current().poller().name


def have_epoll() -> bool:
    """True if the loop uses epoll (creates the poller)."""
    return poller_name() == "epoll"


def loop_passes() -> int:
    """How many passes the loop has made (for tests and diagnostics)."""
    return _loop.current().passes


def raise_fd_limit() -> int:
    """Raise the soft limit on open descriptors (RLIMIT_NOFILE) to the hard
    limit, as Redis does at start-up, and return the soft limit now in force.
    A common default soft limit is 1024, which a few hundred slow clients
    exhaust.  Where the hard limit is unlimited, 1,048,576 (macOS: its
    OPEN_MAX) is asked for.  If the kernel refuses, the limit stays as it
    was (logged).  Returns -1 where there is no such limit (Windows)."""
    try:
        import resource
    except ImportError:
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if hard == resource.RLIM_INFINITY:
        want = 10240 if sys.platform == "darwin" else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as e:
            log.warning("danga: could not raise the descriptor limit from %d to %d: %s", soft, want, e)
    log.info("danga: descriptor limit %d", soft)
    return int(soft)
