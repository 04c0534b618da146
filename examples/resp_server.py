"""A Redis-protocol (RESP2) key-value server on danga.

    python examples/resp_server.py --port 6380

Speaks enough Redis (RESP2; clients that default to RESP3, such as redis-py 6
and later, need ``protocol=2``) for redis-cli, redis-benchmark and clients:
PING ECHO GET SET (EX PX NX XX) DEL EXISTS INCR INCRBY DECR DECRBY MGET MSET
EXPIRE PEXPIRE TTL PTTL PERSIST KEYS FLUSHALL FLUSHDB DBSIZE SELECT QUIT
COMMAND CONFIG GET CLIENT HELLO.  Pipelined commands are parsed from one read and
answered with one write.  Keys expire lazily on access and by a sampling
timer, as Redis does.
"""
import argparse
import fnmatch
import random
import re
from time import monotonic

import danga
from resp import EMPTY_ARRAY, NIL, OK, PONG, ProtocolError, RespParser, array, bulk, error, integer

data = {}  # key -> value (bytes)
expires = {}  # key -> monotonic deadline


def alive(key):
    """The key's value, dropping it first if it has expired."""
    deadline = expires.get(key)
    if deadline is not None and deadline <= monotonic():
        del expires[key]
        data.pop(key, None)
        return None
    return data.get(key)


def expire_some():
    """Active expiry: sample keys with a deadline, drop the expired ones."""
    if expires:
        now = monotonic()
        for key in random.sample(list(expires), min(20, len(expires))):
            if expires[key] <= now:
                del expires[key]
                data.pop(key, None)
    danga.add_timer(0.1, expire_some)


def to_int(value):
    try:
        if value is None:
            return 0
        if len(value) > 20 or not re.fullmatch(rb"-?\d+", value):
            raise ValueError
        n = int(value)
        if not -(2 ** 63) <= n < 2 ** 63:
            raise ValueError
        return n
    except ValueError:
        raise CommandError("ERR value is not an integer or out of range") from None


class CommandError(Exception):
    pass


def c_ping(args):
    if len(args) > 2:
        return arity(args)
    return PONG if len(args) == 1 else bulk(args[1])


def c_echo(args):
    return bulk(args[1])


def c_get(args):
    value = alive(args[1])
    return NIL if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


def c_set(args):
    key, value = args[1], args[2]
    if len(args) == 3:  # plain SET, the common case
        data[key] = value
        if expires:
            expires.pop(key, None)
        return OK
    ttl = None
    nx = xx = False
    i = 3
    while i < len(args):
        opt = args[i].upper()
        if opt in (b"EX", b"PX") and i + 1 < len(args) and ttl is None:
            n = to_int(args[i + 1])
            if n <= 0:
                raise CommandError("ERR invalid expire time in 'set' command")
            ttl = n if opt == b"EX" else n / 1000
            i += 2
        elif opt == b"NX" and not xx:
            nx = True
            i += 1
        elif opt == b"XX" and not nx:
            xx = True
            i += 1
        else:
            raise CommandError("ERR syntax error")
    if nx or xx:
        exists = alive(key) is not None
        if (nx and exists) or (xx and not exists):
            return NIL
    data[key] = value
    if ttl is not None:
        expires[key] = monotonic() + ttl
    elif expires:
        expires.pop(key, None)
    return OK


def c_del(args):
    n = 0
    for key in args[1:]:
        if alive(key) is not None:
            del data[key]
            expires.pop(key, None)
            n += 1
    return integer(n)


def c_exists(args):
    return integer(sum(1 for key in args[1:] if alive(key) is not None))


def incr_by(key, delta):
    n = to_int(alive(key)) + delta
    if not -(2 ** 63) <= n < 2 ** 63:
        raise CommandError("ERR increment or decrement would overflow")
    data[key] = b"%d" % n
    return integer(n)


def c_incr(args):
    return incr_by(args[1], 1)


def c_decr(args):
    return incr_by(args[1], -1)


def c_incrby(args):
    return incr_by(args[1], to_int(args[2]))


def c_decrby(args):
    return incr_by(args[1], -to_int(args[2]))


def c_mget(args):
    return array([alive(k) for k in args[1:]])


def c_mset(args):
    if len(args) % 2 != 1:
        return arity(args)
    for i in range(1, len(args), 2):
        data[args[i]] = args[i + 1]
        expires.pop(args[i], None)
    return OK


def set_expiry(key, seconds):
    if alive(key) is None:
        return integer(0)
    if seconds <= 0:
        del data[key]
        expires.pop(key, None)
    else:
        expires[key] = monotonic() + seconds
    return integer(1)


def c_expire(args):
    return set_expiry(args[1], to_int(args[2]))


def c_pexpire(args):
    return set_expiry(args[1], to_int(args[2]) / 1000)


def ttl_of(key, scale):
    if alive(key) is None:
        return integer(-2)
    deadline = expires.get(key)
    if deadline is None:
        return integer(-1)
    return integer(max(0, round((deadline - monotonic()) * scale)))


def c_ttl(args):
    return ttl_of(args[1], 1)


def c_pttl(args):
    return ttl_of(args[1], 1000)


def c_persist(args):
    return integer(1 if alive(args[1]) is not None and expires.pop(args[1], None) is not None else 0)


