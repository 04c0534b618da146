"""Windows: socket readiness through an I/O completion port, the AFD poll way.

Windows has no epoll, and its ``select``/``WSAPoll`` rebuild the whole set on
every call.  What it has is the completion port, and a request that the
socket driver (AFD, ``\\Device\\Afd``) answers through it: ``IOCTL_AFD_POLL``
names a socket's base handle and a set of events, and completes as soon as
one of them holds (at once if one already does).  wepoll, libuv and mio
build epoll-style readiness on it; so does this backend.  It keeps danga's
contract as it is: readiness, level-triggered, the same narrow poller
interface, the socket's own ``recv``/``send`` (``channel()`` returns the
socket), so ``danga.Socket`` never knows which backend it runs on.

How a registration lives
------------------------
Each registered descriptor has one ``_Reg``: its interest, and the C memory
of one poll request (an ``OVERLAPPED`` used as the request's status block,
and an ``AFD_POLL_INFO``).  At most one request per socket is in flight; a
poll is one-shot.  ``poll()``:

1. submits a request for every registration that has none in flight (new
   ones, and those whose request completed in the last pass) with the
   events its interest asks for, on one AFD handle of the poller's own that
   is associated with the port;
2. makes one ``GetQueuedCompletionStatusEx`` call, which dequeues a batch;
3. turns each completion back into its ``_Reg`` by the address of its
   ``OVERLAPPED`` (never by the socket's number) and reports the events the
   interest still wants.

Re-arming every reported socket before the next wait is what makes it
level-triggered: a socket that is still readable completes its new request
at once and is reported again.

Changing interest while a request is in flight cancels it (``CancelIoEx``)
when the events it asked for are no longer the right ones; the cancelled
completion comes back through the port and the registration is re-armed
with the new interest.

Closing: the Windows twin of the deferred-close rule
----------------------------------------------------
A request in flight points at its ``_Reg``'s C memory, and the kernel writes
into it when it completes.  So ``unregister()`` cancels the request and
keeps the ``_Reg`` (with its memory) in ``_inflight`` until the cancelled
completion has been dequeued; only then is it dropped.  The socket itself
may be closed meanwhile (the loop closes it right after unregistering):
the request is on the poller's AFD handle, not on the socket, and its
completion is matched by address, so a new socket that gets the old
number or handle never sees it.  ``close()`` cancels everything in flight
and drains the port until every request has come back before it frees
anything and closes the handles.

The bytes
---------
Readiness means the socket's own ``recv``/``send`` move the bytes, as on
Linux.  ``channel()`` hands out a ``SocketChannel``, the socket's own bound
methods plus the ``sendmsg`` a Windows ``socket.socket`` lacks: it gathers
with one ``WSASend`` over an array of ``WSABUF`` (non-overlapped: on a
non-blocking socket it takes what fits at once, or fails with
WSAEWOULDBLOCK).  Windows' errno numbers for socket errors are the WSA
ones under POSIX names (``errno.ECONNRESET == 10054``); ``checks.errno_name``
gives the POSIX name, so close reasons read the same on every platform.

Waking and Ctrl-C
-----------------
``wake()`` posts a completion with no ``OVERLAPPED`` (any thread may call
it); ``poll()`` reports it as the descriptor ``pollers.WAKE``: the loop's
``call_from_thread`` uses it instead of a wake-up pipe.  Under
``danga.event_loop()`` a Ctrl-C wakes the wait through the signal
service's wake-up socket (danga/signals.py).  Without it (``loop.run()``
called directly) the wait is cut into slices of at most ``SLICE_MS``, so
that Python gets control back now and then and KeyboardInterrupt is raised
within that time; a slice that ends with nothing to report does not return
from ``poll()``.
"""
from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Any, Dict, Iterable, List, Optional

from danga import _winapi as w

from ..checks import errno_name
from .base import ERR, HUP, READ, WAKE, WRITE, refused

log = logging.getLogger("danga")

ffi: Any = w.ffi
kernel32: Any = w.kernel32

MAX_EVENTS = 1024
SLICE_MS = 250  # the longest single wait: Ctrl-C is seen within this
DRAIN_S = 5.0  # how long close() waits for cancelled requests to come back

_ALWAYS = w.AFD_POLL_ABORT | w.AFD_POLL_CONNECT_FAIL
_READABLE = w.AFD_POLL_RECEIVE | w.AFD_POLL_RECEIVE_EXPEDITED | w.AFD_POLL_ACCEPT | w.AFD_POLL_DISCONNECT
_INFO_SIZE = ffi.sizeof("AFD_POLL_INFO")
_NO_TIMEOUT = 0x7FFFFFFFFFFFFFFF
_MAX_TIMEOUT_MS = 2 ** 31 - 1
_AFD_NAME = "\\Device\\Afd\\Danga"

