"""``serve()``: several processes accepting on one port, each with its own loop.

The master binds the address with SO_REUSEPORT and keeps that socket bound
but not listening, which holds the port (a port of 0 is chosen once) and
takes no connections.  Each child binds its own SO_REUSEPORT socket to the
same address and listens, so the kernel spreads new connections across the
children.  The master restarts a child that dies (at most ``max_restarts`` a
minute).  On SIGTERM or SIGINT the master tells every child to stop: a child
accepts what is already waiting in its backlog, stops listening, finishes
its open connections (up to ``grace`` seconds), and exits; then the master
returns.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time
from typing import Any, Callable, Dict, List, Optional

from . import addresses, checks
from . import loop as _loop
from .api import raise_fd_limit
from .signals import add_signal_handler, run_loop
from .listener import Listener, drain

log = logging.getLogger("danga")


def serve(url: addresses.Where, factory: Callable[[Any], Any], processes: int = 2, grace: float = 10.0,
          max_restarts: int = 10, on_ready: Optional[Callable[[int], object]] = None,
          **listen_options: Any) -> None:
    """Serve ``url`` with ``processes`` forked children; returns after a
    SIGTERM/SIGINT shutdown.  ``on_ready(port)`` runs in the master once the
    children are started.  ``listen_options`` go to each child's listener."""
    checks.require_posix("serve() (it forks)", "run danga.listen() and danga.event_loop() in one process")
    if processes < 1:
        raise ValueError(f"danga: serve needs processes >= 1, got {processes}")
    addr = addresses.parse(url)
    if not addr.scheme.startswith("tcp"):
        raise ValueError(f"danga: serve() takes a tcp:// URL, not {url!r}")
    family, target = addresses.resolve(addr, passive=True)
    raise_fd_limit()  # inherited by every child
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    addresses.bind(holder, target, addr)
    bound = holder.getsockname()
    master = _Master(family, bound, factory, processes, grace, max_restarts, listen_options)
    try:
        for _ in range(processes):
            master.spawn()
        if on_ready is not None:
            on_ready(bound[1])
        master.run()
    finally:
        holder.close()


class _Master:
    def __init__(self, family: int, bound: Any, factory: Callable[[Any], Any], processes: int, grace: float,
                 max_restarts: int, listen_options: Dict[str, Any]) -> None:
        self.family, self.bound, self.factory = family, bound, factory
        self.processes, self.grace, self.max_restarts = processes, grace, max_restarts
        self.listen_options = listen_options
        self.children: Dict[int, float] = {}
        self.restarts: List[float] = []
        self.stopping_since: Optional[float] = None

    def spawn(self) -> None:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(self.family, self.bound, self.factory, self.grace, self.listen_options)
            except BaseException:
                log.exception("danga: serve() child failed")
                code = 1
            finally:
                os._exit(code)
        self.children[pid] = time.monotonic()

    def run(self) -> None:
        add_signal_handler(signal.SIGTERM, self.stop)
        add_signal_handler(signal.SIGINT, self.stop)
        add_signal_handler(signal.SIGCHLD, lambda s: self.reap())
        _loop.current().add_timer(0.5, self.tick)  # SIGCHLD can be coalesced: look anyway
        run_loop(_loop.current())
        _loop.reset()

    def tick(self) -> None:
        self.reap()
        if _loop.current().stopping:
            return
        _loop.current().add_timer(0.1 if self.stopping_since is not None else 0.5, self.tick)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
            log.info("danga: serve() stopping %d children", len(self.children))
            for pid in self.children:
                _kill(pid, signal.SIGTERM)
        self.reap()

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                break
            if pid == 0:
                break
            if self.children.pop(pid, None) is None:
                continue
            if self.stopping_since is None:
                log.warning("danga: serve() child %d exited (status %d); restarting it", pid, status)
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < 60]
                if len(self.restarts) < self.max_restarts:
                    self.restarts.append(now)
                    self.spawn()
                else:
                    log.error("danga: serve() children keep dying; not restarting")
        if self.stopping_since is not None:
            if self.children and time.monotonic() - self.stopping_since > self.grace + 2:
                for pid in self.children:
                    _kill(pid, signal.SIGKILL)
            if not self.children:
                _loop.current().stop()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _child(family: int, bound: Any, factory: Callable[[Any], Any], grace: float,
           listen_options: Dict[str, Any]) -> None:
    _loop.reset(close_inherited=True)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(bound)  # the master holds it: it is free to bind
    sock.listen(listen_options.pop("backlog", 1024))
    Listener(sock, factory, **listen_options)
    draining: List[bool] = []

    def drain_and_stop(signum: int) -> None:
        if not draining:  # a second SIGTERM does not cut the grace period short
            draining.append(True)
            drain(grace)

    add_signal_handler(signal.SIGTERM, drain_and_stop)
    add_signal_handler(signal.SIGINT, lambda s: None)  # the master decides (Ctrl-C reaches the whole group)
    run_loop(_loop.current())


__all__ = ["serve"]
