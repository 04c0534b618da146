"""The PROXY protocol (v1 and v2, as HAProxy's proxy-protocol.txt defines
them), read before a connection reaches its factory.

Behind HAProxy, nginx (``proxy_protocol on``), stunnel or a cloud load
balancer, every connection comes from the proxy.  With ``send-proxy`` (v1,
one line of text) or ``send-proxy-v2`` (binary, with optional TLVs) the
proxy starts each connection with a header that names the client it
relays, and ``listen(url, factory, proxy_protocol=True)`` reads that header
first: the factory gets a socket whose ``getpeername()``/``getsockname()``
are the header's addresses, so ``peer_ip_string()`` and friends give the
real client.  The receiver must only ever be configured for it, never guess
(a client could claim any address), so such a listener belongs where only
the proxies can reach it.

Three parts
-----------
``HeaderParser`` is sans-I/O: ``feed(bytes)`` returns None while the header
is incomplete and a ``ProxyHeader`` once it is whole, and raises
``ProxyProtocolError`` as soon as the bytes cannot be a header (the first
byte of ``GET /`` is enough; the spec asks to abort as early as possible).
It keeps at most one header: 107 bytes for v1, 16 plus the announced
length for v2, and that length is refused beyond ``MAX_V2_LENGTH``.

``HeaderReader`` is a small ``Socket`` that owns the accepted connection
until the header is whole, under a total deadline (``proxy_timeout``):
a peer that sends nothing, too little or garbage is closed with a reason
that says which (``"proxy_timeout"``, ``"proxy_protocol: ..."``).  Then it
takes the raw socket back (``steal_socket``), wraps the same descriptor in
a ``ProxiedSocket`` and calls the factory with it.

Not reading past the header
---------------------------
The bytes after the header belong to the application: an HTTP request, or
the TLS ClientHello of a ``tls://`` listener, whose handshake reads the raw
descriptor itself.  Bytes read from the kernel and pushed back
(``push_back_read``) would reach a plain socket, but a TLS handshake never
looks there, and it would wait for a ClientHello that already came.  So
the reader never takes them from the kernel, as the spec's sample code
does: it *peeks* (``MSG_PEEK``), lets the parser say where the header ends,
and then receives exactly the header's bytes.  What follows stays queued in
the kernel, and the descriptor, registered again by the factory's socket,
is readable at once (poll and level-triggered epoll report data that was
already there).  A header cut into pieces costs no spin: everything peeked
before the header's end is header, and it is consumed each time, so the
descriptor is readable again only when new bytes arrive.  Peeking needs
the descriptor itself, so the reader says so (``reads_descriptor``): a
completion backend (io_uring) then leaves its bytes in the kernel too.

Addresses
---------
``ProxiedSocket`` is a ``socket.socket`` on the same descriptor.  For the
PROXY command with addresses, ``getpeername()`` is the header's source,
``getsockname()`` its destination, and ``family`` the header's family (a
TCP4 client relayed to a ``local://`` listener is AF_INET, so that code
formatting addresses by family reads them right; ``real_family`` is the
descriptor's own).  For v2 LOCAL (health checks), v1 UNKNOWN and v2
UNSPEC, which carry no client, they are the real ones.  Either way
``sock.proxy_header`` is the parsed header: its command, TLVs (v2), and
the raw bytes, to relay to a next hop.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import socket
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Optional, Tuple

from . import loop as _loop
from .addresses import AF_UNIX, format_address
from .socket import Socket

log = logging.getLogger("danga")

__all__ = ["ProxyProtocolError", "ProxyHeader", "HeaderParser", "ProxiedSocket", "HeaderReader", "expect_header",
           "crc32c", "V2_SIGNATURE", "V1_MAX", "MAX_V2_LENGTH"]

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included ("PROXY UNKNOWN" with two full IPv6 addresses)
V1_PROTOCOLS = ("TCP4", "TCP6", "UNKNOWN")
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version and command, family and protocol, length
#: the largest v2 length (addresses and TLVs) a parser takes by default; the
#: spec allows 65535, but no proxy sends more than a few hundred bytes
MAX_V2_LENGTH = 4096

# v2 TLV types (proxy-protocol.txt section 2.2)
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_TYPE_NETNS = 0x30

# the v2 family-and-protocol bytes the spec defines: (family, socket type, address block size)
_V2_FAMILIES = {
    0x00: (socket.AF_UNSPEC, 0, 0),
    0x11: (socket.AF_INET, socket.SOCK_STREAM, 12),
    0x12: (socket.AF_INET, socket.SOCK_DGRAM, 12),
    0x21: (socket.AF_INET6, socket.SOCK_STREAM, 36),
    0x22: (socket.AF_INET6, socket.SOCK_DGRAM, 36),
    0x31: (AF_UNIX, socket.SOCK_STREAM, 216),
    0x32: (AF_UNIX, socket.SOCK_DGRAM, 216),
}
_FAMILY_NAMES: Dict[int, str] = {socket.AF_INET: "TCP4", socket.AF_INET6: "TCP6", AF_UNIX: "UNIX",
                                 socket.AF_UNSPEC: "UNSPEC"}

_NOT_TEXT = re.compile(rb"[^\x20-\x7e]")
_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header.  ``detail`` is what
    was wrong; ``str()`` is ``"proxy protocol: " + detail``."""

    def __init__(self, detail: str) -> None:
        super().__init__("proxy protocol: " + detail)
        self.detail = detail


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed PROXY header.

    * ``version``: 1 or 2.
    * ``command``: ``"PROXY"`` (relayed for a client) or ``"LOCAL"`` (v2:
      the proxy's own connection, e.g. a health check).
    * ``family``: ``socket.AF_INET``, ``AF_INET6``, ``AF_UNIX``, or
      ``AF_UNSPEC`` (v1 UNKNOWN, v2 UNSPEC, LOCAL); ``type``:
      ``socket.SOCK_STREAM``, ``SOCK_DGRAM`` or 0 (unspecified).
    * ``source``/``destination``: as ``getpeername()`` gives them
      (``(ip, port)``, ``(ip, port, 0, 0)``, a path or an abstract name as
      bytes), or None when the header carries none (LOCAL, UNKNOWN, UNSPEC).
    * ``tlvs``: the v2 TLVs, ``(type, value)`` in order (CRC32C checked).
    * ``raw``: the header's bytes; ``rest``: what came after them in the
      bytes fed (empty in a ``ProxiedSocket``'s header: the reader leaves
      those bytes in the socket, for the application to read)."""

    version: int
    command: str
    family: int
    type: int
    source: Any
    destination: Any
    tlvs: Tuple[Tuple[int, bytes], ...]
    raw: bytes
    rest: bytes

    @property
    def size(self) -> int:
        """The header's length in bytes."""
        return len(self.raw)

    @property
    def proxied(self) -> bool:
        """True when the header names the connection's endpoints."""
        return self.source is not None

    def tlv(self, kind: int) -> Optional[bytes]:
        """The value of the first TLV of type ``kind`` (``PP2_TYPE_AUTHORITY``...), or None."""
        for t, value in self.tlvs:
            if t == kind:
                return value
        return None

    def describe(self) -> str:
        """``"v2 PROXY TCP4 203.0.113.7:5000 -> 10.0.0.1:80"``, ``"v2 LOCAL"``..."""
        text = f"v{self.version} {self.command}"
        if self.command == "PROXY":
            text += " " + _FAMILY_NAMES.get(self.family, str(self.family))
        if self.source is not None:
            src, dst = format_address(self.family, self.source), format_address(self.family, self.destination)
            text += f" {src} -> {dst}"
        return text


_CRC32C_TABLE: Tuple[int, ...] = ()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 4960 appendix B), as the PP2_TYPE_CRC32C TLV carries it."""
    global _CRC32C_TABLE
    if not _CRC32C_TABLE:
        table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            table.append(c)
        _CRC32C_TABLE = tuple(table)
    t = _CRC32C_TABLE
    crc = 0xFFFFFFFF
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class HeaderParser:
    """Sans-I/O reader of one PROXY header, v1 or v2 (told apart by the first
    byte).  ``feed(data)`` returns None while more is needed, the
    ``ProxyHeader`` once it is complete (with the bytes after it in
    ``rest``), and raises ``ProxyProtocolError`` as soon as the bytes cannot
    start a valid header.  It holds at most one header's bytes."""

    def __init__(self, max_v2_length: int = MAX_V2_LENGTH) -> None:
        self.max_v2_length = max_v2_length
        self.version = 0  # 0 until the first bytes tell
        self.result: Optional[ProxyHeader] = None
        self._buf = bytearray()

    @property
    def received(self) -> int:
        """Header bytes held so far."""
        return len(self._buf)

    @property
    def read_hint(self) -> int:
        """How many bytes to look at next: as many as the rest of the header
        can take (v2 once its length is known: exactly that many)."""
        n = len(self._buf)
        if self.version == 2:
            if n < V2_FIXED:
                return V2_FIXED - n
            return V2_FIXED + int.from_bytes(self._buf[14:16], "big") - n
        return max(1, V1_MAX - n)

    def feed(self, data: Any) -> Optional[ProxyHeader]:
        """Take the next bytes; the header once it is complete, else None."""
        if self.result is not None:
            raise RuntimeError("danga: this PROXY header is complete; the bytes after it are in .rest")
        data = bytes(data)
        buf = self._buf
        room = (V2_FIXED + self.max_v2_length if self.version != 1 else V1_MAX) - len(buf)
        buf += data[:room]
        extra = data[room:]
        if not buf:
            return None
        if self.version == 0:
            self._detect()
            if self.version == 0:
                return None
        size = self._parse_v1() if self.version == 1 else self._parse_v2()
        if size is None:
            return None
        assert self.result is not None  # set by the parse, without its bytes
        self.result = header = replace(self.result, raw=bytes(buf[:size]), rest=bytes(buf[size:]) + extra)
        self._buf = bytearray()
        return header

    def _detect(self) -> None:
        buf = self._buf
        k = min(len(buf), len(V2_SIGNATURE))
        if buf[:k] == V2_SIGNATURE[:k]:
            if k == len(V2_SIGNATURE):
                self.version = 2
            return
        k = min(len(buf), len(V1_PREFIX))
        if buf[:k] == V1_PREFIX[:k]:
            if k == len(V1_PREFIX):
                self.version = 1
            return
        raise ProxyProtocolError("no PROXY header (the peer is not a proxy speaking PROXY protocol); "
                                 f"it sent {bytes(buf[:16])!r}{'...' if len(buf) > 16 else ''}")

    # -- v1 ----------------------------------------------------------------------------

    def _parse_v1(self) -> Optional[int]:
        buf = self._buf
        end = buf.find(b"\r\n", 0, V1_MAX)
        text_end = end if end >= 0 else min(len(buf), V1_MAX)
        cr_last = end < 0 and text_end == len(buf) and buf[-1] == 0x0D  # its LF may be next
        if cr_last:
            text_end -= 1
        bad = _NOT_TEXT.search(buf, 0, text_end)
        if bad is not None:
            pos = bad.start()
            what = {0x0D: "a CR not followed by LF", 0x0A: "an LF without CR"}.get(buf[pos], f"byte 0x{buf[pos]:02x}")
            raise ProxyProtocolError(f"v1 header has {what} at offset {pos} (it must be one line of US-ASCII "
                                     "text ending in CRLF)")
        self._check_v1_protocol(bytes(buf[len(V1_PREFIX):text_end]), end >= 0 or cr_last)
        if end < 0:
            if len(buf) >= V1_MAX:
                raise ProxyProtocolError(f"v1 header has no CRLF within {V1_MAX} bytes")
            return None
        line = buf[:end].decode("ascii")
        fields = line.split(" ")
        proto = fields[1]
        if proto == "UNKNOWN":  # the rest of the line is to be ignored
            self.result = ProxyHeader(1, "PROXY", socket.AF_UNSPEC, 0, None, None, (), b"", b"")
            return end + 2
        family = socket.AF_INET if proto == "TCP4" else socket.AF_INET6
        if len(fields) != 6:
            raise ProxyProtocolError(f"v1 {proto} header has {len(fields) - 2} fields after {proto}, not 4 "
                                     f"(source and destination address, source and destination port, one "
                                     f"space apart): {line!r}")
        src = _v1_address(family, fields[2], "source", proto)
        dst = _v1_address(family, fields[3], "destination", proto)
        sport = _v1_port(fields[4], "source")
        dport = _v1_port(fields[5], "destination")
        tail = (0, 0) if family == socket.AF_INET6 else ()
        self.result = ProxyHeader(1, "PROXY", family, socket.SOCK_STREAM, (src, sport) + tail, (dst, dport) + tail,
                                  (), b"", b"")
        return end + 2

    @staticmethod
    def _check_v1_protocol(after_prefix: bytes, whole: bool) -> None:
        """Refuse as soon as the protocol word cannot be TCP4, TCP6 or UNKNOWN."""
        word, sep, _ = after_prefix.partition(b" ")
        text = word.decode("ascii")
        complete = bool(sep) or whole
        if complete and text not in V1_PROTOCOLS or not complete and not any(p.startswith(text)
                                                                             for p in V1_PROTOCOLS):
            raise ProxyProtocolError(f"v1 header names protocol {text!r}"
                                     f"{'' if complete else '...'} (TCP4, TCP6 or UNKNOWN)")

    # -- v2 ----------------------------------------------------------------------------

    def _parse_v2(self) -> Optional[int]:
        buf = self._buf
        n = len(buf)
        if n > 12:
            ver, cmd = buf[12] >> 4, buf[12] & 0x0F
            if ver != 2:
                raise ProxyProtocolError(f"v2 header has version 0x{ver:x} in byte 13 (0x{buf[12]:02x}); "
                                         "only 2 is defined")
            if cmd not in (0, 1):
                raise ProxyProtocolError(f"unknown v2 command 0x{cmd:x} (0x0 LOCAL and 0x1 PROXY are defined)")
            if cmd == 1 and n > 13 and buf[13] not in _V2_FAMILIES:
                raise ProxyProtocolError(f"v2 header has an unknown address family and protocol byte "
                                         f"0x{buf[13]:02x} (0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32 are defined)")
        if n < V2_FIXED:
            return None
        length = int.from_bytes(buf[14:16], "big")
        if length > self.max_v2_length:
            raise ProxyProtocolError(f"v2 header announces {length} bytes of addresses and TLVs, more than the "
                                     f"{self.max_v2_length} this receiver takes")
        total = V2_FIXED + length
        if n < total:
            return None
        if buf[12] & 0x0F == 0:  # LOCAL: the real endpoints; the block is skipped, family and all
            self.result = ProxyHeader(2, "LOCAL", socket.AF_UNSPEC, 0, None, None, (), b"", b"")
            return total
        family, stype, need = _V2_FAMILIES[buf[13]]
        if length < need:
            raise ProxyProtocolError(f"v2 {_FAMILY_NAMES[family]} header has {length} bytes after its first 16; "
                                     f"its addresses need {need}")
        block = bytes(buf[V2_FIXED:V2_FIXED + need])
        src: Any = None
        dst: Any = None
        if family == socket.AF_INET:
            src = (socket.inet_ntop(family, block[0:4]), int.from_bytes(block[8:10], "big"))
            dst = (socket.inet_ntop(family, block[4:8]), int.from_bytes(block[10:12], "big"))
        elif family == socket.AF_INET6:
            src = (socket.inet_ntop(family, block[0:16]), int.from_bytes(block[32:34], "big"), 0, 0)
            dst = (socket.inet_ntop(family, block[16:32]), int.from_bytes(block[34:36], "big"), 0, 0)
        elif family == AF_UNIX:
            src, dst = _unix_address(block[:108]), _unix_address(block[108:])
        tlvs = _parse_tlvs(bytes(buf[:total]), V2_FIXED + need)
        self.result = ProxyHeader(2, "PROXY", family, stype, src, dst, tlvs, b"", b"")
        return total


