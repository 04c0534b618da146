"""The write queue: what a socket has accepted and the kernel has not taken yet.

One object owns every part of the accounting, so that each transport (plain
streams, datagrams, TLS ciphertext) uses the same code instead of a copy:

* the items in order: ``bytes`` or ``memoryview`` slices of them (never a
  buffer the caller may still change: the socket copies those before they
  get here), and callables, which run once everything before them is sent;
* ``size``: queued bytes, plus 1 for each callable (``write_buf_size``);
* the water marks: crossing the owner's ``write_high_water`` calls its
  ``event_write_paused()`` once, falling to ``write_low_water`` calls
  ``event_write_resumed()`` (also when a flush empties the queue);
* the hard limit: ``append`` returns False once ``size`` exceeds the
  owner's ``write_buffer_limit``, whatever the water marks are;
* ``moved``: set whenever the kernel took a byte, for the idle sweep;
* ``discard()``: what is left when the socket closes, for ``unsent``.

The queue touches no descriptor.  ``flush(channel)`` sends through a
``ByteChannel`` (see ``danga.contract``) and lets its ``OSError`` through:
what a send error means (which reason, whether to linger) is the socket's
business.  ``BlockingIOError`` and ``InterruptedError`` just end the flush.

Re-entrancy
-----------
A queued callable may write, flush (``write(None)``) or close.  A nested
flush sends from the same deque, and ``flushing`` stays true until the
outermost flush returns, so the socket never drops (or replaces) a queue
that a flush further up the stack is still walking: the outer flush sees
whatever the callable added and sends it, or reports it as waiting.
A close inside a callable empties the queue (``discard``), so every flush
on the stack ends at once.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Deque, Optional, Protocol

#: buffers per sendmsg
IOV_MAX = 1024
#: Bytes gathered into one sendmsg: enough to fill a socket buffer; more only
#: makes the kernel import and walk a longer iovec for data it cannot take.
GATHER_BYTES = 1 << 20


class QueueOwner(Protocol):
    """What the queue reads and calls on its socket."""

    write_high_water: int
    write_low_water: int
    write_buffer_limit: Optional[int]

    def event_write_paused(self) -> None: ...

    def event_write_resumed(self) -> None: ...


class WriteQueue:
    """A stream socket's queue: bytes are gathered into one ``sendmsg``."""

    __slots__ = ("items", "size", "owner", "paused", "moved", "flushing")

    def __init__(self, owner: QueueOwner) -> None:
        self.items: Deque[Any] = deque()
        self.size = 0
        self.owner = owner
        self.paused = False  # event_write_paused() called, event_write_resumed() not yet
        self.moved = False  # the kernel took bytes since the idle sweep last looked
        self.flushing = 0  # flush() calls on the stack

    def __len__(self) -> int:
        """Items queued (a queue is false when empty)."""
        return len(self.items)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self.items)} items, {self.size} bytes>"

    # -- adding --------------------------------------------------------------------

    def append(self, item: Any, size: int) -> bool:
        """Queue ``item`` (bytes, a memoryview of bytes, a callable) counting
        ``size``.  Returns False when the queue is now over the hard limit
        (the item is queued: the caller closes the socket, which reports it
        as unsent)."""
        self.items.append(item)
        self.size += size
        return self._grew()

    def _grew(self) -> bool:
        owner = self.owner
        limit = owner.write_buffer_limit
        if limit is not None and self.size > limit:
            return False
        if not self.paused and self.size > owner.write_high_water:
            self.paused = True
            owner.event_write_paused()
        return True

    # -- sending -------------------------------------------------------------------

    def flush(self, channel: Any) -> bool:
        """Send what the channel takes, running callables as they come up.
        Returns True if the kernel took any bytes.  Afterwards ``items`` is
        empty, or the channel is full.  Raises the channel's OSError (other
        than EAGAIN/EINTR) with the queue as it was before that send."""
        self.flushing += 1
        try:
            return self._flush(channel)
        finally:
            self.flushing -= 1

    def _flush(self, channel: Any) -> bool:
        items = self.items
        moved = False
        while items:
            head = items[0]
            cls = head.__class__
            if cls is not bytes and cls is not memoryview:
                self._run_head()
                continue
            bufs = []
            want = 0
            for item in items:
                cls = item.__class__
                if cls is not bytes and cls is not memoryview:
                    break
                bufs.append(item)
                want += len(item)
                if want >= GATHER_BYTES or len(bufs) == IOV_MAX:
                    break
            try:
                n = channel.send(bufs[0]) if len(bufs) == 1 else channel.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                n = 0
            if n:
                moved = self.moved = True
                self._took(n)
            if n < want:
                break
        return moved

    def _run_head(self) -> None:
        """The head is a callable: everything before it is out, so run it."""
        cb = self.items.popleft()
        self.size -= 1
        self._shrank()
        cb()

    def _took(self, n: int) -> None:
        """The kernel took ``n`` bytes from the front: drop them; a partly
        sent head is replaced by the slice still to send."""
        items = self.items
        self.size -= n
        while n:
            ln = len(items[0])
            if n < ln:
                items[0] = memoryview(items[0])[n:]
                break
            items.popleft()
            n -= ln
        self._shrank()

    def _shrank(self) -> None:
        if self.paused and (self.size <= self.owner.write_low_water or not self.items):
            self.paused = False
            self.owner.event_write_resumed()

    # -- closing -------------------------------------------------------------------

    def discard(self) -> int:
        """Drop everything (the socket closed); returns what was dropped
        (bytes, and 1 per callable).  Any flush on the stack ends."""
        dropped = self.size
        self.items.clear()
        self.size = 0
        self.paused = False
        return dropped


class DatagramQueue(WriteQueue):
    """A datagram socket's queue: one datagram per send, never gathered.
    An item is ``bytes`` or a memoryview of them (for the connected peer;
    ``b""`` is a datagram too), ``(bytes, address)`` for ``send_to``, or a
    callable."""

    __slots__ = ()

    def _flush(self, channel: Any) -> bool:
        items = self.items
        moved = False
        while items:
            item = items[0]
            cls = item.__class__
            try:
                if cls is bytes or cls is memoryview:
                    channel.send(item)
                    size = len(item)
                elif cls is tuple:
                    channel.sendto(item[0], item[1])
                    size = len(item[0])
                else:
                    self._run_head()
                    continue
            except (BlockingIOError, InterruptedError):
                break
            moved = self.moved = True
            items.popleft()
            self.size -= size
            self._shrank()
        return moved
