"""What is particular to the kqueue backend (danga/pollers/kqueue.py).

On Linux this runs against libkqueue, and only where danga was built with it:
``LIBKQUEUE_PREFIX=/path/to/libkqueue pip install -e .``.  The contract
every backend meets is in test_pollers.py; these tests check what the kqueue
helper does on top of kevent(): one pair per fd, EV_ERROR reported against
its fd, fd numbers reused after a close, and data delivered before EV_EOF's
hang-up.  (The ``backend`` fixture runs them once per backend; each uses a
kqueue of its own whatever the backend, so the others skip.)
"""
import errno
import os
import socket

import pytest

import danga
from danga import pollers
from danga.pollers import ERR, HUP, READ, WRITE

from .helpers import pair_at, run

BUILT = "kqueue" in pollers.available()
pytestmark = pytest.mark.skipif(
    not BUILT, reason="kqueue not built: build with LIBKQUEUE_PREFIX=/path/to/libkqueue pip install -e . "
    "(on Linux; native on the BSDs and macOS)")


@pytest.fixture
def kq(backend):
    if backend != "kqueue":
        pytest.skip("kqueue-specific: runs once, under the kqueue backend")
    p = pollers.create("kqueue")
    yield p
    p.close()


def test_read_and_write_of_one_fd_come_back_as_one_pair(kq):
    a, b = socket.socketpair()
    with a, b:
        kq.register(a.fileno(), READ | WRITE)
        b.send(b"x")
        assert kq.poll(1000) == [a.fileno(), READ | WRITE]
        kq.modify(a.fileno(), WRITE)  # the change goes with the next wait
        assert kq.poll(1000) == [a.fileno(), WRITE]
        kq.modify(a.fileno(), READ)
        assert kq.poll(1000) == [a.fileno(), READ]
        kq.unregister(a.fileno())


def test_many_fds_each_one_pair():
    if "kqueue" not in pollers.available():
        pytest.skip("kqueue not built")
    p = pollers.create("kqueue")
    socks = [socket.socketpair() for _ in range(200)]
    try:
        for a, b in socks:
            p.register(a.fileno(), READ | WRITE)
            b.send(b"!")
        ready = p.poll(1000)
        assert len(ready) == 2 * len(socks)
        assert dict(zip(ready[::2], ready[1::2])) == {a.fileno(): READ | WRITE for a, _ in socks}
    finally:
        p.close()
        for a, b in socks:
            a.close()
            b.close()


def test_registering_a_closed_fd_raises_with_its_errno(kq):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError, match=f"kqueue refused to watch fd {r}") as ei:
        kq.register(r, READ)
    assert ei.value.errno == errno.EBADF  # libkqueue itself says EFAULT


def test_a_failed_deferred_change_is_err_on_its_own_fd(kq):
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with b, c, d:
        dead = a.fileno()
        kq.register(dead, READ)
        kq.register(c.fileno(), READ)
        a.close()  # behind the poller's back: its next change fails
        kq.modify(dead, READ | WRITE)
        assert kq.poll(0) == [dead, ERR]  # nothing else ready: the error alone
        kq.modify(dead, 0)
        d.send(b"x")
        assert dict(zip(*[iter(kq.poll(1000))] * 2)) == {dead: ERR, c.fileno(): READ}
        kq.unregister(dead)  # harmless
        kq.unregister(c.fileno())


def test_a_deferred_error_applied_by_a_registration_is_still_reported(kq):
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with b, c, d:
        dead = a.fileno()
        kq.register(dead, READ)
        a.close()
        kq.modify(dead, WRITE)
        kq.register(c.fileno(), READ)  # applies the pending change now; c itself is fine
        assert kq.poll(0) == [dead, ERR]
        kq.unregister(dead)
        kq.unregister(c.fileno())


