"""The example servers against the real thing, each pair in the same run.

    python bench/real_servers.py            # writes bench/out/real_servers.md
    python bench/real_servers.py aiohttp    # only the named pairs (resp http gearman memcached aiohttp)

* RESP: examples/resp_server.py vs redis-server, redis-benchmark -t ping,set,get -c 50, with and without -P 16;
* HTTP: examples/http_server.py vs Perlbal, wrk -c 50 on a 4 KiB file with keep-alive;
* Gearman: examples/gearman_server.py vs the C gearmand, foreground jobs per second (gearman_load.py);
* memcached: examples/memcached_server.py vs memcached -t 1, memcaslap (memaslap) -c 50, 90% get of 1 KiB
  values, single-key and 10-key gets;
* aiohttp: one aiohttp "hello" app on stock asyncio, uvloop and danga.aio, wrk -c 50, rounds interleaved,
  requests per second and the server's CPU per request.

Servers are pinned to CPU 0 and the load tools to CPU 1.  A pair whose
tools are missing is skipped with a line saying what to install.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EX = ROOT / "examples"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def pinned(cpu: int) -> list:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


class Server:
    def __init__(self, argv, port):
        self.proc = subprocess.Popen(pinned(0) + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def redis_benchmark(port: int, pipeline: int, n: int) -> dict:
    out = subprocess.run(pinned(1) + ["redis-benchmark", "-p", str(port), "-t", "ping,set,get", "-n", str(n),
                                      "-c", "50", "-P", str(pipeline), "-q"], capture_output=True, text=True,
                         timeout=600).stdout
    rates = {}
    for name, rps in re.findall(r"([A-Z_]+): ([\d.]+) requests per second", out.replace("\r", "\n")):
        rates[name] = float(rps)
    return rates


def bench_resp(lines: list) -> None:
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        lines.append("- skipped RESP: redis-server and redis-benchmark are not installed "
                     "(apt-get install redis-server redis-tools)\n")
        return
    rows = []
    for pipeline, n in ((1, 200_000), (16, 2_000_000)):
        pa, pb = free_port(), free_port()
        real = Server(["redis-server", "--port", str(pa), "--save", "", "--appendonly", "no"], pa)
        try:
            r_real = redis_benchmark(pa, pipeline, n)
        finally:
            real.stop()
        ours = Server([PY, str(EX / "resp_server.py"), "--port", str(pb)], pb)
        try:
            r_ours = redis_benchmark(pb, pipeline, n)
        finally:
            ours.stop()
        for test in ("PING_INLINE", "PING_MBULK", "SET", "GET"):
            a, b = r_real.get(test, 0), r_ours.get(test, 0)
            rows.append(f"| {test} | {pipeline} | {a:,.0f} | {b:,.0f} | {b / a if a else 0:.2f} |")
    lines += ["## Redis protocol: examples/resp_server.py vs redis-server", "",
              "redis-benchmark, 50 clients; requests per second (higher is better).", "",
              "| test | pipeline | redis-server | danga resp_server | ratio |", "|---|---:|---:|---:|---:|"]
    lines += rows + [""]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, path: str, seconds: int = 5) -> float:
    out = subprocess.run(pinned(1) + ["wrk", "-t1", "-c50", f"-d{seconds}", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def bench_http(lines: list) -> None:
    if not (shutil.which("perlbal") and shutil.which("wrk")):
        lines.append("- skipped HTTP: perlbal and wrk are not installed (apt-get install perlbal wrk)\n")
        return
    with tempfile.TemporaryDirectory() as docroot:
        Path(docroot, "4k.bin").write_bytes(os.urandom(4096))
        results = {}
        pp = free_port()
        conf = Path(docroot, "perlbal.conf")
        conf.write_text(f"CREATE SERVICE web\n  SET role = web_server\n  SET listen = 127.0.0.1:{pp}\n"
                        f"  SET docroot = {docroot}\n  SET dirindexing = 0\n  SET persist_client = on\nENABLE web\n")
        srv = Server(["perlbal", f"--config={conf}"], pp)
        try:
            results["Perlbal"] = wrk(pp, "/4k.bin")
        finally:
            srv.stop()
        for label, extra in (("danga http_server", []), ("danga http_server --cache-ttl 0", ["--cache-ttl", "0"])):
            port = free_port()
            srv = Server([PY, str(EX / "http_server.py"), "--port", str(port), "--root", docroot] + extra, port)
            try:
                results[label] = wrk(port, "/4k.bin")
            finally:
                srv.stop()
    base = results["Perlbal"]
    lines += ["## Static files: examples/http_server.py vs Perlbal", "",
              "wrk -t1 -c50, keep-alive, one 4 KiB file; requests per second.", "",
              "| server | requests/s | × Perlbal |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:,.0f} | {v / base if base else 0:.2f} |" for k, v in results.items()] + [""]


def bench_gearman(lines: list) -> None:
    gearmand = shutil.which("gearmand", path="/usr/sbin:/usr/bin")
    if not gearmand or not Path(gearmand).read_bytes()[:4] == b"\x7fELF":
        lines.append("- skipped Gearman: the C gearmand is not installed (apt-get install gearman-job-server)\n")
        return
    results = {}
    for label, argv in (("C gearmand", [gearmand, "--listen=127.0.0.1", "--port={port}", "--log-file=none",
                                        "--threads=0"]),
                        ("danga gearman_server", [PY, str(EX / "gearman_server.py"), "--port", "{port}"])):
        port = free_port()
        srv = Server([a.replace("{port}", str(port)) for a in argv], port)
        try:
            out = subprocess.run(pinned(1) + [PY, str(HERE / "gearman_load.py"), str(port), "4"], capture_output=True,
                                 text=True, timeout=120)
            results[label] = float(out.stdout.split()[0]) if out.returncode == 0 else 0.0
        finally:
            srv.stop()
    base = results.get("C gearmand") or 0
    lines += ["## Gearman: examples/gearman_server.py vs the C gearmand", "",
              "bench/gearman_load.py: 4 clients submitting foreground jobs one after another to 4 workers, 5 s;",
              "jobs completed per second (the load tool is Python and shares CPU 1 with the workers).", "",
              "| server | jobs/s | × gearmand |", "|---|---:|---:|"]
    lines += [f"| {k} | {v:,.0f} | {v / base if base else 0:.2f} |" for k, v in results.items()] + [""]


MEMASLAP_CFG = "key\n64 64 1\nvalue\n1024 1024 1\ncmd\n0 0.1\n1 0.9\n"  # 64 B keys, 1 KiB values, 90% get


def memaslap(port: int, cfg: str, division: int, seconds: int = 5) -> float:
    tool = shutil.which("memcaslap") or shutil.which("memaslap")
    out = subprocess.run(pinned(1) + [str(tool), "-s", f"127.0.0.1:{port}", "-T", "1", "-c", "50", "-w", "1k",
                                      "-t", f"{seconds}s", "-F", cfg, "-d", str(division)],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.findall(r"TPS: (\d+)", out)
    return float(m[-1]) if m else 0.0


def bench_memcached(lines: list) -> None:
    if not (shutil.which("memcached") and (shutil.which("memcaslap") or shutil.which("memaslap"))):
        lines.append("- skipped memcached: memcached and memcaslap are not installed "
                     "(apt-get install memcached libmemcached-tools)\n")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp, "memaslap.cfg")
        cfg.write_text(MEMASLAP_CFG)
        for division in (1, 10):
            results = {}
            for label, argv in (("memcached -t 1", ["memcached", "-u", "root", "-l", "127.0.0.1", "-p", "{port}",
                                                     "-t", "1", "-m", "256"]),
                                ("danga memcached_server", [PY, str(EX / "memcached_server.py"), "--port", "{port}",
                                                            "-m", "256"])):
                port = free_port()
                srv = Server([a.replace("{port}", str(port)) for a in argv], port)
                try:
                    results[label] = memaslap(port, str(cfg), division)
                finally:
                    srv.stop()
            base = results["memcached -t 1"]
            ours = results["danga memcached_server"]
            rows.append(f"| {division} | {base:,.0f} | {ours:,.0f} | {ours / base if base else 0:.2f} |")
    lines += ["## memcached: examples/memcached_server.py vs memcached -t 1", "",
              "memcaslap -T 1 -c 50 -w 1k, 5 s, 90% get / 10% set of 1 KiB values; operations per second.", "",
              "| keys per get | memcached | danga memcached_server | ratio |", "|---:|---:|---:|---:|"]
    lines += rows + [""]


AIOHTTP_LOOPS = ("asyncio", "uvloop", "danga")


def bench_aiohttp(lines: list, rounds: int = 3, seconds: int = 5) -> None:
    missing = [m for m in ("aiohttp", "uvloop") if importlib.util.find_spec(m) is None]
    if missing or not shutil.which("wrk"):
        lines.append(f"- skipped aiohttp: needs {' '.join(missing) or 'wrk'} (pip install aiohttp uvloop; "
                     "apt-get install wrk)\n")
        return
    got: dict = {name: [] for name in AIOHTTP_LOOPS}
    for _ in range(rounds):
        for name in AIOHTTP_LOOPS:
            port = free_port()
            srv = Server([PY, str(HERE / "servers" / "aiohttp_hello.py"), "--port", str(port), "--loop", name], port)
            try:
                wrk(port, "/", 1)  # warm-up
                # CPU of the server process itself (pinned(0) starts it through taskset, which execs it)
                before = cpu_seconds(srv.proc.pid)
                rps = wrk(port, "/", seconds)
                cpu = cpu_seconds(srv.proc.pid) - before
            finally:
                srv.stop()
            got[name].append((rps, cpu / max(rps * seconds, 1) * 1e6))
    med = {n: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for n, v in got.items()}
    base = med["asyncio"]
    lines += ['## aiohttp "hello": stock asyncio, uvloop, danga.aio', "",
              f"bench/servers/aiohttp_hello.py, wrk -t1 -c50 for {seconds} s, keep-alive; {rounds} interleaved rounds,"
              " medians; server CPU µs per request from /proc.", "",
              "| loop | requests/s | CPU µs/request | requests/s × asyncio | CPU × asyncio |",
              "|---|---:|---:|---:|---:|"]
    label = {"asyncio": "asyncio", "uvloop": "uvloop", "danga": "danga.aio"}
    lines += [f"| {label[n]} | {r:,.0f} | {c:.1f} | {r / base[0]:.2f} | {c / base[1]:.2f} |"
              for n, (r, c) in med.items()] + [""]


def main() -> None:
    parts = (bench_resp, bench_http, bench_gearman, bench_memcached, bench_aiohttp)
    wanted = sys.argv[1:]  # e.g. "aiohttp resp": only those pairs
    lines: list = []
    for part in (p for p in parts if not wanted or p.__name__.removeprefix("bench_") in wanted):
        try:
            part(lines)
        except Exception as e:  # one pair failing does not lose the others
            lines.append(f"- {part.__name__} failed: {e}\n")
        print("\n".join(lines[-12:]), flush=True)
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "real_servers.md").write_text("\n".join(lines))
    print(f"wrote {out / 'real_servers.md'}")


if __name__ == "__main__":
    main()
