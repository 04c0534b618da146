"""A sans-I/O HTTP/1.x request parser and response-head parser.

``RequestParser.feed(data)`` returns the complete requests in the bytes
received so far (pipelined requests included).  Sizes are bounded: a request
line over ``max_uri`` bytes raises ``HttpError(414)``, a head over
``max_head`` bytes ``HttpError(431)``, a body over ``max_body`` bytes
``HttpError(413)``, anything malformed ``HttpError(400)``.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


class Request:
    __slots__ = ("method", "target", "version", "headers", "body")

    def __init__(self, method: str, target: str, version: str, headers: Dict[str, str], body: bytes) -> None:
        self.method, self.target, self.version, self.headers, self.body = method, target, version, headers, body

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.1":
            return "close" not in conn
        return "keep-alive" in conn


_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def parse_headers(lines: List[bytes]) -> Dict[str, str]:
    headers: Dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or not _TOKEN.issuperset(name):
            raise HttpError(400, "Bad Request")
        key = name.decode("ascii").lower()
        val = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {val}" if key in headers else val
    return headers


def content_length(headers: Dict[str, str]) -> int:
    text = headers.get("content-length")
    if text is None:
        return 0
    if not text.isdigit():
        raise HttpError(400, "Bad Request")
    return int(text)


class RequestParser:
    def __init__(self, max_uri: int = 8192, max_head: int = 16384, max_body: int = 1 << 20) -> None:
        self.max_uri, self.max_head, self.max_body = max_uri, max_head, max_body
        self.buf = b""

    def feed(self, data: bytes) -> List[Request]:
        buf = self.buf + data if self.buf else data
        out = []
        pos = 0
        while True:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                rest = len(buf) - pos
                line_end = buf.find(b"\r\n", pos)
                if (line_end < 0 and rest > self.max_uri) or line_end - pos > self.max_uri:
                    raise HttpError(414, "URI Too Long")
                if rest > self.max_head:
                    raise HttpError(431, "Request Header Fields Too Large")
                break
            if end - pos > self.max_head:
                raise HttpError(431, "Request Header Fields Too Large")
            lines = buf[pos:end].split(b"\r\n")
            parts = lines[0].split(b" ")
            if len(parts[0]) == 0 and len(lines) == 1:
                pos = end + 4  # stray blank lines between requests are allowed
                continue
            if len(lines[0]) > self.max_uri:
                raise HttpError(414, "URI Too Long")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not _TOKEN.issuperset(parts[0]):
                raise HttpError(400, "Bad Request")
            headers = parse_headers(lines[1:])
            if "chunked" in headers.get("transfer-encoding", "").lower():
                raise HttpError(411, "Length Required")
            size = content_length(headers)
            if size > self.max_body:
                raise HttpError(413, "Payload Too Large")
            body_start = end + 4
            if len(buf) - body_start < size:
                break
            out.append(Request(parts[0].decode("ascii"), parts[1].decode("latin-1"), parts[2].decode("ascii"),
                               headers, buf[body_start:body_start + size]))
            pos = body_start + size
        self.buf = buf[pos:]
        return out


def parse_response_head(buf: bytes) -> Optional[Tuple[int, bytes, Dict[str, str], int]]:
    """(status, head bytes, headers, head length) once ``buf`` holds a whole
    response head; None before.  Raises HttpError(502) when it is malformed."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise HttpError(502, "Bad Gateway")
        return None
    lines = buf[:end].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise HttpError(502, "Bad Gateway")
    try:
        headers = parse_headers(lines[1:])
    except HttpError:
        raise HttpError(502, "Bad Gateway") from None
    return int(parts[1]), buf[:end + 4], headers, end + 4
