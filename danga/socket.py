"""``danga.Socket``: the base class a daemon subclasses, as in Danga::Socket.

A Socket wraps one non-blocking socket registered with the loop.  Subclasses
override ``event_read`` (and ``event_hup``/``event_err``, whose defaults close
the socket), call ``read()`` and ``write()``, and switch interest with
``watch_read()``/``watch_write()``.

The write path
--------------
``write()`` tries ``send`` at once when nothing is queued, so the common case
(a small reply to a socket with room in its buffer) costs one syscall and no
allocation.  Only the part the kernel did not take is queued, in a
``WriteQueue`` (danga/writequeue.py, which owns all the accounting): a
memoryview slice of a ``bytes`` object (no copy), or a copy of a
``bytearray`` or ``memoryview`` (which the caller may change later).  While
data is queued the library watches for writability itself and stops once
the queue is empty.  Every byte ``write`` accepts is sent, or counted in
``unsent`` when the socket closes.

Bytes come and go through ``self.__io``, the channel the poller backend gave
for this socket (``danga.contract.ByteChannel``): the socket itself for the
readiness backends, the backend's own object for a completion-based one.

Memory
------
``__slots__`` and no per-socket receive buffer: an idle connection costs the
object and its socket.  State that most sockets never use (pushed-back data,
a deadline, the close reason, cached addresses) lives in a small side object
made on first use, and the write queue exists only while something is
queued.  ``read()`` and ``write()`` each test one slot to take their fast
path (``__pb`` and ``__wq`` are None only while the socket is open with nothing
pushed back, nothing queued).
"""
from __future__ import annotations

import logging
import socket as _socket
from time import monotonic
from typing import Any, Callable, Iterable, Optional, Union

from . import addresses, checks, sockopts
from . import loop as _loop
from .connecting import Connecting
from .contract import ChannelError
from .perl import SocketSpellings
from .pollers import ERR, HUP, READ, WRITE
from .sockstate import AUTO_WRITE, BIG_READS, CONNECTING, EOF, HUP_WAITS, LINGER, PARKED, Extras
from .timers import cancel
from .tlssocket import SocketTls
from .writequeue import IOV_MAX, WriteQueue

log = logging.getLogger("danga")

MAX_READ = checks.MAX_READ
# What read(n) asks the kernel for when n is larger: READ_SMALL, and READ_BIG
# after a read that came back full, until one returns less than READ_SMALL.
# A recv allocates its whole count up front, and glibc serves counts over
# 128 KiB with mmap: asked of every small message, 256 KiB costs a mapping
# and its page faults per read (3x the CPU of a 64 B echo, measured); asked
# only while data keeps coming, it takes a 1 MiB message in 4 reads, not 16
# (bench/optimisations.md).
READ_SMALL = 64 * 1024
READ_BIG = 256 * 1024
JOIN_BYTES = 16 * 1024  # writelines() joins up to this much rather than gather it
_CLOSED: Any = ()  # the write queue of a closed socket: not None, so write() leaves its fast path

Writable = Union[bytes, bytearray, memoryview, Callable[[], Any], None]


