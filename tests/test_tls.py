"""TLS: tls:// listeners and connects, start_tls, and the failures a server meets.

Certificates are made at test time (trustme); peers are Python's ssl
module in threads, danga's own client, and Debian's openssl s_client."""
import asyncio
import datetime
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest
import trustme

import danga
from danga.tls import TlsStream

from .helpers import pattern, run

BIG = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    now = datetime.datetime.now(datetime.timezone.utc)
    expired = ca.issue_cert("localhost", "127.0.0.1", not_before=now - datetime.timedelta(days=30),
                            not_after=now - datetime.timedelta(days=1))
    client = ca.issue_cert("client@example.org")
    other = trustme.CA()  # a CA nobody trusts
    stranger = other.issue_cert("localhost", "127.0.0.1")

    class P:
        pass

    p = P()
    p.ca, p.cert, p.expired, p.client, p.stranger = ca, cert, expired, client, stranger
    p.ca_file = d / "ca.pem"
    ca.cert_pem.write_to_path(str(p.ca_file))
    p.cert_file, p.key_file = d / "cert.pem", d / "key.pem"
    cert.private_key_pem.write_to_path(str(p.key_file))
    cert.cert_chain_pems[0].write_to_path(str(p.cert_file))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(p.cert_file), append=True)
    return p


def server_ctx(pki, leaf=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (leaf or pki.cert).configure_cert(ctx)
    return ctx


def client_ctx(pki):
    ctx = ssl.create_default_context()
    pki.ca.configure_trust(ctx)
    return ctx


class Echo(danga.Connection):
    completed = 0

    def ssl_handshake_completed(self):
        Echo.completed += 1
        self.info = (self.tls.version(), self.tls.cipher()[0])
        self.peercert = self.tls.getpeercert()

    def receive_data(self, data):
        self.send_data(data)


def accepted(handler):
    made = []

    def factory(sock):
        obj = handler(sock)
        made.append(obj)
        return obj
    return made, factory


def in_thread(fn):
    out = {}

    def go():
        try:
            out["value"] = fn()
        except BaseException as e:  # reported by the test
            out["error"] = e
        finally:
            out["done"] = True
            danga.call_from_thread(lambda: None)  # wake the loop: the test's condition now holds
    t = threading.Thread(target=go, daemon=True)
    t.start()
    out["thread"] = t
    return out


def finished(out):
    return out.get("done", False)  # set before the wake-up (the thread itself ends just after)


def result(out):
    out["thread"].join(5)
    if "error" in out:
        raise out["error"]
    return out.get("value")


def close_all():
    for s in list(danga.descriptor_map().values()):
        s.close()


def python_echo_client(port, ctx, payload, hostname="localhost"):
    """Send ``payload`` and read the echo at the same time, over asyncio's
    TLS (the standard library's own TLS client) in this thread."""
    async def go():
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=hostname)

        async def send():
            for i in range(0, len(payload), 1 << 16):
                w.write(payload[i:i + (1 << 16)])
                await w.drain()
        sender = asyncio.ensure_future(send())
        got = bytearray()
        while len(got) < len(payload):
            chunk = await r.read(1 << 16)
            if not chunk:
                break
            got += chunk
        await sender
        version = w.get_extra_info("ssl_object").version()
        w.close()
        try:
            await w.wait_closed()
        except (ssl.SSLError, ConnectionError):
            pass
        return bytes(got), version
    return asyncio.run(go())


# -- data both ways ----------------------------------------------------------------------


def test_python_client_10mb_both_ways(pki):
    made, factory = accepted(Echo)
    lst = danga.listen("tls://127.0.0.1:0", factory, ssl_context=server_ctx(pki))
    payload = pattern(BIG)
    out = in_thread(lambda: python_echo_client(lst.port, client_ctx(pki), payload))
    run(lambda: finished(out), timeout=60)
    got, version = result(out)
    assert got == payload
    assert version in ("TLSv1.2", "TLSv1.3")
    assert made[0].info[0] == version
    close_all()


