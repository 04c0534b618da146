"""``danga.Channel``: sessions and broadcast, as packnet gives them.

A channel is a set of member sockets (sessions), each known by an id.
``broadcast(message)`` frames the message once and writes the same ``bytes``
object to every member, so a member whose socket is full queues a reference
to it, not a copy.  A member whose queued bytes exceed ``max_backlog`` is
dropped from the channel and closed with reason ``"channel_backlog"``: one
slow reader can neither grow memory without bound nor hold up the others.
"""
from __future__ import annotations

import logging
from typing import Dict, Hashable, Iterator, Optional, Union

from .framing import Framer
from .socket import Socket

log = logging.getLogger("danga")


class Channel:
    """A named group of sockets with broadcast."""

    def __init__(self, name: str = "", framer: Optional[Framer] = None, max_backlog: int = 1024 * 1024) -> None:
        self.name = name
        self.framer = framer
        self.max_backlog = max_backlog
        self._members: Dict[Hashable, Socket] = {}

    def join(self, member: Socket, session_id: Optional[Hashable] = None) -> Hashable:
        """Add ``member`` under ``session_id`` (default: its ``id`` attribute,
        else its fd).  Returns the id.  Closed sockets leave by themselves."""
        if member.closed:
            raise ValueError(f"danga: cannot join a closed socket to channel {self.name!r}")
        sid = session_id if session_id is not None else getattr(member, "id", member.fd)
        self._members[sid] = member
        return sid

    def leave(self, member_or_id: Union[Socket, Hashable]) -> bool:
        """Remove a member (by socket or id); False if it was not in."""
        if isinstance(member_or_id, Socket):
            for sid, m in self._members.items():
                if m is member_or_id:
                    del self._members[sid]
                    return True
            return False
        return self._members.pop(member_or_id, None) is not None

    def get(self, session_id: Hashable) -> Optional[Socket]:
        m = self._members.get(session_id)
        return m if m is not None and not m.closed else None

    def __contains__(self, member: Socket) -> bool:
        return any(m is member for m in self._members.values())

    def __iter__(self) -> Iterator[Socket]:
        return iter([m for m in self._members.values() if not m.closed])

    def __len__(self) -> int:
        self._prune()
        return len(self._members)

    def _prune(self) -> None:
        dead = [sid for sid, m in self._members.items() if m.closed]
        for sid in dead:
            del self._members[sid]

    def broadcast(self, message: bytes, exclude: Optional[Socket] = None) -> int:
        """Send ``message`` (framed once) to every member but ``exclude``.
        Returns how many members it was written to."""
        data = self.framer.frame(message) if self.framer is not None else bytes(message)
        sent = 0
        limit = self.max_backlog
        dropped = []
        for sid, m in list(self._members.items()):
            if m.closed:
                dropped.append(sid)
                continue
            if m is exclude:
                continue
            m.write(data)
            if m.write_buf_size > limit:
                dropped.append(sid)
                log.info("danga: channel %r drops %s: %d bytes behind", self.name, m.as_string(), m.write_buf_size)
                m.close("channel_backlog")
            elif not m.closed:
                sent += 1
        for sid in dropped:
            self._members.pop(sid, None)
        return sent
