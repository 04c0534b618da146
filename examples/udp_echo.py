"""A UDP echo server: each datagram goes back to its sender, unchanged.

    python examples/udp_echo.py --port 7002

Try it with ``nc -u 127.0.0.1 7002``.
"""
import argparse

import danga


class UdpEcho(danga.DatagramSocket):
    def event_read(self):
        got = self.read_from()
        if got is None:
            return
        data, sender = got
        if sender is not None:
            self.send_to(data, sender)


def main():
    ap = argparse.ArgumentParser(description="danga UDP echo server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7002)
    args = ap.parse_args()
    server = danga.listen(f"udp://{args.host}:{args.port}", UdpEcho)
    print(f"udp echo listening on {server.local_addr_string()}", flush=True)
    danga.event_loop()  # Ctrl-C ends it


if __name__ == "__main__":
    main()