# The memory of requests that close() could not get back from the kernel:
# kept for the life of the process rather than freed under a pending write.
_abandoned: List[Any] = []


def afd_events(mask: int) -> int:
    """The AFD events a poll request asks for, for danga interest ``mask``.
    A peer's orderly shutdown (``AFD_POLL_DISCONNECT``) is read interest, as
    a TCP FIN is on Linux; a reset or a failed connect is always watched."""
    events = _ALWAYS
    if mask & READ:
        events |= _READABLE
    if mask & WRITE:
        events |= w.AFD_POLL_SEND
    return events


def danga_mask(events: int) -> int:
    """danga's mask for the AFD events a completed request reports, the way
    Linux reports a TCP socket: a reset is readable, an error and a hang-up;
    a failed connect is writable, an error and a hang-up."""
    mask = 0
    if events & _READABLE:
        mask |= READ
    if events & w.AFD_POLL_SEND:
        mask |= WRITE
    if events & w.AFD_POLL_ABORT:
        mask |= READ | ERR | HUP
    if events & w.AFD_POLL_CONNECT_FAIL:
        mask |= WRITE | ERR | HUP
    return mask


class _Reg:
    """One registered socket and the memory of its poll request."""

    __slots__ = ("fd", "handle", "mask", "ov", "info", "pending", "asked", "dead")

    def __init__(self, fd: int, handle: int, mask: int) -> None:
        self.fd = fd
        self.handle = handle  # the base (AFD) handle of the socket
        self.mask = mask
        self.ov: Any = ffi.new("OVERLAPPED *")
        self.info: Any = ffi.new("AFD_POLL_INFO *")
        self.pending = False  # a request is in flight
        self.asked = 0  # the AFD events that request asked for
        self.dead = False  # unregistered: drop it when its request comes back


def _base_handle(fd: int) -> Optional[int]:
    """The socket's base provider handle (beneath any layered provider), or
    None if ``fd`` is not a socket."""
    kind = ffi.new("int *")
    size_of_kind = ffi.new("int *", ffi.sizeof("int"))
    if w.ws2_32.getsockopt(fd, w.SOL_SOCKET, w.SO_TYPE, ffi.cast("char *", kind), size_of_kind) != 0:
        return None  # WSAENOTSOCK (the base-handle ioctl alone does not say so under Wine)
    out = ffi.new("ULONG_PTR *")
    size = ffi.new("DWORD *")
    for code in (w.SIO_BASE_HANDLE, w.SIO_BSP_HANDLE_POLL):
        if w.ws2_32.WSAIoctl(fd, code, ffi.NULL, 0, out, ffi.sizeof("ULONG_PTR"), size, ffi.NULL, ffi.NULL) == 0:
            return int(out[0])
    return None


def _winerr() -> int:
    """The GetLastError() of the last foreign call, as cffi saved it right after
    the call (calling GetLastError afterwards could see a later value)."""
    code: int = ffi.getwinerror()[0]
    return code


def _last_error(what: str) -> OSError:
    err = _winerr()
    return OSError(errno.EIO, f"danga: {what} failed (Windows error {err})", None, err)


