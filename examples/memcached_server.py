"""A memcached-protocol server on danga (memcached itself began at Danga Interactive).

    python examples/memcached_server.py --port 11211 -m 64 -I 1m

The text protocol: get/gets (many keys), set/add/replace/append/prepend/cas
with flags, exptime (relative, absolute past 30 days, negative: already
expired) and noreply, delete, incr/decr (64-bit, wrapping up, stopping at 0
down), touch, gat/gats, flush_all [delay], version, stats, verbosity, quit.
Values are binary-safe up to the item size limit (``-I``); a larger one is
refused and its data skipped without being buffered, and the connection
goes on.  ``-m`` bounds the memory held by items, evicting the least
recently used (counted as ``evictions`` in ``stats``).

How it uses danga: a ``Connection`` with a ``Lines`` framer; a storage
command switches the framer to raw mode for its data block
(``self.framer.expect_raw``), an oversized one skips it
(``self.framer.skip``).  Replies made while handling one read are sent
together at its end with ``writelines`` (no joining copy of the values), so
a pipelined batch costs one ``sendmsg``.  Try it with ``memcstat``,
``memccapable -a`` or ``pymemcache``.
"""
from __future__ import annotations

import argparse
import os
import time
from collections import OrderedDict
from typing import Any, List, Optional

import danga

VERSION = b"1.6.0-danga"
MAX_KEY = 250
ITEM_OVERHEAD = 64  # bytes counted per item beyond its key and value (memcached counts ~50)
RELATIVE_LIMIT = 60 * 60 * 24 * 30  # exptimes beyond 30 days are absolute Unix times
STORE = {b"set", b"add", b"replace", b"append", b"prepend", b"cas"}


class Cache:
    """The items, LRU-ordered, with memcached's accounting; no I/O.  An item
    is ``[flags, expires (Unix time, 0: never), block (value + CRLF), cas,
    the VALUE line get replies with]``."""

    def __init__(self, limit: int, item_max: int) -> None:
        self.items: "OrderedDict[bytes, list]" = OrderedDict()
        self.limit, self.item_max = limit, item_max
        self.bytes = 0
        self.cas = 0
        self.stats = dict.fromkeys(
            ("cmd_get", "cmd_set", "cmd_touch", "cmd_flush", "get_hits", "get_misses", "delete_hits",
             "delete_misses", "incr_hits", "incr_misses", "decr_hits", "decr_misses", "cas_hits", "cas_misses",
             "cas_badval", "touch_hits", "touch_misses", "evictions", "total_items", "expired_unfetched"), 0)

    def get(self, key: bytes, now: float) -> Optional[list]:
        item = self.items.get(key)
        if item is None or (item[1] and item[1] <= now and self.expire(key)):
            return None
        self.items.move_to_end(key)
        return item

    def expire(self, key: bytes) -> bool:
        """Drop an item found past its expiry time (True, for the callers' tests)."""
        self.remove(key)
        return True

    def remove(self, key: bytes) -> None:
        item = self.items.pop(key)
        self.bytes -= len(key) + len(item[2]) + ITEM_OVERHEAD

    def store(self, key: bytes, flags: int, expires: float, block: bytes) -> bool:
        """Put an item; False when it can never fit in the memory limit."""
        size = len(key) + len(block) + ITEM_OVERHEAD
        if size > self.limit:
            return False
        if key in self.items:
            self.remove(key)
        self.cas += 1
        self.items[key] = [flags, expires, block, self.cas, b"VALUE %s %d %d\r\n" % (key, flags, len(block) - 2)]
        self.bytes += size
        self.stats["total_items"] += 1
        while self.bytes > self.limit:
            self.remove(next(iter(self.items)))
            self.stats["evictions"] += 1
        return True

    def flush(self) -> None:
        self.items.clear()
        self.bytes = 0


def expiry(exptime: int, now: float) -> float:
    """memcached's exptime: 0 never; negative: already expired; up to 30
    days: seconds from now; beyond: an absolute Unix time."""
    if exptime == 0:
        return 0.0
    if exptime < 0:
        return now - 1
    return float(exptime) if exptime > RELATIVE_LIMIT else now + exptime


def parse_size(text: str) -> int:
    """``1m``, ``512k``, ``1048576`` as bytes (memcached's ``-I``)."""
    units = {"k": 1 << 10, "m": 1 << 20}
    t = text.strip().lower()
    return int(t[:-1]) * units[t[-1]] if t and t[-1] in units else int(t)