def test_certfile_shortcut_and_danga_client(pki):
    """A danga client to a danga server: event_connected comes after the
    handshake, and 10 MB goes both ways intact."""
    events = []

    class Client(danga.Socket):
        def __init__(self, sock):
            super().__init__(sock)
            self.got = bytearray()
            self.write(payload)  # written before the connect: queued, sent encrypted

        def ssl_handshake_completed(self):
            events.append(("handshake", self.tls is not None))

        def event_connected(self):
            events.append(("connected", self.tls.version()))
            self.watch_read(True)

        def event_read(self):
            data = self.read(65536)
            if data is None:
                self.close("eof")
            elif data:
                self.got += data

    payload = pattern(BIG, seed=3)
    lst = danga.listen("tls://127.0.0.1:0", Echo, certfile=str(pki.cert_file), keyfile=str(pki.key_file))
    c = danga.connect(f"tls://localhost:{lst.port}", Client, ssl_context=client_ctx(pki))
    assert c.tls is None  # the TCP connect first
    run(lambda: len(c.got) >= len(payload), timeout=60)
    assert bytes(c.got) == payload
    assert events[0] == ("handshake", True)
    assert events[1][0] == "connected"
    close_all()


def test_records_larger_than_one_read_are_all_delivered(pki):
    """The stuck buffer: a reader taking 100 bytes per event gets every byte
    of large records although the kernel has nothing more to report."""

    class Sip(danga.Socket):
        def __init__(self, sock):
            super().__init__(sock)
            self.got = bytearray()
            self.watch_read(True)

        def event_read(self):
            data = self.read(100)
            if data is None:
                self.close("eof")
            elif data:
                self.got += data

    made, factory = accepted(Sip)
    lst = danga.listen("tls://127.0.0.1:0", factory, ssl_context=server_ctx(pki))
    payload = pattern(300_000, seed=5)

    done = threading.Event()

    def client():
        with socket.create_connection(("127.0.0.1", lst.port)) as s:
            with client_ctx(pki).wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(payload)
                done.wait(30)  # the connection stays open: no EOF, no further readiness
    out = in_thread(client)
    try:
        run(lambda: made and len(made[0].got) >= len(payload), timeout=30)
    finally:
        done.set()
    assert bytes(made[0].got) == payload
    run(lambda: finished(out), timeout=10)
    close_all()


def test_many_concurrent_handshakes(pki):
    n = 150
    done = []

    class Client(danga.Socket):
        def event_connected(self):
            self.watch_read(True)
            self.write(b"ping %d" % self.fd)

        def event_read(self):
            data = self.read(100)
            if data:
                done.append(data)
                self.close("done")

    lst = danga.listen("tls://127.0.0.1:0", Echo, ssl_context=server_ctx(pki), backlog=n)
    ctx = client_ctx(pki)
    clients = [danga.connect(f"tls://127.0.0.1:{lst.port}", Client, ssl_context=ctx,
                             server_hostname="localhost") for _ in range(n)]
    run(lambda: len(done) == n, timeout=60)
    assert all(d.startswith(b"ping") for d in done)
    assert all(c.close_reason == "done" for c in clients)
    close_all()


# -- verification ----------------------------------------------------------------------------


def connect_failure(url, **opts):
    failed = []

    class Client(danga.Socket):
        def event_connected(self):
            failed.append("connected?!")

        def event_connect_failed(self, error):
            failed.append(error)

    c = danga.connect(url, Client, **opts)
    run(lambda: c.closed, timeout=20)
    return failed, c.close_reason


def test_client_rejects_wrong_host_name(pki):
    lst = danga.listen("tls://127.0.0.1:0", Echo, ssl_context=server_ctx(pki))
    failed, reason = connect_failure(f"tls://127.0.0.1:{lst.port}", ssl_context=client_ctx(pki),
                                     server_hostname="www.example.org")
    assert reason.startswith("tls: CERTIFICATE_VERIFY_FAILED"), reason
    assert "mismatch" in reason.lower()
    assert failed == [reason]
    close_all()


@pytest.mark.parametrize("which", ["expired", "stranger"])
def test_client_rejects_expired_and_untrusted_certificates(pki, which):
    lst = danga.listen("tls://127.0.0.1:0", Echo, ssl_context=server_ctx(pki, getattr(pki, which)))
    failed, reason = connect_failure(f"tls://localhost:{lst.port}", ssl_context=client_ctx(pki))
    assert reason.startswith("tls: CERTIFICATE_VERIFY_FAILED"), reason
    assert ("expired" if which == "expired" else "issuer") in reason
    assert failed == [reason]
    close_all()