class IocpPoller:
    """Level-triggered socket readiness from an I/O completion port."""

    name = "iocp"
    __slots__ = ("_port", "_afd", "_regs", "_inflight", "_arm", "_entries", "_got")

    def __init__(self) -> None:
        port = kernel32.CreateIoCompletionPort(w.INVALID_HANDLE_VALUE, ffi.NULL, 0, 0)
        if port == ffi.NULL:
            raise _last_error("CreateIoCompletionPort")
        self._port: Any = port
        try:
            self._afd: Any = self._open_afd()
        except OSError:
            kernel32.CloseHandle(port)
            raise
        self._regs: Dict[int, _Reg] = {}
        self._inflight: Dict[int, _Reg] = {}  # address of a request's OVERLAPPED -> its registration
        self._arm: Dict[_Reg, None] = {}  # registrations to (re)submit before the next wait
        self._entries = ffi.new("OVERLAPPED_ENTRY[]", MAX_EVENTS)
        self._got = ffi.new("ULONG *")

    def _open_afd(self) -> Any:
        """A handle on the AFD device, associated with the port: the poll
        requests of every socket go through it."""
        name = ffi.new("wchar_t[]", _AFD_NAME)
        size = len(_AFD_NAME) * ffi.sizeof("wchar_t")
        ustr = ffi.new("UNICODE_STRING *", (size, size, name))
        attrs = ffi.new("OBJECT_ATTRIBUTES *", (ffi.sizeof("OBJECT_ATTRIBUTES"), ffi.NULL, ustr, 0, ffi.NULL,
                                                ffi.NULL))
        handle = ffi.new("HANDLE *")
        iosb = ffi.new("OVERLAPPED *")
        status = w.ntdll.NtCreateFile(handle, w.SYNCHRONIZE, attrs, iosb, ffi.NULL, 0,
                                      w.FILE_SHARE_READ | w.FILE_SHARE_WRITE, w.FILE_OPEN, 0, ffi.NULL, 0)
        if status != w.STATUS_SUCCESS:
            err = w.ntdll.RtlNtStatusToDosError(status)
            raise OSError(errno.EIO, f"danga: opening {_AFD_NAME} failed (NTSTATUS {status & 0xFFFFFFFF:#x}, "
                          f"Windows error {err}); the iocp backend needs the Windows socket driver", None, err)
        afd = handle[0]
        if kernel32.CreateIoCompletionPort(afd, self._port, 0, 0) == ffi.NULL:
            exc = _last_error("CreateIoCompletionPort on the AFD handle")
            kernel32.CloseHandle(afd)
            raise exc
        kernel32.SetFileCompletionNotificationModes(afd, w.FILE_SKIP_SET_EVENT_ON_HANDLE)
        return afd

    # -- the interest set -------------------------------------------------------

    def register(self, fd: int, mask: int) -> None:
        if fd < 0:
            raise refused(fd, errno.EBADF, self.name)
        if fd in self._regs:
            raise refused(fd, errno.EEXIST, self.name)
        handle = _base_handle(fd)
        if handle is None:
            raise OSError(errno.ENOTSOCK, f"danga: iocp refused to watch fd {fd}: not a socket "
                          "(on Windows the loop watches sockets only)")
        reg = self._regs[fd] = _Reg(fd, handle, mask)
        self._arm[reg] = None

    def modify(self, fd: int, mask: int) -> None:
        reg = self._regs.get(fd)
        if reg is None:
            raise refused(fd, errno.ENOENT, self.name)
        reg.mask = mask
        if reg.pending and reg.asked != afd_events(mask):
            self._cancel(reg)  # re-armed with the new interest when it comes back

    def unregister(self, fd: int) -> None:
        reg = self._regs.pop(fd, None)
        if reg is None:
            return
        reg.dead = True
        self._arm.pop(reg, None)
        if reg.pending:
            self._cancel(reg)  # its memory stays in _inflight until the completion is consumed

    def _cancel(self, reg: _Reg) -> None:
        if not kernel32.CancelIoEx(self._afd, reg.ov):
            err = _winerr()
            if err != w.ERROR_NOT_FOUND:  # not found: it has completed and its completion is queued
                log.warning("danga: iocp: CancelIoEx for fd %d failed (Windows error %d)", reg.fd, err)

    @property
    def in_flight(self) -> int:
        """Poll requests the kernel still holds (cancelled ones included)."""
        return len(self._inflight)

    # -- waiting ------------------------------------------------------------------

    def _submit(self) -> None:
        arm, self._arm = self._arm, {}
        for reg in arm:
            info, ov = reg.info, reg.ov
            events = afd_events(reg.mask)
            info.Timeout = _NO_TIMEOUT
            info.NumberOfHandles = 1
            info.Exclusive = 0
            h = info.Handles[0]
            h.Handle = ffi.cast("HANDLE", reg.handle)
            h.Events = events
            h.Status = 0
            ov.Internal = w.STATUS_PENDING
            status = w.ntdll.NtDeviceIoControlFile(self._afd, ffi.NULL, ffi.NULL, ov, ov, w.IOCTL_AFD_POLL,
                                                   info, _INFO_SIZE, info, _INFO_SIZE)
            if status == w.STATUS_SUCCESS or status == w.STATUS_PENDING:
                reg.pending = True
                reg.asked = events
                self._inflight[int(ffi.cast("uintptr_t", ov))] = reg
            else:
                # Refused at once (the socket was closed behind the loop's
                # back): nothing is in flight; forget it, as epoll would.
                log.debug("danga: iocp: poll request for fd %d refused (NTSTATUS %#x); forgetting it",
                          reg.fd, status & 0xFFFFFFFF)
                if self._regs.get(reg.fd) is reg:
                    del self._regs[reg.fd]

    def poll(self, timeout_ms: int) -> List[int]:
        if timeout_ms > _MAX_TIMEOUT_MS:  # what the C int of the other backends' waits refuses too
            raise OverflowError(f"danga: poll timeout {timeout_ms} ms is out of range (at most {_MAX_TIMEOUT_MS})")
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        ms = timeout_ms
        while True:
            if self._arm:
                self._submit()
            wait = SLICE_MS if ms < 0 or ms > SLICE_MS else ms
            got = self._got
            if kernel32.GetQueuedCompletionStatusEx(self._port, self._entries, MAX_EVENTS, got, wait, 0):
                out = self._completed(got[0])
                if out:
                    return out
            else:
                err = _winerr()
                if err != w.WAIT_TIMEOUT:
                    raise OSError(errno.EIO, f"danga: GetQueuedCompletionStatusEx failed (Windows error {err})",
                                  None, err)
            # nothing to report: a timeout slice, or only cancellations and
            # events nobody wants any more; wait for what is left
            if deadline is not None:
                ms = int((deadline - time.monotonic()) * 1000 + 0.999)
                if ms <= 0 or timeout_ms == 0:
                    return []

    def _completed(self, n: int) -> List[int]:
        out: List[int] = []
        entries = self._entries
        inflight = self._inflight
        regs = self._regs
        arm = self._arm
        for i in range(n):
            ov = entries[i].lpOverlapped
            if ov == ffi.NULL:
                out += (WAKE, READ)
                continue
            reg = inflight.pop(int(ffi.cast("uintptr_t", ov)), None)
            if reg is None:
                log.warning("danga: iocp: a completion for no request of ours (%r); ignored", ov)
                continue
            reg.pending = False
            if reg.dead:
                continue  # unregistered: its request is back, its memory may go now
            status = reg.ov.Internal & 0xFFFFFFFF  # an NTSTATUS in the low half
            if status == w.STATUS_CANCELLED:
                arm[reg] = None  # interest changed: ask again
                continue
            info = reg.info
            events = info.Handles[0].Events if status == w.STATUS_SUCCESS and info.NumberOfHandles else 0
            if status != w.STATUS_SUCCESS or events & w.AFD_POLL_LOCAL_CLOSE:
                # the socket was closed behind the loop's back
                log.debug("danga: iocp: fd %d closed while watched (NTSTATUS %#x); forgetting it", reg.fd, status)
                if regs.get(reg.fd) is reg:
                    del regs[reg.fd]
                continue
            mask = danga_mask(events) & (reg.mask | ERR | HUP)
            if mask:
                out += (reg.fd, mask)
            arm[reg] = None
        return out

    def wake(self) -> None:
        """Make the current (or next) ``poll()`` return ``[WAKE, READ]``;
        safe from any thread."""
        port = self._port
        if port is not None:
            kernel32.PostQueuedCompletionStatus(port, 0, 0, ffi.NULL)

    def channel(self, sock: Any, direct: bool = False) -> Any:
        """The socket's own calls, through ``SocketChannel`` (which adds the
        ``sendmsg`` Windows sockets lack, and POSIX error numbers)."""
        return SocketChannel(sock) if isinstance(sock, socket.socket) else sock

    # -- teardown ----------------------------------------------------------------------

    def close(self) -> None:
        """Cancel every request in flight, wait for each to come back, then
        close the AFD handle and the port."""
        if self._port is None:
            return
        for reg in list(self._regs.values()):
            reg.dead = True
        self._regs.clear()
        self._arm.clear()
        for reg in self._inflight.values():
            reg.dead = True
            self._cancel(reg)
        deadline = time.monotonic() + DRAIN_S
        while self._inflight and time.monotonic() < deadline:
            if kernel32.GetQueuedCompletionStatusEx(self._port, self._entries, MAX_EVENTS, self._got, 100, 0):
                self._completed(self._got[0])
        if self._inflight:
            log.warning("danga: iocp: %d poll requests did not come back after cancellation; "
                        "keeping their memory", len(self._inflight))
            _abandoned.extend(self._inflight.values())
            self._inflight.clear()
        kernel32.CloseHandle(self._afd)
        port, self._port = self._port, None
        kernel32.CloseHandle(port)


