"""TLS echo servers under the same closed-loop load: danga, asyncio, uvloop.

    python bench/tls.py                      # 5 rounds of 3 s: about 6 minutes
    python bench/tls.py --quick              # one short round, to check the set-up
    python bench/tls.py --rounds 3 --scenarios 64B,handshakes --output /tmp/tls.md

The method is bench/run.py's: one server at a time on loopback, pinned to
CPU 0, the load generator (bench/loadgen.c with LOADGEN_TLS=1, or
LOADGEN_HANDSHAKES=1 for the handshake rate) pinned to CPU 1; the figure is
the server's user+sys CPU time per echoed message (per handshake) over
exactly the measured interval, and its ratio to uvloop's and asyncio's
measured in the same round; rounds are interleaved and medians reported.
All three servers use the same certificate (a throwaway EC P-256 one made
with the openssl command) and the same context settings, so they negotiate
the same protocol and cipher (TLS 1.3 with OpenSSL 3).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import OUT, PY, build, free_port, has_module, loadgen, machine, pin, stop_server  # noqa: E402

SERVERS = {
    "danga": ([PY, str(HERE / "servers" / "danga_tls_echo.py")], {"DANGA_POLLER": "epoll"}, None),
    "uvloop": (
        [PY, str(HERE / "servers" / "asyncio_tls_echo.py"), "--uvloop"],
        {},
        None if has_module("uvloop") else "uvloop is not installed (pip install uvloop)",
    ),
    "asyncio": ([PY, str(HERE / "servers" / "asyncio_tls_echo.py")], {}, None),
}

# name -> (connections, message size, in flight, loadgen mode); run.py's echo scenarios
SCENARIOS = {
    "64B": (50, 64, 1, "echo"),
    "16KiB": (50, 16384, 1, "echo"),
    "64B-pipelined": (50, 64, 16, "echo"),
    "handshakes": (16, 0, 1, "handshakes"),
}


def certificate(directory: str) -> tuple:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "7", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def run_one(cmd: list, env: dict, cert: str, key: str, scenario: tuple, seconds: float, warmup: float) -> dict:
    port = free_port()
    argv = [*cmd, "--port", str(port), "--cert", cert, "--key", key]
    srv = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **env},
                           preexec_fn=pin(0), text=True)
    try:
        line = srv.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"{argv[1]} did not start: {line!r} {srv.stderr.read()[:2000]}")
        conns, size, inflight, mode = scenario
        lg_env = {**os.environ, ("LOADGEN_HANDSHAKES" if mode == "handshakes" else "LOADGEN_TLS"): "1"}
        r = loadgen(port, conns, size, inflight, seconds, warmup, 0, [srv.pid], pin(1), lg_env)
    finally:
        stop_server(srv)
    return r


def median_of(rows: list, key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="one round of 1.5 s")
    ap.add_argument("--servers", default="", help="comma-separated subset of " + ",".join(SERVERS))
    ap.add_argument("--scenarios", default="", help="comma-separated subset of " + ",".join(SCENARIOS))
    ap.add_argument("--output", default=str(HERE / "tls_results.md"), help="the markdown table (default: %(default)s)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 1.5, 0.5
    if shutil.which("openssl") is None:
        sys.exit("bench/tls.py needs the openssl command for its throwaway certificate")
    build()
    names = [n for n in SERVERS if not args.servers or n in args.servers.split(",")]
    scen = [s for s in SCENARIOS if not args.scenarios or s in args.scenarios.split(",")]
    usable = []
    for name in names:
        if SERVERS[name][2]:
            print(f"SKIPPED {name}: {SERVERS[name][2]}", flush=True)
        else:
            usable.append(name)
    tmp = tempfile.mkdtemp(prefix="danga-tls-bench-")
    cert, key = certificate(tmp)
    results: dict = {(n, s): [] for n in usable for s in scen}
    steps = args.rounds * len(scen) * len(usable)
    step_s = args.seconds + args.warmup + 1.0
    print(f"{steps} runs of {args.seconds:g} s (+{args.warmup:g} s warm-up): about {steps * step_s / 60:.0f} min",
          flush=True)
    done = 0
    try:
        for rnd in range(args.rounds):
            for s in scen:
                for name in usable:
                    cmd, env, _ = SERVERS[name]
                    done += 1
                    left = (steps - done) * step_s / 60
                    where = f"[{done}/{steps}, ~{left:.0f} min left] round {rnd + 1} {s:14} {name:8}"
                    try:
                        r = run_one(cmd, env, cert, key, SCENARIOS[s], args.seconds, args.warmup)
                    except Exception as e:  # report, keep going with the others
                        print(f"{where} FAILED: {e}", flush=True)
                        continue
                    r["round"] = rnd
                    results[(name, s)].append(r)
                    unit = "hs" if SCENARIOS[s][3] == "handshakes" else "msg"
                    print(f"{where} {r['msgs_per_s']:>10.0f} {unit}/s  {r['cpu_us']:8.2f} us/{unit} CPU  "
                          f"p99 {r['p99_us']:8.0f} us  err {r['errors']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # ratios to uvloop and to asyncio in the same round, then the median
    for (_name, s), rows in results.items():
        for other in ("uvloop", "asyncio"):
            by_round = {r["round"]: r for r in results.get((other, s), [])}
            for r in rows:
                o = by_round.get(r["round"])
                if o and o["cpu_us"] > 0:
                    r[f"x_{other}"] = r["cpu_us"] / o["cpu_us"]
    (OUT / "tls_results.json").write_text(json.dumps({f"{n}|{s}": rows for (n, s), rows in results.items()},
                                                     indent=1))
    write_report(Path(args.output), usable, scen, results, args)


def write_report(path: Path, names, scen, results, args) -> None:
    lines = [
        "# TLS echo benchmarks",
        "",
        "Generated by `python bench/tls.py` (see bench/README.md).",
        "",
        f"Machine: {machine()}.  Rounds: {args.rounds} × {args.seconds:g} s measured after {args.warmup:g} s "
        "warm-up, interleaved;",
        "server pinned to CPU 0, load generator to CPU 1, medians over rounds.  TLS 1.3, a P-256 certificate.",
        "",
        "**CPU µs** is the server's user+sys CPU time per echoed message (per handshake in the handshake",
        "rows); **× uvloop** and **× asyncio** are its ratio to theirs in the same round (lower is better).",
        "A handshake is: connect, full handshake, a one-byte echo, close_notify, the server closes.",
        "",
    ]
    summary = ["## Summary: CPU µs per message (per handshake)", "",
               "| scenario | " + " | ".join(names) + " | danga × uvloop | danga × asyncio |",
               "|---|" + "---:|" * (len(names) + 2)]
    for s in scen:
        cells = [f"{median_of(results[(n, s)], 'cpu_us'):.2f}" if results[(n, s)] else "failed" for n in names]
        d = results.get(("danga", s), [])
        summary.append(f"| {s} | " + " | ".join(cells) +
                       f" | {median_of(d, 'x_uvloop'):.3f} | {median_of(d, 'x_asyncio'):.3f} |")
    lines += summary + [""]
    for s in scen:
        conns, size, inflight, mode = SCENARIOS[s]
        hs = mode == "handshakes"
        desc = f"{conns} connections doing handshakes back to back" if hs else \
            f"{conns} connections × {size} B × {inflight} in flight"
        rate = "handshakes/s" if hs else "msgs/s"
        lines += [f"## {s}: {desc}", "",
                  f"| server | {rate} | p50 µs | p99 µs | user µs | sys µs | CPU µs | × uvloop | × asyncio | errors |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in names:
            rows = results[(n, s)]
            if not rows:
                lines.append(f"| {n} | failed | | | | | | | | |")
                continue
            lines.append(
                f"| {n} | {median_of(rows, 'msgs_per_s'):,.0f} | {median_of(rows, 'p50_us'):.0f} | "
                f"{median_of(rows, 'p99_us'):.0f} | {median_of(rows, 'user_us'):.2f} | "
                f"{median_of(rows, 'sys_us'):.2f} | {median_of(rows, 'cpu_us'):.2f} | "
                f"{median_of(rows, 'x_uvloop'):.3f} | {median_of(rows, 'x_asyncio'):.3f} | "
                f"{sum(r['errors'] for r in rows)} |")
        lines.append("")
    path.write_text("\n".join(lines))
    print("\n".join(summary))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
