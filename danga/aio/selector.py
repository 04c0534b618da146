"""The selector that makes an asyncio loop's waiting a danga pass.

asyncio's ``BaseSelectorEventLoop`` runs, in each iteration, one
``selector.select(timeout)`` and then the callbacks that are ready.  This
selector's ``select()`` runs one ``danga.loop.Loop.run_once()`` instead: one
wait in danga's poller, for the shorter of asyncio's timeout and danga's own
(loop timeout, next timer), then danga's timers, sockets, other fds,
``call_from_thread`` callbacks and post-loop step, and it returns the
asyncio descriptors that the same wait found ready.  So there is one
poller, one thread and no polling interval: a danga event and an asyncio
event wake the same ``epoll_wait``, and a ``call_soon`` made by a danga
handler runs in the same asyncio iteration, right after the pass.

asyncio's descriptors are danga "other fds" (``Loop.add_other_fds``, with
the interest changed to asyncio's through the poller), so danga's rules
apply to them: one fd cannot be both a danga Socket and an asyncio reader
(add_other_fds refuses it with ValueError), and a descriptor registered
during a dispatch is not reported from that same batch.

The ready list is filled during the dispatch and turned into
``(key, events)`` at the end of the pass from the map as it is then, so a
danga handler that removes an asyncio reader during the pass never gets a
stale key delivered.  When no asyncio loop is selecting (somebody runs
plain ``danga.event_loop()`` while a danga.aio loop is open), an event for
an asyncio fd parks it (unregisters it from the poller, as danga does with
a socket nobody services) instead of spinning on level-triggered
readiness; the next ``select()`` registers it again.
"""
from __future__ import annotations

import logging
import math
import selectors
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set, Tuple

from .. import loop as _loop
from ..loop import Loop
from ..pollers import ERR, HUP, READ, WRITE

log = logging.getLogger("danga")

_EVENT_READ = selectors.EVENT_READ
_EVENT_WRITE = selectors.EVENT_WRITE


def _to_danga(events: int) -> int:
    return (READ if events & _EVENT_READ else 0) | (WRITE if events & _EVENT_WRITE else 0)


def _to_selectors(mask: int, wanted: int) -> int:
    if mask & (ERR | HUP):
        return wanted  # like the stdlib's selectors: an error or hang-up wakes both directions
    return ((_EVENT_READ if mask & READ else 0) | (_EVENT_WRITE if mask & WRITE else 0)) & wanted


def fileobj_to_fd(fileobj: Any) -> int:
    """A descriptor number from an int or an object with ``fileno()``."""
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"danga.aio: invalid file object {fileobj!r}: it needs a fileno()") from None
    if fd < 0:
        raise ValueError(f"danga.aio: invalid file descriptor {fd} (closed?)")
    return fd


