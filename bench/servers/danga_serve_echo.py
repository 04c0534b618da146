"""The echo example under danga.serve(): N pre-forked processes on one port."""
import argparse
import sys
from pathlib import Path

import danga

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from echo_server import Echo  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--processes", type=int, default=2)
args = ap.parse_args()
danga.serve(f"tcp://127.0.0.1:{args.port}", Echo, processes=args.processes,
            on_ready=lambda port: print(f"listening on 127.0.0.1:{port}", flush=True))