def _valid_key(key: bytes) -> bool:
    # As memcached: a key is any run of bytes between separators (memcaslap's
    # start with control bytes), at most 250 of them.
    return len(key) <= MAX_KEY


class Memcached(danga.Connection):
    cache: Cache  # set by serve()
    started = time.time()
    framer = danga.Lines(max_size=64 * 1024)  # each connection gets its own copy

    def post_init(self) -> None:
        self.out: List[bytes] = []
        self.pending: Any = None  # (cmd, key, flags, expires, nbytes, cas, noreply) awaiting its data block
        self.framer.max_raw = self.cache.item_max + 2

    # One read: handle every whole command in it, then send all replies at once.
    def event_read(self) -> None:
        self.now = time.time()
        super().event_read()
        out = self.out
        if out and not self.closed:
            self.out = []
            if len(out) == 1:
                self.write(out[0])
            else:
                self.writelines(out)

    def receive_data(self, line: bytes) -> None:
        if self.pending is not None:
            self.finish_store(line)
            return
        parts = line.split()
        if not parts:
            self.out.append(b"ERROR\r\n")
            return
        cmd = parts[0]
        if cmd == b"get" or cmd == b"gets":
            self.get(parts[1:], cmd == b"gets")
        elif cmd in STORE:
            self.begin_store(cmd, parts)
        else:
            handler = self.COMMANDS.get(cmd)
            if handler is None:
                self.out.append(b"ERROR\r\n")
            else:
                handler(self, parts)

    # -- retrieval ------------------------------------------------------------------------

    def get(self, keys: List[bytes], with_cas: bool, touch_to: Optional[float] = None) -> None:
        if not keys:
            self.out.append(b"ERROR\r\n")
            return
        cache, out, now = self.cache, self.out, self.now
        items = cache.items
        hits = 0
        for key in keys:
            item = items.get(key)  # Cache.get, inlined: this is the hot loop
            if item is None or (item[1] and item[1] <= now and cache.expire(key)):
                continue
            items.move_to_end(key)
            hits += 1
            if touch_to is not None:
                item[1] = touch_to
            if with_cas:
                out.append(b"VALUE %s %d %d %d\r\n" % (key, item[0], len(item[2]) - 2, item[3]))
            else:
                out.append(item[4])
            out.append(item[2])
        out.append(b"END\r\n")
        stats = cache.stats
        stats["cmd_get"] += len(keys)
        stats["get_hits"] += hits
        stats["get_misses"] += len(keys) - hits

    def gat(self, parts: List[bytes]) -> None:
        try:
            exptime = int(parts[1])
        except (IndexError, ValueError):
            self.out.append(b"CLIENT_ERROR bad command line format\r\n")
            return
        self.cache.stats["cmd_touch"] += 1
        self.get(parts[2:], parts[0] == b"gats", expiry(exptime, self.now))

    # -- storage --------------------------------------------------------------------------

    def begin_store(self, cmd: bytes, parts: List[bytes]) -> None:
        want = 7 if cmd == b"cas" else 6
        noreply = len(parts) == want and parts[-1] == b"noreply"
        try:
            if len(parts) not in (want - 1, want) or (len(parts) == want and not noreply):
                raise ValueError
            key = parts[1]
            flags, exptime, nbytes = int(parts[2]), int(parts[3]), int(parts[4])
            cas = int(parts[5]) if cmd == b"cas" else 0
            if nbytes < 0 or not 0 <= flags < 1 << 32 or not _valid_key(key):
                raise ValueError
        except ValueError:
            self.out.append(b"CLIENT_ERROR bad command line format\r\n")
            return
        if nbytes > self.cache.item_max:
            self.framer.skip(nbytes + 2)  # never buffered
            if cmd == b"set" and key in self.cache.items:
                self.cache.remove(key)  # as memcached does: the old value is not kept
            self.out.append(b"SERVER_ERROR object too large for cache\r\n")
            return
        self.pending = (cmd, key, flags, expiry(exptime, self.now), nbytes, cas, noreply)
        self.framer.expect_raw(nbytes + 2)

    def finish_store(self, block: bytes) -> None:
        cmd, key, flags, expires, nbytes, cas, noreply = self.pending
        self.pending = None
        if block[-2:] != b"\r\n":
            self.out.append(b"CLIENT_ERROR bad data chunk\r\n")
            return
        cache = self.cache
        cache.stats["cmd_set"] += 1
        item = cache.get(key, self.now)
        if cmd == b"set":
            reply = self._put(key, flags, expires, block)
        elif cmd == b"add":
            reply = b"NOT_STORED\r\n" if item is not None else self._put(key, flags, expires, block)
        elif cmd == b"replace":
            reply = b"NOT_STORED\r\n" if item is None else self._put(key, flags, expires, block)
        elif cmd == b"cas":
            if item is None:
                cache.stats["cas_misses"] += 1
                reply = b"NOT_FOUND\r\n"
            elif item[3] != cas:
                cache.stats["cas_badval"] += 1
                reply = b"EXISTS\r\n"
            else:
                cache.stats["cas_hits"] += 1
                reply = self._put(key, flags, expires, block)
        elif item is None:  # append / prepend need an item
            reply = b"NOT_STORED\r\n"
        else:
            joined = item[2][:-2] + block if cmd == b"append" else block[:-2] + item[2]
            if len(joined) - 2 > cache.item_max:
                reply = b"SERVER_ERROR object too large for cache\r\n"
            else:
                reply = self._put(key, item[0], item[1], joined)
        if not noreply:
            self.out.append(reply)

    def _put(self, key: bytes, flags: int, expires: float, block: bytes) -> bytes:
        if self.cache.store(key, flags, expires, block):
            return b"STORED\r\n"
        return b"SERVER_ERROR out of memory storing object\r\n"

    # -- the other commands ---------------------------------------------------------------

    def reply(self, parts: List[bytes], text: bytes, args: int) -> None:
        """Send ``text`` unless the command ends with ``noreply`` after ``args`` arguments."""
        if not (len(parts) == args + 2 and parts[-1] == b"noreply"):
            self.out.append(text)

    def delete(self, parts: List[bytes]) -> None:
        if len(parts) < 2 or len(parts) > 4 or (len(parts) == 4 and parts[3] != b"noreply") \
                or (len(parts) >= 3 and parts[2] not in (b"0", b"noreply")):
            self.out.append(b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n")
            return
        noreply = parts[-1] == b"noreply"
        hit = self.cache.get(parts[1], self.now) is not None
        if hit:
            self.cache.remove(parts[1])
        self.cache.stats["delete_hits" if hit else "delete_misses"] += 1
        if not noreply:
            self.out.append(b"DELETED\r\n" if hit else b"NOT_FOUND\r\n")

    def incr(self, parts: List[bytes]) -> None:
        name = "incr" if parts[0] == b"incr" else "decr"
        try:
            key, delta = parts[1], int(parts[2])
            if not 0 <= delta < 1 << 64 or not parts[2].isdigit():
                raise ValueError
        except (IndexError, ValueError):
            self.out.append(b"CLIENT_ERROR invalid numeric delta argument\r\n")
            return
        item = self.cache.get(key, self.now)
        if item is None:
            self.cache.stats[name + "_misses"] += 1
            self.reply(parts, b"NOT_FOUND\r\n", 2)
            return
        digits = item[2][:-2]
        if not digits.isdigit() or len(digits) > 20 or int(digits) >= 1 << 64:
            self.out.append(b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
            return
        value = (int(digits) + delta) % (1 << 64) if name == "incr" else max(int(digits) - delta, 0)
        self.cache.stats[name + "_hits"] += 1
        item[2] = b"%d\r\n" % value
        item[4] = b"VALUE %s %d %d\r\n" % (key, item[0], len(item[2]) - 2)
        self.cache.bytes += len(item[2]) - len(digits) - 2
        self.cache.cas += 1
        item[3] = self.cache.cas
        self.reply(parts, b"%d\r\n" % value, 2)

    def touch(self, parts: List[bytes]) -> None:
        try:
            key, exptime = parts[1], int(parts[2])
        except (IndexError, ValueError):
            self.out.append(b"CLIENT_ERROR bad command line format\r\n")
            return
        self.cache.stats["cmd_touch"] += 1
        item = self.cache.get(key, self.now)
        if item is not None:
            item[1] = expiry(exptime, self.now)
        self.cache.stats["touch_hits" if item is not None else "touch_misses"] += 1
        self.reply(parts, b"TOUCHED\r\n" if item is not None else b"NOT_FOUND\r\n", 2)

    def flush_all(self, parts: List[bytes]) -> None:
        args = [p for p in parts[1:] if p != b"noreply"]
        try:
            delay = int(args[0]) if args else 0
        except ValueError:
            self.out.append(b"CLIENT_ERROR bad command line format\r\n")
            return
        self.cache.stats["cmd_flush"] += 1
        if delay > 0:
            danga.add_timer(delay, self.cache.flush)  # everything stored up to then goes
        else:
            self.cache.flush()
        if parts[-1] != b"noreply":
            self.out.append(b"OK\r\n")

    def version(self, parts: List[bytes]) -> None:
        self.out.append(b"VERSION " + VERSION + b"\r\n")  # memcached ignores arguments

    def verbosity(self, parts: List[bytes]) -> None:
        if parts[-1] == b"noreply":
            return  # memcached says nothing, even to a malformed one
        self.out.append(b"OK\r\n" if len(parts) == 2 and parts[1].isdigit() else b"ERROR\r\n")

    def stats(self, parts: List[bytes]) -> None:
        if len(parts) > 1:
            if parts[1] == b"reset":
                for k in self.cache.stats:
                    if k != "total_items":
                        self.cache.stats[k] = 0
                self.out.append(b"RESET\r\n")
            else:
                self.out.append(b"ERROR\r\n")
            return
        c, now = self.cache, time.time()
        ru = os.times()
        values = {
            "pid": os.getpid(), "uptime": int(now - self.started), "time": int(now), "version": VERSION.decode(),
            "pointer_size": 64, "rusage_user": f"{ru.user:.6f}", "rusage_system": f"{ru.system:.6f}",
            "curr_connections": self.listener.connections if self.listener else 0,
            "total_connections": self.listener.accepted if self.listener else 0,
            "rejected_connections": self.listener.rejected if self.listener else 0,
            **c.stats, "curr_items": len(c.items), "bytes": c.bytes, "limit_maxbytes": c.limit,
            "item_size_max": c.item_max, "threads": 1,
        }
        self.out.extend(b"STAT %s %s\r\n" % (k.encode(), str(v).encode()) for k, v in values.items())
        self.out.append(b"END\r\n")

    def quit(self, parts: List[bytes]) -> None:
        out, self.out = self.out, []
        self.writelines(out)
        self.close_after_writing()

    listener: Optional[danga.Listener] = None
    COMMANDS = {b"delete": delete, b"incr": incr, b"decr": incr, b"touch": touch, b"gat": gat, b"gats": gat,
                b"flush_all": flush_all, b"version": version, b"verbosity": verbosity, b"stats": stats,
                b"quit": quit}


def serve(host: str, port: int, memory_mb: int = 64, item_max: int = 1 << 20, max_connections: int = 1024,
          idle_timeout: float = 0) -> danga.Listener:
    """Listen for memcached clients (does not run the loop)."""
    Memcached.cache = Cache(memory_mb << 20, item_max)
    Memcached.max_idle_time = idle_timeout
    lst = danga.listen((host, port), Memcached, max_connections=max_connections,
                       reject=b"SERVER_ERROR Too many open connections\r\n")
    Memcached.listener = lst  # type: ignore[assignment]
    return lst


def main() -> None:
    ap = argparse.ArgumentParser(description="memcached-protocol server on danga")
    ap.add_argument("-p", "--port", type=int, default=11211)
    ap.add_argument("-l", "--listen", default="127.0.0.1", help="address to listen on")
    ap.add_argument("-m", "--memory-limit", type=int, default=64, help="MB of items before LRU eviction")
    ap.add_argument("-I", "--max-item-size", default="1m", help="largest value (1m, 512k, bytes)")
    ap.add_argument("-c", "--conn-limit", type=int, default=1024, help="max simultaneous connections")
    ap.add_argument("--idle-timeout", type=float, default=0, help="close clients idle this long (0: never)")
    args = ap.parse_args()
    lst = serve(args.listen, args.port, args.memory_limit, parse_size(args.max_item_size), args.conn_limit,
                args.idle_timeout)
    print(f"memcached server listening on {lst.local_addr_string()}", flush=True)
    danga.event_loop()


if __name__ == "__main__":
    main()
