"""The do-it-yourself alternative: a Danga-style echo loop on the standard
library's select.epoll (level-triggered, send at once, queue the rest)."""
import argparse
import select
import socket

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
port = ap.parse_args().port

ls = socket.create_server(("127.0.0.1", port), backlog=4096)
ls.setblocking(False)
ep = select.epoll()
ep.register(ls.fileno(), select.EPOLLIN)
conns = {}
pending = {}
IN, OUT = select.EPOLLIN, select.EPOLLOUT
print(f"listening on 127.0.0.1:{port}", flush=True)
while True:
    for fd, ev in ep.poll():
        if fd == ls.fileno():
            for _ in range(64):
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    break
                c.setblocking(False)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns[c.fileno()] = c
                ep.register(c.fileno(), IN)
            continue
        c = conns[fd]
        if ev & OUT:
            buf = pending[fd]
            n = c.send(buf)
            if n == len(buf):
                del pending[fd]
                ep.modify(fd, IN)
            else:
                pending[fd] = buf[n:]
            continue
        try:
            data = c.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            data = b""
        if not data:
            ep.unregister(fd)
            del conns[fd]
            pending.pop(fd, None)
            c.close()
            continue
        try:
            n = c.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            pending[fd] = memoryview(data)[n:]
            ep.modify(fd, OUT)
