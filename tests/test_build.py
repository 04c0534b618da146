"""The compiled cffi modules: present, and agreeing with danga's masks."""
import importlib
import platform

import pytest

from danga import pollers
from danga.pollers import ERR, HUP, READ, WRITE


@pytest.mark.parametrize("module", ["danga._ffi_epoll", "danga._ffi_poll", "danga._ffi_kqueue",
                                    "danga._ffi_uring"])
def test_masks_agree_with_python(module):
    try:
        lib = importlib.import_module(module).lib
    except ImportError:
        pytest.skip(f"{module} not built on this platform")
    assert (lib.DANGA_READ, lib.DANGA_WRITE, lib.DANGA_ERR, lib.DANGA_HUP) == (READ, WRITE, ERR, HUP)


def test_epoll_constants_come_from_the_compiler():
    try:
        from danga._ffi_epoll import ffi, lib
    except ImportError:
        pytest.skip("no epoll here")
    import select

    assert lib.EPOLLIN == select.EPOLLIN and lib.EPOLLOUT == select.EPOLLOUT
    assert lib.EPOLL_CLOEXEC == select.EPOLL_CLOEXEC
    if platform.machine() == "x86_64":
        assert ffi.sizeof("struct epoll_event") == 12  # packed on x86-64


def test_available_lists_epoll_first_on_linux():
    names = pollers.available()
    if platform.system() == "Windows":
        assert names == ["iocp"]  # nothing compiled there: the ABI-mode backend alone
        return
    assert "poll" in names
    if platform.system() == "Linux":
        assert names[0] == "epoll"


def test_kqueue_is_never_the_automatic_choice_on_linux(monkeypatch):
    monkeypatch.delenv("DANGA_POLLER", raising=False)
    p = pollers.create()
    try:
        if platform.system() == "Linux":
            assert p.name == "epoll"  # libkqueue's kqueue only when named
        elif "kqueue" in pollers.available():
            assert p.name == "kqueue"
    finally:
        p.close()
    if "kqueue" in pollers.available() and platform.system() == "Linux":
        assert pollers.available()[-1] == "kqueue"


def test_kqueue_constants_come_from_the_compiler():
    try:
        from danga._ffi_kqueue import lib
    except ImportError:
        pytest.skip("kqueue not built: build with LIBKQUEUE_PREFIX=/path/to/libkqueue pip install -e .")
    assert (lib.EVFILT_READ, lib.EVFILT_WRITE) == (-1, -2)  # the same on every kqueue
    assert lib.EV_ERROR & lib.EV_EOF == 0 and lib.EV_ADD == 1


def test_unknown_backend_name_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DANGA_POLLER", "kqueue2")
    with pytest.raises(ValueError, match="kqueue2.*(epoll|iocp)"):
        pollers.create()


def test_the_package_ships_its_type_information_and_one_version():
    from pathlib import Path

    import danga
    from danga import _version

    assert (Path(danga.__file__).parent / "py.typed").exists()
    assert danga.__version__ == _version.__version__ and danga.__version__.count(".") == 2
