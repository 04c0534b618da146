"""``DangaEventLoop``: asyncio's own selector loop, waiting through danga.

The class is asyncio's ``SelectorEventLoop`` (on Unix: its Unix flavour,
with Unix sockets, pipes and subprocesses) given a ``DangaSelector``, so
servers, datagram endpoints, pipes, subprocesses and TLS are asyncio's own
code and behave as asyncio documents; the waiting is danga's (see
selector.py).  What the class changes:

* TCP and Unix stream connections get danga's transports (transport.py):
  each is a danga Socket, read in the pass and written through danga's
  write path, with its output limit and deferred close;
* running it runs danga: ``run_forever()`` (and so ``run_until_complete``,
  ``asyncio.run``, ``asyncio.Runner``) holds the danga loop as running
  (``Loop.driven()``), and every iteration is one danga pass.  Calling
  ``danga.event_loop()`` inside it raises RuntimeError.  When a pass says
  the danga loop should end (``danga.stop()``, a post-loop callback that
  returned false), the asyncio loop stops, as ``loop.stop()`` would: the
  iteration finishes and ``run_forever()`` returns (``run_until_complete``
  then raises asyncio's "Event loop stopped before Future completed.");
* ``run_in_executor(None, ...)`` (so also ``getaddrinfo``) uses danga's
  thread pool, the one ``danga.defer`` uses (``danga.set_thread_pool_size``
  sizes both), unless ``set_default_executor`` chose another.  The pool is
  the danga loop's: ``shutdown_default_executor()`` leaves it running (it is
  shut down by ``danga.reset()``), and only refuses further
  ``run_in_executor(None, ...)`` calls, as asyncio does;
* ``add_signal_handler`` goes through ``danga.add_signal_handler``, so that
  danga's and asyncio's handlers share one wake-up pipe (Python has only
  one ``signal.set_wakeup_fd``) and run in the pass;
* there is one open danga.aio loop per danga loop (it owns the danga
  loop's waiting); ``danga.reset()`` closes it.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar, cast

from .. import loop as _loop
from .. import signals as _signals
from ..threads import ThreadPool
from .selector import DangaSelector
from .transport import SocketTransport

T = TypeVar("T")


class _Attached:
    """The danga loop's ``"aio"`` service: its open danga.aio loop."""

    def __init__(self, loop: _loop.Loop) -> None:
        self.aio: Optional[DangaEventLoop] = None

    def close(self, in_child: bool) -> None:
        aio, self.aio = self.aio, None
        if aio is not None and not in_child and not aio.is_closed() and not aio.is_running():
            aio.close()

    def after_fork(self) -> None:
        pass


def _attached(dloop: _loop.Loop) -> _Attached:
    return dloop.service("aio", _Attached)


def current_loop() -> Optional["DangaEventLoop"]:
    """The open danga.aio loop of the danga loop, or None."""
    aio = _attached(_loop.current()).aio
    return aio if aio is not None and not aio.is_closed() else None


class DangaEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose waiting is the danga loop's pass.  Make it
    with ``danga.aio.new_event_loop()``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "DangaEventLoop":
        # checked before any state exists, so that a refused loop leaves nothing to clean up
        if current_loop() is not None:
            raise RuntimeError(
                "danga.aio: a danga.aio event loop is already open on this danga loop (one loop drives one poller); "
                "use danga.aio.current_loop(), or close that loop first")
        return super().__new__(cls)

    def __init__(self) -> None:
        dloop = _loop.current()
        slot = _attached(dloop)
        self._danga_selector = selector = DangaSelector(dloop)
        self._danga_signals: Dict[int, Tuple[Callable[..., object], Tuple[Any, ...]]] = {}
        self._danga_executor_shut = False
        super().__init__(selector)
        selector.on_stop = self.stop
        slot.aio = self

    @property
    def danga_loop(self) -> _loop.Loop:
        """The danga loop this asyncio loop drives."""
        return self._danga_selector.dloop

    # -- running --------------------------------------------------------------

    def run_forever(self) -> None:
        self._danga_selector._check()
        with self._danga_selector.dloop.driven():
            super().run_forever()

    # -- stream transports: danga Sockets (transport.py) ----------------------------

    def _make_socket_transport(self, sock: Any, protocol: Any, waiter: Any = None, *,
                               extra: Any = None, server: Any = None) -> SocketTransport:
        return SocketTransport(self, sock, protocol, waiter, extra, server)

    # -- the thread pool ------------------------------------------------------

    def run_in_executor(  # type: ignore[override]  # typeshed's is generic over *args
            self, executor: Any, func: Callable[..., T], *args: Any) -> "asyncio.Future[T]":
        if executor is None and self._default_executor is None:
            if self.is_closed():
                raise RuntimeError("Event loop is closed")
            if self._danga_executor_shut:
                raise RuntimeError("danga.aio: shutdown_default_executor() was called; "
                                   "run_in_executor(None, ...) is refused from then on")
            executor = self.danga_loop.service("threads", ThreadPool).start()
        return cast("asyncio.Future[T]", super().run_in_executor(executor, func, *args))

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        """Shut down an executor given to ``set_default_executor``; danga's
        shared pool is left to ``danga.reset()``, only refused from now on."""
        self._danga_executor_shut = True
        if self._default_executor is not None:
            await super().shutdown_default_executor(*args, **kwargs)

    def set_default_executor(self, executor: Any) -> None:
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError("danga.aio: the default executor must be a ThreadPoolExecutor")
        self._default_executor = executor

    # -- signals --------------------------------------------------------------

    def add_signal_handler(  # type: ignore[override]  # typeshed's is generic over *args
            self, sig: int, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` in the loop when ``sig`` arrives (through
        danga's signal pipe, shared with ``danga.add_signal_handler``)."""
        if asyncio.iscoroutine(callback) or asyncio.iscoroutinefunction(callback):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")
        if self.is_closed():
            raise RuntimeError("Event loop is closed")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("danga.aio: add_signal_handler() must be called from the main thread")
        first = sig not in self._danga_signals
        self._danga_signals[sig] = (callback, args)
        if first:
            _signals.add_signal_handler(sig, self._on_signal)

    def _on_signal(self, signum: int) -> None:
        entry = self._danga_signals.get(signum)
        if entry is not None and not self.is_closed():
            self.call_soon(entry[0], *entry[1])

    def remove_signal_handler(self, sig: int) -> bool:
        if self._danga_signals.pop(sig, None) is None:
            return False
        svc = cast(Optional[_signals.Signals], self.danga_loop.services.get("signals"))
        if svc is None:
            return True
        handlers = svc.callbacks.get(sig, [])
        if self._on_signal in handlers:
            handlers.remove(self._on_signal)
        if not handlers:
            _signals.remove_signal_handler(sig)
        return True

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        attached = _loop.current() is self.danga_loop
        for sig in list(self._danga_signals):
            if attached:
                self.remove_signal_handler(sig)
            else:
                self._danga_signals.pop(sig, None)
        super().close()
        if attached:
            slot = _attached(self.danga_loop)
            if slot.aio is self:
                slot.aio = None


def new_event_loop() -> DangaEventLoop:
    """A new asyncio event loop on the danga loop (see ``DangaEventLoop``)."""
    return DangaEventLoop()
