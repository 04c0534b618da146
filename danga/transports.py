"""``listen()`` and ``connect()`` by URL (the schemes are in danga/addresses.py).

Stream URLs listen with a ``Listener`` (danga/listener.py); datagram URLs
give a bound ``DatagramSocket`` (danga/datagram.py) or whatever the factory
makes; ``connect`` starts a non-blocking connect and returns at once.
"""
from __future__ import annotations

import errno
import os
import socket
import stat
import sys
from typing import Any, Dict, Set, Union

from . import addresses, tlssocket
from .datagram import DatagramSocket
from .fdstream import FdStream
from .listener import Factory, Listener
from .socket import Socket

# -- listen / connect ---------------------------------------------------------------------------

_TLS_OPTS = {"ssl_context", "ssl_handshake_timeout"}
_LISTEN_OPTS = {"backlog", "reuse_port", "max_connections", "accept_per_pass", "nodelay", "reject", "emfile_pause",
                "certfile", "keyfile", "proxy_protocol", "proxy_timeout",
                "shed_threshold", "shed_policy"} | _TLS_OPTS
_CONNECT_OPTS = {"timeout", "nodelay", "server_hostname"} | _TLS_OPTS


def _check_opts(kind: str, given: Dict[str, Any], allowed: Set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise TypeError(f"danga.{kind}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")


def listen(url: addresses.Where, factory: Factory, **options: Any) -> Socket:
    """Listen on ``url`` and hand each connection to ``factory(sock)``.

    Stream URLs (``tcp``, ``local``, ``fd`` of a listening socket) return a
    ``Listener``.  Datagram URLs (``udp``, ``local:...?type=dgram``) and
    ``fifo`` return ``factory(sock)`` itself, bound and reading: there is
    nothing to accept.  Options: backlog (1024), reuse_port, max_connections,
    accept_per_pass (64), nodelay (True), reject, emfile_pause (0.25 s),
    proxy_protocol (False: True reads a PROXY protocol v1/v2 header from
    each connection first, within proxy_timeout, 5 s), shed_threshold (0.9
    of the descriptor limit) and shed_policy (see ``Listener`` and
    danga/shedding.py).

    TLS: ``tls://`` URLs (or ``ssl_context=`` on any stream URL) hand each
    connection to the factory with its handshake pending; the object hears
    nothing until it completes (``ssl_handshake_completed()``).  Give
    ``ssl_context`` (an ``ssl.SSLContext``) or ``certfile``/``keyfile``;
    ``ssl_handshake_timeout`` (seconds; the class's attribute, 30 s, if not
    given) closes a client that does not finish in time."""
    _check_opts("listen", options, _LISTEN_OPTS)
    addresses.require_posix(url)
    addr = addresses.parse(url)
    factory = _tls_listening(addr, factory, options)
    backlog = int(options.pop("backlog", 1024))
    reuse_port = options.pop("reuse_port", False)
    if addr.scheme == "anon":
        raise ValueError(f"danga: {url!r} has no listening side; danga.connect('anon:', Class) returns both ends")
    if addr.scheme == "fifo":
        path = addr.target
        _ensure_fifo(path, addr.url)
        # O_RDWR keeps a writer reference of our own, so the reader never
        # sees EOF between writers: the FIFO serves whoever opens it next.
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        obj = factory(FdStream(fd))
        obj.watch_read(True)
        return obj
    if addr.scheme == "fd":
        sock = _wrap_fd(addr.target)
        if isinstance(sock, socket.socket) and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return Listener(sock, factory, **options)
        obj = factory(sock)
        obj.watch_read(True)
        return obj
    unlink = None
    family: int
    if addr.family == addresses.AF_UNIX:
        family, target = addresses.AF_UNIX, addr.target
        if isinstance(target, str):
            _remove_stale_socket(target)
            unlink = target
    else:
        family, target = addresses.resolve(addr, passive=True)
    sock = socket.socket(family, addr.type)
    try:
        if sys.platform == "win32":  # SO_REUSEADDR there lets another socket take a port in use
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        elif family != addresses.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        addresses.bind(sock, target, addr)
        if addr.type == socket.SOCK_STREAM:
            sock.listen(backlog)
            return Listener(sock, factory, unlink=unlink, **options)
        if options:
            raise TypeError(f"danga.listen: {', '.join(sorted(options))} apply to stream listeners only")
        obj = factory(sock)
    except BaseException:
        sock.close()
        raise
    obj.watch_read(True)
    return obj


def connect(url: addresses.Where, factory: Factory, **options: Any) -> Any:
    """Connect to ``url`` without blocking; returns ``factory(sock)`` at once.

    The object's ``event_connected()`` runs when the connection is up and
    ``event_connect_failed(errno_name)`` if it fails (then it is closed);
    writes made before that are queued.  ``timeout`` (seconds) bounds the
    connect.  ``anon:`` returns both ends of an in-process pair as a tuple.
    Host names are resolved before returning (a blocking lookup).

    TLS: ``tls://`` URLs (or ``ssl_context=``) run a handshake after the
    connect, and ``event_connected()`` follows it.  Without ``ssl_context``
    the peer is verified against the system's roots; ``server_hostname``
    (the URL's host by default) is sent for SNI and checked against the
    certificate.  A failed handshake calls ``event_connect_failed("tls: ...")``
    and closes with that reason; ``ssl_handshake_timeout`` bounds it."""
    _check_opts("connect", options, _CONNECT_OPTS)
    addresses.require_posix(url)
    addr = addresses.parse(url)
    tls_ctx = options.pop("ssl_context", None)
    tls_timeout = options.pop("ssl_handshake_timeout", None)
    hostname = options.pop("server_hostname", None)
    if addr.scheme.startswith("tls") and tls_ctx is None:
        tls_ctx = tlssocket.make_context(None, False)
    if tls_ctx is not None and hostname is None and isinstance(addr.target, tuple):
        hostname = addr.target[0]
    timeout = options.get("timeout")
    if addr.scheme == "anon":
        if addr.option("type") == "pipe":
            r, w = os.pipe2(os.O_CLOEXEC) if hasattr(os, "pipe2") else os.pipe()
            return factory(FdStream(r)), factory(FdStream(w))
        a, b = socket.socketpair()
        return factory(a), factory(b)
    if addr.scheme == "fifo":
        _ensure_fifo(addr.target, addr.url)
        try:
            fd = os.open(addr.target, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ENXIO:
                raise OSError(e.errno, f"danga: nobody is reading {addr.url!r} yet (ENXIO)") from None
            raise
        return factory(FdStream(fd))
    if addr.scheme == "fd":
        return factory(_wrap_fd(addr.target))
    family: int
    if addr.family == addresses.AF_UNIX:
        family, target = addresses.AF_UNIX, addr.target
    else:
        family, target = addresses.resolve(addr, passive=False)
    sock = socket.socket(family, addr.type)
    try:
        sock.setblocking(False)
        if addr.type == socket.SOCK_STREAM and family != addresses.AF_UNIX and options.get("nodelay", True):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(target)
        stream = tlssocket.wrapped(sock, tls_ctx, False, hostname) if tls_ctx is not None else None
        obj = factory(stream or sock)
    except BaseException:
        sock.close()
        raise
    obj.begin_connect(timeout, err)
    if stream is not None:
        tlssocket.begin(obj, stream, tls_timeout)
    return obj


def _tls_listening(addr: addresses.Address, factory: Factory, options: Dict[str, Any]) -> Factory:
    """The factory a TLS listener hands accepted sockets to (``factory``
    itself when there is no TLS); pops the TLS options."""
    ctx = options.pop("ssl_context", None)
    certfile = options.pop("certfile", None)
    keyfile = options.pop("keyfile", None)
    timeout = options.pop("ssl_handshake_timeout", None)
    if ctx is None and certfile is None:
        if addr.scheme.startswith("tls"):
            raise ValueError(f"danga.listen({addr.url!r}): a TLS listener needs ssl_context= or certfile= "
                             "(and keyfile=)")
        if keyfile is not None:
            raise ValueError("danga.listen: keyfile= needs certfile=")
        return factory
    if addr.type != socket.SOCK_STREAM:
        raise ValueError(f"danga.listen({addr.url!r}): TLS needs a stream URL")
    ctx = tlssocket.make_context(ctx, True, certfile, keyfile)
    if not callable(factory):
        raise TypeError(f"danga: a listener needs a Socket class or factory, got {factory!r}")

    def tls_factory(raw: socket.socket) -> Socket:
        stream = tlssocket.wrapped(raw, ctx, True)
        obj = factory(stream)
        tlssocket.begin(obj, stream, timeout)
        return obj

    tls_factory.__qualname__ = f"tls({getattr(factory, '__qualname__', factory)!s})"
    return tls_factory


def _ensure_fifo(path: str, url: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        os.mkfifo(path, 0o600)
        return
    if not stat.S_ISFIFO(st.st_mode):
        raise ValueError(f"danga: {url!r}: {path} exists and is not a FIFO")


def _remove_stale_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _wrap_fd(fd: int) -> Union[socket.socket, FdStream]:
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        raise OSError(e.errno, f"danga: fd://{fd}: {e.strerror}") from None
    if stat.S_ISSOCK(mode):
        return socket.socket(fileno=fd)
    return FdStream(fd)


__all__ = ["listen", "connect", "Listener", "DatagramSocket"]
