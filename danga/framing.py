"""Sans-I/O message framing: bytes in, whole messages out.

A framer holds no descriptor and does no I/O.  ``feed(data)`` takes bytes as
they arrive (any split) and returns the complete messages they finish;
``frame(message)`` returns the bytes to send for one message.  Every framer
has a maximum message size and raises ``FrameError`` as soon as a message is
known to exceed it, so a peer can never make it buffer without bound.

Framers here:

* ``LengthPrefixed(n)``: Erlang's ``{packet, N}``: an N-byte (1, 2, 4 or 8)
  unsigned length, in either byte order, then the payload;
* ``Lines()``: messages ending with a delimiter (``b"\\n"``; ``\\r\\n``
  tolerated), without it; with a raw mode for "a line, then N bytes"
  (memcached's data blocks, Redis bulk strings, HTTP bodies): call
  ``expect_raw(n)`` (or ``skip(n)``) while handling a line, and the next
  message is those ``n`` bytes as they are (or they are dropped unbuffered).

``feed`` returns a list; ``messages(data)`` yields them one at a time, so a
mode change made while handling one message applies to the very next bytes
(``Connection`` reads through ``messages``).

Write your own by subclassing ``Framer``.
"""
from __future__ import annotations

import copy
from typing import Iterator, List, Literal


class FrameError(ValueError):
    """The peer sent something the framer cannot accept (too large, malformed)."""


