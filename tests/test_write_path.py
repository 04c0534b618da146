"""Focused tests of the one write path (and the read path's HUP), one per bug
that a randomized model of the paths found, on real sockets; plus the errors
for objects that are not sockets, and the loop's place in the import graph."""
import ast
import socket
import time
from pathlib import Path

import pytest

import danga
from .helpers import Collector, Plain, hang_up, pair, reader_thread, run, run_for


def small_sndbuf(sock, n=4096):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, n)
    return sock


# -- 1: a queued callable that flushes, then writes more than the kernel takes


def test_callable_that_flushes_then_writes_more_does_not_stall():
    a, b = pair()
    small_sndbuf(a)
    s = Plain(a)
    t, got = reader_thread(b, 500_000)

    def cb():
        s.write(None)
        s.write(b"b" * 300_000)

    s.write(b"a" * 200_000)
    s.write(cb)
    run(lambda: s.write_buf_size == 0, timeout=20)
    t.join(10)
    assert bytes(got) == b"a" * 200_000 + b"b" * 300_000
    assert not s.watching_write  # the library's write interest went off once drained
    s.close()
    b.close()


# -- 2: the hard limit, below the high-water mark


class Limited(danga.Socket):
    write_buffer_limit = 10_000  # below the default 64 KiB high water


def test_write_buffer_limit_holds_below_the_high_water_mark():
    a, b = pair()
    small_sndbuf(a)
    s = Limited(a)
    s.write(b"x" * 50_000)
    assert s.closed and s.close_reason == "write_buffer_limit"
    sent = len(b.recv(1 << 20))
    assert sent + s.unsent == 50_000
    b.close()


# -- 3 and the datagram high-water mark: pause and resume for a datagram backlog


class DgramRecorder(danga.DatagramSocket):
    write_high_water = 2000
    write_low_water = 1000

    def __init__(self, sock):
        super().__init__(sock)
        self.events = []

    def event_write_paused(self):
        self.events.append(("paused", self.write_buf_size))

    def event_write_resumed(self):
        self.events.append(("resumed", self.write_buf_size))


@pytest.mark.posix("AF_UNIX datagrams")
def test_datagram_backlog_pauses_above_high_water_and_resumes_at_low_water():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    small_sndbuf(a, 2048)
    s = DgramRecorder(a)
    for i in range(60):
        s.write(bytes([i]) * 200)
    assert s.events and s.events[0][0] == "paused"
    got = []
    b.setblocking(False)

    def drain_a_few():
        for _ in range(3):
            try:
                got.append(b.recv(4096))
            except BlockingIOError:
                return
        return

    deadline = time.monotonic() + 20
    while len(got) < 60 and time.monotonic() < deadline:
        drain_a_few()
        run_for(0.005)
    assert got == [bytes([i]) * 200 for i in range(60)]
    kinds = [k for k, _ in s.events]
    assert kinds[:2] == ["paused", "resumed"]
    resumed_at = s.events[1][1]
    assert 0 < resumed_at <= 1000, s.events  # at the low-water mark, not only once empty
    s.close()
    b.close()


@pytest.mark.posix("AF_UNIX datagrams")
def test_send_to_backlog_reports_event_write_paused(tmp_path):
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(tmp_path / "rx"))
    tx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    small_sndbuf(tx, 2048)
    s = DgramRecorder(tx)
    for i in range(40):
        s.send_to(bytes([i]) * 200, str(tmp_path / "rx"))
    assert s.events == [("paused", s.events[0][1])] and s.events[0][1] > 2000
    rx.setblocking(False)
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 40 and time.monotonic() < deadline:
        try:
            got.append(rx.recv(4096))
        except BlockingIOError:
            run_for(0.005)
    assert got == [bytes([i]) * 200 for i in range(40)]
    run(lambda: s.write_buf_size == 0)
    assert [k for k, _ in s.events] == ["paused", "resumed"]
    s.close()
    rx.close()


# -- 4: write(None) while connecting keeps the writes queued


class Early(danga.Socket):
    def __init__(self, sock):
        super().__init__(sock)
        self.order = []

    def event_connected(self):
        self.order.append("connected")


def test_write_none_while_connecting_keeps_writes_for_after_event_connected():
    lst = danga.listen("tcp://127.0.0.1:0", Plain)
    c = danga.connect(f"tcp://127.0.0.1:{lst.port}", Early)
    assert c.connecting
    assert c.write(b"early") is False
    assert c.write(None) is False  # nothing may go out before the connection is reported
    assert c.connecting and c.write_buf_size == 5
    c.write(lambda: c.order.append("callable"))
    assert c.order == []
    run(lambda: c.order == ["connected", "callable"])
    assert c.write_buf_size == 0
    c.close()
    lst.close()
    for s in list(danga.descriptor_map().values()):
        s.close()


# -- 5: HUP while reading is paused waits for the data still unread


PausedReader = Collector  # not watching read until the test says so


def test_hup_while_reading_is_paused_keeps_the_unread_bytes():
    a, b = pair()
    s = PausedReader(a)  # not watching read
    b.sendall(b"still unread")
    b.close()
    run_for(0.2)
    assert not s.closed  # the HUP waits behind the unread data
    s.watch_read(True)
    run(lambda: s.closed)
    assert bytes(s.got) == b"still unread" and s.close_reason == "eof"


