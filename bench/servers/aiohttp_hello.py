"""aiohttp "hello" on the chosen asyncio loop: stock asyncio, uvloop, or danga.aio.

    python bench/servers/aiohttp_hello.py --port 8080 --loop danga
"""
import argparse
import asyncio

from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello, world")


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--loop", choices=("asyncio", "uvloop", "danga"), default="asyncio")
    args = ap.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main(args.port))
    elif args.loop == "danga":
        import danga.aio

        danga.aio.run(main(args.port))
    else:
        asyncio.run(main(args.port))
