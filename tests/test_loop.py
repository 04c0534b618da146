"""The loop: dispatch, deferred close, timers, post-loop callbacks, other
fds, and each Danga::Socket bug that danga fixes."""
import logging
import os
import socket
import sys
import time

import pytest

import danga

from .helpers import Plain, hang_up, pair, pattern, run, run_for


class Recorder(danga.Socket):
    """Records the events it gets; optionally reads and closes."""

    def __init__(self, sock, log, name, read=True):
        super().__init__(sock)
        self.log, self.name, self.do_read = log, name, read
        self.watch_read(True)

    def event_read(self):
        self.log.append((self.name, "read"))
        if self.do_read:
            data = self.read(4096)
            if data is None:
                self.close("eof")


# -- deferred close ------------------------------------------------------------


def test_close_race_in_one_batch(backend):
    events = []

    class Closer(danga.Socket):
        victim = None

        def __init__(self, sock, name):
            super().__init__(sock)
            self.name = name
            self.watch_read(True)

        def event_read(self):
            events.append(self.name)
            self.read(100)
            v = Closer.victim
            if v is not None and v is not self and not v.closed:
                v.close("closed from another socket's callback")
                # still in the map until the end of the pass, so the number
                # cannot be reused within this batch
                assert danga.descriptor_map()[v.fd] is v
                assert len(danga.to_close()) == 1

    (a, pa), (b, pb) = pair(), pair()
    sa, sb = Closer(a, "A"), Closer(b, "B")
    Closer.victim = sb
    pa.send(b"x")
    pb.send(b"y")
    run(lambda: sb.closed and sb.fd not in danga.descriptor_map())
    # whichever came first, B never got an event after it was closed
    assert events in (["A"], ["B", "A"])
    assert b.fileno() == -1  # really closed at the end of the pass
    pb.settimeout(5)
    if sys.platform == "win32" or backend == "io_uring":
        # Windows closes gracefully even with unread data; on io_uring the ring
        # has already taken B's byte out of the kernel (it waits, unread, in
        # B's channel), so the kernel has no unread data to reset for.
        assert pb.recv(10) == b""
    else:
        with pytest.raises(ConnectionResetError):  # unread data + close = reset
            pb.recv(10)
    sa.close()
    pa.close()
    pb.close()


@pytest.mark.posix("dup2 onto a socket's number (test_iocp covers a reused number on Windows)")
def test_stale_event_is_not_delivered_to_a_reused_fd(monkeypatch):
    """A and B are readable in one batch.  A's callback steals B's socket,
    closes it, and opens C on B's old number: B's stale event, still in the
    batch, must not reach C (C's first event comes from a later wait)."""
    batches = []
    poller = danga.loop.current().poller()
    real_poll = type(poller).poll

    def recording_poll(self, timeout):
        events = real_poll(self, timeout)
        batches.append(list(events[::2]))
        return events

    monkeypatch.setattr(type(poller), "poll", recording_poll)
    c_got = []

    class C(danga.Socket):
        def __init__(self, sock):
            super().__init__(sock)
            self.watch_read(True)

        def event_read(self):
            c_got.append(self.read(100))

    class A(danga.Socket):
        victim = made = c_peer = None

        def event_read(self):
            self.read(100)
            if self.made is None:
                number = self.victim.fd
                self.victim.steal_socket().close()  # the number is free now
                c_sock, A.c_peer = socket.socketpair()
                if c_sock.fileno() != number:
                    os.dup2(c_sock.fileno(), number)
                    c_sock.close()
                    c_sock = socket.socket(fileno=number)
                A.made = C(c_sock)

    (a, pa), (b, pb) = pair(), pair()
    sa = A(a)  # registered first and readable first: dispatched first
    sa.watch_read(True)
    sb = Plain(b)
    sb.watch_read(True)
    sb.event_read = lambda: c_got.append("B")
    sa.victim = sb
    pa.send(b"go")
    pb.send(b"stale")
    run(lambda: A.made is not None)
    number = A.made.fd
    assert number == sb.fd
    assert any(sa.fd in batch and number in batch for batch in batches), batches
    run_for(0.05)
    assert c_got == []  # neither B's handler nor C saw the stale event
    A.c_peer.send(b"fresh")
    run(lambda: c_got)
    assert c_got == [b"fresh"]
    A.made.close()
    A.c_peer.close()
    sa.close()
    pa.close()
    pb.close()