def test_an_fd_closed_behind_its_back_and_reused_is_watched_afresh(kq):
    a, b = socket.socketpair()
    old = a.fileno()
    kq.register(old, READ)
    a.close()  # no unregister: libkqueue keeps the knote, FreeBSD drops it
    b.close()
    c, d = pair_at(old)
    with c, d:
        kq.register(c.fileno(), READ)
        d.send(b"x")
        assert kq.poll(1000) == [old, READ]
        kq.unregister(old)


def test_an_enable_applied_by_a_registration_is_not_an_error_whatever_errno_was(kq):
    # libkqueue's receipt for EV_ENABLE carried the errno the thread had left
    # over; cffi hands ffi.errno to the next C call, so plant one there
    from danga._ffi_kqueue import ffi
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    with a, b, c, d:
        kq.register(a.fileno(), WRITE)
        kq.modify(a.fileno(), 0)
        assert kq.poll(0) == []
        kq.modify(a.fileno(), WRITE)  # pending: an EV_ENABLE of the write knote
        ffi.errno = errno.EAGAIN  # as a recv that found nothing leaves it
        kq.register(c.fileno(), 0)  # applies the pending enable
        assert kq.poll(0) == [a.fileno(), WRITE]
        kq.unregister(a.fileno())
        kq.unregister(c.fileno())


def test_a_change_still_pending_when_the_number_is_reused_goes_nowhere(kq):
    # tests/test_reliability.py's fd_reused case, at the poller: the old
    # owner's change is pending when the loop sees the number again
    a, b = socket.socketpair()
    old = a.fileno()
    kq.register(old, 0)
    kq.modify(old, READ)  # pending: a delete and an add of the read knote
    a.close()  # behind the poller's back
    b.close()
    c, d = pair_at(old)
    with c, d:
        kq.unregister(old)  # what the loop does before registering the new owner
        kq.register(old, 0)
        kq.modify(old, READ)
        d.send(b"x")
        assert kq.poll(1000) == [old, READ]
        kq.unregister(old)


def test_an_unregister_after_the_number_went_to_another_file_spoils_nothing(kq):
    a, b = socket.socketpair()
    old = a.fileno()
    kq.register(old, READ | WRITE)
    a.close()
    b.close()
    c, d = pair_at(old)  # not registered yet
    with c, d:
        kq.unregister(old)  # the old owner closing: libkqueue's delete fails
        kq.register(old, READ)  # the new socket
        d.send(b"x")
        assert kq.poll(1000) == [old, READ]
        kq.unregister(old)


def test_a_deferred_change_meeting_a_reused_number_is_err_and_the_number_stays_usable(kq):
    a, b = socket.socketpair()
    old = a.fileno()
    kq.register(old, 0)
    a.close()
    b.close()
    c, d = pair_at(old)
    with c, d:
        kq.modify(old, READ)  # the old owner, not knowing: fails at the next wait
        d.send(b"x")
        assert kq.poll(0) == [old, ERR]  # neither silence nor the new socket's data
        kq.unregister(old)  # harmless
        kq.register(old, READ)  # the new socket
        assert kq.poll(1000) == [old, READ]
        kq.unregister(old)


def test_the_other_registrations_survive_a_lost_fd(kq):
    r1, w1 = socket.socketpair()  # wants READ, has data
    r2, w2 = socket.socketpair()  # wants WRITE
    r3, w3 = socket.socketpair()  # had WRITE, now nothing: a disabled write knote
    with r1, w1, r2, w2, r3, w3:
        kq.register(r1.fileno(), READ)
        kq.register(r2.fileno(), WRITE)
        kq.register(r3.fileno(), WRITE)
        kq.modify(r3.fileno(), 0)
        w1.send(b"1")
        w3.send(b"unread")
        expect = {r1.fileno(): READ, r2.fileno(): WRITE}
        assert dict(zip(*[iter(kq.poll(1000))] * 2)) == expect
        a, b = socket.socketpair()
        old = a.fileno()
        kq.register(old, READ)
        a.close()
        b.close()
        c, d = pair_at(old)
        with c, d:
            kq.unregister(old)  # lost: the registrations move to a new kqueue
            assert dict(zip(*[iter(kq.poll(1000))] * 2)) == expect
            kq.modify(r3.fileno(), READ | WRITE)
            assert dict(zip(*[iter(kq.poll(1000))] * 2)) == {**expect, r3.fileno(): READ | WRITE}
            kq.modify(r3.fileno(), 0)
            assert dict(zip(*[iter(kq.poll(1000))] * 2)) == expect
            for fd in (r1.fileno(), r2.fileno(), r3.fileno()):
                kq.unregister(fd)