class Socket(Connecting, SocketTls, SocketSpellings, addresses.SocketAddresses, sockopts.SocketOptions):
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
    * ``send_timeout``: seconds queued output may wait without the kernel
      taking a byte (a peer that stopped reading) before the socket is
      closed with reason ``"send_timeout"``, its queue counted in ``unsent``
      (0, the default, never).  Both are enforced by one sweep timer.
    * ``write_high_water``/``write_low_water``: queued bytes above which
      ``event_write_paused()`` is called, and at or below which
      ``event_write_resumed()`` follows (64 KiB / 16 KiB).
    * ``write_buffer_limit``: queued bytes beyond which the socket is closed
      with reason ``"write_buffer_limit"`` (64 MiB; None for no limit).  A
      peer that never reads cannot grow the process without bound.
    """

    # The internals are name-mangled (``_Socket__wq``...): a subclass's own
    # ``self._state`` or ``self._wq`` can never collide with them.
    __slots__ = ("sock", "fd", "closed", "__io", "__mask", "__wq", "__state", "__active", "__pb", "__x",
                 "__weakref__")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        checks.refuse_internal_overrides(cls)

    max_idle_time: float = 0
    send_timeout: float = 0
    write_high_water: int = 64 * 1024
    write_low_water: int = 16 * 1024
    write_buffer_limit: Optional[int] = 64 * 1024 * 1024
    flush_on_eof_close: bool = True
    close_linger: float = 30.0
    #: True for a socket that reads its descriptor itself (it peeks with
    #: ``MSG_PEEK``, or hands the descriptor on with bytes still unread, as the
    #: PROXY header reader does): its bytes then stay in the kernel until read,
    #: where a completion backend (io_uring) would otherwise receive them ahead
    reads_descriptor: bool = False

    def __init__(self, sock: _socket.socket) -> None:
        fd = checks.wrappable_fd(sock)
        sock.setblocking(False)
        loop = _loop.current()
        self.sock: Any = sock  # a socket.socket, or an FdStream for pipes; None once closed
        self.fd = fd
        self.closed = False
        self.__io: Any = loop.channel(sock, self.reads_descriptor)  # where the bytes go: danga.contract.ByteChannel
        self.__mask = 0
        self.__wq: Any = None  # None, a WriteQueue, or _CLOSED
        self.__state = 0
        self.__active = False  # data moved since the last idle sweep
        self.__pb: Optional[bytes] = None  # pushed-back bytes; b"" once closed
        self.__x: Optional[Extras] = None
        loop.add_socket(self, 0)
        if self.max_idle_time or self.send_timeout:
            self._extras().idle_since = monotonic()  # not loop.now: that is when the pass began
            loop.track_idle(self)

    def _extras(self) -> Extras:
        x = self.__x
        if x is None:
            x = self.__x = Extras()
        return x

    # -- reading ------------------------------------------------------------------

    def read(self, n: int) -> Optional[bytes]:
        """Read up to ``n`` bytes (at most 1 MiB per call).

        A count over 64 KiB is a ceiling: one call asks the kernel for 64 KiB,
        and for up to 256 KiB while reads keep coming back full, so that
        small messages never pay for a large buffer.

        Returns the data; ``b""`` when nothing is available now; ``None`` at
        EOF, on an error, or when the socket is closed.  Pushed-back data is
        returned first, and never mixed with data from the socket."""
        # Fast path: __pb is None only while the socket is open with nothing
        # pushed back (close() sets it to b"").
        if self.__pb is None and n.__class__ is int and 0 < n <= MAX_READ:
            k = n
            if n > 65536:  # READ_SMALL, BIG_READS (64) and READ_BIG as literals: the hot path
                k = 65536 if not self.__state & 64 else 262144 if n > 262144 else n
            try:
                data: bytes = self.__io.recv(k)
            except (BlockingIOError, InterruptedError):
                return b""
            except OSError as e:
                self._read_failed(e)
                return None
            if data:
                self.__active = True
                if n > 65536 and (k != 65536 or len(data) == 65536):
                    self._next_read_size(k, len(data))
                return data
            self.__state |= EOF
            return None
        return self._read_slow(n)

    def _next_read_size(self, asked: int, got: int) -> None:
        """After a read(n > READ_SMALL): a full one asks the kernel for
        READ_BIG next; one that got less than READ_SMALL, for READ_SMALL."""
        if got == asked:
            self.__state |= BIG_READS
        elif got < READ_SMALL:
            self.__state &= ~BIG_READS

    def _read_slow(self, n: int) -> Optional[bytes]:
        if self.closed:
            return None
        n = checks.read_count(n)
        data = self.__pb
        if not data:
            return self.read(n)  # a valid count, nothing pushed back: the fast path
        if len(data) <= n:
            self.__pb = None
            return data
        self.__pb = data[n:]
        return data[:n]

    def _read_failed(self, e: OSError) -> None:
        self.__state |= EOF
        reason = e.reason if isinstance(e, ChannelError) else checks.errno_name(e.errno or 0, "read_error")
        self._extras().read_error = reason

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
        self.__pb = bytes(data) + (self.__pb or b"")
        _loop.current().want_push_back(self)

    # -- writing --------------------------------------------------------------------

    def write(self, data: Writable) -> bool:
        """Send ``data`` now, or queue what cannot be sent yet.

        ``data`` is ``bytes``, ``bytearray`` or ``memoryview`` (or any other
        bytes-like object; copied if it must be queued), a callable (run
        once everything written before it has been sent), or ``None``
        (flush the queue).

        Returns True when everything is sent, False when some is queued or
        the socket was closed by a write error (check ``closed``).  On a
        closed socket it sends nothing and returns True, as Danga::Socket
        did.  Queued bytes that can never be sent are reported through
        ``close()``: its reason, and ``unsent``."""
        # Fast path: nothing queued (and open: close() sets _wq to ()), bytes.
        if self.__wq is None and data.__class__ is bytes:
            try:
                n = self.__io.send(data)
            except (BlockingIOError, InterruptedError):
                return self._blocked(data)
            except OSError as e:
                return self._write_failed(e, len(data))
            if n == len(data):
                self.__active = True
                return True
            if n:
                self.__active = True
            return self._enqueue(memoryview(data)[n:], len(data) - n)
        return self._write_slow(data)

    def _write_slow(self, data: Any) -> bool:
        if data is None:
            return self._flush() if self.__wq is not None and not self.closed else True
        if callable(data):
            if self.closed:
                return True
            if self.__wq is None:
                data()
                return not self.write_buf_size  # it may have written more than could go out
            return self._enqueue(data, 1)
        view = checks.bytes_view(data)
        if self.closed:
            return True
        if self.__wq is not None:
            if not view and not self._queue_empty_writes:
                return not self.__wq.items
            return self._enqueue(view.tobytes() if data.__class__ is not bytes else data, len(view))
        try:
            n = self.__io.send(view)
        except (BlockingIOError, InterruptedError):
            return self._blocked(bytes(view))  # a copy: the caller may reuse its buffer
        except OSError as e:
            return self._write_failed(e, len(view))
        if n:
            self.__active = True
        if n == len(view):
            return True
        return self._enqueue(bytes(view[n:]), len(view) - n)  # a copy: the caller may reuse its buffer

    def writelines(self, buffers: Iterable[Any]) -> bool:
        """Write several bytes-like buffers in order, as ``write`` would one
        by one, but with one ``sendmsg`` when nothing is queued and no
        joining copy (a header, a 1 MiB value and a trailer go out as they
        are; up to 16 KiB in all they are joined instead: copying that little
        costs less than building an iovec).  Returns what ``write`` returns."""
        buffers = buffers if buffers.__class__ is list else list(buffers)
        joined = None
        if not self._queue_empty_writes:
            try:
                if sum(map(len, buffers)) <= JOIN_BYTES:
                    joined = b"".join(buffers)
            except TypeError:
                pass  # not all bytes-like: the checks below say which
        if joined is not None:
            return self.write(joined)
        items = [b if b.__class__ is bytes else checks.bytes_view(b) for b in buffers]
        if self.closed:
            return True
        if self.__wq is not None or self._queue_empty_writes or len(items) < 2:
            for item in items:  # queued already (or datagrams): each as write() takes it
                self.write(item if item.__class__ is bytes else bytes(item))
            return not self.write_buf_size
        items = [item for item in items if len(item)]
        try:
            n = self.__io.sendmsg(items[:IOV_MAX])
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            return self._write_failed(e, sum(map(len, items)))
        if n:
            self.__active = True
        for i, item in enumerate(items):
            if n >= len(item):
                n -= len(item)
                continue
            for rest in [memoryview(item)[n:]] + items[i + 1:]:  # what the kernel did not take
                if rest.__class__ is memoryview and not (rest.readonly and rest.obj.__class__ is bytes):
                    rest = bytes(rest)  # the caller may reuse a mutable buffer
                self._enqueue(rest, len(rest))
                if self.closed:
                    break
            return False
        return True

    #: whether ``write(b"")`` is an item of its own (a datagram) or nothing (a stream)
    _queue_empty_writes = False
    #: the queue made for the first write that cannot go out at once
    _queue_class = WriteQueue

    def _blocked(self, data: bytes) -> bool:
        """Nothing could be sent now: all of ``data`` waits (an empty write
        is nothing on a stream, a datagram of its own otherwise)."""
        if not data and not self._queue_empty_writes:
            return True
        return self._enqueue(data, len(data))

    def _enqueue(self, item: Any, size: int) -> bool:
        """Queue ``item``: on the first backlog, make the queue and ask for
        writability; close with ``"write_buffer_limit"`` beyond the hard limit."""
        q = self.__wq
        first = q is None
        if first:
            q = self.__wq = self._queue_class(self)
        if not q.append(item, size):
            self.close("write_buffer_limit")
        elif first and not self.closed:
            self.on_incomplete_write()
        return False

    def _flush(self) -> bool:
        """Send what is queued; True once the queue is empty."""
        q = self.__wq
        if self.__state & CONNECTING:
            return not q.items  # held until event_connected()
        try:
            if q.flush(self.__io):
                self.__active = True
        except OSError as e:
            return self._write_failed(e)
        if self.__wq is not q:  # a queued callable (or a hook) closed the socket
            return True
        if q.items:
            self.on_incomplete_write()
            return False
        if not q.flushing:  # a flush further up the stack still walks this queue
            self.__wq = None
            if self.__state & AUTO_WRITE and not self.closed:
                self.__state &= ~AUTO_WRITE
                self._set_mask(self.__mask & ~WRITE)
        return True

    def _write_failed(self, e: OSError, lost: int = 0) -> bool:
        """A send failed: close, counting ``lost`` (bytes never queued) with the queue as unsent."""
        name = checks.errno_name(e.errno or 0, "")
        reason = name if name in ("EPIPE", "ECONNRESET") else f"write_error: {name or e}"
        if isinstance(e, ChannelError):
            reason = e.reason
        x = self._extras()
        x.unsent += lost
        if self.__state & LINGER:
            self._finish_close()  # already closed for the user; the peer is gone
        else:
            self.__state |= EOF
            x.read_error = reason  # no lingering after a write error
            self.close(reason)
        return False

    @property
    def write_buf_size(self) -> int:
        """Bytes queued and not yet sent (a queued callable counts 1)."""
        q = self.__wq
        return q.size if q else 0

    def on_incomplete_write(self) -> None:
        """Called when a write could not send everything.  The default turns
        on write interest (and remembers that the library did, so it turns it
        off again once the queue drains)."""
        if not self.__mask & WRITE:
            self.__state |= AUTO_WRITE
            self._set_mask(self.__mask | WRITE)

    # -- interest -----------------------------------------------------------------------

    def watch_read(self, on: bool = True) -> None:
        """Ask for (or stop) ``event_read`` calls when data is ready."""
        if self.closed:
            return
        mask = self.__mask | READ if on else self.__mask & ~READ
        if mask != self.__mask:
            self._set_mask(mask)
        if on and self.__pb:
            _loop.current().want_push_back(self)

    def watch_write(self, on: bool = True) -> None:
        """Ask for (or stop) ``event_write`` calls when the socket is writable.

        Write interest turned on here is yours: it stays on after the queue
        drains (the default ``event_write`` turns it off then)."""
        if self.closed:
            return
        self.__state &= ~AUTO_WRITE
        mask = self.__mask | WRITE if on else self.__mask & ~WRITE
        if mask != self.__mask:
            self._set_mask(mask)

    def _set_mask(self, mask: int) -> None:
        self.__mask = mask
        state = self.__state
        if not state & PARKED:
            _loop.current().set_interest(self, mask)
        elif state & HUP_WAITS and mask & READ:
            self.__state = state & ~(PARKED | HUP_WAITS)  # the unread data, then the HUP
            _loop.current().unpark(self, mask)

    def _park(self, hup_waits: bool = False) -> None:
        self.__state |= PARKED | (HUP_WAITS if hup_waits else 0)
        _loop.current().park(self)

    @property
    def watching_read(self) -> bool:
        return bool(self.__mask & READ)

    @property
    def watching_write(self) -> bool:
        return bool(self.__mask & WRITE)

    # -- the loop's side of the contract (danga.contract.SocketSide) ----------------------

    def loop_dispatch(self, mask: int) -> None:
        """Deliver ``mask``: read, write, err, hup; after a close, only what
        a lingering socket needs."""
        if self.closed:
            if self.__state & LINGER:
                if mask & (ERR | HUP) and not mask & WRITE:
                    self._finish_close()
                elif self._flush() and self.__state & LINGER:
                    self._finish_close()
            return
        if self.__state & CONNECTING:
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
            if not self.__state & EOF:
                # Unread data may come with a HUP: keep delivering event_read
                # until read() sees EOF; while reading is paused, hold the HUP
                # back until it resumes.
                if mask & READ and self.__mask & READ:
                    return
                if mask == HUP and not self.__mask & READ and self._may_have_unread_data():
                    self._park(hup_waits=True)
                    return
            if mask & ERR:
                self.event_err()
                if self.closed:
                    return
            if mask & HUP:
                self.event_hup()
            if not self.closed:
                self._park()  # level-triggered HUP/ERR would be reported on every pass

    def _may_have_unread_data(self) -> bool:
        sock = self.sock
        if not isinstance(sock, _socket.socket):
            return True  # a pipe cannot be peeked at: assume there is some
        try:
            return bool(self.__io.recv(1, _socket.MSG_PEEK))  # the channel's: it may hold bytes
        except OSError:
            return False

    def loop_push_back_pending(self) -> int:
        pb = self.__pb
        return len(pb) if pb and self.__mask & READ else 0

    def loop_lost_fd(self) -> None:
        sock = self._teardown()
        if sock is not None:
            sock.detach()
        self.closed = True
        self._extras().close_reason = "fd_reused"

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
        self.__pb = b""
        x.deadline = cancel(x.deadline)
        if (self.__state & EOF and self.__wq and x.read_error is None and self.flush_on_eof_close
                and not self.__state & (CONNECTING | PARKED)):
            self.__state |= LINGER  # closed for the user, still sending what the peer waits for
            self._set_mask(WRITE)
            x.deadline = _loop.current().add_timer(self.close_linger, self._linger_expired)
        else:
            self._finish_close()
        if x.on_close:
            watchers, x.on_close = x.on_close, None
            for cb in watchers:
                try:
                    cb(self, reason)
                except Exception as exc:
                    _loop.current().report_error(None, exc, "close watcher")

    def _linger_expired(self) -> None:
        if self.__state & LINGER:
            log.info("danga: %s: gave up sending %d bytes after %gs", self.as_string(), self.write_buf_size,
                     self.close_linger)
            self._finish_close()

    def _teardown(self) -> Any:
        """Drop the queue (counted in ``unsent``), the timers and the socket
        object; return the socket object (None if it was already gone)."""
        x = self._extras()
        self.__state &= ~LINGER
        x.deadline = cancel(x.deadline)
        x.connect_timer = cancel(x.connect_timer)
        q = self.__wq
        if q:
            x.unsent += q.discard()
        self.__wq = _CLOSED
        self.__pb = b""
        sock, self.sock = self.sock, None
        return sock

    def _finish_close(self) -> None:
        """Release the descriptor (now, or at the end of the pass)."""
        x = self._extras()
        sock = self._teardown()
        if x.unsent:
            log.debug("danga: %s closed (%s) with %d bytes unsent", self.as_string(), x.close_reason, x.unsent)
        if sock is None:
            return
        if x.corked:
            try:
                sockopts.set_cork(sock, False)  # push out what the cork holds
            except OSError:
                pass
        _loop.current().release(self, sock)

    @property
    def lingering(self) -> bool:
        """True while a closed socket is still sending queued data."""
        return bool(self.__state & LINGER)

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
        self._extras().close_reason = "stolen"
        sock = self._teardown()
        _loop.current().release(self, sock, steal=True)
        return sock

    @property
    def close_reason(self) -> Optional[str]:
        """Why the socket was closed (None while open)."""
        return self.__x.close_reason if self.__x is not None else None

    @property
    def read_error(self) -> Optional[str]:
        """Why ``read()`` returned None, when it was not a clean EOF: the
        errno name (``"ECONNRESET"``) or the channel's reason (``"tls: ..."``)."""
        return self.__x.read_error if self.__x is not None else None

    @property
    def unsent(self) -> int:
        """Bytes (and queued callables, 1 each) dropped by ``close()``."""
        return self.__x.unsent if self.__x is not None else 0

    def as_string(self) -> str:
        """``"Class(RW): open to 127.0.0.1:5000"``, as Danga::Socket's."""
        rw = ("R" if self.__mask & READ else "") + ("W" if self.__mask & WRITE else "")
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
