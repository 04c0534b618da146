"""listen()/connect() for every URL scheme, the listener, datagrams."""
import os
import socket
import sys

import pytest

import danga
from danga import addresses

from .helpers import Collector, Echo, pattern, run, run_for, shutdown


class Client(Collector):
    """Records connect outcome and what it reads."""

    def __init__(self, sock):
        super().__init__(sock)
        self.connected = False
        self.failed = None
        self.watch_read(True)

    def event_connected(self):
        self.connected = True

    def event_connect_failed(self, error):
        self.failed = error


# -- URL parsing --------------------------------------------------------------------


@pytest.mark.parametrize("url, target", [
    ("tcp://127.0.0.1:80", ("127.0.0.1", 80)),
    ("tcp6://[::1]:0", ("::1", 0)),
    ("udp4://localhost:53", ("localhost", 53)),
    ("local:///tmp/x.sock", "/tmp/x.sock"),
    ("local://@abstract", b"\0abstract"),
    ("fifo:///tmp/f", "/tmp/f"),
    ("fd://0", 0),
])
def test_parse_good_urls(url, target):
    assert addresses.parse(url).target == target


@pytest.mark.parametrize("url, part", [
    ("tcp://127.0.0.1", "no port"),
    ("tcp://127.0.0.1:http", "port 'http'"),
    ("tcp://127.0.0.1:70000", "out of range"),
    ("tcp://::1:80", "brackets"),
    ("tcp://[::1:80", "unclosed"),
    ("tcp://:80", "empty host"),
    ("local://host/path", "host part"),
    ("local:///x?type=seqpacket", "type="),
    ("fd://x", "not a number"),
])
def test_bad_urls_name_the_url_and_the_part(url, part):
    with pytest.raises(ValueError) as ei:
        addresses.parse(url)
    assert repr(url) in str(ei.value) and part in str(ei.value)


def test_unsupported_scheme_lists_the_supported_ones():
    with pytest.raises(ValueError, match=r"'ftp'.*tcp:, tcp4:.*fd:"):
        addresses.parse("ftp://example.org:21")


def test_unknown_options_are_named():
    with pytest.raises(TypeError, match="backlogg"):
        danga.listen("tcp://127.0.0.1:0", Echo, backlogg=5)


# -- TCP ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["tcp://127.0.0.1:0", "tcp4://localhost:0"])
def test_tcp_listen_connect_echo(url):
    lst = danga.listen(url, Echo)
    assert isinstance(lst, danga.Listener) and lst.port > 0
    c = danga.connect(f"tcp://127.0.0.1:{lst.port}", Client)
    c.write(b"queued while connecting")
    run(lambda: c.connected and bytes(c.got) == b"queued while connecting")
    assert c.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    shutdown(c, lst)


def test_tcp6():
    try:
        lst = danga.listen("tcp6://[::1]:0", Echo)
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    c = danga.connect(f"tcp6://[::1]:{lst.port}", Client)
    c.write(b"six")
    run(lambda: bytes(c.got) == b"six")
    assert c.peer_addr_string() == f"[::1]:{lst.port}"
    shutdown(c, lst)


def test_connect_refused_reports_the_errno_name():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        c = danga.connect(f"tcp://127.0.0.1:{port}", Client)
        run(lambda: c.closed)
    assert c.failed == "ECONNREFUSED"
    assert c.close_reason == "connect_failed: ECONNREFUSED"


def test_connect_timeout():
    # A listener with a full backlog never completes new handshakes.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        port = s.getsockname()[1]
        fillers = []
        c = None
        try:
            for _ in range(8):
                f = socket.socket()
                f.setblocking(False)
                f.connect_ex(("127.0.0.1", port))
                fillers.append(f)
            c = danga.connect(f"tcp://127.0.0.1:{port}", Client, timeout=0.2)
            run(lambda: c.closed)
        finally:
            for f in fillers:
                f.close()
    assert c.failed == "ETIMEDOUT" and not c.connected
    assert c.close_reason == "connect_failed: ETIMEDOUT"


