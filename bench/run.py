"""Run every echo server under the same closed-loop load and write BENCHMARKS.md.

    python bench/run.py                 # full run (about 10 minutes)
    python bench/run.py --quick         # one short round, to check the set-up
    python bench/run.py --servers danga-epoll,c-epoll --scenarios 64B
    python bench/run.py --no-real --no-windows   # only the echo servers on Linux

One server at a time, on loopback; the server is pinned to CPU 0 and the
load generator (bench/loadgen.c, compiled here) to CPU 1.  The figure that
matters is the server's CPU time per message (user + sys from /proc/PID/stat
over exactly the measured interval) and its ratio to the C floor measured in
the same round; rounds are interleaved and the median is reported.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
PY = sys.executable


def perl_has_danga() -> bool:
    return shutil.which("perl") is not None and subprocess.run(
        ["perl", "-MDanga::Socket", "-e1"], capture_output=True
    ).returncode == 0


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def has_kqueue() -> bool:
    """Whether danga's kqueue backend was compiled in this checkout."""
    return any((ROOT / "danga").glob("_ffi_kqueue*"))


def has_io_uring() -> bool:
    """Whether danga's io_uring backend was compiled in this checkout."""
    return any((ROOT / "danga").glob("_ffi_uring*"))


# name -> (command with {port}, extra environment, why it is unavailable or None)
# A name ending in "-2proc" is a pre-forked server: it is not pinned, and the
# CPU time of all its processes is counted.
def servers() -> dict:
    echo = str(ROOT / "examples" / "echo_server.py")
    s = HERE / "servers"
    return {
        "c-epoll": ([str(OUT / "echo_c"), "{port}"], {}, None),
        "danga-epoll": ([PY, echo, "--port", "{port}"], {"DANGA_POLLER": "epoll"}, None),
        "danga-poll": ([PY, echo, "--port", "{port}"], {"DANGA_POLLER": "poll"}, None),
        "danga-kqueue": (
            [PY, echo, "--port", "{port}"],
            {"DANGA_POLLER": "kqueue"},
            None if has_kqueue() else "kqueue is not built (on Linux: LIBKQUEUE_PREFIX=... pip install -e .)",
        ),
        "danga-io_uring": (
            [PY, echo, "--port", "{port}"],
            {"DANGA_POLLER": "io_uring"},
            None if has_io_uring() else "io_uring is not built (apt-get install liburing-dev; pip install -e .)",
        ),
        "danga-serve-2proc": ([PY, str(s / "danga_serve_echo.py"), "--port", "{port}", "--processes", "2"], {}, None),
        "stdlib-epoll": ([PY, str(s / "stdlib_epoll_echo.py"), "--port", "{port}"], {}, None),
        "uvloop": (
            [PY, str(s / "asyncio_echo.py"), "--uvloop", "--port", "{port}"],
            {},
            None if has_module("uvloop") else "uvloop is not installed (pip install uvloop)",
        ),
        "danga-aio": ([PY, str(s / "asyncio_echo.py"), "--danga", "--port", "{port}"], {}, None),
        "asyncio": ([PY, str(s / "asyncio_echo.py"), "--port", "{port}"], {}, None),
        "perl-danga": (
            ["perl", str(s / "perl_danga_echo.pl"), "--port", "{port}"],
            {},
            None if perl_has_danga() else "Perl Danga::Socket is not installed (apt-get install libdanga-socket-perl)",
        ),
    }


# name -> (connections, message size, in flight, idle connections)
SCENARIOS = {
    "64B": (50, 64, 1, 0),
    "16KiB": (50, 16384, 1, 0),
    "64B-pipelined": (50, 64, 16, 0),
    "64B-10k-idle": (50, 64, 1, 10000),
    "1MiB": (10, 1 << 20, 1, 0),
}


def build() -> None:
    OUT.mkdir(exist_ok=True)
    for src, exe in (("loadgen.c", "loadgen"), ("echo_c.c", "echo_c")):
        target = OUT / exe
        if not target.exists() or target.stat().st_mtime < (HERE / src).stat().st_mtime:
            subprocess.run(["cc", "-O2", "-o", str(target), str(HERE / src), "-lssl", "-lcrypto"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def pin(cpu):
    """Raise the descriptor limit, and pin to ``cpu`` (None: do not pin)."""

    def pre() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        if cpu is not None and len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(0, {cpu})

    return pre


def run_one(cmd: list, env: dict, scenario: tuple, seconds: float, warmup: float) -> dict:
    port = free_port()
    argv = [a.replace("{port}", str(port)) for a in cmd]
    multi = cmd is not None and any("--processes" in a for a in cmd)
    srv = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env},
        preexec_fn=pin(None) if multi else pin(0), text=True,
    )
    try:
        line = srv.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"{argv[0]} did not start: {line!r} {srv.stderr.read()[:2000]}")
        pids = [srv.pid]
        if multi:
            deadline = time.monotonic() + 10
            while len(pids) < 3 and time.monotonic() < deadline:
                pids = [srv.pid] + children(srv.pid)
                time.sleep(0.02)
        conns, size, inflight, idle = scenario
        r = loadgen(port, conns, size, inflight, seconds, warmup, idle, pids, pin(None if multi else 1))
    finally:
        stop_server(srv)
    if r["idle_connections"]:
        r["kib_per_idle_conn"] = (r["rss_idle_kib"] - r["rss_before_kib"]) / r["idle_connections"]
    return r


