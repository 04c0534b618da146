"""``listen()`` and ``connect()`` by URL, the listener, and datagram sockets.

A listener is an ordinary ``Socket`` whose ``event_read`` accepts.  It
accepts at most ``accept_per_pass`` connections each time it is readable, so
one busy listener cannot starve the other sockets of the pass.

Running out of descriptors
--------------------------
When ``accept`` fails with EMFILE/ENFILE the pending connection stays in the
kernel's backlog, the listener stays readable, and a level-triggered loop
would spin on it.  Listeners therefore share one reserve descriptor (opened
with the first listener, closed with the last): on EMFILE the listener
releases it, accepts the pending connection and closes it at once (the client
sees a prompt close, not a hang), takes the reserve back, and stops accepting
for ``emfile_pause`` seconds.  Existing connections are served throughout.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections import deque
from typing import Any, Callable, Optional, Set, Tuple, Union

from . import addresses
from . import loop as _loop
from .fdstream import FdStream
from .socket import Socket

log = logging.getLogger("danga")

Factory = Callable[[Any], Socket]

_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_reserve = {"fd": -1, "users": 0}


def _take_reserve() -> None:
    if _reserve["users"] == 0:
        _reserve["fd"] = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    _reserve["users"] += 1


def _drop_reserve() -> None:
    _reserve["users"] -= 1
    if _reserve["users"] == 0 and _reserve["fd"] >= 0:
        os.close(_reserve["fd"])
        _reserve["fd"] = -1


class Listener(Socket):
    """A listening stream socket that accepts into ``factory(sock)``.

    * ``max_connections``: at most this many accepted connections open at
      once; beyond it a new connection is accepted and closed at once (after
      ``reject``, bytes to send it first, if given), so the client learns
      promptly instead of waiting in the backlog.  None: no limit.
    * ``accept_per_pass``: accepts per readable event (fairness).
    * ``nodelay``: set TCP_NODELAY on accepted TCP connections.
    * ``emfile_pause``: seconds to stop accepting after running out of fds.
    """

    def __init__(self, sock: socket.socket, factory: Factory, *, max_connections: Optional[int] = None,
                 accept_per_pass: int = 64, nodelay: bool = True, reject: Optional[bytes] = None,
                 emfile_pause: float = 0.25, unlink: Optional[str] = None) -> None:
        if not callable(factory):
            raise TypeError(f"danga: a listener needs a Socket class or factory, got {factory!r}")
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"danga: max_connections must be >= 1 or None, got {max_connections}")
        super().__init__(sock)
        self.factory = factory
        self.max_connections = max_connections
        self.accept_per_pass = max(1, int(accept_per_pass))
        self.nodelay = nodelay and sock.family in (socket.AF_INET, socket.AF_INET6)
        self.reject = reject
        self.emfile_pause = emfile_pause
        self.accepted = 0  # connections handed to the factory
        self.rejected = 0  # connections closed at once for max_connections
        self.dropped = 0  # connections closed at once for lack of descriptors
        self._children: Set[Socket] = set()
        self._unlink = unlink
        self._paused = False
        _take_reserve()
        self.watch_read(True)

    @property
    def port(self) -> int:
        """The bound port (for ``tcp://host:0``)."""
        return self.sock.getsockname()[1]

    @property
    def connections(self) -> int:
        """Open connections accepted by this listener (counted when limited)."""
        self._children = {c for c in self._children if not c.closed}
        return len(self._children)

    def event_read(self) -> None:
        sock = self.sock
        limit = self.max_connections
        for _ in range(self.accept_per_pass):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _OUT_OF_FDS:
                    self._out_of_descriptors(e)
                    return
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # that client gave up or was filtered; the next may be fine
                log.warning("danga: accept on %s failed: %s", self.local_addr_string(), e)
                return
            if limit is not None and len(self._children) >= limit and self.connections >= limit:
                self.rejected += 1
                if self.reject:
                    try:
                        conn.send(self.reject)
                    except OSError:
                        pass
                conn.close()
                continue
            if self.nodelay:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                obj = self.factory(conn)
            except Exception as exc:
                conn.close()
                _loop._current._callback_failed(None, exc, f"connection factory {self.factory!r}")
                continue
            self.accepted += 1
            if limit is not None:
                self._children.add(obj)
            if self.closed:
                return

    def _out_of_descriptors(self, e: OSError) -> None:
        log.warning("danga: %s: accept failed (%s); dropping a pending connection and pausing %.2fs",
                    self.local_addr_string(), errno.errorcode.get(e.errno or 0, e), self.emfile_pause)
        if _reserve["fd"] >= 0:
            os.close(_reserve["fd"])
            _reserve["fd"] = -1
            try:
                conn, _ = self.sock.accept()
                conn.close()
                self.dropped += 1
            except OSError:
                pass
            try:
                _reserve["fd"] = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass  # retried at the next shortage
        self.pause_accepting(self.emfile_pause)

    def pause_accepting(self, seconds: Optional[float] = None) -> None:
        """Stop accepting; resume after ``seconds`` (or at ``resume_accepting()``)."""
        if self.closed or self._paused:
            return
        self._paused = True
        self.watch_read(False)
        if seconds is not None:
            _loop._current.add_timer(seconds, self.resume_accepting)

    def resume_accepting(self) -> None:
        if self.closed or not self._paused:
            return
        self._paused = False
        self.watch_read(True)

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        super().close(reason)
        _drop_reserve()
        if self._unlink:
            try:
                os.unlink(self._unlink)
            except OSError:
                pass


class DatagramSocket(Socket):
    """A datagram socket: ``write`` sends one datagram (queued ones too, one
    per send), ``read`` returns one datagram, ``send_to``/``read_from`` work
    with addresses on an unconnected socket.  A zero-length datagram reads
    as ``b""``, the same as "nothing now"."""

    def read(self, n: int = 65535) -> Optional[bytes]:
        if self.closed:
            return None
        try:
            return self.sock.recv(n)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as e:
            self._extras().read_error = errno.errorcode.get(e.errno or 0, "read_error")
            return None

    def read_from(self, n: int = 65535) -> Optional[Tuple[bytes, Any]]:
        """One datagram and its sender, ``(b"", None)`` when none is waiting,
        None when closed or on an error."""
        if self.closed:
            return None
        try:
            return self.sock.recvfrom(n)
        except (BlockingIOError, InterruptedError):
            return b"", None
        except OSError as e:
            self._extras().read_error = errno.errorcode.get(e.errno or 0, "read_error")
            return None

    def send_to(self, data: Union[bytes, bytearray, memoryview], addr: Any) -> bool:
        """Send one datagram to ``addr``; queued (in order) if the socket is
        full.  Returns True if sent now."""
        if self.closed:
            return True
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"danga: send_to takes bytes, not {type(data).__name__}")
        if self._wq is None:
            try:
                self.sock.sendto(data, addr)
                return True
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                return self._write_failed(e, len(data))
            self._wq = deque()
            self._wq.append(_To(bytes(data), addr))
            self.write_buf_size = len(data)
            self.on_incomplete_write()
            return False
        return self._enqueue(_To(bytes(data), addr))

    def _enqueue(self, data: Any) -> bool:
        if data.__class__ is _To:
            self._wq.append(data)
            self.write_buf_size += len(data.data)
            if self.write_buf_size > self.write_high_water:
                self._over_limits()
            return False
        return super()._enqueue(data)

    def _flush(self) -> bool:
        """Send queued datagrams one per syscall (never gathered)."""
        wq = self._wq
        sock = self.sock
        while wq:
            item = wq[0]
            cls = item.__class__
            try:
                if cls is _To:
                    sock.sendto(item.data, item.addr)
                    size = len(item.data)
                elif cls is bytes or cls is memoryview:
                    sock.send(item)
                    size = len(item)
                else:
                    wq.popleft()
                    self.write_buf_size -= 1
                    item()
                    if self.closed:
                        return True
                    continue
            except (BlockingIOError, InterruptedError):
                self.on_incomplete_write()
                return False
            except OSError as e:
                return self._write_failed(e, self.write_buf_size)
            wq.popleft()
            self.write_buf_size -= size
        return super()._flush()  # empty: resets the queue, the pause state and write interest


