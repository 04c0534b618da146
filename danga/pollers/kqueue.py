"""kqueue(2) through cffi: the only importer of ``danga._ffi_kqueue``.

The BSDs' and macOS's own readiness mechanism.  On Linux it is built only
against libkqueue (``LIBKQUEUE_PREFIX=... pip install .``), an emulation of
kqueue over epoll, and is then used only when asked for by name
(``DANGA_POLLER=kqueue``): that is how danga's test suite checks this
backend on Linux.

How danga's masks map
---------------------
Each watched fd has an EVFILT_READ knote for as long as it is registered.
While READ is wanted it is level-triggered and reports READ; otherwise it
is added with ``EV_CLEAR`` (edge-triggered) and only listens for the end of
the stream, so that HUP and ERR are reported without interest, as epoll
does, and unread data under paused reading never makes the loop spin.
EVFILT_WRITE is made on the first write interest and then only enabled and
disabled.  libkqueue cannot change ``EV_CLEAR`` on a live knote, so a change
of read interest is a delete and an add of the read knote.

One batch gives one (fd, mask) pair per fd: the C helper merges the read and
the write event of an fd.  ``EV_EOF`` is the end of one direction (a
half-close); epoll's HUP is both directions down.  So an ``EV_EOF`` event is
READ (the socket reads b"" and sees its EOF) while reading is wanted, and
HUP/ERR only when ``poll(2)`` on that fd, asking for nothing, says POLLHUP or
POLLERR; an error in ``fflags`` is ERR.  Data still buffered at a hang-up
comes as READ|HUP, and the loop delivers the data before the HUP, as with
epoll.

Changes and their errors
------------------------
``modify`` only appends to a changelist kept in C memory; the next ``poll``
applies it in the same ``kevent()`` call as its wait.  ``register`` and
``unregister`` apply the pending list at once (with ``EV_RECEIPT``, no
wait; under libkqueue one change per call, see below): ``register`` raises the OSError of base.py naming the fd, and
``unregister`` has deleted the knotes before the loop closes the fd (the
loop always unregisters before it closes, even when the close itself is
deferred to the end of the pass).  A deferred change that fails is never
dropped: its fd is reported with ERR in the next batch (the error entry is
found with ``flags & EV_ERROR`` and by its ``ident``).  ``modify`` of a live
fd cannot fail, so this only happens to an fd closed behind the loop's back.
Registering an fd the poller still thinks registered (it was closed behind
the loop's back and its number came back) first deletes the stale knotes,
which is what a native kqueue did when the fd was closed.

Under libkqueue a delete can leave the kqueue unusable for that number (see
below), so there the pending changes are applied one per ``kevent()`` call,
with no event list (a failed one makes its call return -1 and its errno),
before the wait and not with it (``danga_kq_flush``).  A delete that fails
while its fd is open marks the fd *lost*: its remaining changes are dropped, the poller forgets it (a
deferred change of its owner is ERR, as above), and every other
registration moves to a new kqueue before anything else is done
(``_rebuild``); the number can then be registered afresh.  If no new kqueue
can be had (EMFILE), the old one goes on and only the lost numbers are
refused.

Fork
----
A kqueue is not inherited by a child (the BSDs; libkqueue closes its
descriptors in the child with an atfork handler, to match).  The loop
refuses any use of an inherited loop (``ForkedLoopError``) and never
unregisters in a child; ``close()`` in a child only forgets the number,
which may already belong to something else there.

Where libkqueue differs from FreeBSD's kqueue(2)
------------------------------------------------
Measured against libkqueue 2.7.0 on Linux (C probes and this test suite):

* Closing an fd does not drop its knotes.  A new fd of the same number then
  "adds" without error but is never reported.  danga deletes the knotes in
  ``unregister``, before every close the loop makes, and ``register``
  deletes the stale knotes of a number it still holds.  (A delete while the
  number is free works and says so; FreeBSD has dropped the knotes already.)
* That delete goes wrong when the old fd was closed behind the loop's back
  and its number already names another open file: epoll refuses the
  delete (ENOENT: the new file is not in its set), but libkqueue has already
  freed the knote, and the number's epoll state (its ``fd_state``) keeps
  pointing at it.  Every later change for that number in that kqueue reads
  the freed knote's flags: an ``EV_ADD`` of the new file reports success and
  then either watches it or, when the freed memory happens to read as an
  enabled knote, watches nothing, for good; a deferred read-mode change
  (a delete and an add in one call) could give the old owner the new file's
  data.  Which one depends on what the heap holds there, so it varies with
  the process (a C probe watched nothing in about 3 runs of 10; the
  fd_reused test of tests/test_reliability.py passed alone under pytest and
  failed in a suite run and every time in a plain interpreter).  FreeBSD
  has no such state.
  danga finds such a delete at once (it fails while the fd is open) and
  moves to a new kqueue, as said above; tests/test_kqueue.py meets it three
  ways.
* ``EV_ADD`` on an existing socket knote changes nothing (neither
  ``EV_CLEAR`` nor the filter) and reports success; with ``EV_CLEAR`` it
  takes the new udata, without it fails with errno 0, which the receipt
  shows as success.  FreeBSD updates the knote.  danga uses ``EV_ENABLE`` /
  ``EV_DISABLE``, and a delete and an add to change ``EV_CLEAR``.
* A disabled EVFILT_WRITE knote is still reported when epoll says EPOLLHUP;
  FreeBSD never reports a disabled knote.  The helper ignores write events
  that carry ``EV_DISABLE``.
* ``NOTE_LOWAT`` does not exist (not even in the header), so a read knote
  cannot be made to fire on EOF only; danga's EOF watch is ``EV_CLEAR`` on
  both.
* An ``EV_ERROR`` entry keeps the change's own flags (FreeBSD sets the flags
  to ``EV_ERROR`` alone); danga tests the bit.
* ``EV_RECEIPT`` on an ``EV_ENABLE`` also runs the filter's modify, which
  for a socket knote fails unless ``EV_CLEAR`` is given: the knote is
  enabled, but the receipt carries whatever errno the thread had before the
  call (0, a success; EAGAIN left by a ``recv``, an error), so an enable
  applied with receipts was ERR at random.  Under libkqueue danga asks for
  no receipts.
* A change that fails does not end the call: libkqueue writes its error
  entry to the front of the event list and goes on to wait, and if the wait
  times out (or is interrupted) it returns 0 (or -1) without counting the
  entry.  FreeBSD returns at once with only the errors (and the same for
  ``EV_RECEIPT``, which is why the wait never asks for receipts).  Under
  libkqueue the changes are applied before the wait, one per call (see
  above), and a failed one is ERR in the batch of that wait, which then
  does not block.
* ``EV_ADD`` of a descriptor that is not open fails with EFAULT, not EBADF;
  ``register`` reports the real errno (``fcntl(F_GETFD)``'s).
* When epoll says EPOLLERR, libkqueue reads ``SO_ERROR`` into ``fflags``,
  and that read clears the socket's pending error.  The error is still
  reported (ERR), and ``socket_error(fd)`` gives it back for the rest of the
  pass: a failed connect asks for it when ``SO_ERROR`` says 0
  (danga/connecting.py), so it still fails with ECONNREFUSED.
* A kqueue's descriptors (an epoll fd and a pipe whose write end is the
  kqueue fd, watched by a monitoring thread) are released by that thread a
  few milliseconds after ``close()``.  ``close()`` waits (up to a second)
  until the pipe's read end is gone, so that closed means closed.
* Freeing a kqueue that still holds knotes of closed fds has crashed
  libkqueue (in ``epoll_fd_state_del``; not reproduced since, and likely the
  stale ``fd_state`` of the second item); ``close()`` deletes every knote
  first, and so does the move to a new kqueue, while the fds are open.
* A regular file is reported readable only while there are bytes between
  the offset and the end of the file, as on FreeBSD (poll(2) says readable
  always; epoll refuses regular files).  But once libkqueue has seen it at
  the end, it takes the file's stand-in eventfd out of epoll and never puts
  it back (the re-arming code is unfinished): the file is not reported
  again when it grows, nor after ``EV_DISABLE`` and ``EV_ENABLE``, until
  its knote is deleted and added anew.  FreeBSD reports it when it grows.
  danga itself never watches a regular file; one given to
  ``add_other_fds`` would meet this.
* In a forked child libkqueue closes the inherited kqueues itself (an
  atfork handler), as FreeBSD does not inherit them: same for danga.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Any, Callable, Dict, List

from danga._ffi_kqueue import ffi, lib  # type: ignore[import-not-found, unused-ignore]

from .base import refused, retry_eintr

MAX_EVENTS = 1024
MAX_CHANGES = 1024
MAX_ERRS = 256

log = logging.getLogger("danga")


class KqueuePoller:
    """A kqueue, close-on-exec, with level-triggered readiness."""

    name = "kqueue"
    __slots__ = ("_kq", "_k", "_bufs", "_state", "_pid", "_unpack", "_wait", "_sockerrs", "_emulated")

    def __init__(self) -> None:
        self._pid = os.getpid()
        hsize = 1
        while hsize < 2 * (MAX_EVENTS + MAX_ERRS):
            hsize *= 2
        self._bufs = (
            ffi.new("struct kevent[]", MAX_CHANGES),
            ffi.new("struct kevent[]", MAX_EVENTS),
            ffi.new("int[]", 2 * MAX_ERRS),
            ffi.new("int[]", 2 * (MAX_EVENTS + MAX_ERRS)),
            ffi.new("unsigned int[]", hsize),
            ffi.new("int[]", hsize),
            ffi.new("int[]", 2 * MAX_EVENTS),
            ffi.new("int[]", MAX_ERRS),
        )
        changes, evs, errs, out, hgen, hidx, sockerrs, lost = self._bufs
        k = self._k = ffi.new("struct danga_kq *")
        k.maxchanges, k.changes, k.maxevents, k.evs = MAX_CHANGES, changes, MAX_EVENTS, evs
        k.maxerrs, k.errs, k.out, k.hsize, k.hgen, k.hidx = MAX_ERRS, errs, out, hsize, hgen, hidx
        k.sockerrs = sockerrs
        k.maxlost, k.lost = MAX_ERRS, lost
        self._emulated = bool(lib.DANGA_KQ_EMULATED)
        self._sockerrs: Dict[int, int] = {}
        if lib.danga_kq_open(k) < 0:
            err = ffi.errno
            raise OSError(err, f"danga: kqueue failed: {os.strerror(err)}")
        self._kq: int = k.kq
        self._state: Dict[int, int] = {}  # fd -> interest bits and whether a write knote exists
        self._unpack: Callable[[Any, int], List[int]] = ffi.unpack
        self._wait: Callable[[Any, int], int] = lib.danga_kq_wait

    def fileno(self) -> int:
        """The kqueue's descriptor (-1 once closed)."""
        return self._kq

    def register(self, fd: int, mask: int) -> None:
        if fd < 0:
            raise refused(fd, errno.EBADF, self.name)
        k = self._k
        if fd in self._state:  # closed behind our back, number reused: drop the stale knotes
            lib.danga_kq_unregister(k, fd, self._state.pop(fd))
        if k.nlost:
            err = self._rebuild()
            if err and fd in self._unpack(k.lost, k.nlost):
                raise refused(fd, err, self.name)
        state = lib.danga_kq_register(k, fd, mask)
        if state < 0:
            if k.nlost:
                self._rebuild()
            raise refused(fd, -state, self.name)
        self._state[fd] = state
        if k.nlost:  # found while applying other fds' pending changes
            self._rebuild()

    def modify(self, fd: int, mask: int) -> None:
        state = self._state.get(fd)
        if state is None:
            raise refused(fd, errno.ENOENT, self.name)  # as epoll says
        k = self._k
        self._state[fd] = lib.danga_kq_modify(k, fd, state, mask)
        if k.nlost:  # a full changelist was applied
            self._rebuild()

    def unregister(self, fd: int) -> None:
        state = self._state.pop(fd, None)
        if state is not None:
            k = self._k
            lib.danga_kq_unregister(k, fd, state)
            if k.nlost:
                self._rebuild()

    def _rebuild(self) -> int:
        """libkqueue lost track of some fds in this kqueue (``k.lost``, see the
        essay): forget them, and move every other registration to a new
        kqueue.  Returns 0, or the errno that kept the old kqueue (then the
        lost fds cannot be registered again until a rebuild succeeds)."""
        k = self._k
        lost = self._unpack(k.lost, k.nlost)
        for fd in lost:
            self._state.pop(fd, None)
        fds = list(self._state)
        n = len(fds)
        states = ffi.new("int[]", [self._state[fd] for fd in fds])
        failed = ffi.new("int[]", n)
        got: int = lib.danga_kq_rebuild(k, n, ffi.new("int[]", fds), states, failed)
        if got < 0:
            log.warning("danga: libkqueue lost track of fd(s) %s, and a new kqueue failed: %s",
                        lost, os.strerror(-got))
            return -got
        self._kq = k.kq
        self._state = dict(zip(fds, self._unpack(states, n)))
        for fd in self._unpack(failed, got):
            self._state.pop(fd, None)  # reported with ERR in the next batch
        log.warning("danga: libkqueue lost track of fd(s) %s (closed behind the loop's back, the number "
                    "reused); %d registration(s) moved to a new kqueue", lost, n - got)
        return 0

    def poll(self, timeout_ms: int) -> List[int]:
        if self._sockerrs:
            self._sockerrs.clear()
        k = self._k
        if self._emulated and k.nchanges:
            lib.danga_kq_flush(k)  # in calls of their own, so that a lost fd is dealt with first
            if k.nlost:
                self._rebuild()
        n = self._wait(k, timeout_ms)
        if n < 0:
            n = retry_eintr(lambda ms: self._wait(k, ms), timeout_ms, lambda: ffi.errno, "kevent")
        if n == 0:
            return []
        if k.nsockerrs:
            errs = self._unpack(k.sockerrs, 2 * k.nsockerrs)
            self._sockerrs.update(zip(errs[::2], errs[1::2]))
        return self._unpack(k.out, n + n)

    def socket_error(self, fd: int) -> int:
        """The socket error this batch reported for ``fd`` (0 if none).

        libkqueue reads ``SO_ERROR`` to fill an event's ``fflags``, which
        clears it on the socket; this gives it back to whoever asks in the
        same pass (a connect that failed).  A native kqueue leaves the
        socket's error alone, and then both say the same."""
        return self._sockerrs.get(fd, 0)

    def channel(self, sock: Any, direct: bool = False) -> Any:
        return sock  # readiness: the socket's own recv/send

    def close(self) -> None:
        kq, self._kq = self._kq, -1
        state, self._state = self._state, {}
        if kq < 0:
            return
        if os.getpid() != self._pid:
            return  # a forked child: the kqueue was not inherited, the number may be another's now
        # Delete what is left first: libkqueue can crash freeing the knotes
        # of fds that were closed while still registered.
        for fd, st in state.items():
            lib.danga_kq_unregister(self._k, fd, st)
        self._k.nlost = 0
        lib.danga_kq_close(self._k)
