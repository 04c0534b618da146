"""Ways in: ``run()``, ``event_loop()``, ``EventLoopPolicy``, ``spawn()``.

Two directions, one loop:

* an asyncio program runs on danga with ``danga.aio.run(main())`` (any
  supported Python), ``asyncio.Runner(loop_factory=danga.aio.new_event_loop)``
  (3.11+), ``asyncio.run(main(), loop_factory=...)`` (3.12+), or the policy;
  danga Sockets and timers made meanwhile run in the same passes;
* a danga program that wants asyncio libraries runs ``danga.aio.event_loop()``
  where it ran ``danga.event_loop()``: the same loop, ended the same ways
  (``danga.stop()``, a post-loop callback returning false, Ctrl-C), with the
  danga.aio loop driving it; its handlers call ``spawn(coro, callback=...,
  errback=...)`` to await asyncio code and get the outcome back as a plain
  callback.
"""
from __future__ import annotations

import asyncio
import signal
import sys
import threading
from typing import Any, Callable, Coroutine, Optional, TypeVar

from .. import loop as _loop
from .. import signals as _signals
from .eventloop import DangaEventLoop, current_loop, new_event_loop

T = TypeVar("T")


def _loop_for_spawn() -> DangaEventLoop:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if isinstance(running, DangaEventLoop):
        return running
    aio = current_loop()
    if aio is None:
        raise RuntimeError("danga.aio.spawn: no danga.aio loop is open; run the program with danga.aio.event_loop() "
                           "or danga.aio.run(), or make one with danga.aio.new_event_loop() first")
    return aio


def spawn(coro: Coroutine[Any, Any, T], *, callback: Optional[Callable[[T], object]] = None,
          errback: Optional[Callable[[BaseException], object]] = None,
          name: Optional[str] = None) -> "asyncio.Task[T]":
    """Run ``coro`` as an ``asyncio.Task`` on the danga.aio loop (callable
    from any danga callback: handlers, timers, post-loop callbacks) and
    return the task.  When it ends, ``callback(result)`` or
    ``errback(exception)`` runs on the loop's thread (a cancelled task gives
    ``errback`` a ``CancelledError``).  An exception with no ``errback``
    goes to danga's error handling (``danga.set_error_handler``, else
    logged); with neither callback the task is left to asyncio's own
    reporting."""
    aio = _loop_for_spawn()
    task = aio.create_task(coro, name=name)
    if callback is None and errback is None:
        return task
    dloop = aio.danga_loop

    def deliver(t: "asyncio.Task[T]") -> None:
        try:
            if t.cancelled():
                if errback is not None:
                    errback(asyncio.CancelledError())
                return
            exc = t.exception()
            if exc is None:
                if callback is not None:
                    callback(t.result())
            elif errback is not None:
                errback(exc)
            else:
                dloop.report_error(None, exc, f"task {t.get_name()} (danga.aio.spawn)")
        except Exception as err:
            dloop.report_error(None, err, f"the callback of task {t.get_name()} (danga.aio.spawn)")

    task.add_done_callback(deliver)
    return task


def run(main: Coroutine[Any, Any, T], *, debug: Optional[bool] = None) -> T:
    """``asyncio.run(main)`` on a new danga.aio loop, on every supported
    Python: cancel what is left, shut down async generators and the
    executor, close the loop."""
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=new_event_loop) as runner:
            return runner.run(main)
    if not asyncio.iscoroutine(main):
        raise ValueError(f"danga.aio.run: a coroutine was expected, got {main!r}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("danga.aio.run() cannot be called from a running event loop")
    aio = new_event_loop()
    try:
        asyncio.set_event_loop(aio)
        if debug is not None:
            aio.set_debug(debug)
        return aio.run_until_complete(main)
    finally:
        try:
            _cancel_all(aio)
            aio.run_until_complete(aio.shutdown_asyncgens())
            aio.run_until_complete(aio.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            aio.close()


def _cancel_all(aio: DangaEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(aio) if not t.done()]
    if not tasks:
        return
    for t in tasks:
        t.cancel()
    aio.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for t in tasks:
        if not t.cancelled() and t.exception() is not None:
            aio.call_exception_handler({"message": "unhandled exception during danga.aio.run() shutdown",
                                        "exception": t.exception(), "task": t})


def event_loop() -> None:
    """``danga.event_loop()`` with asyncio on the same loop: run the open
    danga.aio loop (a new one if there is none) until ``danga.stop()``, a
    post-loop callback returning false, or Ctrl-C (while SIGINT has Python's
    default handler, in the main thread).  The asyncio loop stays open, as
    the danga loop does; ``danga.reset()`` (or ``current_loop().close()``)
    closes it."""
    aio = current_loop() or new_event_loop()
    dloop = _loop.current()
    take = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if take:
        _signals.add_signal_handler(signal.SIGINT, lambda signum: dloop.stop())
    try:
        aio.run_forever()
    finally:
        if take:
            _signals.remove_signal_handler(signal.SIGINT)


class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """An event-loop policy whose ``new_event_loop()`` is danga.aio's, for
    code that calls ``asyncio.new_event_loop()``:
    ``asyncio.set_event_loop_policy(danga.aio.EventLoopPolicy())``."""

    def new_event_loop(self) -> DangaEventLoop:
        return new_event_loop()
