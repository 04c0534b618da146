"""Signal handlers that run inside a normal loop pass.

``add_signal_handler(signum, callback)`` installs a Python-level handler
that does nothing itself; the interpreter's C handler writes the signal
number to a wake-up pipe (``signal.set_wakeup_fd``) that the loop watches,
so a signal that arrives just before the loop sleeps still wakes it, and the
callbacks run on the loop's thread between events, where touching sockets
is safe.  A forked child forgets all of this (the pipe is shared with the
parent: a signal to the child must never reach the parent's loop).

On Windows the loop watches sockets only, and ``set_wakeup_fd`` takes a
socket there: the wake-up channel is a socket pair instead of a pipe.  Only
SIGINT and SIGBREAK (the console's Ctrl-C and Ctrl-Break) can be handled;
the other signals are POSIX-only.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from . import loop as _loop

if TYPE_CHECKING:
    from types import FrameType

log = logging.getLogger("danga")


class Signals:
    """The loop's signal state: the pipe, the handlers, what they replaced.
    A ``Service`` of the loop, called ``"signals"``."""

    def __init__(self, loop: "_loop.Loop") -> None:
        self.loop = loop
        self.pair: Optional[Tuple[socket.socket, socket.socket]] = None
        if sys.platform == "win32":
            self.pair = socket.socketpair()
            for sock in self.pair:
                sock.setblocking(False)
            self.r, self.w = self.pair[0].fileno(), self.pair[1].fileno()
        else:
            self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.callbacks: Dict[int, List[Callable[[int], object]]] = {}
        self.previous: Dict[int, Any] = {}
        self.previous_wakeup = signal.set_wakeup_fd(self.w, warn_on_full_buffer=False)
        loop.add_other_fds({self.r: self._readable})

    def add(self, signum: int, callback: Callable[[int], object]) -> None:
        if signum not in self.callbacks:
            self.previous[signum] = signal.signal(signum, _noop)
            self.callbacks[signum] = []
        self.callbacks[signum].append(callback)

    def remove(self, signum: int) -> bool:
        if signum not in self.callbacks:
            return False
        del self.callbacks[signum]
        signal.signal(signum, self.previous.pop(signum))
        return True

    def _readable(self, mask: int) -> None:
        try:
            data = self.pair[0].recv(4096) if self.pair else os.read(self.r, 4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            for cb in list(self.callbacks.get(signum, ())):
                try:
                    cb(signum)
                except Exception as exc:
                    self.loop.report_error(None, exc, f"signal handler for {signal.Signals(signum).name}")

    def close(self, in_child: bool = False) -> None:
        """Undo everything; in a forked child, without touching the parent's
        registrations (the child's copies of the pipe are simply closed)."""
        try:
            signal.set_wakeup_fd(-1 if in_child else self.previous_wakeup)
        except ValueError:
            pass  # not the main thread
        for signum in list(self.callbacks):
            try:
                signal.signal(signum, signal.SIG_DFL if in_child else self.previous.get(signum, signal.SIG_DFL))
            except ValueError:
                pass
        self.callbacks.clear()
        if not in_child:
            self.loop.remove_other_fd(self.r)
        else:
            self.loop.other_fds.pop(self.r, None)
        if self.pair:
            for sock in self.pair:
                sock.close()
        else:
            os.close(self.r)
            os.close(self.w)

    def after_fork(self) -> None:
        """Signals in a forked child must not wake (or stop) the parent's loop."""
        self.close(in_child=True)
        if self.loop.services.get("signals") is self:
            del self.loop.services["signals"]


def _noop(signum: int, frame: Optional[FrameType]) -> None:
    """The Python-level handler: the work happens in the loop pass."""


_WINDOWS_SIGNALS = {int(getattr(signal, name)) for name in ("SIGINT", "SIGBREAK") if hasattr(signal, name)}


def add_signal_handler(signum: int, callback: Callable[[int], object]) -> None:
    """Run ``callback(signum)`` on the loop's thread, in a loop pass, when
    ``signum`` arrives.  Must be called from the main thread.  The first
    handler for a signal replaces Python's (for SIGINT that means no
    KeyboardInterrupt; call ``danga.stop()`` from it instead)."""
    if sys.platform == "win32" and signum not in _WINDOWS_SIGNALS:
        raise ValueError(f"danga: a handler for signal {signum} is POSIX-only; on Windows only SIGINT "
                         "and SIGBREAK (Ctrl-C, Ctrl-Break) can be handled")
    loop = _loop.current()
    loop.poller()
    loop.service("signals", Signals).add(signal.Signals(signum), callback)


def remove_signal_handler(signum: int) -> bool:
    """Remove the handlers for ``signum`` and restore the previous one."""
    svc: Optional[Signals] = _loop.current().services.get("signals")  # type: ignore[assignment]
    return svc.remove(signum) if svc is not None else False


def run_loop(loop: "_loop.Loop") -> None:
    """``loop.run()``, with Ctrl-C ending it after the current pass instead of
    raising KeyboardInterrupt wherever the interpreter happens to be.  Only
    while SIGINT has Python's default handler, in the main thread."""
    take = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if take:
        add_signal_handler(signal.SIGINT, lambda signum: loop.stop())
    try:
        loop.run()
    finally:
        if take:
            remove_signal_handler(signal.SIGINT)
