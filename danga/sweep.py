"""The one sweep timer behind every socket's idle timeout and send timeout.

A timer per socket would cost a heap entry and a callback for every
connection, re-armed on every byte.  Instead the sockets that have a limit
(``max_idle_time``, ``send_timeout``) are tracked in one weak set and a
single timer looks at them all, as Perlbal's idle sweep did: every
``INTERVAL`` seconds at most, more often when a limit is short (a quarter
of the shortest), and not at all while nobody is tracked.  Each socket
answers two questions in O(1) (``loop_idle_for``, ``loop_send_stalled_for``:
danga/contract.py); a limit is therefore enforced to within a quarter of it.
"""
from __future__ import annotations

import weakref
from time import monotonic
from typing import TYPE_CHECKING, Any, Optional

from .timers import Timer, cancel

if TYPE_CHECKING:
    from .contract import LoopSide, SocketSide

#: How often the sweep runs at most (Perlbal swept every 5 s).
INTERVAL = 5.0


def _limits(obj: Any) -> float:
    """The shortest limit ``obj`` has (0: none)."""
    idle = obj.max_idle_time
    send = obj.send_timeout
    if idle and send:
        return float(min(idle, send))
    return float(idle or send)


class Sweep:
    """The sockets with a limit, and the one timer that enforces them."""

    def __init__(self, loop: "LoopSide") -> None:
        self.loop = loop
        self.tracked: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.timer: Optional[Timer] = None

    def track(self, obj: "SocketSide") -> None:
        self.tracked.add(obj)
        self._ensure(_limits(obj))

    def untrack(self, obj: "SocketSide") -> None:
        tracked = self.tracked
        tracked.discard(obj)
        if not tracked:
            self.timer = cancel(self.timer)  # nobody left to sweep: no timer left behind

    def _ensure(self, limit: float) -> None:
        if not limit:
            return
        interval = min(INTERVAL, max(0.01, limit / 4))
        t = self.timer
        if t is not None and t.active:
            if t.when - monotonic() <= interval:  # not loop.now: that is when the pass began
                return
            t.cancel()
        self.timer = self.loop.add_timer(interval, self._run)

    def _run(self) -> None:
        """Close the sockets idle for ``max_idle_time`` (``"idle_timeout"``) and
        those whose queued output made no progress for ``send_timeout``
        (``"send_timeout"``)."""
        self.timer = None
        now = self.loop.now
        shortest = 0.0
        for obj in list(self.tracked):
            if obj.closed:
                continue
            idle, send = obj.max_idle_time, obj.send_timeout
            if idle and obj.loop_idle_for(now) >= idle:
                obj.close("idle_timeout")
                continue
            if send and obj.loop_send_stalled_for(now) >= send:
                obj.close("send_timeout")
                continue
            limit = _limits(obj)
            if limit:
                shortest = limit if not shortest else min(shortest, limit)
        if shortest:
            self._ensure(shortest)
