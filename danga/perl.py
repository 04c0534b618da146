"""The Danga::Socket spellings, all in one place.

Every module-level function has its Perl name on the ``danga`` module
(``danga.AddTimer``) and on ``Socket`` and its subclasses (so
``Danga::Socket->AddTimer(...)`` ports as ``MySocket.AddTimer(...)``).
``SetPostLoopCallback`` is the one that also works on an object, as in
Perl: there it sets that socket's own callback.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from . import api

if TYPE_CHECKING:
    from .loop import PostLoopCallback

EventLoop = api.event_loop
AddTimer = api.add_timer
AddOtherFds = api.add_other_fds
OtherFds = api.other_fds
SetLoopTimeout = api.set_loop_timeout
SetPostLoopCallback = api.set_post_loop_callback
DescriptorMap = api.descriptor_map
WatchedSockets = api.watched_sockets
ToClose = api.to_close
Reset = api.reset
HaveEpoll = api.have_epoll


class _ClassOrInstance:
    """``Socket.SetPostLoopCallback(cb)`` sets the global callback; on an
    object it sets that socket's own, as in Perl."""

    def __get__(self, obj: Any, owner: type) -> Callable[[Optional[PostLoopCallback]], None]:
        if obj is None:
            return api.set_post_loop_callback
        return obj.set_post_loop_callback  # type: ignore[no-any-return]


class SocketSpellings:
    """Mixed into ``Socket``: the class-method spellings."""

    __slots__ = ()

    EventLoop = staticmethod(api.event_loop)
    AddTimer = staticmethod(api.add_timer)
    AddOtherFds = staticmethod(api.add_other_fds)
    OtherFds = staticmethod(api.other_fds)
    SetLoopTimeout = staticmethod(api.set_loop_timeout)
    DescriptorMap = staticmethod(api.descriptor_map)
    WatchedSockets = staticmethod(api.watched_sockets)
    ToClose = staticmethod(api.to_close)
    Reset = staticmethod(api.reset)
    HaveEpoll = staticmethod(api.have_epoll)
    SetPostLoopCallback = _ClassOrInstance()


__all__ = ["EventLoop", "AddTimer", "AddOtherFds", "OtherFds", "SetLoopTimeout", "SetPostLoopCallback",
           "DescriptorMap", "WatchedSockets", "ToClose", "Reset", "HaveEpoll"]
