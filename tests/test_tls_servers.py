"""The example servers over TLS, driven by real clients: curl (HTTPS),
redis-cli --tls, openssl s_client against the echo example's --tls mode."""
import hashlib
import os
import shutil
import subprocess
import sys

import pytest
import trustme

from .test_examples import ROOT, start, stop


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    ca_file, cert_file, key_file = d / "ca.pem", d / "cert.pem", d / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.private_key_pem.write_to_path(str(key_file))
    for i, pem in enumerate(leaf.cert_chain_pems):
        pem.write_to_path(str(cert_file), append=i > 0)
    return str(ca_file), str(cert_file), str(key_file)


needs = {tool: pytest.mark.skipif(shutil.which(tool) is None, reason=f"needs {tool}")
         for tool in ("curl", "redis-cli", "openssl")}


@needs["curl"]
def test_https_with_curl(certs, tmp_path, backend):
    ca, cert, key = certs
    root = tmp_path / "www"
    root.mkdir()
    small, big = os.urandom(4096), os.urandom(5_000_000)  # big goes the way sendfile would
    (root / "small.bin").write_bytes(small)
    (root / "big.bin").write_bytes(big)
    proc, port = start("http_server.py", "--root", str(root), "--tls-cert", cert, "--tls-key", key)
    try:
        for name, body in (("small.bin", small), ("big.bin", big)):
            out = subprocess.run(["curl", "-sS", "--fail", "--cacert", ca, f"https://localhost:{port}/{name}",
                                  f"https://localhost:{port}/{name}"],  # two requests on one connection
                                 capture_output=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert hashlib.sha256(out.stdout).digest() == hashlib.sha256(body + body).digest()
        rng = subprocess.run(["curl", "-sS", "--fail", "--cacert", ca, "-r", "1000-1999",
                              f"https://localhost:{port}/big.bin"], capture_output=True, timeout=30)
        assert rng.stdout == big[1000:2000]
        # curl refuses it without the CA: the server is really verified
        bad = subprocess.run(["curl", "-sS", f"https://localhost:{port}/small.bin"], capture_output=True, timeout=30)
        assert bad.returncode == 60, bad
    finally:
        stop(proc)


@needs["redis-cli"]
def test_redis_cli_tls(certs, backend):
    ca, cert, key = certs
    if "--tls" not in subprocess.run(["redis-cli", "--help"], capture_output=True, text=True).stderr + \
            subprocess.run(["redis-cli", "--help"], capture_output=True, text=True).stdout:
        pytest.skip("this redis-cli was built without TLS")
    proc, port = start("resp_server.py", "--tls-cert", cert, "--tls-key", key)
    try:
        def cli(*args, stdin=None):
            out = subprocess.run(["redis-cli", "--tls", "--cacert", ca, "-h", "localhost", "-p", str(port), *args],
                                 capture_output=True, text=True, timeout=20, input=stdin)
            return out.stdout.strip()
        assert cli("SET", "greeting", "hello over tls") == "OK"
        assert cli("GET", "greeting") == "hello over tls"
        value = "x" * 300_000
        assert cli("-x", "SET", "big", stdin=value) == "OK"  # -x: the value from stdin
        assert cli("GET", "big") == value
        bench = shutil.which("redis-benchmark")
        if bench:
            out = subprocess.run([bench, "--tls", "--cacert", ca, "-h", "localhost", "-p", str(port), "-q",
                                  "-t", "set,get", "-n", "2000", "-c", "20"], capture_output=True, text=True,
                                 timeout=60)
            assert "requests per second" in out.stdout, out.stdout + out.stderr
    finally:
        stop(proc)


@needs["openssl"]
def test_echo_example_tls_mode(backend):
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "echo_server.py"), "--tls", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("TLS certificate"), first
        ca = first.rsplit(": ", 1)[1].strip()
        line = proc.stdout.readline()
        assert "TLS echo server" in line and "listening on" in line, line
        port = line.rsplit(":", 1)[1].strip()
        client = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                                   "localhost", "-CAfile", ca, "-verify_return_error", "-quiet", "-no_ign_eof"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        client.stdin.write(b"echo me\n")
        client.stdin.flush()
        assert client.stdout.readline() == b"echo me\n"
        client.stdin.close()
        assert client.wait(10) == 0
    finally:
        proc.terminate()
        proc.wait(10)