def test_default_client_context_rejects_a_self_signed_server(pki, tmp_path):
    """Without ssl_context, danga's client verifies against the system roots."""
    if not shutil.which("openssl"):
        pytest.skip("needs the openssl command")
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(crt), "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    lst = danga.listen("tls://127.0.0.1:0", Echo, certfile=str(crt), keyfile=str(key))
    failed, reason = connect_failure(f"tls://localhost:{lst.port}")
    assert reason.startswith("tls: CERTIFICATE_VERIFY_FAILED") and "self-signed" in reason, reason
    close_all()


def test_mutual_tls(pki):
    ctx = server_ctx(pki)
    ctx.verify_mode = ssl.CERT_REQUIRED
    pki.ca.configure_trust(ctx)
    made, factory = accepted(Echo)
    lst = danga.listen("tls://127.0.0.1:0", factory, ssl_context=ctx)

    with_cert = client_ctx(pki)
    pki.client.configure_cert(with_cert)
    out = in_thread(lambda: python_echo_client(lst.port, with_cert, b"hello"))
    run(lambda: finished(out), timeout=20)
    assert result(out)[0] == b"hello"
    peer = made[0].peercert
    assert ("email", "client@example.org") in peer["subjectAltName"]

    def no_cert():
        try:
            return python_echo_client(lst.port, client_ctx(pki), b"hello")
        except (ssl.SSLError, OSError) as e:
            return e
    out = in_thread(no_cert)
    run(lambda: finished(out) and len(made) == 2 and made[1].closed, timeout=20)
    assert made[1].close_reason.startswith("tls: "), made[1].close_reason
    assert "CERTIFICATE" in made[1].close_reason
    assert not isinstance(result(out), tuple) or result(out)[0] != b"hello"
    close_all()


# -- abuse ---------------------------------------------------------------------------------------


def raw_client(port, data, linger=0.0):
    def go():
        with socket.create_connection(("127.0.0.1", port)) as s:
            if data:
                s.sendall(data)
            s.settimeout(max(linger, 0.1))
            try:
                end = time.monotonic() + linger
                while time.monotonic() < end:
                    if not s.recv(4096):
                        break
            except OSError:
                pass
    return in_thread(go)


def client_hello(pki):
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(pki).wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


@pytest.mark.parametrize("case", ["plain_http", "garbage", "truncated", "silent"])
def test_bad_clients_close_only_their_connection(pki, case):
    made, factory = accepted(Echo)
    lst = danga.listen("tls://127.0.0.1:0", factory, ssl_context=server_ctx(pki), ssl_handshake_timeout=0.5)
    data = {"plain_http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "garbage": bytes(range(256)) * 4,
            "truncated": client_hello(pki)[:60], "silent": client_hello(pki)[:60]}[case]
    bad = raw_client(lst.port, data, linger=3.0 if case == "silent" else 0.0)
    run(lambda: made and made[0].closed, timeout=10)
    reason = made[0].close_reason
    assert reason.startswith("tls: "), reason
    if case == "silent":
        assert "timed out" in reason
    elif case == "truncated":
        assert "closed the connection during the handshake" in reason
    # the listener still serves a good client
    out = in_thread(lambda: python_echo_client(lst.port, client_ctx(pki), b"still here"))
    run(lambda: finished(out), timeout=20)
    assert result(out)[0] == b"still here"
    result(bad)
    assert Echo.completed >= 1
    close_all()


def test_close_flushes_then_sends_close_notify(pki):
    """close after writing: every byte arrives, then a clean TLS EOF."""
    payload = pattern(3_000_000, seed=9)

    class Sender(danga.Connection):
        def ssl_handshake_completed(self):
            self.send_data(payload)
            self.close_after_writing()

    lst = danga.listen("tls://127.0.0.1:0", Sender, ssl_context=server_ctx(pki))

    def client():
        with socket.create_connection(("127.0.0.1", lst.port)) as s:
            with client_ctx(pki).wrap_socket(s, server_hostname="localhost", suppress_ragged_eofs=False) as t:
                got = bytearray()
                while True:
                    chunk = t.recv(65536)  # SSLEOFError here if close_notify were missing
                    if not chunk:
                        return bytes(got)
                    got += chunk
    out = in_thread(client)
    run(lambda: finished(out), timeout=30)
    assert result(out) == payload
    close_all()