def _v1_address(family: int, text: str, which: str, proto: str) -> str:
    try:
        packed = socket.inet_pton(family, text)
    except (OSError, ValueError):
        kind = "IPv4 address (dotted decimal, no leading zeros)" if family == socket.AF_INET else "IPv6 address"
        raise ProxyProtocolError(f"v1 {proto} header has {text!r} as its {which}, not an {kind}") from None
    return socket.inet_ntop(family, packed)


def _v1_port(text: str, which: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyProtocolError(f"v1 header has {text!r} as its {which} port, not a decimal 0-65535 "
                                 "without leading zeros")
    return int(text)


def _unix_address(raw: bytes) -> Any:
    """A 108-byte v2 UNIX address as getpeername gives it: a path (str,
    ``""`` when unnamed) or a Linux abstract name (bytes starting with NUL)."""
    if raw[:1] == b"\0" and raw.strip(b"\0"):
        return b"\0" + raw[1:].rstrip(b"\0")
    return os.fsdecode(raw.split(b"\0", 1)[0])


def _parse_tlvs(header: bytes, start: int) -> Tuple[Tuple[int, bytes], ...]:
    tlvs = []
    pos = start
    end = len(header)
    while pos < end:
        if end - pos < 3:
            raise ProxyProtocolError(f"v2 header ends with {end - pos} stray byte(s) after its TLVs "
                                     "(a TLV takes 3 bytes at least)")
        kind = header[pos]
        size = int.from_bytes(header[pos + 1:pos + 3], "big")
        if pos + 3 + size > end:
            raise ProxyProtocolError(f"v2 TLV 0x{kind:02x} at offset {pos} is {size} bytes long, past the "
                                     f"header's end ({end} bytes)")
        value = header[pos + 3:pos + 3 + size]
        if kind == PP2_TYPE_CRC32C:
            if size != 4:
                raise ProxyProtocolError(f"v2 CRC32C TLV has {size} bytes, not 4")
            zeroed = header[:pos + 3] + b"\0\0\0\0" + header[pos + 7:]
            if crc32c(zeroed) != int.from_bytes(value, "big"):
                raise ProxyProtocolError("v2 header's CRC32C does not match its bytes")
        tlvs.append((kind, value))
        pos += 3 + size
    return tuple(tlvs)


class ProxiedSocket(socket.socket):
    """A ``socket.socket`` whose ``getpeername()``/``getsockname()`` (and
    ``family``) are those a PROXY header gave, when it gave any;
    ``proxy_header`` is the header, ``real_family`` the descriptor's family."""

    __slots__ = ("proxy_header",)

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: Optional[int] = None, *,
                 header: Optional[ProxyHeader] = None) -> None:
        super().__init__(family, type, proto, fileno)
        self.proxy_header = header

    @property
    def family(self) -> socket.AddressFamily:
        h = self.proxy_header
        if h is not None and h.source is not None:
            return socket.AddressFamily(h.family)
        return super().family

    @property
    def real_family(self) -> socket.AddressFamily:
        """The descriptor's own address family."""
        return super().family

    def getpeername(self) -> Any:
        h = self.proxy_header
        if h is not None and h.source is not None:
            return h.source
        return super().getpeername()

    def getsockname(self) -> Any:
        h = self.proxy_header
        if h is not None and h.destination is not None:
            return h.destination
        return super().getsockname()

    def dup(self) -> "ProxiedSocket":
        return ProxiedSocket(self.real_family, self.type, self.proto, fileno=os.dup(self.fileno()),
                             header=self.proxy_header)


