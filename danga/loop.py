"""The one event loop.  All of its state lives in one ``Loop`` object.

How a pass runs
---------------
1. Run the timers that are due (monotonic clock), then work out how long to
   wait: the loop timeout, capped by the next timer; zero if the last pass
   left work behind (a timer ran, data was pushed back, a stop was asked).
2. One ``poller.poll()`` call returns the ready (fd, mask) pairs.
3. Dispatch them: ``event_read``, ``event_write``, ``event_err``,
   ``event_hup``, in that order, each skipped once the socket is closed.
4. The post-loop step: redeliver pushed-back data, really close the sockets
   closed during the pass, run the post-loop callbacks (any false return
   ends ``event_loop()``).

Why close is deferred
---------------------
One ``epoll_wait`` batch may hold events for sockets A and B.  If A's
callback closes B and the descriptor were released at once, A (or anything
it calls) could open a new socket C that the kernel gives B's old number, and
B's stale event, still waiting in the batch, would be delivered to C.  So a
``close()`` during dispatch only unregisters the socket and marks it closed;
the descriptor itself is released in step 4, after the whole batch.  Outside
dispatch (timers, post-loop callbacks, code running before the loop) no batch
is in flight and a close takes effect at once, so a close from a timer does
not wait for some unrelated event.  A descriptor that does become registered
during dispatch (a stolen socket re-wrapped, a reused number) is ignored for
the rest of that batch: its first event comes from the next wait.

Why level-triggered
-------------------
Danga::Socket's users read one chunk in ``event_read`` and return, trusting
to be called again while data remains.  Level-triggered readiness gives them
exactly that.  Its hazard is spinning on a condition nobody clears, so the
loop clears them itself: a socket whose ``event_hup``/``event_err`` left it
open is unregistered; write interest that the library turned on is turned
off when the queue drains (and the default ``event_write`` turns off the
user's); pushed-back data nobody consumes is parked until the socket is
readable again.

Ownership
---------
The loop closes only descriptors that its sockets own, and only once.  Fds
added with ``add_other_fds`` belong to the caller: removing one unregisters
it and nothing more, and an event for an fd nobody claims unregisters that fd
without closing it.

Fork
----
After ``fork()`` the child shares the parent's epoll instance.  Any use of the
inherited loop in the child raises ``ForkedLoopError`` until ``reset()``,
which drops the child's reference to it without touching the registrations
the parent relies on.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import weakref
from time import monotonic
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

from . import pollers
from .pollers import READ
from .timers import Timer, TimerQueue, delay_to_ms

if TYPE_CHECKING:
    from .socket import Socket

log = logging.getLogger("danga")

#: How often the idle sweep runs at most (Perlbal swept every 5 s).  The
#: sweep runs more often when a class's ``max_idle_time`` is short.
IDLE_SWEEP_INTERVAL = 5.0

PostLoopCallback = Callable[[Dict[int, "Socket"], Dict[int, Callable[[int], object]]], object]
ErrorHandler = Callable[[Optional["Socket"], BaseException], object]


class ForkedLoopError(RuntimeError):
    """The loop was inherited through fork(); call ``danga.reset()`` in the child."""


class Loop:
    """Everything the event loop knows.  There is one per process, reached
    through the module-level functions; ``reset()`` replaces it."""

    def __init__(self) -> None:
        self._poller: Optional[pollers.Poller] = None
        self.descriptor_map: Dict[int, "Socket"] = {}
        self.other_fds: Dict[int, Callable[[int], object]] = {}
        self.timers = TimerQueue()
        self.loop_timeout = -1
        self.post_loop_callback: Optional[PostLoopCallback] = None
        self.error_handler: Optional[ErrorHandler] = None
        self.now = monotonic()
        self._to_close: List[Tuple["Socket", Any]] = []
        self._push_back: Dict["Socket", None] = {}
        self._plc: Dict["Socket", PostLoopCallback] = {}
        self._fresh: set = set()
        self._dispatching = False
        self._running = False
        self._stop = False
        self._forked_from = 0
        self._idle_timer: Optional[Timer] = None
        # cross-thread wake-up: a pipe the loop watches, and callables to run
        self._wake_r = self._wake_w = -1
        self._ready: Deque[Callable[[], object]] = deque()
        self._wake_pending = False
        self.signals: Any = None  # danga.signals.Signals, made on first use
        self.executor: Any = None  # the defer() thread pool, made on first use
        self.executor_size = 4
        self.worker_pools: Any = None  # danga.workers' pools, by name, made on first use
        self._idle_tracked: "weakref.WeakSet[Socket]" = weakref.WeakSet()
        self.passes = 0

    # -- the poller ---------------------------------------------------------

    def poller(self) -> pollers.Poller:
        """The backend, created on first use (``DANGA_POLLER`` picks it)."""
        if self._forked_from:
            self._fork_error()
        p = self._poller
        if p is None:
            p = self._poller = pollers.create()
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._wake_r, self._wake_w = r, w
            p.register(r, READ)
        return p

    # -- other threads -------------------------------------------------------------

    def call_from_thread(self, cb: Callable[[], object]) -> None:
        """Run ``cb()`` on the loop's thread in its next pass; safe from any thread."""
        self._ready.append(cb)
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"\0")
            except (BlockingIOError, OSError):
                pass  # already full of wake-ups, or the loop is gone

    def _run_ready(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except (BlockingIOError, InterruptedError):
            pass
        self._wake_pending = False
        ready = self._ready
        while ready:
            cb = ready.popleft()
            try:
                cb()
            except Exception as exc:
                self._callback_failed(None, exc, f"callback {cb!r} from another thread")

    def _fork_error(self) -> None:
        raise ForkedLoopError(
            f"danga: this process (pid {os.getpid()}) was forked from pid {self._forked_from} "
            "and is using the loop it inherited; call danga.reset() in the child first"
        )

    # -- sockets (called by Socket) ------------------------------------------

    def _add(self, obj: "Socket") -> None:
        fd = obj.fd
        poller = self.poller()
        old = self.descriptor_map.get(fd)
        if old is not None and old is not obj:
            # fd number reused behind the old owner's back: it no longer owns
            # this number, so it must neither close nor unregister it.
            log.warning("danga: fd %d reused while %r still held it; detaching the old owner", fd, old)
            old._lost_fd()
            poller.unregister(fd)
        poller.register(fd, obj._mask)
        self.descriptor_map[fd] = obj
        if self._dispatching:
            self._fresh.add(fd)

    def _set_mask(self, obj: "Socket") -> None:
        if self._forked_from:
            self._fork_error()
        if self.descriptor_map.get(obj.fd) is obj and self._poller is not None:
            self._poller.modify(obj.fd, obj._mask)

    def _park(self, obj: "Socket") -> None:
        """Stop reporting a socket whose HUP/ERR its handlers did not close."""
        if self.descriptor_map.get(obj.fd) is obj and self._poller is not None:
            self._poller.unregister(obj.fd)

    def _release(self, obj: "Socket", sock: Any, steal: bool = False) -> None:
        """``close()``/``steal_socket()``: unregister now; close now or at the end of the pass."""
        if self._idle_tracked:
            self._untrack_idle(obj)
        self._plc.pop(obj, None)
        self._push_back.pop(obj, None)
        fd = obj.fd
        owner = self.descriptor_map.get(fd) is obj
        if self._forked_from:
            # The epoll set is shared with the parent: never EPOLL_CTL_DEL here.
            if not steal:
                sock.close()
            if owner:
                del self.descriptor_map[fd]
            return
        if owner and self._poller is not None:
            self._poller.unregister(fd)
        if steal:
            if owner:
                del self.descriptor_map[fd]
        elif self._dispatching:
            self._to_close.append((obj, sock))
        else:
            sock.close()
            if owner:
                del self.descriptor_map[fd]

    def _want_push_back(self, obj: "Socket") -> None:
        self._push_back[obj] = None

    # -- the loop ---------------------------------------------------------------

    def run(self) -> None:
        """Run passes until a post-loop callback returns false or ``stop()``."""
        if self._running:
            raise RuntimeError("danga: event_loop() is already running")
        poller = self.poller()
        sigint = self._take_sigint()
        if self._ready:  # handed over before the loop could be woken
            self._run_ready()
        self._running = True
        dmap_get = self.descriptor_map.get
        fresh = self._fresh
        try:
            while True:
                events = poller.poll(self._run_timers())
                self.passes += 1
                if events:
                    self._dispatching = True
                    it = iter(events)
                    for fd, mask in zip(it, it):
                        obj = dmap_get(fd)
                        if obj is None or (fresh and fd in fresh):
                            self._unowned_event(fd, mask)
                            continue
                        try:
                            if obj.closed:
                                obj._event_after_close(mask)
                            elif mask == READ:
                                obj.event_read()
                            else:
                                obj._dispatch(mask)
                        except Exception as exc:
                            self._callback_failed(obj, exc)
                    self._dispatching = False
                    if fresh:
                        fresh.clear()
                if (self._push_back or self._to_close or self._plc or self.post_loop_callback is not None
                        or self._stop) and not self._post_loop():
                    break
        finally:
            self._dispatching = False
            self._running = False
            self._stop = False
            if sigint:
                from .signals import remove_signal_handler

                remove_signal_handler(signal.SIGINT)

    def _take_sigint(self) -> bool:
        """While the loop runs, Ctrl-C ends it after the current pass instead
        of raising KeyboardInterrupt wherever the interpreter happens to be.
        Only when SIGINT has Python's default handler, in the main thread."""
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            return False
        from .signals import add_signal_handler

        add_signal_handler(signal.SIGINT, lambda signum: self.stop())
        return True

    def _unowned_event(self, fd: int, mask: int) -> None:
        if fd == self._wake_r:
            self._run_ready()
            return
        if fd in self._fresh:
            return  # a stale event for the fd's previous owner
        cb = self.other_fds.get(fd)
        if cb is not None:
            try:
                cb(mask)
            except Exception as exc:
                self._callback_failed(None, exc, f"other-fd callback for fd {fd}")
            return
        # Nobody owns it (removed, stolen, or closed behind our back):
        # stop watching it, but never close what is not ours.
        log.debug("danga: event %d for unowned fd %d; unregistering it", mask, fd)
        if self._poller is not None:
            self._poller.unregister(fd)

    def _run_timers(self) -> int:
        """Run the due timers; return the poll timeout in ms."""
        now = self.now = monotonic()
        timers = self.timers
        heap = timers._heap
        hurry = False
        if heap and heap[0][0] <= now:
            for timer in timers.pop_due(now):
                cb = timer[2]
                if cb is None:
                    continue  # cancelled by a timer that ran before it
                timer[2] = None
                try:
                    cb()
                except Exception as exc:
                    self._callback_failed(None, exc, f"timer {cb!r}")
            hurry = True  # let the post-loop step see what the timers changed
        if hurry or self._push_back or self._stop:
            return 0
        deadline = timers.next_deadline()
        timeout = self.loop_timeout
        if deadline is None:
            return timeout
        ms = delay_to_ms(deadline - monotonic())
        return ms if timeout < 0 or ms < timeout else timeout

    def _post_loop(self) -> bool:
        if self._push_back:
            self._run_push_back()
        if self._to_close:
            self._reap()
        keep = True
        dmap, other = self.descriptor_map, self.other_fds
        if self._plc:
            for obj, cb in list(self._plc.items()):
                try:
                    if not cb(dmap, other):
                        keep = False
                except Exception as exc:
                    self._callback_failed(obj, exc, "post-loop callback")
        global_cb = self.post_loop_callback
        if global_cb is not None:
            try:
                if not global_cb(dmap, other):
                    keep = False
            except Exception as exc:
                self._callback_failed(None, exc, "post-loop callback")
        if self._stop:
            keep = False
        return keep

    def _run_push_back(self) -> None:
        """Deliver pushed-back data through ``event_read`` while it is being
        consumed; what is left untouched waits for the socket's next read
        event (or the next ``watch_read(True)``), so nobody spins."""
        pending = self._push_back
        for _ in range(10_000):
            progress = False
            for obj in list(pending):
                left = obj._push_back_len()
                if obj.closed or not left:
                    pending.pop(obj, None)
                    continue
                if not obj._mask & READ:
                    pending.pop(obj, None)  # parked until watch_read(True)
                    continue
                try:
                    obj.event_read()
                except Exception as exc:
                    self._callback_failed(obj, exc)
                now_left = obj._push_back_len()
                if obj.closed or not now_left:
                    pending.pop(obj, None)
                    progress = True
                elif now_left < left:
                    progress = True
            if not progress:
                break
        pending.clear()

    def _reap(self) -> None:
        dmap = self.descriptor_map
        to_close, self._to_close = self._to_close, []
        for obj, sock in to_close:
            sock.close()
            if dmap.get(obj.fd) is obj:
                del dmap[obj.fd]

    def _callback_failed(self, obj: Optional["Socket"], exc: Exception, what: str = "") -> None:
        handler = self.error_handler
        if handler is not None:
            handler(obj, exc)  # may re-raise: Danga::Socket's behaviour
            return
        if obj is None:
            log.error("danga: %s raised; the loop goes on", what or "a callback", exc_info=exc)
            return
        log.error("danga: %s raised in %s; closing it", obj.as_string(), what or "a callback", exc_info=exc)
        if not obj.closed:
            obj.close(f"exception: {type(exc).__name__}: {exc}")

    # -- timers, other fds, callbacks --------------------------------------------

    def add_timer(self, seconds: float, callback: Callable[[], object]) -> Timer:
        if self._forked_from:
            self._fork_error()
        if not callable(callback):
            raise TypeError(f"danga: add_timer needs a callable, got {type(callback).__name__}")
        try:
            seconds = float(seconds)
        except (TypeError, ValueError):
            raise TypeError(f"danga: add_timer needs a number of seconds, got {seconds!r}") from None
        if not seconds >= 0:  # also catches NaN
            raise ValueError(f"danga: add_timer delay must be >= 0 seconds, got {seconds!r}")
        return self.timers.add(monotonic() + seconds, callback)

    def add_other_fds(self, fdmap: Dict[int, Callable[[int], object]]) -> None:
        poller = self.poller()
        for fd, cb in fdmap.items():
            if not callable(cb):
                raise TypeError(f"danga: the callback for fd {fd} is not callable: {cb!r}")
            if fd in self.descriptor_map:
                raise ValueError(f"danga: fd {fd} already belongs to {self.descriptor_map[fd].as_string()}")
            if fd not in self.other_fds:
                poller.register(fd, READ)
                if self._dispatching:
                    self._fresh.add(fd)
            self.other_fds[fd] = cb

    def remove_other_fd(self, fd: int) -> bool:
        if self.other_fds.pop(fd, None) is None:
            return False
        if self._poller is not None and not self._forked_from:
            self._poller.unregister(fd)
        return True

    def set_post_loop_callback(self, obj: Optional["Socket"], cb: Optional[PostLoopCallback]) -> None:
        if cb is not None and not callable(cb):
            raise TypeError(f"danga: post-loop callback must be callable or None, got {cb!r}")
        if obj is None:
            self.post_loop_callback = cb
        elif cb is None:
            self._plc.pop(obj, None)
        elif not obj.closed:
            self._plc[obj] = cb

    def stop(self) -> None:
        self._stop = True

    # -- idle sweep -------------------------------------------------------------

    def _track_idle(self, obj: "Socket") -> None:
        """``obj`` has a ``max_idle_time``: make sure the sweep runs."""
        self._idle_tracked.add(obj)
        self._ensure_idle_sweep(obj.max_idle_time)

    def _untrack_idle(self, obj: "Socket") -> None:
        tracked = self._idle_tracked
        tracked.discard(obj)
        if not tracked and self._idle_timer is not None:
            self._idle_timer.cancel()  # nobody left to sweep: no timer left behind
            self._idle_timer = None

    def _ensure_idle_sweep(self, max_idle: float) -> None:
        interval = min(IDLE_SWEEP_INTERVAL, max(0.01, max_idle / 4))
        t = self._idle_timer
        if t is not None and t.active:
            if t.when - monotonic() <= interval:
                return
            t.cancel()
        self._idle_timer = self.add_timer(interval, self._idle_sweep)

    def _idle_sweep(self) -> None:
        """One timer for all sockets: close those idle for ``max_idle_time``."""
        self._idle_timer = None
        now = self.now
        shortest = 0.0
        for obj in list(self._idle_tracked):
            limit = obj.max_idle_time
            if not limit or obj.closed:
                continue
            if obj._take_activity():
                obj._idle_since(now)
            elif now - obj._idle_since() >= limit:
                obj.close("idle_timeout")
                continue
            shortest = limit if not shortest else min(shortest, limit)
        if shortest:
            self._ensure_idle_sweep(shortest)

    # -- teardown -----------------------------------------------------------------

    def _discard(self) -> None:
        """Forget everything (``reset()``).  Registered sockets are not closed,
        as in Danga::Socket; in a forked child they are the parent's too."""
        self.timers.clear()
        self._to_close.clear()
        self._push_back.clear()
        self._plc.clear()
        self.descriptor_map.clear()
        self.other_fds.clear()
        self._ready.clear()
        if self.signals is not None:
            self.signals.close(in_child=bool(self._forked_from))
            self.signals = None
        if self.executor is not None:
            if not self._forked_from:  # a child has none of the pool's threads
                self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        p, self._poller = self._poller, None
        if p is not None:
            p.close()  # closes only this process's reference to an epoll fd

    def close_inherited(self) -> None:
        """In a forked child: close the raw sockets the parent's loop held
        (no hooks run, nothing is unregistered from the shared epoll set)."""
        for obj in list(self.descriptor_map.values()):
            sock = obj.sock
            if sock is not None:
                sock.close()


_current = Loop()


def current() -> Loop:
    """The process's loop."""
    return _current


def reset(close_inherited: bool = False) -> None:
    """Forget all loop state and start afresh (Danga's ``Reset``); call it
    first thing in a forked child.  Sockets are forgotten, not closed, unless
    ``close_inherited`` (a child that serves nothing of its parent's should
    close them, or the parent's clients never see their connections end)."""
    global _current
    old = _current
    _current = Loop()
    if close_inherited:
        old.close_inherited()
    old._discard()


def _after_fork_in_child() -> None:
    if _current.signals is not None:
        # Signals in the child must not wake (or stop) the parent's loop.
        _current.signals.close(in_child=True)
        _current.signals = None
    _current._forked_from = _current._forked_from or _parent_pid
    # A loop that never made a poller holds nothing of the parent's.
    if _current._poller is None and not _current.descriptor_map and not len(_current.timers):
        _current._forked_from = 0


_parent_pid = os.getpid()


def _before_fork() -> None:
    global _parent_pid
    _parent_pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
