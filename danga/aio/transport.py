"""asyncio stream transports built on ``danga.Socket`` and its write path.

Every TCP and Unix stream connection that the danga.aio loop makes
(``create_connection``, ``create_server``, ``create_unix_*``,
``connect_accepted_socket``, and so asyncio's streams) gets a
``SocketTransport`` instead of asyncio's own selector transport: the
connection is a danga Socket (``_ProtocolSocket``) whose ``event_read``
hands each chunk straight to ``protocol.data_received`` in the danga pass
(no asyncio Handle, no selector key), and whose writes go through danga's
write path, so they get its protections: the hard output limit
(``write_buffer_limit``: a peer that never reads cannot grow the process;
the transport is closed and ``connection_lost`` gets an error), no busy
loop on a condition nobody clears, and the deferred close of a descriptor
within a batch.  Flow control is danga's high/low water marks, reported as
``pause_writing``/``resume_writing``.

The protocol callbacks keep asyncio's order and rules: ``connection_made``
first (through ``call_soon``, then reading starts), ``data_received`` /
``eof_received`` (a false return closes), ``connection_lost`` exactly once,
through ``call_soon``, after the socket is closed.  An exception from a
protocol callback goes to the loop's exception handler and aborts the
connection, as asyncio's transports do.
"""
from __future__ import annotations

import asyncio
import inspect
from asyncio import trsock
import socket
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from ..socket import Socket

if TYPE_CHECKING:
    from .eventloop import DangaEventLoop

# What one read asks the kernel for.  Not asyncio's 256 KiB: recv(262144) made the
# server's CPU per 64 B echoed message 4.4x the C floor (glibc maps, shrinks and unmaps a
# 256 KiB block for every read), recv(65536) 1.27x, same run (bench/run.py, 64B).  A size
# growing to 1 MiB while reads come back full bought nothing measurable at 1 MiB.
_MAX_READ = 64 * 1024


def _set_nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM \
            and sock.proto == socket.IPPROTO_TCP:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _ProtocolSocket(Socket):
    """The danga side of a ``SocketTransport``: events go to the transport."""

    # a __dict__ (no __slots__): set_write_buffer_limits sets the water marks per socket
    write_buffer_limit: Optional[int] = 64 * 1024 * 1024

    def __init__(self, sock: socket.socket, transport: "SocketTransport") -> None:
        self.transport = transport
        self.deliver: Callable[[bytes], object] = transport._fill_buffers
        super().__init__(sock)

    def event_read(self) -> None:
        data = self.read(_MAX_READ)
        if data:
            self._hand_over(data)
        elif data is None:
            self.transport._eof()

    def _hand_over(self, data: bytes) -> None:
        try:
            self.deliver(data)  # the protocol's data_received (see SocketTransport._set_deliver)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.transport._fatal(exc, "data_received() raised")

    def event_hup(self) -> None:
        # Both directions are shut, yet data may still wait in the kernel, and a hang-up is
        # reported even while reading is paused: hand over what is left (at most the socket's
        # receive buffer, even to a paused protocol) and the EOF, then close.  Closing at once
        # lost the tail of a transfer whose reader had paused (asyncio's own transports read
        # a hang-up as readable).
        while not self.closed:
            data = self.read(_MAX_READ)
            if not data:
                if data is None:
                    self.transport._eof()
                break
            self._hand_over(data)
        self.close("event_hup")

    def event_err(self) -> None:
        self.close("event_err")

    def event_write_paused(self) -> None:
        self.transport._pause_writing()

    def event_write_resumed(self) -> None:
        self.transport._resume_writing()