class SocketChannel:
    """A Windows socket's byte channel (``danga.contract.ByteChannel``): the
    socket's own bound methods, and a gathering ``sendmsg``."""

    __slots__ = ("fd", "recv", "send", "recvfrom", "sendto")

    def __init__(self, sock: socket.socket) -> None:
        self.fd = sock.fileno()
        self.recv = sock.recv
        self.send = sock.send
        self.recvfrom = sock.recvfrom
        self.sendto = sock.sendto

    def sendmsg(self, buffers: Iterable[Any]) -> int:
        """Gather ``buffers`` into one ``WSASend``; return the bytes taken."""
        keep = [ffi.from_buffer(b) for b in buffers]
        bufs = ffi.new("WSABUF[]", len(keep))
        for i, c in enumerate(keep):
            bufs[i].len = len(c)
            bufs[i].buf = c
        sent = ffi.new("DWORD *")
        if w.ws2_32.WSASend(self.fd, bufs, len(keep), sent, 0, ffi.NULL, ffi.NULL) != 0:
            err = _winerr()
            if err == w.WSAEWOULDBLOCK:
                raise BlockingIOError(errno.EAGAIN, "WSASend would block")
            raise OSError(err, f"WSASend failed: {errno_name(err)} (Windows error {err})")
        return int(sent[0])
