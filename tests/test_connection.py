"""Connection (EventMachine style), periodic timers, next_tick, Channel."""
import socket
import threading

import pytest

import danga

from .helpers import Echo, run, run_for, shutdown


class Recorder(danga.Connection):
    def post_init(self):
        self.events = ["post_init"]
        self.data = []

    def receive_data(self, data):
        self.data.append(data)

    def connection_completed(self):
        self.events.append("completed")

    def unbind(self, reason):
        self.events.append(("unbind", reason))


def test_connection_lifecycle_both_sides():
    lst = danga.listen("tcp://127.0.0.1:0", Recorder)
    c = danga.connect(f"tcp://127.0.0.1:{lst.port}", Recorder)
    c.send_data(b"hi")
    run(lambda: lst.accepted == 1)
    server = next(s for s in danga.descriptor_map().values() if isinstance(s, Recorder) and s is not c)
    run(lambda: server.data == [b"hi"])
    assert c.events == ["post_init", "completed"]
    assert server.peer == c.sock.getsockname()
    server.send_data(b"back")
    run(lambda: c.data == [b"back"])
    c.close_connection()
    run(lambda: server.closed)
    assert server.events == ["post_init", ("unbind", "eof")]
    assert c.events[-1] == ("unbind", "close_connection")
    lst.close()


def test_close_after_writing_flushes_first():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn = Recorder(a)
    payload = bytes(range(256)) * 2000
    conn.send_data(payload)
    assert conn.get_outbound_data_size() > 0
    conn.close_after_writing()
    assert not conn.closed  # not yet: data is queued
    got = bytearray()

    def reader():
        while True:
            chunk = b.recv(65536)
            if not chunk:
                return
            got.extend(chunk)

    t = threading.Thread(target=reader)
    t.start()
    run(lambda: conn.closed)
    t.join(10)
    assert bytes(got) == payload
    assert conn.events[-1] == ("unbind", "close_after_writing")
    b.close()


def test_pause_and_resume():
    a, b = socket.socketpair()
    conn = Recorder(a)
    conn.pause()
    assert conn.paused
    b.send(b"held")
    run_for(0.05)
    assert conn.data == []
    conn.resume()
    run(lambda: conn.data == [b"held"])
    conn.close()
    b.close()


def test_inactivity_timeout():
    a, b = socket.socketpair()
    conn = Recorder(a)
    conn.set_inactivity_timeout(0.1)
    run(lambda: conn.closed, timeout=5)
    assert conn.events[-1] == ("unbind", "idle_timeout")
    b.close()


class LineConn(Recorder):
    framer = lambda: danga.Lines(max_size=16)  # noqa: E731


def test_framer_delivers_messages_and_oversize_closes():
    a, b = socket.socketpair()
    conn = LineConn(a)
    b.send(b"one\ntw")
    b.send(b"o\nthree")
    run(lambda: conn.data == [b"one", b"two"])
    conn.send_data(b"reply")
    assert b.recv(100) == b"reply\n"
    b.send(b"x" * 100)
    run(lambda: conn.closed)
    assert conn.events[-1][1].startswith("frame_error: line longer than the maximum of 16")
    b.close()


def test_connect_failure_reaches_unbind():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        c = danga.connect(f"tcp://127.0.0.1:{s.getsockname()[1]}", Recorder)
        run(lambda: c.closed)
    assert c.events == ["post_init", ("unbind", "connect_failed: ECONNREFUSED")]


def test_periodic_timer_and_next_tick():
    ticks, order = [], []
    p = danga.add_periodic_timer(0.02, lambda: ticks.append(1))
    danga.next_tick(lambda: order.append("a"))
    danga.next_tick(lambda: order.append("b"))
    run(lambda: len(ticks) >= 3)
    p.cancel()
    n = len(ticks)
    run_for(0.1)
    assert len(ticks) == n and order == ["a", "b"]
    with pytest.raises(ValueError):
        danga.add_periodic_timer(0, lambda: None)


def test_both_styles_in_one_loop():
    lst = danga.listen("tcp://127.0.0.1:0", Echo)  # Danga style server
    c = danga.connect(f"tcp://127.0.0.1:{lst.port}", Recorder)  # EventMachine style client
    c.send_data(b"mixed")
    run(lambda: c.data == [b"mixed"])
    shutdown(c, lst)


# -- Channel ------------------------------------------------------------------------------


def test_channel_broadcast_join_leave():
    ch = danga.Channel("room", framer=danga.Lines())
    pairs = [socket.socketpair() for _ in range(3)]
    members = [Recorder(a) for a, _ in pairs]
    ids = [ch.join(m) for m in members]
    assert len(ch) == 3 and ch.get(ids[0]) is members[0]
    assert ch.broadcast(b"hello", exclude=members[0]) == 2
    assert pairs[1][1].recv(100) == b"hello\n" and pairs[2][1].recv(100) == b"hello\n"
    assert ch.leave(members[1]) and not ch.leave(members[1])
    members[2].close()
    assert ch.broadcast(b"again") == 1
    assert len(ch) == 1
    for m in members:
        m.close()
    for _, b in pairs:
        b.close()


def test_channel_drops_a_slow_member_without_copying():
    ch = danga.Channel("feed", max_backlog=256 * 1024)
    fast_a, fast_b = socket.socketpair()
    slow_a, slow_b = socket.socketpair()
    if slow_a.family != getattr(socket, "AF_UNIX", None):  # Windows: TCP, whose buffers grow to megabytes
        slow_a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        slow_b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    fast = Recorder(fast_a)
    slow = Recorder(slow_a)
    ch.join(fast)
    ch.join(slow)
    msg = bytes(64 * 1024)
    got = 0
    for _ in range(40):
        ch.broadcast(msg)
        fast_b.setblocking(False)
        try:
            while True:
                got += len(fast_b.recv(1 << 20))
        except BlockingIOError:
            pass
        run_for(0.001)
    assert slow.closed and slow.close_reason == "channel_backlog"
    assert not fast.closed and slow not in ch and len(ch) == 1
    # queued broadcast data is the same object in every queue (no copies)
    fast.close()
    slow_b.close()
    fast_b.close()


def test_broadcast_queues_the_same_object():
    ch = danga.Channel("ref")
    socks = [socket.socketpair() for _ in range(2)]
    for a, _ in socks:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    members = [Recorder(a) for a, _ in socks]
    for m in members:
        ch.join(m)
    ch.broadcast(bytes(300_000))  # partly sent at once, the rest queued
    ch.broadcast(b"second")
    queued = [m._Socket__wq.items[-1] for m in members]
    assert queued[0] is queued[1]
    for m in members:
        m.close()
    for _, b in socks:
        b.close()
