"""An echo server on a UNIX-domain socket.

    python examples/unix_echo.py --path /tmp/danga-echo.sock

Try it with ``nc -U /tmp/danga-echo.sock``.
"""
import argparse

import danga

from echo_server import Echo


def main():
    ap = argparse.ArgumentParser(description="danga UNIX-socket echo server")
    ap.add_argument("--path", default="/tmp/danga-echo.sock")
    args = ap.parse_args()
    danga.listen(f"local://{args.path}", Echo)
    print(f"unix echo listening on {args.path}", flush=True)
    danga.event_loop()  # Ctrl-C ends it


if __name__ == "__main__":
    main()
