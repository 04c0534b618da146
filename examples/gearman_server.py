"""A Gearman job server: a port of Perl's Gearman::Server to danga.

    python examples/gearman_server.py --port 4731

Works with today's ``gearman`` command-line client and worker (libgearman):
foreground and background jobs, high/normal/low priorities, unique ids
(submissions with the same function and unique id share one job), job
status, and the text admin commands ``status``, ``workers``, ``version``,
``maxqueue``.  It speaks the protocol as the C gearmand does, including the
newer GRAB_JOB_UNIQ and GRAB_JOB_ALL that the Perl original dies on.

How the Perl classes became Python (the porting story):

* ``Gearman::Server`` (the job queues, sleepers and handles) became the
  module-level ``Server`` object: plain dicts and deques, no fields pragma.
* ``Gearman::Server::Listener`` (a Danga::Socket whose event_read accepts)
  became one line, ``danga.listen(url, Client)``.
* ``Gearman::Server::Client`` (a Danga::Socket per connection) became
  ``Client(danga.Socket)``.  Its event_read kept its shape: read, append to a
  buffer, take whole packets, dispatch ``CMD_<name>``; the framing moved into
  the sans-I/O ``PacketParser`` so it can be fuzzed.  ``$self->write(sub {
  $self->close })`` on EOF became ``self.close("eof")``: danga flushes queued
  replies after a peer's half-close by itself.
* ``Gearman::Server::Job`` became ``Job``, with ``__slots__``.
* ``Danga::Socket->AddTimer`` (CAN_DO_TIMEOUT) became ``danga.add_timer``.
"""
import argparse
import itertools
import os
import socket
import struct
from collections import deque

import danga

VERSION = "1.0-danga"
REQ, RES = b"\0REQ", b"\0RES"
HEADER = struct.Struct("!4sII")
MAX_PACKET = 64 * 1024 * 1024
MAX_LINE = 8192

# packet types (the protocol document's numbers)
CAN_DO, CANT_DO, RESET_ABILITIES, PRE_SLEEP, NOOP, SUBMIT_JOB, JOB_CREATED = 1, 2, 3, 4, 6, 7, 8
GRAB_JOB, NO_JOB, JOB_ASSIGN, WORK_STATUS, WORK_COMPLETE, WORK_FAIL, GET_STATUS = 9, 10, 11, 12, 13, 14, 15
ECHO_REQ, ECHO_RES, SUBMIT_JOB_BG, ERROR, STATUS_RES, SUBMIT_JOB_HIGH = 16, 17, 18, 19, 20, 21
SET_CLIENT_ID, CAN_DO_TIMEOUT, ALL_YOURS, WORK_EXCEPTION, OPTION_REQ, OPTION_RES = 22, 23, 24, 25, 26, 27
WORK_DATA, WORK_WARNING, GRAB_JOB_UNIQ, JOB_ASSIGN_UNIQ, SUBMIT_JOB_HIGH_BG = 28, 29, 30, 31, 32
SUBMIT_JOB_LOW, SUBMIT_JOB_LOW_BG, GRAB_JOB_ALL, JOB_ASSIGN_ALL = 33, 34, 39, 40

# submit type -> (priority 0 high .. 2 low, background)
SUBMITS = {SUBMIT_JOB: (1, False), SUBMIT_JOB_BG: (1, True), SUBMIT_JOB_HIGH: (0, False),
           SUBMIT_JOB_HIGH_BG: (0, True), SUBMIT_JOB_LOW: (2, False), SUBMIT_JOB_LOW_BG: (2, True)}


def packet(kind, *args):
    body = b"\0".join(args)
    return HEADER.pack(RES, kind, len(body)) + body


class ProtocolError(ValueError):
    pass


