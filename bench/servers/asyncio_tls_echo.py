"""asyncio Protocol TLS echo (``ssl=`` on create_server); --uvloop runs it on uvloop.

    python bench/servers/asyncio_tls_echo.py --port 7000 --cert cert.pem --key key.pem [--uvloop]

The context is made as danga's ``certfile=``/``keyfile=`` makes its own
(danga.tls.server_context), so the servers negotiate the same TLS.
"""
import argparse
import asyncio
import ssl

from asyncio_echo import Echo  # the plain benchmark's Protocol (this directory is on sys.path)


def context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    return ctx


async def main(args):
    server = await asyncio.get_running_loop().create_server(
        Echo, "127.0.0.1", args.port, backlog=4096, ssl=context(args.cert, args.key))
    print(f"TLS echo listening on 127.0.0.1:{args.port}", flush=True)
    await server.serve_forever()


ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--uvloop", action="store_true")
args = ap.parse_args()
if args.uvloop:
    import uvloop

    uvloop.install()
asyncio.run(main(args))
