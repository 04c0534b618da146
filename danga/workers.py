"""Forked worker processes, as Ruby's Packet gives them.

Declare a worker class, start N of it, and ask it things from the master::

    class Primes(danga.workers.Worker):
        name = "primes"
        def receive_data(self, n):
            self.send_data(count_primes(n))     # the reply to this request

    danga.workers.start_worker(Primes, count=2)
    danga.workers.ask_worker("primes", 100_000, callback=print)

Each worker is a forked process running its own fresh loop (``reset`` in the
child: the parent's loop state, sockets and epoll fd are not shared).  It
talks to the master over a socketpair carrying length-prefixed frames.

Message format: a 4-byte big-endian length, then a pickle of
``(request_id, kind, payload)``.  Pickle is used only between a master and
the workers it forked itself: both sides run the same code from the same
process image, and nobody else can reach the socketpair.  Unpickling
executes code chosen by the sender, so never use this channel, or pickle,
with anything that crosses a network or comes from a client.

A worker that dies is reported to the master: every request pending on it
gets its errback with ``WorkerDied``, never silence, and the worker is
started again, at most ``max_restarts`` times a minute.
"""
from __future__ import annotations

import functools
import itertools
import logging
import os
import pickle
import signal
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

from . import loop as _loop
from .checks import refuse_internal_overrides, require_posix
from .connection import Connection
from .framing import LengthPrefixed
from .signals import run_loop
from .timers import Timer

log = logging.getLogger("danga")

MAX_MESSAGE = 64 * 1024 * 1024


class WorkerDied(RuntimeError):
    """The worker handling a request exited before replying."""


class WorkerError(RuntimeError):
    """The worker's ``receive_data`` raised; the message names the exception."""


class Worker:
    """Subclass this; it runs in the child process.

    * ``name``: how the master addresses it (default: the class name);
    * ``worker_init()``: once, in the child, before the first request;
    * ``receive_data(message)``: one request; reply with ``send_data``.

    The child's loop runs as usual: a worker may use timers and sockets."""

    name: str = ""
    max_restarts: int = 5  # per minute

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        refuse_internal_overrides(cls)

    def __init__(self, channel: "_WorkerSide") -> None:
        self.__channel = channel
        self.__request: Optional[int] = None

    def _handle(self, rid: int, message: Any) -> None:
        """One request: ``receive_data`` with ``send_data`` replying to ``rid``."""
        self.__request = rid
        try:
            self.receive_data(message)
        finally:
            self.__request = None

    def worker_init(self) -> None:
        """Set-up in the child before the first request."""

    def receive_data(self, message: Any) -> None:
        """Handle one request."""
        raise NotImplementedError(f"{type(self).__name__} must define receive_data")

    def send_data(self, message: Any) -> None:
        """Reply to the request being handled (or, outside one, send the
        master an unsolicited message, given to ``on_message``)."""
        self.__channel.send(self.__request or 0, "reply", message)


class _Framed(Connection):
    """A socketpair end carrying pickled, length-prefixed frames."""

    write_buffer_limit = None
    read_size = 1 << 20
    framer = functools.partial(LengthPrefixed, 4, max_size=MAX_MESSAGE)

    def send(self, rid: int, kind: str, payload: Any) -> None:
        self.send_data(pickle.dumps((rid, kind, payload), pickle.HIGHEST_PROTOCOL))

    def receive_data(self, data: bytes) -> None:
        self.on_frame(*pickle.loads(data))

    def on_frame(self, rid: int, kind: str, payload: Any) -> None:
        raise NotImplementedError


class _WorkerSide(_Framed):
    """The child's end: requests in, replies out."""

    worker: Worker

    def on_frame(self, rid: int, kind: str, payload: Any) -> None:
        w = self.worker
        try:
            w._handle(rid, payload)
        except Exception as exc:
            log.exception("danga: worker %s failed on a request", w.name)
            self.send(rid, "error", f"{type(exc).__name__}: {exc}")

    def close(self, reason: str = "") -> None:
        super().close(reason)
        _loop.current().stop()  # the master is gone: so is the worker


class _MasterSide(_Framed):
    """The master's end of one worker process."""

    def __init__(self, sock: socket.socket, pool: "_Pool", pid: int) -> None:
        super().__init__(sock)
        self.pool, self.pid = pool, pid
        self.pending: Dict[int, Tuple[Optional[Callable[[Any], object]],
                                      Optional[Callable[[BaseException], object]]]] = {}

    def on_frame(self, rid: int, kind: str, payload: Any) -> None:
        entry = self.pending.pop(rid, None)
        if entry is None:
            if self.pool.on_message is not None:
                self.pool.on_message(payload)
            return
        callback, errback = entry
        if kind == "reply":
            if callback is not None:
                callback(payload)
        elif errback is not None:
            errback(WorkerError(payload))
        else:
            log.error("danga: worker %s: %s (no errback)", self.pool.name, payload)

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        super().close(reason)
        self.pool.died(self, reason)


