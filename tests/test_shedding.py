"""Shedding under descriptor pressure: connections not yet productive go
first, oldest first; clients that finish their request are served.

In-process tests use a tiny ``shed_threshold`` so every accept is "under
pressure" without touching this process's descriptor limit; the tests with a
real limit of 64 run the server in a child process started with that limit."""
import gc
import os
import socket
import subprocess
import sys
import textwrap

import pytest

import danga
from danga import shedding

from .helpers import run, run_for

resource = pytest.importorskip("resource", reason="POSIX-only: descriptor limits (RLIMIT_NOFILE)")


class Request(danga.Socket):
    """A line protocol: unproductive until a full line arrived, then "ok"."""

    def __init__(self, sock):
        super().__init__(sock)
        self.buf = b""
        self.set_deadline(30, "header_timeout")
        self.watch_read(True)

    def event_read(self):
        data = self.read(4096)
        if not data:
            if data is None:
                self.close("eof")
            return
        self.buf += data
        if b"\n" in self.buf:
            self.set_deadline(None)
            self.write(b"ok\n")


def test_the_registry_keeps_marks_oldest_first_and_forgets_the_dead():
    a1, b1 = socket.socketpair()
    a2, b2 = socket.socketpair()
    a3, b3 = socket.socketpair()
    s1, s2, s3 = danga.Socket(a1), danga.Socket(a2), danga.Socket(a3)
    reg = shedding.registry()
    for s in (s1, s2, s3):
        s.mark_unproductive()
    assert not s1.productive and reg.oldest(10) == [s1, s2, s3]
    s1.mark_unproductive()  # marked again: the youngest now
    assert reg.oldest(2) == [s2, s3]
    s2.mark_productive()
    assert s2.productive and reg.oldest(10) == [s3, s1]
    s3.close()
    assert reg.oldest(10) == [s1]  # closed ones are skipped and forgotten
    s1.set_deadline(None)  # clearing a deadline clears the mark
    assert reg.oldest(10) == []
    s4 = danga.Socket(b1)
    s4.set_deadline(10)
    assert not s4.productive
    for s in (s1, s2, s4):
        s.close()
    for x in (b2, b3):
        x.close()


def test_a_collected_socket_leaves_the_registry():
    reg = shedding.registry()
    a, b = socket.socketpair()
    s = danga.Socket(a)
    s.mark_unproductive()
    assert len(reg) == 1
    s.close()
    run_for(0.01)  # the end of the pass releases it
    del s
    gc.collect()
    assert len(reg) == 0
    b.close()


def _client(port, data=b""):
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    if data:
        c.sendall(data)
    return c


def _closed_by_server(c):
    c.settimeout(5)
    try:
        return c.recv(100) == b""
    except ConnectionResetError:
        return True


def test_under_pressure_the_oldest_unproductive_connections_are_shed():
    calls = []

    def policy(listener, wanted):
        calls.append(wanted)
        return shedding.shed_oldest_unproductive(listener, 2)

    lst = danga.listen("tcp://127.0.0.1:0", Request, shed_threshold=1e-9, shed_policy=policy)
    port = lst.port
    slow = []
    for i in range(4):  # each accept is "under pressure": the oldest slow ones go
        slow.append(_client(port, b"GET"))
        run(lambda i=i: lst.accepted == i + 1)
    done = _client(port, b"line\n")
    run(lambda: lst.accepted == 5)
    run(lambda: len(calls) == 5)
    assert all(w >= 1 for w in calls)
    # the policy closed 2 each time from the marked ones, oldest first; the
    # client that finished its line was never a candidate
    done.settimeout(5)
    assert done.recv(10) == b"ok\n"
    assert _closed_by_server(slow[0]) and _closed_by_server(slow[1])
    assert lst.shed >= 3
    for c in lst.children():
        assert c.close_reason is None
    for s in [c for c in lst.children()]:
        s.close()
    lst.close()
    run_for(0.01)
    for c in slow + [done]:
        c.close()