class HeaderReader(Socket):
    """Owns an accepted connection until its PROXY header is whole, then
    hands the descriptor, as a ``ProxiedSocket``, to ``then``.  Closes with
    ``"proxy_protocol: <what was wrong>"`` or ``"proxy_timeout"``."""

    __slots__ = ("parser", "then")
    reads_descriptor = True  # it peeks, and hands the descriptor on with the bytes after the header unread

    def __init__(self, conn: socket.socket, timeout: float, then: Callable[[socket.socket], Optional[Any]],
                 max_v2_length: int = MAX_V2_LENGTH) -> None:
        super().__init__(conn)
        self.parser = HeaderParser(max_v2_length)
        self.then = then
        if timeout:
            self.set_deadline(timeout, "proxy_timeout")
        self.watch_read(True)

    def event_read(self) -> None:
        sock = self.sock
        parser = self.parser
        try:
            data = sock.recv(parser.read_hint, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.close(f"proxy_protocol: {errno.errorcode.get(e.errno or 0, str(e))} after {parser.received} "
                       "bytes of the header")
            return
        if not data:
            if parser.received:
                self.close(f"proxy_protocol: the peer closed the connection after {parser.received} bytes of "
                           "the header")
            else:
                self.close("proxy_protocol: the peer closed the connection before sending a header")
            return
        try:
            header = parser.feed(data)
        except ProxyProtocolError as e:
            self.close(f"proxy_protocol: {e.detail}")
            return
        take = len(data) - (len(header.rest) if header is not None else 0)
        try:
            got = len(sock.recv(take))  # peeked already: all of it is there
        except OSError as e:
            self.close(f"proxy_protocol: {errno.errorcode.get(e.errno or 0, str(e))} while reading the header")
            return
        if got != take:
            self.close(f"proxy_protocol: the kernel returned {got} of the {take} header bytes it had shown")
            return
        if header is not None:
            self._hand_over(header)

    def _hand_over(self, header: ProxyHeader) -> None:
        self.set_deadline(None)
        raw = self.steal_socket()
        if raw is None:
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("danga: PROXY header %s on fd %d", header.describe(), self.fd)
        sock = ProxiedSocket(raw.family, raw.type, raw.proto, fileno=raw.detach(),
                             header=replace(header, rest=b"") if header.rest else header)
        try:
            self.then(sock)
        except Exception as exc:
            sock.close()
            _loop.current().report_error(None, exc, f"PROXY protocol hand-over to {self.then!r}")

    def event_hup(self) -> None:
        self.close(f"proxy_protocol: the connection was lost after {self.parser.received} bytes of the header")

    def event_err(self) -> None:
        self.close(f"proxy_protocol: the connection failed after {self.parser.received} bytes of the header")

    def close(self, reason: str = "") -> None:
        if not self.closed:
            quiet = "before sending a header" in reason or reason in ("", "shutdown")
            log.log(logging.DEBUG if quiet else logging.INFO, "danga: %s: closed (%s)",
                    self.peer_addr_string() or f"fd {self.fd}", reason)
        super().close(reason)


def expect_header(conn: socket.socket, timeout: float, then: Callable[[socket.socket], Optional[Any]]) -> Optional[
        HeaderReader]:
    """Read the PROXY header from the accepted ``conn`` (within ``timeout``
    seconds; 0 or None: no limit), then call ``then(sock)`` with a
    ``ProxiedSocket`` on the same descriptor.  Returns the reader (None if
    ``conn`` could not be registered, then it is closed)."""
    try:
        return HeaderReader(conn, timeout, then)
    except Exception as exc:
        conn.close()
        _loop.current().report_error(None, exc, "PROXY protocol reader")
        return None
