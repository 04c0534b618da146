"""The Perlbal-style example: static files and reverse proxy, driven by curl
and http.client; its request parser fuzzed."""
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from httpparse import HttpError, RequestParser  # noqa: E402

from .test_examples import start, stop  # noqa: E402


@pytest.fixture
def docroot(tmp_path):
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "4k.bin").write_bytes(os.urandom(4096))
    (root / "big.bin").write_bytes(os.urandom(3_000_000))
    (root / "sub" / "index.html").write_bytes(b"<h1>index</h1>\n")
    (tmp_path / "secret.txt").write_text("outside the root")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    return root


@pytest.fixture
def web(docroot, backend):
    proc, port = start("http_server.py", "--root", str(docroot), "--idle-timeout", "1")
    yield port, docroot
    stop(proc)


def get(port, path, method="GET", headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, dict(r.getheaders()), body


@pytest.mark.posix("examples/http_server.py opens files with O_CLOEXEC and sends them with os.sendfile")
def test_static_files_and_keep_alive(web):
    port, root = web
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for name in ("4k.bin", "big.bin", "4k.bin"):  # one connection, several requests
        c.request("GET", "/" + name)
        r = c.getresponse()
        assert r.status == 200 and r.read() == (root / name).read_bytes()
        assert r.getheader("Content-Length") == str((root / name).stat().st_size)
    c.close()


@pytest.mark.posix("examples/http_server.py opens files with O_CLOEXEC and sends them with os.sendfile")
def test_head_ranges_and_errors(web):
    port, root = web
    status, headers, body = get(port, "/4k.bin", "HEAD")
    assert status == 200 and body == b"" and headers["Content-Length"] == "4096"
    data = (root / "big.bin").read_bytes()
    status, headers, body = get(port, "/big.bin", headers={"Range": "bytes=1000-1999999"})
    assert status == 206 and body == data[1000:2000000]
    assert headers["Content-Range"] == f"bytes 1000-1999999/{len(data)}"
    assert get(port, "/4k.bin", headers={"Range": "bytes=-10"})[2] == (root / "4k.bin").read_bytes()[-10:]
    assert get(port, "/4k.bin", headers={"Range": "bytes=5000-"})[0] == 416
    assert get(port, "/sub/")[2] == b"<h1>index</h1>\n"
    assert get(port, "/empty/")[0] == 403
    assert get(port, "/nope")[0] == 404
    assert get(port, "/escape")[0] == 403  # a symlink out of the root
    assert get(port, "/%2e%2e/secret.txt")[0] == 403
    status, headers, _ = get(port, "/4k.bin", "POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert get(port, "/" + "a" * 10000)[0] == 414


def raw(port, data, timeout=10):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_malformed_requests_get_400_or_431_and_a_close(web):
    port, _ = web
    assert raw(port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(port, b"GET / HTTP/1.1\r\nBad Header\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(port, b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 3000).startswith(b"HTTP/1.1 431 ")


@pytest.mark.posix("examples/http_server.py opens files with O_CLOEXEC and sends them with os.sendfile")
def test_pipelined_requests_are_answered_in_order(web):
    port, root = web
    req = b"GET /sub/index.html HTTP/1.1\r\nHost: x\r\n\r\n"
    out = raw(port, req * 5 + b"GET /4k.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert out.count(b"<h1>index</h1>") == 5 and out.endswith((root / "4k.bin").read_bytes())


def test_idle_client_is_closed(web):
    port, _ = web
    t0 = time.monotonic()  # before the connect: the server's idle clock cannot start earlier
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert s.recv(10) == b""  # closed by the server's idle sweep
        assert time.monotonic() - t0 >= 1.0


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (apt-get install curl)")
def test_curl(web):
    port, root = web
    out = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/big.bin", f"http://127.0.0.1:{port}/4k.bin"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout == (root / "big.bin").read_bytes() + (root / "4k.bin").read_bytes()
    code = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--path-as-is",
                           f"http://127.0.0.1:{port}/../../etc/passwd"], capture_output=True, text=True, timeout=30)
    assert code.stdout in ("403", "404")


@pytest.mark.posix("examples/http_server.py opens files with O_CLOEXEC and sends them with os.sendfile")
def test_a_thousand_concurrent_clients(web):
    port, root = web
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(1000)]
    try:
        for s in socks:
            s.sendall(b"GET /4k.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        want = (root / "4k.bin").read_bytes()
        for s in socks:
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
            assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(want)
    finally:
        for s in socks:
            s.close()


# -- the reverse proxy ----------------------------------------------------------------------


class Named(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def end_headers(self):
        self.send_header("X-Backend", self.server.name)
        super().end_headers()


@pytest.fixture
def backends(docroot):
    servers = []
    for name in ("one", "two"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: Named(*a, directory=str(docroot), **k))
        srv.name = name
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    yield servers
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_proxy_round_robin_streaming_and_502(backends, docroot, backend):
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))  # bound, not listening: refused
        addrs = [f"127.0.0.1:{s.server_address[1]}" for s in backends] + [f"127.0.0.1:{dead.getsockname()[1]}"]
        proc, port = start("http_server.py", "--proxy-to", ",".join(addrs))
        try:
            seen = []
            for _ in range(6):
                status, headers, body = get(port, "/big.bin")
                seen.append(headers.get("X-Backend") if status == 200 else status)
                if status == 200:
                    assert body == (docroot / "big.bin").read_bytes()
            assert seen == ["one", "two", 502, "one", "two", 502]
            assert get(port, "/nope")[0] == 404  # the backend's answer passes through
        finally:
            stop(proc)


def rss_kib(pid):
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0])