class PacketParser:
    """Sans-I/O: bytes in; ("packet", type, body) and ("line", text) out."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        buf = self.buf + data
        out = []
        pos = 0
        while pos < len(buf):
            if buf[pos] == 0:
                if len(buf) - pos < 12:
                    break
                magic, kind, size = HEADER.unpack_from(buf, pos)
                if magic != REQ:
                    raise ProtocolError("bad magic")
                if size > MAX_PACKET:
                    raise ProtocolError("packet too large")
                if len(buf) - pos - 12 < size:
                    break
                out.append(("packet", kind, buf[pos + 12:pos + 12 + size]))
                pos += 12 + size
            else:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if len(buf) - pos > MAX_LINE:
                        raise ProtocolError("line too long")
                    break
                out.append(("line", buf[pos:nl].rstrip(b"\r").decode("latin-1")))
                pos = nl + 1
        self.buf = buf[pos:]
        return out


class Job:
    __slots__ = ("handle", "func", "uniq", "data", "listeners", "worker", "background", "status")

    def __init__(self, handle, func, uniq, data, background):
        self.handle, self.func, self.uniq, self.data = handle, func, uniq, data
        self.listeners = []
        self.worker = None
        self.background = background
        self.status = (b"0", b"0")


class Server:
    def __init__(self):
        self.queues = {}  # func -> [deque high, deque normal, deque low]
        self.jobs = {}  # handle -> Job
        self.by_uniq = {}  # (func, uniq) -> Job
        self.sleepers = {}  # func -> {client: None} in sleep order
        self.max_queue = {}  # func -> int
        self.clients = set()
        self.ids = itertools.count(1)
        self.handle_base = b"H:%s:%d:" % (socket.gethostname().encode(), os.getpid())

    def submit(self, client, func, uniq, data, priority, background):
        job = self.by_uniq.get((func, uniq)) if uniq else None
        if job is None:
            queue = self.queues.setdefault(func, [deque(), deque(), deque()])
            limit = self.max_queue.get(func)
            if limit is not None and sum(map(len, queue)) >= limit:
                return None
            job = Job(self.handle_base + b"%d" % next(self.ids), func, uniq, data, background)
            queue[priority].append(job)
            self.jobs[job.handle] = job
            if uniq:
                self.by_uniq[(func, uniq)] = job
        if not background:
            job.background = False
            job.listeners.append(client)
        self.wake(func)
        return job

    def wake(self, func):
        for sleeper in list(self.sleepers.pop(func, {})):
            if not sleeper.closed and sleeper.sleeping:
                sleeper.sleeping = False
                sleeper.write(packet(NOOP))

    def grab(self, func):
        for queue in self.queues.get(func, ()):
            while queue:
                job = queue.popleft()
                if job.background or any(not c.closed for c in job.listeners):
                    return job
                self.finish(job)  # nobody waits for it any more
        return None

    def finish(self, job):
        self.jobs.pop(job.handle, None)
        if job.uniq and self.by_uniq.get((job.func, job.uniq)) is job:
            del self.by_uniq[(job.func, job.uniq)]

    def relay(self, job, kind, *args):
        data = packet(kind, job.handle, *args)
        for c in job.listeners:
            c.write(data)  # the same bytes object to every listener


server = Server()


class Client(danga.Socket):
    """One connection: a client, a worker, or both (as in the protocol)."""

    def __init__(self, sock):
        super().__init__(sock)
        self.parser = PacketParser()
        self.can_do = {}  # func -> timeout seconds or None
        self.doing = {}  # handle -> Job
        self.sleeping = False
        self.client_id = b"-"
        self.options = set()
        server.clients.add(self)
        self.watch_read(True)

    def event_read(self):
        data = self.read(65536)
        if data is None:
            return self.close("eof")
        try:
            items = self.parser.feed(data)
        except ProtocolError as e:
            self.write(packet(ERROR, b"protocol_error", str(e).encode()))
            return self.close("protocol_error")
        for item in items:
            if self.closed:
                return
            if item[0] == "packet":
                handler = COMMANDS.get(item[1])
                if handler is None:
                    self.write(packet(ERROR, b"unknown_command", b"Unknown packet type %d" % item[1]))
                else:
                    handler(self, item[2])
            else:
                self.text_command(item[1])

    def close(self, reason=""):
        if self.closed:
            return
        server.clients.discard(self)
        for job in self.doing.values():  # a worker died mid-job: the job fails
            server.relay(job, WORK_FAIL)
            server.finish(job)
        self.doing.clear()
        super().close(reason)

    # -- client commands ----------------------------------------------------------

    def submit(self, kind, body):
        parts = body.split(b"\0", 2)
        if len(parts) != 3 or not parts[0]:
            return self.write(packet(ERROR, b"invalid_args", b"No func/uniq header"))
        priority, background = SUBMITS[kind]
        job = server.submit(self, parts[0], parts[1], parts[2], priority, background)
        if job is None:
            return self.write(packet(ERROR, b"queue_full", b"Job queue is full"))
        self.write(packet(JOB_CREATED, job.handle))

    def get_status(self, body):
        job = server.jobs.get(body)
        if job is None:
            return self.write(packet(STATUS_RES, body, b"0", b"0", b"0", b"0"))
        self.write(packet(STATUS_RES, body, b"1", b"1" if job.worker else b"0", *job.status))

    def echo(self, body):
        self.write(HEADER.pack(RES, ECHO_RES, len(body)) + body)

    def option(self, body):
        if body not in (b"exceptions",):
            return self.write(packet(ERROR, b"unknown_option", body))
        self.options.add(body)
        self.write(packet(OPTION_RES, body))

    # -- worker commands ------------------------------------------------------------

    def cmd_can_do(self, body):
        self.can_do[body] = None

    def cmd_can_do_timeout(self, body):
        func, _, timeout = body.partition(b"\0")
        self.can_do[func] = int(timeout) if timeout.isdigit() else None

    def cmd_cant_do(self, body):
        self.can_do.pop(body, None)

    def cmd_reset(self, body):
        self.can_do.clear()

    def cmd_set_client_id(self, body):
        self.client_id = body or b"-"

    def pre_sleep(self, body):
        self.sleeping = True
        for func in self.can_do:
            if any(server.queues.get(func, ())):
                self.sleeping = False
                return self.write(packet(NOOP))
            server.sleepers.setdefault(func, {})[self] = None

    def grab(self, kind):
        for func in list(self.can_do):
            job = server.grab(func)
            if job is None:
                continue
            job.worker = self
            self.doing[job.handle] = job
            timeout = self.can_do.get(func)
            if timeout:
                danga.add_timer(timeout, lambda job=job: self.job_timed_out(job))
            if kind == GRAB_JOB:
                return self.write(packet(JOB_ASSIGN, job.handle, job.func, job.data))
            if kind == GRAB_JOB_UNIQ:
                return self.write(packet(JOB_ASSIGN_UNIQ, job.handle, job.func, job.uniq, job.data))
            return self.write(packet(JOB_ASSIGN_ALL, job.handle, job.func, job.uniq, b"", job.data))
        self.write(packet(NO_JOB))

    def job_timed_out(self, job):
        if self.doing.pop(job.handle, None) is job:
            server.relay(job, WORK_FAIL)
            server.finish(job)

    def work_update(self, kind, body):
        handle, _, rest = body.partition(b"\0")
        job = self.doing.get(handle)
        if job is None:
            return self.write(packet(ERROR, b"not_worker", b"Job not assigned to this worker"))
        if kind == WORK_STATUS:
            num, _, den = rest.partition(b"\0")
            job.status = (num, den)
            return server.relay(job, WORK_STATUS, num, den)
        if kind in (WORK_DATA, WORK_WARNING):
            return server.relay(job, kind, rest)
        if kind == WORK_EXCEPTION:
            for c in job.listeners:
                if b"exceptions" in c.options:
                    c.write(packet(WORK_EXCEPTION, job.handle, rest))
        del self.doing[handle]
        if kind == WORK_COMPLETE:
            server.relay(job, WORK_COMPLETE, rest)
        elif kind == WORK_FAIL:
            server.relay(job, WORK_FAIL)
        else:  # an exception ends the job as a failure for listeners without the option
            for c in job.listeners:
                if b"exceptions" not in c.options:
                    c.write(packet(WORK_FAIL, job.handle))
        server.finish(job)

    # -- the text admin protocol ------------------------------------------------------

    def text_command(self, line):
        words = line.split()
        cmd = words[0].lower() if words else ""
        if cmd == "status":
            funcs = {}
            for c in server.clients:
                for f in c.can_do:
                    funcs.setdefault(f, [0, 0, 0])[2] += 1
            for job in server.jobs.values():
                counts = funcs.setdefault(job.func, [0, 0, 0])
                counts[0] += 1
                counts[1] += job.worker is not None
            out = [b"%s\t%d\t%d\t%d\n" % (f, *n) for f, n in sorted(funcs.items())]
            self.write(b"".join(out) + b".\n")
        elif cmd == "workers":
            out = []
            for c in sorted(server.clients, key=lambda c: c.fd):
                ip = (c.peer_ip_string() or "-").encode()
                out.append(b"%d %s %s : %s\n" % (c.fd, ip, c.client_id, b" ".join(sorted(c.can_do))))
            self.write(b"".join(out) + b".\n")
        elif cmd == "version":
            self.write(f"OK {VERSION}\n".encode())
        elif cmd == "maxqueue" and len(words) >= 2:
            func = words[1].encode()
            if len(words) > 2 and words[2].lstrip("-").isdigit() and int(words[2]) >= 0:
                server.max_queue[func] = int(words[2])
            else:
                server.max_queue.pop(func, None)
            self.write(b"OK\n")
        else:
            self.write(b"ERR unknown_command Unknown+server+command\n")


COMMANDS = {
    CAN_DO: Client.cmd_can_do, CAN_DO_TIMEOUT: Client.cmd_can_do_timeout, CANT_DO: Client.cmd_cant_do,
    RESET_ABILITIES: Client.cmd_reset, SET_CLIENT_ID: Client.cmd_set_client_id, PRE_SLEEP: Client.pre_sleep,
    GET_STATUS: Client.get_status, ECHO_REQ: Client.echo, OPTION_REQ: Client.option,
    GRAB_JOB: lambda c, b: c.grab(GRAB_JOB), GRAB_JOB_UNIQ: lambda c, b: c.grab(GRAB_JOB_UNIQ),
    GRAB_JOB_ALL: lambda c, b: c.grab(GRAB_JOB_ALL), ALL_YOURS: lambda c, b: None,
}
for _kind in SUBMITS:
    COMMANDS[_kind] = lambda c, b, k=_kind: c.submit(k, b)
for _kind in (WORK_STATUS, WORK_COMPLETE, WORK_FAIL, WORK_EXCEPTION, WORK_DATA, WORK_WARNING):
    COMMANDS[_kind] = lambda c, b, k=_kind: c.work_update(k, b)


def main():
    ap = argparse.ArgumentParser(description="Gearman job server on danga")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4730)
    args = ap.parse_args()
    listener = danga.listen(f"tcp://{args.host}:{args.port}", Client, backlog=1024)
    print(f"gearman server listening on {listener.local_addr_string()}", flush=True)
    danga.event_loop()  # Ctrl-C ends it


if __name__ == "__main__":
    main()
