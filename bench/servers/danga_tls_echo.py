"""A TLS echo on danga: examples/echo_server.py's Echo on a tls:// listener.

    python bench/servers/danga_tls_echo.py --port 7000 --cert cert.pem --key key.pem
"""
import argparse
import sys
from pathlib import Path

import danga

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from echo_server import Echo  # noqa: E402  the README's echo


ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
args = ap.parse_args()
listener = danga.listen(f"tls://127.0.0.1:{args.port}", Echo, certfile=args.cert, keyfile=args.key)
print(f"TLS echo ({danga.poller_name()}) listening on {listener.local_addr_string()}", flush=True)
danga.event_loop()