@pytest.mark.posix("reads /proc/PID/status")
def test_proxy_applies_backpressure_to_a_slow_client(backends, docroot, backend):
    payload = os.urandom(1 << 20) * 48  # 48 MiB
    (docroot / "huge.bin").write_bytes(payload)
    addr = f"127.0.0.1:{backends[0].server_address[1]}"
    proc, port = start("http_server.py", "--proxy-to", addr)
    try:
        get(port, "/4k.bin")  # warm up
        before = rss_kib(proc.pid)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            time.sleep(1.0)  # the client does not read: the proxy must stop reading the backend
            grown = rss_kib(proc.pid) - before
            out = bytearray()
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                out += chunk
        assert out.endswith(payload)
        assert grown < 16 * 1024, f"proxy grew by {grown} KiB while its client did not read"
    finally:
        stop(proc)


# -- the parser -------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=10))
def test_request_parser_on_random_bytes(data, cuts):
    p = RequestParser(max_uri=200, max_head=1000, max_body=500)
    cuts = sorted({c for c in cuts if 0 < c < len(data)})
    try:
        for a, b in zip([0] + cuts, cuts + [len(data)]):
            for req in p.feed(data[a:b]):
                assert len(req.body) <= 500
    except HttpError as e:
        assert e.status in (400, 411, 413, 414, 431)
        return
    assert len(p.buf) <= 1000 + 500 + 4


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["GET", "HEAD", "POST"]), st.text("abc/%.", min_size=1, max_size=30),
                          st.binary(max_size=50)), max_size=10), st.lists(st.integers(0, 2000), max_size=10))
def test_pipelined_requests_any_split(reqs, cuts):
    wire = b"".join(f"{m} /{t} HTTP/1.1\r\nHost: h\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b
                    for m, t, b in reqs)
    p = RequestParser()
    out = []
    cuts = sorted({c for c in cuts if 0 < c < len(wire)})
    for a, b in zip([0] + cuts, cuts + [len(wire)]):
        out += p.feed(wire[a:b])
    assert [(r.method, r.target, r.body) for r in out] == [(m, "/" + t, b) for m, t, b in reqs]


@pytest.mark.posix("examples/http_server.py opens files with O_CLOEXEC and sends them with os.sendfile")
def test_a_changed_small_file_is_served_fresh_after_the_cache_ttl(web):
    port, root = web
    (root / "note.txt").write_text("first")
    assert get(port, "/note.txt")[2] == b"first"
    (root / "note.txt").write_text("second version")
    time.sleep(1.1)
    assert get(port, "/note.txt")[2] == b"second version"
