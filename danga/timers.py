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
import time
import math
from itertools import count
from typing import TYPE_CHECKING, Any, Callable, List, Optional

_seq = count()

# Timer is a list; mypy wants its item type, which at run time would only add
# __orig_bases__ (and "Bases: list[Any]" in the API docs).
if TYPE_CHECKING:
    _Entry = List[Any]
else:
    _Entry = list


class Timer(_Entry):
    """A scheduled callback; returned by ``add_timer``.  ``cancel()`` it to
    stop it from running; cancelling twice, or after it ran, does nothing.

    A timer is its own heap entry, ``[when, seq, callback, queue]``: lists
    compare element by element, so the heap orders by deadline and then by
    the order timers were added, and each timer costs one object."""

    __slots__ = ()

    @property
    def when(self) -> float:
        """The monotonic time it is due."""
        when: float = self[0]
        return when

    @property
    def callback(self) -> Optional[Callable[[], object]]:
        cb: Optional[Callable[[], object]] = self[2]
        return cb

    @callback.setter
    def callback(self, cb: Optional[Callable[[], object]]) -> None:
        self[2] = cb

    @property
    def active(self) -> bool:
        """True until the timer has run or been cancelled."""
        return self[2] is not None

    def cancel(self) -> None:
        """Stop the timer; it will not run and no longer counts as pending."""
        if self[2] is None:
            return
        self[2] = None
        q = self[3]
        if q is not None:
            self[3] = None
            q._cancelled()

    def __repr__(self) -> str:
        state = "active" if self.active else "done"
        return f"<danga.Timer at {self[0]:.6f} {state}>"

    __hash__ = object.__hash__  # type: ignore[assignment]  # a handle, not a value
    __eq__ = object.__eq__
    __ne__ = object.__ne__  # list's would compare the fields


class TimerQueue:
    """The loop's timers: add, cancel, run the due ones, say when the next is."""

    __slots__ = ("_heap", "_dead", "first")

    def __init__(self) -> None:
        self._heap: List[Timer] = []
        self._dead = 0
        #: No timer is due before this monotonic time (inf when there are
        #: none).  It may be early (the timer there was cancelled), never
        #: late, so the loop's per-pass test is one float compare.
        self.first = math.inf

    def __len__(self) -> int:
        """The number of live (not cancelled, not yet run) timers."""
        return len(self._heap) - self._dead

    def add(self, when: float, callback: Callable[[], object]) -> Timer:
        timer = Timer((when, next(_seq), callback, self))
        heapq.heappush(self._heap, timer)
        if when < self.first:
            self.first = when
        return timer

    def _cancelled(self) -> None:
        self._dead += 1
        heap = self._heap
        if self._dead > 64 and self._dead * 2 > len(heap):
            self._heap = [t for t in heap if t[2] is not None]
            heapq.heapify(self._heap)
            self._dead = 0

    def _drop_dead_head(self) -> None:
        heap = self._heap
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
            self._dead -= 1

    def next_deadline(self) -> Optional[float]:
        """The monotonic time of the next live timer, or None."""
        self._drop_dead_head()
        return self._heap[0][0] if self._heap else None

    def run_due(self, now: float, report: Callable[[BaseException, str], object]) -> bool:
        """Run the timers due at ``now``; ``report(exc, what)`` for one that
        raises.  Returns True if any was due (even if a timer that ran before
        it cancelled it)."""
        if self.first > now:
            return False
        due = self.pop_due(now)
        if not due:
            return False  # ``first`` was early: a cancelled timer's deadline
        for timer in due:
            cb = timer[2]
            if cb is None:
                continue  # cancelled by a timer that ran before it
            timer[2] = None
            try:
                cb()
            except Exception as exc:
                report(exc, f"timer {cb!r}")
        return True

    def pop_due(self, now: float) -> List[Timer]:
        """Remove and return the live timers due at ``now``, in firing order.
        Timers added while these run wait for a later pass."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)
            if timer[2] is None:
                self._dead -= 1
            else:
                timer[3] = None
                due.append(timer)
        self.first = heap[0][0] if heap else math.inf
        return due

    def clear(self) -> None:
        for timer in self._heap:
            timer[2] = timer[3] = None
        self._heap = []
        self._dead = 0
        self.first = math.inf


def checked_delay(seconds: float, callback: Callable[[], object]) -> float:
    """``add_timer``'s arguments, checked; the delay as a float."""
    if not callable(callback):
        raise TypeError(f"danga: add_timer needs a callable, got {type(callback).__name__}")
    try:
        delay = float(seconds)
    except (TypeError, ValueError):
        raise TypeError(f"danga: add_timer needs a number of seconds, got {seconds!r}") from None
    if not delay >= 0:  # also catches NaN
        raise ValueError(f"danga: add_timer delay must be >= 0 seconds, got {seconds!r}")
    return delay


def cancel(timer: Optional[Timer]) -> Optional[Timer]:
    """Cancel ``timer`` if there is one.  Always returns None, so that
    ``slot = cancel(slot)`` cancels and clears a timer slot in one step."""
    if timer is not None:
        timer.cancel()
    return None


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

    def __init__(self, interval: float, callback: Callable[[], object],
                 add: Callable[[float, Callable[[], object]], Timer]) -> None:
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
        now = time.monotonic()
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
