"""The Gearman port, driven by the real gearman command-line client and
worker (libgearman), and its packet parser fuzzed."""
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from gearman_server import PacketParser, ProtocolError  # noqa: E402

from .test_examples import start, stop  # noqa: E402

needs_gearman = pytest.mark.skipif(shutil.which("gearman") is None,
                                   reason="the gearman CLI is not installed (apt-get install gearman-tools)")


@pytest.fixture
def gport(backend):
    proc, port = start("gearman_server.py")
    yield port
    stop(proc)


def worker(port, func, *cmd, count=None):
    args = ["gearman", "-p", str(port), "-w", "-f", func] + (["-c", str(count)] if count else []) + ["--", *cmd]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def client(port, func, data, *opts):
    return subprocess.run(["gearman", "-p", str(port), "-f", func, *opts], input=data, capture_output=True,
                          timeout=30)


def admin(port, cmd):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(cmd.encode() + b"\n")
        out = b""
        while not (out.endswith(b".\n") or (cmd == "version" and out.endswith(b"\n"))):
            out += s.recv(4096)
        return out.decode()


def wait_for(pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


@needs_gearman
def test_foreground_job_through_cli_worker(gport):
    w = worker(gport, "rev", "rev")
    try:
        assert wait_for(lambda: "rev\t0\t0\t1" in admin(gport, "status"))
        out = client(gport, "rev", b"hello danga")
        assert out.returncode == 0 and out.stdout == b"agnad olleh"
        assert "rev" in admin(gport, "workers")
        assert admin(gport, "version").startswith("OK ")
    finally:
        w.kill()
        w.wait()


@needs_gearman
def test_background_jobs_run_in_priority_order(gport, tmp_path):
    log = tmp_path / "log"
    for data, opt in ((b"low", "-L"), (b"normal", None), (b"high", "-I")):
        out = client(gport, "note", data, "-b", *([opt] if opt else []))
        assert out.returncode == 0
    assert "note\t3\t0\t0" in admin(gport, "status")
    w = worker(gport, "note", "sh", "-c", f"cat >> {log}; echo >> {log}", count=3)
    try:
        assert w.wait(30) == 0
    finally:
        if w.poll() is None:
            w.kill()
    assert log.read_text().split() == ["high", "normal", "low"]
    assert "note\t0\t0\t0" in admin(gport, "status") or "note" not in admin(gport, "status")


@needs_gearman
def test_unique_ids_coalesce_foreground_jobs(gport):
    first = subprocess.Popen(["gearman", "-p", str(gport), "-f", "slow", "-u", "same"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    second = subprocess.Popen(["gearman", "-p", str(gport), "-f", "slow", "-u", "same"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    first.stdin.write(b"x")
    first.stdin.close()
    second.stdin.write(b"x")
    second.stdin.close()
    try:
        assert wait_for(lambda: "slow\t1\t0\t0" in admin(gport, "status"))  # one job for both
        w = worker(gport, "slow", "tr", "x", "y", count=1)
        assert first.stdout.read() == b"y" and second.stdout.read() == b"y"
        assert w.wait(30) == 0
    finally:
        for p in (first, second):
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()


def test_echo_and_unknown_packets_over_raw_sockets(gport):
    with socket.create_connection(("127.0.0.1", gport), timeout=10) as s:
        s.sendall(b"\0REQ" + struct.pack("!II", 16, 5) + b"hello")
        assert s.recv(100) == b"\0RES" + struct.pack("!II", 17, 5) + b"hello"
        s.sendall(b"\0REQ" + struct.pack("!II", 999, 0))
        assert b"unknown_command" in s.recv(100)
        s.sendall(b"\0BAD" + struct.pack("!II", 1, 0))
        assert b"protocol_error" in s.recv(100)
        assert s.recv(100) == b""


def test_a_thousand_concurrent_connections(gport):
    socks = [socket.create_connection(("127.0.0.1", gport), timeout=30) for _ in range(1000)]
    try:
        for i, s in enumerate(socks):
            body = b"%d" % i
            s.sendall(b"\0REQ" + struct.pack("!II", 16, len(body)) + body)
        for i, s in enumerate(socks):
            body = b"%d" % i
            want = b"\0RES" + struct.pack("!II", 17, len(body)) + body
            got = b""
            while len(got) < len(want):
                got += s.recv(100)
            assert got == want
    finally:
        for s in socks:
            s.close()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=10))
def test_packet_parser_on_random_bytes(data, cuts):
    p = PacketParser()
    cuts = sorted({c for c in cuts if 0 < c < len(data)})
    try:
        for a, b in zip([0] + cuts, cuts + [len(data)]):
            p.feed(data[a:b])
    except ProtocolError:
        return
    assert len(p.buf) <= 8192 + 12 or p.buf[:1] == b"\0"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 42), st.binary(max_size=200)), max_size=20),
       st.lists(st.integers(0, 5000), max_size=20))
def test_packets_any_split(packets, cuts):
    wire = b"".join(b"\0REQ" + struct.pack("!II", k, len(d)) + d for k, d in packets)
    p = PacketParser()
    out = []
    cuts = sorted({c for c in cuts if 0 < c < len(wire)})
    for a, b in zip([0] + cuts, cuts + [len(wire)]):
        out += p.feed(wire[a:b])
    assert out == [("packet", k, d) for k, d in packets]