class Framer:
    """The framing interface.  ``max_size`` bounds one message in bytes."""

    max_size: int

    def feed(self, data: bytes) -> List[bytes]:
        """Add received bytes; return the messages now complete, in order."""
        raise NotImplementedError

    def messages(self, data: bytes) -> Iterator[bytes]:
        """Add received bytes; yield the messages now complete one at a time
        (a framer with modes switches between them as they are handled)."""
        return iter(self.feed(data))

    def clone(self) -> "Framer":
        """A framer with the same settings and nothing buffered: what each
        connection gets when a class names a framer *instance*."""
        if self.buffered:
            raise ValueError(f"danga: cannot clone a {type(self).__name__} holding {self.buffered} buffered bytes")
        return copy.deepcopy(self)

    def frame(self, message: bytes) -> bytes:
        """The bytes that carry ``message``."""
        raise NotImplementedError

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message."""
        raise NotImplementedError


class LengthPrefixed(Framer):
    """``{packet, N}``: an N-byte unsigned length header, then the payload."""

    def __init__(self, n: int = 4, byteorder: 'Literal["big", "little"]' = "big",
                 max_size: int = 16 * 1024 * 1024) -> None:
        if n not in (1, 2, 4, 8):
            raise ValueError(f"danga: length header must be 1, 2, 4 or 8 bytes, not {n}")
        if byteorder not in ("big", "little"):
            raise ValueError(f"danga: byteorder must be 'big' or 'little', not {byteorder!r}")
        if max_size < 0:
            raise ValueError(f"danga: max_size must be >= 0, got {max_size}")
        self.n = n
        self.byteorder = byteorder
        self.max_size = min(max_size, (1 << (8 * n)) - 1)
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[bytes]:
        buf = self._buf
        buf += data
        out = []
        n = self.n
        pos = 0
        end = len(buf)
        while end - pos >= n:
            size = int.from_bytes(buf[pos:pos + n], self.byteorder)
            if size > self.max_size:
                raise FrameError(f"message of {size} bytes exceeds the maximum of {self.max_size}")
            if end - pos - n < size:
                break
            out.append(bytes(buf[pos + n:pos + n + size]))
            pos += n + size
        if pos:
            del buf[:pos]
        return out

    def frame(self, message: bytes) -> bytes:
        size = len(message)
        if size > self.max_size:
            raise FrameError(f"message of {size} bytes exceeds the maximum of {self.max_size}")
        return size.to_bytes(self.n, self.byteorder) + bytes(message)

    @property
    def buffered(self) -> int:
        return len(self._buf)


class Lines(Framer):
    """Delimiter-terminated messages (lines).  A trailing ``\\r`` before a
    ``\\n`` delimiter is removed, so telnet and netcat clients both work."""

    def __init__(self, max_size: int = 64 * 1024, delimiter: bytes = b"\n",
                 max_raw: int = 64 * 1024 * 1024) -> None:
        if not delimiter:
            raise ValueError("danga: the line delimiter must not be empty")
        if max_size < 1:
            raise ValueError(f"danga: max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self.max_raw = max_raw
        self.delimiter = bytes(delimiter)
        self._buf = bytearray()
        self._scanned = 0  # bytes already searched for the delimiter
        self._raw = 0  # bytes wanted as the next raw message
        self._skip = 0  # bytes still to drop

    def expect_raw(self, n: int) -> None:
        """The next message is the next ``n`` bytes, as they are (then lines
        again).  ``n`` above ``max_raw`` raises FrameError: ``skip`` such a
        block instead of buffering it."""
        if n < 0:
            raise ValueError(f"danga: expect_raw needs n >= 0, got {n}")
        if n > self.max_raw:
            raise FrameError(f"raw block of {n} bytes exceeds the maximum of {self.max_raw}")
        self._raw = n if n else -1  # -1: an empty raw message

    def skip(self, n: int) -> None:
        """Drop the next ``n`` bytes as they arrive, never holding them."""
        if n < 0:
            raise ValueError(f"danga: skip needs n >= 0, got {n}")
        self._skip += n

    @property
    def raw_pending(self) -> bool:
        """True while a raw block was asked for and has not been delivered."""
        return self._raw != 0

    def feed(self, data: bytes) -> List[bytes]:
        return list(self.messages(data))

    def messages(self, data: bytes) -> Iterator[bytes]:
        # Fast path: one whole line and nothing held back (a typical request).
        if not self._buf and not self._raw and not self._skip and data.__class__ is bytes:
            delim = self.delimiter
            end = len(data) - len(delim)
            if data.find(delim) == end and 0 <= end <= self.max_size + 1:
                if delim == b"\n" and end and data[end - 1] == 13:
                    end -= 1
                if end <= self.max_size:
                    return iter((data[:end],))
        return self._messages(data)

    def _messages(self, data: bytes) -> Iterator[bytes]:
        buf = self._buf
        buf += data
        delim = self.delimiter
        dl = len(delim)
        strip_cr = delim == b"\n"
        start = 0
        try:
            while True:
                if self._skip:
                    drop = min(self._skip, len(buf) - start)
                    self._skip -= drop
                    start += drop
                    self._scanned = 0
                    if self._skip:
                        break
                if self._raw:
                    want = max(self._raw, 0)
                    if len(buf) - start < want:
                        break
                    self._raw = 0
                    block = bytes(buf[start:start + want])
                    start += want
                    self._scanned = 0
                    yield block
                    continue
                i = buf.find(delim, max(start, start + self._scanned - dl + 1))
                if i < 0:
                    self._scanned = len(buf) - start
                    if self._scanned > self.max_size + dl:
                        raise FrameError(f"line longer than the maximum of {self.max_size} bytes")
                    break
                line = bytes(buf[start:i])
                if strip_cr and line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > self.max_size:
                    raise FrameError(f"line of {len(line)} bytes exceeds the maximum of {self.max_size}")
                start = i + dl
                self._scanned = 0
                yield line
        finally:
            if start:
                del buf[:start]

    def frame(self, message: bytes) -> bytes:
        if self.delimiter in message:
            raise FrameError("a line must not contain the delimiter")
        if len(message) > self.max_size:
            raise FrameError(f"line of {len(message)} bytes exceeds the maximum of {self.max_size}")
        return bytes(message) + self.delimiter

    @property
    def buffered(self) -> int:
        return len(self._buf)