def c_keys(args):
    pattern = args[1].decode("latin-1")
    regex = re.compile(fnmatch.translate(pattern), re.S)
    return array([k for k in list(data) if alive(k) is not None and regex.match(k.decode("latin-1"))])


def c_flushall(args):
    data.clear()
    expires.clear()
    return OK


def c_dbsize(args):
    for key in [k for k, d in expires.items() if d <= monotonic()]:
        alive(key)
    return integer(len(data))


def c_select(args):
    if args[1] != b"0":
        raise CommandError("ERR DB index is out of range")
    return OK


def c_command(args):
    return EMPTY_ARRAY


def c_config(args):
    if len(args) >= 3 and args[1].upper() == b"GET":
        known = {b"save": b"", b"appendonly": b"no", b"databases": b"1"}
        items = []
        for name, value in known.items():
            if fnmatch.fnmatchcase(name.decode(), args[2].decode("latin-1").lower()):
                items += [name, value]
        return array(items)
    raise CommandError("ERR CONFIG subcommand not supported here")


def c_hello(args):
    if len(args) > 1 and args[1] != b"2":
        raise CommandError("NOPROTO this server speaks RESP2 only")
    return array([b"server", b"danga-resp", b"version", b"1.0", b"proto", b"2", b"mode", b"standalone"])


def c_client(args):
    sub = args[1].upper() if len(args) > 1 else b""
    if sub == b"GETNAME":
        return NIL
    return OK


# name -> (handler, arity): arity n > 0 means exactly n, -n means at least n (Redis's convention)
COMMANDS = {
    b"PING": (c_ping, -1), b"ECHO": (c_echo, 2), b"GET": (c_get, 2), b"SET": (c_set, -3),
    b"DEL": (c_del, -2), b"EXISTS": (c_exists, -2), b"INCR": (c_incr, 2), b"DECR": (c_decr, 2),
    b"INCRBY": (c_incrby, 3), b"DECRBY": (c_decrby, 3), b"MGET": (c_mget, -2), b"MSET": (c_mset, -3),
    b"EXPIRE": (c_expire, 3), b"PEXPIRE": (c_pexpire, 3), b"TTL": (c_ttl, 2), b"PTTL": (c_pttl, 2),
    b"PERSIST": (c_persist, 2), b"KEYS": (c_keys, 2), b"FLUSHALL": (c_flushall, -1),
    b"FLUSHDB": (c_flushall, -1), b"DBSIZE": (c_dbsize, 1), b"SELECT": (c_select, 2),
    b"COMMAND": (c_command, -1), b"CONFIG": (c_config, -2), b"CLIENT": (c_client, -2),
    b"HELLO": (c_hello, -1),
}
COMMANDS.update({name.lower(): entry for name, entry in list(COMMANDS.items())})


def arity(args):
    return error(f"ERR wrong number of arguments for '{args[0].decode('latin-1').lower()}' command")


def unknown(args):
    name = args[0].decode("latin-1")
    rest = " ".join(f"'{a.decode('latin-1')}'" for a in args[1:])
    return error(f"ERR unknown command '{name}', with args beginning with: {rest}")


class RespClient(danga.Socket):
    write_buffer_limit = 256 * 1024 * 1024

    def __init__(self, sock):
        super().__init__(sock)
        self.parser = RespParser()
        self.watch_read(True)

    def event_read(self):
        chunk = self.read(65536)
        if chunk is None:
            return self.close("eof")
        try:
            commands = self.parser.feed(chunk)
        except ProtocolError as e:
            self.write(error(f"ERR Protocol error: {e}"))
            return self.close("protocol_error")
        if not commands:
            return
        if len(commands) == 1:
            reply = self.execute(commands[0])
            if reply is not None:
                self.write(reply)
            return
        replies = []
        for args in commands:
            reply = self.execute(args)
            if reply is None:
                break
            replies.append(reply)
        self.write(b"".join(replies))

    def execute(self, args):
        entry = COMMANDS.get(args[0]) or COMMANDS.get(args[0].upper())
        if entry is None:
            if args[0].upper() == b"QUIT":
                self.write(OK)
                self.write(lambda: self.close("quit"))
                return None
            return unknown(args)
        handler, n = entry
        if (n > 0 and len(args) != n) or (n < 0 and len(args) < -n):
            return arity(args)
        try:
            return handler(args)
        except CommandError as e:
            return error(str(e))


def main():
    ap = argparse.ArgumentParser(description="danga Redis-protocol server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=6380)
    ap.add_argument("--tls-cert", help="serve TLS (redis-cli --tls) with this certificate chain (PEM)")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM; default: in --tls-cert)")
    args = ap.parse_args()
    scheme, tls = ("tls", {"certfile": args.tls_cert, "keyfile": args.tls_key}) if args.tls_cert else ("tcp", {})
    limit = danga.raise_fd_limit()  # 1024 is a common default: a few hundred slow clients exhaust it
    listener = danga.listen(f"{scheme}://{args.host}:{args.port}", RespClient, backlog=4096, **tls)
    danga.add_timer(0.1, expire_some)
    print(f"resp server ({'TLS; ' if tls else ''}{limit} fds) listening on {listener.local_addr_string()}", flush=True)
    danga.event_loop()  # Ctrl-C ends it


if __name__ == "__main__":
    main()
