"""URL-addressed endpoints, as packeteer names them.

``parse(url)`` turns a URL into an ``Address``: which socket family and type
to make and where to bind or connect.  Nothing here opens a descriptor.

=====================  =====================================================
``tcp://host:port``     TCP; ``tcp4://``/``tcp6://`` pin the family; IPv6
                        literals as ``[::1]``; port 0 lets a listener pick
``tls://host:port``     TCP with TLS (``tls4://``, ``tls6://``); see
                        ``danga.listen``/``danga.connect``
``udp://host:port``     UDP datagrams (``udp4://``, ``udp6://``)
``local:///path``       AF_UNIX stream; ``local://@name`` Linux abstract
                        namespace; ``?type=dgram`` for datagrams
``fifo:///path``        POSIX named pipe (created if missing)
``anon:``               an in-process pair: socketpair, or ``?type=pipe``
``fd://N``              an existing descriptor (``fd://0`` is stdin)
=====================  =====================================================
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Tuple, Union
from urllib.parse import SplitResult, parse_qs, urlsplit

from . import checks

#: socket.AF_UNIX where the platform has it (not on Windows: local:// is POSIX-only there)
AF_UNIX: int = getattr(socket, "AF_UNIX", -1)

SCHEMES = ("tcp", "tcp4", "tcp6", "tls", "tls4", "tls6", "udp", "udp4", "udp6", "local", "fifo", "anon", "fd")


@dataclass(frozen=True)
class Address:
    """A parsed URL.  ``target`` is ``(host, port)`` for IP, a path (str) or
    abstract name (bytes starting with NUL) for ``local``, a path for
    ``fifo``, an int for ``fd``, None for ``anon``."""

    url: str
    scheme: str
    family: int
    type: int
    target: Any  # (host, port) for IP, str or bytes for local, str for fifo, int for fd, None for anon
    options: Tuple[Tuple[str, str], ...] = ()

    def option(self, name: str, default: Optional[str] = None) -> Optional[str]:
        for k, v in self.options:
            if k == name:
                return v
        return default


def _bad(url: str, what: str) -> ValueError:
    return ValueError(f"danga: bad URL {url!r}: {what}")


#: what ``listen``/``connect`` take: a URL, or a ``(host, port)`` pair for TCP
Where = Union[str, Tuple[str, int]]


def from_pair(pair: Any) -> str:
    """The ``tcp://`` URL of a ``(host, port)`` pair (IPv6 hosts bracketed)."""
    if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
            and isinstance(pair[1], int) and not isinstance(pair[1], bool)):
        raise TypeError(f"danga: an address is a URL string or a (host, port) pair, got {pair!r}")
    host, port = pair
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def require_posix(url: Where) -> None:
    """Raise NotImplementedError on Windows for the kinds of URL it has no
    equivalent of (local://, fifo://, fd://, anon:?type=pipe), before any
    parsing complains about a Windows path."""
    if not isinstance(url, str):
        return
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme in ("local", "fifo", "fd"):
        checks.require_posix(f"{scheme}:// ({url!r})", "use tcp:// (or anon: for an in-process pair)")
    elif scheme == "anon" and "type=pipe" in rest:
        checks.require_posix(f"anon:?type=pipe ({url!r})", "use anon: for a socket pair")


def parse(url: Where) -> Address:
    """Parse ``url`` (or a ``(host, port)`` pair); raise ValueError naming
    the URL and the part that is wrong."""
    if not isinstance(url, str):
        url = from_pair(url)
    scheme, sep, _ = url.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ValueError(
            f"danga: unsupported scheme {scheme!r} in {url!r}; supported: " + ", ".join(s + ":" for s in SCHEMES)
        )
    try:
        parts = urlsplit(url)
    except ValueError as e:  # urllib's own complaint, e.g. "Invalid IPv6 URL"
        raise _bad(url, "unclosed '[' in IPv6 host" if "IPv6" in str(e) else str(e)) from None
    query = parse_qs(parts.query, keep_blank_values=True)
    options = tuple((k, v[-1]) for k, v in sorted(query.items()))
    kind = dict(options).get("type", "")
    if scheme in ("tcp", "tcp4", "tcp6", "tls", "tls4", "tls6", "udp", "udp4", "udp6"):
        return _parse_ip(url, parts, scheme, options)
    if scheme == "local":
        if kind not in ("", "stream", "dgram"):
            raise _bad(url, f"type={kind!r} (use stream or dgram)")
        stype = socket.SOCK_DGRAM if kind == "dgram" else socket.SOCK_STREAM
        if parts.netloc.startswith("@"):
            name = parts.netloc[1:] + parts.path
            if not name:
                raise _bad(url, "empty abstract socket name after '@'")
            return Address(url, scheme, AF_UNIX, stype, b"\0" + name.encode(), options)
        if parts.netloc:
            raise _bad(url, f"host part {parts.netloc!r}: use local:///absolute/path or local://@abstract")
        if not parts.path:
            raise _bad(url, "no socket path")
        return Address(url, scheme, AF_UNIX, stype, parts.path, options)
    if scheme == "fifo":
        if parts.netloc or not parts.path:
            raise _bad(url, "use fifo:///absolute/path")
        return Address(url, scheme, 0, 0, parts.path, options)
    if scheme == "anon":
        if kind not in ("", "socket", "pipe"):
            raise _bad(url, f"type={kind!r} (use socket or pipe)")
        return Address(url, scheme, AF_UNIX, socket.SOCK_STREAM, None, options)
    # fd://N
    text = parts.netloc or parts.path.lstrip("/")
    try:
        fd = int(text)
    except ValueError:
        raise _bad(url, f"descriptor {text!r} is not a number") from None
    if fd < 0:
        raise _bad(url, f"descriptor {fd} is negative")
    return Address(url, scheme, 0, 0, fd, options)


