"""A Perlbal-style web server and reverse proxy on danga.

    python examples/http_server.py --port 8080 --root ./public
    python examples/http_server.py --port 8080 --proxy-to 127.0.0.1:8001,127.0.0.1:8002

Static files: GET and HEAD, keep-alive and pipelining, Content-Length, single
byte ranges (206/416), 400/403/404/405/413/414/431 answers (503 when out of
descriptors), no path that resolves outside the root (``..``, symlinks), a
directory served by its index.html or refused.  Files over 32 KiB go out
with os.sendfile (smaller ones in the same write as the headers: fewer
syscalls, one TCP segment; their responses are reused for a second, so a
changed file shows within 1 s).

Reverse proxy: round-robin over the backends, one backend connection per
request (HTTP/1.0 with Connection: close, as Perlbal speaks to backends),
the response streamed back with back-pressure (the backend is not read
while the client is more than 256 KiB behind), 502 when a backend fails.
Idle clients are closed after --idle-timeout seconds.

Slow clients (slowloris, slow bodies, slow readers): each phase of a
connection has its own limit, as in nginx and Apache's mod_reqtimeout.  The
request line and headers are due within --header-timeout seconds of the
connection's start (or of the request's first byte), a body within
--body-timeout seconds plus 1 s per --body-min-rate bytes received, and a
keep-alive connection is closed after --keepalive-timeout seconds without a
new request.  Until it is sending a response, a connection is marked as not
yet productive (set_deadline), so that when descriptors run short the
listener sheds the oldest such connections first; a response that the
client stops taking is closed after --send-timeout seconds.
"""
import argparse
import errno
import itertools
import mimetypes
import os
import stat
from collections import deque
from email.utils import formatdate
from time import monotonic
from urllib.parse import unquote, urlsplit

import danga
from httpparse import HttpError, RequestParser, parse_response_head

SMALL_FILE = 32 * 1024
BEHIND = 256 * 1024
HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "transfer-encoding"}
REASONS = {200: "OK", 206: "Partial Content", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large", 414: "URI Too Long",
           416: "Range Not Satisfiable", 431: "Request Header Fields Too Large", 502: "Bad Gateway",
           503: "Service Unavailable"}

config = {"root": None, "backends": None}


