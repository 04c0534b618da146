"""The example servers, run as their README says and driven by real clients."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def start(script, *args, env=None, port_arg=("--port", "0")):
    """Start an example on a free port; return (process, port) once it listens."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / script), *port_arg, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"{script} did not start: {line!r} {proc.stderr.read()}")
    tail = line.rsplit(":", 1)[-1].strip()
    return proc, int(tail) if tail.isdigit() else None


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_echo_example_serves_a_python_client(backend):
    proc, port = start("echo_server.py", env={"DANGA_POLLER": backend})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            payload = os.urandom(200_000)
            c.sendall(payload)
            got = bytearray()
            while len(got) < len(payload):
                got += c.recv(65536)
            assert bytes(got) == payload
    finally:
        stop(proc)


def test_echo_example_serves_nc(backend):
    if shutil.which("nc") is None:
        pytest.skip("nc is not installed (apt-get install netcat-openbsd)")
    proc, port = start("echo_server.py", env={"DANGA_POLLER": backend})
    try:
        out = subprocess.run(["nc", "-q", "1", "127.0.0.1", str(port)], input=b"hello danga\n",
                             capture_output=True, timeout=20)
        assert out.stdout == b"hello danga\n"
    finally:
        stop(proc)


def test_em_client_against_the_echo_server():
    proc, port = start("echo_server.py")
    try:
        out = subprocess.run([sys.executable, str(ROOT / "examples" / "em_echo_client.py"), "--port", str(port),
                              "--count", "500"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("500 round trips in")
    finally:
        stop(proc)


def test_em_client_reports_a_refused_connection():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        out = subprocess.run([sys.executable, str(ROOT / "examples" / "em_echo_client.py"), "--port",
                              str(s.getsockname()[1])], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "ECONNREFUSED" in out.stderr


def read_line(f):
    return f.readline().rstrip("\n")


def test_chat_server_broadcasts_between_clients():
    proc, port = start("chat_server.py")
    try:
        a = socket.create_connection(("127.0.0.1", port), timeout=10)
        b = socket.create_connection(("127.0.0.1", port), timeout=10)
        fa, fb = a.makefile("r"), b.makefile("r")
        assert read_line(fa) == "welcome; your name?"
        a.sendall(b"alice\n")
        assert read_line(fa) == "hello alice; 1 here"
        assert read_line(fb) == "welcome; your name?"
        b.sendall(b"bob\r\n")  # telnet-style line end
        assert read_line(fa) == "* bob joined"
        assert read_line(fb) == "hello bob; 2 here"
        a.sendall(b"hi bob\n")
        assert read_line(fb) == "<alice> hi bob"
        b.sendall(b"/who\n")
        assert read_line(fb) in ("here: alice, bob", "here: bob, alice")
        b.sendall(b"/quit\n")
        assert read_line(fb) == "bye"
        assert read_line(fa) == "* bob left"
        a.sendall(b"x" * 5000 + b"\n")  # over the line limit: closed, not buffered
        assert fa.read() == ""
        a.close()
        b.close()
    finally:
        stop(proc)


def test_udp_echo_example():
    proc, port = start("udp_echo.py")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(10)
            for msg in (b"a", b"datagram two", os.urandom(1400)):
                u.sendto(msg, ("127.0.0.1", port))
                assert u.recvfrom(2048) == (msg, ("127.0.0.1", port))
    finally:
        stop(proc)


@pytest.mark.posix("local:// (Unix-domain sockets)")
def test_unix_echo_example(tmp_path):
    path = str(tmp_path / "echo.sock")
    proc, _ = start("unix_echo.py", port_arg=("--path", path))
    try:
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(10)
            c.connect(path)
            c.sendall(b"over unix")
            assert c.recv(100) == b"over unix"
    finally:
        stop(proc)


@pytest.mark.posix("start_worker() (fork)")
def test_worker_server_offloads_and_keeps_answering():
    proc, port = start("worker_server.py", "--workers", "2")
    try:
        slow = socket.create_connection(("127.0.0.1", port), timeout=30)
        fast = socket.create_connection(("127.0.0.1", port), timeout=30)
        fs, ff = slow.makefile("r"), fast.makefile("r")
        slow.sendall(b"primes 3000000\n")
        fast.sendall(b"ping\n")  # answered while a worker computes
        assert ff.readline() == "pong\n"
        assert fs.readline() == "216816\n"
        fast.sendall(b"primes 100\nbogus\n")  # the error is immediate, the count comes from a worker
        answers = sorted([ff.readline(), ff.readline()])
        assert answers[0] == "25\n" and answers[1].startswith("error:")
        for f in (fs, ff, slow, fast):
            f.close()
    finally:
        stop(proc)
