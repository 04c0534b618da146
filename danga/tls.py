"""TLS for danga sockets: the standard ``ssl`` module over memory BIOs.

How it fits the loop
--------------------
A TLS socket is an ordinary ``Socket`` whose ``sock`` (and byte channel,
see danga/contract.py) is a ``TlsStream``: a socket-like object that owns
the raw socket, an ``ssl.SSLObject`` and its two ``ssl.MemoryBIO``\\ s.
``recv`` reads ciphertext from the raw socket, feeds it in and returns
plaintext; ``send`` encrypts and hands the ciphertext to the raw socket.
The loop, the poller and the write queue never know: they see a socket
that is readable when its raw socket is, and a channel that takes bytes or
does not.  asyncio's and trio's TLS are built the same way.

What ``send`` reports
---------------------
Ciphertext cannot be taken back, so when the kernel takes only part of a
record, the rest is *held* by the stream and the plaintext it carries is
reported as not taken.  The socket keeps that plaintext queued and offers
it again, as it does after any short send (OpenSSL's own retry rule); the
stream then sends what it holds and only then counts those bytes as taken.
So the write queue's figures (``write_buf_size``, the water marks, the
hard limit) count *plaintext accepted by write() and not yet taken by the
kernel*, the same as for a plain socket, and at most one ``send``'s worth
of ciphertext is held besides.

The stuck buffer
----------------
One read from the kernel may carry more records than one ``read(n)``
returns.  Level-triggered readiness will not report them again (the kernel
has nothing left), so the stream decrypts what remains and gives it to the
socket with ``push_back_read``: it is delivered through ``event_read`` at
the end of the pass, and returned first by the next ``read()``.

The handshake
-------------
Until it completes, the user's socket hears nothing: the loop ``lend``\\ s
its descriptor to a ``Handshake``, which reads, writes and times out on its
own; the user's interest changes are kept and applied when the fd is given
back.  ``write()`` meanwhile queues plaintext (the stream takes nothing),
and ``read()`` returns ``b""``.  ``start_tls`` on an open connection first
lets the bytes already queued go out in clear (it queues the switch behind
them), and treats bytes that were pushed back as the start of the TLS data.
Then ``ssl_handshake_completed()`` runs, ``event_connected()`` for an
outgoing ``tls://`` connect, and the queue is flushed.  A failure closes
the socket with a reason that names the cause (``"tls: ..."``), and an
outgoing connect gets ``event_connect_failed`` with it.

Closing sends close_notify (best effort, without waiting for the peer's);
the peer's close_notify is a clean EOF, and a connection cut without one
makes ``read()`` return None with ``read_error`` saying so.
"""
from __future__ import annotations

import errno
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any, Optional

from . import loop as _loop
from .contract import ChannelError
from .pollers import ERR, HUP, READ, WRITE
from .timers import Timer, cancel

if TYPE_CHECKING:
    from .socket import Socket

log = logging.getLogger("danga")

__all__ = ["TlsStream", "Handshake", "server_context", "client_context", "harden", "reason_of"]

# TlsStream states
CLEAR = 0  # start_tls was called; bytes queued before it still go out in clear
HANDSHAKE = 1
OPEN = 2
CLOSED = 3  # the peer's close_notify was seen (reads give EOF)
FAILED = 4  # the handshake or a record failed, or the connection was cut: no close_notify on close
DONE = 5  # closed by us

CHUNK = 256 * 1024  # plaintext encrypted per step of one send
RAW_READ = 64 * 1024  # what the handshake and the leftover drain read at once
RECORD = 17 * 1024  # a full TLS record with its overhead: the least a recv reads from the kernel
HANDSHAKE_READ = 64 * 1024


def harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Refuse renegotiation on ``ctx`` (danga does this to every context it
    is given) and return it."""
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return ctx


def server_context(certfile: str, keyfile: Optional[str] = None, *, cafile: Optional[str] = None,
                   verify_client: bool = False) -> ssl.SSLContext:
    """A server context: TLS 1.2 at least, ``certfile``/``keyfile`` as the
    server's chain and key; with ``cafile``, client certificates signed by
    it are asked for (required when ``verify_client``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    if cafile is not None:
        ctx.load_verify_locations(cafile)
        ctx.verify_mode = ssl.CERT_REQUIRED if verify_client else ssl.CERT_OPTIONAL
    return harden(ctx)


def client_context(cafile: Optional[str] = None) -> ssl.SSLContext:
    """A verifying client context (``ssl.create_default_context``), TLS 1.2
    at least; ``cafile`` replaces the system's trusted roots."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return harden(ctx)


def reason_of(e: BaseException) -> str:
    """The close reason for a TLS failure: ``"tls: CERTIFICATE_VERIFY_FAILED
    (certificate has expired)"``, ``"tls: WRONG_VERSION_NUMBER"``..."""
    if isinstance(e, ChannelError):
        return e.reason
    if isinstance(e, ssl.SSLError):
        name = e.reason or type(e).__name__
        detail = getattr(e, "verify_message", None)
        return f"tls: {name} ({detail})" if detail else f"tls: {name}"
    if isinstance(e, OSError) and e.errno:
        return f"tls: {errno.errorcode.get(e.errno, str(e.errno))}"
    return f"tls: {type(e).__name__}: {e}"


class TlsStream:
    """A socket-like object: a raw socket, an ``ssl.SSLObject`` and its memory
    BIOs (see the module essay).  ``recv``/``send``/``sendmsg`` carry
    plaintext; everything else (``getpeername``, ``setsockopt``...) is the
    raw socket's.  ``ssl_object`` is the ``SSLObject`` (its ``version()``,
    ``cipher()``, ``selected_alpn_protocol()``, ``getpeercert()``)."""

    __slots__ = ("raw", "io", "ssl_object", "inc", "out", "state", "held", "credit")

    def __init__(self, raw: Any, io: Any, ctx: ssl.SSLContext, server_side: bool,
                 server_hostname: Optional[str], state: int = HANDSHAKE) -> None:
        self.raw = raw
        self.io = io  # the raw socket's byte channel
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.ssl_object = ctx.wrap_bio(self.inc, self.out, server_side=server_side,
                                       server_hostname=None if server_side else server_hostname)
        self.state = state
        self.held: Optional[memoryview] = None  # ciphertext the kernel has not taken yet
        self.credit = 0  # plaintext whose ciphertext went out, not yet reported taken

    def __getattr__(self, name: str) -> Any:
        if name in TlsStream.__slots__:
            raise AttributeError(name)
        return getattr(self.raw, name)

    def fileno(self) -> int:
        fd: int = self.raw.fileno()
        return fd

    def setblocking(self, flag: bool) -> None:
        self.raw.setblocking(flag)

    def __repr__(self) -> str:
        return f"<TlsStream state={self.state} {self.raw!r}>"

    # -- reading ------------------------------------------------------------------

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes of plaintext (see ``ByteChannel.recv``)."""
        if self.state != OPEN:
            if self.state == CLOSED:
                return b""
            if self.state >= FAILED:
                raise ChannelError("tls: the connection is closed")
            raise BlockingIOError(errno.EAGAIN, "danga: no TLS data until the handshake completes")
        # As much ciphertext as the caller asked for plaintext (so that there
        # is rarely any left over to push back), but at least one record.
        data = self.io.recv(n if n >= RECORD else RECORD)
        if not data:
            self.state = FAILED
            raise ChannelError("tls: connection cut without close_notify")
        self.inc.write(data)
        return self.decrypt(n)

    def decrypt(self, n: int) -> bytes:
        """Plaintext from what the BIO holds: up to ``n`` bytes, the rest
        pushed back to the socket that owns this stream."""
        ssl_object = self.ssl_object
        inc = self.inc
        parts = []
        got = 0
        try:
            while got < n:
                chunk = ssl_object.read(n - got)
                if not chunk:
                    self._peer_closed()
                    break
                parts.append(chunk)
                got += len(chunk)
                if not inc.pending and not ssl_object.pending():
                    break
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._peer_closed()
        except ssl.SSLError as e:
            self.state = FAILED
            raise ChannelError(reason_of(e)) from None
        if self.out.pending:
            self.push_out()  # a post-handshake message (session ticket, key update) wants an answer
        if got >= n and (inc.pending or ssl_object.pending()):
            self._push_back_rest()
        if not parts:
            if self.state == CLOSED:
                return b""
            raise BlockingIOError(errno.EAGAIN, "danga: a partial TLS record")
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _peer_closed(self) -> None:
        """The peer's close_notify: a clean EOF.  It may have come with data
        in one read; ending the raw socket's input as well makes the kernel
        report it readable (at EOF), so the reader is called again and sees
        the EOF instead of waiting for readiness that never comes."""
        self.state = CLOSED
        try:
            self.raw.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def _push_back_rest(self) -> None:
        rest = []
        try:
            while True:
                chunk = self.ssl_object.read(RAW_READ)
                if not chunk:  # the peer's close_notify (CPython returns b"" for it)
                    self._peer_closed()
                    break
                rest.append(chunk)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._peer_closed()
        except ssl.SSLError as e:
            log.debug("danga: TLS error after a complete read: %s", e)  # the next read reports it
        if rest:
            owner = _loop.current().descriptor_map.get(self.raw.fileno())
            if owner is not None and getattr(owner, "sock", None) is self:
                owner.push_back_read(b"".join(rest))  # type: ignore[attr-defined]

    # -- writing ------------------------------------------------------------------

    def send(self, data: Any) -> int:
        """Encrypt and send what the kernel takes of ``data``; return the
        plaintext bytes taken (see the module essay for held ciphertext)."""
        state = self.state
        if state != OPEN and state != CLOSED:  # after the peer's close_notify we may still send
            if state == CLEAR:
                n: int = self.io.send(data)
                return n
            if state == HANDSHAKE:
                raise BlockingIOError(errno.EAGAIN, "danga: writes wait for the TLS handshake")
            raise ChannelError("tls: the connection is closed")
        if self.held is not None and not self.flush_held():
            return 0
        total = 0
        size = len(data)
        if self.credit:
            total = min(self.credit, size)
            self.credit -= total
            if total == size or self.credit:
                return total
        ssl_object = self.ssl_object
        out = self.out
        send = self.io.send
        while total < size:
            piece = data if total == 0 and size <= CHUNK else memoryview(data)[total:total + CHUNK]
            try:
                wrote = ssl_object.write(piece)
            except ssl.SSLError as e:
                raise ChannelError(reason_of(e)) from None
            cipher = out.read()
            try:
                k = send(cipher)
            except (BlockingIOError, InterruptedError):
                k = 0
            if k < len(cipher):
                self.held = memoryview(cipher)[k:]
                self.credit = wrote
                return total
            total += wrote
        return total

    def sendmsg(self, buffers: Any) -> int:
        """``send`` of the buffers joined."""
        return self.send(b"".join(buffers))

    def flush_held(self) -> bool:
        """Send held ciphertext; True once none is held."""
        held = self.held
        if held is None:
            return True
        try:
            k = self.io.send(held)
        except (BlockingIOError, InterruptedError):
            return False
        if k < len(held):
            self.held = held[k:]
            return False
        self.held = None
        return True

    def push_out(self) -> None:
        """Send what the SSL object wrote to its outgoing BIO (handshake
        messages, alerts), holding what the kernel does not take."""
        cipher = self.out.read()
        if not cipher:
            return
        if self.held is not None:
            self.held = memoryview(bytes(self.held) + cipher)
            return
        self.held = memoryview(cipher)
        self.flush_held()

    # -- closing ------------------------------------------------------------------

    def close(self) -> None:
        """Send close_notify (best effort, when nothing is held) and close the raw socket."""
        if (self.state == OPEN or self.state == CLOSED) and self.held is None:
            try:
                self.ssl_object.unwrap()
            except (ssl.SSLError, ValueError):
                pass  # SSLWantReadError: the peer's close_notify is not waited for
            try:
                cipher = self.out.read()
                if cipher:
                    self.io.send(cipher)
            except OSError:
                pass
        self.state = DONE
        self.raw.close()


class Handshake:
    """Drives a TLS handshake on a socket's descriptor, lent to it by the
    loop (danga.contract.LoopSide.lend), then gives the descriptor back."""

    __slots__ = ("owner", "stream", "fd", "connecting", "timeout", "timer", "mask")

    max_idle_time = 0.0
    send_timeout = 0.0

    def __init__(self, owner: "Socket", stream: TlsStream, timeout: float, connecting: bool) -> None:
        self.owner = owner
        self.stream = stream
        self.fd = owner.fd
        self.connecting = connecting
        self.timeout = timeout
        self.timer: Optional[Timer] = None
        self.mask = -1

    @property
    def closed(self) -> bool:
        return self.owner.closed

    def lend(self, mask: int) -> None:
        """Take the owner's descriptor from the loop, arm the deadline."""
        loop = _loop.current()
        self.mask = mask
        loop.lend(self.owner, self, mask)
        if self.timeout:
            self.timer = loop.add_timer(self.timeout, self._timed_out)
        self.owner.add_close_watcher(self._owner_closed)

    def start(self) -> None:
        """The clear bytes are out: begin the handshake."""
        if self.owner.closed or self.stream.state != CLEAR and self.stream.state != HANDSHAKE:
            return
        self.stream.state = HANDSHAKE
        self.step()

    # -- the loop's side (danga.contract.SocketSide) --------------------------------

    def event_read(self) -> None:
        stream = self.stream
        if stream.state != HANDSHAKE:
            return
        try:
            data = stream.io.recv(HANDSHAKE_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.fail(reason_of(e) + " during the handshake")
            return
        if not data:
            self.fail("tls: the peer closed the connection during the handshake")
            return
        stream.inc.write(data)
        self.step()

    def loop_dispatch(self, mask: int) -> None:
        if self.owner.closed:
            return
        stream = self.stream
        if stream.state == CLEAR:
            if mask & WRITE:
                self.owner.write(None)  # the clear bytes; the switch is queued behind them
            elif mask & (ERR | HUP):
                self.fail("tls: connection lost before the handshake began")
            return
        if mask & WRITE:
            try:
                stream.flush_held()
            except OSError as e:
                self.fail(reason_of(e) + " during the handshake")
                return
            self._want(READ | (WRITE if stream.held is not None else 0))
        if mask & READ:
            self.event_read()
        elif mask & (ERR | HUP):
            self.fail("tls: connection lost during the handshake")

    def loop_push_back_pending(self) -> int:
        return 0

    def loop_idle_for(self, now: float) -> float:
        return 0.0

    def loop_send_stalled_for(self, now: float) -> float:
        return 0.0

    def loop_lost_fd(self) -> None:
        self.timer = cancel(self.timer)
        self.owner.loop_lost_fd()

    def as_string(self) -> str:
        return self.owner.as_string() + " (TLS handshake)"

    def close(self, reason: str = "") -> None:
        self.fail(reason)

    # -- the handshake ------------------------------------------------------------------

    def _want(self, mask: int) -> None:
        if mask != self.mask:
            self.mask = mask
            _loop.current().set_interest(self, mask)

    def step(self) -> None:
        stream = self.stream
        done = False
        try:
            stream.ssl_object.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLError, ssl.CertificateError) as e:
            self._send_alert()
            self.fail(reason_of(e))
            return
        try:
            stream.push_out()
        except OSError as e:
            self.fail(reason_of(e) + " during the handshake")
            return
        if done:
            self.finish()
        else:
            self._want(READ | (WRITE if stream.held is not None else 0))

    def _send_alert(self) -> None:
        try:
            self.stream.push_out()
        except OSError:
            pass

    def finish(self) -> None:
        owner = self.owner
        stream = self.stream
        self.timer = cancel(self.timer)
        stream.state = OPEN
        _loop.current().reclaim(owner, owner._Socket__mask)
        # Whatever came with the handshake's last flight: application data,
        # or the peer's close_notify (no bytes pending then, but read it all
        # the same, or nothing would ever make this socket readable again).
        stream._push_back_rest()
        x = owner._Socket__x
        if x is not None and x.on_close:
            x.on_close.remove(self._owner_closed)  # nothing of the handshake outlives it
        if log.isEnabledFor(logging.DEBUG):
            log.debug("danga: %s: TLS %s %s", owner.as_string(), stream.ssl_object.version(),
                      (stream.ssl_object.cipher() or ("",))[0])
        owner.ssl_handshake_completed()
        if self.connecting and not owner.closed:
            owner.event_connected()
        if not owner.closed:
            owner.write(None)  # what was written meanwhile

    def fail(self, reason: str) -> None:
        owner = self.owner
        self.timer = cancel(self.timer)
        if owner.closed:
            return
        if self.stream.state == OPEN:  # a hook raised after the handshake completed: an ordinary close
            owner.close(reason)
            return
        self.stream.state = FAILED
        if log.isEnabledFor(logging.DEBUG):
            log.debug("danga: %s: %s", owner.as_string(), reason)
        if self.connecting:
            try:
                owner.event_connect_failed(reason)
            finally:
                owner.close(reason)
        else:
            owner.close(reason)

    def _timed_out(self) -> None:
        self.timer = None
        self.fail(f"tls: the handshake timed out after {self.timeout:g}s")

    def _owner_closed(self, _sock: Any, _reason: str) -> None:
        self.timer = cancel(self.timer)
