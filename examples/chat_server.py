"""A line-based chat server: every line a client sends goes to all the others.

    python examples/chat_server.py --port 7001

Connect with ``nc 127.0.0.1 7001``.  The first line is your name; ``/who``
lists who is here, ``/quit`` leaves.  Uses Connection, the Lines framer and
Channel broadcast (a client that stops reading is dropped, not buffered for).
"""
import argparse

import danga

room = danga.Channel("lobby", framer=danga.Lines(max_size=1024), max_backlog=256 * 1024)


class Chatter(danga.Connection):
    framer = lambda: danga.Lines(max_size=1024)  # noqa: E731  one parser per connection
    max_idle_time = 600

    def post_init(self):
        self.name = None
        self.send_data(b"welcome; your name?")

    def receive_data(self, line):
        text = line.decode("utf-8", "replace").strip()
        if self.name is None:
            if not text or " " in text or len(text) > 32:
                self.send_data(b"a name is one word of at most 32 characters; your name?")
                return
            self.name = text
            room.broadcast(f"* {self.name} joined".encode())
            room.join(self)
            self.send_data(f"hello {self.name}; {len(room)} here".encode())
        elif text == "/who":
            self.send_data(("here: " + ", ".join(m.name for m in room)).encode())
        elif text == "/quit":
            self.send_data(b"bye")
            self.close_after_writing()
        elif text:
            room.broadcast(f"<{self.name}> {text}".encode(), exclude=self)

    def unbind(self, reason):
        if self.name is not None and room.leave(self):
            room.broadcast(f"* {self.name} left".encode())


def main():
    ap = argparse.ArgumentParser(description="danga chat server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7001)
    args = ap.parse_args()
    listener = danga.listen(f"tcp://{args.host}:{args.port}", Chatter, max_connections=10000)
    print(f"chat server listening on {listener.local_addr_string()}", flush=True)
    danga.event_loop()  # Ctrl-C ends it


if __name__ == "__main__":
    main()
