"""Every test runs once per poller backend this machine has, and ends with a
leak check: no sockets left in the loop, no live timers, and the process's
descriptor count back to where it started."""
import os

import pytest

import danga
from danga import pollers

BACKENDS = pollers.available()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


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
