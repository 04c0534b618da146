"""The Windows section: danga's iocp backend against asyncio's ProactorEventLoop, under Wine.

    bash .ci/windows-setup                   # once: Wine and a Windows CPython (see that script)
    python bench/windows.py                  # 5 interleaved rounds of 3 s: about 4 minutes
    python bench/windows.py --quick          # one short round, to check the set-up

Both servers run on the same Windows CPython under Wine on this machine:
``examples/echo_server.py`` with ``DANGA_POLLER=iocp`` and
``bench/servers/asyncio_echo.py`` (asyncio's default loop on Windows, the
IOCP proactor), each pinned to CPU 0 with the Wine server, which does much
of Wine's socket work.  The Linux load generator (bench/loadgen.c) drives
them over loopback from CPU 1, as in run.py.  The figure is the CPU time of
the server process *and* the Wine server per message, and danga's ratio to
the proactor in the same round; medians over interleaved rounds.

These are Wine figures: they compare the two loops on equal footing (same
interpreter, same Wine, same load), not what either does on Windows, where
the kernel's AFD driver and completion ports do what Wine emulates here.
The table goes to bench/out/windows.md; run.py copies it into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from run import OUT, build, free_port, loadgen, machine, median_of, pin, stop_server  # noqa: E402

CACHE = Path(os.environ.get("DANGA_WINE_CACHE", Path.home() / ".cache" / "danga-wine"))
WINE, WINESERVER = "/usr/lib/wine/wine64", "/usr/lib/wine/wineserver"
PYEXE = CACHE / "python" / "python.exe"


def winpath(p: Path) -> str:
    """A Linux path as Windows sees it under Wine (Z: is /)."""
    return "Z:" + str(p).replace("/", "\\")


# name -> (script, arguments, extra environment)
SERVERS = {
    "danga-iocp": (ROOT / "examples" / "echo_server.py", [], {"DANGA_POLLER": "iocp"}),
    "asyncio-proactor": (HERE / "servers" / "asyncio_echo.py", [], {}),
}
# run.py's scenarios that say something here (the others take long under Wine)
SCENARIOS = {
    "64B": (50, 64, 1),
    "16KiB": (50, 16384, 1),
    "64B-pipelined": (50, 64, 16),
}


def wine_env() -> dict:
    return {**os.environ, "WINEPREFIX": str(CACHE / "prefix"), "WINEDEBUG": "-all",
            "WINEDLLOVERRIDES": "mscoree,mshtml=", "PYTHONPATH": winpath(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}


def run_one(name: str, wineserver_pid: int, scenario: tuple, seconds: float, warmup: float) -> dict:
    script, args, extra = SERVERS[name]
    port = free_port()
    # python.exe under Wine starts only when its standard streams are pipes
    srv = subprocess.Popen([WINE, str(PYEXE), winpath(script), "--port", str(port), *args],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={**wine_env(), **extra}, preexec_fn=pin(0), text=True)
    try:
        line = srv.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"{name} did not start under Wine: {line!r}")
        conns, size, inflight = scenario
        return loadgen(port, conns, size, inflight, seconds, warmup, 0, [srv.pid, wineserver_pid], pin(1))
    finally:
        stop_server(srv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="one round of 1.5 s")
    ap.add_argument("--output", default=str(OUT / "windows.md"))
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 1.5, 0.5
    if not (Path(WINE).exists() and PYEXE.exists()):
        sys.exit(f"bench/windows.py needs Wine and the Windows CPython at {PYEXE}: run .ci/windows-setup first")
    build()
    # One Wine server for the whole run, in the foreground (so its PID is ours to measure), pinned
    # beside the servers; every Wine process of the prefix talks to it.
    ws = subprocess.Popen([WINESERVER, "--foreground", "--persistent"], env=wine_env(), preexec_fn=pin(0),
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    results: dict = {(n, s): [] for n in SERVERS for s in SCENARIOS}
    steps = args.rounds * len(SCENARIOS) * len(SERVERS)
    step_s = args.seconds + args.warmup + 3.0  # Windows Python under Wine takes about 2 s to start
    print(f"{steps} runs under Wine: about {steps * step_s / 60:.0f} min", flush=True)
    done = 0
    try:
        for rnd in range(args.rounds):
            for s, scenario in SCENARIOS.items():
                for name in SERVERS:
                    done += 1
                    left = (steps - done) * step_s / 60
                    where = f"[{done}/{steps}, ~{left:.0f} min left] round {rnd + 1} {s:14} {name:16}"
                    try:
                        r = run_one(name, ws.pid, scenario, args.seconds, args.warmup)
                    except Exception as e:  # report, keep going with the others
                        print(f"{where} FAILED: {e}", flush=True)
                        continue
                    r["round"] = rnd
                    results[(name, s)].append(r)
                    print(f"{where} {r['msgs_per_s']:>9.0f} msg/s  {r['cpu_us']:7.2f} us/msg CPU  "
                          f"err {r['errors']}", flush=True)
    finally:
        subprocess.run([WINESERVER, "-k"], env=wine_env(), check=False, timeout=60)
        ws.wait(30)
    for s in SCENARIOS:  # danga's ratio to the proactor in the same round
        other = {r["round"]: r for r in results[("asyncio-proactor", s)]}
        for r in results[("danga-iocp", s)]:
            o = other.get(r["round"])
            if o and o["cpu_us"] > 0:
                r["x_proactor"] = r["cpu_us"] / o["cpu_us"]
    write_report(Path(args.output), results, args)


def write_report(path: Path, results: dict, args) -> None:
    lines = [
        "# Windows, under Wine: danga-iocp against asyncio's ProactorEventLoop",
        "",
        "From `python bench/windows.py`.  **These are Wine figures, not Windows figures:** both servers run on",
        "the same Windows CPython (3.13, from .ci/windows-setup) under Wine 8 on the Linux machine above, so",
        "the comparison between them is on equal footing, but Wine emulates in user space (its wineserver)",
        "what Windows does in the kernel, and the absolute numbers say nothing about Windows.",
        f"Rounds: {args.rounds} × {args.seconds:g} s after {args.warmup:g} s warm-up, interleaved; server and",
        "wineserver pinned to CPU 0, the Linux load generator to CPU 1.  **CPU µs/msg** counts the server",
        "process and the wineserver; **× proactor** is danga's ratio to the proactor in the same round",
        "(lower is better).",
        "",
        "| scenario | server | msgs/s | p99 µs | CPU µs/msg | × proactor | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in SCENARIOS:
        for n in SERVERS:
            rows = results[(n, s)]
            if not rows:
                lines.append(f"| {s} | {n} | failed | | | | |")
                continue
            ratio = f"{median_of(rows, 'x_proactor'):.2f}" if n == "danga-iocp" else "1.00"
            lines.append(f"| {s} | {n} | {median_of(rows, 'msgs_per_s'):,.0f} | {median_of(rows, 'p99_us'):.0f} | "
                         f"{median_of(rows, 'cpu_us'):.2f} | {ratio} | {sum(r['errors'] for r in rows)} |")
    lines.append("")
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path} ({machine()})")


if __name__ == "__main__":
    main()
