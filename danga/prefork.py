"""``serve()``: several processes accepting on one port, each with its own loop,
and a reload that drops nothing.

One listening socket, shared
----------------------------
The master binds and listens once; every child inherits that one socket
through ``fork`` and accepts from its queue in its own loop.  A connection
waits in one queue that outlives any child, so a child can stop accepting
and go away at any moment without a single connection being refused or
reset.  (With a socket per child and SO_REUSEPORT, the kernel spreads
connections a little more evenly, but a connection that lands in the queue
of a child's socket just as that child closes it is reset: no reload can be
clean that way.)  The master never accepts; it restarts a child that dies
(at most ``max_restarts`` a minute).

Stopping: on SIGTERM or SIGINT the master tells every child to stop; a child
accepts what is already waiting, closes its copy of the socket, finishes its
open connections (up to ``grace`` seconds) and exits; then the master
returns.  A child whose master is killed outright notices within a second
and stops the same way.

Reloading: on SIGHUP the master first runs its command line once more as a
probe, whose ``serve()`` exits at once: new code that fails to import or
start is reported (its traceback logged) and the running code goes on.
Then the master re-executes itself in place (same PID, so a
supervisor such as systemd keeps tracking it): the new program image runs the
same command line with freshly loaded code, reaches ``serve()`` again, and
finds in its environment the listening socket (kept open across ``exec``)
and the PIDs of the old children, which are still its children and still
serving.  It starts new children, and once each of them says it is ready
(a byte on a pipe, after its listener exists), it tells the old ones to stop
as above.  Old and new children accept from the same queue meanwhile.  If
``exec`` itself fails the master logs it and goes on with the old code.  A
SIGHUP that arrives while new children are still starting is done once they
are ready.

The same sharing lets ``serve()`` take a socket it did not make: ``fd://N``
(systemd socket activation hands one over: danga/activation.py).
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from . import addresses, checks
from . import loop as _loop
from .api import raise_fd_limit
from .listener import Listener, drain
from .signals import add_signal_handler, run_loop

log = logging.getLogger("danga")

#: The environment a re-executed master finds: its listening descriptor, the
#: PID it is meant for (a grandchild must not take it), the old children.
ENV_FD, ENV_PID, ENV_RETIRING = "DANGA_SERVE_FD", "DANGA_SERVE_PID", "DANGA_SERVE_RETIRING"
#: Set for the probe of a reload: its ``serve()`` exits at once, successfully.
ENV_PROBE = "DANGA_SERVE_PROBE"
#: Seconds the probe may take to reach ``serve()``.
PROBE_TIMEOUT = 60.0


def serve(url: addresses.Where, factory: Callable[[Any], Any], processes: int = 2, grace: float = 10.0,
          max_restarts: int = 10, on_ready: Optional[Callable[[int], object]] = None,
          **listen_options: Any) -> None:
    """Serve ``url`` (``tcp://``, or ``fd://N`` of a listening socket) with
    ``processes`` forked children; returns after a SIGTERM/SIGINT shutdown.
    SIGHUP reloads: the master re-executes its command line, starts new
    children with the new code and retires the old ones gracefully, losing
    no connection.  ``on_ready(port)`` runs in the master once the children
    are started (again after each reload).  ``listen_options`` go to each
    child's listener (``backlog`` to the shared socket)."""
    checks.require_posix("serve() (it forks)", "run danga.listen() and danga.event_loop() in one process")
    if os.environ.get(ENV_PROBE) == "1":
        os._exit(0)  # a reload's probe: the new code got this far
    if processes < 1:
        raise ValueError(f"danga: serve needs processes >= 1, got {processes}")
    backlog = int(listen_options.pop("backlog", 1024))
    sock, retiring = _listening_socket(url, backlog)
    raise_fd_limit()  # inherited by every child
    name = sock.getsockname()
    master = _Master(sock, factory, processes, grace, max_restarts, listen_options, retiring)
    try:
        master.install()
        for _ in range(processes):
            master.spawn()
        if on_ready is not None:
            on_ready(name[1] if isinstance(name, tuple) else 0)
        master.run()
    finally:
        sock.close()


def _listening_socket(url: addresses.Where, backlog: int) -> Tuple[socket.socket, Set[int]]:
    """The socket to share, and the old children of a reload (if this is the
    re-executed master)."""
    env = os.environ
    if env.get(ENV_PID) == str(os.getpid()) and ENV_FD in env:
        fd = int(env.pop(ENV_FD))
        retiring = {int(p) for p in env.pop(ENV_RETIRING, "").split(",") if p}
        del env[ENV_PID]
        sock = socket.socket(fileno=fd)
        sock.set_inheritable(False)
        log.info("danga: serve() reloaded (pid %d): %d old children to retire", os.getpid(), len(retiring))
        return sock, retiring
    addr = addresses.parse(url)
    if addr.scheme == "fd":
        sock = socket.socket(fileno=os.dup(addr.target))
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.close()
            raise ValueError(f"danga: serve({url!r}): descriptor {addr.target} is not a listening socket")
        sock.set_inheritable(False)
        return sock, set()
    if not addr.scheme.startswith("tcp"):
        raise ValueError(f"danga: serve() takes a tcp:// or fd:// URL, not {url!r}")
    family, target = addresses.resolve(addr, passive=True)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        addresses.bind(sock, target, addr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock, set()


class _Master:
    def __init__(self, sock: socket.socket, factory: Callable[[Any], Any], processes: int, grace: float,
                 max_restarts: int, listen_options: Dict[str, Any], retiring: Set[int]) -> None:
        self.sock, self.factory = sock, factory
        self.processes, self.grace, self.max_restarts = processes, grace, max_restarts
        self.listen_options = listen_options
        self.children: Dict[int, float] = {}  # pid -> started
        self.starting: Dict[int, int] = {}  # pid -> the read end of its ready pipe
        self.retiring: Dict[int, Optional[float]] = {pid: None for pid in retiring}  # pid -> told to stop at
        self.restarts: List[float] = []
        self.stopping_since: Optional[float] = None
        self.reload_wanted = False
        self.probe: Optional["subprocess.Popen[bytes]"] = None  # the new code, tried before the exec
        self.probe_since = 0.0

    # -- children -------------------------------------------------------------------

    def spawn(self) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        master = os.getpid()  # read here: a child asking getppid() after a quick SIGKILL would get the reaper
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(r)
                for other in self.starting.values():
                    os.close(other)
                _child(self.sock, self.factory, self.grace, dict(self.listen_options), w, master)
            except BaseException:
                log.exception("danga: serve() child failed")
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        self.children[pid] = time.monotonic()
        self.starting[pid] = r
        def readable(mask: int, pid: int = pid) -> None:
            self._ready(pid)

        _loop.current().add_other_fds({r: readable})

    def _ready(self, pid: int) -> None:
        """The child's ready byte arrived (or its pipe closed: it died first)."""
        r = self.starting.pop(pid, None)
        if r is None:
            return
        _loop.current().remove_other_fd(r)
        os.close(r)
        if not self.starting:
            self._all_ready()

    def _all_ready(self) -> None:
        """Every child started: the old ones of a reload may go now."""
        now = time.monotonic()
        for pid, told in self.retiring.items():
            if told is None:
                self.retiring[pid] = now
                _kill(pid, signal.SIGTERM)
        if self.reload_wanted and self.stopping_since is None:
            self.reload_wanted = False
            self.reload()

    # -- signals ----------------------------------------------------------------------

    def install(self) -> None:
        """The master's signals, before any child exists or ``on_ready``
        runs: a SIGHUP or SIGTERM sent as soon as the port is known must not
        find Python's default action (which would end the master)."""
        add_signal_handler(signal.SIGTERM, self.stop)
        add_signal_handler(signal.SIGINT, self.stop)
        add_signal_handler(signal.SIGHUP, lambda s: self.reload())
        add_signal_handler(signal.SIGCHLD, lambda s: self.reap())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_SIGNALS)  # blocked across a reload's exec

    def run(self) -> None:
        _loop.current().add_timer(0.5, self.tick)  # SIGCHLD can be coalesced: look anyway
        run_loop(_loop.current())
        if self.probe is not None:
            self.probe.kill()
            self.probe.wait()
            self.probe = None
        for r in self.starting.values():
            os.close(r)
        self.starting.clear()
        _loop.reset()

    def tick(self) -> None:
        self.reap()
        if _loop.current().stopping:
            return
        _loop.current().add_timer(0.1 if self.stopping_since is not None else 0.5, self.tick)

    def reload(self) -> None:
        """SIGHUP: first try the new code in a probe process; if it starts,
        re-execute this program in place (``_exec``)."""
        if self.stopping_since is not None:
            return
        if self.starting or self.probe is not None:
            self.reload_wanted = True  # once the children starting now are ready, or the probe is done
            return
        try:
            self.probe = subprocess.Popen(self._argv(), env=dict(os.environ, **{ENV_PROBE: "1"}),
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)
        except OSError as e:
            log.error("danga: serve() could not reload (starting %s: %s); going on with the running code",
                      sys.executable, e)
            return
        self.probe_since = time.monotonic()
        _loop.current().add_timer(0.02, self._probed)

    def _probed(self) -> None:
        p = self.probe
        assert p is not None
        if p.poll() is None and time.monotonic() - self.probe_since < PROBE_TIMEOUT:
            _loop.current().add_timer(0.02, self._probed)
            return
        if p.returncode is None:
            p.kill()
            p.wait()
        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
        if p.stderr:
            p.stderr.close()
        self.probe = None
        if p.returncode != 0:
            log.error("danga: serve() reload abandoned: the new code did not reach serve() (exit status %s); "
                      "going on with the running code. It said: %s", p.returncode, err.strip()[-2000:] or "nothing")
        elif self.stopping_since is None:
            self._exec()
            return
        if self.reload_wanted:
            self.reload_wanted = False
            self.reload()

    def _argv(self) -> List[str]:
        return [sys.executable] + list(getattr(sys, "orig_argv", sys.argv)[1:])

    def _exec(self) -> None:
        """Re-execute this program in place, handing over the socket and the
        children (who become the old ones)."""
        old = sorted(set(self.children) | set(self.retiring))
        log.info("danga: serve() reloading: re-executing %s; %d children will retire", sys.executable, len(old))
        env = dict(os.environ)
        env.update({ENV_FD: str(self.sock.fileno()), ENV_PID: str(os.getpid()),
                    ENV_RETIRING: ",".join(map(str, old))})
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.set_inheritable(self.sock.fileno(), True)
        # Held pending across exec (the mask survives it), not lost or fatal
        # while the new image starts: taken once its handlers are in (install()).
        signal.pthread_sigmask(signal.SIG_BLOCK, _MASTER_SIGNALS)
        try:
            os.execve(sys.executable, self._argv(), env)
        except OSError as e:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_SIGNALS)
            os.set_inheritable(self.sock.fileno(), False)
            log.error("danga: serve() could not reload (exec %s: %s); going on with the running code",
                      sys.executable, e)

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.stopping_since is None:
            self.stopping_since = time.monotonic()
            log.info("danga: serve() stopping %d children", len(self.children) + len(self.retiring))
            for pid in list(self.children) + list(self.retiring):
                _kill(pid, signal.SIGTERM)
        self.reap()

    def reap(self) -> None:
        # Each known child by its PID, never waitpid(-1): that would also
        # take the reload probe's exit status from its Popen.
        for pid in list(self.children) + list(self.retiring):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            if pid in self.retiring:
                del self.retiring[pid]  # an old child of a reload finished
                continue
            del self.children[pid]
            self._ready(pid)  # if it died before saying it was ready
            if self.stopping_since is None:
                log.warning("danga: serve() child %d exited (status %d); restarting it", pid, status)
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < 60]
                if len(self.restarts) < self.max_restarts:
                    self.restarts.append(now)
                    self.spawn()
                else:
                    log.error("danga: serve() children keep dying; not restarting")
        now = time.monotonic()
        for pid, told in self.retiring.items():
            if told is not None and now - told > self.grace + 2:
                _kill(pid, signal.SIGKILL)
        if self.stopping_since is not None:
            if self.children and now - self.stopping_since > self.grace + 2:
                for pid in self.children:
                    _kill(pid, signal.SIGKILL)
            if not self.children and not self.retiring:
                _loop.current().stop()


