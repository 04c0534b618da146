"""Every test runs once per poller backend this machine has, and ends with a
leak check: no sockets left in the loop, no live timers, and the process's
descriptor count back to where it started.

On Windows (the iocp backend, run under Wine by .ci/windows-test) the
descriptor count is the number of open ``socket.socket`` objects (Wine has
no handle count to ask), and a test marked ``posix("why")`` is skipped with
a reason that says it is POSIX-only."""
import gc
import os
import socket
import sys

import pytest

import danga
from danga import pollers

BACKENDS = pollers.available()
WINDOWS = sys.platform == "win32"


def _fd_count() -> int:
    if WINDOWS:
        gc.collect()
        return sum(1 for s in gc.get_objects() if isinstance(s, socket.socket) and s.fileno() >= 0)
    return len(os.listdir("/proc/self/fd"))


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
    before = _fd_count()
    yield request.param
    loop = danga.loop.current()
    leftover = [s for s in loop.descriptor_map.values() if not s.closed]
    live_timers = len(loop.timers)
    danga.reset()
    assert not leftover, f"sockets left open: {leftover}"
    assert live_timers == 0, f"{live_timers} live timers left"
    assert _fd_count() == before, "descriptor leak"