class _To:
    """A queued datagram with its destination."""

    __slots__ = ("data", "addr")

    def __init__(self, data: bytes, addr: Any) -> None:
        self.data, self.addr = data, addr


# -- listen / connect ---------------------------------------------------------------------------

_LISTEN_OPTS = {"backlog", "reuse_port", "max_connections", "accept_per_pass", "nodelay", "reject", "emfile_pause"}
_CONNECT_OPTS = {"timeout", "nodelay"}


def _check_opts(kind: str, given: dict, allowed: set) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise TypeError(f"danga.{kind}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")


def listen(url: str, factory: Factory, **options: Any) -> Socket:
    """Listen on ``url`` and hand each connection to ``factory(sock)``.

    Stream URLs (``tcp``, ``local``, ``fd`` of a listening socket) return a
    ``Listener``.  Datagram URLs (``udp``, ``local:...?type=dgram``) and
    ``fifo`` return ``factory(sock)`` itself, bound and reading: there is
    nothing to accept.  Options: backlog (1024), reuse_port, max_connections,
    accept_per_pass (64), nodelay (True), reject, emfile_pause (0.25 s)."""
    _check_opts("listen", options, _LISTEN_OPTS)
    addr = addresses.parse(url)
    backlog = int(options.pop("backlog", 1024))
    reuse_port = options.pop("reuse_port", False)
    if addr.scheme == "anon":
        raise ValueError(f"danga: {url!r} has no listening side; danga.connect('anon:', Class) returns both ends")
    if addr.scheme == "fifo":
        path = addr.target
        _ensure_fifo(path, url)
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
    if addr.family == socket.AF_UNIX:
        family, target = socket.AF_UNIX, addr.target
        if isinstance(target, str):
            _remove_stale_socket(target)
            unlink = target
    else:
        family, target = addresses.resolve(addr, passive=True)
    sock = socket.socket(family, addr.type)
    try:
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(target)
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


