"""The memcached example, driven by real clients: pymemcache for every
command, and Debian's libmemcached-tools (memccapable -a, memcstat, memccp,
memccat)."""
import os
import shutil
import socket
import subprocess
import time

import pytest

from .test_examples import start, stop

pymemcache = pytest.importorskip("pymemcache")
from pymemcache.client.base import Client  # noqa: E402
from pymemcache.exceptions import MemcacheServerError  # noqa: E402

needs_tools = pytest.mark.skipif(shutil.which("memccapable") is None,
                                 reason="libmemcached-tools not installed (apt-get install libmemcached-tools)")


@pytest.fixture
def server(backend):
    procs = []

    def run(*args):
        proc, port = start("memcached_server.py", *args, env={"DANGA_POLLER": backend})
        procs.append(proc)
        return port

    yield run
    for p in procs:
        stop(p)
        p.stdout.close()
        p.stderr.close()


def client(port, **kw):
    return Client(("127.0.0.1", port), connect_timeout=5, timeout=10, **kw)


def test_storage_commands_and_their_replies(server):
    c = client(server())
    assert c.set("k", b"v1", noreply=False) is True
    assert c.get("k") == b"v1"
    assert c.add("k", b"x", noreply=False) is False
    assert c.add("new", b"n", noreply=False) is True
    assert c.replace("missing", b"x", noreply=False) is False
    assert c.replace("k", b"v2", noreply=False) is True
    assert c.append("k", b"-tail", noreply=False) is True
    assert c.prepend("k", b"head-", noreply=False) is True
    assert c.get("k") == b"head-v2-tail"
    assert c.append("missing", b"x", noreply=False) is False
    value, cas = c.gets("k")
    assert value == b"head-v2-tail"
    assert c.cas("k", b"swapped", cas, noreply=False) is True
    assert c.cas("k", b"again", cas, noreply=False) is False  # EXISTS: the cas moved on
    assert c.cas("missing", b"x", 1, noreply=False) is None  # NOT_FOUND
    assert c.delete("k", noreply=False) is True
    assert c.delete("k", noreply=False) is False
    c.close()


def test_flags_binary_values_of_every_byte_and_one_mebibyte(server):
    c = client(server())
    every = bytes(range(256)) * 8 + b"\r\nEND\r\n"
    big = os.urandom(1 << 20)
    c.set("every", every, noreply=False)
    c.set("big", big, noreply=False)
    c.set("flagged", b"f", noreply=False, flags=0xFFFFFFFF)
    assert c.get("every") == every and c.get("big") == big
    assert c.get("flagged", default=None) == b"f"
    assert c.raw_command(b"gets flagged").startswith(b"VALUE flagged 4294967295 1 ")
    c.close()


def test_an_item_over_the_size_limit_is_refused_unbuffered_and_the_connection_survives(server):
    port = server("-I", "64k")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"set ok 0 0 2\r\nhi\r\nset big 0 0 200000\r\n")
        s.sendall(b"z" * 200_000 + b"\r\nget ok big\r\n")
        got = b""
        while not got.endswith(b"END\r\n"):
            got += s.recv(65536)
    assert got == b"STORED\r\nSERVER_ERROR object too large for cache\r\nVALUE ok 0 2\r\nhi\r\nEND\r\n"


def test_many_keys_in_one_get_and_a_noreply_pipeline(server):
    c = client(server())
    items = {f"key{i}": f"value{i}".encode() * (i % 7 + 1) for i in range(300)}
    c.set_many(items, noreply=True)  # one pipelined batch, no replies
    assert c.get_many(list(items)) == items
    assert c.get_many(["nope", "key3"]) == {"key3": items["key3"]}
    c.close()


def test_incr_decr_wrap_and_floor_and_touch_and_gat(server):
    port = server()
    c = client(port)
    c.set("n", b"18446744073709551614", noreply=False)
    assert c.incr("n", 3) == 1  # 2**64 - 2 + 3 wraps
    assert c.decr("n", 10) == 0  # never below zero
    assert c.incr("missing", 1) is None
    c.set("s", b"text", noreply=False)
    with pytest.raises(Exception, match="non-numeric"):
        c.incr("s", 1)
    assert c.touch("n", 100, noreply=False) is True
    assert c.touch("missing", 100, noreply=False) is False
    c.close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"gat 100 n missing\r\ngats 100 n\r\n")
        got = b""
        while got.count(b"END\r\n") < 2:
            got += s.recv(1000)
    assert got.startswith(b"VALUE n 0 1\r\n0\r\nEND\r\nVALUE n 0 1 ")