def head(status, headers, keep_alive, server=True):
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}"] + (["Server: danga-http"] if server else [])
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def byte_range(spec, size):
    """(start, end) for a single 'bytes=' range; None for no range; 416 if unsatisfiable."""
    if not spec or not spec.startswith("bytes=") or "," in spec:
        return None
    first, _, last = spec[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n == 0:
                raise HttpError(416, "Range Not Satisfiable")
            return max(0, size - n), size - 1
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        raise HttpError(416, "Range Not Satisfiable")
    return start, min(end, size - 1)


class HttpClient(danga.Socket):
    max_idle_time = 30
    # Each phase's limit in seconds (0: none); main() sets them from the flags.
    header_timeout = 20.0
    body_timeout = 20.0
    body_min_rate = 500.0  # bytes per second that earn the body 1 s more
    keepalive_timeout = 15.0

    def __init__(self, sock):
        super().__init__(sock)
        self.parser = RequestParser()
        self.pending = deque()
        self.busy = False
        self.sending = None  # (file fd, offset, bytes left) while sendfile runs
        self.phase = None
        self.enter("header")  # the first request's head is due header_timeout after the connection's start
        self.watch_read(True)

    def event_read(self):
        data = self.read(65536)
        if data is None:
            return self.close("eof")
        try:
            self.pending.extend(self.parser.feed(data))
        except HttpError as e:
            return self.refuse(e.status, keep_alive=False)
        if len(self.pending) > 32:
            self.watch_read(False)  # a client pipelining this far waits for answers
        self.next_request()

    def next_request(self):
        while not self.busy and self.pending and not self.closed:
            req = self.pending.popleft()
            self.busy = True
            if self.phase != "respond":
                self.enter("respond")
            try:
                if config["backends"]:
                    proxy(self, req)
                else:
                    self.serve_file(req)
            except HttpError as e:
                self.refuse(e.status, req.keep_alive)
        if not self.pending and not self.closed and not self.watching_read:
            self.watch_read(True)
        if not self.closed:
            self.follow_phase()

    # A connection is in one phase at a time:
    #   header     the request line and headers are arriving
    #   body       the request body is arriving
    #   keepalive  waiting for the next request
    #   respond    a response is being sent
    # Entering a phase sets its deadline (one set_deadline call; the deadline
    # closes the connection with reason "<phase>_timeout").  Every phase but
    # "respond" marks the connection as not yet productive, so that the
    # listener sheds it first when descriptors run short.

    def follow_phase(self):
        """After each read and each response: enter the phase the connection is now in."""
        buf = self.parser.buf  # the bytes of the request not yet complete
        if self.busy or self.pending:
            phase = "respond"
        elif self.phase == "body":  # (a complete body would be a pending request)
            return self.extend_body()
        elif buf:
            phase = "body" if b"\r\n\r\n" in buf else "header"
        else:
            phase = "header" if self.phase == "header" else "keepalive"
        if phase != self.phase:
            self.enter(phase)

    def enter(self, phase):
        self.phase = phase
        if phase == "respond":
            return self.set_deadline(None)  # productive: --send-timeout watches a reader that stalls
        if phase == "body":
            self.body_head = self.parser.buf.index(b"\r\n\r\n") + 4
            self.body_start = monotonic()
            self.body_due = self.body_start + self.body_timeout  # when the deadline set below fires
        seconds = {"header": self.header_timeout, "body": self.body_timeout,
                   "keepalive": self.keepalive_timeout}[phase]
        if seconds:
            self.set_deadline(seconds, f"{phase}_timeout")
        else:  # no deadline, but shed first all the same
            self.set_deadline(None)
            self.mark_unproductive()

    def extend_body(self):
        """The body earns 1 s more per body_min_rate bytes received (mod_reqtimeout's
        MinRate).  The deadline is moved only once less than half of body_timeout
        is left: a few set_deadline calls per body, not one per read."""
        if not (self.body_timeout and self.body_min_rate):
            return
        now = monotonic()
        received = len(self.parser.buf) - self.body_head
        due = self.body_start + self.body_timeout + received / self.body_min_rate
        if due > self.body_due and self.body_due - now < self.body_timeout / 2:
            self.body_due = due
            self.set_deadline(due - now, "body_timeout")

    def finished(self, keep_alive):
        """The response is queued; go on with the next request, or close."""
        self.busy = False
        if not keep_alive:
            self.write(lambda: self.close("done"))
        else:
            self.next_request()

    def refuse(self, status, keep_alive):
        body = f"{status} {REASONS.get(status, '')}\n".encode()
        extra = [("Allow", "GET, HEAD")] if status == 405 else []
        self.write(head(status, [("Content-Type", "text/plain"), ("Content-Length", len(body))] + extra,
                        keep_alive) + body)
        self.finished(keep_alive)

    def serve_file(self, req):
        hit = CACHE.get(req.target)
        if hit is not None and hit[0] > monotonic() and req.method in ("GET", "HEAD") and "range" not in req.headers:
            top = hit[1][req.keep_alive]
            self.write(top + hit[2] if req.method == "GET" else top)
            return self.finished(req.keep_alive)
        if req.method not in ("GET", "HEAD"):
            raise HttpError(405, "Method Not Allowed")
        path = unquote(urlsplit(req.target).path)
        if "\0" in path or not path.startswith("/"):
            raise HttpError(400, "Bad Request")
        root = config["root"]
        full = os.path.realpath(os.path.join(root, path.lstrip("/")))
        if full != root and not full.startswith(root + os.sep):
            raise HttpError(403, "Forbidden")
        try:
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise HttpError(404, "Not Found") from None
        except (PermissionError, IsADirectoryError):
            raise HttpError(403, "Forbidden") from None
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):  # out of descriptors: the client may retry
                raise HttpError(503, "Service Unavailable") from None
            raise
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                os.close(fd)
                fd = -1
                index = os.path.join(full, "index.html")
                if not os.path.isfile(index):
                    raise HttpError(403, "Forbidden")
                fd = os.open(index, os.O_RDONLY | os.O_CLOEXEC)
                st = os.fstat(fd)
                full = index
            elif not stat.S_ISREG(st.st_mode):
                raise HttpError(403, "Forbidden")
            size = st.st_size
            rng = byte_range(req.headers.get("range"), size)
            start, end = rng if rng else (0, size - 1)
            length = end - start + 1 if size else 0
            headers = [("Content-Type", mimetypes.guess_type(full)[0] or "application/octet-stream"),
                       ("Content-Length", length), ("Last-Modified", formatdate(st.st_mtime, usegmt=True)),
                       ("Accept-Ranges", "bytes")]
            if rng:
                headers.append(("Content-Range", f"bytes {start}-{end}/{size}"))
            top = head(206 if rng else 200, headers, req.keep_alive)
            if req.method == "HEAD" or length == 0:
                self.write(top)
            elif length <= SMALL_FILE:
                body = os.pread(fd, length, start)
                self.write(top + body)
                if not rng:
                    remember(req.target, headers, body)
            else:
                self.write(top)
                self.sending = (fd, start, length)
                self.keep_alive_after = req.keep_alive
                fd = -1  # now owned by the sendfile
                self.write(self.send_file)  # once the head is out
                return
        except HttpError:
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        self.finished(req.keep_alive)

    def send_file(self):
        if self.tls is not None:
            return self.send_file_encrypted()
        fd, offset, left = self.sending
        while left:
            try:
                n = os.sendfile(self.fd, fd, offset, min(left, 1 << 20))
            except BlockingIOError:
                self.sending = (fd, offset, left)
                self.watch_write(True)
                return
            except OSError:
                self.sending = None
                os.close(fd)
                return self.close("sendfile_error")
            if n == 0:  # the file shrank under us
                break
            offset += n
            left -= n
        self.sending = None
        os.close(fd)
        self.watch_write(False)
        self.finished(self.keep_alive_after)

    def send_file_encrypted(self):
        """sendfile cannot encrypt: over TLS the file goes through write(),
        256 KiB at a time, the next piece once the last one is out."""
        fd, offset, left = self.sending
        while left:
            data = os.pread(fd, min(left, 1 << 18), offset)
            if not data:  # the file shrank under us
                break
            offset += len(data)
            left -= len(data)
            if not self.write(data) and not self.closed:
                self.sending = (fd, offset, left)
                self.write(self.send_file_encrypted)  # runs once the queue has drained
                return
        self.sending = None
        os.close(fd)
        if not self.closed:
            self.finished(self.keep_alive_after)

    def event_write(self):
        if self.sending is not None and self.write_buf_size == 0 and self.tls is None:
            self.send_file()
        else:
            super().event_write()

    def event_write_resumed(self):
        backend = getattr(self, "backend", None)
        if backend is not None and not backend.closed:
            backend.watch_read(True)

    def close(self, reason=""):
        if self.sending is not None:
            os.close(self.sending[0])
            self.sending = None
        backend = getattr(self, "backend", None)
        if backend is not None:
            backend.close("client_gone")
        super().close(reason)


