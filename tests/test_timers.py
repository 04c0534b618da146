"""Unit tests of danga.timers' own objects, without running the event loop:
TimerQueue, Timer, delay_to_ms and PeriodicTimer (driven by hand on a fake
clock).  Timers through the loop are tested in test_loop.py."""
import time

import pytest

from danga.timers import PeriodicTimer, Timer, TimerQueue, delay_to_ms


def noop():
    pass


# -- TimerQueue -------------------------------------------------------------------


def test_len_counts_only_live_timers():
    q = TimerQueue()
    assert len(q) == 0 and q.next_deadline() is None and q.pop_due(1e9) == []
    a, b = q.add(2.0, noop), q.add(1.0, noop)
    assert len(q) == 2 and a.active and b.active
    a.cancel()
    assert len(q) == 1 and not a.active and b.active
    a.cancel()  # twice: counted once
    assert len(q) == 1


def test_pop_due_returns_live_due_timers_in_order_and_skips_cancelled():
    q = TimerQueue()
    late, dead, first, due = q.add(5.0, noop), q.add(1.5, noop), q.add(1.0, noop), q.add(2.0, noop)
    dead.cancel()
    assert q.pop_due(0.5) == []
    assert q.pop_due(2.0) == [first, due]  # the deadline itself is due
    assert len(q) == 1 and q.next_deadline() == 5.0
    assert q.pop_due(10.0) == [late]
    assert len(q) == 0 and q.next_deadline() is None


def test_next_deadline_skips_dead_heads():
    q = TimerQueue()
    timers = [q.add(float(i), noop) for i in range(5)]
    for t in timers[:3]:
        t.cancel()
    assert q.next_deadline() == 3.0
    assert len(q) == 2
    timers[3].cancel()
    timers[4].cancel()
    assert q.next_deadline() is None and len(q) == 0


def test_equal_deadlines_fire_in_insertion_order():
    q = TimerQueue()
    timers = [q.add(1.0, noop) for _ in range(50)]
    timers[7].cancel()
    assert q.pop_due(1.0) == timers[:7] + timers[8:]


def test_timers_added_while_due_ones_run_wait_for_a_later_pass():
    q = TimerQueue()
    added = []
    q.add(1.0, lambda: added.append(q.add(0.0, noop)))  # already overdue
    q.add(1.0, noop)
    batch = q.pop_due(1.0)
    for t in batch:
        t.callback()
    assert len(batch) == 2 and added[0] not in batch
    assert q.pop_due(1.0) == added


def test_cancel_after_pop_does_not_touch_the_queue():
    q = TimerQueue()
    popped, other = q.add(1.0, noop), q.add(9.0, noop)
    assert q.pop_due(1.0) == [popped]
    popped.cancel()
    assert not popped.active
    assert len(q) == 1 and q.next_deadline() == 9.0  # no phantom dead entry
    assert q.pop_due(9.0) == [other]


def test_heap_is_compacted_once_dead_entries_outnumber_live_ones():
    q = TimerQueue()
    timers = [q.add(1000.0 + i, noop) for i in range(1000)]
    for t in timers[100:]:  # far-off ones, never reaching the head
        t.cancel()
    assert len(q) == 100
    assert q.next_deadline() == 1000.0
    # the dead entries' memory was freed without them reaching the head
    # (private, but this is what compaction is for)
    assert len(q._heap) < 2 * len(q) + 65
    for t in timers[:50]:
        t.cancel()
    assert len(q) == 50 and q.next_deadline() == 1050.0
    assert q.pop_due(1e9) == timers[50:100]
    assert len(q) == 0


def test_clear_makes_every_timer_inactive():
    q = TimerQueue()
    timers = [q.add(float(i), noop) for i in range(10)]
    timers[3].cancel()
    q.clear()
    assert not any(t.active for t in timers)
    assert len(q) == 0 and q.next_deadline() is None and q.pop_due(1e9) == []
    timers[5].cancel()  # harmless afterwards
    assert len(q) == 0


# -- Timer --------------------------------------------------------------------------


def test_timer_when_active_and_repr():
    t = TimerQueue().add(1.5, noop)
    assert t.when == 1.5 and t.active and t.callback is noop
    assert repr(t) == "<danga.Timer at 1.500000 active>"
    t.cancel()
    assert t.callback is None
    assert repr(t) == "<danga.Timer at 1.500000 done>"


