"""The iocp backend's own promises (Windows only; .ci/windows-test runs them
under Wine): poll requests cancelled on unregister and consumed before their
memory goes, close() draining everything in flight, level-triggered
re-arming, interest changes while a request is in flight, the wake-up, the
gathering sendmsg, Ctrl-C, and the POSIX-only features refusing clearly."""
import signal
import socket
import sys
import threading

import pytest

import danga

from .helpers import listen, run

pytestmark = pytest.mark.skipif(sys.platform != "win32",
                                reason="the iocp backend is Windows-only (.ci/windows-test runs it under Wine)")

if sys.platform == "win32":
    from danga import _winapi
    from danga.pollers import READ, WAKE, WRITE, iocp


@pytest.fixture
def poller():
    p = iocp.IocpPoller()
    yield p
    p.close()


def pairs(events):
    it = iter(events)
    return dict(zip(it, it))


def test_it_is_the_default_backend():
    assert danga.pollers.available() == ["iocp"]
    assert danga.loop.current().poller().name == "iocp"


def test_a_socket_that_stays_readable_is_reported_again(poller):
    a, b = socket.socketpair()
    with a, b:
        poller.register(a.fileno(), READ)
        b.send(b"xyz")
        for _ in range(3):  # not read: every pass reports it
            assert pairs(poller.poll(2000)) == {a.fileno(): READ}
        assert a.recv(10) == b"xyz"
        assert poller.poll(50) == []


def test_unregister_cancels_and_consumes_the_request_before_its_memory_goes(poller):
    a, b = socket.socketpair()
    fd = a.fileno()
    poller.register(fd, READ)
    assert poller.poll(0) == []  # the request is submitted and waits in the kernel
    reg = poller._regs[fd]
    assert reg.pending and poller.in_flight == 1
    poller.unregister(fd)
    assert poller.in_flight == 1  # cancelled, its memory still held for the kernel
    a.close()  # the socket goes at once, as the loop closes it
    b.close()
    # New sockets, perhaps on the old number: the cancelled completion is
    # consumed by the next wait and reported for none of them.
    fresh = [socket.socketpair() for _ in range(8)]
    try:
        for x, _ in fresh:
            poller.register(x.fileno(), READ)
        fresh[0][1].send(b"!")
        ready = pairs(poller.poll(2000))
        assert ready == {fresh[0][0].fileno(): READ}
        assert not reg.pending  # came back and was dropped
        assert reg.ov.Internal & 0xFFFFFFFF == _winapi.STATUS_CANCELLED  # written into memory still ours
        assert poller.in_flight == len(fresh) - 1  # only the new sockets' requests remain
    finally:
        for x, y in fresh:
            x.close()
            y.close()


def test_close_drains_every_request_in_flight():
    p = iocp.IocpPoller()
    socks = [socket.socketpair() for _ in range(40)]
    try:
        for a, _ in socks:
            p.register(a.fileno(), READ | WRITE if a.fileno() % 2 else READ)
        p.poll(0)
        assert p.in_flight > 0
        regs = list(p._inflight.values())
        p.close()
        assert p.in_flight == 0
        assert not any(r.pending for r in regs)  # every one came back before the handles closed
        assert not iocp._abandoned
        p.close()  # twice: harmless
    finally:
        for a, b in socks:
            a.close()
            b.close()


def test_interest_widened_while_a_request_is_in_flight(poller):
    a, b = socket.socketpair()
    with a, b:
        poller.register(a.fileno(), READ)
        assert poller.poll(0) == []  # a READ request is in flight
        poller.modify(a.fileno(), READ | WRITE)  # cancelled and re-armed
        assert pairs(poller.poll(2000)) == {a.fileno(): WRITE}
        poller.modify(a.fileno(), 0)
        assert poller.poll(100) == []  # writable, but nobody asks any more


def test_wake_from_another_thread(poller):
    threading.Timer(0.05, poller.wake).start()
    assert poller.poll(5000) == [WAKE, READ]


def test_call_from_thread_wakes_the_loop():
    got = []
    danga.loop.current().poller()

    def worker():
        danga.call_from_thread(lambda: got.append(threading.current_thread() is threading.main_thread()))

    threading.Thread(target=worker).start()
    run(lambda: got)
    assert got == [True]


def test_sendmsg_gathers_and_says_when_it_would_block():
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        ch = iocp.SocketChannel(a)
        assert ch.sendmsg([b"ab", memoryview(b"cd"), bytearray(b"ef")]) == 6
        b.settimeout(5)
        got = b""
        while len(got) < 6:
            got += b.recv(10)
        assert got == b"abcdef"
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        chunk = b"x" * 65536
        with pytest.raises(BlockingIOError):
            for _ in range(10_000):  # nobody reads b: the buffers fill
                ch.sendmsg([chunk, chunk])


def test_connect_refused_is_named_as_on_posix():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.close()  # nobody listens there now
    failed = []

    class Client(danga.Socket):
        def event_connect_failed(self, error):
            failed.append(error)

    c = danga.connect(f"tcp://127.0.0.1:{port}", Client, timeout=20)
    run(lambda: c.closed, timeout=30)
    assert failed == ["ECONNREFUSED"]
    assert c.close_reason == "connect_failed: ECONNREFUSED"


def test_ctrl_c_ends_the_loop():
    import _thread

    lst = listen(danga.Socket)  # something to wait on, and no timers
    threading.Timer(0.2, _thread.interrupt_main).start()
    danga.event_loop()  # returns: the SIGINT handler stopped it
    lst.close()


def test_posix_only_features_say_so(tmp_path):
    for url in (f"local:///{tmp_path.as_posix()}/s", f"fifo:///{tmp_path.as_posix()}/f", "fd://0",
                "anon:?type=pipe"):
        with pytest.raises(NotImplementedError, match="POSIX-only"):
            danga.connect(url, danga.Socket)
    with pytest.raises(NotImplementedError, match="POSIX-only"):
        danga.serve("tcp://127.0.0.1:0", danga.Socket)
    with pytest.raises(NotImplementedError, match="POSIX-only"):
        danga.workers.start_worker(danga.workers.Worker)
    with pytest.raises(ValueError, match="POSIX-only"):
        danga.add_signal_handler(signal.SIGTERM, lambda signum: None)


def test_a_non_socket_is_refused(poller, tmp_path):
    with open(tmp_path / "f", "wb") as f:
        with pytest.raises(OSError, match="not a socket"):
            poller.register(f.fileno(), READ)
