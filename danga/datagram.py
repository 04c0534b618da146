"""``DatagramSocket``: one datagram per ``write``/``read``, on the one write path.

It is a ``Socket`` whose write queue is a ``DatagramQueue``: queued datagrams
go out one per send (never gathered, never merged), and the accounting,
water marks, hard limit, callables and activity are the stream socket's.
Being part of the Socket family it uses Socket's name-mangled slots
(``self._Socket__io``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Tuple, Union

from .socket import Socket
from .writequeue import DatagramQueue


class DatagramSocket(Socket):
    """A datagram socket: ``write`` sends one datagram (queued ones too, one
    per send), ``read`` returns one datagram, ``send_to``/``read_from`` work
    with addresses on an unconnected socket.  A zero-length datagram reads
    as ``b""``, the same as "nothing now"; ``write(b"")`` sends one."""

    _queue_class = DatagramQueue
    _queue_empty_writes = True
    if TYPE_CHECKING:
        _Socket__io: Any  # Socket's channel slot (name-mangled; mypy misses it)

    def read(self, n: int = 65535) -> Optional[bytes]:
        """One datagram (at most ``n`` bytes of it); ``b""`` when none is
        waiting (or it was empty); None when closed or on an error.  There
        is no EOF on a datagram socket."""
        if self.closed:
            return None
        try:
            data: bytes = self._Socket__io.recv(n)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as e:
            self._read_failed(e)
            return None
        self._Socket__active = True
        return data

    def read_from(self, n: int = 65535) -> Optional[Tuple[bytes, Any]]:
        """One datagram and its sender, ``(b"", None)`` when none is waiting,
        None when closed or on an error."""
        if self.closed:
            return None
        try:
            got: Tuple[bytes, Any] = self._Socket__io.recvfrom(n)
        except (BlockingIOError, InterruptedError):
            return b"", None
        except OSError as e:
            self._read_failed(e)
            return None
        self._Socket__active = True
        return got

    def send_to(self, data: Union[bytes, bytearray, memoryview], addr: Any) -> bool:
        """Send one datagram to ``addr``; queued (in order) if the socket is
        full.  Returns True if sent now."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"danga: send_to takes bytes, not {type(data).__name__}")
        if self.closed:
            return True
        if self._Socket__wq is None:
            try:
                self._Socket__io.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                return self._write_failed(e, len(data))
            else:
                self._Socket__active = True
                return True
        return self._enqueue((bytes(data), addr), len(data))
