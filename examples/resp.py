"""RESP2, the Redis protocol: a sans-I/O request parser and reply encoders.

``RespParser.feed(data)`` takes bytes as they arrive (any split, many
commands per read) and returns the complete commands, each a list of bytes
arguments.  It accepts RESP arrays of bulk strings (what clients send) and
inline commands (what a person types into telnet).  Every size is bounded,
so a client cannot make it buffer without limit; malformed input raises
``ProtocolError`` (the server answers ``-ERR Protocol error`` and closes).
"""
from __future__ import annotations

from typing import List


class ProtocolError(ValueError):
    pass


_ARRAY = {b"*%d" % n: n for n in range(1, 65)}
_BULK = {b"$%d" % n: n for n in range(0, 4096)}


class RespParser:
    def __init__(self, max_bulk: int = 64 * 1024 * 1024, max_args: int = 1024 * 1024,
                 max_inline: int = 64 * 1024, max_buffer: int = 128 * 1024 * 1024) -> None:
        self.max_buffer = max_buffer
        self.max_bulk = max_bulk
        self.max_args = max_args
        self.max_inline = max_inline
        self.buf = b""
        # While a large bulk string arrives, chunks are only collected until
        # `need` bytes are there: joining and rescanning on every read would
        # make receiving one big value quadratic.
        self._more: List[bytes] = []
        self._have = 0
        self._need = 0

    def feed(self, data: bytes) -> List[List[bytes]]:
        """Add received bytes; return the complete commands."""
        if self._need:
            self._more.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._more)
            self._more, self._have, self._need = [], 0, 0
        else:
            buf = self.buf + data if self.buf else data
        if buf[:1] != b"*":
            return self._feed(buf)
        # Fast path for what clients send (pipelined arrays of short bulk
        # strings): split at every CRLF once, in C, and accept a bulk string
        # only when its token has exactly the declared length.  Anything else
        # (a CRLF inside a value, a long value, an incomplete command, an
        # error) is left, from that command on, to the general parser.
        parts = buf.split(b"\r\n")
        last = len(parts) - 1
        out = []
        i = 0
        array_len = _ARRAY.get
        bulk_len = _BULK.get
        while i < last:
            count = array_len(parts[i])
            if count is None or i + 2 * count >= last:
                break
            j = i + 1
            args = []
            for _ in range(count):
                value = parts[j + 1]
                if bulk_len(parts[j]) != len(value):
                    break
                args.append(value)
                j += 2
            else:
                out.append(args)
                i = j
                continue
            break
        if i == last:
            self.buf = parts[last]
            return out
        rest = b"\r\n".join(parts[i:]) if i else buf
        return out + self._feed(rest)

    def _feed(self, buf: bytes) -> List[List[bytes]]:
        """The general parser: any command, any split, every check."""
        n = len(buf)
        pos = 0
        out = []
        append = out.append
        find = buf.find
        while pos < n:
            start = pos
            if buf[pos] == 42:  # '*': an array of bulk strings
                nl = find(b"\r\n", pos)
                if nl < 0:
                    if n - pos > 32:
                        raise ProtocolError("invalid multibulk length")
                    break
                try:
                    count = int(buf[pos + 1:nl])
                except ValueError:
                    raise ProtocolError("invalid multibulk length") from None
                if count > self.max_args:
                    raise ProtocolError("invalid multibulk length")
                pos = nl + 2
                args = []
                for _ in range(count):
                    if pos >= n:
                        break
                    if buf[pos] != 36:  # '$'
                        raise ProtocolError(f"expected '$', got '{chr(buf[pos])}'")
                    nl = find(b"\r\n", pos)
                    if nl < 0:
                        if n - pos > 32:
                            raise ProtocolError("invalid bulk length")
                        break
                    try:
                        size = int(buf[pos + 1:nl])
                    except ValueError:
                        raise ProtocolError("invalid bulk length") from None
                    if not 0 <= size <= self.max_bulk:
                        raise ProtocolError("invalid bulk length")
                    begin = nl + 2
                    end = begin + size
                    if end + 2 > n:
                        if size > 65536:
                            self._need = end + 2 - start
                        break
                    if buf[end:end + 2] != b"\r\n":
                        raise ProtocolError("bulk string not terminated by CRLF")
                    args.append(buf[begin:end])
                    pos = end + 2
                else:
                    if count > 0:
                        append(args)
                    continue
                pos = start  # incomplete: wait for more
                break
            else:  # an inline command
                nl = find(b"\n", pos)
                if nl < 0:
                    if n - pos > self.max_inline:
                        raise ProtocolError("too big inline request")
                    break
                line = buf[pos:nl].rstrip(b"\r")
                pos = nl + 1
                if len(line) > self.max_inline:
                    raise ProtocolError("too big inline request")
                words = line.split()
                if words:
                    append(words)
        self.buf = buf[pos:] if pos < n else b""
        if len(self.buf) > self.max_buffer or self._need > self.max_buffer:
            raise ProtocolError("query buffer limit exceeded")
        if self._need:
            self._more, self._have = [self.buf], len(self.buf)
        return out

    @property
    def buffered(self) -> int:
        return self._have if self._need else len(self.buf)


OK = b"+OK\r\n"
PONG = b"+PONG\r\n"
NIL = b"$-1\r\n"
EMPTY_ARRAY = b"*0\r\n"


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def error(message: str) -> bytes:
    return b"-" + message.encode("utf-8", "replace").replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


def array(items) -> bytes:
    parts = [b"*%d\r\n" % len(items)]
    for item in items:
        parts.append(NIL if item is None else bulk(item))
    return b"".join(parts)
