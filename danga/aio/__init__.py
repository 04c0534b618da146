"""danga.aio: asyncio on the danga loop, in one thread on one poller.

``new_event_loop()`` returns a real asyncio event loop (asyncio's own
selector loop, see eventloop.py) whose waiting is one danga pass (see
selector.py): asyncio callbacks and tasks, danga Sockets and timers share
one ``epoll_wait``, and stream connections are danga Sockets under an
asyncio Transport (transport.py).  Running the asyncio loop drives danga; ``event_loop()``
is ``danga.event_loop()`` with asyncio on it; ``spawn()`` runs a coroutine
from a danga callback (see runner.py).
"""
from __future__ import annotations

from .eventloop import DangaEventLoop, current_loop, new_event_loop
from .runner import EventLoopPolicy, event_loop, run, spawn
from .selector import DangaSelector
from .transport import SocketTransport

__all__ = ["DangaEventLoop", "DangaSelector", "SocketTransport", "EventLoopPolicy", "current_loop", "event_loop",
           "new_event_loop", "run", "spawn"]
