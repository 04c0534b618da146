"""writelines, the line framer's raw mode, and framer instances on a class."""
import errno
import socket
import sys

import pytest
from hypothesis import given, settings, strategies as st

import danga
from danga.framing import FrameError, Lines
from .helpers import Plain, pair, reader_thread, run


def test_writelines_sends_in_order_in_one_call_when_nothing_is_queued():
    a, b = pair()
    s = Plain(a)
    value = bytearray(b"v" * 1000)
    assert s.writelines([b"VALUE k 0 1000\r\n", value, memoryview(b"\r\nEND\r\n")]) is True
    value[:] = b"x" * 1000
    want = b"VALUE k 0 1000\r\n" + b"v" * 1000 + b"\r\nEND\r\n"
    got = b""
    while len(got) < len(want):
        got += b.recv(65536)
    assert got == want
    s.close()
    b.close()


def test_writelines_queues_what_the_kernel_did_not_take_copying_mutable_buffers():
    a, b = pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    s = Plain(a)
    big = bytes(range(256)) * 4096  # 1 MiB, never joined
    mutable = bytearray(b"m" * 300_000)
    t, got = reader_thread(b, 16 + len(big) + len(mutable) + 3 + 4)
    assert s.writelines([b"header-16-bytes!", big, mutable, b"end"]) is False
    mutable[:] = b"X" * len(mutable)  # queued as it was at writelines()
    s.writelines([b"", b"more"])  # behind the backlog
    run(lambda: s.write_buf_size == 0, timeout=20)
    t.join(10)
    assert bytes(got) == b"header-16-bytes!" + big + b"m" * 300_000 + b"end" + b"more"
    s.close()
    b.close()


@pytest.mark.posix("AF_UNIX datagrams")
def test_writelines_on_a_datagram_socket_sends_one_datagram_each():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    s = danga.DatagramSocket(a)
    s.writelines([b"one", b"", b"three"])
    assert [b.recv(100) for _ in range(3)] == [b"one", b"", b"three"]
    s.close()
    b.close()


def test_writelines_rejects_text():
    a, b = pair()
    s = Plain(a)
    with pytest.raises(TypeError, match="not str"):
        s.writelines([b"ok", "text"])
    s.close()
    b.close()


# -- raw mode


def handle(framer, data, out):
    for m in framer.messages(data):
        out.append(m)
        if m.startswith(b"set "):
            framer.expect_raw(int(m.split()[2]) + 2)
        elif m.startswith(b"big "):
            framer.skip(int(m.split()[1]) + 2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 30), max_size=20))
def test_raw_blocks_are_delivered_whole_at_any_split(cuts):
    wire = b"set a 5\r\nhe\nlo\r\nget a\r\nbig 100000\r\n" + b"z" * 100_000 + b"\r\nset b 0\r\n\r\nquit\r\n"
    f, out, pos = Lines(max_size=64), [], 0
    for c in cuts:
        handle(f, wire[pos:pos + c * 997], out)
        pos += c * 997
    handle(f, wire[pos:], out)
    assert out == [b"set a 5", b"he\nlo\r\n", b"get a", b"big 100000", b"set b 0", b"\r\n", b"quit"]
    assert f.buffered == 0


def test_skip_never_buffers_the_skipped_bytes():
    f = Lines(max_size=64)
    assert f.feed(b"big 10000000\r\n") == [b"big 10000000"]
    f.skip(10_000_002)
    for _ in range(100):
        assert f.feed(b"z" * 100_000) == []
        assert f.buffered == 0
    assert f.feed(b"\r\nget k\r\n") == [b"get k"]


def test_expect_raw_beyond_max_raw_is_a_frame_error():
    f = Lines(max_raw=1000)
    with pytest.raises(FrameError, match="raw block of 1001 bytes exceeds the maximum of 1000"):
        f.expect_raw(1001)


class RawConn(danga.Connection):
    framer = Lines(max_size=100)  # an instance: each connection must get its own

    def post_init(self):
        self.got = []

    def receive_data(self, m):
        self.got.append(m)
        if m.startswith(b"set "):
            self.framer.expect_raw(int(m.split()[1]))


