"""Using every core: defer (thread pool), signals, forked workers, serve()."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import danga
from danga import workers

from .helpers import run, run_for

ROOT = Path(__file__).resolve().parent.parent


# -- defer --------------------------------------------------------------------------------


def test_defer_result_and_exception_arrive_on_the_loop_thread():
    main = threading.get_ident()
    results = []

    def blocking(x):
        time.sleep(0.05)
        assert threading.get_ident() != main
        return x * 2

    def fails():
        raise ValueError("from the pool")

    danga.defer(blocking, 21, callback=lambda r: results.append(("ok", r, threading.get_ident())))
    danga.defer(fails, errback=lambda e: results.append(("err", str(e), threading.get_ident())))
    run(lambda: len(results) == 2)
    assert sorted(results) == [("err", "from the pool", main), ("ok", 42, main)]


def test_defer_pool_size_is_fixed_by_the_user():
    danga.set_thread_pool_size(2)
    active, peak = [0], [0]
    lock = threading.Lock()

    def work():
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1

    done = []
    for _ in range(8):
        danga.defer(work, callback=lambda r: done.append(1))
    run(lambda: len(done) == 8)
    assert peak[0] == 2
    with pytest.raises(RuntimeError, match="already running"):
        danga.set_thread_pool_size(4)


def test_call_from_thread_wakes_a_blocked_loop():
    got = []
    danga.loop.current().poller()
    threading.Timer(0.1, lambda: danga.call_from_thread(lambda: got.append(threading.get_ident()))).start()
    run(lambda: got)
    assert got == [threading.get_ident()]


# -- signals --------------------------------------------------------------------------------


@pytest.mark.posix("SIGUSR1")
def test_signal_while_blocked_in_the_wait():
    got = []

    def on_usr1(signum):
        got.append((signum, threading.get_ident()))
        danga.stop()

    danga.add_signal_handler(signal.SIGUSR1, on_usr1)
    threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGUSR1)).start()
    guard = danga.add_timer(10, danga.stop)
    danga.event_loop()  # no timeout, nothing else: only the signal can wake it
    guard.cancel()
    assert got == [(signal.SIGUSR1, threading.get_ident())]
    assert danga.remove_signal_handler(signal.SIGUSR1)


def test_ctrl_c_ends_the_loop_cleanly_and_it_can_run_again():
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT does not have Python's default handler in this process")
    stopped = []
    if sys.platform == "win32":  # os.kill(pid, SIGINT) is TerminateProcess there; raise_signal runs the handler
        threading.Timer(0.1, signal.raise_signal, args=(signal.SIGINT,)).start()
    else:
        threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGINT)).start()
    guard = danga.add_timer(10, lambda: stopped.append("guard") or danga.stop())
    danga.event_loop()  # returns: no KeyboardInterrupt from wherever the interpreter was
    guard.cancel()
    assert stopped == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    ran = []
    danga.add_timer(0, lambda: ran.append(1))
    run(lambda: ran)


@pytest.mark.posix("fork and SIGTERM")
def test_a_signal_to_a_forked_child_never_reaches_the_parent():
    got = []
    danga.add_signal_handler(signal.SIGTERM, lambda s: got.append(s))
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGTERM)  # default action in the child: it dies
        time.sleep(5)
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    run_for(0.2)
    assert got == []
    os.kill(os.getpid(), signal.SIGTERM)  # the parent's own handler still works
    run(lambda: got)
    danga.remove_signal_handler(signal.SIGTERM)


# -- workers ----------------------------------------------------------------------------------


class Squarer(workers.Worker):
    name = "squarer"

    def worker_init(self):
        self.pid = os.getpid()

    def receive_data(self, message):
        if message == "crash":
            os._exit(7)
        if message == "raise":
            raise ZeroDivisionError("bad request")
        self.send_data((message * message, self.pid, danga.watched_sockets()))


@pytest.fixture
def squarer():
    workers.start_worker(Squarer, count=2)
    yield "squarer"
    workers.stop_workers()


@pytest.mark.posix("forked workers")
def test_worker_replies_from_its_own_process_with_a_fresh_loop(squarer):
    replies = []
    for n in range(6):
        workers.ask_worker(squarer, n, callback=replies.append)
    run(lambda: len(replies) == 6)
    assert sorted(r[0] for r in replies) == [0, 1, 4, 9, 16, 25]
    pids = {r[1] for r in replies}
    assert len(pids) == 2 and os.getpid() not in pids  # round robin over two processes
    assert all(r[2] == 1 for r in replies)  # only its own channel in the child's loop


@pytest.mark.posix("forked workers")
def test_worker_exception_goes_to_the_errback(squarer):
    errors = []
    workers.ask_worker(squarer, "raise", errback=errors.append)
    run(lambda: errors)
    assert isinstance(errors[0], workers.WorkerError) and "ZeroDivisionError: bad request" in str(errors[0])


@pytest.mark.posix("forked workers")
def test_worker_crash_fails_pending_requests_and_is_restarted(squarer):
    before = set(workers.workers()[squarer])
    errors, replies = [], []
    workers.ask_worker(squarer, "crash", errback=errors.append)
    run(lambda: errors)
    assert isinstance(errors[0], workers.WorkerDied)
    run(lambda: len(workers.workers()[squarer]) == 2)
    after = set(workers.workers()[squarer])
    assert len(after & before) == 1  # one replaced, one untouched
    for n in range(4):
        workers.ask_worker(squarer, n, callback=replies.append)
    run(lambda: len(replies) == 4)


@pytest.mark.posix("forked workers")
def test_reply_to_a_connection_packet_style(squarer):
    class Asker(danga.Connection):
        def worker_receive(self, reply):
            self.reply = reply

    a, b = socket.socketpair()
    conn = Asker(a)
    workers.ask_worker(squarer, 12, reply_to=conn)
    run(lambda: hasattr(conn, "reply"))
    assert conn.reply[0] == 144
    conn.close()
    b.close()


@pytest.mark.posix("forked workers")
def test_starting_a_running_worker_is_an_error(squarer):
    with pytest.raises(ValueError, match="already running"):
        workers.start_worker(Squarer)
    with pytest.raises(KeyError, match="nobody"):
        workers.ask_worker("nobody", 1)


# -- serve: pre-forked processes on one port ----------------------------------------------

SERVE_SCRIPT = """
import sys, danga