def test_shedding_can_be_turned_off_and_rejects_bad_options():
    lst = danga.listen("tcp://127.0.0.1:0", Request, shed_threshold=None)
    c = _client(lst.port, b"GET")
    run(lambda: lst.accepted == 1)
    assert lst.shed == 0
    lst.children()[0].close()
    lst.close()
    run_for(0.01)
    c.close()
    with pytest.raises(ValueError, match="shed_threshold"):
        danga.listen("tcp://127.0.0.1:0", Request, shed_threshold=1.5)
    with pytest.raises(TypeError, match="shed_policy"):
        danga.listen("tcp://127.0.0.1:0", Request, shed_policy=3)


def test_a_policy_that_raises_is_reported_and_the_listener_goes_on():
    errors = []
    danga.set_error_handler(lambda s, e: errors.append(e))

    def policy(listener, wanted):
        raise RuntimeError("policy broke")

    lst = danga.listen("tcp://127.0.0.1:0", Request, shed_threshold=1e-9, shed_policy=policy)
    c1 = _client(lst.port, b"a\n")
    run(lambda: lst.accepted == 1)
    c2 = _client(lst.port, b"b\n")
    run(lambda: lst.accepted == 2)
    c1.settimeout(5)
    assert c1.recv(10) == b"ok\n"
    assert errors and "policy broke" in str(errors[0])
    danga.set_error_handler(None)
    for s in lst.children():
        s.close()
    lst.close()
    run_for(0.01)
    c1.close()
    c2.close()


# -- a real limit of 64 descriptors, in a child process ---------------------------------------

SERVER = textwrap.dedent("""
    import signal
    import sys
    import danga
    sys.path.insert(0, sys.argv[1])
    from tests.test_shedding import Request
    threshold = None if sys.argv[2] == "none" else float(sys.argv[2])
    lst = danga.listen("tcp://127.0.0.1:0", Request, shed_threshold=threshold)
    print(lst.port, flush=True)
    def report(signum):
        print("shed", lst.shed, "dropped", lst.dropped, flush=True)
        danga.stop()
    danga.add_signal_handler(signal.SIGTERM, report)
    danga.event_loop()
""")


def _limited_server(threshold):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen([sys.executable, "-c", SERVER, here, threshold], stdout=subprocess.PIPE, text=True,
                            preexec_fn=limit)
    port = int(proc.stdout.readline())
    return proc, port


def _fast_request(port):
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        c.sendall(b"hello\n")
        got = b""
        while not got.endswith(b"\n"):
            chunk = c.recv(10)
            if not chunk:
                break
            got += chunk
        return got == b"ok\n"
    except OSError:
        return False
    finally:
        c.close()


@pytest.mark.parametrize("threshold", ["0.9", "none"])
def test_with_64_descriptors_slow_clients_are_shed_and_fast_ones_served(backend, threshold):
    if backend != "epoll":
        pytest.skip("the child process runs the default backend; once is enough")
    proc, port = _limited_server(threshold)
    slow, served, asked = [], 0, 0
    try:
        for i in range(150):  # far more slow clients than the process has descriptors
            try:
                slow.append(_client(port, b"GET / HTTP/1.1"))  # no end of line: not productive
            except OSError:
                pass
            if i % 10 == 9:
                asked += 1
                served += _fast_request(port)
        for _ in range(5):
            asked += 1
            served += _fast_request(port)
        assert served == asked, f"{asked - served} of {asked} fast clients not served"
        shed = sum(_closed_by_server(c) for c in slow[:40])
        assert shed == 40, "the oldest slow clients were not shed"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        for c in slow:
            c.close()
    last = [ln for ln in out.splitlines() if ln.startswith("shed")][-1].split()
    assert int(last[1]) >= 40, last


def test_fd_limit_and_batch():
    assert shedding.fd_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert shedding.shed_batch(1024) == 32 and shedding.shed_batch(10) == 1