def test_exptime_relative_absolute_negative_and_delayed_flush(server):
    c = client(server())
    c.set("soon", b"1", expire=1, noreply=False)
    c.set("abs", b"2", expire=int(time.time()) + 3600, noreply=False)
    c.set("past", b"3", expire=-1, noreply=False)
    c.set("abs-past", b"4", expire=2592001, noreply=False)  # past 30 days: an absolute time, in 1970
    assert c.get("past") is None and c.get("abs-past") is None
    assert c.get("soon") == b"1" and c.get("abs") == b"2"
    time.sleep(2.1)
    assert c.get("soon") is None and c.get("abs") == b"2"
    assert c.flush_all(delay=1, noreply=False) is True
    assert c.get("abs") == b"2"
    time.sleep(1.5)
    assert c.get("abs") is None
    c.close()


def test_memory_limit_evicts_the_least_recently_used_and_counts_it(server):
    c = client(server("-m", "2"))
    value = b"v" * 10_000
    for i in range(400):  # about 4 MB into 2 MB
        c.set(f"k{i}", value, noreply=True)
        if i % 50 == 0:
            assert c.get("k0") == value  # kept hot: never the least recently used
    assert c.get("k0") == value
    assert c.get("k1") is None and c.get("k399") == value
    stats = c.stats()
    assert stats[b"evictions"] > 150 and stats[b"bytes"] <= 2 << 20
    assert stats[b"limit_maxbytes"] == 2 << 20
    c.close()


def test_version_verbosity_stats_and_quit(server):
    port = server()
    c = client(port)
    assert c.version().startswith(b"1.6")
    stats = c.stats()
    assert stats[b"pid"] > 0 and b"curr_items" in stats and b"evictions" in stats
    c.close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"verbosity 1\r\nbogus\r\nquit\r\n")
        got = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
    assert got == b"OK\r\nERROR\r\n"


def test_connection_limit_refuses_the_extra_clients(server):
    port = server("-c", "2")
    keep = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    for s in keep:
        s.sendall(b"version\r\n")
        assert s.recv(100).startswith(b"VERSION")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
        assert extra.recv(100).startswith(b"SERVER_ERROR Too many open connections")
    for s in keep:
        s.close()


@needs_tools
def test_memccapable_ascii_suite_passes(server):
    port = server()
    out = subprocess.run(["memccapable", "-h", "127.0.0.1", "-p", str(port), "-a", "-t", "10"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "FAIL" not in out.stdout, out.stdout + out.stderr
    assert "All tests passed" in out.stdout + out.stderr


@needs_tools
def test_memcstat_memccp_memccat_round_trip(server, tmp_path):
    port = server()
    servers = f"--servers=127.0.0.1:{port}"
    f = tmp_path / "blob.bin"
    f.write_bytes(os.urandom(300_000))
    subprocess.run(["memccp", servers, str(f)], check=True, timeout=60)
    got = subprocess.run(["memccat", servers, "blob.bin"], capture_output=True, check=True, timeout=60).stdout
    assert got in (f.read_bytes(), f.read_bytes() + b"\n")  # memccat ends its output with a newline
    stat = subprocess.run(["memcstat", servers], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "curr_items: 1" in stat and "version: 1.6" in stat


def test_pymemcache_errors_are_server_errors_not_hangs(server):
    c = client(server("-I", "1k"))
    with pytest.raises(MemcacheServerError, match="too large"):
        c.set("big", b"x" * 5000, noreply=False)
    assert c.set("small", b"ok", noreply=False) is True and c.get("small") == b"ok"
    c.close()


def test_keys_are_any_bytes_between_separators_as_memaslap_sends_them(server):
    port = server()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        key = b"\x10\x18\x01binary-key"
        s.sendall(b"set " + key + b" 0 0 3\r\nabc\r\nget " + key + b"\r\nset " + b"k" * 251 + b" 0 0 1\r\n")
        got = b""
        while not got.endswith(b"CLIENT_ERROR bad command line format\r\n"):
            got += s.recv(1000)
    assert got == (b"STORED\r\nVALUE " + key + b" 0 3\r\nabc\r\nEND\r\n"
                   b"CLIENT_ERROR bad command line format\r\n")  # a key over 250 bytes
