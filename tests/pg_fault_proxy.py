"""A TCP proxy in front of PostgreSQL that loses a write transaction's COMMIT, for real.

Armed, it watches each connection: once the open transaction on it has written (the server has
answered an INSERT, or the client has sent one: a write transaction, the ledger's group commit),
the client's next ``COMMIT`` (psycopg sends it as a simple-protocol Query, or in a pipeline with
the last writes, ``runtime.bulk_sql.Writes.flush(commit=True)``, as an extended-protocol Parse) is
- ``"answer_lost"``: forwarded; the server commits, and its answer is swallowed - the client's
  connection is cut instead: the COMMIT's answer never came;
- ``"never_sent"``: not forwarded; both sides are cut: the server rolls the transaction back. With
  ``keep_server`` only the client's side is cut: the server never learns that the client is gone,
  and its backend stays idle in the transaction, holding its locks (a half-open connection).
Then the database is unreachable for ``down_s`` seconds: every connection through the proxy is
cut and new ones are closed as soon as they are accepted. Runs in threads of its own, so it
serves both plain tests and tests whose reactor is the gateway's.
"""
from __future__ import annotations

import selectors
import socket
import threading
import time

from sqlalchemy.engine import make_url

COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"        # Query, length 11, "COMMIT"
PIPELINED_COMMIT = b"P\x00\x00\x00\x0e\x00COMMIT\x00\x00\x00"   # Parse, length 14, unnamed, "COMMIT", no parameters
INSERT_SENT = b"INSERT INTO "                   # a statement the client sends that writes
COMMITTED = b"C\x00\x00\x00\x0bCOMMIT\x00"     # CommandComplete, length 11, "COMMIT"
INSERTED = b"INSERT 0 "                         # a CommandComplete tag of an INSERT
IDLE = b"Z\x00\x00\x00\x05I"                    # ReadyForQuery, not in a transaction
TAIL = 16                                       # bytes kept to find a pattern cut across two reads


def _last(seen: bytes, pattern: bytes, fresh: int) -> int:
    """Where the last occurrence of pattern ends, if it ends in the last ``fresh`` bytes; else -1."""
    end = seen.rfind(pattern) + len(pattern)
    return end if end >= len(pattern) and end > len(seen) - fresh else -1


class PgFaultProxy:
    def __init__(self, url: str):
        target = make_url(url)
        self.target = (target.host or "127.0.0.1", target.port or 5432)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = target.set(host="127.0.0.1", port=self.listener.getsockname()[1]).render_as_string(
            hide_password=False)
        self.lock = threading.Lock()
        self.armed: tuple[str, float, bool] | None = None
        self.kept: list[socket.socket] = []
        self.fired = threading.Event()
        self.down_until = 0.0
        self._down_s, self._keep_server = 0.0, False
        self.links: set[_Link] = set()
        self.closed = False
        threading.Thread(target=self._accept, name="pg-fault-proxy", daemon=True).start()

    def arm(self, mode: str, down_s: float, keep_server: bool = False) -> None:
        assert mode in ("answer_lost", "never_sent")
        with self.lock:
            self.fired.clear()
            self.armed = (mode, down_s, keep_server)

    def down(self) -> bool:
        return time.monotonic() < self.down_until

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for link in list(self.links):
            link.cut()
        for sock in self.kept:
            _abort(sock)

    # --- internals -------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down():
                _abort(client)
                continue
            try:
                server = socket.create_connection(self.target)
            except OSError:
                _abort(client)
                continue
            link = _Link(self, client, server)
            with self.lock:
                self.links.add(link)
            threading.Thread(target=link.run, name="pg-fault-link", daemon=True).start()

    def take(self) -> str | None:
        """The armed fault, for the link about to commit a write transaction (at most one fires)."""
        with self.lock:
            if self.armed is None:
                return None
            mode, down_s, keep_server = self.armed
            self.armed = None
            self._down_s, self._keep_server = down_s, keep_server
            return mode

    def fire(self, link: "_Link") -> None:
        """The fault happened on link: cut it and every other one, refuse connections for a while."""
        self.down_until = time.monotonic() + self._down_s
        if self._keep_server:
            self.kept.append(link.server)
            link.server = None
        for other in list(self.links):
            other.cut()
        self.fired.set()


def _abort(sock: socket.socket) -> None:
    """Close with a reset, as a connection lost in the network looks."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()


class _Link:
    def __init__(self, proxy: PgFaultProxy, client: socket.socket, server: socket.socket):
        self.proxy, self.client, self.server = proxy, client, server
        self.wrote = False          # the open transaction wrote: an INSERT sent or answered
        self.swallow = False        # the COMMIT went through: its answer must not
        self.dead = False
        self.tails = {client: b"", server: b""}

    def cut(self) -> None:
        if not self.dead:
            self.dead = True
            for sock in (self.client, self.server):
                if sock is not None:
                    _abort(sock)
        with self.proxy.lock:
            self.proxy.links.discard(self)

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.client, selectors.EVENT_READ)
        sel.register(self.server, selectors.EVENT_READ)
        try:
            while not self.dead:
                for key, _ in sel.select(timeout=0.2):
                    sock = key.fileobj
                    data = sock.recv(65536)
                    if not data:
                        self.cut()
                        return
                    seen = self.tails[sock] + data
                    self.tails[sock] = seen[-TAIL:]
                    if sock is self.server:
                        self._from_server(data, seen, len(data))
                    else:
                        self._from_client(data, seen, len(data))
                    if self.dead:
                        return
        except (OSError, ValueError):   # cut from another thread while selecting or reading
            self.cut()
        finally:
            sel.close()

    def _from_server(self, data: bytes, seen: bytes, fresh: int) -> None:
        if self.swallow:
            if _last(seen, COMMITTED, fresh) >= 0:   # the server has committed: the client never hears it
                self.proxy.fire(self)
            return
        inserted, idle = _last(seen, INSERTED, fresh), _last(seen, IDLE, fresh)
        if inserted >= 0 or idle >= 0:
            self.wrote = inserted > idle
        self.client.sendall(data)

    def _from_client(self, data: bytes, seen: bytes, fresh: int) -> None:
        if _last(seen, INSERT_SENT, fresh) >= 0:
            self.wrote = True
        if self.wrote and (_last(seen, COMMIT, fresh) >= 0 or _last(seen, PIPELINED_COMMIT, fresh) >= 0):
            mode = self.proxy.take()
            if mode == "never_sent":
                self.proxy.fire(self)
                return
            if mode == "answer_lost":
                self.swallow = True
        self.server.sendall(data)