def test_max_connections_accepts_and_closes_the_extra_ones():
    lst = danga.listen("tcp://127.0.0.1:0", Echo, max_connections=3, reject=b"busy\n")
    clients = [danga.connect(f"tcp://127.0.0.1:{lst.port}", Client) for _ in range(5)]
    run(lambda: lst.accepted + lst.rejected == 5)
    run(lambda: sum(c.closed for c in clients) == 2)
    assert lst.accepted == 3 and lst.rejected == 2
    assert sorted(bytes(c.got) for c in clients if c.closed) == [b"busy\n", b"busy\n"]
    for c in clients:
        c.close()
    run(lambda: lst.connections == 0 and all(x.closed for x in danga.descriptor_map().values() if x is not lst))
    # room again
    c = danga.connect(f"tcp://127.0.0.1:{lst.port}", Client)
    c.write(b"ok")
    run(lambda: bytes(c.got) == b"ok")
    shutdown(c, lst)


def test_accepts_are_bounded_per_pass():
    lst = danga.listen("tcp://127.0.0.1:0", Echo, accept_per_pass=2)
    raw = [socket.create_connection(("127.0.0.1", lst.port)) for _ in range(6)]
    run(lambda: lst.accepted == 6)
    assert danga.loop_passes() >= 3
    for r in raw:
        r.close()
    run_for(0.05)
    lst.close()


# -- UNIX --------------------------------------------------------------------------------


@pytest.mark.posix("local:// (Unix-domain sockets)")
def test_local_stream_and_cleanup(tmp_path):
    path = tmp_path / "s.sock"
    lst = danga.listen(f"local://{path}", Echo)
    c = danga.connect(f"local://{path}", Client)
    c.write(b"unix")
    run(lambda: bytes(c.got) == b"unix")
    assert c.peer_addr_string() == str(path)
    shutdown(c, lst)
    assert not path.exists()  # the listener removes its socket file


@pytest.mark.posix("local:// (Unix-domain sockets)")
def test_local_stale_socket_file_is_replaced(tmp_path):
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # leaves the file behind
    lst = danga.listen(f"local://{path}", Echo)
    lst.close()


@pytest.mark.posix("local://@ (Linux abstract sockets)")
def test_local_abstract():
    name = f"danga-test-{os.getpid()}-{id(object())}"
    lst = danga.listen(f"local://@{name}", Echo)
    c = danga.connect(f"local://@{name}", Client)
    c.write(b"abstract")
    run(lambda: bytes(c.got) == b"abstract")
    assert c.peer_addr_string() == f"@{name}"
    shutdown(c, lst)


class DgramEcho(danga.DatagramSocket):
    def event_read(self):
        got = self.read_from()
        if got is None:
            return self.close("error")
        data, addr = got
        if addr is not None:
            self.send_to(data.upper(), addr)


class DgramClient(danga.DatagramSocket):
    def __init__(self, sock):
        super().__init__(sock)
        self.got = []
        self.watch_read(True)

    def event_read(self):
        data = self.read()
        if data:
            self.got.append(data)


@pytest.mark.posix("local:// (Unix-domain sockets)")
def test_local_dgram_keeps_boundaries(tmp_path):
    srv_path = tmp_path / "d.sock"
    srv = danga.listen(f"local://{srv_path}?type=dgram", DgramEcho)
    cli_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    cli_sock.bind(str(tmp_path / "c.sock"))
    cli_sock.connect(str(srv_path))
    cli = DgramClient(cli_sock)
    for m in (b"one", b"two", b"three"):
        cli.write(m)
    run(lambda: len(cli.got) == 3)
    assert cli.got == [b"ONE", b"TWO", b"THREE"]
    cli.close()
    srv.close()


# -- UDP ----------------------------------------------------------------------------------