def _parse_ip(url: str, parts: SplitResult, scheme: str, options: Tuple[Tuple[str, str], ...]) -> Address:
    stype = socket.SOCK_DGRAM if scheme.startswith("udp") else socket.SOCK_STREAM
    netloc = parts.netloc
    if not netloc:
        raise _bad(url, "no host:port")
    if netloc.startswith("["):
        host, sep, rest = netloc[1:].partition("]")
        if not sep:
            raise _bad(url, "unclosed '[' in IPv6 host")
        if not rest.startswith(":"):
            raise _bad(url, "no port after the IPv6 host")
        port_text = rest[1:]
    else:
        host, sep, port_text = netloc.rpartition(":")
        if not sep:
            raise _bad(url, "no port (use host:port)")
        if ":" in host:
            raise _bad(url, f"IPv6 host {host!r} must be written in brackets, e.g. [::1]")
    if not host:
        raise _bad(url, "empty host")
    try:
        port = int(port_text)
    except ValueError:
        raise _bad(url, f"port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise _bad(url, f"port {port} is out of range 0-65535")
    family = {"4": socket.AF_INET, "6": socket.AF_INET6}.get(scheme[-1], socket.AF_UNSPEC)
    return Address(url, scheme, family, stype, (host, port), options)


def bind(sock: socket.socket, target: Any, addr: Address) -> None:
    """``sock.bind(target)``, with an error that names the URL (and keeps the errno)."""
    try:
        sock.bind(target)
    except OSError as e:
        hint = " (is another server on that port?)" if e.errno == 98 else ""
        raise OSError(e.errno, f"danga: cannot listen on {addr.url!r}: {e.strerror}{hint}") from None


def resolve(addr: Address, passive: bool) -> Tuple[int, Tuple[Any, ...]]:
    """(family, sockaddr) for an IP address, resolving host names (blocking)."""
    host, port = addr.target
    try:
        infos = socket.getaddrinfo(host, port, addr.family, addr.type, 0, socket.AI_PASSIVE if passive else 0)
    except socket.gaierror as e:
        raise OSError(e.errno, f"danga: cannot resolve host {host!r} in {addr.url!r}: {e.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


# -- formatting (the inverse direction: what the socket module returns) --------------------


def format_address(family: int, addr: Any) -> Optional[str]:
    """``"ip:port"``, ``"[v6]:port"``, a UNIX path or ``"@abstract"``; None
    for an unnamed or unknown address."""
    if family == socket.AF_INET:
        return f"{addr[0]}:{addr[1]}"
    if family == socket.AF_INET6:
        return f"[{addr[0]}]:{addr[1]}"
    if family == getattr(socket, "AF_UNIX", None):
        if isinstance(addr, bytes):  # Linux abstract namespace
            return "@" + addr[1:].decode("utf-8", "backslashreplace") if addr else None
        return addr or None
    return None


def ip_of(family: int, addr: Any) -> Optional[str]:
    """The IP address part of an AF_INET/AF_INET6 address, else None."""
    if family in (socket.AF_INET, socket.AF_INET6):
        ip: str = addr[0]
        return ip
    return None


class SocketAddresses:
    """The Danga::Socket address helpers, mixed into ``Socket``.  They read
    ``self.sock`` and cache what they learn in the socket's side object."""

    __slots__ = ()
    if TYPE_CHECKING:
        sock: Any

        def _extras(self) -> Any: ...

    def _address(self, which: str) -> Any:
        """``(family, address)`` of the peer or the local end, cached; None if unknown."""
        x = self._extras()
        cached = getattr(x, which)
        if cached is not None or self.sock is None:
            return cached
        try:
            addr = self.sock.getpeername() if which == "peer" else self.sock.getsockname()
        except OSError:
            return None
        fa = (self.sock.family, addr)
        setattr(x, which, fa)
        return fa

    @property
    def peer_address(self) -> Any:
        """The peer's address as the socket module gives it, or None."""
        fa = self._address("peer")
        return fa[1] if fa is not None else None

    def peer_ip_string(self) -> Optional[str]:
        """The peer's IP address ("127.0.0.1", "::1"); None if not IP or unknown."""
        fa = self._address("peer")
        return ip_of(*fa) if fa is not None else None

    def peer_addr_string(self) -> Optional[str]:
        """"ip:port", "[v6]:port", a UNIX path or "@abstract"; None if unknown."""
        fa = self._address("peer")
        return format_address(*fa) if fa is not None else None

    def local_ip_string(self) -> Optional[str]:
        """The local IP address; None if not IP or unknown."""
        fa = self._address("local")
        return ip_of(*fa) if fa is not None else None

    def local_addr_string(self) -> Optional[str]:
        """The local address, formatted as ``peer_addr_string``."""
        fa = self._address("local")
        return format_address(*fa) if fa is not None else None
