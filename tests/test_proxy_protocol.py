"""The PROXY protocol (danga/proxyproto.py): the sans-I/O parser against
headers built here byte by byte from proxy-protocol.txt, and the reader on
real listeners (tcp://, local://, tls://) with real clients.

Real proxies (HAProxy's send-proxy, send-proxy-v2 and its health checks)
are in tests/test_haproxy.py."""
import socket
import ssl
import struct
import threading

import pytest
try:
    import trustme
except ImportError:  # (not under Wine: its cryptography does not load there)
    trustme = None
from hypothesis import given, settings
from hypothesis import strategies as st

import danga
from danga import proxyproto
from danga.proxyproto import (MAX_V2_LENGTH, PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_NOOP,
                              PP2_TYPE_SSL, PP2_TYPE_UNIQUE_ID, HeaderParser, ProxiedSocket, ProxyProtocolError,
                              crc32c)

from .helpers import run, run_for

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


@pytest.mark.posix("AF_UNIX addresses")
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


# -- the reader on real listeners -------------------------------------------------------------------


class Recorder(danga.Socket):
    """Records what it sees of its peer and the bytes it gets; answers each
    request (up to a blank line) with the peer it sees."""

    def __init__(self, sock):
        super().__init__(sock)
        self.got = bytearray()
        self.seen = (self.peer_ip_string(), self.peer_addr_string(), self.peer_address, self.local_addr_string())
        self.header = getattr(sock, "proxy_header", None)  # through a TlsStream too
        self.watch_read(True)

    def event_read(self):
        data = self.read(65536)
        if data is None:
            self.close("eof")
            return
        self.got += data
        if self.got.endswith(b"\r\n\r\n"):
            self.write(f"peer {self.seen[1]}\r\n".encode())


@pytest.fixture
def server(monkeypatch):
    """A proxy_protocol listener whose readers and objects the test can see."""
    state = {"readers": [], "reasons": {}, "made": []}
    real = proxyproto.expect_header

    def spy(conn, timeout, then):
        reader = real(conn, timeout, then)
        state["readers"].append(reader)
        reader.add_close_watcher(lambda s, why: state["reasons"].__setitem__(s, why))
        return reader

    monkeypatch.setattr(proxyproto, "expect_header", spy)

    class Server:
        def __init__(self):
            self.listener = None

        def listen(self, url="tcp://127.0.0.1:0", handler=Recorder, **options):
            def factory(sock):
                obj = handler(sock)
                state["made"].append(obj)
                return obj

            self.listener = danga.listen(url, factory, proxy_protocol=True, **options)
            return self.listener

        @property
        def addr(self):
            return ("127.0.0.1", self.listener.port)

        @property
        def readers(self):
            return state["readers"]

        @property
        def made(self):
            return state["made"]

        def reason(self, reader):
            return state["reasons"].get(reader)

        def client(self, **kw):
            c = socket.create_connection(self.addr, timeout=10, **kw)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return c

    srv = Server()
    yield srv
    for s in list(danga.descriptor_map().values()):
        s.close("test over")


def read_until_closed(c):
    out = bytearray()
    while True:
        try:
            chunk = c.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("name,peer", [
    ("v1-tcp4", ("203.0.113.7", "203.0.113.7:41000", ("203.0.113.7", 41000), "10.0.0.1:80")),
    ("v1-tcp6", ("2001:db8::7", "[2001:db8::7]:4242", ("2001:db8::7", 4242, 0, 0), "[2001:db8::1]:443")),
    ("v2-tcp4-tlvs", ("203.0.113.7", "203.0.113.7:41000", ("203.0.113.7", 41000), "10.0.0.1:80")),
    ("v2-tcp6", ("2001:db8::7", "[2001:db8::7]:4242", ("2001:db8::7", 4242, 0, 0), "[2001:db8::1]:443")),
    ("v2-unix", (None, "/run/client.sock", "/run/client.sock", "/run/server.sock")),
])
@pytest.mark.posix("local:// listeners among the cases")
def test_header_and_request_in_one_send(server, name, peer):
    """The client sends header and request in one send and then waits: the
    request reaches the object (nothing of the header, nothing lost), which
    sees the header's addresses."""
    server.listen()
    with server.client() as c:
        c.sendall(VALID[name] + REQUEST)
        run(lambda: server.made and bytes(server.made[0].got) == REQUEST)
        obj = server.made[0]
        assert obj.seen == peer
        assert isinstance(obj.sock, ProxiedSocket) and obj.sock.proxy_header.raw == VALID[name]
        assert obj.sock.proxy_header.rest == b""  # those bytes were left in the socket for obj
        assert obj.fd == server.readers[0].fd  # the same descriptor, not a copy
        assert server.reason(server.readers[0]) is None  # handed over, not closed
        assert server.listener.accepted == 1
        assert obj.write_buf_size == 0
        assert c.recv(100) == f"peer {peer[1]}\r\n".encode()


