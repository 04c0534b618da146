"""The PROXY protocol (danga/proxyproto.py): the sans-I/O parser against
headers built here byte by byte from proxy-protocol.txt."""
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from danga import proxyproto
from danga.proxyproto import (MAX_V2_LENGTH, PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_NOOP,
                              PP2_TYPE_SSL, PP2_TYPE_UNIQUE_ID, HeaderParser, ProxyProtocolError,
                              crc32c)

# -- headers built from the spec, independently of the parser -------------------------------------

SIG = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"
REQUEST = b"GET /hello HTTP/1.1\r\nHost: example\r\n\r\n"


def v2(cmd=1, fam=0x11, body=b"", length=None, version=2):
    return SIG + bytes([version << 4 | cmd, fam]) + struct.pack("!H", len(body) if length is None else length) + body


def v2_tcp4(src="203.0.113.7", sport=41000, dst="10.0.0.1", dport=80, tlvs=b""):
    return v2(1, 0x11, socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport) + tlvs)


def v2_tcp6(src="2001:db8::7", sport=4242, dst="2001:db8::1", dport=443, tlvs=b""):
    block = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return v2(1, 0x21, block + struct.pack("!HH", sport, dport) + tlvs)


def v2_unix(src=b"/run/client.sock", dst=b"/run/server.sock", tlvs=b""):
    return v2(1, 0x31, src.ljust(108, b"\0") + dst.ljust(108, b"\0") + tlvs)


def tlv(kind, value):
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def with_crc(header, corrupt=False):
    """``header`` (a v2 header without TLVs) with a CRC32C TLV appended and its length fixed."""
    body = header[16:] + tlv(PP2_TYPE_CRC32C, b"\0\0\0\0")
    zeroed = header[:14] + struct.pack("!H", len(body)) + body
    crc = crc32c(zeroed) ^ (1 if corrupt else 0)
    return zeroed[:-4] + struct.pack("!I", crc)


V1_TCP4 = b"PROXY TCP4 203.0.113.7 10.0.0.1 41000 80\r\n"
V1_TCP6 = b"PROXY TCP6 2001:DB8:0:0::7 2001:db8::1 4242 443\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
V1_UNKNOWN_LONG = b"PROXY UNKNOWN " + b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff " * 2 + b"65535 65535\r\n"
TLVS = (tlv(PP2_TYPE_ALPN, b"h2") + tlv(PP2_TYPE_AUTHORITY, b"example.com") + tlv(PP2_TYPE_NOOP, b"\0" * 5)
        + tlv(PP2_TYPE_UNIQUE_ID, b"id-1234") + tlv(PP2_TYPE_SSL, b"\x01\0\0\0\0" + tlv(0x21, b"TLSv1.3"))
        + tlv(0xE5, b"custom"))

VALID = {
    "v1-tcp4": V1_TCP4,
    "v1-tcp6": V1_TCP6,
    "v1-unknown": V1_UNKNOWN,
    "v1-unknown-long": V1_UNKNOWN_LONG,
    "v2-tcp4": v2_tcp4(),
    "v2-tcp4-tlvs": v2_tcp4(tlvs=TLVS),
    "v2-tcp6": v2_tcp6(),
    "v2-unix": v2_unix(),
    "v2-local": v2(0, 0x00),
    "v2-local-with-block": v2(0, 0x11, b"\x7f\0\0\x01" * 2 + b"\0\x01\0\x02"),
    "v2-unspec": v2(1, 0x00, TLVS),
    "v2-crc": with_crc(v2_tcp4()),
}


def parse_all(data):
    return HeaderParser().feed(data)


# -- the parser ------------------------------------------------------------------------------------


def test_v1_lengths_are_the_spec_s():
    assert len(V1_UNKNOWN_LONG) == proxyproto.V1_MAX == 107
    assert len(V1_UNKNOWN) == 15


def test_v1_tcp4():
    h = parse_all(V1_TCP4 + REQUEST)
    assert (h.version, h.command, h.family, h.type) == (1, "PROXY", socket.AF_INET, socket.SOCK_STREAM)
    assert h.source == ("203.0.113.7", 41000) and h.destination == ("10.0.0.1", 80)
    assert h.raw == V1_TCP4 and h.rest == REQUEST and h.size == len(V1_TCP4) and h.proxied
    assert h.tlvs == () and h.describe() == "v1 PROXY TCP4 203.0.113.7:41000 -> 10.0.0.1:80"


