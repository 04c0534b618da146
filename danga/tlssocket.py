"""The TLS part of ``Socket``, mixed into it: ``start_tls``, ``tls`` and the hook.

How TLS works underneath is in danga/tls.py.  This is part of ``Socket``,
so it uses Socket's own name-mangled slots (``self._Socket__io``...).
"""
from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, Optional

from . import loop as _loop
from .pollers import READ, WRITE
from .sockstate import CONNECTING, Extras
from .tls import CLEAR, HANDSHAKE, OPEN, Handshake, TlsStream, client_context, harden, server_context

DEFAULT_HANDSHAKE_TIMEOUT = 30.0


def make_context(ssl_context: Optional[ssl.SSLContext], server_side: bool, certfile: Optional[str] = None,
                 keyfile: Optional[str] = None) -> ssl.SSLContext:
    """The context to use: ``ssl_context`` (with renegotiation refused), a
    server context from ``certfile``/``keyfile``, or a verifying client one."""
    if ssl_context is not None:
        if not isinstance(ssl_context, ssl.SSLContext):
            raise TypeError(f"danga: ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}")
        return harden(ssl_context)
    if certfile is not None:
        return server_context(certfile, keyfile)
    if server_side:
        raise ValueError("danga: a TLS server needs ssl_context= or certfile= (and keyfile=) for its certificate")
    return client_context()


def wrapped(raw: Any, ctx: ssl.SSLContext, server_side: bool, server_hostname: Optional[str] = None) -> TlsStream:
    """The stream a ``tls://`` Socket is made with: its handshake pending, so
    that nothing the object writes in its constructor goes out in clear."""
    return TlsStream(raw, _loop.current().channel(raw), ctx, server_side, server_hostname)


def begin(obj: Any, stream: TlsStream, timeout: Optional[float]) -> None:
    """Start the handshake of a Socket made with ``wrapped(...)``: at once
    for an accepted one, once the TCP connect is up for an outgoing one."""
    if getattr(obj, "sock", None) is not stream:
        raise TypeError(f"danga: a TLS factory must return the Socket it made with the socket it was given, "
                        f"got {obj!r}")
    if obj.closed:
        return
    seconds = obj.ssl_handshake_timeout if timeout is None else timeout
    if obj.connecting:
        obj._extras().tls_start = lambda: _handshake(obj, stream, seconds, True)
    else:
        _handshake(obj, stream, seconds, False)


def _handshake(obj: Any, stream: TlsStream, timeout: float, connecting: bool) -> None:
    hs = Handshake(obj, stream, timeout, connecting)
    hs.lend(READ)
    hs.start()


class SocketTls:
    """Mixed into ``Socket``: TLS on a connection."""

    if not TYPE_CHECKING:
        __slots__ = ()
    else:
        sock: Any
        closed: bool
        _Socket__io: Any
        _Socket__pb: Optional[bytes]
        _Socket__state: int
        _Socket__mask: int

        def _extras(self) -> Extras:
            raise NotImplementedError

        def write(self, data: Any) -> bool:
            raise NotImplementedError

    #: seconds a TLS handshake may take before the socket is closed (asyncio's name)
    ssl_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT

    def start_tls(self, ssl_context: Optional[ssl.SSLContext] = None, *, server_side: bool = False,
                  server_hostname: Optional[str] = None, certfile: Optional[str] = None,
                  keyfile: Optional[str] = None, handshake_timeout: Optional[float] = None) -> None:
        """Upgrade this connection to TLS in place (STARTTLS).

        Bytes already queued go out in clear first; bytes pushed back with
        ``push_back_read`` are taken as the start of the peer's TLS data.
        Until the handshake completes, writes are queued and nothing is
        delivered; then ``ssl_handshake_completed()`` runs.  A server needs
        ``ssl_context`` or ``certfile``/``keyfile``; a client without a
        context verifies the peer against the system's roots, with
        ``server_hostname`` for SNI and the name check.  On a connect still
        in progress, the handshake starts once it is up (``event_connected``
        follows the handshake)."""
        if self.closed:
            return
        if isinstance(self.sock, TlsStream):
            raise RuntimeError(f"danga: {self!r} already uses TLS")
        ctx = make_context(ssl_context, server_side, certfile, keyfile)
        timeout = self.ssl_handshake_timeout if handshake_timeout is None else handshake_timeout
        if self._Socket__state & CONNECTING:
            self._extras().tls_start = lambda: self._begin_tls(ctx, server_side, server_hostname, timeout, True)
            return
        self._begin_tls(ctx, server_side, server_hostname, timeout, False)

    def _begin_tls(self, ctx: ssl.SSLContext, server_side: bool, server_hostname: Optional[str], timeout: float,
                   connecting: bool) -> None:
        stream = TlsStream(self.sock, self._Socket__io, ctx, server_side, server_hostname,
                           HANDSHAKE if connecting else CLEAR)
        pb = self._Socket__pb
        if pb:
            stream.inc.write(pb)  # read before the switch, but already TLS
            self._Socket__pb = None
        self.sock = self._Socket__io = stream
        if connecting:
            _handshake(self, stream, timeout, True)
            return
        hs = Handshake(self, stream, timeout, False)  # type: ignore[arg-type]
        hs.lend(WRITE)
        self.write(hs.start)  # at once, or after the clear bytes already queued

    @property
    def tls(self) -> Optional[ssl.SSLObject]:
        """The ``ssl.SSLObject`` once the handshake has completed (None
        before, and on plain sockets): ``version()``, ``cipher()``,
        ``selected_alpn_protocol()``, ``getpeercert()``..."""
        s = self.sock
        if s.__class__ is TlsStream and s.state >= OPEN:
            obj: ssl.SSLObject = s.ssl_object
            return obj
        return None

    @property
    def tls_handshaking(self) -> bool:
        """True while a TLS handshake (or the clear bytes before it) is in progress."""
        s = self.sock
        return s.__class__ is TlsStream and s.state in (CLEAR, HANDSHAKE)

    def ssl_handshake_completed(self) -> None:
        """The TLS handshake completed (EventMachine's name); ``self.tls``
        describes it.  Override it; the default does nothing."""