@pytest.mark.parametrize("name", ["v1-unknown", "v1-unknown-long", "v2-local", "v2-local-with-block", "v2-unspec"])
def test_local_and_unknown_give_the_real_endpoints(server, name):
    server.listen()
    with server.client() as c:
        c.sendall(VALID[name] + REQUEST)
        run(lambda: server.made and bytes(server.made[0].got) == REQUEST)
        obj = server.made[0]
        me = c.getsockname()
        assert obj.seen == ("127.0.0.1", f"127.0.0.1:{me[1]}", me, f"127.0.0.1:{server.listener.port}")
        assert obj.sock.proxy_header.source is None and obj.sock.family == socket.AF_INET


def test_header_byte_by_byte_through_the_reader_without_spinning(server, monkeypatch):
    """Each byte is read as it comes (and consumed: the descriptor is not
    readable again until the next one), and the request after the header
    arrives whole."""
    calls = []
    real_read = proxyproto.HeaderReader.event_read
    monkeypatch.setattr(proxyproto.HeaderReader, "event_read", lambda self: (calls.append(1), real_read(self)))
    server.listen()
    header = v2_tcp4(tlvs=TLVS)
    with server.client() as c:
        run(lambda: server.readers)
        reader = server.readers[0]
        for i, b in enumerate(header[:-1]):
            c.send(bytes([b]))
            run(lambda n=i + 1: reader.parser.received == n)
            if i in (0, 12, 27):
                before = len(calls)
                run_for(0.05)  # nothing new arrives: the reader must not be called
                assert len(calls) == before
        assert not server.made
        c.send(header[-1:])
        run(lambda: server.made)
        c.send(REQUEST)
        run(lambda: bytes(server.made[0].got) == REQUEST)
        assert server.made[0].seen[1] == "203.0.113.7:41000"


@pytest.mark.parametrize("name", ["v1-tcp6", "v2-tcp4-tlvs"])
def test_header_split_in_two_at_every_boundary_through_the_reader(server, name):
    header = VALID[name]
    server.listen()
    for cut in range(1, len(header)):
        with server.client() as c:
            c.send(header[:cut])
            run(lambda n=cut: server.readers and server.readers[-1].parser.received == n)
            c.send(header[cut:] + REQUEST)
            run(lambda: len(server.made) == len(server.readers) and bytes(server.made[-1].got) == REQUEST)
            assert server.made[-1].sock.proxy_header.raw == header
            server.made[-1].close("next")
    assert server.listener.accepted == len(header) - 1


@pytest.mark.posix("local:// listeners")
def test_local_listener_sees_the_header_s_family(server, tmp_path):
    """A TCP client relayed to a local:// listener: the addresses are IP ones."""
    path = str(tmp_path / "pp.sock")
    server.listen(f"local://{path}")
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(path)
        c.sendall(V1_TCP4 + REQUEST)
        run(lambda: server.made and bytes(server.made[0].got) == REQUEST)
        obj = server.made[0]
        assert obj.seen[:2] == ("203.0.113.7", "203.0.113.7:41000")
        assert obj.sock.family == socket.AF_INET and obj.sock.real_family == socket.AF_UNIX


