"""An echo server on danga: the README's example, runnable.

    python examples/echo_server.py --port 7000      # 0 picks a free port

Serves until interrupted (Ctrl-C).  Try it with ``nc 127.0.0.1 7000``.
"""
import argparse

import danga


class Echo(danga.Socket):
    def __init__(self, sock):
        super().__init__(sock)  # registers it, makes it non-blocking
        self.watch_read(True)

    def event_read(self):
        data = self.read(65536)  # bytes; b"" if nothing yet; None at EOF
        if data is None:
            self.close("eof")
        elif data:
            self.write(data)  # sent now, or queued and flushed for you


def main():
    ap = argparse.ArgumentParser(description="danga echo server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7000)
    args = ap.parse_args()
    listener = danga.listen(f"tcp://{args.host}:{args.port}", Echo)
    print(f"echo server ({danga.poller_name()}) listening on {listener.local_addr_string()}", flush=True)
    danga.event_loop()  # Ctrl-C ends it


if __name__ == "__main__":
    main()