def test_v1_tcp6_addresses_in_getpeername_form():
    h = parse_all(V1_TCP6)
    assert h.family == socket.AF_INET6
    assert h.source == ("2001:db8::7", 4242, 0, 0) and h.destination == ("2001:db8::1", 443, 0, 0)
    assert h.rest == b""


@pytest.mark.parametrize("line", [V1_UNKNOWN, V1_UNKNOWN_LONG, b"PROXY UNKNOWN whatever the sender likes\r\n"])
def test_v1_unknown_carries_no_addresses(line):
    h = parse_all(line + b"x")
    assert (h.command, h.family, h.source, h.destination, h.rest) == ("PROXY", socket.AF_UNSPEC, None, None, b"x")
    assert not h.proxied


def test_v2_tcp4_tcp6_unix_udp():
    h = parse_all(v2_tcp4() + REQUEST)
    assert (h.version, h.command, h.family, h.type) == (2, "PROXY", socket.AF_INET, socket.SOCK_STREAM)
    assert h.source == ("203.0.113.7", 41000) and h.destination == ("10.0.0.1", 80) and h.rest == REQUEST
    assert h.size == 28
    h = parse_all(v2_tcp6())
    assert h.family == socket.AF_INET6 and h.source == ("2001:db8::7", 4242, 0, 0)
    assert h.destination == ("2001:db8::1", 443, 0, 0) and h.size == 52
    h = parse_all(v2_unix())
    assert h.family == socket.AF_UNIX and h.source == "/run/client.sock" and h.destination == "/run/server.sock"
    assert h.size == 16 + 216
    h = parse_all(v2_unix(src=b"\0abstract-name", dst=b""))
    assert h.source == b"\0abstract-name" and h.destination == ""  # as getpeername gives them
    h = parse_all(v2(1, 0x12, socket.inet_aton("192.0.2.1") + socket.inet_aton("192.0.2.2") + b"\0\x35\0\x35"))
    assert h.type == socket.SOCK_DGRAM and h.source == ("192.0.2.1", 53)


def test_v2_local_ignores_the_block_and_its_family():
    for header in (v2(0, 0x00), v2(0, 0x11, b"\x7f\0\0\x01" * 2 + b"\0\x01\0\x02"), v2(0, 0x55, b"junk")):
        h = parse_all(header + REQUEST)
        assert (h.command, h.family, h.source, h.destination) == ("LOCAL", socket.AF_UNSPEC, None, None)
        assert h.rest == REQUEST and h.describe() == "v2 LOCAL"


def test_v2_unspec_proxy_uses_the_real_endpoints_and_keeps_the_tlvs():
    h = parse_all(v2(1, 0x00, TLVS))
    assert h.command == "PROXY" and h.source is None and h.tlv(PP2_TYPE_AUTHORITY) == b"example.com"


def test_v2_tlvs_are_read_and_skipped():
    h = parse_all(v2_tcp4(tlvs=TLVS) + REQUEST)
    assert h.rest == REQUEST and h.source == ("203.0.113.7", 41000)
    assert [t for t, _ in h.tlvs] == [PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_NOOP, PP2_TYPE_UNIQUE_ID,
                                      PP2_TYPE_SSL, 0xE5]
    assert h.tlv(PP2_TYPE_AUTHORITY) == b"example.com" and h.tlv(PP2_TYPE_UNIQUE_ID) == b"id-1234"
    assert h.tlv(PP2_TYPE_SSL).endswith(b"TLSv1.3") and h.tlv(0x30) is None