# Small files' responses, by request target, reused for CACHE_TTL seconds
# (nginx's open_file_cache idea): a hit costs no syscall but the send.
CACHE = {}
CACHE_TTL = 1.0


def remember(target, headers, body):
    if CACHE_TTL <= 0:
        return
    if len(CACHE) >= 4096:
        CACHE.clear()
    CACHE[target] = (monotonic() + CACHE_TTL, {True: head(200, headers, True), False: head(200, headers, False)},
                     body)


_next_backend = itertools.count()


def proxy(client, req):
    backends = config["backends"]
    addr = backends[next(_next_backend) % len(backends)]
    lines = [f"{req.method} {req.target} HTTP/1.0"]
    lines += [f"{k}: {v}" for k, v in req.headers.items() if k not in HOP]
    lines += [f"X-Forwarded-For: {client.peer_ip_string()}", "Connection: close"]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body
    client.backend = danga.connect(f"tcp://{addr}", lambda sock: Backend(sock, client, req), timeout=5)
    client.backend.write(request)


class Backend(danga.Socket):
    max_idle_time = 30

    def __init__(self, sock, client, req):
        super().__init__(sock)
        self.client, self.req = client, req
        self.buf = b""
        self.left = None  # body bytes still to come; -1: until the backend closes
        self.watch_read(True)

    def event_connect_failed(self, error):
        self.bad_gateway()

    def bad_gateway(self):
        client, self.client = self.client, None
        if client is not None and not client.closed:
            client.backend = None
            client.refuse(502, keep_alive=False)

    def event_read(self):
        data = self.read(65536)
        client = self.client
        if client is None or client.closed:
            return self.close("client_gone")
        if data is None:
            if self.left is None:
                self.bad_gateway()
            elif self.left == -1:
                self.done(keep_alive=False)
            else:
                client.close("backend_truncated")
            return self.close("eof")
        if self.left is None:
            self.buf += data
            try:
                parsed = parse_response_head(self.buf)
            except HttpError:
                self.bad_gateway()
                return self.close("bad_response")
            if parsed is None:
                return
            status, _, headers, size = parsed
            data, self.buf = self.buf[size:], b""
            if self.req.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
                self.left = 0
            elif headers.get("content-length", "").isdigit():
                self.left = int(headers["content-length"])
            else:
                self.left = -1
            keep = self.req.keep_alive and self.left != -1
            fields = [(k.title(), v) for k, v in headers.items() if k not in HOP]
            client.write(head(status, fields, keep, server=False))
        if data:
            if self.left != -1:
                data = data[:self.left]
                self.left -= len(data)
            client.write(data)
        if self.left == 0:
            self.done(keep_alive=self.req.keep_alive)
        elif client.write_buf_size > BEHIND:
            self.watch_read(False)  # the client is behind: stop reading until it catches up

    def done(self, keep_alive):
        client, self.client = self.client, None
        self.close("response_done")
        client.backend = None
        client.finished(keep_alive)

    def close(self, reason=""):
        if not self.closed and self.client is not None and reason not in ("response_done", "client_gone"):
            self.bad_gateway()
        super().close(reason)


