"""Foreground Gearman jobs per second: N workers and N clients, raw protocol.

    python bench/gearman_load.py PORT N [SECONDS]      # prints "<jobs/s> <jobs>"
"""
import multiprocessing
import socket
import struct
import sys
import time

HDR = struct.Struct("!4sII")


def recv_packet(sock, buf):
    while len(buf) < 12:
        buf += sock.recv(65536) or b""
        if not buf:
            raise EOFError
    _, kind, size = HDR.unpack_from(buf)
    while len(buf) < 12 + size:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk
    return kind, buf[12:12 + size], buf[12 + size:]


def req(kind, *args):
    body = b"\0".join(args)
    return HDR.pack(b"\0REQ", kind, len(body)) + body


def worker(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(req(1, b"bench"))  # CAN_DO
    buf = b""
    s.sendall(req(9))  # GRAB_JOB
    while True:
        kind, body, buf = recv_packet(s, buf)
        if kind == 11:  # JOB_ASSIGN handle\0func\0data
            handle, _, data = body.split(b"\0", 2)
            s.sendall(req(13, handle, data) + req(9))  # WORK_COMPLETE, GRAB_JOB
        elif kind == 10:  # NO_JOB
            s.sendall(req(4))  # PRE_SLEEP
        elif kind == 6:  # NOOP
            s.sendall(req(9))


def client(port, seconds, counter):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    done = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s.sendall(req(7, b"bench", b"", b"payload"))  # SUBMIT_JOB
        while True:
            kind, body, buf = recv_packet(s, buf)
            if kind == 13:  # WORK_COMPLETE
                done += 1
                break
    with counter.get_lock():
        counter.value += done


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)
    workers = [ctx.Process(target=worker, args=(port,), daemon=True) for _ in range(n)]
    for w in workers:
        w.start()
    time.sleep(0.3)
    clients = [ctx.Process(target=client, args=(port, seconds, counter)) for _ in range(n)]
    t0 = time.monotonic()
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    elapsed = time.monotonic() - t0
    for w in workers:
        w.terminate()
    print(f"{counter.value / elapsed:.1f} {counter.value}")


if __name__ == "__main__":
    main()