def test_crc32c():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    h = parse_all(with_crc(v2_tcp4()) + b"after")
    assert h.tlv(PP2_TYPE_CRC32C) is not None and h.rest == b"after"
    with pytest.raises(ProxyProtocolError, match="CRC32C does not match"):
        parse_all(with_crc(v2_tcp4(), corrupt=True))


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_split_gives_the_same_header(name):
    data = VALID[name] + REQUEST
    whole = parse_all(data)
    assert whole.raw == VALID[name] and whole.rest == REQUEST
    for cut in range(len(data) + 1):
        p = HeaderParser()
        first = p.feed(data[:cut])
        if cut < len(VALID[name]):
            assert first is None and p.received == cut
            assert p.feed(data[cut:]) == whole
        else:
            assert first is not None and first.raw == whole.raw and first.rest == data[len(VALID[name]):cut]
    p = HeaderParser()
    got = [p.feed(bytes([b])) for b in VALID[name]]
    assert got[:-1] == [None] * (len(VALID[name]) - 1) and got[-1].raw == VALID[name] and got[-1].rest == b""


MALFORMED = [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0, "no PROXY header (the peer is not a proxy speaking PROXY protocol)"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0, "no PROXY header"),
    (b"POST / HTTP/1.1\r\n", 1, "no PROXY header"),
    (b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n", 5, "no PROXY header"),
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 0, "no PROXY header"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 30, "an LF without CR at offset 30"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", 31, "a CR not followed by LF at offset 30"),
    (b"PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n", 18, "byte 0x00 at offset 18"),
    (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", 7, "names protocol 'UD'..."),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 9, "names protocol 'TCP5'"),
    (b"PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n", 10, "names protocol 'TCP44'"),
    (b"PROXY TCP4\r\n", -1, "has 0 fields after TCP4, not 4"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", -1, "has 3 fields after TCP4"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", -1, "has 5 fields"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", -1, "has 5 fields"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", -1, "'01.2.3.4' as its source, not an IPv4 address"),
    (b"PROXY TCP4 1.2.3.4 256.6.7.8 1 2\r\n", -1, "'256.6.7.8' as its destination"),
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", -1, "'1.2.3' as its source"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", -1, "'::1' as its source, not an IPv4 address"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", -1, "'1.2.3.4' as its source, not an IPv6 address"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", -1, "not an IPv6 address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", -1, "'080' as its source port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", -1, "'65536' as its destination port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", -1, "'-1' as its source port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +2\r\n", -1, "'+2' as its destination port"),
    (b"PROXY UNKNOWN " + b"x" * 100, 106, "v1 header has no CRLF within 107 bytes"),
    (b"PROXY TCP6 " + b"1" * 95 + b"\r\n", 106, "v1 header has no CRLF within 107 bytes"),
    (SIG[:4] + b"X", 4, "no PROXY header"),
    (SIG[:11] + b"\x00", 11, "no PROXY header"),
    (v2(version=1), 12, "v2 header has version 0x1"),
    (v2(version=3), 12, "v2 header has version 0x3"),
    (v2(cmd=2), 12, "unknown v2 command 0x2"),
    (v2(cmd=0xF), 12, "unknown v2 command 0xf"),
    (v2(1, 0x13, b"\0" * 12), 13, "family and protocol byte 0x13"),
    (v2(1, 0x41, b"\0" * 12), 13, "family and protocol byte 0x41"),
    (v2(1, 0x10, b"\0" * 12), 13, "family and protocol byte 0x10"),
    (v2(1, 0x11, b"\0" * 8), 23, "v2 TCP4 header has 8 bytes after its first 16; its addresses need 12"),
    (v2(1, 0x21, b"\0" * 12), 27, "v2 TCP6 header has 12 bytes after its first 16; its addresses need 36"),
    (v2(1, 0x31, b"\0" * 108), 123, "its addresses need 216"),
    (v2_tcp4(tlvs=tlv(1, b"h2") + b"\x05"), 33, "ends with 1 stray byte(s) after its TLVs"),
    (v2_tcp4(tlvs=b"\x01\x00\x09abc"), 33, "TLV 0x01 at offset 28 is 9 bytes long, past the header's end"),
    (v2_tcp4(tlvs=b"\x04\x00"), 29, "2 stray byte(s)"),
    (v2_tcp4(tlvs=tlv(PP2_TYPE_CRC32C, b"\0\0")), 32, "CRC32C TLV has 2 bytes, not 4"),
    (v2(1, 0x11, length=0xFFFF), 15, "announces 65535 bytes of addresses and TLVs, more than the 4096"),
    (v2(1, 0x11, length=MAX_V2_LENGTH + 1), 15, "announces 4097 bytes"),
]


