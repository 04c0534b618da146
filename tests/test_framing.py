"""Framers: whole messages out of any split, bounded buffering, clear errors."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danga import FrameError, LengthPrefixed, Lines


def split_at(data, cuts):
    cuts = sorted(set(c for c in cuts if 0 < c < len(data)))
    pieces, prev = [], 0
    for c in cuts + [len(data)]:
        pieces.append(data[prev:c])
        prev = c
    return pieces


@pytest.mark.parametrize("n", [1, 2, 4, 8])
@pytest.mark.parametrize("order", ["big", "little"])
def test_length_prefixed_every_byte_boundary(n, order):
    f = LengthPrefixed(n, order)
    msgs = [b"", b"a", b"hello world", bytes(range(200))]
    wire = b"".join(f.frame(m) for m in msgs)
    for cut in range(len(wire) + 1):
        g = LengthPrefixed(n, order)
        assert g.feed(wire[:cut]) + g.feed(wire[cut:]) == msgs
        assert g.buffered == 0


def test_length_prefixed_byte_order_on_the_wire():
    assert LengthPrefixed(2, "big").frame(b"ab") == b"\x00\x02ab"
    assert LengthPrefixed(2, "little").frame(b"ab") == b"\x02\x00ab"


def test_length_prefixed_oversized_header_fails_before_buffering():
    f = LengthPrefixed(4, max_size=1000)
    with pytest.raises(FrameError, match="1001 bytes exceeds the maximum of 1000"):
        f.feed((1001).to_bytes(4, "big"))
    with pytest.raises(FrameError):
        f.frame(b"x" * 1001)


def test_length_prefixed_rejects_bad_settings():
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        LengthPrefixed(3)
    with pytest.raises(ValueError, match="byteorder"):
        LengthPrefixed(4, "middle")


def test_lines_every_byte_boundary_and_crlf():
    wire = b"one\r\ntwo\n\nthree\n"
    for cut in range(len(wire) + 1):
        f = Lines()
        assert f.feed(wire[:cut]) + f.feed(wire[cut:]) == [b"one", b"two", b"", b"three"]


def test_lines_custom_delimiter():
    f = Lines(delimiter=b"\0")
    assert f.feed(b"a\0b") == [b"a"]
    assert f.feed(b"c\0") == [b"bc"]
    assert f.frame(b"x") == b"x\0"


def test_lines_too_long_fails_without_waiting_for_the_delimiter():
    f = Lines(max_size=10)
    with pytest.raises(FrameError, match="maximum of 10"):
        for _ in range(100):
            f.feed(b"xxxx")
    assert f.buffered <= 16


def test_lines_frame_refuses_embedded_delimiter():
    with pytest.raises(FrameError):
        Lines().frame(b"a\nb")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=20), st.lists(st.integers(0, 7000), max_size=30),
       st.sampled_from([1, 2, 4, 8]), st.sampled_from(["big", "little"]))
def test_length_prefixed_any_messages_any_splits(msgs, cuts, n, order):
    msgs = [m[: (1 << (8 * n)) - 1] for m in msgs]
    f = LengthPrefixed(n, order)
    wire = b"".join(f.frame(m) for m in msgs)
    g = LengthPrefixed(n, order)
    out = []
    for piece in split_at(wire, cuts):
        out += g.feed(piece)
    assert out == msgs and g.buffered == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r")), max_size=20),
       st.lists(st.integers(0, 5000), max_size=30))
def test_lines_any_messages_any_splits(msgs, cuts):
    f = Lines(max_size=300)
    wire = b"".join(f.frame(m) for m in msgs)
    out = []
    for piece in split_at(wire, cuts):
        out += f.feed(piece)
    assert out == msgs


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=20))
def test_random_bytes_give_messages_or_a_clear_error_never_unbounded(data, cuts):
    for framer in (LengthPrefixed(2, max_size=512), LengthPrefixed(4, max_size=512), Lines(max_size=512)):
        try:
            for piece in split_at(data, cuts):
                for m in framer.feed(piece):
                    assert len(m) <= 512
        except FrameError:
            continue
        assert framer.buffered <= 512 + 8
