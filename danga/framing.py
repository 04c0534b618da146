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
  tolerated), without it.

Write your own by subclassing ``Framer``.
"""
from __future__ import annotations

from typing import List, Literal


class FrameError(ValueError):
    """The peer sent something the framer cannot accept (too large, malformed)."""


class Framer:
    """The framing interface.  ``max_size`` bounds one message in bytes."""

    max_size: int

    def feed(self, data: bytes) -> List[bytes]:
        """Add received bytes; return the messages now complete, in order."""
        raise NotImplementedError

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

    def __init__(self, max_size: int = 64 * 1024, delimiter: bytes = b"\n") -> None:
        if not delimiter:
            raise ValueError("danga: the line delimiter must not be empty")
        if max_size < 1:
            raise ValueError(f"danga: max_size must be >= 1, got {max_size}")
        self.max_size = max_size
        self.delimiter = bytes(delimiter)
        self._buf = bytearray()
        self._scanned = 0  # bytes already searched for the delimiter

    def feed(self, data: bytes) -> List[bytes]:
        buf = self._buf
        buf += data
        out = []
        delim = self.delimiter
        dl = len(delim)
        start = 0
        search = max(0, self._scanned - dl + 1)
        strip_cr = delim == b"\n"
        while True:
            i = buf.find(delim, search)
            if i < 0:
                break
            line = bytes(buf[start:i])
            if strip_cr and line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_size:
                raise FrameError(f"line of {len(line)} bytes exceeds the maximum of {self.max_size}")
            out.append(line)
            start = search = i + dl
        if start:
            del buf[:start]
        self._scanned = len(buf)
        if len(buf) > self.max_size + dl:
            raise FrameError(f"line longer than the maximum of {self.max_size} bytes")
        return out

    def frame(self, message: bytes) -> bytes:
        if self.delimiter in message:
            raise FrameError("a line must not contain the delimiter")
        if len(message) > self.max_size:
            raise FrameError(f"line of {len(message)} bytes exceeds the maximum of {self.max_size}")
        return bytes(message) + self.delimiter

    @property
    def buffered(self) -> int:
        return len(self._buf)
