"""A server that hands CPU-heavy requests to forked workers (Packet's
eval-server example, done safely: workers compute, they never eval input).

    python examples/worker_server.py --port 7003 --workers 2

Line protocol: ``primes N`` answers how many primes are <= N (N up to
10,000,000), computed in a worker process so the loop keeps serving;
``ping`` answers at once.  Try it with ``nc 127.0.0.1 7003``.
"""
import argparse

import danga
from danga import workers

MAX_N = 10_000_000


def count_primes(n):
    if n < 2:
        return 0
    sieve = bytearray([1]) * (n + 1)
    sieve[0] = sieve[1] = 0
    for i in range(2, int(n ** 0.5) + 1):
        if sieve[i]:
            sieve[i * i::i] = bytes(len(range(i * i, n + 1, i)))
    return sum(sieve)


class PrimeWorker(workers.Worker):
    name = "primes"

    def receive_data(self, n):
        self.send_data(count_primes(n))


class Client(danga.Connection):
    framer = lambda: danga.Lines(max_size=100)  # noqa: E731

    def receive_data(self, line):
        words = line.split()
        if words == [b"ping"]:
            self.send_data(b"pong")
        elif len(words) == 2 and words[0] == b"primes" and words[1].isdigit() and int(words[1]) <= MAX_N:
            n = int(words[1])
            workers.ask_worker("primes", n, reply_to=self)
        else:
            self.send_data(b"error: say 'ping' or 'primes N' (N <= %d)" % MAX_N)

    def worker_receive(self, count):
        self.send_data(b"%d" % count)

    def worker_error(self, exc):
        self.send_data(b"error: %s" % str(exc).encode())


def main():
    ap = argparse.ArgumentParser(description="danga server with worker processes")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7003)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    workers.start_worker(PrimeWorker, count=args.workers)
    listener = danga.listen(f"tcp://{args.host}:{args.port}", Client)
    print(f"worker server ({args.workers} workers) listening on {listener.local_addr_string()}", flush=True)
    try:
        danga.event_loop()  # Ctrl-C ends it
    finally:
        workers.stop_workers()


if __name__ == "__main__":
    main()