def connect(url: str, factory: Factory, **options: Any) -> Any:
    """Connect to ``url`` without blocking; returns ``factory(sock)`` at once.

    The object's ``event_connected()`` runs when the connection is up and
    ``event_connect_failed(errno_name)`` if it fails (then it is closed);
    writes made before that are queued.  ``timeout`` (seconds) bounds the
    connect.  ``anon:`` returns both ends of an in-process pair as a tuple.
    Host names are resolved before returning (a blocking lookup)."""
    _check_opts("connect", options, _CONNECT_OPTS)
    addr = addresses.parse(url)
    timeout = options.get("timeout")
    if addr.scheme == "anon":
        if addr.option("type") == "pipe":
            r, w = os.pipe2(os.O_CLOEXEC) if hasattr(os, "pipe2") else os.pipe()
            return factory(FdStream(r)), factory(FdStream(w))
        a, b = socket.socketpair()
        return factory(a), factory(b)
    if addr.scheme == "fifo":
        _ensure_fifo(addr.target, url)
        try:
            fd = os.open(addr.target, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ENXIO:
                raise OSError(e.errno, f"danga: nobody is reading {url!r} yet (ENXIO)") from None
            raise
        return factory(FdStream(fd))
    if addr.scheme == "fd":
        return factory(_wrap_fd(addr.target))
    family: int
    if addr.family == socket.AF_UNIX:
        family, target = socket.AF_UNIX, addr.target
    else:
        family, target = addresses.resolve(addr, passive=False)
    sock = socket.socket(family, addr.type)
    try:
        sock.setblocking(False)
        if addr.type == socket.SOCK_STREAM and family != socket.AF_UNIX and options.get("nodelay", True):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(target)
        obj = factory(sock)
    except BaseException:
        sock.close()
        raise
    obj._begin_connect(timeout)
    if err not in (0, errno.EINPROGRESS):
        name = errno.errorcode.get(err, str(err))
        _loop._current.add_timer(0, lambda: obj._connect_failed(name) if obj.connecting else None)
    return obj


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