@pytest.mark.parametrize("data,at,message", MALFORMED, ids=[repr(m[2])[:40] for m in MALFORMED])
def test_malformed_headers_are_refused_as_soon_as_they_can_be(data, at, message):
    """Fed byte by byte, the parser refuses at the first byte that makes the
    header impossible (index ``at``; -1: the LF of its CRLF, as a v1 line's
    fields are read once it is whole), never later; fed at once, the same."""
    at = at % len(data)
    p = HeaderParser()
    for i, b in enumerate(data):
        try:
            assert p.feed(bytes([b])) is None, f"a header was accepted from {data!r}"
        except ProxyProtocolError as e:
            assert i == at, f"refused at byte {i}, expected {at}: {e}"
            assert message in str(e) and str(e).startswith("proxy protocol: ")
            assert e.detail == str(e)[len("proxy protocol: "):] and isinstance(e, ValueError)
            break
    else:
        pytest.fail(f"{data!r} was not refused")
    with pytest.raises(ProxyProtocolError):
        parse_all(data)


def test_the_parser_holds_one_header_at_most():
    p = HeaderParser()
    assert p.feed(b"PROXY UNKNOWN " + b"y" * 92) is None and p.received == 106
    with pytest.raises(ProxyProtocolError, match="no CRLF within 107"):
        p.feed(b"z" * 65536)
    p = HeaderParser()
    assert p.feed(v2(1, 0x00, length=MAX_V2_LENGTH)[:16] + b"\0" * 1000) is None
    assert p.received == 1016 and p.read_hint == MAX_V2_LENGTH - 1000
    h = p.feed(b"\x04" + struct.pack("!H", MAX_V2_LENGTH - 1003) + b"\0" * (MAX_V2_LENGTH - 1003) + b"x" * 100000)
    assert h.size == 16 + MAX_V2_LENGTH and h.rest == b"x" * 100000
    assert p.received == 0
    with pytest.raises(RuntimeError, match="complete"):
        p.feed(b"more")
    small = HeaderParser(max_v2_length=12)
    with pytest.raises(ProxyProtocolError, match="more than the 12"):
        small.feed(v2_tcp4(tlvs=tlv(PP2_TYPE_NOOP, b"")))


def test_read_hint_never_reaches_past_a_v2_header():
    data = v2_tcp4(tlvs=TLVS)
    p = HeaderParser()
    assert p.read_hint == 107
    assert p.feed(data[:13]) is None and p.read_hint == 3
    assert p.feed(data[13:16]) is None and p.read_hint == len(data) - 16
    assert p.feed(data[16:20]) is None and p.read_hint == len(data) - 20


@st.composite
def header_like(draw):
    kind = draw(st.sampled_from(["random", "valid", "mutated", "truncated"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    base = VALID[draw(st.sampled_from(sorted(VALID)))] + draw(st.binary(max_size=40))
    if kind == "mutated":
        i = draw(st.integers(0, len(base) - 1))
        base = base[:i] + bytes([draw(st.integers(0, 255))]) + base[i + 1:]
    elif kind == "truncated":
        base = base[:draw(st.integers(0, len(base)))]
    return base


@settings(max_examples=300, deadline=None)
@given(header_like(), st.lists(st.integers(0, 300), max_size=8))
def test_any_bytes_cut_anywhere_give_the_same_outcome(data, cuts):
    def outcome(pieces):
        p = HeaderParser()
        try:
            for piece in pieces:
                h = p.feed(piece)
                if h is not None:
                    return ("header", h.raw, h.source, h.destination, h.tlvs, h.command)
                assert p.received <= 16 + MAX_V2_LENGTH
            return ("incomplete", p.received)
        except ProxyProtocolError:
            return ("refused",)

    cuts = sorted({c for c in cuts if 0 < c < len(data)})
    pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    whole = outcome([data])
    assert outcome(pieces) == whole
    if whole[0] == "header":
        assert data.startswith(whole[1])
        assert outcome([whole[1]]) == whole  # the header alone parses the same