def test_timer_is_a_handle_hashable_by_identity():
    a, b = Timer((1.0, 0, noop, None)), Timer((1.0, 0, noop, None))
    assert a == a and not a == b
    assert len({a, b}) == 2 and b not in {a}


def test_timer_not_equal_agrees_with_equal():
    a, b = Timer((1.0, 0, noop, None)), Timer((1.0, 0, noop, None))
    assert a != b


# -- delay_to_ms --------------------------------------------------------------------


@pytest.mark.parametrize(
    "delay, ms",
    [(0.0001, 1), (0.001, 1), (0.0015, 2), (1.0, 1000), (0, 0), (0.0, 0), (-3.0, 0), (2.0**48, 2**31 - 1)],
)
def test_delay_to_ms(delay, ms):
    assert delay_to_ms(delay) == ms


def test_delay_to_ms_never_wakes_early():
    for delay in (1e-9, 0.0001, 0.0123, 0.3, 0.9999, 2.5, 1234.5678):
        assert delay_to_ms(delay) / 1000 >= delay


# -- PeriodicTimer ------------------------------------------------------------------


class Sched:
    """A TimerQueue driven by hand, on a fake clock that also stands in for
    time.monotonic; ``add`` plays the loop's add_timer and records its calls."""

    def __init__(self):
        self.now = 100.0
        self.q = TimerQueue()
        self.calls = []

    def __call__(self):
        return self.now

    def add(self, delay, callback):
        self.calls.append((delay, callback))
        return self.q.add(self.now + delay, callback)

    def run_at(self, now):
        self.now = now
        for t in self.q.pop_due(now):
            cb, t.callback = t.callback, None  # as the loop does
            if cb is not None:
                cb()


@pytest.fixture
def sched():
    s = Sched()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "monotonic", s)
        yield s


@pytest.mark.parametrize("interval", [0, -1, float("nan")])
def test_periodic_interval_must_be_positive(sched, interval):
    with pytest.raises(ValueError, match=r"interval > 0.*" + repr(interval)):
        PeriodicTimer(interval, noop, sched.add)
    assert sched.calls == []


def test_periodic_does_not_drift(sched):
    ticks = []
    p = PeriodicTimer(0.25, lambda: ticks.append(sched.now), sched.add)
    assert sched.calls == [(0.25, p._fire)] and sched.q.next_deadline() == 100.25
    sched.run_at(100.375)  # an eighth late
    assert ticks == [100.375]
    assert sched.calls[-1][0] == 0.125  # the next run keeps to the schedule
    assert sched.q.next_deadline() == 100.5 and len(sched.q) == 1
    sched.run_at(100.5)
    assert ticks == [100.375, 100.5] and sched.q.next_deadline() == 100.75
    p.cancel()


def test_periodic_skips_missed_runs(sched):
    ticks = []
    p = PeriodicTimer(0.25, lambda: ticks.append(sched.now), sched.add)
    sched.run_at(101.125)  # 100.5, 100.75 and 101.0 were missed
    assert ticks == [101.125]  # one run, not four bunched up
    assert sched.q.next_deadline() == 101.25 and len(sched.q) == 1
    sched.run_at(101.25)
    assert ticks == [101.125, 101.25]
    p.cancel()


def test_periodic_cancel_stops_it_and_cancels_its_pending_timer(sched):
    ticks = []
    p = PeriodicTimer(1.0, lambda: ticks.append(1), sched.add)
    pending = p._timer
    assert p.active and len(sched.q) == 1
    p.cancel()
    assert not p.active and not pending.active and len(sched.q) == 0
    p.cancel()  # twice is a no-op
    p._fire()  # a run already popped in the same pass does nothing
    sched.run_at(200.0)
    assert ticks == [] and len(sched.calls) == 1


def test_periodic_cancel_from_its_own_callback(sched):
    ticks = []
    p = PeriodicTimer(1.0, lambda: ticks.append(1) or p.cancel(), sched.add)
    sched.run_at(101.0)
    assert ticks == [1] and not p.active
    assert len(sched.q) == 0  # the timer it re-armed was cancelled too
    sched.run_at(200.0)
    assert ticks == [1]
