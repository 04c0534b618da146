"""Socket: reading, the write path, interest, addresses, bad input."""
import socket
import threading
import time

import pytest

import danga

from .helpers import Echo, listen, pair, pattern, reader_thread, run, run_for


class Sink(danga.Socket):
    """Collects what it reads until EOF."""

    def __init__(self, sock, chunk=65536):
        super().__init__(sock)
        self.got = bytearray()
        self.eof = False
        self.chunk = chunk
        self.watch_read(True)

    def event_read(self):
        data = self.read(self.chunk)
        if data is None:
            self.eof = True
            self.close("eof")
        else:
            self.got += data


def small_buffers(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return sock


def test_echo_over_tcp_is_byte_exact():
    lst = listen(Echo)
    c = socket.create_connection(("127.0.0.1", lst.port))
    client = Sink(c)
    data = pattern(3_000_000)
    client.write(data)
    run(lambda: len(client.got) >= len(data))
    assert bytes(client.got) == data
    client.close()
    run(lambda: all(s.closed for s in lst.conns))
    lst.close()


def test_read_contract():
    a, b = pair()
    s = danga.Socket(a)
    assert s.read(10) == b""  # nothing ready now
    b.send(b"hello")
    assert s.read(3) == b"hel"
    assert s.read(100) == b"lo"
    b.close()
    assert s.read(10) is None  # EOF
    s.close()
    assert s.read(10) is None  # closed


def test_a_large_read_asks_for_more_only_while_reads_come_back_full():
    """read(n > 64 KiB) reads 64 KiB at a time until one comes back full, then up
    to 256 KiB (never more than n), and 64 KiB again once less than that arrives."""
    from danga import socket as dsocket, sockstate
    # Socket.read spells these as literals on its hot path; they must agree.
    assert (dsocket.READ_SMALL, dsocket.READ_BIG, sockstate.BIG_READS) == (65536, 262144, 64)
    a, b = pair()
    with b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s = danga.Socket(a)
        data = pattern(1 << 20)
        b.settimeout(10)
        sender = threading.Thread(target=b.sendall, args=(data,))
        sender.start()
        time.sleep(0.05)
        got = bytearray()
        sizes = []

        def take(n):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                chunk = s.read(n)
                if chunk:
                    got.extend(chunk)
                    sizes.append(len(chunk))
                    return len(chunk)
                time.sleep(0.001)
            raise AssertionError("no data")

        assert take(1 << 20) == 65536  # the first asks for 64 KiB: it comes back full
        assert take(100_000) <= 100_000  # a full read let the next ask for more, up to n
        assert take(1 << 20) > 65536
        while len(got) < len(data):
            take(1 << 20)
        sender.join()
        assert bytes(got) == data
        assert max(sizes) <= 262144
        b.sendall(b"x" * 100)
        assert take(1 << 20) == 100  # less than 64 KiB...
        b.sendall(b"y" * 200_000)
        time.sleep(0.05)
        assert take(1 << 20) == 65536  # ...and the next asks for 64 KiB again
        s.close()


def test_read_rejects_bad_counts():
    a, b = pair()
    with b:
        s = danga.Socket(a)
        with pytest.raises(ValueError, match="positive"):
            s.read(0)
        with pytest.raises(TypeError, match="byte count"):
            s.read("10")
        s.close()


def test_push_back_is_read_first():
    a, b = pair()
    with b:
        s = danga.Socket(a)
        b.send(b"socket")
        s.push_back_read(b"back")
        assert s.read(2) == b"ba"
        assert s.read(100) == b"ck"  # push-back data is never mixed with socket data
        assert s.read(100) == b"socket"
        s.close()


def test_write_sends_at_once_when_nothing_is_queued():
    a, b = pair()
    with b:
        s = danga.Socket(a)
        assert s.write(b"abc") is True
        assert s.write_buf_size == 0 and not s.watching_write
        assert b.recv(10) == b"abc"
        s.close()


def test_write_queues_the_rest_and_flushes_through_the_loop():
    a, b = pair()
    small_buffers(a)
    s = danga.Socket(a)
    data = pattern(2_000_000)
    assert s.write(data) is False
    assert s.write_buf_size > 0
    assert s.watching_write  # the library turned it on
    t, got = reader_thread(b, len(data))
    run(lambda: s.write_buf_size == 0)
    t.join(10)
    assert bytes(got) == data
    assert not s.watching_write  # and off again once drained
    s.close()
    b.close()


def test_queue_order_with_callables_and_write_none():
    a, b = pair()
    small_buffers(a)
    s = danga.Socket(a)
    order = []
    big = pattern(500_000)
    s.write(big)
    s.write(lambda: order.append(("cb1", s.write_buf_size)))
    s.write(b"tail")
    s.write(lambda: order.append(("cb2", s.write_buf_size)))
    assert s.write_buf_size > 4 + 2
    t, got = reader_thread(b, len(big) + 4)
    run(lambda: len(order) == 2)
    t.join(10)
    assert bytes(got) == big + b"tail"
    assert [name for name, _ in order] == ["cb1", "cb2"]
    assert order[1][1] == 0
    assert s.write(None) is True
    s.close()
    b.close()


def test_callable_on_empty_queue_runs_at_once():
    a, b = pair()
    with b:
        s = danga.Socket(a)
        ran = []
        assert s.write(lambda: ran.append(1)) is True
        assert ran == [1]
        s.close()


def test_queued_bytearray_is_copied():
    a, b = pair()
    small_buffers(a)
    s = danga.Socket(a)
    filler = pattern(400_000)
    s.write(filler)  # fill the socket so the next write is queued
    buf = bytearray(b"A" * 100_000)
    view_src = bytearray(b"B" * 100_000)
    s.write(buf)
    s.write(memoryview(view_src))
    buf[:] = b"x" * 100_000  # the caller reuses its buffers
    view_src[:] = b"y" * 100_000
    t, got = reader_thread(b, len(filler) + 200_000)
    run(lambda: s.write_buf_size == 0)
    t.join(10)
    assert bytes(got) == filler + b"A" * 100_000 + b"B" * 100_000
    s.close()
    b.close()


def test_partially_sent_bytearray_is_copied():
    a, b = pair()
    small_buffers(a)
    s = danga.Socket(a)
    buf = bytearray(pattern(1_000_000))
    expect = bytes(buf)
    assert s.write(buf) is False
    buf[:] = bytes(len(buf))
    t, got = reader_thread(b, len(expect))
    run(lambda: s.write_buf_size == 0)
    t.join(10)
    assert bytes(got) == expect
    s.close()
    b.close()


def test_write_rejects_text_naming_bytes():
    a, b = pair()
    with b:
        s = danga.Socket(a)
        with pytest.raises(TypeError, match="bytes, not str"):
            s.write("text")
        with pytest.raises(TypeError, match="not int"):
            s.write(42)
        s.close()


def test_closed_socket_write_returns_true_and_sends_nothing():
    a, b = pair()
    with b:
        s = danga.Socket(a)
        s.close("done")
        assert s.write(b"lost?") is True
        assert s.closed and s.close_reason == "done"
        s.close("again")  # closing twice is harmless
        assert s.close_reason == "done"
        assert b.recv(10) == b""


def test_write_error_closes_with_reason_and_reports_unsent():
    a, b = pair()
    small_buffers(a)
    s = danga.Socket(a)
    s.write(pattern(1_000_000))
    queued = s.write_buf_size
    assert queued > 0
    b.close()
    run(lambda: s.closed)
    assert s.close_reason in ("EPIPE", "ECONNRESET")
    assert s.unsent == queued


def test_user_write_interest_stays_but_default_event_write_turns_it_off():
    a, b = pair()
    with b:
        s = danga.Socket(a)
        s.watch_write(True)
        run_for(0.2)
        assert not s.watching_write  # default event_write: queue empty -> off
        assert danga.loop_passes() < 20
        s.close()


def test_on_incomplete_write_hook():
    class Hooked(danga.Socket):
        calls = 0

        def on_incomplete_write(self):
            Hooked.calls += 1
            super().on_incomplete_write()

    a, b = pair()
    small_buffers(a)
    s = Hooked(a)
    s.write(pattern(500_000))
    assert Hooked.calls == 1
    s.close()
    b.close()


def test_tcp_cork_and_nodelay_style_options():
    lst = listen(Echo)
    c = socket.create_connection(("127.0.0.1", lst.port))
    s = Sink(c)
    s.tcp_cork(True)
    s.write(b"corked")
    s.tcp_cork(False)
    run(lambda: bytes(s.got) == b"corked")
    s.close()
    run(lambda: all(x.closed for x in lst.conns))
    lst.close()
    a, b = pair()
    with b:
        u = danga.Socket(a)
        u.tcp_cork(True)  # not TCP: ignored, not fatal
        assert not u.closed
        u.close()


def test_ipv4_address_helpers():
    lst = listen(Echo)
    c = socket.create_connection(("127.0.0.1", lst.port))
    s = Sink(c)
    run(lambda: lst.conns)
    server_side = lst.conns[0]
    assert s.peer_ip_string() == "127.0.0.1"
    assert s.peer_addr_string() == f"127.0.0.1:{lst.port}"
    assert server_side.local_addr_string() == f"127.0.0.1:{lst.port}"
    assert server_side.peer_addr_string() == s.local_addr_string()
    assert s.as_string() == f"Sink(R): open to 127.0.0.1:{lst.port}"
    s.close()
    run(lambda: server_side.closed)
    lst.close()


def test_ipv6_address_helpers():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        lst = listen(Echo, "tcp6://[::1]:0")
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    c = socket.create_connection(("::1", lst.port))
    s = Sink(c)
    assert s.peer_ip_string() == "::1"
    assert s.peer_addr_string() == f"[::1]:{lst.port}"
    run(lambda: lst.conns)
    s.close()
    run(lambda: all(x.closed for x in lst.conns))
    lst.close()


@pytest.mark.posix("local:// (Unix-domain sockets)")
def test_unix_address_helpers(tmp_path):
    path = str(tmp_path / "sock")
    lst = listen(Echo, f"local://{path}")
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    s = Sink(c)
    assert s.peer_ip_string() is None  # not junk
    assert s.peer_addr_string() == path
    run(lambda: lst.conns)
    s.close()
    run(lambda: all(x.closed for x in lst.conns))
    lst.close()
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0danga-test-%d" % id(abstract))
    u = danga.Socket(abstract)
    assert u.local_addr_string().startswith("@danga-test-")
    u.close()
    a, b = pair()
    with b:
        p = danga.Socket(a)
        assert p.peer_addr_string() is None and p.peer_ip_string() is None
        p.close()


def test_socket_rejects_non_sockets_and_closed_sockets():
    with pytest.raises(TypeError, match="socket object"):
        danga.Socket(42)
    a, b = pair()
    a.close()
    b.close()
    with pytest.raises(ValueError, match="closed socket"):
        danga.Socket(a)


def test_steal_socket_returns_it_open_and_unregistered():
    a, b = pair()
    s = danga.Socket(a)
    raw = s.steal_socket()
    assert raw is a and raw.fileno() >= 0
    assert s.closed and s.fd not in danga.descriptor_map()
    again = Sink(raw)  # can be wrapped again, no complaint
    b.send(b"hi")
    run(lambda: again.got == b"hi")
    again.close()
    b.close()
    assert s.steal_socket() is None


def test_close_watchers_run_once_with_the_reason():
    a, b = pair()
    s = danga.Socket(a)
    seen = []
    s.add_close_watcher(lambda sock, reason: seen.append((sock, reason)))
    s.close("bye")
    s.close("again")
    s.add_close_watcher(lambda sock, reason: seen.append(("late", reason)))  # already closed: at once
    assert seen == [(s, "bye"), ("late", "bye")]
    b.close()
