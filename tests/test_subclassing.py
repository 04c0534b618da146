"""What a subclass may do: its own private names never reach danga's, and a
redefinition of one of danga's internal names is refused when the class is
made, with the name to change."""
import socket

import pytest

import danga
from .helpers import Collector, pair, reader_thread, run


def test_a_method_named_like_an_internal_is_refused_with_its_name():
    with pytest.raises(TypeError, match=r"Flusher defines _flush, which danga.Socket uses internally; rename it"):
        class Flusher(danga.Socket):
            def _flush(self):
                pass


@pytest.mark.parametrize("base", [danga.Socket, danga.Connection, danga.Listener, danga.DatagramSocket])
def test_internal_names_are_refused_on_every_danga_base(base):
    with pytest.raises(TypeError, match="_set_mask"):
        type("Bad", (base,), {"_set_mask": lambda self, m: None})
    with pytest.raises(TypeError, match="loop_dispatch"):
        type("Bad", (base,), {"loop_dispatch": lambda self, m: None})
    with pytest.raises(TypeError, match="_queue_class"):
        type("Bad", (base,), {"_queue_class": list})


class Busy(Collector):
    """Uses the private names that broke the library before they were mangled."""

    def __init__(self, sock):
        super().__init__(sock)
        self._pb = "mine"
        self._wq = ["my", "queue"]
        self._mask = 0xFF
        self._state = "HEADERS"
        self._x = self._io = self._active = object()
        self.watch_read(True)

    def _my_flush(self):  # a private helper of the subclass's own
        return self.write(None)


def test_a_subclass_s_own_private_attributes_do_not_touch_the_socket():
    a, b = pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    s = Busy(a)
    t, got = reader_thread(b, 8_000_000)
    s.write(b"z" * 8_000_000)
    s._my_flush()
    b.sendall(b"hello")
    run(lambda: s.write_buf_size == 0 and bytes(s.got) == b"hello", timeout=30)
    t.join(10)
    assert len(got) == 8_000_000
    assert s._state == "HEADERS" and s._wq == ["my", "queue"] and s._pb == "mine"
    s.close()
    b.close()


def test_a_connection_subclass_may_use_framer_and_paused_names_of_its_own():
    class C(danga.Connection):
        def post_init(self):
            self._framer = "my framer"
            self._paused = True

    a, b = pair()
    c = C(a)
    b.sendall(b"data")
    got = []
    c.receive_data = got.append
    run(lambda: got)
    assert got == [b"data"] and c._framer == "my framer"
    c.close()
    b.close()
