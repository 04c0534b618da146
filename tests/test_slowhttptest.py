"""The HTTP example under real attack tools: Debian's slowhttptest.

Each test starts examples/http_server.py under RLIMIT_NOFILE=1024, soft and
hard (a common default; the example's raise_fd_limit cannot lift it), and
runs one attack of 2,000 connections opened at 500 a second, so that they
outnumber the server's descriptors within the first seconds: slowloris
(-H), slow body (-B), slow read (-X, a small window, on a 100 KB file) and
the range-header attack (-R).  Meanwhile a legitimate client asks for the
100 KB file once a second, each time on a fresh connection, and must get it
complete and byte-correct within 2 s, every time.  The server's RSS must
stay bounded and its CPU must not be pinned.

The four attacks are independent tests (free ports, tmp_path), so
pytest-xdist runs them beside the rest of the suite.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import pytest

from .test_http_timeouts import EXAMPLE, start_http, stop

resource = pytest.importorskip("resource", reason="POSIX-only: descriptor limits (RLIMIT_NOFILE)")

SLOWHTTPTEST = shutil.which("slowhttptest")
NOFILE = 1024  # the server's descriptor limit
CONNECTIONS = 2000  # attacking connections: about twice what the server may hold
RATE = 500  # connections opened per second: all of them within 4 s
ATTACK_SECONDS = 25
PROBE_DEADLINE = 2.0  # the requirement: the file, complete and correct, within 2 s
RSS_BOUND_KB = 300 * 1024
CPU_SHARE_BOUND = 0.9
FILE = "100k.bin"

ATTACKS = {
    "slowloris": ["-H", "-i", "5", "-x", "24"],
    "slow_body": ["-B", "-i", "5", "-x", "24", "-s", "8192"],
    "slow_read": ["-X", "-w", "1", "-y", "64", "-n", "2", "-z", "32", "-k", "2"],
    "range": ["-R", "-a", "5", "-b", "2000"],
}


@dataclass
class Outcome:
    """What one attack did: the probes, the server's resources, the tool's report."""
    sent: int = 0
    answered: int = 0  # complete and correct within PROBE_DEADLINE
    failures: List[str] = field(default_factory=list)
    rss_max_kb: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    slowest: float = 0.0  # seconds, of the probes answered
    opened: int = 0  # attacking connections the tool had open or had seen closed, at most
    shed: int = 0  # connections the server's listener shed, from its log
    summary: str = ""
    server_log: str = ""

    def report(self) -> str:
        return (f"{self.opened} attacking connections; "
                f"probes answered in {PROBE_DEADLINE:g} s: {self.answered}/{self.sent} (slowest "
                f"{self.slowest:.2f} s); failures: {self.failures[:10]}; {self.shed} connections shed; "
                f"server RSS max {self.rss_max_kb // 1024} MB, "
                f"CPU {self.cpu_seconds:.1f} s in {self.wall_seconds:.1f} s\n"
                f"slowhttptest summary:\n{self.summary}\nserver log (tail):\n{self.server_log}")


def probe(port: int, expected: bytes) -> Tuple[Optional[str], float]:
    """GET the file on a fresh connection: (None if it came complete and
    correct within PROBE_DEADLINE, else what went wrong; seconds taken)."""
    start = time.monotonic()
    end = start + PROBE_DEADLINE

    def left() -> float:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise socket.timeout
        return remaining

    data = b""
    error = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=left()) as c:
            c.sendall(f"GET /{FILE} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".encode())
            while True:
                c.settimeout(left())
                chunk = c.recv(65536)
                if not chunk:
                    break
                data += chunk
    except socket.timeout:
        error = f"no complete answer within {PROBE_DEADLINE:g} s ({len(data)} bytes)"
    except OSError as e:
        error = f"{type(e).__name__}: {e} after {time.monotonic() - start:.2f} s ({len(data)} bytes)"
    taken = time.monotonic() - start
    head, _, body = data.partition(b"\r\n\r\n")
    if error is None and not head.startswith(b"HTTP/1.1 200 "):
        error = f"answer {head[:40]!r}"
    elif error is None and body != expected:
        error = f"body of {len(body)} bytes, not the file's {len(expected)} bytes"
    return error, taken


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def tool_limits() -> None:
    """slowhttptest needs a descriptor per attacking connection: its soft limit up to its hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CONNECTIONS + 100
    if hard == resource.RLIM_INFINITY or hard >= want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))