def test_peer_cut_without_close_notify_is_reported(pki):
    made, factory = accepted(Echo)
    lst = danga.listen("tls://127.0.0.1:0", factory, ssl_context=server_ctx(pki))

    def client():
        s = socket.create_connection(("127.0.0.1", lst.port))
        t = client_ctx(pki).wrap_socket(s, server_hostname="localhost")
        t.sendall(b"x")
        t.recv(1)
        s2 = socket.socket(fileno=t.detach())  # the TCP connection without the TLS layer
        s2.close()
    out = in_thread(client)
    run(lambda: made and made[0].closed, timeout=20)
    result(out)
    assert made[0].close_reason == "tls: connection cut without close_notify"
    close_all()


def test_clean_close_notify_is_eof(pki):
    made, factory = accepted(Echo)
    lst = danga.listen("tls://127.0.0.1:0", factory, ssl_context=server_ctx(pki))

    def client():
        with socket.create_connection(("127.0.0.1", lst.port)) as s:
            t = client_ctx(pki).wrap_socket(s, server_hostname="localhost")
            t.sendall(b"bye")
            assert t.recv(3) == b"bye"
            t.unwrap()  # sends close_notify and waits for danga's
    out = in_thread(client)
    run(lambda: finished(out) and made and made[0].closed, timeout=20)
    result(out)
    assert made[0].close_reason == "eof"
    close_all()


@pytest.mark.parametrize("with_what", ["data", "finished"])
def test_close_notify_in_the_same_read_as_data_is_still_eof(pki, with_what):
    """The peer's close_notify arrives in one segment with data, or with the
    handshake's Finished; a reader that takes one read per event still gets
    the data and then the EOF."""
    closed = []

    class OneRead(danga.Socket):
        def __init__(self, sock):
            super().__init__(sock)
            self.got = b""
            self.watch_read(True)

        def event_read(self):
            data = self.read(65536)
            if data is None:
                closed.append(self.got)
                self.close("eof")
            else:
                self.got += data

    lst = danga.listen("tls://127.0.0.1:0", OneRead, ssl_context=server_ctx(pki))

    def client():
        with socket.create_connection(("127.0.0.1", lst.port)) as s:
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = client_ctx(pki).wrap_bio(inc, out, server_hostname="localhost")
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    s.sendall(out.read())
                    inc.write(s.recv(65536))
            if with_what == "data":
                s.sendall(out.read())  # the Finished on its own
                obj.write(b"last words")
            try:
                obj.unwrap()
            except ssl.SSLWantReadError:
                pass
            s.sendall(out.read())  # the data record (or the Finished) and close_notify in one send
            while s.recv(65536):
                pass
    out = in_thread(client)
    run(lambda: closed and finished(out), timeout=20)
    result(out)
    assert closed == [b"last words" if with_what == "data" else b""]
    close_all()


def test_listen_needs_a_certificate():
    with pytest.raises(ValueError, match="needs ssl_context= or certfile="):
        danga.listen("tls://127.0.0.1:0", Echo)


def test_renegotiation_is_refused_and_tls12_is_the_minimum(pki):
    ctx = danga.tls.server_context(str(pki.cert_file), str(pki.key_file))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    user = server_ctx(pki)
    danga.listen("tls://127.0.0.1:0", Echo, ssl_context=user)
    assert user.options & ssl.OP_NO_RENEGOTIATION  # refused on a context the user gave, too
    close_all()


# -- start_tls --------------------------------------------------------------------------------------


class StartTlsServer(danga.Socket):
    """A line protocol: "STARTTLS\n" -> "OK\n" in clear (not for an eager
    client, which sends its TLS hello at once), then TLS and echo."""

    def __init__(self, sock, ctx, eager):
        super().__init__(sock)
        self.ctx = ctx
        self.eager = eager
        self.buf = b""
        self.watch_read(True)

    def event_read(self):
        data = self.read(65536)
        if data is None:
            self.close("eof")
            return
        if self.tls is not None:
            self.write(data)
            return
        self.buf += data
        if b"\n" in self.buf:
            line, rest = self.buf.split(b"\n", 1)
            assert line == b"STARTTLS"
            if not self.eager:
                self.write(b"OK\n")
            if rest:
                self.push_back_read(rest)  # the start of the client's TLS data
            self.start_tls(self.ctx, server_side=True)


