"""danga: fast event-driven network daemons in the style of Perl's Danga::Socket.

Subclass ``danga.Socket``, override ``event_read`` (and friends), and run
``danga.event_loop()``.  One loop per process, level-triggered epoll or poll
driven through cffi.  Every module-level function acts on that one loop; the
CamelCase names are the Danga::Socket spellings, for line-by-line ports.
"""
from __future__ import annotations

from . import workers
from .activation import listen_fds
from .api import (add_other_fds, add_periodic_timer, add_timer, call_from_thread, descriptor_map, event_loop,
                  have_epoll, loop_passes, next_tick, other_fds, poller_name, raise_fd_limit, remove_other_fd, reset,
                  set_error_handler, set_loop_timeout, set_post_loop_callback, stop, to_close, watched_sockets)
from .channel import Channel
from .connection import Connection
from .framing import Framer, FrameError, LengthPrefixed, Lines
from .loop import ForkedLoopError, PostLoopCallback
from .perl import (AddOtherFds, AddTimer, DescriptorMap, EventLoop, HaveEpoll, OtherFds, Reset, SetLoopTimeout,
                   SetPostLoopCallback, ToClose, WatchedSockets)
from .pollers import ERR, HUP, READ, WRITE
from .prefork import serve
from .signals import add_signal_handler, remove_signal_handler
from .socket import Socket
from .threads import defer, set_thread_pool_size
from .timers import PeriodicTimer, Timer
from .transports import DatagramSocket, Listener, connect, listen

from ._version import __version__

# Danga::Socket's constant names for the event mask.
POLLIN, POLLOUT, POLLERR, POLLHUP = READ, WRITE, ERR, HUP

__all__ = [
    "__version__", "Socket", "Timer", "PeriodicTimer", "ForkedLoopError", "PostLoopCallback",
    "Connection", "Channel", "Listener", "DatagramSocket", "listen", "connect",
    "Framer", "FrameError", "LengthPrefixed", "Lines", "add_periodic_timer", "next_tick",
    "defer", "set_thread_pool_size", "serve", "workers", "call_from_thread",
    "add_signal_handler", "remove_signal_handler",
    "event_loop", "stop", "raise_fd_limit", "listen_fds", "add_timer", "add_other_fds", "remove_other_fd", "other_fds",
    "set_loop_timeout", "set_post_loop_callback", "set_error_handler", "descriptor_map",
    "watched_sockets", "to_close", "reset", "poller_name", "have_epoll", "loop_passes",
    "READ", "WRITE", "ERR", "HUP", "POLLIN", "POLLOUT", "POLLERR", "POLLHUP",
    "EventLoop", "AddTimer", "AddOtherFds", "OtherFds", "SetLoopTimeout", "SetPostLoopCallback",
    "DescriptorMap", "WatchedSockets", "ToClose", "Reset", "HaveEpoll",
]
