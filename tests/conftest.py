"""Every test runs once per poller backend this machine has, and ends with a
leak check: no sockets left in the loop, no live timers, and the process's
descriptor count back to where it started.

On Windows (the iocp backend, run under Wine by .ci/windows-test) Wine has
no handle count to ask, so the check looks for open ``socket.socket``
objects that did not exist when the test started (a socket of an earlier
test that is freed during this one is not this test's leak), and a test
marked ``posix("why")`` is skipped with a reason that says it is POSIX-only."""
import gc
import os
import socket
import sys
import weakref

import pytest

import danga
from danga import pollers

BACKENDS = pollers.available()
WINDOWS = sys.platform == "win32"


def _open_sockets() -> list:
    gc.collect()
    return [s for s in gc.get_objects() if isinstance(s, socket.socket) and s.fileno() >= 0]


class _Descriptors:
    """What was open when a test started; ``leaked()`` says what is open now
    that was not (Linux: the descriptor count; Windows: new socket objects)."""

    def __init__(self):
        if WINDOWS:
            self.sockets = weakref.WeakSet(_open_sockets())
        else:
            self.count = len(os.listdir("/proc/self/fd"))

    def leaked(self):
        if WINDOWS:
            return [s for s in _open_sockets() if s not in self.sockets]
        now = len(os.listdir("/proc/self/fd"))
        return [] if now == self.count else [f"{now} descriptors open, {self.count} before"]


def pytest_configure(config):
    config.addinivalue_line("markers", "posix(why): needs a POSIX-only facility; skipped on Windows")


def pytest_collection_modifyitems(config, items):
    if not WINDOWS:
        return
    for item in items:
        mark = item.get_closest_marker("posix")
        if mark is not None:
            why = mark.args[0] if mark.args else "a POSIX facility"
            item.add_marker(pytest.mark.skip(reason=f"POSIX-only: {why}"))


@pytest.fixture(params=BACKENDS, autouse=True)
def backend(request, monkeypatch):
    monkeypatch.setenv("DANGA_POLLER", request.param)
    danga.reset()
    before = _Descriptors()
    yield request.param
    loop = danga.loop.current()
    leftover = [s for s in loop.descriptor_map.values() if not s.closed]
    live_timers = len(loop.timers)
    danga.reset()
    assert not leftover, f"sockets left open: {leftover}"
    assert live_timers == 0, f"{live_timers} live timers left"
    leaked = before.leaked()
    assert not leaked, f"descriptor leak: {leaked}"