def summary(text: str) -> str:
    """The tool's last status block and its exit line, without colours."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    last = text.rfind("slow HTTP test status")
    return text[last:].strip() if last >= 0 else text[-2000:]


def attack(tmp_path, mode_args, server_flags=(), backend="epoll", server_cmd=None,
           seconds=ATTACK_SECONDS) -> Outcome:
    """Run the server under RLIMIT_NOFILE=NOFILE, one slowhttptest attack
    against it, and a probe a second meanwhile; what happened."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_bytes(b"<h1>hello</h1>\n")
    expected = os.urandom(100 * 1024)
    (root / FILE).write_bytes(expected)
    log = tmp_path / "server.log"
    proc, port = start_http(root, *server_flags, backend=backend, log=log, nofile=NOFILE, command=server_cmd)
    out = Outcome()
    tool_out = tmp_path / "slowhttptest.out"
    try:
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        with open(tool_out, "w") as f:
            tool = subprocess.Popen([SLOWHTTPTEST, *mode_args, "-c", str(CONNECTIONS), "-r", str(RATE),
                                     "-l", str(seconds), "-p", "2", "-g", "-o", str(tmp_path / "stats"),
                                     "-u", f"http://127.0.0.1:{port}/{FILE}"],
                                    stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    preexec_fn=tool_limits)
        results: List[Tuple[Optional[str], float]] = []
        threads = []
        try:
            for i in range(1, seconds):  # a probe a second, each on its own schedule, in its own thread
                while time.monotonic() < t0 + i:
                    out.rss_max_kb = max(out.rss_max_kb, rss_kb(proc.pid))
                    time.sleep(0.1)
                th = threading.Thread(target=lambda: results.append(probe(port, expected)))
                th.start()
                threads.append(th)
            for th in threads:
                th.join(PROBE_DEADLINE + 5)
            out.rss_max_kb = max(out.rss_max_kb, rss_kb(proc.pid))
            out.cpu_seconds, out.wall_seconds = cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
        finally:
            try:
                tool.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                tool.kill()
                tool.wait()
        assert proc.poll() is None, f"the server died: {log.read_text()[-2000:]}"
    finally:
        stop(proc)
    out.sent = len(threads)
    out.failures = [error for error, _ in results if error is not None]
    out.answered = sum(1 for error, _ in results if error is None)
    out.slowest = max((taken for error, taken in results if error is None), default=0.0)
    out.summary = summary(tool_out.read_text(errors="replace"))
    stats = tmp_path / "stats.csv"  # a row a second: Seconds,Closed,Pending,Connected,Service Available
    rows = [line.split(",") for line in stats.read_text().splitlines()[1:]] if stats.exists() else []
    out.opened = max((int(r[1]) + int(r[3]) for r in rows if len(r) >= 4), default=0)
    out.summary += "\nper second (closed, pending, connected): " + " ".join("/".join(r[1:4]) for r in rows)
    server_log = log.read_text(errors="replace")
    out.shed = sum(int(n) for n in re.findall(r"shed (\d+) connection", server_log))
    out.server_log = server_log[-1500:]
    return out


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_the_http_example_stays_available_under_attack(name, tmp_path, backend):
    if SLOWHTTPTEST is None:
        pytest.skip("slowhttptest is not installed (apt-get install slowhttptest)")
    if backend != "epoll":
        pytest.skip("the attack does not depend on the poller; once is enough")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < CONNECTIONS + 100:
        pytest.skip(f"slowhttptest needs {CONNECTIONS + 100} descriptors; the hard RLIMIT_NOFILE is {hard}")
    out = attack(tmp_path, ATTACKS[name])
    assert out.opened > NOFILE, f"the attack opened fewer connections than the server may hold: {out.report()}"
    assert out.answered == out.sent, out.report()
    assert out.rss_max_kb < RSS_BOUND_KB, out.report()
    assert out.cpu_seconds < CPU_SHARE_BOUND * out.wall_seconds, out.report()


# The same attacks without the example's defences, for comparison: its
# deadlines off and shedding off (the listener's _shed replaced by one that
# sheds nothing).  ``python -m tests.test_slowhttptest [--previous] [SECONDS]``
# prints the figures.
PREVIOUS_FLAGS = ["--header-timeout", "0", "--body-timeout", "0", "--keepalive-timeout", "0"]
PREVIOUS_COMMAND = [sys.executable, "-c",
                    "import os, runpy, sys; sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(sys.argv[0]));"
                    "from danga.listener import Listener; Listener._shed = lambda self, why, excess=0: 0;"
                    "runpy.run_path(sys.argv[0], run_name='__main__')", str(EXAMPLE)]


def main() -> None:
    import tempfile
    from pathlib import Path

    previous = "--previous" in sys.argv
    numbers = [int(a) for a in sys.argv[1:] if a.isdigit()]
    for name in sorted(ATTACKS):
        with tempfile.TemporaryDirectory() as d:
            out = attack(Path(d), ATTACKS[name], PREVIOUS_FLAGS if previous else (),
                         server_cmd=PREVIOUS_COMMAND if previous else None,
                         seconds=numbers[0] if numbers else ATTACK_SECONDS)
        print(f"{name}: {out.report().splitlines()[0]}", flush=True)


if __name__ == "__main__":
    main()
