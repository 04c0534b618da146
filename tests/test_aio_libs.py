"""Real asyncio libraries on danga.aio, inside danga servers: redis-py's
asyncio client against Debian's redis-server and against the example RESP
server (examples/resp_server.py) running in the same loop."""
import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

import danga
import danga.aio
from tests.helpers import EXAMPLES  # noqa: F401  (puts examples/ on sys.path)

redis_asyncio = pytest.importorskip("redis.asyncio", reason="redis-py (the test extra) is not installed")

BOUND = 15.0  # seconds: bounds a hang, never a measurement


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(100).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def redis_port():
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    for _ in range(5):  # another process may take the port between the probe and the bind
        port = _free_port()
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline and not _ping(port):
            time.sleep(0.02)
        if proc.poll() is None and _ping(port):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("redis-server did not start on a free port in five tries")
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _close(client):
    closer = getattr(client, "aclose", None) or client.close  # aclose: redis-py 5.0.1 and later
    await closer()


class LookupServer(danga.Socket):
    """A danga server: each line "key" is answered with the value awaited
    from Redis, "key=value" line stores it first.  The handler is plain
    danga; the Redis call is an asyncio coroutine run through spawn()."""

    redis = None

    def __init__(self, sock):
        super().__init__(sock)
        self.buf = b""
        self.watch_read(True)

    def event_read(self):
        data = self.read(65536)
        if data is None:
            return self.close("eof")
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            danga.aio.spawn(self.lookup(line), callback=self.write, errback=self.failed)

    async def lookup(self, line):
        if b"=" in line:
            key, value = line.split(b"=", 1)
            await self.redis.set(key, value)
        return (await self.redis.get(line.split(b"=", 1)[0]) or b"(nil)") + b"\n"

    def failed(self, exc):
        self.write(f"ERR {exc}\n".encode())


def _blocking_client(port, lines):
    """A plain blocking client (it runs on the thread pool): one request at a time."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as s:
        f = s.makefile("rb")
        for line in lines:
            s.sendall(line + b"\n")
            answers.append(f.readline().rstrip(b"\n"))
        f.close()
    return answers


async def _serve_lookups(client):
    """Run LookupServer against ``client``; four blocking clients on the pool
    each store and read back their own keys."""
    LookupServer.redis = client
    listener = danga.listen("tcp://127.0.0.1:0", LookupServer)
    loop = asyncio.get_running_loop()
    try:
        port = listener.sock.getsockname()[1]
        tag = uuid.uuid4().hex.encode()
        jobs = []
        for c in range(4):
            lines = [tag + b"-%d-%d=v%d" % (c, i, i * c) for i in range(25)]
            lines += [tag + b"-%d-%d" % (c, i) for i in range(25)] + [tag + b"-missing"]
            jobs.append(loop.run_in_executor(None, _blocking_client, port, lines))
        results = await asyncio.gather(*jobs)
        for c, answers in enumerate(results):
            values = [b"v%d" % (i * c) for i in range(25)]
            assert answers == values + values + [b"(nil)"]
    finally:
        listener.close("test")
        LookupServer.redis = None


def test_redis_asyncio_inside_a_danga_server_against_redis_server(redis_port):
    async def main():
        client = redis_asyncio.Redis(host="127.0.0.1", port=redis_port)
        try:
            assert await client.ping()
            await _serve_lookups(client)
            # plain use as well: a pipeline and a pub/sub round trip
            async with client.pipeline(transaction=True) as pipe:
                key = uuid.uuid4().hex
                res = await pipe.set(key, 1).incrby(key, 41).get(key).delete(key).execute()
            assert res == [True, 42, b"42", 1]
            pubsub = client.pubsub()
            channel = uuid.uuid4().hex
            await pubsub.subscribe(channel)
            assert (await pubsub.get_message(timeout=BOUND))["type"] == "subscribe"
            await client.publish(channel, b"hello")
            msg = None
            while msg is None:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=BOUND)
            assert msg["data"] == b"hello"
            await pubsub.unsubscribe(channel)
            await _close(pubsub)
        finally:
            await _close(client)

    danga.aio.run(asyncio.wait_for(main(), BOUND))


def test_redis_asyncio_against_the_example_resp_server_in_the_same_loop():
    import resp_server  # examples/resp_server.py, served by danga in this very loop

    async def main():
        listener = danga.listen("tcp://127.0.0.1:0", resp_server.RespClient)
        port = listener.sock.getsockname()[1]
        try:
            client = redis_asyncio.Redis(host="127.0.0.1", port=port, protocol=2)  # the example speaks RESP2
        except TypeError:
            client = redis_asyncio.Redis(host="127.0.0.1", port=port)  # redis-py before 5: RESP2 only
        try:
            assert await client.ping()
            key = uuid.uuid4().hex
            assert await client.set(key, b"x" * 1_000_000)
            assert await client.get(key) == b"x" * 1_000_000
            assert await client.incr(key + "n") == 1
            await _serve_lookups(client)
        finally:
            await _close(client)
            listener.close("test")
            for conn in list(danga.descriptor_map().values()):
                conn.close("test over")  # the server's end of the client's connections

    danga.aio.run(asyncio.wait_for(main(), BOUND))


def test_aiohttp_server_and_client_on_danga_aio():
    aiohttp = pytest.importorskip("aiohttp", reason="aiohttp (the test extra) is not installed")
    from aiohttp import web

    from danga.aio.transport import SocketTransport

    big = os.urandom(3_000_000)
    transports = []

    async def hello(request):
        return web.Response(text=f"hello {request.match_info['name']}")

    async def upload(request):
        body = await request.read()
        transports.append(type(request.transport))
        return web.Response(body=body[::-1])

    async def main():
        app = web.Application(client_max_size=16 << 20)
        app.router.add_get("/hello/{name}", hello)
        app.router.add_post("/upload", upload)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as session:
                texts = await asyncio.gather(*(_get_text(session, f"http://127.0.0.1:{port}/hello/{i}")
                                               for i in range(20)))
                assert texts == [f"hello {i}" for i in range(20)]
                async with session.post(f"http://127.0.0.1:{port}/upload", data=big) as resp:
                    assert resp.status == 200
                    assert await resp.read() == big[::-1]
            assert transports == [SocketTransport]  # the server's connection is a danga Socket
        finally:
            await runner.cleanup()

    danga.aio.run(asyncio.wait_for(main(), BOUND))


async def _get_text(session, url):
    async with session.get(url) as resp:
        assert resp.status == 200
        return await resp.text()
