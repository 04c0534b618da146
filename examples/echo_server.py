"""An echo server on danga: the README's example, runnable.

    python examples/echo_server.py --port 7000      # 0 picks a free port

Serves until interrupted (Ctrl-C).  Try it with ``nc 127.0.0.1 7000``.
"""
import argparse
import socket

import danga


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


class Listener(danga.Socket):
    """Accepts connections and hands each to Echo."""

    def __init__(self, sock):
        super().__init__(sock)
        self.watch_read(True)

    def event_read(self):
        for _ in range(64):  # bounded, so a busy listener cannot starve the rest
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # ECONNABORTED, EMFILE...: keep serving
                danga.socket.log.warning("accept failed: %s", e)
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            Echo(conn)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7000)
    args = ap.parse_args()
    sock = socket.create_server((args.host, args.port), backlog=1024)
    Listener(sock)
    host, port = sock.getsockname()[:2]
    print(f"echo server ({danga.poller_name()}) listening on {host}:{port}", flush=True)
    try:
        danga.event_loop()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
