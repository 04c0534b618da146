"""A socket's own state, shared by the modules that make up ``Socket``.

``Socket`` (danga/socket.py) is one class written in a few files: the
core, and mixins for the outgoing connect (danga/connecting.py), the
address helpers (danga/addresses.py), the socket options
(danga/sockopts.py) and the Perl spellings (danga/perl.py).  This module
holds what they share: the bits of ``Socket._state`` and the side object,
made on first use, for the state most sockets never need.
"""
from __future__ import annotations

from typing import Any, List, Optional

from .timers import Timer

# Socket._state bits
EOF = 1  # read() has seen EOF or a read error
AUTO_WRITE = 2  # the library, not the user, turned write interest on
PARKED = 4  # unregistered from the poller: a HUP/ERR that nobody closed
HUP_WAITS = 8  # parked with a hang-up held back until reading resumes
CONNECTING = 16  # a non-blocking connect is in progress
LINGER = 32  # closed for the user, still flushing after the peer's EOF
BIG_READS = 64  # a read(n > READ_SMALL) came back full: the next asks the kernel for READ_BIG


class Extras:
    """Per-socket state that most sockets never need."""

    __slots__ = ("deadline", "close_reason", "unsent", "idle_since", "corked", "peer", "local",
                 "read_error", "on_close", "connect_timer", "tls_start", "send_queue", "send_since")

    def __init__(self) -> None:
        self.on_close: Optional[List[Any]] = None
        self.connect_timer: Optional[Timer] = None
        self.deadline: Optional[Timer] = None
        self.close_reason: Optional[str] = None
        self.unsent = 0
        self.idle_since = 0.0
        self.corked = False
        self.peer: Any = None
        self.local: Any = None
        self.read_error: Optional[str] = None
        self.send_queue: Any = None  # the write queue the send-timeout clock started for
        self.send_since = 0.0
        self.tls_start: Optional[Any] = None  # start_tls on a connect in progress: runs once it is up
