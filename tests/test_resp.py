"""The Redis-protocol example: its parser (fuzzed), and the server driven by
redis-cli and the redis Python client."""
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from resp import ProtocolError, RespParser  # noqa: E402

from .test_examples import start, stop  # noqa: E402


def encode(cmd):
    return b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in cmd)


def split_at(data, cuts):
    cuts = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


commands = st.lists(st.lists(st.binary(max_size=100), min_size=1, max_size=6), max_size=30)


@settings(max_examples=300, deadline=None)
@given(commands, st.lists(st.integers(0, 5000), max_size=40))
def test_any_commands_any_splits(cmds, cuts):
    wire = b"".join(encode(c) for c in cmds)
    p = RespParser()
    out = []
    for piece in split_at(wire, cuts):
        out += p.feed(piece)
    assert out == cmds and p.buffered == 0


@settings(max_examples=300, deadline=None)
@given(commands)
def test_fast_path_agrees_with_the_general_parser(cmds):
    wire = b"".join(encode(c) for c in cmds)
    assert RespParser().feed(wire) == RespParser()._feed(wire)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=10))
def test_random_bytes_parse_or_fail_cleanly_and_stay_bounded(data, cuts):
    p = RespParser(max_bulk=1000, max_args=100, max_inline=500, max_buffer=4000)
    try:
        for piece in split_at(data, cuts):
            for cmd in p.feed(piece):
                assert isinstance(cmd, list) and all(isinstance(a, bytes) for a in cmd)
    except ProtocolError:
        return
    assert p.buffered <= 4000


def test_protocol_errors_are_named():
    with pytest.raises(ProtocolError, match="invalid multibulk length"):
        RespParser().feed(b"*x\r\n")
    with pytest.raises(ProtocolError, match="expected '\\$'"):
        RespParser().feed(b"*1\r\n:1\r\n")
    with pytest.raises(ProtocolError, match="invalid bulk length"):
        RespParser(max_bulk=10).feed(b"*1\r\n$11\r\n")
    with pytest.raises(ProtocolError, match="inline"):
        RespParser(max_inline=10).feed(b"x" * 100)


def test_a_large_value_in_many_reads_is_linear():
    value = b"v" * (16 * 1024 * 1024)
    wire = encode([b"SET", b"k", value])
    p = RespParser()
    out = []
    for i in range(0, len(wire), 4096):
        out += p.feed(wire[i:i + 4096])
    assert out == [[b"SET", b"k", value]]


# -- the server with real clients ------------------------------------------------------------


@pytest.fixture
def resp_port(backend):
    proc, port = start("resp_server.py")
    yield port
    stop(proc)


def cli(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=20)
    return out.stdout.rstrip("\n")


needs_cli = pytest.mark.skipif(shutil.which("redis-cli") is None,
                               reason="redis-cli not installed (apt-get install redis-tools)")


@needs_cli
def test_redis_cli_commands(resp_port):
    p = resp_port
    assert cli(p, "PING") == "PONG"
    assert cli(p, "ECHO", "hi there") == "hi there"
    assert cli(p, "SET", "k", "v") == "OK"
    assert cli(p, "GET", "k") == "v"
    assert cli(p, "SET", "k", "w", "NX") == ""
    assert cli(p, "SET", "k", "w", "XX") == "OK"
    assert cli(p, "SET", "fresh", "1", "XX") == ""
    assert cli(p, "SET", "t", "1", "EX", "100") == "OK"
    assert 98 <= int(cli(p, "TTL", "t")) <= 100
    assert cli(p, "SET", "p", "1", "PX", "100") == "OK"
    time.sleep(0.15)
    assert cli(p, "GET", "p") == ""  # expired
    assert cli(p, "TTL", "k") == "-1" and cli(p, "TTL", "nope") == "-2"
    assert cli(p, "EXPIRE", "k", "50") == "1" and int(cli(p, "TTL", "k")) > 40
    assert cli(p, "INCR", "n") == "1" and cli(p, "INCRBY", "n", "41") == "42" and cli(p, "DECR", "n") == "41"
    assert "not an integer" in cli(p, "INCR", "k")
    assert cli(p, "MSET", "a", "1", "b", "2") == "OK"
    assert cli(p, "MGET", "a", "zz", "b").split("\n") == ["1", "", "2"]
    assert cli(p, "EXISTS", "a", "b", "zz") == "2"
    assert sorted(cli(p, "KEYS", "*").split("\n")) == ["a", "b", "k", "n", "t"]
    assert sorted(cli(p, "KEYS", "[ab]").split("\n")) == ["a", "b"]
    assert cli(p, "DEL", "a", "zz") == "1"
    assert cli(p, "DBSIZE") == "4"
    assert cli(p, "FLUSHALL") == "OK" and cli(p, "DBSIZE") == "0"
    assert cli(p, "NOSUCH", "x") == "ERR unknown command 'NOSUCH', with args beginning with: 'x'"
    assert cli(p, "GET") == "ERR wrong number of arguments for 'get' command"
    assert cli(p, "SET", "k", "v", "EX") == "ERR syntax error"


def test_redis_python_client_with_pipelining(resp_port):
    redis = pytest.importorskip("redis", reason="the redis Python client is not installed (pip install redis)")
    r = redis.Redis(port=resp_port, protocol=2)  # the server speaks RESP2
    assert r.ping()
    pipe = r.pipeline(transaction=False)
    for i in range(1000):
        pipe.set(f"key:{i}", f"value:{i}")
        pipe.incr("counter")
    results = pipe.execute()
    assert results[1::2] == list(range(1, 1001)) and all(r is True for r in results[0::2])
    assert r.get("key:999") == b"value:999"
    assert r.mget(["key:1", "missing"]) == [b"value:1", None]
    assert r.set("big", b"x" * 5_000_000) and len(r.get("big")) == 5_000_000
    r.close()


def test_malformed_input_gets_an_error_and_a_close_and_the_server_lives(resp_port):
    with socket.create_connection(("127.0.0.1", resp_port), timeout=10) as s:
        s.sendall(b"*1\r\n:oops\r\n")
        assert s.recv(200).startswith(b"-ERR Protocol error")
        assert s.recv(200) == b""
    with socket.create_connection(("127.0.0.1", resp_port), timeout=10) as s:
        s.sendall(b"PING\r\n")  # inline commands, as from telnet
        assert s.recv(100) == b"+PONG\r\n"
        s.sendall(b"QUIT\r\n")
        assert s.recv(100) == b"+OK\r\n" and s.recv(100) == b""


def test_a_thousand_concurrent_clients(resp_port):
    socks = [socket.create_connection(("127.0.0.1", resp_port), timeout=20) for _ in range(1000)]
    try:
        for i, s in enumerate(socks):
            s.sendall(encode([b"SET", b"c%d" % i, b"%d" % i]) + encode([b"GET", b"c%d" % i]))
        for i, s in enumerate(socks):
            want = b"+OK\r\n$%d\r\n%d\r\n" % (len(b"%d" % i), i)
            got = b""
            while len(got) < len(want):
                got += s.recv(100)
            assert got == want
    finally:
        for s in socks:
            s.close()


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="redis-benchmark not installed")
def test_redis_benchmark_runs_clean(resp_port):
    out = subprocess.run(["redis-benchmark", "-p", str(resp_port), "-t", "ping,set,get", "-n", "20000",
                          "-c", "50", "-P", "16", "-q"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert out.stdout.count("requests per second") == 4, out.stdout
