"""The PROXY protocol (v1 and v2, as HAProxy specifies it), read before a
connection reaches its factory.  To be written."""
from __future__ import annotations

import socket
from typing import Any, Callable, Optional


def expect_header(conn: socket.socket, timeout: float, then: Callable[[socket.socket], Optional[Any]]) -> None:
    """Read the PROXY header from ``conn``, then call ``then(sock)``, which
    returns the object it made (or None)."""
    raise NotImplementedError("danga: the PROXY protocol is not written yet")
