"""One-shot timers on the monotonic clock, kept in a binary heap.

Danga::Socket kept timers on the wall clock in a sorted array and left
cancelled timers in place until their due time, where they still woke the
loop.  Here a cancelled timer is marked dead and dropped when it reaches the
head of the heap (so it never wakes the loop), and the heap is rebuilt
without the dead entries once they outnumber the live ones (so cancelling
many far-off timers frees their memory).  Equal deadlines fire in the order
they were added.
"""
from __future__ import annotations

import heapq
import math
from itertools import count
from typing import Callable, List, Optional, Tuple

_seq = count()


class Timer:
    """A scheduled callback; returned by ``add_timer``.  ``cancel()`` it to
    stop it from running; cancelling twice, or after it ran, does nothing."""

    __slots__ = ("when", "callback", "_queue")

    def __init__(self, when: float, callback: Callable[[], object], queue: "TimerQueue") -> None:
        self.when = when
        self.callback: Optional[Callable[[], object]] = callback
        self._queue: Optional[TimerQueue] = queue

    @property
    def active(self) -> bool:
        """True until the timer has run or been cancelled."""
        return self.callback is not None

    def cancel(self) -> None:
        """Stop the timer; it will not run and no longer counts as pending."""
        if self.callback is None:
            return
        self.callback = None
        q, self._queue = self._queue, None
        if q is not None:
            q._cancelled()

    def __repr__(self) -> str:
        state = "active" if self.active else "done"
        return f"<danga.Timer at {self.when:.6f} {state}>"


class TimerQueue:
    """The loop's timers: add, cancel, run the due ones, say when the next is."""

    __slots__ = ("_heap", "_dead")

    def __init__(self) -> None:
        self._heap: List[Tuple[float, int, Timer]] = []
        self._dead = 0

    def __len__(self) -> int:
        """The number of live (not cancelled, not yet run) timers."""
        return len(self._heap) - self._dead

    def add(self, when: float, callback: Callable[[], object]) -> Timer:
        timer = Timer(when, callback, self)
        heapq.heappush(self._heap, (when, next(_seq), timer))
        return timer

    def _cancelled(self) -> None:
        self._dead += 1
        heap = self._heap
        if self._dead > 64 and self._dead * 2 > len(heap):
            self._heap = [e for e in heap if e[2].callback is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    def _drop_dead_head(self) -> None:
        heap = self._heap
        while heap and heap[0][2].callback is None:
            heapq.heappop(heap)
            self._dead -= 1

    def next_deadline(self) -> Optional[float]:
        """The monotonic time of the next live timer, or None."""
        self._drop_dead_head()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> List[Timer]:
        """Remove and return the live timers due at ``now``, in firing order.
        Timers added while these run wait for a later pass."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timer.callback is None:
                self._dead -= 1
            else:
                timer._queue = None
                due.append(timer)
        return due

    def clear(self) -> None:
        for _, _, timer in self._heap:
            timer.callback = None
            timer._queue = None
        self._heap = []
        self._dead = 0


def delay_to_ms(delay: float) -> int:
    """Seconds until a deadline as a poll timeout in ms, rounded up so that
    the loop never wakes early, and capped so that it never overflows."""
    if delay <= 0:
        return 0
    return min(int(math.ceil(delay * 1000)), 2**31 - 1)


class PeriodicTimer:
    """Runs ``callback()`` every ``interval`` seconds until cancelled; the
    schedule does not drift (a late run does not delay the next), and runs
    missed while the loop was busy are skipped, not bunched up."""

    __slots__ = ("interval", "callback", "_next", "_timer", "_add")

    def __init__(self, interval: float, callback: Callable[[], object], add) -> None:
        if not interval > 0:
            raise ValueError(f"danga: a periodic timer needs an interval > 0 seconds, got {interval!r}")
        self.interval = float(interval)
        self.callback: Optional[Callable[[], object]] = callback
        self._add = add  # the loop's add_timer
        self._timer: Optional[Timer] = add(self.interval, self._fire)
        self._next = self._timer.when

    def _fire(self) -> None:
        cb = self.callback
        if cb is None:
            return
        from time import monotonic

        now = monotonic()
        nxt = self._next + self.interval
        if nxt <= now:  # fell behind: skip the missed runs
            nxt = now + self.interval - (now - self._next) % self.interval
        self._next = nxt
        self._timer = self._add(max(0.0, nxt - now), self._fire)
        cb()

    @property
    def active(self) -> bool:
        return self.callback is not None

    def cancel(self) -> None:
        """Stop it; it will not run again."""
        self.callback = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
