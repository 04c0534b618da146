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

Services
--------
Process state that modules above the loop keep (the signal pipe, the thread
pool, worker pools, the EMFILE reserve descriptor) registers with the loop
as a ``Service`` (danga/contract.py), by name.  ``reset()`` closes them all
in one pass, the same way in the parent and in a forked child; the loop
imports none of those modules.

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
from collections import deque
from contextlib import contextmanager
from time import monotonic
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Set, Tuple, TypeVar

from . import pollers
from .contract import ByteChannel, Service, SocketSide
from .pollers import READ
from .sweep import Sweep
from .timers import Timer, TimerQueue, checked_delay, delay_to_ms

log = logging.getLogger("danga")

PostLoopCallback = Callable[[Dict[int, Any], Dict[int, Callable[[int], object]]], object]
ErrorHandler = Callable[[Optional[Any], BaseException], object]
S = TypeVar("S", bound=Service)


class ForkedLoopError(RuntimeError):
    """The loop was inherited through fork(); call ``danga.reset()`` in the child."""


class Loop:
    """Everything the event loop knows.  There is one per process, reached
    through ``current()`` and the module-level functions; ``reset()``
    replaces it.  The methods under "sockets" are ``contract.LoopSide``."""

    def __init__(self) -> None:
        self._poller: Optional[pollers.Poller] = None
        self.descriptor_map: Dict[int, SocketSide] = {}
        self.other_fds: Dict[int, Callable[[int], object]] = {}
        self.timers = TimerQueue()
        self.loop_timeout = -1
        self.post_loop_callback: Optional[PostLoopCallback] = None
        self.error_handler: Optional[ErrorHandler] = None
        self.now = monotonic()
        self.services: Dict[str, Service] = {}
        self._to_close: List[Tuple[SocketSide, Any]] = []
        self._push_back: Dict[SocketSide, None] = {}
        self._plc: Dict[SocketSide, PostLoopCallback] = {}
        self._lent: Dict[int, SocketSide] = {}  # fd -> the socket whose fd a helper holds (lend())
        self._fresh: Set[int] = set()
        self._dispatching = False
        self._running = False
        self._stop = False
        self._forked_from = 0
        self._sweep = Sweep(self)  # idle and send timeouts, one timer for all
        # cross-thread wake-up: a pipe the loop watches, and callables to run
        self._wake_r = self._wake_w = -1
        self._wake: Callable[[], object] = self._write_wake_pipe
        self._ready: Deque[Callable[[], object]] = deque()
        self._wake_pending = False
        self.passes = 0

    # -- the poller ---------------------------------------------------------

    def poller(self) -> pollers.Poller:
        """The backend, created on first use (``DANGA_POLLER`` picks it)."""
        if self._forked_from:
            self._fork_error()
        p = self._poller
        if p is None:
            p = self._poller = pollers.create()
            wake = getattr(p, "wake", None)
            if wake is not None:  # the backend ends its own wait (IOCP: a posted completion)
                self._wake_r, self._wake = pollers.WAKE, wake
            else:
                r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                self._wake_r, self._wake_w = r, w
                p.register(r, READ)
        return p

    # -- services --------------------------------------------------------------

    def service(self, name: str, make: Callable[["Loop"], S]) -> S:
        """The service called ``name``, made with ``make(loop)`` on first use."""
        svc = self.services.get(name)
        if svc is None:
            svc = self.services[name] = make(self)
        return svc  # type: ignore[return-value]

    def close_services(self, in_child: bool = False) -> None:
        """Close every service, the last made first."""
        for name in reversed(list(self.services)):
            svc = self.services.pop(name)
            try:
                svc.close(in_child)
            except Exception as exc:
                log.error("danga: closing the %s service failed", name, exc_info=exc)

    # -- other threads -------------------------------------------------------------

    def call_from_thread(self, cb: Callable[[], object]) -> None:
        """Run ``cb()`` on the loop's thread in its next pass; safe from any thread."""
        self._ready.append(cb)
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._wake()
            except (BlockingIOError, OSError):
                pass  # already full of wake-ups, or the loop is gone

    def _write_wake_pipe(self) -> None:
        os.write(self._wake_w, b"\0")

    def _run_ready(self) -> None:
        if self._wake_r >= 0:
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
                self.report_error(None, exc, f"callback {cb!r} from another thread")

    def _fork_error(self) -> None:
        raise ForkedLoopError(
            f"danga: this process (pid {os.getpid()}) was forked from pid {self._forked_from} "
            "and is using the loop it inherited; call danga.reset() in the child first"
        )

    # -- sockets (contract.LoopSide) ------------------------------------------

    def channel(self, sock: Any, direct: bool = False) -> ByteChannel:
        return self.poller().channel(sock, direct)

    def add_socket(self, obj: SocketSide, mask: int) -> None:
        fd = obj.fd
        poller = self.poller()
        old = self.descriptor_map.get(fd)
        if old is not None and old is not obj:
            self._lent.pop(fd, None)
            # fd number reused behind the old owner's back: it no longer owns
            # this number, so it must neither close nor unregister it.
            log.warning("danga: fd %d reused while %r still held it; detaching the old owner", fd, old)
            old.loop_lost_fd()
            poller.unregister(fd)
        poller.register(fd, mask)
        self.descriptor_map[fd] = obj
        if self._dispatching:
            self._fresh.add(fd)

    def set_interest(self, obj: SocketSide, mask: int) -> None:
        if self._forked_from:
            self._fork_error()
        if self.descriptor_map.get(obj.fd) is obj and self._poller is not None:
            self._poller.modify(obj.fd, mask)

    def park(self, obj: SocketSide) -> None:
        if self.descriptor_map.get(obj.fd) is obj and self._poller is not None:
            self._poller.unregister(obj.fd)

    def unpark(self, obj: SocketSide, mask: int) -> None:
        if self.descriptor_map.get(obj.fd) is obj:
            self.poller().register(obj.fd, mask)
            if self._dispatching:
                self._fresh.add(obj.fd)

    def lend(self, obj: SocketSide, helper: SocketSide, mask: int) -> None:
        if self.descriptor_map.get(obj.fd) is obj:
            self.descriptor_map[obj.fd] = helper
            self._lent[obj.fd] = obj
            self.set_interest(helper, mask)

    def reclaim(self, obj: SocketSide, mask: int) -> None:
        if self._lent.get(obj.fd) is obj:
            del self._lent[obj.fd]
            self.descriptor_map[obj.fd] = obj
            self.set_interest(obj, mask)

    def release(self, obj: SocketSide, sock: Any, steal: bool = False) -> None:
        if self._lent and self._lent.get(obj.fd) is obj:
            del self._lent[obj.fd]  # closed while a helper held its fd: the fd is its own again
            self.descriptor_map[obj.fd] = obj
        if self._sweep.tracked:
            self._sweep.untrack(obj)
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

    def want_push_back(self, obj: SocketSide) -> None:
        self._push_back[obj] = None

    def pending_close(self) -> List[Any]:
        """The raw sockets closed during this pass, released at its end."""
        return [sock for _, sock in self._to_close]

    def report_error(self, obj: Optional[SocketSide], exc: BaseException, what: str = "") -> None:
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

    # -- the loop ---------------------------------------------------------------

    def run(self) -> None:
        """Run passes until a post-loop callback returns false or ``stop()``.
        (``danga.event_loop()`` adds Ctrl-C handling around it.)"""
        with self.driven():
            run_once = self.run_once
            while run_once():
                pass

    @contextmanager
    def driven(self) -> Iterator[None]:
        """Hold the loop as running while a driver calls ``run_once()``:
        ``run()`` itself, or danga.aio's asyncio loop (whose waiting is this
        loop's pass).  A second ``run()`` meanwhile raises RuntimeError; a
        ``stop()`` is forgotten at the end."""
        if self._running:
            raise RuntimeError("danga: event_loop() is already running (or a danga.aio loop is driving it)")
        self.poller()
        if self._ready:  # handed over before the loop could be woken
            self._run_ready()
        self._running = True
        try:
            yield
        finally:
            self._dispatching = False
            self._running = False
            self._stop = False

    def run_once(self, timeout_ms: int = -1) -> bool:
        """One pass, waiting at most ``timeout_ms`` for events (-1: as long
        as the loop timeout and the timers allow).  Returns False when the
        loop should end: a post-loop callback returned false, or ``stop()``.
        Call it inside ``driven()``."""
        poller = self._poller or self.poller()
        events = poller.poll(self._run_timers(timeout_ms))
        self.passes += 1
        if events:
            dmap_get = self.descriptor_map.get
            fresh = self._fresh
            self._dispatching = True
            it = iter(events)
            for fd, mask in zip(it, it):
                obj = dmap_get(fd)
                if obj is None or (fresh and fd in fresh):
                    self._unowned_event(fd, mask)
                    continue
                try:
                    if mask == READ and not obj.closed:
                        obj.event_read()
                    else:
                        obj.loop_dispatch(mask)
                except Exception as exc:
                    self.report_error(obj, exc)
            self._dispatching = False
            if fresh:
                fresh.clear()
        if self._push_back or self._to_close or self._plc or self.post_loop_callback is not None or self._stop:
            return self._post_loop()
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
                self.report_error(None, exc, f"other-fd callback for fd {fd}")
            return
        # Nobody owns it (removed, stolen, or closed behind our back):
        # stop watching it, but never close what is not ours.
        log.debug("danga: event %d for unowned fd %d; unregistering it", mask, fd)
        if self._poller is not None:
            self._poller.unregister(fd)

    def _report_timer_error(self, exc: BaseException, what: str) -> None:
        self.report_error(None, exc, what)

    def _run_timers(self, cap: int = -1) -> int:
        """Run the due timers; return the poll timeout in ms (at most
        ``cap`` unless it is -1)."""
        now = self.now = monotonic()
        timers = self.timers
        # a timer that ran may have changed what the post-loop step sees: don't wait
        ran = timers.first <= now and timers.run_due(now, self._report_timer_error)
        if ran or self._push_back or self._stop:
            return 0
        deadline = timers.next_deadline()
        timeout = self.loop_timeout
        if cap >= 0 and (timeout < 0 or cap < timeout):
            timeout = cap
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
        if self._plc:
            for obj, cb in list(self._plc.items()):
                keep = self._post_loop_call(obj, cb) and keep
        if self.post_loop_callback is not None:
            keep = self._post_loop_call(None, self.post_loop_callback) and keep
        return keep and not self._stop

    def _post_loop_call(self, obj: Optional[SocketSide], cb: PostLoopCallback) -> bool:
        try:
            return bool(cb(self.descriptor_map, self.other_fds))
        except Exception as exc:
            self.report_error(obj, exc, "post-loop callback")
            return True

    def _run_push_back(self) -> None:
        """Deliver pushed-back data through ``event_read`` while it is being
        consumed; what is left untouched waits for the socket's next read
        event (or the next ``watch_read(True)``), so nobody spins."""
        pending = self._push_back
        for _ in range(10_000):
            progress = False
            for obj in list(pending):
                left = obj.loop_push_back_pending()
                if not left or obj.closed:
                    pending.pop(obj, None)  # consumed, closed, or parked until watch_read(True)
                    continue
                try:
                    obj.event_read()
                except Exception as exc:
                    self.report_error(obj, exc)
                now_left = obj.loop_push_back_pending()
                if now_left < left:
                    progress = True
                if not now_left:
                    pending.pop(obj, None)
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

    # -- timers, other fds, callbacks --------------------------------------------

    def add_timer(self, seconds: float, callback: Callable[[], object]) -> Timer:
        if self._forked_from:
            self._fork_error()
        return self.timers.add(monotonic() + checked_delay(seconds, callback), callback)

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

    def set_post_loop_callback(self, obj: Optional[SocketSide], cb: Optional[PostLoopCallback]) -> None:
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

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called, until the loop has returned."""
        return self._stop

    # -- the sweep (danga/sweep.py) ------------------------------------------------

    def track_idle(self, obj: SocketSide) -> None:
        self._sweep.track(obj)

    # -- teardown -----------------------------------------------------------------

    def _discard(self) -> None:
        """Forget everything (``reset()``).  Registered sockets are not closed,
        as in Danga::Socket; in a forked child they are the parent's too."""
        self.close_services(in_child=bool(self._forked_from))
        self.timers.clear()
        self._to_close.clear()
        self._push_back.clear()
        self._plc.clear()
        self._lent.clear()
        self.descriptor_map.clear()
        self.other_fds.clear()
        self._ready.clear()
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
            sock = getattr(obj, "sock", None)
            if sock is not None:
                sock.close()


_current = Loop()


def current() -> Loop:
    """The process's loop (a new one after every ``reset()``: look it up,
    don't keep it)."""
    return _current


def reset(close_inherited: bool = False) -> None:
    """Forget all loop state and start afresh (Danga's ``Reset``); call it
    first thing in a forked child.  Sockets are forgotten, not closed, unless
    ``close_inherited`` (a child that serves nothing of its parent's should
    close them, or the parent's clients never see their connections end).
    Services (signal handlers, the thread pool, worker pools...) are closed,
    while their loop is still the current one."""
    global _current
    old = _current
    if close_inherited:
        old.close_inherited()
    old._discard()
    _current = Loop()


def _after_fork_in_child() -> None:
    loop = _current
    for svc in list(loop.services.values()):
        try:
            svc.after_fork()
        except Exception as exc:
            log.error("danga: a service failed after fork", exc_info=exc)
    loop._forked_from = loop._forked_from or _parent_pid
    # A loop that never made a poller holds nothing of the parent's.
    if loop._poller is None and not loop.descriptor_map and not len(loop.timers):
        loop._forked_from = 0


_parent_pid = os.getpid()


def _before_fork() -> None:
    global _parent_pid
    _parent_pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
