"""``defer()``: blocking work on a thread pool, results on the loop's thread.

The pool is the standard library's ``ThreadPoolExecutor`` with a size the
user sets (``set_thread_pool_size``, 4 by default) and never grows beyond.
A finished call is handed back through ``Loop.call_from_thread``, a pipe the
loop watches, so ``callback``/``errback`` always run on the loop's thread,
never on a pool thread.  The pool is a ``Service`` of the loop (``"threads"``):
``reset()`` shuts it down, and a forked child, which has none of its
threads, just forgets it.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

from . import loop as _loop


class ThreadPool:
    """The loop's thread pool: its size, and the executor once started."""

    def __init__(self, loop: "_loop.Loop") -> None:
        self.size = 4
        self.executor: Optional[ThreadPoolExecutor] = None

    def start(self) -> ThreadPoolExecutor:
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="danga-defer")
        return self.executor

    def close(self, in_child: bool) -> None:
        if self.executor is not None and not in_child:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.executor = None

    def after_fork(self) -> None:
        pass


def _pool() -> ThreadPool:
    return _loop.current().service("threads", ThreadPool)


def set_thread_pool_size(size: int) -> None:
    """Threads for ``defer()``; takes effect for a pool not yet started."""
    if size < 1:
        raise ValueError(f"danga: the thread pool needs at least 1 thread, got {size}")
    pool = _pool()
    if pool.executor is not None:
        raise RuntimeError("danga: the thread pool is already running; set its size before the first defer()")
    pool.size = int(size)


def defer(fn: Callable[..., Any], *args: Any, callback: Optional[Callable[[Any], object]] = None,
          errback: Optional[Callable[[BaseException], object]] = None) -> Future[Any]:
    """Run ``fn(*args)`` on the pool; then ``callback(result)`` or
    ``errback(exception)`` on the loop's thread.  An exception with no
    errback goes to the loop's error handling (logged).  Returns the Future."""
    loop = _loop.current()
    loop.poller()  # the wake-up pipe exists from here on
    future = _pool().start().submit(fn, *args)

    def deliver() -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            if callback is not None:
                callback(future.result())
        elif errback is not None:
            errback(exc)
        else:
            loop.report_error(None, exc, f"deferred call {fn!r}")

    future.add_done_callback(lambda _f: loop.call_from_thread(deliver))
    return future
