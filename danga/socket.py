"""``danga.Socket``: the base class a daemon subclasses, as in Danga::Socket.

A Socket wraps one non-blocking socket registered with the loop.  Subclasses
override ``event_read`` (and ``event_hup``/``event_err``, whose defaults close
the socket), call ``read()`` and ``write()``, and switch interest with
``watch_read()``/``watch_write()``.

The write path
--------------
``write()`` tries ``send`` at once when nothing is queued, so the common case
(a small reply to a socket with room in its buffer) costs one syscall and no
allocation.  Only the part the kernel did not take is queued: a memoryview
slice of a ``bytes`` object (no copy), or a copy of a ``bytearray`` or
``memoryview`` (which the caller may change later).  A backlog is flushed
with one ``sendmsg`` of up to IOV_MAX buffers (and about 1 MiB).  Callables in the queue run
once everything queued before them has been sent.  While data is queued the
library watches for writability itself and stops once the queue is empty.

Memory
------
``__slots__`` and no per-socket receive buffer: an idle connection costs the
object and its socket.  State that most sockets never use (pushed-back data,
a deadline, the close reason, cached addresses) lives in a small side object
made on first use.  ``read()`` and ``write()`` each test one slot to take
their fast path (``_pb`` and ``_wq`` are None only while the socket is open
with nothing pushed back, nothing queued).
"""
from __future__ import annotations

import errno
import logging
import socket as _socket
from collections import deque
from time import monotonic
from typing import Any, Callable, Optional, Union

from . import loop as _loop
from .pollers import ERR, HUP, READ, WRITE
from .timers import Timer

log = logging.getLogger("danga")

MAX_READ = 1 << 20  # one read() returns at most this much (the buffer is allocated up front)
IOV_MAX = 1024  # buffers per sendmsg
# Bytes gathered into one sendmsg: enough to fill a socket buffer; more only
# makes the kernel import and walk a longer iovec for data it cannot take.
GATHER_BYTES = 1 << 20

# _state bits
_EOF = 1  # read() has seen EOF or a read error
_AUTO_WRITE = 2  # the library, not the user, turned write interest on
_PAUSED = 8  # event_write_paused() was called, event_write_resumed() not yet
_CONNECTING = 16  # a non-blocking connect is in progress
_LINGER = 32  # closed for the user, still flushing after the peer's EOF

_CLOSED: Any = ()  # the write queue of a closed socket: not None, so write() leaves its fast path

Writable = Union[bytes, bytearray, memoryview, Callable[[], Any], None]


class _Extras:
    """Per-socket state that most sockets never need."""

    __slots__ = ("deadline", "close_reason", "unsent", "idle_since", "corked", "peer", "local",
                 "read_error", "on_close", "connect_timer")

    def __init__(self) -> None:
        self.on_close: Optional[list] = None
        self.connect_timer: Optional[Timer] = None
        self.deadline: Optional[Timer] = None
        self.close_reason: Optional[str] = None
        self.unsent = 0
        self.idle_since = 0.0
        self.corked = False
        self.peer: Any = None
        self.local: Any = None
        self.read_error: Optional[str] = None