class SlowEcho(danga.Socket):
    def __init__(self, sock):
        super().__init__(sock)
        self.watch_read(True)
    def event_read(self):
        data = self.read(65536)
        if data is None:
            return self.close("eof")
        if data:
            import os
            danga.add_timer(0.3, lambda: self.write(data + b" from %d" % os.getpid()))

danga.serve("tcp://127.0.0.1:0", SlowEcho, processes=2, grace=5,
            on_ready=lambda port: print(port, flush=True))
print("master done", flush=True)
"""


def children_of(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.posix("serve() (fork)")
def test_serve_restarts_children_and_stops_gracefully_losing_nothing():
    master = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT], stdout=subprocess.PIPE, text=True,
                              cwd=str(ROOT))
    clients = []
    try:
        port = int(master.stdout.readline())
        deadline = time.monotonic() + 10
        while len(children_of(master.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        kids = children_of(master.pid)
        assert len(kids) == 2
        os.kill(kids[0], signal.SIGKILL)  # a child dies: the master replaces it
        while (len(children_of(master.pid)) < 2 or kids[0] in children_of(master.pid)) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(children_of(master.pid)) == 2 and kids[0] not in children_of(master.pid)
        for i in range(20):
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(b"request %d" % i)
            clients.append(c)
        time.sleep(0.1)  # every request accepted, none answered yet (0.3 s)
        master.send_signal(signal.SIGTERM)
        answers = [c.recv(100) for c in clients]
        assert all(a.startswith(b"request %d from " % i) for i, a in enumerate(answers)), answers
        pids = {a.rsplit(b" ", 1)[1] for a in answers}
        for c in clients:
            c.close()
        assert master.stdout.readline() == "master done\n"
        assert master.wait(15) == 0
        assert len(pids) >= 1
    finally:
        for c in clients:
            c.close()
        if master.poll() is None:
            master.kill()
            master.wait()
        master.stdout.close()
