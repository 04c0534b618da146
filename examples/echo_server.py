"""An echo server on danga: the README's example, runnable.

    python examples/echo_server.py --port 7000      # 0 picks a free port
    python examples/echo_server.py --tls            # TLS, with a throwaway certificate

Serves until interrupted (Ctrl-C).  Try it with ``nc 127.0.0.1 7000``, or
with ``--tls``: ``openssl s_client -connect 127.0.0.1:7000 -CAfile <the
certificate it prints>``.  ``--tls-cert``/``--tls-key`` use your own.
"""
import argparse
import os
import subprocess
import tempfile

import danga


class Echo(danga.Socket):
    def __init__(self, sock):
        super().__init__(sock)  # registers it, makes it non-blocking
        self.watch_read(True)

    def event_read(self):
        data = self.read(1 << 20)  # bytes; b"" if nothing yet; None at EOF
        if data is None:
            self.close("eof")
        elif data:
            self.write(data)  # sent now, or queued and flushed for you


def self_signed(host):
    """A throwaway certificate for ``host`` and localhost, made with the openssl command."""
    d = tempfile.mkdtemp(prefix="danga-echo-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    san = f"subjectAltName=DNS:localhost,{'IP' if host[0].isdigit() or ':' in host else 'DNS'}:{host}"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "7", "-subj", "/CN=localhost", "-addext", san],
                   check=True, capture_output=True)
    return cert, key


def main():
    ap = argparse.ArgumentParser(description="danga echo server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--tls", action="store_true", help="TLS with a self-signed certificate made now")
    ap.add_argument("--tls-cert", help="TLS with this certificate chain (PEM)")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM; default: in --tls-cert)")
    args = ap.parse_args()
    tls = {}
    if args.tls and not args.tls_cert:
        args.tls_cert, args.tls_key = self_signed(args.host)
        print(f"TLS certificate (self-signed, for -CAfile): {args.tls_cert}", flush=True)
    if args.tls_cert:
        tls = {"certfile": args.tls_cert, "keyfile": args.tls_key}
    listener = danga.listen(f"{'tls' if tls else 'tcp'}://{args.host}:{args.port}", Echo, **tls)
    kind = "TLS echo" if tls else "echo"
    print(f"{kind} server ({danga.poller_name()}) listening on {listener.local_addr_string()}", flush=True)
    danga.event_loop()  # Ctrl-C ends it


if __name__ == "__main__":
    main()