@pytest.mark.parametrize("eager", [False, True])
def test_start_tls_in_place(pki, eager):
    """STARTTLS with danga on each side.  The server's "OK" goes out in clear
    before its own TLS bytes.  An eager client sends its ClientHello right
    behind the command (its clear bytes first), so the server may read both
    at once and must take the rest as TLS."""
    sctx = server_ctx(pki)
    made = []

    def factory(sock):
        made.append(StartTlsServer(sock, sctx, eager))
        return made[-1]
    lst = danga.listen("tcp://127.0.0.1:0", factory)
    cctx = client_ctx(pki)
    got = bytearray()
    payload = pattern(500_000, seed=11)

    class Client(danga.Socket):
        def event_connected(self):
            self.watch_read(True)
            self.write(b"STARTTLS\n")
            if eager:
                self.start_tls(cctx, server_hostname="localhost")

        def ssl_handshake_completed(self):
            self.write(payload)

        def event_read(self):
            data = self.read(65536)
            if data is None:
                self.close("eof")
            elif self.tls is None:
                assert data == b"OK\n"
                self.start_tls(cctx, server_hostname="localhost")
            else:
                got.extend(data)

    c = danga.connect(f"tcp://127.0.0.1:{lst.port}", Client)
    run(lambda: len(got) >= len(payload), timeout=30)
    assert bytes(got) == payload
    assert isinstance(c.sock, TlsStream) and made[0].tls.version()
    with pytest.raises(RuntimeError, match="already uses TLS"):
        c.start_tls(cctx)
    close_all()


def test_handshake_timeout_on_connect(pki):
    """A server that accepts and never answers: the client's handshake times out."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        failed, reason = connect_failure(f"tls://127.0.0.1:{srv.getsockname()[1]}", ssl_context=client_ctx(pki),
                                         server_hostname="localhost", ssl_handshake_timeout=0.3)
        assert reason == "tls: the handshake timed out after 0.3s"
        assert failed == [reason]
    finally:
        srv.close()


# -- a real client -------------------------------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs Debian's openssl")
def test_openssl_s_client(pki):
    lst = danga.listen("tls://127.0.0.1:0", Echo, ssl_context=server_ctx(pki))

    def go():
        p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{lst.port}", "-servername", "localhost",
                              "-CAfile", str(pki.ca_file), "-verify_return_error", "-quiet", "-no_ign_eof"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdin.write(b"hello from s_client\n")
        p.stdin.flush()
        line = p.stdout.readline()
        p.stdin.close()
        p.wait(10)
        return line, p.stderr.read()
    out = in_thread(go)
    run(lambda: finished(out), timeout=25)
    line, err = result(out)
    assert line == b"hello from s_client\n", err
    close_all()


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs Debian's openssl")
def test_s_client_renegotiation_is_refused(pki):
    """openssl s_client's "R" asks for a TLS 1.2 renegotiation: refused, and
    only that connection is closed."""
    made, factory = accepted(Echo)
    ctx = server_ctx(pki)
    ctx.options |= 0x100  # SSL_OP_ALLOW_CLIENT_RENEGOTIATION: OpenSSL 3 refuses it by default; danga must too
    lst = danga.listen("tls://127.0.0.1:0", factory, ssl_context=ctx)

    def go():
        p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{lst.port}", "-tls1_2",
                              "-CAfile", str(pki.ca_file)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        p.stdin.write(b"hello\n")
        p.stdin.flush()
        lines = [p.stdout.readline()]
        while b"hello" not in lines[-1]:
            lines.append(p.stdout.readline())
        p.stdin.write(b"R\n")
        p.stdin.flush()
        rest = p.stdout.read()  # s_client ends when the renegotiation fails
        p.wait(10)
        return rest
    out = in_thread(go)
    run(lambda: finished(out) and made and made[0].closed, timeout=20)
    assert b"no renegotiation" in result(out)
    assert made[0].close_reason.startswith("tls: "), made[0].close_reason
    close_all()


def test_a_hook_that_raises_after_the_handshake_is_an_ordinary_close(pki):
    """ssl_handshake_completed raising closes the socket like any callback
    error; the connect did not fail, so event_connect_failed is not called."""
    calls = []

    class Client(danga.Socket):
        def ssl_handshake_completed(self):
            raise RuntimeError("boom")

        def event_connect_failed(self, error):
            calls.append(error)

    lst = danga.listen("tls://127.0.0.1:0", Echo, ssl_context=server_ctx(pki))
    c = danga.connect(f"tls://localhost:{lst.port}", Client, ssl_context=client_ctx(pki))
    run(lambda: c.closed, timeout=20)
    assert c.close_reason == "exception: RuntimeError: boom"
    assert calls == []
    close_all()
