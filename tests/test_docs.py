"""Every Python block in the README, the tutorial and the porting guide runs.

Each block is a whole program.  It runs in its own interpreter with two
stand-ins so that it ends by itself and never takes a fixed port: listening
addresses get port 0 (a free port, so tests can run in parallel), and
``event_loop()`` (and ``danga.aio.event_loop()``) first connects a client to every listener, sends a line,
waits for the server's reply, then stops the loop.  A block passes when it
exits cleanly and every server it started answered.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.md", ROOT / "docs" / "tutorial.md", ROOT / "docs" / "porting.md"]

PRELUDE = r'''
import re, socket as _socket
import danga

_listen, _run = danga.listen, danga.event_loop
_servers = []

def listen(url, *args, **kw):
    if isinstance(url, str):
        url = re.sub(r":\d+$", ":0", url)
    lst = _listen(url, *args, **kw)
    _servers.append(lst)
    return lst

_create_server = _socket.create_server
def create_server(address, *args, **kw):  # for programs that accept by hand
    sock = _create_server((address[0], 0), *args, **kw)
    _servers.append(sock)
    return sock

def _probe(run):
    replies = []
    clients = []
    for s in _servers:
        sock = s.sock if hasattr(s, "sock") else s
        c = _socket.create_connection(sock.getsockname()[:2], timeout=5)
        c.setblocking(False)
        c.sendall(b"PING hello\n")
        clients.append(c)

    def poll():
        for c in clients:
            try:
                if c.recv(4096):
                    replies.append(c)
            except BlockingIOError:
                pass
        if len(set(replies)) == len(clients):
            danga.stop()

    t = danga.add_periodic_timer(0.02, poll)
    guard = danga.add_timer(10, danga.stop)
    run()
    t.cancel()
    guard.cancel()
    for c in clients:
        c.close()
    assert len(set(replies)) == len(clients), "a server in this block did not answer"

def event_loop():
    _probe(_run)

import danga.aio
_aio_run = danga.aio.event_loop
danga.aio.event_loop = lambda: _probe(_aio_run)

danga.listen, danga.event_loop, danga.EventLoop = listen, event_loop, event_loop
_socket.create_server = create_server
'''


def blocks():
    for path in SOURCES:
        text = path.read_text()
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text[: m.start()].count("\n") + 1
            yield pytest.param(m.group(1), id=f"{path.name}:{line}")


@pytest.mark.parametrize("code", list(blocks()))
def test_documented_program_runs_and_answers(code, tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(PRELUDE + "\n" + code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_source_has_a_block():
    found = {p.split(":")[0] for p in (b.id for b in blocks())}
    assert found == {p.name for p in SOURCES}
