"""Shedding under descriptor pressure: which connections go first.

A slowloris client opens connections and never finishes a request; a few
thousand of them hold every descriptor a process may open, and then nobody
else is served.  Timeouts alone do not save the server (the attacker opens
new connections as fast as old ones time out), so listeners also *shed*: when
the process runs short of descriptors they close connections that have not
yet been productive, oldest first, to make room for new clients and to keep
serving the clients that are mid-request.

What "not yet productive" means is the protocol's business, so a connection
says it: ``set_deadline(seconds)`` (the request must be complete by then) or
``mark_unproductive()`` marks it, ``set_deadline(None)`` or
``mark_productive()`` clears the mark (danga/sockopts.py).  The HTTP example
marks every new connection until its request headers are complete, a body
until it has arrived, and a keep-alive connection between requests.  The
marks live here, in one insertion-ordered dict per loop (re-marking moves a
connection to the young end), so finding the oldest is a walk from the
front, and a connection that is collected leaves by its weak reference.

When a listener sheds (danga/listener.py): when ``accept`` fails for lack of
descriptors, and when an accepted descriptor's number reaches
``shed_threshold`` (90%) of the soft limit.  Descriptors are handed out
lowest first, so the number of a new one is a lower bound on how many are
open: no system call is needed to know the pressure.  A listener sheds at
most once per loop pass, since what it closes is released only at the end
of the pass (the deferred-close rule), and it sheds a batch
(``shed_batch(limit)``, 1/32 of the limit) so that the work is not repeated
on every accept.  The choice is a hook: ``listen(..., shed_policy=f)`` with
``f(listener, wanted) -> closed``; the default is
``shed_oldest_unproductive``.
"""
from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from . import loop as _loop

if TYPE_CHECKING:
    from .loop import Loop

log = logging.getLogger("danga")

#: Close reason of a connection shed under descriptor pressure.
SHED = "shed"


class Unproductive:
    """The connections marked as not yet productive, oldest first (a loop
    service: ``loop.service("unproductive", Unproductive)``)."""

    def __init__(self, loop: "Loop") -> None:
        self.marked: Dict[int, "weakref.ref[Any]"] = {}

    def mark(self, obj: Any) -> None:
        """Mark ``obj`` (again: it becomes the youngest)."""
        key = id(obj)
        marked = self.marked
        marked.pop(key, None)

        def gone(ref: "weakref.ref[Any]", key: int = key) -> None:
            if marked.get(key) is ref:
                del marked[key]

        marked[key] = weakref.ref(obj, gone)

    def unmark(self, obj: Any) -> None:
        ref = self.marked.get(id(obj))
        if ref is not None and ref() is obj:
            del self.marked[id(obj)]

    def is_marked(self, obj: Any) -> bool:
        ref = self.marked.get(id(obj))
        return ref is not None and ref() is obj

    def oldest(self, n: int) -> List[Any]:
        """Up to ``n`` marked connections that are still open, oldest first
        (closed ones met on the way are forgotten)."""
        found: List[Any] = []
        stale: List[int] = []
        if n <= 0:
            return found
        for key, ref in self.marked.items():
            obj = ref()
            if obj is None or obj.closed:
                stale.append(key)
                continue
            found.append(obj)
            if len(found) >= n:
                break
        for key in stale:
            del self.marked[key]
        return found

    def __len__(self) -> int:
        return len(self.marked)

    def close(self, in_child: bool) -> None:
        self.marked.clear()

    def after_fork(self) -> None:
        pass


def registry() -> Unproductive:
    """This loop's marks."""
    return _loop.current().service("unproductive", Unproductive)


def shed_oldest_unproductive(listener: Any, wanted: int) -> int:
    """The default shedding policy: close up to ``wanted`` of the process's
    connections marked as not yet productive, oldest first, with reason
    ``"shed"``; returns how many it closed.  A connection that is mid-request
    past its headers, or sending a response, is never chosen."""
    victims = registry().oldest(wanted)
    for obj in victims:
        obj.close(SHED)
    return len(victims)


ShedPolicy = Callable[[Any, int], int]


def fd_limit() -> Optional[int]:
    """The soft limit on open descriptors, or None where there is none."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def shed_batch(limit: int) -> int:
    """How many connections one shedding asks for: 1/32 of the limit."""
    return max(1, limit // 32)