class _Pool:
    """All processes of one worker class."""

    def __init__(self, cls: Type[Worker], name: str, count: int,
                 on_message: Optional[Callable[[Any], object]]) -> None:
        self.cls, self.name, self.count = cls, name, count
        self.on_message = on_message
        self.members: List[_MasterSide] = []
        self.restarts: List[float] = []
        self.rr = itertools.count()
        self.stopping = False
        self.retry: Optional[Timer] = None

    def spawn(self) -> None:
        parent, child = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the worker process
            code = 0
            try:
                parent.close()
                _loop.reset(close_inherited=True)
                side = _WorkerSide(child)
                side.worker = self.cls(side)
                side.worker.worker_init()
                run_loop(_loop.current())
            except BaseException:
                log.exception("danga: worker %s crashed", self.name)
                code = 1
            finally:
                os._exit(code)
        child.close()
        self.members.append(_MasterSide(parent, self, pid))

    def stop(self) -> None:
        """Close the channels; each worker exits and is reaped."""
        self.stopping = True
        for m in list(self.members):
            m.close("stopping")

    def pick(self) -> Optional[_MasterSide]:
        live = [m for m in self.members if not m.closed]
        if not live:
            return None
        return live[next(self.rr) % len(live)]

    def died(self, member: _MasterSide, reason: str) -> None:
        if member in self.members:
            self.members.remove(member)
        _reap(member.pid)
        for _cb, errback in list(member.pending.values()):
            exc = WorkerDied(f"worker {self.name!r} (pid {member.pid}) exited before replying ({reason})")
            if errback is not None:
                try:
                    errback(exc)
                except Exception as e:
                    _loop.current().report_error(None, e, "worker errback")
            else:
                log.error("danga: %s", exc)
        member.pending.clear()
        if self.stopping:
            return
        log.warning("danga: worker %s (pid %d) exited (%s)", self.name, member.pid, reason)
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60]
        if len(self.restarts) >= self.cls.max_restarts:
            log.error("danga: worker %s restarted %d times in a minute; not restarting it", self.name,
                      len(self.restarts))
            return
        self.restarts.append(now)
        self.spawn()


def _reap(pid: int) -> None:
    """Collect an exited worker (it closed its end first, so it is going)."""
    for _ in range(100):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.001)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


class _Pools(Dict[str, _Pool]):
    """The loop's worker pools by name: a ``Service`` of the loop
    (``"workers"``).  ``reset()`` in the master stops them all; a forked
    child (which is not their master) only forgets them."""

    def __init__(self, loop: "_loop.Loop") -> None:
        super().__init__()

    def close(self, in_child: bool) -> None:
        pools = list(self.values())
        self.clear()
        if not in_child:
            for pool in pools:
                pool.stop()

    def after_fork(self) -> None:
        pass


def _registry() -> _Pools:
    return _loop.current().service("workers", _Pools)


def start_worker(cls: Type[Worker], count: int = 1, name: Optional[str] = None,
                 on_message: Optional[Callable[[Any], object]] = None) -> str:
    """Fork ``count`` processes of worker class ``cls``; returns its name.
    Starting a name that already runs raises ValueError."""
    require_posix("start_worker() (it forks)", "use danga.defer() for work off the loop's thread")
    if not (isinstance(cls, type) and issubclass(cls, Worker)):
        raise TypeError(f"danga: start_worker needs a Worker subclass, got {cls!r}")
    if count < 1:
        raise ValueError(f"danga: start_worker needs count >= 1, got {count}")
    name = name or cls.name or cls.__name__
    pools = _registry()
    if name in pools:
        raise ValueError(f"danga: worker {name!r} is already running")
    pool = pools[name] = _Pool(cls, name, count, on_message)
    for _ in range(count):
        pool.spawn()
    return name


def ask_worker(name: str, message: Any, callback: Optional[Callable[[Any], object]] = None,
               errback: Optional[Callable[[BaseException], object]] = None, reply_to: Any = None) -> None:
    """Send ``message`` to a worker called ``name``.  Its reply goes to
    ``callback(reply)``, or to ``reply_to.worker_receive(reply)`` (Packet's
    style); failures to ``errback(exc)`` or ``reply_to.worker_error(exc)``."""
    pool = _registry().get(name)
    if pool is None:
        raise KeyError(f"danga: no worker called {name!r} is running")
    if callback is None and reply_to is not None:
        callback = reply_to.worker_receive
    if errback is None and reply_to is not None:
        errback = getattr(reply_to, "worker_error", None)
    member = pool.pick()
    if member is None:
        exc = WorkerDied(f"worker {name!r} has no live process")
        if errback is not None:
            _loop.current().add_timer(0, lambda: errback(exc))
            return
        raise exc
    rid = next(_request_ids)
    member.pending[rid] = (callback, errback)
    member.send(rid, "request", message)


_request_ids = itertools.count(1)


def stop_workers(name: Optional[str] = None) -> None:
    """Stop one worker pool (or all): close the channels, reap the processes."""
    pools = _registry()
    for n in [name] if name is not None else list(pools):
        pool = pools.pop(n, None)
        if pool is not None:
            pool.stop()


def workers() -> Dict[str, List[int]]:
    """``{name: [pid, ...]}`` of the running workers."""
    return {n: [m.pid for m in p.members if not m.closed] for n, p in _registry().items()}
