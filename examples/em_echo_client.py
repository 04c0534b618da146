"""An EventMachine-style echo client: sends lines, checks each comes back.

    python examples/em_echo_client.py --port 7000 --count 1000

Run it against examples/echo_server.py.  Prints the round trips per second.
"""
import argparse
import sys
import time

import danga


class EchoClient(danga.Connection):
    framer = lambda: danga.Lines()  # noqa: E731
    count = 1000
    failed = False

    def connection_completed(self):
        self.sent = 0
        self.started = time.monotonic()
        self.send_next()

    def send_next(self):
        self.sent += 1
        self.send_data(b"ping %d" % self.sent)

    def receive_data(self, line):
        if line != b"ping %d" % self.sent:
            sys.exit(f"mismatch: sent ping {self.sent}, got {line!r}")
        if self.sent < self.count:
            self.send_next()
        else:
            elapsed = time.monotonic() - self.started
            print(f"{self.count} round trips in {elapsed:.3f} s ({self.count / elapsed:.0f}/s)", flush=True)
            self.close_connection()

    def unbind(self, reason):
        if reason.startswith("connect_failed"):
            print(f"could not connect: {reason}", file=sys.stderr)
            EchoClient.failed = True
        danga.stop()


def main():
    ap = argparse.ArgumentParser(description="danga EventMachine-style echo client")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--count", type=int, default=1000)
    args = ap.parse_args()
    EchoClient.count = args.count
    danga.connect(f"tcp://{args.host}:{args.port}", EchoClient, timeout=5)
    danga.event_loop()
    sys.exit(1 if EchoClient.failed else 0)


if __name__ == "__main__":
    main()
