"""serve()'s reload: SIGHUP re-executes the master in place with new code;
under a closed-loop load (the C load generator, 50 connections that keep
reconnecting) nothing is refused, reset or corrupted, ten times over.  And
socket activation: descriptors handed over by systemd-socket-activate."""
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import os, sys
sys.path.insert(0, {examples!r})
import danga
from echo_server import Echo
generation = open(sys.argv[1]).read().strip()  # "the code": read afresh by every new image
if generation == "broken":
    raise ImportError("the new code is broken")
def ready(port):
    print(port, generation, os.getpid(), flush=True)
danga.serve("tcp://127.0.0.1:0", Echo, processes=2, grace=5, on_ready=ready)
print("master done", flush=True)
""".format(examples=str(ROOT / "examples"))


def children_of(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc) to build bench/loadgen.c")
    exe = tmp_path_factory.mktemp("loadgen") / "loadgen"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(ROOT / "bench" / "loadgen.c"), "-lssl", "-lcrypto"],
                   check=True)
    return exe


class Lines:
    """A stream's lines, read by a thread (so that a wait has a timeout and
    no line is lost in a buffer between selects).  The thread owns the
    stream and closes it at EOF: closing it from the test while the thread
    reads would wait for that read, forever if a child that outlived its
    master keeps the pipe open."""

    def __init__(self, stream):
        self.q = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream):
        with stream:
            for line in stream:
                self.q.put(line)
        self.q.put("")

    def next(self, timeout=20):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s") from None


def test_ten_reloads_under_load_drop_nothing(backend, tmp_path, loadgen):
    if backend != "epoll":
        pytest.skip("the server runs the default backend; once is enough")
    gen = tmp_path / "generation"
    gen.write_text("g0")
    master = subprocess.Popen([sys.executable, "-c", SCRIPT, str(gen)], stdout=subprocess.PIPE, text=True,
                              cwd=str(tmp_path))
    out = Lines(master.stdout)
    lg = None
    try:
        port, g, pid = out.next().split()
        assert (g, int(pid)) == ("g0", master.pid)
        env = dict(os.environ, LOADGEN_CHURN="20", LOADGEN_VERIFY="1")
        lg = subprocess.Popen([str(loadgen), "127.0.0.1", port, "50", "64", "1", "14", "0", "0", str(master.pid)],
                              stdout=subprocess.PIPE, text=True, env=env)
        time.sleep(1)
        for i in range(1, 11):
            gen.write_text(f"g{i}")
            master.send_signal(signal.SIGHUP)
            line = out.next()
            assert line.split()[1:] == [f"g{i}", str(master.pid)], line  # new code, same master
            time.sleep(0.8)
        r = json.loads(lg.communicate(timeout=60)[0])
        assert r["msgs"] > 1000, r
        assert r["connections"] > 500, r  # connections kept coming through every reload
        bad = {k: r[k] for k in ("errors", "resets", "eofs", "refused", "mismatches") if r[k]}
        assert not bad, r
        deadline = time.monotonic() + 15
        while len(children_of(master.pid)) != 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the old children have all retired
        assert len(children_of(master.pid)) == 2
        master.send_signal(signal.SIGTERM)
        assert out.next() == "master done\n"
        assert master.wait(15) == 0
    finally:
        for p in (lg, master):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_children_stop_when_the_master_is_killed(backend, tmp_path):
    if backend != "epoll":
        pytest.skip("once is enough")
    gen = tmp_path / "generation"
    gen.write_text("g0")
    master = subprocess.Popen([sys.executable, "-c", SCRIPT, str(gen)], stdout=subprocess.PIPE, text=True)
    try:
        Lines(master.stdout).next()
        deadline = time.monotonic() + 10
        while len(children_of(master.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        kids = children_of(master.pid)
        assert len(kids) == 2
    finally:
        master.kill()
        master.wait()
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{k}").exists() and "Z" not in _state(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [k for k in kids if Path(f"/proc/{k}").exists() and "Z" not in _state(k)]
    for k in alive:
        os.kill(k, signal.SIGKILL)
    assert not alive, "children outlived a killed master"


def _state(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_new_code_that_fails_to_start_is_reported_and_the_old_goes_on(backend, tmp_path):
    if backend != "epoll":
        pytest.skip("once is enough")
    gen = tmp_path / "generation"
    gen.write_text("g0")
    master = subprocess.Popen([sys.executable, "-c", SCRIPT, str(gen)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=str(tmp_path))
    out, errs = Lines(master.stdout), Lines(master.stderr)
    try:
        port = int(out.next().split()[0])
        gen.write_text("broken")
        master.send_signal(signal.SIGHUP)
        err = ""
        deadline = time.monotonic() + 20
        while "the new code is broken" not in err and time.monotonic() < deadline:
            err += errs.next()
        assert "reload abandoned" in err and "the new code is broken" in err, err
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"still here")
            assert c.recv(100) == b"still here"
        gen.write_text("g1")  # fixed: the next SIGHUP reloads
        master.send_signal(signal.SIGHUP)
        assert out.next().split()[1:] == ["g1", str(master.pid)]
        master.send_signal(signal.SIGTERM)
        assert out.next() == "master done\n"
        assert master.wait(15) == 0
    finally:
        if master.poll() is None:
            master.kill()
            master.wait()


ACTIVATED = """
import sys
import danga
sys.path.insert(0, {examples!r})
from echo_server import Echo
fds = danga.listen_fds()
from danga.activation import listen_fds_with_names
print(fds, listen_fds_with_names(), flush=True)
for fd in fds:
    danga.listen(f"fd://{{fd}}", Echo)
danga.event_loop()
""".format(examples=str(ROOT / "examples"))


def test_socket_activation_hands_over_the_listening_socket(backend, tmp_path):
    if backend != "epoll":
        pytest.skip("once is enough")
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate (Debian's systemd package) is not installed")
    path = tmp_path / "echo.sock"
    proc = subprocess.Popen([tool, "-l", str(path), "--fdname=echo", sys.executable, "-c", ACTIVATED],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(10)
            c.connect(str(path))  # the service starts on this first connection... or already has
            c.sendall(b"activated")
            assert c.recv(100) == b"activated"
        assert Lines(proc.stdout).next() == "[3] [(3, 'echo')]\n"
    finally:
        proc.terminate()
        proc.wait(10)


def test_listen_fds_ignores_descriptors_meant_for_another_process(monkeypatch):
    from danga import activation
    monkeypatch.setattr(activation, "_taken", None)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "2")
    assert activation.listen_fds() == []
    assert "LISTEN_FDS" not in os.environ  # removed, so children never see them either
    monkeypatch.setattr(activation, "_taken", None)