_MASTER_SIGNALS = {getattr(signal, n) for n in ("SIGHUP", "SIGTERM", "SIGINT") if hasattr(signal, n)}


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _child(sock: socket.socket, factory: Callable[[Any], Any], grace: float, listen_options: Dict[str, Any],
           ready: int, master: int) -> None:
    _loop.reset(close_inherited=True)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_SIGNALS)  # a reloaded master forks with them blocked
    Listener(sock, factory, **listen_options)
    draining: List[bool] = []

    def drain_and_stop(signum: int) -> None:
        if not draining:  # a second SIGTERM does not cut the grace period short
            draining.append(True)
            drain(grace)

    add_signal_handler(signal.SIGTERM, drain_and_stop)
    add_signal_handler(signal.SIGINT, lambda s: None)  # the master decides (Ctrl-C reaches the whole group)
    add_signal_handler(signal.SIGHUP, lambda s: None)  # the master reloads; a terminal's hang-up is its to take

    def orphaned() -> None:  # the master was killed (SIGKILL): stop as if told to, do not serve forever
        if os.getppid() != master:
            log.warning("danga: serve() child %d: the master (%d) is gone; stopping", os.getpid(), master)
            drain_and_stop(signal.SIGTERM)
        elif not draining:
            _loop.current().add_timer(1.0, orphaned)

    _loop.current().add_timer(1.0, orphaned)
    os.write(ready, b"r")
    os.close(ready)
    run_loop(_loop.current())


__all__ = ["serve"]