def test_a_framer_instance_on_the_class_is_not_shared_between_connections():
    pairs = [pair(), pair()]
    conns = [RawConn(a) for a, _ in pairs]
    assert conns[0].framer is not conns[1].framer and conns[0].framer is not RawConn.framer
    pairs[0][1].sendall(b"AAA")
    pairs[1][1].sendall(b"BBB\n")
    run(lambda: conns[1].got)
    pairs[0][1].sendall(b"\nset 4\nxy\nzget\n")
    run(lambda: len(conns[0].got) == 4)
    assert conns[1].got == [b"BBB"]  # never A's partial line
    assert conns[0].got == [b"AAA", b"set 4", b"xy\nz", b"get"]
    for c in conns:
        c.close()
    for _, b in pairs:
        b.close()


def test_a_framer_that_is_not_a_framer_is_refused():
    class Bad(danga.Connection):
        framer = 42

    a, b = pair()
    with pytest.raises(TypeError, match="Bad.framer must be a Framer class, factory or instance, not int"):
        Bad(a)
    a.close()
    b.close()


# -- addresses and errors a new user meets


def test_a_busy_port_names_the_url_and_keeps_the_errno():
    first = danga.listen("tcp://127.0.0.1:0", Plain)
    url = f"tcp://127.0.0.1:{first.port}"
    reason = "" if sys.platform == "win32" else ": Address already in use"  # Windows words it otherwise
    with pytest.raises(OSError, match=rf"cannot listen on '{url}'{reason}") as err:
        danga.listen(url, Plain)
    assert err.value.errno == errno.EADDRINUSE
    first.close()


def test_listen_and_connect_take_a_host_port_pair_ipv6_without_brackets():
    lst = danga.listen(("127.0.0.1", 0), Plain)
    c = danga.connect(("127.0.0.1", lst.port), Plain)
    run(lambda: not c.connecting and lst.accepted == 1)
    assert c.peer_addr_string() == f"127.0.0.1:{lst.port}"
    c.close()
    lst.close()
    try:
        lst6 = danga.listen(("::1", 0), Plain)
    except OSError:
        pytest.skip("no IPv6 loopback")
    assert lst6.local_addr_string() == f"[::1]:{lst6.port}"
    lst6.close()
    for s in list(danga.descriptor_map().values()):
        s.close()
    with pytest.raises(TypeError, match=r"a URL string or a \(host, port\) pair, got \('x', '80'\)"):
        danga.listen(("x", "80"), Plain)


# -- a graceful stop of one process


class Slow(danga.Socket):
    """Answers a request after 0.3 s, then closes."""

    def __init__(self, sock):
        super().__init__(sock)
        self.watch_read(True)

    def event_read(self):
        data = self.read(100)
        if data:
            danga.add_timer(0.3, lambda: (self.write(b"done:" + data), self.close("served")))
        elif data is None:
            self.close("eof")


def test_stop_with_grace_finishes_open_connections_then_returns():
    lst = danga.listen("tcp://127.0.0.1:0", Slow)
    clients = [socket.create_connection(("127.0.0.1", lst.port)) for _ in range(3)]
    for c in clients:
        c.sendall(b"req")
    run(lambda: lst.connections == 3)
    danga.add_timer(0.05, lambda: danga.stop(grace=5))
    danga.event_loop()  # returns by itself once the three are served
    assert lst.closed and lst.close_reason == "shutdown"
    assert [c.recv(100) for c in clients] == [b"done:req"] * 3
    for c in clients:
        c.close()


def test_stop_with_grace_closes_what_is_left_when_grace_runs_out():
    lst = danga.listen("tcp://127.0.0.1:0", Plain)
    c = socket.create_connection(("127.0.0.1", lst.port))
    run(lambda: lst.connections == 1)
    conn = lst.children()[0]
    danga.stop(grace=0.2)
    danga.event_loop()
    assert conn.closed and conn.close_reason == "shutdown"
    assert c.recv(10) == b""
    c.close()