def test_close_from_a_timer_takes_effect_at_once():
    a, peer = pair()
    s = danga.Socket(a)
    s.watch_read(True)
    danga.add_timer(0.05, lambda: s.close("timer"))
    t0 = time.monotonic()
    run(lambda: s.closed)
    peer.settimeout(5)
    assert peer.recv(10) == b""  # FIN already sent, no unrelated event needed
    assert time.monotonic() - t0 < 4
    assert s.fd not in danga.descriptor_map()
    peer.close()


def test_close_outside_the_loop_is_immediate():
    a, peer = pair()
    s = danga.Socket(a)
    s.close()
    assert a.fileno() == -1 and s.fd not in danga.descriptor_map()
    peer.close()


# -- spinning hazards -------------------------------------------------------------


def test_hup_not_handled_does_not_spin():
    class Stubborn(danga.Socket):
        hups = 0

        def event_hup(self):
            Stubborn.hups += 1  # does not close

        def event_err(self):
            pass

    a, peer = pair()
    s = Stubborn(a)
    hang_up(peer)
    run_for(0.3)
    assert Stubborn.hups == 1
    assert danga.loop_passes() < 10  # not thousands
    s.close()


@pytest.mark.posix("a Unix-domain peer's close is a hang-up with its data still readable (over TCP, a FIN)")
def test_data_arriving_with_hup_is_delivered_before_event_hup():
    class Reader(danga.Socket):
        def __init__(self, sock):
            super().__init__(sock)
            self.got = bytearray()
            self.at_hup = None
            self.watch_read(True)

        def event_read(self):
            data = self.read(65536)  # one chunk per event, as Danga users do
            if data:
                self.got += data

        def event_hup(self):
            self.at_hup = len(self.got)
            self.close("hup")

    a, peer = pair()
    data = pattern(1_000_000)
    s = Reader(a)
    import threading

    def send():
        peer.sendall(data)
        peer.close()

    t = threading.Thread(target=send)
    t.start()
    run(lambda: s.closed)
    t.join()
    assert s.at_hup == len(data) or (s.at_hup is None and bytes(s.got) == data)
    assert bytes(s.got) == data


def test_pushed_back_data_nobody_reads_does_not_spin():
    class Ignorer(danga.Socket):
        calls = 0

        def event_read(self):
            Ignorer.calls += 1  # never reads

    a, peer = pair()
    s = Ignorer(a)
    s.watch_read(True)
    s.push_back_read(b"left over")
    run_for(0.3)
    assert Ignorer.calls >= 1
    assert danga.loop_passes() < 10
    # the data is still there, and arrives with the next readable event
    peer.send(b"more")
    s.event_read = lambda: s.close("done") if s.read(100) == b"left over" else None
    run(lambda: s.closed)
    peer.close()


def test_pushed_back_data_is_delivered_in_the_post_loop_step():
    class Parser(danga.Socket):
        def __init__(self, sock):
            super().__init__(sock)
            self.lines = []
            self.watch_read(True)

        def event_read(self):
            data = self.read(4096)
            if data is None:
                return self.close("eof")
            line, sep, rest = data.partition(b"\n")
            if sep:
                self.lines.append(line)
                if rest:
                    self.push_back_read(rest)

    a, peer = pair()
    s = Parser(a)
    peer.send(b"one\ntwo\nthree\n")
    run(lambda: len(s.lines) == 3)
    assert s.lines == [b"one", b"two", b"three"]
    s.close()
    peer.close()


# -- timers -------------------------------------------------------------------------


def test_timers_fire_in_order_and_never_early():
    fired = []
    t0 = time.monotonic()
    for delay in (0.05, 0.01, 0.03, 0.03, 0.0):
        danga.add_timer(delay, lambda d=delay: fired.append((d, time.monotonic() - t0)))
    run(lambda: len(fired) == 5)
    assert [d for d, _ in fired] == [0.0, 0.01, 0.03, 0.03, 0.05]
    for delay, at in fired:
        assert at >= delay