def test_hup_while_reading_is_paused_with_nothing_unread_is_reported_at_once():
    a, b = pair()
    s = PausedReader(a)
    tcp = b.family != getattr(socket, "AF_UNIX", None)
    hang_up(b)
    run(lambda: s.closed)
    # over TCP (Windows) the hang-up is a reset, which is an error too: event_err comes first
    assert s.close_reason == ("event_err" if tcp else "event_hup")


# -- 6: a strided memoryview is accepted whether or not something is queued


def test_strided_memoryview_is_sent_queued_or_not():
    a, b = pair()
    small_sndbuf(a)
    s = Plain(a)
    t, got = reader_thread(b, 3 + 200_000 + 3)
    assert s.write(memoryview(b"abcdef")[::2]) is True  # nothing queued
    s.write(b"x" * 200_000)
    assert s.write_buf_size > 0
    s.write(memoryview(b"uvwxyz")[1::2])  # queued behind the backlog
    run(lambda: s.write_buf_size == 0)
    t.join(10)
    assert bytes(got) == b"ace" + b"x" * 200_000 + b"vxz"
    s.close()
    b.close()


# -- 7: DatagramSocket.write(b"") is a datagram, queued or not


@pytest.mark.posix("AF_UNIX datagrams")
def test_empty_datagram_is_sent_whether_or_not_others_are_queued():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    small_sndbuf(a, 2048)
    s = danga.DatagramSocket(a)
    assert s.write(b"") is True
    sent = [b""]
    i = 0
    while s.write_buf_size == 0:  # fill the peer until datagrams queue
        d = bytes([i % 256]) * 100
        s.write(d)
        sent.append(d)
        i += 1
    s.write(b"")
    sent.append(b"")
    b.setblocking(False)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < len(sent) and time.monotonic() < deadline:
        try:
            got.append(b.recv(4096))
        except BlockingIOError:
            run_for(0.005)
    assert got == sent
    s.close()
    b.close()


# -- a busy DatagramSocket is not closed as idle


class IdleEcho(danga.DatagramSocket):
    max_idle_time = 0.5

    def event_read(self):
        got = self.read_from()
        if got and got[1] is not None:
            self.send_to(got[0], got[1])


def test_busy_datagram_socket_is_not_closed_by_the_idle_sweep():
    srv = danga.listen("udp://127.0.0.1:0", IdleEcho)
    port = srv.sock.getsockname()[1]
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.setblocking(False)
    replies = []

    def ping():
        cli.sendto(b"ping", ("127.0.0.1", port))
        try:
            while True:
                replies.append(cli.recv(100))
        except BlockingIOError:
            pass

    pinger = danga.add_periodic_timer(0.1, ping)
    run_for(1.5)  # three idle periods, busy all the time
    pinger.cancel()
    assert not srv.closed and len(replies) >= 8
    run(lambda: srv.closed, timeout=5)  # idle now: the sweep closes it
    assert srv.close_reason == "idle_timeout"
    cli.close()


# -- objects that are not sockets


def test_a_file_object_is_refused_naming_its_type_and_fd(tmp_path):
    with open(tmp_path / "f", "wb") as f:
        with pytest.raises(TypeError, match=rf"BufferedWriter \(fd {f.fileno()}\).*fd://{f.fileno()}"):
            danga.Socket(f)
    with pytest.raises(ValueError, match="closed BufferedWriter"):
        danga.Socket(f)


@pytest.mark.parametrize("bad, error, words", [
    (7, TypeError, r"got int 7; to wrap descriptor 7, pass socket.socket\(fileno=7\)"),
    (None, TypeError, "got NoneType None"),
    ("tcp://127.0.0.1:1", TypeError, "got str"),
    (object(), TypeError, r"socket object \(socket.socket\), got object"),
])
def test_non_sockets_are_refused_with_what_was_given(bad, error, words):
    with pytest.raises(error, match=words):
        danga.Socket(bad)


def test_a_closed_socket_is_refused():
    a, b = pair()
    a.close()
    b.close()
    with pytest.raises(ValueError, match=r"closed socket \(fileno\(\) is -1\)"):
        danga.Socket(a)
    assert not danga.descriptor_map()


# -- the loop imports nothing above it


def test_loop_imports_nothing_above_it():
    allowed = {"pollers", "contract", "timers", "sweep"}
    for name in ("loop", "contract", "timers", "sweep"):
        tree = ast.parse((Path(danga.__file__).parent / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                mods = {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
                assert mods <= allowed, f"{name}.py imports {mods - allowed}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("danga") for a in node.names), f"{name}.py imports danga"


# -- a DatagramSocket reads an empty datagram as b"", never as EOF


class DgramCollector(danga.DatagramSocket):
    def __init__(self, sock):
        super().__init__(sock)
        self.got = []
        self.watch_read(True)

    def event_read(self):
        data = self.read()
        if data is None:
            self.close("read_error")
        else:
            self.got.append(data)


@pytest.mark.posix("AF_UNIX datagrams")
def test_an_empty_datagram_reads_as_empty_bytes_and_keeps_the_socket_open():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    s = DgramCollector(a)
    for d in (b"one", b"", b"three"):
        b.send(d)
    run(lambda: b"three" in s.got)
    assert not s.closed
    assert [d for d in s.got if d] == [b"one", b"three"]
    s.close()
    b.close()
