"""Backend selection: the first of epoll, poll that imports, or DANGA_POLLER.

Each backend module is the only importer of its compiled cffi module.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable, List

from .base import ERR, HUP, READ, WRITE, Poller

__all__ = ["READ", "WRITE", "ERR", "HUP", "Poller", "available", "create"]

_BACKENDS = {"epoll": ("danga.pollers.epoll", "EpollPoller"), "poll": ("danga.pollers.poll", "PollPoller")}
_ORDER = ("epoll", "poll")


def _load(name: str) -> Callable[[], Poller]:
    module, cls = _BACKENDS[name]
    backend: Callable[[], Poller] = getattr(importlib.import_module(module), cls)
    return backend


def available() -> List[str]:
    """The backends this machine can use, best first."""
    names = []
    for name in _ORDER:
        try:
            _load(name)
        except ImportError:
            continue
        names.append(name)
    return names


def create(name: str = "") -> Poller:
    """Make a poller: ``name``, else ``$DANGA_POLLER``, else the best available.

    Raises ValueError for an unknown name and ImportError for a backend that
    was not built on this machine."""
    name = name or os.environ.get("DANGA_POLLER", "")
    if name:
        if name not in _BACKENDS:
            raise ValueError(f"danga: unknown poller {name!r} (DANGA_POLLER); choose one of {', '.join(_ORDER)}")
        return _load(name)()
    for candidate in _ORDER:
        try:
            return _load(candidate)()
        except ImportError:
            continue
    raise ImportError("danga: no poller backend was built; run `pip install .` to compile the cffi modules")
