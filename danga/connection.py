"""``danga.Connection``: EventMachine's connection API on a danga Socket.

For users who prefer callbacks with data to ``event_read``/``read()``:
``post_init()``, ``receive_data(data)``, ``send_data(data)``,
``connection_completed()``, ``unbind(reason)``.  It is a Socket subclass, so
both styles share one loop and one write path, and a Connection can be
handed to ``danga.listen``/``danga.connect`` like any Socket class.

Give a Connection a ``framer`` (see ``danga.framing``) and
``receive_data`` is called once per whole message instead of per read; a
framing error closes the connection with reason ``"frame_error: ..."``.
"""
from __future__ import annotations

import itertools
from typing import Any, Optional, Tuple

from .framing import Framer, FrameError
from .socket import Socket

_ids = itertools.count(1)


class Connection(Socket):
    """EventMachine-style connection.  Override ``receive_data`` (and any of
    ``post_init``, ``connection_completed``, ``unbind``)."""

    #: read size per readable event
    read_size = 65536
    #: a Framer class, a zero-argument callable making one, or an instance
    #: (each connection gets its own ``clone()``: framers hold buffered
    #: bytes, which must never pass between clients).  On the connection,
    #: ``self.framer`` is its own framer (``self.framer.expect_raw(n)``).
    framer: Any = None

    def __init__(self, sock: Any) -> None:
        f = type(self).framer
        if isinstance(f, Framer):
            f = f.clone()
        elif f is not None:
            if not callable(f):
                raise TypeError(f"danga: {type(self).__name__}.framer must be a Framer class, factory or "
                                f"instance, not {type(f).__name__}")
            f = f()
        self.framer: Optional[Framer] = f
        super().__init__(sock)
        self.id = next(_ids)
        self.__closing_after_write = False
        self.watch_read(True)
        self.post_init()

    # -- EventMachine callbacks ----------------------------------------------------------

    def post_init(self) -> None:
        """Called once the connection object exists (and is reading)."""

    def receive_data(self, data: bytes) -> None:
        """Data arrived (a whole message when a framer is set)."""

    def connection_completed(self) -> None:
        """An outgoing connection (``danga.connect``) is up."""

    def unbind(self, reason: str) -> None:
        """The connection closed, for ``reason``; called exactly once."""

    # -- actions ---------------------------------------------------------------------------

    def send_data(self, data: bytes) -> bool:
        """Send bytes (framed first, when a framer is set)."""
        if self.framer is not None:
            data = self.framer.frame(data)
        return self.write(data)

    def close_connection(self, after_writing: bool = False) -> None:
        """Close now, or once everything queued has been sent."""
        if after_writing:
            self.close_after_writing()
        else:
            self.close("close_connection")

    def close_after_writing(self) -> None:
        """Close once the write queue is flushed; stop reading meanwhile."""
        if self.closed or self.__closing_after_write:
            return
        self.__closing_after_write = True
        self.watch_read(False)
        self.write(lambda: self.close("close_after_writing"))

    def pause(self) -> None:
        """Stop reading (the kernel buffers, then the peer is slowed down)."""
        self.watch_read(False)

    def resume(self) -> None:
        """Read again."""
        if not self.__closing_after_write:
            self.watch_read(True)

    @property
    def paused(self) -> bool:
        return not self.watching_read

    def get_outbound_data_size(self) -> int:
        """Bytes queued and not yet sent."""
        return self.write_buf_size

    def set_inactivity_timeout(self, seconds: float) -> None:
        """Close with reason ``"idle_timeout"`` after ``seconds`` without data
        moving (checked by the loop's one idle sweep); 0 turns it off."""
        self.set_idle_timeout(seconds)

    @property
    def peer(self) -> Optional[Tuple[Any, ...]]:
        """The peer's address as the socket module gives it, or None."""
        return self.peer_address  # type: ignore[no-any-return]

    # -- the Socket side ---------------------------------------------------------------------

    def event_read(self) -> None:
        data = self.read(self.read_size)
        if data is None:
            self.close(self.read_error or "eof")
            return
        if not data:
            return
        framer = self.framer
        if framer is None:
            self.receive_data(data)
            return
        try:
            for m in framer.messages(data):  # one at a time: receive_data may switch the framer's mode
                self.receive_data(m)
                if self.closed:
                    return
        except FrameError as e:
            self.close(f"frame_error: {e}")

    def event_connected(self) -> None:
        self.connection_completed()

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        super().close(reason)
        self.unbind(reason)
