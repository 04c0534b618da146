"""The argument checks of ``Socket``'s public methods, and the errors they raise.

Each error names what was given and what to do instead, so that a mistake
(a file object where a socket belongs, ``str`` where bytes do) is found from
the message alone.
"""
from __future__ import annotations

import errno
import sys
from typing import Any, Dict

MAX_READ = 1 << 20  # one read() returns at most this much (the buffer is allocated up front)


def errno_name(err: int, default: str = "") -> str:
    """The name of errno ``err`` (``default``, else the number, when it has
    none); a Windows socket error by its POSIX name when it has one
    (WSAECONNREFUSED -> ECONNREFUSED: Windows' errno module gives the two
    one number and the WSA name), so that close reasons read the same
    everywhere."""
    name = errno.errorcode.get(err, default or str(err))
    if name.startswith("WSAE") and hasattr(errno, name[3:]):
        return name[3:]
    return _WINDOWS_ONLY.get(name, name)


_WINDOWS_ONLY = {"WSAESHUTDOWN": "EPIPE"}  # sending after shutdown(SHUT_WR): Linux says EPIPE


def require_posix(what: str, instead: str = "") -> None:
    """Raise NotImplementedError on Windows, where ``what`` has no equivalent."""
    if sys.platform == "win32":
        hint = f"; {instead}" if instead else ""
        raise NotImplementedError(f"danga: {what} is POSIX-only and has no Windows equivalent{hint}")


def wrappable_fd(sock: Any) -> int:
    """The descriptor of a socket-like object, or an error that says what was given."""
    kind = type(sock).__name__
    if sock is None or isinstance(sock, (int, str, bytes)):
        hint = ""
        if isinstance(sock, int) and not isinstance(sock, bool):
            hint = (f"; to wrap descriptor {sock}, pass socket.socket(fileno={sock}) "
                    f"or use danga.connect('fd://{sock}', Class)")
        raise TypeError(f"danga.Socket wraps a socket object, got {kind} {sock!r}{hint}")
    try:
        fd = sock.fileno()
    except AttributeError:
        raise TypeError(f"danga.Socket wraps a socket object (socket.socket), got {kind}") from None
    except (ValueError, OSError):  # a closed file object
        raise ValueError(f"danga.Socket was given a closed {kind}") from None
    if not isinstance(fd, int) or fd < 0:
        raise ValueError(f"danga.Socket was given a closed {kind} (fileno() is {fd!r})")
    missing = [m for m in ("recv", "send", "setblocking") if not callable(getattr(sock, m, None))]
    if missing:
        raise TypeError(
            f"danga.Socket wraps a socket object, got {kind} (fd {fd}) with no {', '.join(missing)}(); "
            f"for a pipe, FIFO or terminal use danga.connect('fd://{fd}', Class) or a fifo:// URL"
        )
    return fd


def bytes_view(data: Any) -> memoryview:
    """A flat byte view of a bytes-like ``data``, or the TypeError ``write`` raises."""
    if isinstance(data, str):
        raise TypeError("danga: write() takes bytes, not str; encode it first (e.g. data.encode())")
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"danga: write() takes bytes, bytearray, memoryview, a callable or None, not {type(data).__name__}"
        ) from None
    if view.c_contiguous:
        return view.cast("B") if view.format != "B" or view.ndim != 1 else view
    return memoryview(view.tobytes())  # a strided view: its bytes in order


def read_count(n: Any) -> int:
    """A read() byte count, checked, and capped at MAX_READ."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"danga: read() takes a byte count (int), got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"danga: read() needs a positive byte count, got {n}")
    return min(n, MAX_READ)


def internal_names(cls: type) -> Dict[str, str]:
    """``{name: owner}`` for the names danga's own classes in ``cls``'s MRO
    keep for themselves: single-underscore methods and settings, and the
    ``loop_*`` methods of the loop's contract."""
    names: Dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if not base.__module__.startswith("danga."):
            continue
        for name in vars(base):
            if (name.startswith("_") and not name.startswith("__")) or name.startswith("loop_"):
                names[name] = base.__qualname__
    return names


def refuse_internal_overrides(cls: type) -> None:
    """Raise TypeError if a class outside danga redefines one of danga's
    internal names (a user's ``_flush`` would silently replace the write
    path's).  Instance attributes cannot collide: danga's are name-mangled."""
    if cls.__module__.startswith("danga."):
        return
    own = set(vars(cls))
    slots = vars(cls).get("__slots__", ())
    own.update([slots] if isinstance(slots, str) else slots)
    taken = internal_names(cls.__mro__[1])
    clash = sorted(own & set(taken))
    if clash:
        name = clash[0]
        raise TypeError(
            f"danga: {cls.__qualname__} defines {name}, which danga.{taken[name]} uses internally; rename it "
            f"(every name danga keeps starts with '_' or 'loop_'; a subclass overrides the event_* hooks, "
            f"on_incomplete_write and the settings the README lists)"
            + (f"; also clashing: {', '.join(clash[1:])}" if len(clash) > 1 else "")
        )