def loadgen(port: int, conns: int, size: int, inflight: int, seconds: float, warmup: float, idle: int,
            pids: list, preexec, env: dict = None) -> dict:
    """One loadgen run against ``port``; its JSON with the server's CPU per message added."""
    lg = subprocess.run(
        [str(OUT / "loadgen"), "127.0.0.1", str(port), str(conns), str(size), str(inflight),
         str(seconds), str(warmup), str(idle), ",".join(map(str, pids))],
        capture_output=True, text=True, preexec_fn=preexec, env=env, timeout=seconds + warmup + 120,
    )
    if lg.returncode != 0:
        raise RuntimeError(f"loadgen failed: {lg.stderr[:2000]}")
    r = json.loads(lg.stdout)
    n = max(r["msgs"], 1)
    r["user_us"] = r["server_user_s"] / n * 1e6
    r["sys_us"] = r["server_sys_s"] / n * 1e6
    r["cpu_us"] = r["user_us"] + r["sys_us"]
    return r


def stop_server(srv: subprocess.Popen) -> None:
    srv.terminate()
    try:
        srv.wait(10)
    except subprocess.TimeoutExpired:
        srv.kill()
        srv.wait()


def median_of(rows: list, key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="one round of 1.5 s")
    ap.add_argument("--servers", default="", help="comma-separated subset")
    ap.add_argument("--scenarios", default="", help="comma-separated subset")
    ap.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    ap.add_argument("--no-real", action="store_true", help="skip the example servers vs redis/Perlbal/gearmand")
    ap.add_argument("--no-windows", action="store_true", help="skip the Windows section under Wine (bench/windows.py)")
    ap.add_argument("--replot", action="store_true", help="only redraw the chart from bench/out/results.json")
    ap.add_argument("--baseline", default="",
                    help="another danga checkout (with its cffi modules built) to run as danga-epoll-baseline, "
                         "in the same rounds: before/after figures of a change")
    args = ap.parse_args()
    if args.replot:
        saved = json.loads((OUT / "results.json").read_text())
        results = {tuple(k.split("|")): v for k, v in saved.items()}
        names = list(dict.fromkeys(n for n, _ in results))
        scen = list(dict.fromkeys(s for _, s in results))
        chart(Path(args.output).with_name("benchmarks.png"), names, scen, results)
        return
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 1.5, 0.5
    build()
    all_servers = servers()
    if args.baseline:
        base = Path(args.baseline).resolve()
        all_servers["danga-epoll-baseline"] = (
            [PY, str(base / "examples" / "echo_server.py"), "--port", "{port}"],
            {"DANGA_POLLER": "epoll", "PYTHONPATH": str(base)},
            None if (base / "danga" / "__init__.py").exists() else f"{base} is not a danga checkout",
        )
    names = [n for n in all_servers if not args.servers or n in args.servers.split(",")]
    scen = [s for s in SCENARIOS if not args.scenarios or s in args.scenarios.split(",")]
    usable = []
    for name in names:
        why = all_servers[name][2]
        if why:
            print(f"SKIPPED {name}: {why}", flush=True)
        else:
            usable.append(name)
    results: dict = {(n, s): [] for n in usable for s in scen}
    steps = args.rounds * len(scen) * len(usable)
    step_s = args.seconds + args.warmup + 1.0  # measured time, warm-up, start and stop
    print(f"{steps} runs of {args.seconds:g} s (+{args.warmup:g} s warm-up): about {steps * step_s / 60:.0f} min",
          flush=True)
    done = 0
    for rnd in range(args.rounds):
        for s in scen:
            for name in usable:
                cmd, env, _ = all_servers[name]
                done += 1
                left = (steps - done) * step_s / 60
                where = f"[{done}/{steps}, ~{left:.0f} min left] round {rnd + 1} {s:14} {name:13}"
                try:
                    r = run_one(cmd, env, SCENARIOS[s], args.seconds, args.warmup)
                except Exception as e:  # report, keep going with the others
                    print(f"{where} FAILED: {e}", flush=True)
                    continue
                results[(name, s)].append(r)
                print(f"{where} {r['msgs_per_s']:>10.0f} msg/s  "
                      f"{r['cpu_us']:7.2f} us/msg CPU  p99 {r['p99_us']:8.0f} us  err {r['errors']}", flush=True)
    # ratio to the C floor, per round, then the median
    for (_name, s), rows in results.items():
        floor = results.get(("c-epoll", s), [])
        for i, r in enumerate(rows):
            if i < len(floor) and floor[i]["cpu_us"] > 0:
                r["ratio"] = r["cpu_us"] / floor[i]["cpu_us"]
    if not args.no_real:
        subprocess.run([PY, str(HERE / "real_servers.py")], check=False)
    windows = OUT / "windows.md"
    windows.unlink(missing_ok=True)  # only this run's figures go into the report
    if not args.no_windows:  # it says what to install when Wine or the Windows CPython is missing
        subprocess.run([PY, str(HERE / "windows.py"), *(["--quick"] if args.quick else [])], check=False)
    json_path = OUT / "results.json"
    json_path.write_text(json.dumps({f"{n}|{s}": rows for (n, s), rows in results.items()}, indent=1))
    write_report(Path(args.output), usable, scen, results, args, [n for n in names if n not in usable], all_servers)
    chart(Path(args.output).with_name("benchmarks.png"), usable, scen, results)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")


