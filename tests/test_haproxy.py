"""examples/http_server.py --proxy-protocol behind a real HAProxy (Debian's
``haproxy``): send-proxy (v1), send-proxy-v2, and HTTP health checks, which
HAProxy sends with a v2 LOCAL header.

The client connects to HAProxy from 127.0.0.5; HAProxy connects to the
danga example from 127.0.0.1.  In --proxy-to mode the example adds
``X-Forwarded-For: <peer_ip_string()>`` to what it forwards to a small
backend here, which records it: 127.0.0.5 there is the proof that the
example saw the client through the PROXY header, not HAProxy's address.
HAProxy listens on a socket the test made (``bind fd@N``), so there is no
port to race for."""
import csv
import http.client
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .test_examples import start

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None,
                                reason="haproxy is not installed (apt-get install -y haproxy)")

CLIENT_IP = "127.0.0.5"


class Recording(BaseHTTPRequestHandler):
    """Answers every GET with the X-Forwarded-For it got, and records (path, X-Forwarded-For)."""

    def do_GET(self):
        xff = self.headers.get("X-Forwarded-For")
        self.server.seen.append((self.path, xff))
        body = f"xff={xff}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    srv.seen = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(10)


@pytest.fixture
def procs():
    """Processes the test starts, stopped (and their pipes closed) at its end."""
    started = []
    yield started
    for p in started:
        p.terminate()
    for p in started:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()


def example(procs, *args):
    """Start examples/http_server.py --proxy-protocol; its port."""
    proc, port = start("http_server.py", "--proxy-protocol", *args)
    procs.append(proc)
    return port


class HAProxy:
    def __init__(self, tmp_path, procs, servers, send_proxy="send-proxy-v2", check="/"):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.admin = str(tmp_path / "haproxy-admin.sock")
        fd = self.listener.fileno()
        lines = [
            "global",
            f"    stats socket {self.admin} level admin",
            "    maxconn 256",
            "defaults",
            "    mode tcp",
            "    timeout connect 2s",
            "    timeout client 10s",
            "    timeout server 10s",
            "frontend fe",
            f"    bind fd@{fd}",
            "    default_backend danga",
            "backend danga",
            "    balance roundrobin",
        ]
        if check:
            lines.append(f"    option httpchk GET {check}")
        for i, port in enumerate(servers):
            checks = " check inter 100ms rise 1 fall 1" if check else ""
            lines.append(f"    server d{i + 1} 127.0.0.1:{port} {send_proxy}{checks}")
        self.config = tmp_path / "haproxy.cfg"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = tmp_path / "haproxy.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.config)], stdout=out,
                                         stderr=subprocess.STDOUT, pass_fds=(fd,))
        procs.append(self.proc)
        self.listener.close()  # haproxy has its own copy

    def stats(self):
        """``show stat`` of the admin socket: {server name: row}; {} until it answers."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(self.admin)
                s.sendall(b"show stat\n")
                out = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
        except (FileNotFoundError, ConnectionRefusedError):
            return {}
        text = out.decode().lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(text.splitlines()) if row["pxname"] == "danga"}

    def wait_until_up(self, names, timeout=10):
        """Wait until each server passed a health check (status UP, L7OK)."""
        deadline = time.monotonic() + timeout
        rows = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"haproxy exited: {self.log.read_text()}"
            rows = self.stats()
            if all(rows.get(n, {}).get("status") == "UP" and rows[n].get("check_status") == "L7OK" for n in names):
                return rows
            time.sleep(0.05)
        raise AssertionError(f"servers not up: {rows} {self.log.read_text()}")

    def get(self, path):
        """GET ``path`` through haproxy, from 127.0.0.5; (status, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, source_address=(CLIENT_IP, 0), timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


def test_send_proxy_v2_with_health_checks_two_backends(tmp_path, procs, recorder):
    """Two danga examples behind HAProxy (send-proxy-v2, HTTP checks every
    100 ms): both see the client's 127.0.0.5, and the checks (v2 LOCAL,
    so the real peer, HAProxy's 127.0.0.1) pass."""
    upstream = f"127.0.0.1:{recorder.server_address[1]}"
    ports = [example(procs, "--proxy-to", upstream) for _ in range(2)]
    hx = HAProxy(tmp_path, procs, ports)
    hx.wait_until_up(["d1", "d2"])
    for i in range(4):
        assert hx.get(f"/client/{i}") == (200, f"xff={CLIENT_IP}".encode())
    seen = list(recorder.seen)
    assert [xff for path, xff in seen if path.startswith("/client/")] == [CLIENT_IP] * 4
    checks = [xff for path, xff in seen if path == "/"]
    assert checks and set(checks) == {"127.0.0.1"}  # LOCAL: the connection's own endpoints
    rows = hx.stats()
    assert int(rows["d1"]["stot"]) >= 2 and int(rows["d2"]["stot"]) >= 2  # round robin over both
    assert all(rows[n]["status"] == "UP" for n in ("d1", "d2"))


def test_send_proxy_v1(tmp_path, procs, recorder):
    upstream = f"127.0.0.1:{recorder.server_address[1]}"
    port = example(procs, "--proxy-to", upstream)
    hx = HAProxy(tmp_path, procs, [port], send_proxy="send-proxy")
    hx.wait_until_up(["d1"])
    assert hx.get("/client/v1") == (200, f"xff={CLIENT_IP}".encode())
    assert ("/client/v1", CLIENT_IP) in recorder.seen


def test_without_send_proxy_the_example_refuses_the_connection(tmp_path, procs, recorder):
    """HAProxy forgot send-proxy: the example closes each connection (no
    header), so the client gets no answer from it, and no request reaches
    the backend with HAProxy's address as the client's."""
    upstream = f"127.0.0.1:{recorder.server_address[1]}"
    port = example(procs, "--proxy-to", upstream)
    hx = HAProxy(tmp_path, procs, [port], send_proxy="", check=None)
    deadline = time.monotonic() + 10
    while not os.path.exists(hx.admin) and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        hx.get("/client/no-header")
    assert recorder.seen == []


def test_root_mode_serves_a_file_behind_haproxy(tmp_path, procs):
    """The example serving files (os.sendfile for big ones) behind HAProxy
    with send-proxy-v2 and checks: a 3 MB file arrives whole."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_bytes(b"<h1>up</h1>\n")
    payload = os.urandom(3_000_000)
    (root / "big.bin").write_bytes(payload)
    port = example(procs, "--root", str(root))
    hx = HAProxy(tmp_path, procs, [port])
    hx.wait_until_up(["d1"])
    status, body = hx.get("/big.bin")
    assert status == 200 and body == payload
    assert hx.get("/index.html") == (200, b"<h1>up</h1>\n")