class Recorder(danga.Socket):
    """Records what the loop delivers; reads 3 bytes at a time."""

    def __init__(self, sock, log):
        super().__init__(sock)
        self.log = log
        self.watch_read(True)

    def event_read(self):
        data = self.read(3)
        self.log.append(("read", data))
        if data is None:
            self.close("eof")

    def event_hup(self):
        self.log.append(("hup", None))
        self.close("hup")


def test_fd_reuse_after_a_close_through_the_loop(kq):
    log = []
    a, b = socket.socketpair()
    first = Recorder(a, log)
    old = first.fd
    first.close("done")
    b.close()
    c, d = pair_at(old)
    second = Recorder(c, log)
    d.send(b"hey")
    run(lambda: ("read", b"hey") in log)
    second.close("done")
    d.close()


def test_fd_reuse_after_a_close_deferred_to_the_end_of_the_pass(kq):
    log = []
    reused = []
    a, b = socket.socketpair()
    old = a.fileno()

    class Closer(Recorder):
        def event_read(self):
            self.close("closing in dispatch")  # deferred: released after the batch
            danga.add_timer(0, reopen)

    def reopen():
        c, d = pair_at(old)
        reused.append((Recorder(c, log), d))
        d.send(b"new")

    Closer(a, log)
    b.send(b"x")
    run(lambda: ("read", b"new") in log)
    s, d = reused[0]
    assert s.fd == old
    s.close("done")
    d.close()
    b.close()


def test_data_still_readable_at_eof_is_delivered_before_the_hangup(kq):
    log = []
    a, b = socket.socketpair()
    s = Recorder(a, log)
    b.send(b"abcdefgh")
    b.close()
    run(lambda: s.closed)
    assert log[:3] == [("read", b"abc"), ("read", b"def"), ("read", b"gh")]
    assert log[3] in (("read", None), ("hup", None))


def test_eof_with_data_is_read_and_hup_in_one_pair(kq):
    a, b = socket.socketpair()
    with a:
        kq.register(a.fileno(), READ)
        b.send(b"tail")
        b.close()
        assert kq.poll(1000) == [a.fileno(), READ | HUP]
        kq.modify(a.fileno(), 0)  # no interest: the hang-up alone
        assert kq.poll(1000) == [a.fileno(), HUP]
        kq.unregister(a.fileno())


def test_a_half_close_is_readable_not_a_hangup(kq):
    a, b = socket.socketpair()
    with a, b:
        kq.register(a.fileno(), READ | WRITE)
        b.shutdown(socket.SHUT_WR)
        assert kq.poll(1000) == [a.fileno(), READ | WRITE]  # as epoll: no HUP while a can still send
        kq.modify(a.fileno(), 0)
        assert kq.poll(0) == []  # the EOF watch does not spin
        kq.unregister(a.fileno())


def test_paused_reading_does_not_spin_on_unread_data(kq):
    a, b = socket.socketpair()
    with a, b:
        kq.register(a.fileno(), 0)
        b.send(b"unread")
        assert kq.poll(0) == []
        kq.modify(a.fileno(), READ)
        assert kq.poll(0) == [a.fileno(), READ]
        kq.unregister(a.fileno())


def test_close_releases_every_descriptor(kq):
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    p = pollers.create("kqueue")
    p.close()
    p.close()  # twice: harmless
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before