def main():
    global CACHE_TTL
    ap = argparse.ArgumentParser(description="danga web server / reverse proxy")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--root", help="serve files from this directory")
    ap.add_argument("--proxy-to", help="HOST:PORT[,HOST:PORT...] to proxy to, round-robin")
    ap.add_argument("--idle-timeout", type=float, default=30)
    ap.add_argument("--cache-ttl", type=float, default=CACHE_TTL,
                    help="seconds to reuse small files' responses (0: off)")
    ap.add_argument("--header-timeout", type=float, default=20,
                    help="seconds for the request line and headers, from the connection's start or the "
                         "request's first byte (Apache mod_reqtimeout header=20; nginx client_header_timeout, "
                         "60 s; 0: off)")
    ap.add_argument("--body-timeout", type=float, default=20,
                    help="seconds for a request body, plus 1 s per --body-min-rate bytes received "
                         "(Apache mod_reqtimeout body=20,MinRate=500; 0: off)")
    ap.add_argument("--body-min-rate", type=float, default=500,
                    help="bytes per second of body that earn it 1 s more (0: a fixed --body-timeout)")
    ap.add_argument("--keepalive-timeout", type=float, default=15,
                    help="seconds a keep-alive connection may wait for its next request (0: off); 15 as in "
                         "Apache 1.x-2.0 and the CIS benchmark's ceiling: enough for a browser's next request, "
                         "short enough that idle connections do not hold descriptors (nginx's 75 s does)")
    ap.add_argument("--send-timeout", type=float, default=60,
                    help="close a client that takes no byte of its response for this long (0: off)")
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM; default: in --tls-cert)")
    ap.add_argument("--proxy-protocol", action="store_true",
                    help="behind HAProxy (send-proxy / send-proxy-v2): each connection starts with a PROXY header")
    args = ap.parse_args()
    if bool(args.root) == bool(args.proxy_to):
        ap.error("give exactly one of --root or --proxy-to")
    if args.root:
        config["root"] = os.path.realpath(args.root)
    else:
        config["backends"] = args.proxy_to.split(",")
    HttpClient.max_idle_time = Backend.max_idle_time = args.idle_timeout
    HttpClient.send_timeout = args.send_timeout
    HttpClient.header_timeout, HttpClient.keepalive_timeout = args.header_timeout, args.keepalive_timeout
    HttpClient.body_timeout, HttpClient.body_min_rate = args.body_timeout, args.body_min_rate
    CACHE_TTL = args.cache_ttl
    scheme, tls = ("tls", {"certfile": args.tls_cert, "keyfile": args.tls_key}) if args.tls_cert else ("tcp", {})
    limit = danga.raise_fd_limit()  # 1024 is a common default: a few hundred slow clients exhaust it
    listener = danga.listen(f"{scheme}://{args.host}:{args.port}", HttpClient, backlog=4096,
                            proxy_protocol=args.proxy_protocol, **tls)
    mode = f"files from {config['root']}" if args.root else f"proxy to {args.proxy_to}"
    proto = "https" if tls else "http"
    print(f"{proto} server ({mode}; {limit} fds) listening on {listener.local_addr_string()}", flush=True)
    danga.event_loop()  # Ctrl-C ends it


if __name__ == "__main__":
    main()