def test_equal_deadlines_fire_in_fifo_order(monkeypatch):
    order = []
    fixed = time.monotonic() + 0.02
    monkeypatch.setattr(danga.loop, "monotonic", lambda: fixed - 0.02)
    for i in range(20):
        danga.add_timer(0.02, lambda i=i: order.append(i))
    monkeypatch.undo()
    run(lambda: len(order) == 20)
    assert order == list(range(20))


def test_cancelled_timer_never_runs_and_does_not_wake_the_loop():
    ran = []
    t = danga.add_timer(0.1, lambda: ran.append(1))
    t.cancel()
    t.cancel()
    assert not t.active
    assert len(danga.loop.current().timers) == 0
    run_for(0.3)
    assert ran == []
    assert danga.loop_passes() <= 3  # only the run_for timer woke it


def test_cancel_inside_a_callback_and_zero_delay_timers_run_next_pass():
    seen = []
    later = danga.add_timer(0.02, lambda: seen.append("later"))

    def first():
        seen.append("first")
        later.cancel()
        danga.add_timer(0, lambda: seen.append("zero"))

    danga.add_timer(0.01, first)
    run_for(0.1)
    assert seen == ["first", "zero"]


def test_timer_bad_input():
    with pytest.raises(ValueError, match="-1"):
        danga.add_timer(-1, lambda: None)
    with pytest.raises(ValueError):
        danga.add_timer(float("nan"), lambda: None)
    with pytest.raises(TypeError, match="callable"):
        danga.add_timer(1, "not callable")


def test_huge_timer_does_not_overflow_the_wait():
    t = danga.add_timer(2**48, lambda: None)
    run_for(0.05)
    t.cancel()


def test_timers_use_the_monotonic_clock(monkeypatch):
    """Stepping the wall clock does not move timers."""
    monkeypatch.setattr(time, "time", lambda: 0.0)
    fired = []
    danga.add_timer(0.02, lambda: fired.append(1))
    run(lambda: fired, timeout=5)


# -- loop control -------------------------------------------------------------------


def test_post_loop_callback_gets_the_maps_and_ends_the_loop():
    seen = []

    def plc(dmap, other):
        seen.append((dmap is danga.descriptor_map(), other is danga.other_fds()))
        return len(seen) < 3

    danga.set_post_loop_callback(plc)
    danga.set_loop_timeout(0)
    danga.event_loop()
    danga.set_post_loop_callback(None)
    assert seen == [(True, True)] * 3


def test_per_socket_post_loop_callback_and_perl_spelling():
    a, peer = pair()
    s = danga.Socket(a)
    calls = []
    s.SetPostLoopCallback(lambda dm, of: calls.append(1) or len(calls) < 2)
    danga.SetLoopTimeout(0)
    danga.EventLoop()
    assert len(calls) == 2
    s.close()  # removes its callback
    assert s not in danga.loop.current()._plc
    peer.close()


def test_loop_timeout_bounds_the_wait():
    danga.set_loop_timeout(20)
    passes = []
    danga.set_post_loop_callback(lambda dm, of: passes.append(time.monotonic()) or len(passes) < 4)
    danga.event_loop()
    danga.set_post_loop_callback(None)
    assert len(passes) == 4
    with pytest.raises(ValueError):
        danga.set_loop_timeout(-5)


def test_stop_and_no_reentry():
    def inner():
        with pytest.raises(RuntimeError, match="already running"):
            danga.event_loop()
        danga.stop()

    danga.add_timer(0, inner)
    danga.event_loop()


# -- other fds ---------------------------------------------------------------------------


@pytest.mark.posix("a pipe in the loop (Windows: sockets only)")
def test_other_fds_added_while_running_are_watched_and_never_closed():
    r, w = os.pipe()
    got = []

    def on_readable(mask):
        got.append(os.read(r, 100))

    danga.add_timer(0.01, lambda: danga.add_other_fds({r: on_readable}))
    danga.add_timer(0.03, lambda: os.write(w, b"ping"))
    run(lambda: got)
    assert got == [b"ping"]
    assert mask_ok(danga.other_fds(), r)
    assert danga.remove_other_fd(r) is True
    assert danga.remove_other_fd(r) is False
    os.write(w, b"x")
    run_for(0.05)
    os.fstat(r)  # still open: removing never closes
    os.close(r)
    os.close(w)


