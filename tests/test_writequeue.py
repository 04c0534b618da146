"""Unit tests of danga/writequeue.py without descriptors: the queue is driven
with a fake channel that takes a set number of bytes per call, and an owner
that records the hooks (in the style of h11's receive-buffer tests)."""
import pytest

from danga.writequeue import GATHER_BYTES, IOV_MAX, DatagramQueue, WriteQueue


class Owner:
    write_high_water = 100
    write_low_water = 40
    write_buffer_limit = 1000

    def __init__(self):
        self.events = []

    def event_write_paused(self):
        self.events.append("paused")

    def event_write_resumed(self):
        self.events.append("resumed")


class Channel:
    """Takes at most ``room`` bytes in total until given more; records calls."""

    def __init__(self, room=0):
        self.room = room
        self.got = bytearray()
        self.calls = []
        self.datagrams = []

    def _take(self, data):
        n = min(len(data), self.room)
        if n == 0 and len(data):
            raise BlockingIOError
        self.room -= n
        self.got += bytes(data[:n])
        return n

    def send(self, data):
        self.calls.append(("send", len(data)))
        return self._take(memoryview(data))

    def sendmsg(self, bufs):
        self.calls.append(("sendmsg", len(bufs)))
        return self._take(memoryview(b"".join(bytes(b) for b in bufs)))

    def sendto(self, data, addr):
        if self.room < len(data) or self.room == 0:
            raise BlockingIOError
        self.room -= len(data)
        self.datagrams.append((bytes(data), addr))
        return len(data)


def test_append_counts_bytes_and_callables():
    q = WriteQueue(Owner())
    assert q.append(b"abc", 3) and q.append(len, 1)
    assert q.size == 4 and len(q) == 2


def test_flush_sends_in_order_and_runs_callables_at_their_offset():
    q, ch = WriteQueue(Owner()), Channel(room=5)
    seen = []
    q.append(b"abc", 3)
    q.append(lambda: seen.append(bytes(ch.got)), 1)
    q.append(b"defg", 4)
    assert q.flush(ch)  # took bytes
    assert seen == [b"abc"]  # ran once exactly the bytes before it were out
    assert bytes(ch.got) == b"abcde" and q.size == 2
    ch.room = 10
    q.flush(ch)
    assert bytes(ch.got) == b"abcdefg" and q.size == 0 and not q


def test_a_partly_sent_head_keeps_its_rest():
    q, ch = WriteQueue(Owner()), Channel(room=2)
    q.append(b"hello", 5)
    q.flush(ch)
    assert q.size == 3 and bytes(q.items[0]) == b"llo"


def test_gathers_adjacent_buffers_into_one_sendmsg_capped():
    q, ch = WriteQueue(Owner()), Channel(room=10**9)
    q.owner.write_buffer_limit = None
    for _ in range(IOV_MAX + 5):
        q.append(b"x", 1)
    q.flush(ch)
    assert ch.calls[0] == ("sendmsg", IOV_MAX)
    q2, ch2 = WriteQueue(q.owner), Channel(room=10**9)
    q2.append(b"a" * GATHER_BYTES, GATHER_BYTES)
    q2.append(b"b", 1)
    q2.flush(ch2)
    assert ch2.calls[0] == ("send", GATHER_BYTES)  # the gather stops at about 1 MiB


def test_water_marks_pause_once_and_resume_at_low_water():
    owner = Owner()
    q, ch = WriteQueue(owner), Channel()
    q.append(b"x" * 80, 80)
    assert owner.events == []
    q.append(b"y" * 30, 30)  # 110 > 100
    q.append(b"z", 1)
    assert owner.events == ["paused"]
    ch.room = 60
    q.flush(ch)  # 51 left: above low water
    assert owner.events == ["paused"]
    ch.room = 20
    q.flush(ch)  # 31 <= 40
    assert owner.events == ["paused", "resumed"]


def test_the_hard_limit_holds_below_the_high_water_mark():
    owner = Owner()
    owner.write_buffer_limit = 50  # below high water (100)
    q = WriteQueue(owner)
    assert q.append(b"x" * 50, 50)
    assert not q.append(b"y", 1)  # 51 > 50: the caller closes
    assert owner.events == []


def test_no_limit():
    owner = Owner()
    owner.write_buffer_limit = None
    q = WriteQueue(owner)
    assert q.append(b"x" * 10_000, 10_000)


def test_a_callable_that_flushes_and_writes_more_leaves_it_queued():
    """The re-entrant flush: an inner flush drains, the callable appends, and
    the outer flush must still see (and report) what is left."""
    q, ch = WriteQueue(Owner()), Channel(room=3)

    def cb():
        assert q.flushing == 1
        q.flush(ch)
        q.append(b"more", 4)

    q.append(b"abc", 3)
    q.append(cb, 1)
    q.flush(ch)
    assert q.flushing == 0
    assert bytes(ch.got) == b"abc" and q.size == 4 and len(q) == 1


def test_discard_reports_what_was_dropped_and_ends_the_flush():
    q, ch = WriteQueue(Owner()), Channel(room=100)
    q.append(b"abc", 3)
    q.append(lambda: q.discard(), 1)
    q.append(b"never", 5)
    q.flush(ch)
    assert bytes(ch.got) == b"abc" and len(q) == 0 and q.size == 0
    q.append(b"12", 2)
    q.append(len, 1)
    assert q.discard() == 3


def test_send_errors_pass_through_with_the_queue_intact():
    class Broken(Channel):
        def send(self, data):
            raise ConnectionResetError(104, "reset")

    q = WriteQueue(Owner())
    q.append(b"abc", 3)
    with pytest.raises(ConnectionResetError):
        q.flush(Broken())
    assert q.size == 3 and q.flushing == 0


def test_datagrams_go_one_per_send_empty_ones_too():
    q, ch = DatagramQueue(Owner()), Channel(room=100)
    for d in (b"a", b"", b"bb", memoryview(b"ccc")):
        q.append(d, len(d))
    q.append((b"to", ("127.0.0.1", 9)), 2)
    q.flush(ch)
    assert [c for c in ch.calls] == [("send", 1), ("send", 0), ("send", 2), ("send", 3)]
    assert ch.datagrams == [(b"to", ("127.0.0.1", 9))]
    assert q.size == 0 and not q


def test_datagram_backlog_resumes_at_low_water():
    owner = Owner()
    q, ch = DatagramQueue(owner), Channel(room=0)
    for _ in range(12):
        q.append(b"x" * 10, 10)  # 120 > 100: paused
    assert owner.events == ["paused"]
    ch.room = 80  # eight go: 40 left, at low water
    q.flush(ch)
    assert owner.events == ["paused", "resumed"] and q.size == 40
