"""The example servers, run as their README says and driven by real clients."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def start(script, *args, env=None):
    """Start an example on a free port; return (process, port) once it listens."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / script), "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"{script} did not start: {line!r} {proc.stderr.read()}")
    return proc, int(line.rsplit(":", 1)[1])


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
