"""The hot path's cost in one process, for before/after comparisons that the
shared machine's noise would drown in bench/run.py.

    python bench/hotpath.py                          # this checkout
    python bench/hotpath.py --baseline /path/to/other/checkout

An echo Socket on each of 50 socketpairs; the other ends are plain sockets
driven from the post-loop callback (send 64 B on each, read the echoes back),
so every pass does the same kernel work and the difference between two
checkouts is the Python the loop, ``read()`` and ``write()`` run.  Each
checkout runs in its own process, the checkouts alternate, and the figure is
the *minimum* CPU time per message over the runs: noise only ever adds time,
so the minimum is the stable estimate.  Prints one line per run and the
ratio of the minima.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import socket, sys, time
import danga

PAIRS, MESSAGES, SIZE = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

class Echo(danga.Socket):
    def __init__(self, sock):
        super().__init__(sock)
        self.watch_read(True)
    def event_read(self):
        data = self.read(65536)
        if data is None:
            self.close("eof")
        elif data:
            self.write(data)

peers = []
for _ in range(PAIRS):
    a, b = socket.socketpair()
    Echo(a)
    b.setblocking(False)
    peers.append(b)
msg = b"x" * SIZE
state = {"echoed": 0}

def drive(dmap, other):
    n = 0
    for p in peers:
        try:
            n += len(p.recv(65536))
        except BlockingIOError:
            pass
    state["echoed"] += n // SIZE
    if state["echoed"] >= MESSAGES:
        return False
    for p in peers:
        p.send(msg)
    return True

for p in peers:
    p.send(msg)
danga.set_post_loop_callback(drive)
t0 = time.process_time()
danga.event_loop()
cpu = time.process_time() - t0
print(f"{cpu / state['echoed'] * 1e6:.4f} {danga.__file__}")
"""


def run(checkout: Path, pairs: int, messages: int, size: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout), "DANGA_POLLER": "epoll"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(pairs), str(messages), str(size)],
                         env=env, capture_output=True, text=True, check=True, cwd="/")
    us, where = out.stdout.split()
    if not where.startswith(str(checkout)):
        raise RuntimeError(f"{checkout}: imported danga from {where}")
    return float(us)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default="", help="another checkout, with its cffi modules built")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    here = Path(__file__).resolve().parent.parent
    checkouts = {"this": here}
    if args.baseline:
        checkouts["baseline"] = Path(args.baseline).resolve()
    best = {name: float("inf") for name in checkouts}
    for i in range(args.runs):
        for name, path in checkouts.items():
            us = run(path, args.pairs, args.messages, args.size)
            best[name] = min(best[name], us)
            print(f"run {i + 1}/{args.runs} {name:8} {us:.3f} µs CPU/msg", flush=True)
    for name, us in best.items():
        print(f"min {name:8} {us:.3f} µs CPU/msg")
    if args.baseline:
        print(f"this / baseline = {best['this'] / best['baseline']:.3f}")


if __name__ == "__main__":
    main()