class _KeyMap(Mapping[Any, selectors.SelectorKey]):
    """``get_map()``: the registered keys, looked up by file object or fd."""

    def __init__(self, keys: Dict[int, selectors.SelectorKey]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self._keys[fileobj_to_fd(fileobj)]
        except ValueError:
            raise KeyError(fileobj) from None

    def __iter__(self) -> Iterator[Any]:
        return iter(self._keys)


class DangaSelector(selectors.BaseSelector):
    """A ``selectors.BaseSelector`` whose ``select()`` is one pass of the
    danga loop ``loop``.  Made by ``danga.aio.new_event_loop()``."""

    def __init__(self, loop: Loop) -> None:
        self.dloop = loop
        self._keys: Dict[int, selectors.SelectorKey] = {}
        self._map = _KeyMap(self._keys)
        self._ready: Dict[int, int] = {}  # fd -> danga mask, filled during the pass
        self._parked: Set[int] = set()
        self._selecting = False
        self._warned = False
        self.closed = False
        #: set by the event loop: called when a pass says the danga loop should end
        self.on_stop: Optional[Any] = None

    # -- registration -----------------------------------------------------

    def _check(self) -> Loop:
        if self.closed:
            raise RuntimeError("danga.aio: the selector is closed (the asyncio loop was closed)")
        loop = self.dloop
        if _loop.current() is not loop:  # current() changes at every reset()
            raise RuntimeError(
                "danga.aio: danga.reset() was called while this asyncio loop was open, so its "
                "descriptors were dropped; close the asyncio loop before danga.reset() and make a new one")
        return loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(_EVENT_READ | _EVENT_WRITE):
            raise ValueError(f"danga.aio: invalid events {events!r}")
        fd = fileobj_to_fd(fileobj)
        if fd in self._keys:
            raise KeyError(f"danga.aio: {fileobj!r} (fd {fd}) is already registered")
        loop = self._check()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        loop.add_other_fds({fd: self._make_callback(fd)})  # registers READ
        self._keys[fd] = key
        if events != _EVENT_READ:
            try:
                loop.poller().modify(fd, _to_danga(events))
            except OSError:
                self.unregister(fileobj)
                raise
        return key

    def _make_callback(self, fd: int) -> Any:
        ready = self._ready

        def on_event(mask: int) -> None:
            if self._selecting:
                ready[fd] = mask  # one report per fd per wait
            else:
                self._park(fd)

        return on_event

    def _park(self, fd: int) -> None:
        if not self._warned:
            self._warned = True
            log.warning("danga.aio: an asyncio descriptor (fd %d) is ready but its asyncio loop is not running; "
                        "it waits until the loop runs (run the program with danga.aio.run() or "
                        "danga.aio.event_loop() rather than danga.event_loop())", fd)
        if fd not in self._parked and fd in self._keys:
            self._parked.add(fd)
            self.dloop.poller().unregister(fd)

    def _unpark(self) -> None:
        poller = self.dloop.poller()
        for fd in self._parked:
            key = self._keys.get(fd)
            if key is not None:
                poller.register(fd, _to_danga(key.events))
        self._parked.clear()

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            fd = fileobj_to_fd(fileobj)
        except ValueError:
            # a closed file object: find it by identity, as the stdlib does
            for key in self._keys.values():
                if key.fileobj is fileobj:
                    fd = key.fd
                    break
            else:
                raise KeyError(f"danga.aio: {fileobj!r} is not registered") from None
        if fd not in self._keys:
            raise KeyError(f"danga.aio: {fileobj!r} is not registered")
        key = self._keys.pop(fd)
        self._ready.pop(fd, None)
        if not self._attached():
            return key  # danga.reset() dropped the old loop, registrations and all
        if fd in self._parked:
            self._parked.discard(fd)
            self.dloop.other_fds.pop(fd, None)  # already out of the poller
        else:
            self.dloop.remove_other_fd(fd)
        return key

    def _attached(self) -> bool:
        return _loop.current() is self.dloop

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj_to_fd(fileobj)
        key = self._keys.get(fd)
        if key is None:
            raise KeyError(f"danga.aio: {fileobj!r} is not registered")
        if not events or events & ~(_EVENT_READ | _EVENT_WRITE):
            raise ValueError(f"danga.aio: invalid events {events!r}")
        if events != key.events:
            loop = self._check()
            if fd not in self._parked:
                loop.poller().modify(fd, _to_danga(events))
        new = self._keys[fd] = key._replace(events=events, data=data)
        return new

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    # -- the pass -----------------------------------------------------------

    def select(self, timeout: Optional[float] = None) -> List[Tuple[selectors.SelectorKey, int]]:
        """Run one danga pass waiting at most ``timeout`` seconds (None:
        until something happens); return the ready asyncio descriptors."""
        loop = self.dloop
        if self.closed or _loop.current() is not loop:
            self._check()  # raises, saying why
        if timeout is None:
            ms = -1
        elif timeout <= 0:
            ms = 0
        else:
            ms = min(int(math.ceil(timeout * 1000)), 2**31 - 1)
        if self._parked:
            self._unpark()
        ready = self._ready
        self._selecting = True
        try:
            keep = loop.run_once(ms)
        finally:
            self._selecting = False
        if not keep and self.on_stop is not None:
            self.on_stop()
        if not ready:
            return []
        keys = self._keys
        out = []
        for fd, mask in ready.items():
            key = keys.get(fd)
            if key is not None:
                events = _to_selectors(mask, key.events)
                if events:
                    out.append((key, events))
        ready.clear()
        return out

    def close(self) -> None:
        """Unregister every descriptor that is still registered (never closes one)."""
        if self.closed:
            return
        if self._attached():
            for fd in list(self._keys):
                self.unregister(fd)
        self._keys.clear()
        self._parked.clear()
        self.closed = True