@pytest.mark.parametrize("data,reason", [
    (REQUEST, "proxy_protocol: no PROXY header (the peer is not a proxy speaking PROXY protocol); "
              "it sent b'GET /hello HTTP/'..."),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "proxy_protocol: v1 header has an LF without CR at offset 30"),
    (b"PROXY UNKNOWN " + b"x" * 200, "proxy_protocol: v1 header has no CRLF within 107 bytes"),
    (v2(cmd=3), "proxy_protocol: unknown v2 command 0x3 (0x0 LOCAL and 0x1 PROXY are defined)"),
    (v2(1, 0x11, length=0xFFFF) + b"\0" * 100, "proxy_protocol: v2 header announces 65535 bytes"),
    (v2_tcp4(tlvs=b"\x01\x00\x09abc"), "proxy_protocol: v2 TLV 0x01 at offset 28 is 9 bytes long"),
])
def test_malformed_header_closes_the_connection_with_its_reason(server, data, reason, caplog):
    server.listen()
    with caplog.at_level("INFO", logger="danga"), server.client() as c:
        c.sendall(data)
        run(lambda: server.readers and server.reason(server.readers[0]) is not None)
        assert server.reason(server.readers[0]).startswith(reason)
        assert read_until_closed(c) == b""  # closed, nothing said
    assert not server.made and server.listener.accepted == 0
    assert any(reason in r.getMessage() and r.levelname == "INFO" for r in caplog.records)


def test_a_client_that_sends_nothing_times_out(server):
    server.listen(proxy_timeout=0.2)
    with server.client() as c:
        run(lambda: server.readers and server.reason(server.readers[0]) is not None)
        assert server.reason(server.readers[0]) == "proxy_timeout"
        assert read_until_closed(c) == b""
    assert not server.made


def test_a_client_that_stops_mid_header_times_out(server):
    server.listen(proxy_timeout=0.2)
    with server.client() as c:
        c.sendall(V1_TCP4[:20])
        run(lambda: server.readers and server.reason(server.readers[0]) is not None)
        assert server.reason(server.readers[0]) == "proxy_timeout"
        assert server.readers[0].parser.received == 20


def test_the_deadline_is_gone_once_the_header_is_in(server):
    server.listen(proxy_timeout=0.2)
    with server.client() as c:
        c.sendall(v2_tcp4())
        run(lambda: server.made)
        run_for(0.4)
        assert not server.made[0].closed
        c.sendall(REQUEST)
        run(lambda: bytes(server.made[0].got) == REQUEST)


@pytest.mark.parametrize("sent", [0, 10, 20])
def test_a_client_that_closes_mid_header(server, sent):
    server.listen()
    with server.client() as c:
        c.sendall(v2_tcp4(tlvs=TLVS)[:sent])
        c.shutdown(socket.SHUT_WR)
        run(lambda: server.readers and server.reason(server.readers[0]) is not None)
        want = (f"proxy_protocol: the peer closed the connection after {sent} bytes of the header" if sent
                else "proxy_protocol: the peer closed the connection before sending a header")
        assert server.reason(server.readers[0]) == want
    assert not server.made


def test_a_client_that_resets_mid_header(server):
    server.listen()
    c = server.client()
    c.sendall(V1_TCP4[:10])
    run(lambda: server.readers and server.readers[0].parser.received == 10)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # RST
    run(lambda: server.reason(server.readers[0]) is not None)
    assert server.reason(server.readers[0]).startswith("proxy_protocol: ")
    assert "10 bytes of the header" in server.reason(server.readers[0])


def test_a_factory_that_raises_closes_the_connection(server):
    def broken(sock):
        raise RuntimeError("no")

    server.listen(handler=broken)
    with server.client() as c:
        c.sendall(V1_TCP4 + REQUEST)
        run(lambda: server.readers and server.readers[0].closed)
        assert server.reason(server.readers[0]) is None  # handed over; the factory's failure closed the socket
        assert read_until_closed(c) == b""
    assert server.listener.accepted == 0 and not server.made


# -- TLS after the header --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs():
    if trustme is None:
        pytest.skip("trustme is not installed")
    ca = trustme.CA()
    return ca, ca.issue_cert("localhost", "127.0.0.1")