class SocketTransport(asyncio.Transport):
    """An ``asyncio.Transport`` over a danga Socket (see the module notes)."""

    _start_tls_compatible = True  # asyncio's start_tls() may wrap it

    def __init__(self, loop: "DangaEventLoop", sock: socket.socket, protocol: asyncio.BaseProtocol,
                 waiter: Optional["asyncio.Future[None]"] = None, extra: Optional[Dict[str, Any]] = None,
                 server: Any = None) -> None:
        super().__init__(extra)
        self._extra: Dict[str, Any]
        self._loop = loop
        self._protocol = protocol
        self._server = server
        self._closing = False
        self._lost = False
        self._paused = False  # protocol.pause_writing() was called
        self._reading_paused = False
        self._eof_sent = False
        extra_info = self._extra
        extra_info["socket"] = trsock.TransportSocket(sock)
        try:
            extra_info["sockname"] = sock.getsockname()
        except OSError:
            extra_info["sockname"] = None
        if "peername" not in extra_info:
            try:
                extra_info["peername"] = sock.getpeername()
            except OSError:
                extra_info["peername"] = None
        _set_nodelay(sock)
        self._dsock = _ProtocolSocket(sock, self)
        self._set_deliver()
        self._dsock.add_close_watcher(self._socket_closed)
        if server is not None:
            _attach(server, self)
        loop.call_soon(self._start, waiter)

    def _start(self, waiter: Optional["asyncio.Future[None]"]) -> None:
        # connection_made always comes first, even for a connection already
        # lost (a reset reported before this ran): its connection_lost was
        # scheduled after this call
        try:
            self._protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "connection_made() raised")
        if not self._closing and not self._reading_paused:
            self._dsock.watch_read(True)
        if waiter is not None and not waiter.cancelled():
            waiter.set_result(None)

    # -- events from the danga socket ------------------------------------------

    def _set_deliver(self) -> None:
        """What the danga socket's event_read calls with each chunk: the
        protocol's own data_received, bound once (the hot path), or the copy
        into a BufferedProtocol's buffers."""
        protocol: Any = self._protocol
        if isinstance(protocol, asyncio.BufferedProtocol):
            self._dsock.deliver = self._fill_buffers
        else:
            self._dsock.deliver = protocol.data_received

    def _fill_buffers(self, data: bytes) -> None:
        """A BufferedProtocol (asyncio's TLS layer is one): copy into its buffers."""
        protocol: Any = self._protocol
        view = memoryview(data)
        while view:
            buf = memoryview(protocol.get_buffer(len(view))).cast("B")
            n = min(len(buf), len(view))
            if not n:
                raise RuntimeError("get_buffer() returned an empty buffer")
            buf[:n] = view[:n]
            protocol.buffer_updated(n)
            view = view[n:]
            if self._closing:
                return

    def _eof(self) -> None:
        err = self._dsock.read_error
        if err is not None:
            self._dsock.close(f"read error: {err}")
            return
        self._dsock.watch_read(False)  # EOF stays readable: don't hear it again
        try:
            keep_open = self._protocol.eof_received()  # type: ignore[attr-defined]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal(exc, "eof_received() raised")
            return
        if not keep_open:
            self.close()

    def _pause_writing(self) -> None:
        if not self._paused:
            self._paused = True
            try:
                self._protocol.pause_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler({"message": "protocol.pause_writing() failed",
                                                   "exception": exc, "transport": self, "protocol": self._protocol})

    def _resume_writing(self) -> None:
        if self._paused:
            self._paused = False
            try:
                self._protocol.resume_writing()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler({"message": "protocol.resume_writing() failed",
                                                   "exception": exc, "transport": self, "protocol": self._protocol})

    def _socket_closed(self, dsock: Socket, reason: str) -> None:
        self._closing = True
        if self._lost:
            return
        self._lost = True
        exc: Optional[Exception] = None
        if dsock.read_error is not None:
            exc = ConnectionResetError(f"danga.aio: {dsock.read_error}")
        elif reason in ("write_buffer_limit", "send_timeout"):
            exc = ConnectionError(f"danga.aio: the connection was closed: {reason} "
                                  f"({dsock.unsent} bytes unsent)")
        elif reason.startswith("exception") or reason in ("event_err",):
            exc = ConnectionError(f"danga.aio: the connection was closed: {reason}")
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Optional[Exception]) -> None:
        try:
            self._protocol.connection_lost(exc)
        finally:
            server, self._server = self._server, None
            if server is not None:
                _detach(server, self)

    def _fatal(self, exc: BaseException, message: str) -> None:
        if not isinstance(exc, OSError):
            self._loop.call_exception_handler({"message": f"danga.aio: fatal error on transport: {message}",
                                               "exception": exc, "transport": self, "protocol": self._protocol})
        self.abort()

    @property
    def danga_socket(self) -> Socket:
        """The danga Socket under this transport (its ``write_buffer_limit``,
        ``send_timeout``, ``max_idle_time`` and water marks apply)."""
        return self._dsock

    # -- asyncio.Transport ---------------------------------------------------------

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._set_deliver()

    def is_closing(self) -> bool:
        return self._closing

    def is_reading(self) -> bool:
        return not self._closing and not self._reading_paused

    def pause_reading(self) -> None:
        if self._closing or self._reading_paused:
            return
        self._reading_paused = True
        self._dsock.watch_read(False)

    def resume_reading(self) -> None:
        if self._closing or not self._reading_paused:
            return
        self._reading_paused = False
        if not self._dsock.closed:
            self._dsock.watch_read(True)

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._dsock.write_high_water = high
        self._dsock.write_low_water = low
        size = self.get_write_buffer_size()
        if size > high:
            self._pause_writing()
        elif size <= low:
            self._resume_writing()

    def get_write_buffer_limits(self) -> Tuple[int, int]:
        return self._dsock.write_low_water, self._dsock.write_high_water

    def get_write_buffer_size(self) -> int:
        return self._dsock.write_buf_size

    def write(self, data: Any) -> None:
        if type(data) is not bytes and not isinstance(data, (bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, not {type(data).__name__!r}")
        if self._closing or self._eof_sent:
            if self._eof_sent:
                raise RuntimeError("Cannot call write() after write_eof()")
            return
        if data:
            self._dsock.write(data)

    def writelines(self, list_of_data: Any) -> None:
        if self._eof_sent:
            raise RuntimeError("Cannot call writelines() after write_eof()")
        if self._closing:
            return
        self._dsock.writelines([bytes(d) if not isinstance(d, (bytes, bytearray, memoryview)) else d
                                for d in list_of_data])

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof_sent:
            return
        self._eof_sent = True
        dsock = self._dsock

        def shut() -> None:
            if dsock.sock is not None:
                try:
                    dsock.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        if dsock.write_buf_size:
            dsock.write(shut)  # after what is queued
        else:
            shut()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        dsock = self._dsock
        dsock.watch_read(False)
        if dsock.write_buf_size:
            dsock.write(lambda: dsock.close("transport closed"))  # once what is queued is out
        else:
            dsock.close("transport closed")

    def abort(self) -> None:
        self._closing = True
        self._dsock.close("transport aborted")

    def _force_close(self, exc: Optional[BaseException]) -> None:
        """What asyncio's TLS layer calls on a fatal error: abort."""
        self.abort()


_TAKES_TRANSPORT: Dict[type, bool] = {}


def _takes_transport(server: Any) -> bool:
    cls = type(server)
    known = _TAKES_TRANSPORT.get(cls)
    if known is None:
        try:
            known = len(inspect.signature(server._attach).parameters) >= 1
        except (TypeError, ValueError):
            known = False
        _TAKES_TRANSPORT[cls] = known
    return known


def _attach(server: Any, transport: SocketTransport) -> None:
    if _takes_transport(server):  # 3.12 and later keep the server's transports
        server._attach(transport)
    else:
        server._attach()


def _detach(server: Any, transport: SocketTransport) -> None:
    if _takes_transport(server):
        server._detach(transport)
    else:
        server._detach()
