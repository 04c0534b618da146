"""The HTTP example's per-phase deadlines (--header-timeout, --body-timeout
with --body-min-rate, --keepalive-timeout) and its shedding of connections
not yet productive, driven by real sockets against the example process."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

resource = pytest.importorskip("resource", reason="POSIX-only: descriptor limits (RLIMIT_NOFILE)")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "http_server.py"


def start_http(root, *args, backend, log, nofile=None, command=None):
    """Start examples/http_server.py (or ``command``, a list that runs it)
    on a free port, its stderr into ``log``, under RLIMIT_NOFILE=``nofile``
    (soft and hard: the example cannot raise it) if given; return (process,
    port) once it listens."""

    def limit():
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    err = open(log, "w")
    proc = subprocess.Popen([*(command or [sys.executable, str(EXAMPLE)]), "--port", "0", "--root", str(root), *args],
                            stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=limit,
                            env={**os.environ, "DANGA_POLLER": backend})
    err.close()
    line = proc.stdout.readline()
    if "listening on" not in line:
        stop(proc)
        raise AssertionError(f"http_server.py did not start: {line!r} {Path(log).read_text()}")
    return proc, int(line.rsplit(":", 1)[-1])


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()


@pytest.fixture
def docroot(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_bytes(b"<h1>hello</h1>\n")
    return root


@pytest.fixture
def server(docroot, backend, tmp_path):
    """``server(*flags)`` starts the example with those flags; all are stopped at the end."""
    procs = []

    def run(*flags, nofile=None):
        proc, port = start_http(docroot, *flags, backend=backend, log=tmp_path / f"server{len(procs)}.log",
                                nofile=nofile)
        procs.append(proc)
        return port

    yield run
    for proc in procs:
        stop(proc)


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def closed_by_server(c, trickle, every=0.2, within=10.0):
    """Send ``trickle`` bytes every ``every`` seconds until the server closes
    the connection (True) or ``within`` seconds pass (False)."""
    end = time.monotonic() + within
    c.settimeout(every)
    while time.monotonic() < end:
        try:
            if c.recv(4096) == b"":
                return True
        except socket.timeout:
            pass
        except ConnectionResetError:
            return True
        try:
            c.sendall(trickle)
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


def response(c):
    """Read one response with a Content-Length; its status."""
    c.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = c.recv(4096)
        assert chunk, "closed mid-body"
        body += chunk
    return int(head.split(b" ")[1])


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_header_deadline_closes_a_client_that_trickles_headers(server):
    port = server("--header-timeout", "0.5")
    with connect(port) as slow, connect(port) as fast:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        fast.sendall(GET)
        assert response(fast) == 200
        # a header line every 0.2 s keeps it from being idle: only the header deadline closes it
        assert closed_by_server(slow, b"X-a: b\r\n")


def test_header_timeout_0_lets_headers_trickle(server):
    port = server("--header-timeout", "0", "--idle-timeout", "1")
    with connect(port) as c:
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        end = time.monotonic() + 3  # three --idle-timeouts: the trickle keeps it from idling
        while time.monotonic() < end:
            c.sendall(b"X-a: b\r\n")
            time.sleep(0.2)
        c.sendall(b"\r\n")
        assert response(c) == 200


def test_keepalive_timeout_closes_a_connection_between_requests(server):
    port = server("--keepalive-timeout", "0.5")
    with connect(port) as c:
        for _ in range(3):  # requests that follow one another are served on the same connection
            c.sendall(GET)
            assert response(c) == 200
        c.settimeout(10)  # then nothing: closed, though --idle-timeout (30 s) is far off
        assert c.recv(4096) == b""


def test_the_next_request_has_its_own_header_deadline(server):
    port = server("--header-timeout", "1", "--keepalive-timeout", "5")
    with connect(port) as c:
        c.sendall(GET)
        assert response(c) == 200
        time.sleep(1.5)  # longer than the header deadline, but waiting between requests is keep-alive time
        c.sendall(GET)
        assert response(c) == 200


def post(size):
    return f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()


def test_body_deadline_closes_a_slow_body(server):
    port = server("--body-timeout", "1", "--body-min-rate", "0")
    with connect(port) as c:
        c.sendall(post(100_000))
        assert closed_by_server(c, b"x" * 10)


def test_body_min_rate_extends_the_body_deadline(server):
    port = server("--body-timeout", "2", "--body-min-rate", "50")
    with connect(port) as c:
        c.sendall(post(1200))
        for _ in range(12):  # 100 bytes every 0.25 s: 3 s in all, each 100 bytes earning 2 s more
            c.sendall(b"x" * 100)
            time.sleep(0.25)
        assert response(c) == 405  # the whole request arrived: answered (POST is not allowed)


def test_body_timeout_0_lets_a_body_trickle(server):
    port = server("--body-timeout", "0", "--idle-timeout", "1")
    with connect(port) as c:
        c.sendall(post(150))
        for _ in range(15):  # 3 s
            c.sendall(b"x" * 10)
            time.sleep(0.2)
        assert response(c) == 405


def test_under_descriptor_pressure_connections_without_a_request_are_shed(server, backend):
    if backend != "epoll":
        pytest.skip("shedding does not depend on the poller; once is enough")
    port = server("--header-timeout", "60", nofile=64)
    slow = []
    try:
        for _ in range(100):  # more than the server's 64 descriptors, none past its headers
            c = connect(port)
            c.sendall(b"GET / HTTP/1.1\r\n")
            slow.append(c)
        with connect(port) as c:
            c.sendall(GET)
            assert response(c) == 200
        shed = sum(closed_by_server(c, b"", every=0.01, within=0.02) for c in slow)
        assert shed >= 100 - 64, f"only {shed} of 100 connections without a request were closed"
    finally:
        for c in slow:
            c.close()