def in_thread(fn):
    """Run ``fn`` in a client thread; ``state["done"]`` is set (and the loop
    woken) when it ends, ``state["error"]`` holds what it raised."""
    state = {"done": False, "error": None}

    def go():
        try:
            fn()
        except Exception as e:  # reported by the test
            state["error"] = e
        state["done"] = True
        danga.call_from_thread(lambda: None)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    state["thread"] = t
    return state


class TlsRecorder(Recorder):
    def ssl_handshake_completed(self):
        self.version = self.tls.version()


def tls_client_one_segment(addr, header, ctx, payload, out):
    """A TLS client that sends the PROXY header and its ClientHello in ONE
    send (memory BIOs), then completes the handshake, sends ``payload`` and
    reads the answer into ``out``."""
    inc, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, outgoing, server_hostname="localhost")
    with socket.create_connection(addr, timeout=10) as s:
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outgoing.read()
        out["first_send"] = len(header) + len(hello)
        s.sendall(header + hello)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    s.sendall(pending)
                data = s.recv(65536)
                if not data:
                    raise ConnectionError("server closed during the handshake") from None
                inc.write(data)
        pending = outgoing.read()
        obj.write(payload)
        s.sendall(pending + outgoing.read())
        answer = b""
        while not answer.endswith(b"\r\n"):
            try:
                answer += obj.read(65536)
            except ssl.SSLWantReadError:
                data = s.recv(65536)
                if not data:
                    break
                inc.write(data)
        out["answer"] = answer
        out["version"] = obj.version()


@pytest.mark.parametrize("name", ["v1-tcp4", "v2-tcp6"])
def test_tls_listener_with_the_client_hello_in_the_header_s_segment(server, certs, name):
    ca, cert = certs
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(sctx)
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    server.listen("tls://127.0.0.1:0", handler=TlsRecorder, ssl_context=sctx)
    out = {}
    client = in_thread(lambda: tls_client_one_segment(server.addr, VALID[name], cctx, REQUEST, out))
    run(lambda: client["done"])
    client["thread"].join(10)
    assert client["error"] is None
    obj = server.made[0]
    assert bytes(obj.got) == REQUEST and obj.version == out["version"]
    peer = "203.0.113.7:41000" if name == "v1-tcp4" else "[2001:db8::7]:4242"
    assert obj.seen[1] == peer and out["answer"] == f"peer {peer}\r\n".encode()


def test_tls_listener_with_the_header_sent_apart(server, certs):
    ca, cert = certs
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(sctx)
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    server.listen("tls://127.0.0.1:0", handler=TlsRecorder, ssl_context=sctx)
    out = {}

    def client():
        with socket.create_connection(server.addr, timeout=10) as raw:
            raw.sendall(v2_tcp4(tlvs=TLVS))
            with cctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(REQUEST)
                out["answer"] = s.recv(100)

    state = in_thread(client)
    run(lambda: state["done"])
    state["thread"].join(10)
    assert state["error"] is None
    assert out["answer"] == b"peer 203.0.113.7:41000\r\n"
    assert server.made[0].header.tlv(PP2_TYPE_AUTHORITY) == b"example.com"


def test_tls_listener_refuses_a_client_hello_without_header(server, certs):
    ca, cert = certs
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(sctx)
    cctx = ssl.create_default_context()
    ca.configure_trust(cctx)
    server.listen("tls://127.0.0.1:0", handler=TlsRecorder, ssl_context=sctx)

    def client():
        with socket.create_connection(server.addr, timeout=10) as raw:
            with cctx.wrap_socket(raw, server_hostname="localhost"):
                pass

    state = in_thread(client)
    run(lambda: state["done"] and server.readers and server.reason(server.readers[0]) is not None)
    state["thread"].join(10)
    assert server.reason(server.readers[0]).startswith("proxy_protocol: no PROXY header")
    assert "b'\\x16\\x03" in server.reason(server.readers[0])  # a TLS record: the hint is in the reason
    assert isinstance(state["error"], (OSError, ssl.SSLError)) and not server.made