def mask_ok(fds, fd):
    return fd in fds


@pytest.mark.posix("a pipe in the loop (Windows: sockets only)")
def test_unowned_event_unregisters_without_closing():
    r, w = os.pipe()
    danga.add_other_fds({r: lambda mask: None})
    danga.other_fds().pop(r)  # dropped behind the loop's back (Perl code does this)
    os.write(w, b"x")
    run_for(0.05)
    assert danga.loop_passes() < 10
    os.fstat(r)  # Danga::Socket would have closed it
    os.close(r)
    os.close(w)


def test_regular_file_other_fd_names_fd_and_reason(tmp_path, backend):
    if backend != "epoll":
        pytest.skip("only epoll refuses regular files")
    with open(tmp_path / "f", "wb") as f:
        with pytest.raises(OSError, match=f"fd {f.fileno()}"):
            danga.add_other_fds({f.fileno(): lambda m: None})


# -- exceptions -----------------------------------------------------------------------------


def test_exception_closes_only_the_raising_socket(caplog):
    class Bad(danga.Socket):
        def event_read(self):
            raise RuntimeError("boom")

    class Good(danga.Socket):
        got = b""

        def event_read(self):
            Good.got += self.read(100) or b""

    (a, pa), (b, pb) = pair(), pair()
    bad, good = Bad(a), Good(b)
    bad.watch_read(True)
    good.watch_read(True)
    pa.send(b"x")
    pb.send(b"ok")
    with caplog.at_level(logging.ERROR, logger="danga"):
        run(lambda: bad.closed and Good.got == b"ok")
    assert bad.close_reason == "exception: RuntimeError: boom"
    assert not good.closed
    assert any("boom" in r.getMessage() or r.exc_info for r in caplog.records)
    good.close()
    pa.close()
    pb.close()


def test_timer_exception_is_logged_and_the_loop_goes_on(caplog):
    fired = []
    danga.add_timer(0, lambda: 1 / 0)
    danga.add_timer(0.01, lambda: fired.append(1))
    with caplog.at_level(logging.ERROR, logger="danga"):
        run(lambda: fired)
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)


def test_error_handler_can_reraise_like_perl():
    class Bad(danga.Socket):
        def event_read(self):
            raise KeyError("perl dies")

    a, pa = pair()
    s = Bad(a)
    s.watch_read(True)
    pa.send(b"x")

    def reraise(sock, exc):
        raise exc

    danga.set_error_handler(reraise)
    with pytest.raises(KeyError, match="perl dies"):
        run()
    danga.set_error_handler(None)
    s.close()
    pa.close()


def test_keyboard_interrupt_propagates():
    def interrupt():
        raise KeyboardInterrupt

    danga.add_timer(0, interrupt)
    with pytest.raises(KeyboardInterrupt):
        danga.event_loop()


# -- fork ---------------------------------------------------------------------------------


@pytest.mark.posix("fork")
def test_forked_child_must_reset_and_parent_keeps_working():
    a, peer = pair()
    s = Plain(a)
    s.watch_read(True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            try:
                danga.add_timer(1, lambda: None)
            except danga.ForkedLoopError as e:
                if "danga.reset()" in str(e):
                    code = 2
            try:
                danga.event_loop()
            except danga.ForkedLoopError:
                code += 10
            danga.reset()
            fired = []
            danga.add_timer(0, lambda: fired.append(1))
            danga.set_post_loop_callback(lambda dm, of: not fired)
            danga.event_loop()
            if fired:
                code += 100
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    code = os.read(r, 1)[0]
    os.close(r)
    assert code == 112, code
    # the parent still gets its events: the child took none of them
    peer.send(b"still mine")
    got = []
    s.event_read = lambda: got.append(s.read(100))
    run(lambda: got)
    assert got == [b"still mine"]
    s.close()
    peer.close()
