"""Listening sockets handed over by systemd socket activation.

systemd (or ``systemd-socket-activate``, or any supervisor that follows the
same protocol) opens the sockets of a ``.socket`` unit itself and starts the
service with them as descriptors 3, 4, ... and three environment variables:
``LISTEN_FDS`` (how many), ``LISTEN_PID`` (the PID they are meant for: a
child of the service must not take them too) and, optionally,
``LISTEN_FDNAMES`` (colon-separated names, from ``FileDescriptorName=``).
``listen_fds()`` reads them as ``sd_listen_fds(3)`` does, marks the
descriptors close-on-exec and removes the variables (so that children do not
see them); the result is kept, so later calls give the same answer.  Use a
descriptor with ``danga.listen(f"fd://{fd}", Handler)`` or
``danga.serve(f"fd://{fd}", Handler)``.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

#: The first descriptor passed (SD_LISTEN_FDS_START).
FIRST = 3

_taken: Optional[List[Tuple[int, str]]] = None


def _read_environment() -> List[Tuple[int, str]]:
    env = os.environ
    try:
        pid = int(env.get("LISTEN_PID", ""))
        count = int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return []
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(var, None)
    if pid != os.getpid() or count <= 0:
        return []
    found = []
    for i in range(count):
        fd = FIRST + i
        os.set_inheritable(fd, False)
        found.append((fd, names[i] if i < len(names) else "unknown"))
    return found


def listen_fds() -> List[int]:
    """The descriptors passed by socket activation, in order (empty if there
    are none or they were meant for another process)."""
    return [fd for fd, _ in listen_fds_with_names()]


def listen_fds_with_names() -> List[Tuple[int, str]]:
    """``(fd, name)`` for each descriptor passed; the name is "unknown" where
    ``LISTEN_FDNAMES`` gives none."""
    global _taken
    if _taken is None:
        _taken = _read_environment()
    return list(_taken)


def listen_fds_by_name() -> Dict[str, List[int]]:
    """The passed descriptors grouped by name (a unit with several
    ``ListenStream=`` lines and one ``FileDescriptorName=`` gives several)."""
    out: Dict[str, List[int]] = {}
    for fd, name in listen_fds_with_names():
        out.setdefault(name, []).append(fd)
    return out


__all__ = ["listen_fds", "listen_fds_with_names", "listen_fds_by_name"]