class Socket:
    """An event-driven, non-blocking socket registered with the loop.

    ``Socket(sock)`` makes ``sock`` non-blocking and registers it.  Neither
    reading nor writing is watched until you ask (``watch_read(True)``);
    errors and hang-ups are always reported.

    Class attributes a subclass may override:

    * ``flush_on_eof_close``/``close_linger``: after the peer half-closed,
      ``close()`` still sends what is queued, for up to ``close_linger``
      seconds (True / 30 s); see ``close()``.
    * ``max_idle_time``: seconds without data moving before the socket is
      closed with reason ``"idle_timeout"`` (0, the default, never).
    * ``write_high_water``/``write_low_water``: queued bytes above which
      ``event_write_paused()`` is called, and at or below which
      ``event_write_resumed()`` follows (64 KiB / 16 KiB).
    * ``write_buffer_limit``: queued bytes beyond which the socket is closed
      with reason ``"write_buffer_limit"`` (64 MiB; None for no limit).  A
      peer that never reads cannot grow the process without bound.
    """

    __slots__ = ("sock", "fd", "closed", "write_buf_size", "_mask", "_wq", "_state", "_active", "_pb", "_x", "__weakref__")

    max_idle_time: float = 0
    write_high_water: int = 64 * 1024
    write_low_water: int = 16 * 1024
    write_buffer_limit: Optional[int] = 64 * 1024 * 1024
    flush_on_eof_close: bool = True
    close_linger: float = 30.0

    def __init__(self, sock: _socket.socket) -> None:
        try:
            fd = sock.fileno()
        except AttributeError:
            raise TypeError(f"danga.Socket wraps a socket object, got {type(sock).__name__}") from None
        if fd < 0:
            raise ValueError("danga.Socket was given a closed socket")
        sock.setblocking(False)
        self.sock: Any = sock  # a socket.socket, or an FdStream for pipes; None once closed
        self.fd = fd
        self.closed = False
        self.write_buf_size = 0
        self._mask = 0
        self._wq: Any = None  # None, a deque of queued items, or _CLOSED
        self._state = 0
        self._active = False  # data moved since the last idle sweep
        self._pb: Any = None  # pushed-back bytes; b"" once closed
        self._x: Optional[_Extras] = None
        loop = _loop._current
        loop._add(self)
        if self.max_idle_time:
            self._extras().idle_since = monotonic()  # not loop.now: that is when the pass began
            loop._track_idle(self)

    def _extras(self) -> _Extras:
        x = self._x
        if x is None:
            x = self._x = _Extras()
        return x

    # -- reading ------------------------------------------------------------------

    def read(self, n: int) -> Optional[bytes]:
        """Read up to ``n`` bytes (at most 1 MiB per call).

        Returns the data; ``b""`` when nothing is available now; ``None`` at
        EOF, on an error, or when the socket is closed.  Pushed-back data is
        returned first, and never mixed with data from the socket."""
        # Fast path: _pb is None only while the socket is open with nothing
        # pushed back (close() sets it to b"").
        if self._pb is None and n.__class__ is int and 0 < n <= MAX_READ:
            try:
                data = self.sock.recv(n)
            except (BlockingIOError, InterruptedError):
                return b""
            except OSError as e:
                return self._read_failed(e)
            if data:
                self._active = True
                return data
            self._state |= _EOF
            return None
        return self._read_slow(n)

    def _read_slow(self, n: int) -> Optional[bytes]:
        if self.closed:
            return None
        n = _check_count(n)
        if self._pb:
            return self._read_push_back(n)
        return self.read(n)  # a valid count, nothing pushed back: the fast path

    def _read_failed(self, e: OSError) -> Optional[bytes]:
        self._state |= _EOF
        self._extras().read_error = errno.errorcode.get(e.errno or 0, "read_error")
        return None

    def _read_push_back(self, n: int) -> bytes:
        data = self._pb
        if len(data) <= n:
            self._pb = None
            return data
        self._pb = data[n:]
        return data[:n]

    def push_back_read(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Give back bytes that were read but not used: the next ``read()``
        returns them (before any data still in the socket), and they are
        delivered through ``event_read`` at the end of this pass while
        reading is watched."""
        if self.closed:
            return
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"danga: push_back_read takes bytes, got {type(data).__name__}")
        if not data:
            return
        self._pb = bytes(data) + (self._pb or b"")
        _loop._current._want_push_back(self)

    def _push_back_len(self) -> int:
        return len(self._pb) if self._pb else 0

    # -- writing --------------------------------------------------------------------

    def write(self, data: Writable) -> bool:
        """Send ``data`` now, or queue what cannot be sent yet.

        ``data`` is ``bytes``, ``bytearray`` or ``memoryview`` (copied if it
        must be queued), a callable (run once everything written before it
        has been sent), or ``None`` (flush the queue).

        Returns True when everything is sent, False when some is queued or
        the socket was closed by a write error (check ``closed``).  On a
        closed socket it sends nothing and returns True, as Danga::Socket
        did.  Queued bytes that can never be sent are reported through
        ``close()``: its reason, and ``unsent``."""
        # Fast path: nothing queued (and open: close() sets _wq to ()), bytes.
        if self._wq is None and data.__class__ is bytes:
            try:
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                return self._write_failed(e, len(data))
            if n == len(data):
                self._active = True
                return True
            return self._queue_rest(memoryview(data)[n:], n)
        return self._write_slow(data)

    def _write_slow(self, data: Any) -> bool:
        if self.closed:
            if data is not None and not isinstance(data, (bytes, bytearray, memoryview)) and not callable(data):
                raise _type_error(data)
            return True
        if self._wq is not None:
            if data is None:
                return self._flush()
            return self._enqueue(data)
        cls = data.__class__
        if cls is bytearray or cls is memoryview:
            view = memoryview(data).cast("B") if cls is memoryview else memoryview(data)
        elif data is None:
            return True
        elif callable(data):
            data()
            return True
        else:
            raise _type_error(data)
        try:
            n = self.sock.send(view)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            return self._write_failed(e, len(view))
        if n == len(view):
            self._active = True
            return True
        return self._queue_rest(bytes(view[n:]), n)  # a copy: the caller may reuse its buffer

    def _queue_rest(self, rest: Any, sent: int) -> bool:
        """The first write that could not send everything: queue the rest."""
        if sent:
            self._active = True
        self._wq = deque((rest,))
        self.write_buf_size = len(rest)
        if self.write_buf_size > self.write_high_water and self._over_limits():
            return False
        self.on_incomplete_write()
        return False

    def _enqueue(self, data: Any) -> bool:
        cls = data.__class__
        if cls is bytes:
            if not data:
                return False
            size = len(data)
        elif cls is bytearray or cls is memoryview:
            data = bytes(data)
            if not data:
                return False
            size = len(data)
        elif callable(data):
            size = 1
        else:
            raise _type_error(data)
        self._wq.append(data)
        self.write_buf_size += size
        if self.write_buf_size > self.write_high_water:
            self._over_limits()
        return False

    def _over_limits(self) -> bool:
        """Queue grew past the high-water mark: pause hook, or the hard limit.
        Returns True if the socket was closed."""
        limit = self.write_buffer_limit
        if limit is not None and self.write_buf_size > limit:
            self.close("write_buffer_limit")
            return True
        if not self._state & _PAUSED:
            self._state |= _PAUSED
            self.event_write_paused()
        return self.closed

    def _flush(self) -> bool:
        wq = self._wq
        sock = self.sock
        while wq:
            head = wq[0]
            cls = head.__class__
            if cls is not bytes and cls is not memoryview:
                wq.popleft()
                self.write_buf_size -= 1
                head()
                if self._wq is not wq:  # the callable closed the socket
                    return True
                continue
            bufs = []
            want = 0
            for item in wq:
                cls = item.__class__
                if cls is not bytes and cls is not memoryview:
                    break
                bufs.append(item)
                want += len(item)
                if want >= GATHER_BYTES or len(bufs) == IOV_MAX:
                    break
            try:
                n = sock.send(bufs[0]) if len(bufs) == 1 else sock.sendmsg(bufs)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                return self._write_failed(e, self.write_buf_size)
            if n:
                self._active = True
                self.write_buf_size -= n
                left = n
                while left:  # drop what went out; a partly sent head keeps its rest
                    ln = len(wq[0])
                    if left < ln:
                        wq[0] = memoryview(wq[0])[left:]
                        break
                    wq.popleft()
                    left -= ln
            if n < want:
                if self._state & _PAUSED and self.write_buf_size <= self.write_low_water:
                    self._resumed()
                self.on_incomplete_write()
                return False
        self._wq = None
        if self._state & _PAUSED:
            self._resumed()
        if self._state & _AUTO_WRITE and not self.closed:
            self._state &= ~_AUTO_WRITE
            self._set_mask(self._mask & ~WRITE)
        return True

    def _resumed(self) -> None:
        self._state &= ~_PAUSED
        self.event_write_resumed()

    def _write_failed(self, e: OSError, unsent: int) -> bool:
        name = errno.errorcode.get(e.errno or 0, "")
        reason = name if name in ("EPIPE", "ECONNRESET") else f"write_error: {name or e}"
        self.write_buf_size = max(self.write_buf_size, unsent)
        if self._state & _LINGER:
            self._finish_close()  # already closed for the user; the peer is gone
        else:
            self._state |= _EOF
            self._extras().read_error = reason  # no lingering after a write error
            self.close(reason)
        return False

    def on_incomplete_write(self) -> None:
        """Called when a write could not send everything.  The default turns
        on write interest (and remembers that the library did, so it turns it
        off again once the queue drains)."""
        if not self._mask & WRITE:
            self._state |= _AUTO_WRITE
            self._set_mask(self._mask | WRITE)

    # -- interest -----------------------------------------------------------------------

    def watch_read(self, on: bool = True) -> None:
        """Ask for (or stop) ``event_read`` calls when data is ready."""
        if self.closed:
            return
        mask = self._mask | READ if on else self._mask & ~READ
        if mask != self._mask:
            self._set_mask(mask)
        if on and self._pb:
            _loop._current._want_push_back(self)

    def watch_write(self, on: bool = True) -> None:
        """Ask for (or stop) ``event_write`` calls when the socket is writable.

        Write interest turned on here is yours: it stays on after the queue
        drains (the default ``event_write`` turns it off then)."""
        if self.closed:
            return
        self._state &= ~_AUTO_WRITE
        mask = self._mask | WRITE if on else self._mask & ~WRITE
        if mask != self._mask:
            self._set_mask(mask)

    def _set_mask(self, mask: int) -> None:
        self._mask = mask
        _loop._current._set_mask(self)

    @property
    def watching_read(self) -> bool:
        return bool(self._mask & READ)

    @property
    def watching_write(self) -> bool:
        return bool(self._mask & WRITE)

    # -- dispatch (called by the loop for anything but a plain read event) ---------------

    def _dispatch(self, mask: int) -> None:
        """Deliver ``mask``: read, write, err, hup, none after a close."""
        if self._state & _CONNECTING:
            if mask & (WRITE | ERR | HUP):
                self._connect_finished()
            return
        if mask & READ:
            self.event_read()
            if self.closed:
                return
        if mask & WRITE:
            self.event_write()
            if self.closed:
                return
        if mask & (ERR | HUP):
            # Unread data may arrive together with HUP: keep delivering
            # event_read until read() has seen EOF, then report the HUP.
            if mask & READ and self._mask & READ and not self._state & _EOF:
                return
            if mask & ERR:
                self.event_err()
                if self.closed:
                    return
            if mask & HUP:
                self.event_hup()
            if not self.closed:
                # Level-triggered HUP/ERR would be reported on every pass.
                _loop._current._park(self)

    # -- connecting -------------------------------------------------------------------------

    def _begin_connect(self, timeout: Optional[float]) -> None:
        """Called by ``danga.connect`` right after construction: wait for the
        non-blocking connect; writes meanwhile are queued."""
        self._state |= _CONNECTING
        if self._wq is None:
            self._wq = deque()
        self._loop_mask(self._mask | WRITE)
        if timeout is not None:
            self._extras().connect_timer = _loop._current.add_timer(timeout, self._connect_timed_out)

    def _loop_mask(self, mask: int) -> None:
        self._mask = mask
        _loop._current._set_mask(self)

    def _connect_timed_out(self) -> None:
        if self._state & _CONNECTING and not self.closed:
            self._connect_failed("ETIMEDOUT")

    def _connect_finished(self) -> None:
        err = self.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err:
            self._connect_failed(errno.errorcode.get(err, str(err)))
            return
        self._state &= ~_CONNECTING
        x = self._x
        if x is not None and x.connect_timer is not None:
            x.connect_timer.cancel()
            x.connect_timer = None
        self._loop_mask(self._mask & ~WRITE)
        if self._wq is not None and not self._wq:
            self._wq = None
        self.event_connected()
        if not self.closed and self._wq is not None:
            self._flush()

    def _connect_failed(self, name: str) -> None:
        self._state &= ~_CONNECTING
        x = self._extras()
        if x.connect_timer is not None:
            x.connect_timer.cancel()
            x.connect_timer = None
        try:
            self.event_connect_failed(name)
        finally:
            self.close(f"connect_failed: {name}")

    def event_connected(self) -> None:
        """A ``danga.connect`` completed (EventMachine's ``connection_completed``)."""

    def event_connect_failed(self, error: str) -> None:
        """A ``danga.connect`` failed; ``error`` is the errno name
        ("ECONNREFUSED", "ETIMEDOUT" for the connect timeout...).  The socket
        is closed right after, with reason ``"connect_failed: <error>"``."""

    @property
    def connecting(self) -> bool:
        """True while a ``danga.connect`` is in progress."""
        return bool(self._state & _CONNECTING)

    # -- events (override these) ------------------------------------------------------

    def event_read(self) -> None:
        """The socket is readable.  Override it; the default closes the
        socket with reason ``"no_event_read"`` (and logs it) rather than spin."""
        log.warning("danga: %s has no event_read; closing it", self.as_string())
        self.close("no_event_read")

    def event_write(self) -> None:
        """The socket is writable.  The default flushes the queue and turns
        write interest off once it is empty."""
        if self.write(None):
            self.watch_write(False)

    def event_err(self) -> None:
        """An error is pending on the socket.  The default closes it."""
        self.close("event_err")

    def event_hup(self) -> None:
        """The peer hung up (after any data still readable was delivered).
        The default closes the socket."""
        self.close("event_hup")

    def event_write_paused(self) -> None:
        """Queued bytes rose above ``write_high_water``: stop producing (a
        proxy stops reading its source).  The default does nothing."""

    def event_write_resumed(self) -> None:
        """Queued bytes fell to ``write_low_water``: produce again."""

    # -- closing ----------------------------------------------------------------------

    def close(self, reason: str = "") -> None:
        """Close the socket; idempotent.  Afterwards ``closed`` is True,
        ``close_reason`` holds ``reason``, ``write`` sends nothing and
        ``read`` returns None.

        Queued data is dropped (``unsent`` says how many bytes), except after
        the peer half-closed: when ``read()`` has seen a clean EOF and writes
        are still queued, the library keeps sending them, and releases the
        socket once they are out, or after ``close_linger`` seconds, or when
        the peer goes away (``flush_on_eof_close = False`` turns this off).

        During event dispatch the descriptor itself is released at the end of
        the loop pass (so its number cannot be reused within the batch);
        elsewhere at once."""
        if self.closed:
            return
        self.closed = True
        x = self._extras()
        x.close_reason = reason
        self._pb = b""
        if x.deadline is not None:
            x.deadline.cancel()
            x.deadline = None
        if (self._state & _EOF and self._wq and x.read_error is None and self.flush_on_eof_close
                and not self._state & _CONNECTING):
            self._linger()
        else:
            self._finish_close()
        if x.on_close:
            watchers, x.on_close = x.on_close, None
            for cb in watchers:
                try:
                    cb(self, reason)
                except Exception as exc:
                    _loop._current._callback_failed(None, exc, "close watcher")

    def _linger(self) -> None:
        """Closed for the user, but still sending what the peer is waiting for."""
        self._state |= _LINGER
        self._set_mask(WRITE)
        self._extras().deadline = _loop._current.add_timer(self.close_linger, self._linger_expired)

    def _linger_expired(self) -> None:
        self._extras().deadline = None
        if self._state & _LINGER:
            log.info("danga: %s: gave up sending %d bytes after %gs", self.as_string(), self.write_buf_size,
                     self.close_linger)
            self._finish_close()

    def _event_after_close(self, mask: int) -> None:
        """An event for a closed socket: only a lingering one wants it."""
        if not self._state & _LINGER:
            return
        if mask & (ERR | HUP) and not mask & WRITE:
            self._finish_close()
            return
        if self._flush() and self._state & _LINGER:
            self._finish_close()

    def _finish_close(self) -> None:
        """Release the descriptor (now, or at the end of the pass)."""
        x = self._extras()
        self._state &= ~_LINGER
        if x.deadline is not None:
            x.deadline.cancel()
            x.deadline = None
        x.unsent = self.write_buf_size
        if x.unsent:
            log.debug("danga: %s closed (%s) with %d bytes unsent", self.as_string(), x.close_reason, x.unsent)
        self._wq = _CLOSED
        self.write_buf_size = 0
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if x.corked:
            try:
                _set_cork(sock, False)  # push out what the cork holds
            except OSError:
                pass
        if x.connect_timer is not None:
            x.connect_timer.cancel()
            x.connect_timer = None
        _loop._current._release(self, sock)

    @property
    def lingering(self) -> bool:
        """True while a closed socket is still sending queued data."""
        return bool(self._state & _LINGER)

    def add_close_watcher(self, cb: Callable[["Socket", str], object]) -> None:
        """Call ``cb(socket, reason)`` once, when this socket is closed."""
        if self.closed:
            cb(self, self.close_reason or "")
            return
        x = self._extras()
        if x.on_close is None:
            x.on_close = []
        x.on_close.append(cb)

    def steal_socket(self) -> Any:
        """Detach and return the underlying socket, open, unregistered and
        out of the descriptor map (so it can be wrapped again).  Queued data
        is dropped as in ``close()``.  None if already closed."""
        if self.closed:
            return None
        self.closed = True
        x = self._extras()
        x.close_reason = "stolen"
        x.unsent = self.write_buf_size
        if x.deadline is not None:
            x.deadline.cancel()
            x.deadline = None
        self._wq = _CLOSED
        self._pb = b""
        self.write_buf_size = 0
        sock, self.sock = self.sock, None
        _loop._current._release(self, sock, steal=True)
        return sock

    def _lost_fd(self) -> None:
        """Another socket was registered on our fd number: we no longer own
        it, so detach without closing anything."""
        sock = self.sock
        if sock is not None:
            sock.detach()
        self.sock = None
        self.closed = True
        self._wq = _CLOSED
        self._pb = b""
        self.write_buf_size = 0
        self._extras().close_reason = "fd_reused"

    @property
    def close_reason(self) -> Optional[str]:
        """Why the socket was closed (None while open)."""
        return self._x.close_reason if self._x is not None else None

    @property
    def unsent(self) -> int:
        """Bytes (and queued callables, 1 each) dropped by ``close()``."""
        return self._x.unsent if self._x is not None else 0

    # -- deadlines and idleness ----------------------------------------------------------

    def set_deadline(self, seconds: Optional[float], reason: str = "deadline") -> None:
        """Close the socket with ``reason`` unless ``set_deadline(None)`` is
        called within ``seconds``.  A total deadline, not reset by activity:
        the protection against a client that trickles a request slowly."""
        if self.closed:
            return
        x = self._extras()
        if x.deadline is not None:
            x.deadline.cancel()
            x.deadline = None
        if seconds is not None:
            x.deadline = _loop._current.add_timer(seconds, lambda: self.close(reason))

    def _take_activity(self) -> bool:
        active = self._active
        self._active = False
        return active

    def _idle_since(self, now: Optional[float] = None) -> float:
        x = self._extras()
        if now is not None:
            x.idle_since = now
        return x.idle_since

    # -- per-socket post-loop callback --------------------------------------------------

    def set_post_loop_callback(self, cb: Optional[_loop.PostLoopCallback]) -> None:
        """Run ``cb(descriptor_map, other_fds)`` after every loop pass while
        this socket is open; a false return ends ``event_loop()``.  None
        removes it."""
        _loop._current.set_post_loop_callback(self, cb)

    # -- socket options -------------------------------------------------------------------

    def tcp_cork(self, on: bool) -> None:
        """Hold back partial frames (Linux TCP_CORK) until ``tcp_cork(False)``.
        Ignored where the socket or the platform has no such option."""
        if self.closed:
            return
        x = self._extras()
        on = bool(on)
        if x.corked == on:
            return
        try:
            _set_cork(self.sock, on)
        except OSError as e:
            if e.errno in (errno.EBADF, errno.ENOTSOCK):
                log.warning("danga: tcp_cork failed on %s: %s", self.as_string(), e)
                self.close("tcp_cork_failed")
                return
            if e.errno not in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                raise
            return  # not a TCP socket: nothing to cork
        x.corked = on

    # -- addresses ----------------------------------------------------------------------------

    def _addr(self, which: str) -> Any:
        x = self._extras()
        cached = getattr(x, which)
        if cached is not None:
            return cached
        if self.sock is None:
            return None
        try:
            addr = self.sock.getpeername() if which == "peer" else self.sock.getsockname()
        except OSError:
            return None
        setattr(x, which, (self.sock.family, addr))
        return (self.sock.family, addr)

    def _ip(self, which: str) -> Optional[str]:
        fa = self._addr(which)
        if fa is None or fa[0] not in (_socket.AF_INET, _socket.AF_INET6):
            return None
        return fa[1][0]

    def _addr_string(self, which: str) -> Optional[str]:
        fa = self._addr(which)
        if fa is None:
            return None
        family, addr = fa
        if family == _socket.AF_INET:
            return f"{addr[0]}:{addr[1]}"
        if family == _socket.AF_INET6:
            return f"[{addr[0]}]:{addr[1]}"
        if family == getattr(_socket, "AF_UNIX", None):
            if isinstance(addr, bytes):  # Linux abstract namespace
                return "@" + addr[1:].decode("utf-8", "backslashreplace") if addr else None
            return addr or None
        return None

    def peer_ip_string(self) -> Optional[str]:
        """The peer's IP address ("127.0.0.1", "::1"); None if not IP or unknown."""
        return self._ip("peer")

    def peer_addr_string(self) -> Optional[str]:
        """"ip:port", "[v6]:port", a UNIX path or "@abstract"; None if unknown."""
        return self._addr_string("peer")

    def local_ip_string(self) -> Optional[str]:
        """The local IP address; None if not IP or unknown."""
        return self._ip("local")

    def local_addr_string(self) -> Optional[str]:
        """The local address, formatted as ``peer_addr_string``."""
        return self._addr_string("local")

    def as_string(self) -> str:
        """``"Class(RW): open to 127.0.0.1:5000"``, as Danga::Socket's."""
        rw = ("R" if self._mask & READ else "") + ("W" if self._mask & WRITE else "")
        s = f"{type(self).__name__}({rw}): {'closed' if self.closed else 'open'}"
        if not self.closed:
            peer = self.peer_addr_string()
            if peer:
                s += f" to {peer}"
        elif self.close_reason:
            s += f" ({self.close_reason})"
        return s

    def __repr__(self) -> str:
        return f"<{self.as_string()} fd={self.fd}>"


def _type_error(data: Any) -> TypeError:
    if isinstance(data, str):
        return TypeError("danga: write() takes bytes, not str; encode it first (e.g. data.encode())")
    return TypeError(
        f"danga: write() takes bytes, bytearray, memoryview, a callable or None, not {type(data).__name__}"
    )


def _check_count(n: Any) -> int:
    """A read() byte count, checked, and capped at MAX_READ."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"danga: read() takes a byte count (int), got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"danga: read() needs a positive byte count, got {n}")
    return min(n, MAX_READ)


def _set_cork(sock: Any, on: bool) -> None:
    opt = getattr(_socket, "TCP_CORK", None)
    if opt is not None:
        sock.setsockopt(_socket.IPPROTO_TCP, opt, 1 if on else 0)