def write_report(path: Path, names, scen, results, args, skipped, all_servers) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python bench/run.py` (see bench/README.md); the optimisation log below is kept by hand",
        "in bench/optimisations.md and copied in.",
        "",
        f"Machine: {machine()}.  Rounds: {args.rounds} × {args.seconds:g} s measured after {args.warmup:g} s warm-up,",
        "server pinned to CPU 0, load generator to CPU 1, medians over rounds.",
        "",
        "**CPU µs/msg** is the server's user+sys CPU time per echoed message; **× C** is its ratio to the",
        "single-threaded C epoll echo measured in the same round (lower is better, 1.00 is the floor).",
        "`danga-serve-2proc` is `danga.serve()` with two processes, unpinned, sharing the two CPUs with the",
        "load generator: its row shows throughput across processes, and its CPU figure sums all of them.",
        "",
    ]
    for n in skipped:
        lines.append(f"- skipped {n}: {all_servers[n][2]}")
    if skipped:
        lines.append("")
    for s in scen:
        conns, size, inflight, idle = SCENARIOS[s]
        desc = f"{conns} connections × {size} B × {inflight} in flight"
        desc += f", plus {idle} idle connections" if idle else ""
        lines += [f"## {s}: {desc}", "",
                  "| server | msgs/s | MB/s | p50 µs | p99 µs | user µs/msg | sys µs/msg | CPU µs/msg | × C | errors |"
                  + (" KiB/idle conn |" if idle else ""),
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if idle else "")]
        for n in names:
            rows = results[(n, s)]
            if not rows:
                lines.append(f"| {n} | failed | | | | | | | | |")
                continue
            row = (f"| {n} | {median_of(rows, 'msgs_per_s'):,.0f} | {median_of(rows, 'mb_per_s'):.1f} | "
                   f"{median_of(rows, 'p50_us'):.0f} | {median_of(rows, 'p99_us'):.0f} | "
                   f"{median_of(rows, 'user_us'):.2f} | {median_of(rows, 'sys_us'):.2f} | "
                   f"{median_of(rows, 'cpu_us'):.2f} | {median_of(rows, 'ratio'):.3f} | "
                   f"{sum(r['errors'] for r in rows)} |")
            if idle:
                row += f" {median_of(rows, 'kib_per_idle_conn'):.3f} |"
            lines.append(row)
        lines.append("")
    lines.append("![server CPU per message relative to C](benchmarks.png)")
    lines.append("")
    real = OUT / "real_servers.md"
    if real.exists():
        lines += ["# The example servers against the real ones", "", "From `python bench/real_servers.py`, run by"
                  " `run.py` in the same session.", "", real.read_text()]
    windows = OUT / "windows.md"
    if windows.exists():
        lines += [windows.read_text()]
    notes = HERE / "optimisations.md"
    if notes.exists():
        lines.append(notes.read_text())
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


def chart(path: Path, names, scen, results) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("SKIPPED chart: matplotlib is not installed (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / max(len(names), 1)
    for i, n in enumerate(names):
        vals = [median_of(results[(n, s)], "ratio") if results[(n, s)] else 0 for s in scen]
        ax.bar([k + i * width for k in range(len(scen))], vals, width, label=n)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")  # poll with 10,000 idle fds is an order of magnitude off the rest
    ax.set_xticks([k + width * (len(names) - 1) / 2 for k in range(len(scen))])
    ax.set_xticklabels(scen)
    ax.set_ylabel("server CPU per message, × C epoll echo (log scale)")
    ax.set_title("Echo server CPU per message relative to C (lower is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