def test_udp_echo_keeps_datagram_boundaries():
    srv = danga.listen("udp://127.0.0.1:0", DgramEcho)
    port = srv.sock.getsockname()[1]
    cli = danga.connect(f"udp://127.0.0.1:{port}", DgramClient)
    msgs = [pattern(n, n) for n in (1, 100, 1400, 8000)]
    for m in msgs:
        cli.write(m)
    run(lambda: len(cli.got) == len(msgs))
    assert cli.got == [m.upper() for m in msgs]
    cli.close()
    srv.close()


def test_udp_queued_datagrams_are_not_merged():
    srv = danga.listen("udp://127.0.0.1:0", DgramClient)
    port = srv.sock.getsockname()[1]
    cli = danga.connect(f"udp://127.0.0.1:{port}", DgramClient)
    run(lambda: not cli.connecting)
    # force the queue: these go through the write queue and the flush path
    cli._Socket__wq = cli._queue_class(cli)
    for m in (b"a", b"bb", b"ccc"):
        cli.write(m)
    cli.write(None)
    run(lambda: len(srv.got) == 3)
    assert srv.got == [b"a", b"bb", b"ccc"]
    cli.close()
    srv.close()


# -- pipes, FIFOs, fds -------------------------------------------------------------------


Reader = Collector


@pytest.mark.posix("fifo:// (named pipes)")
def test_fifo_reader_and_writer(tmp_path):
    path = tmp_path / "fifo"
    reader = danga.listen(f"fifo://{path}", Reader)
    writer = danga.connect(f"fifo://{path}", danga.Socket)
    data = pattern(300_000)
    writer.write(data)  # more than a pipe holds: queued and flushed
    run(lambda: len(reader.got) == len(data))
    assert bytes(reader.got) == data
    writer.close()
    run_for(0.05)
    assert not reader.closed  # a listening FIFO outlives its writers
    reader.close()


@pytest.mark.posix("fifo:// (named pipes)")
def test_fifo_connect_without_reader_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="nobody is reading"):
        danga.connect(f"fifo://{tmp_path / 'lonely'}", danga.Socket)


@pytest.mark.posix("fifo:// (named pipes)")
def test_fifo_path_that_is_not_a_fifo(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a FIFO"):
        danga.listen(f"fifo://{f}", Reader)


def test_anon_socketpair_and_pipe():
    a, b = danga.connect("anon:", Reader)
    a.write(b"to b")
    b.watch_read(True)
    run(lambda: bytes(b.got) == b"to b")
    a.close()
    run(lambda: b.closed)
    if sys.platform == "win32":
        with pytest.raises(NotImplementedError, match="POSIX-only"):
            danga.connect("anon:?type=pipe", Reader)
        return
    r, w = danga.connect("anon:?type=pipe", Reader)
    r.watch_read(True)
    w.write(b"through a pipe")
    run(lambda: bytes(r.got) == b"through a pipe")
    w.close()
    run(lambda: r.closed)


@pytest.mark.posix("fd:// (descriptors)")
def test_fd_url_wraps_an_existing_descriptor():
    rfd, wfd = os.pipe()
    r = danga.connect(f"fd://{rfd}", Reader)
    r.watch_read(True)
    os.write(wfd, b"via fd")
    os.close(wfd)
    run(lambda: r.closed)
    assert bytes(r.got) == b"via fd"


@pytest.mark.posix("fd:// (descriptors)")
def test_fd_url_of_a_listening_socket_makes_a_listener():
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    fd = s.detach()
    lst = danga.listen(f"fd://{fd}", Echo)
    assert isinstance(lst, danga.Listener)
    c = danga.connect(f"tcp://127.0.0.1:{port}", Client)
    c.write(b"inherited")
    run(lambda: bytes(c.got) == b"inherited")
    shutdown(c, lst)


def test_anon_has_no_listening_side():
    with pytest.raises(ValueError, match="no listening side"):
        danga.listen("anon:", Reader)
