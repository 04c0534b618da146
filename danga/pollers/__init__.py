"""Backend selection: ``DANGA_POLLER``, else the first backend that imports.

The automatic order depends on the platform:

* on the BSDs and macOS: kqueue, then poll;
* on Windows: iocp (socket readiness from a completion port, through
  cffi's ABI mode: nothing compiled; ``danga/_winapi.py``);
* on Linux: epoll, then poll.  kqueue on Linux is libkqueue's emulation
  over epoll, built only on request (``LIBKQUEUE_PREFIX=... pip install .``)
  and never chosen by itself: ``DANGA_POLLER=kqueue`` (or
  ``create("kqueue")``) picks it.  ``available()`` still lists it, last, so
  that the test suite runs on it too.  io_uring (where liburing was found
  at build time) is chosen only by name as well: ``DANGA_POLLER=io_uring``.
  Where the kernel refuses io_uring (seccomp, the sysctl, an old kernel)
  that name gets epoll, with one log line saying why.

Each backend module is the only importer of its compiled cffi module (iocp:
of ``danga._winapi``, its declarations).
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Callable, List, Set, Tuple

from .base import ERR, HUP, READ, WAKE, WRITE, Poller

log = logging.getLogger("danga")

__all__ = ["READ", "WRITE", "ERR", "HUP", "WAKE", "Poller", "available", "create"]

_BACKENDS = {
    "kqueue": ("danga.pollers.kqueue", "KqueuePoller"),
    "epoll": ("danga.pollers.epoll", "EpollPoller"),
    "poll": ("danga.pollers.poll", "PollPoller"),
    "iocp": ("danga.pollers.iocp", "IocpPoller"),
    "io_uring": ("danga.pollers.io_uring", "IoUringPoller"),
}


def _orders(platform: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(chosen automatically, best first; used only when named) on ``platform``."""
    if platform.startswith("linux"):
        return ("epoll", "poll"), ("io_uring", "kqueue")
    if platform == "win32":
        return ("iocp",), ()
    return ("kqueue", "epoll", "poll"), ()


_ORDER, _BY_NAME_ONLY = _orders(sys.platform)
_warned: Set[str] = set()  # backends whose refusal was logged (once per process)


def _load(name: str) -> Callable[[], Poller]:
    module, cls = _BACKENDS[name]
    backend: Callable[[], Poller] = getattr(importlib.import_module(module), cls)
    return backend


def _refusal(backend: Callable[[], Poller]) -> str:
    """Why the kernel refuses a backend that was built ("" if it does not)."""
    refused: Callable[[], str] = getattr(backend, "refused", lambda: "")
    return refused()


def available() -> List[str]:
    """The backends this machine can use: the automatic ones best first, then
    those used only when named (io_uring and kqueue on Linux)."""
    names = []
    for name in _ORDER + _BY_NAME_ONLY:
        try:
            backend = _load(name)
        except ImportError:
            continue
        if not _refusal(backend):
            names.append(name)
    return names


def create(name: str = "") -> Poller:
    """Make a poller: ``name``, else ``$DANGA_POLLER``, else the best available.

    Raises ValueError for an unknown name and ImportError for a backend that
    was not built on this machine."""
    name = name or os.environ.get("DANGA_POLLER", "")
    if name:
        if name not in _BACKENDS:
            choices = ", ".join(_ORDER + _BY_NAME_ONLY)
            raise ValueError(f"danga: unknown poller {name!r} (DANGA_POLLER); choose one of {choices}")
        backend = _load(name)
        why = _refusal(backend)
        if why and name != "epoll":
            if name not in _warned:
                _warned.add(name)
                log.warning("danga: the kernel refuses %s (%s); using epoll instead", name, why)
            return _load("epoll")()
        return backend()
    for candidate in _ORDER:
        try:
            return _load(candidate)()
        except ImportError:
            continue
    raise ImportError("danga: no poller backend was built; run `pip install .` to compile the cffi modules")
