"""asyncio Protocol echo; --uvloop runs the same protocol on uvloop, --danga on
danga.aio (the asyncio loop whose waiting and passes are danga's)."""
import argparse
import asyncio
import socket


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.transport.write(data)


async def main(port):
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", port, backlog=4096)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":  # asyncio_tls_echo.py imports Echo
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    loop = ap.add_mutually_exclusive_group()
    loop.add_argument("--uvloop", action="store_true")
    loop.add_argument("--danga", action="store_true")
    args = ap.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(main(args.port))
    elif args.danga:
        import danga.aio

        danga.aio.run(main(args.port))
    else:
        asyncio.run(main(args.port))
