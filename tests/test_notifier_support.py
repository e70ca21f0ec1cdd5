"""Shared set-up for the notifier tests (no tests here): outbox rows, a fake clock, a loopback SMS
gateway that logs every request and answers from a script, and ``gridpay notifier`` processes."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy import insert, select

from config.clock import ManualClock
from config.notices import outbox_row, payment_received
from ledger.schema import outbox

T0 = datetime(2026, 11, 23, 2, 0, 0, tzinfo=timezone.utc)


class FakeTime(ManualClock):
    """The notifier's clock, moved by hand; calling it reads it."""

    def __init__(self, start: datetime | None = None):
        super().__init__(start or datetime.now(timezone.utc).replace(microsecond=0))

    def __call__(self) -> datetime:
        return self.at


def notice_rows(n: int, at: datetime = T0, prefix: str = "payment", start: int = 1) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        customer_no = f"01{i:08d}"
        rows.append(outbox_row(customer_no, f"138{i:08d}", prefix, f"{prefix}:{i}",
                               payment_received(customer_no, ["202610"], 37535), at))
    return rows


def add_notices(engine, n: int, at: datetime = T0, **kw) -> list[int]:
    rows = notice_rows(n, at, **kw)
    with engine.begin() as conn:
        conn.execute(insert(outbox), rows)
        refs = [r["ref"] for r in rows]
        ids = dict(conn.execute(select(outbox.c.ref, outbox.c.id).where(outbox.c.ref.in_(refs))).all())
    return [ids[r] for r in refs]


def rows_of(engine) -> dict[int, dict]:
    with engine.connect() as conn:
        return {r.id: r._asdict() for r in conn.execute(select(outbox).order_by(outbox.c.id))}


def states(engine) -> Counter:
    return Counter(r["state"] for r in rows_of(engine).values())


# ---------------------------------------------------------------------------------------------
# a loopback SMS gateway


@dataclass
class Reply:
    status: int = 200
    body: str = '{"code": "0", "msg": "ok"}'
    delay_s: float = 0.0
    headers: dict = field(default_factory=dict)
    hold: threading.Event | None = None     # answer only once this is set (or the client goes away)


@dataclass
class Seen:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    fields: dict             # the body, decoded (JSON object or form)

    @property
    def ref(self) -> str:
        return self.fields.get("ref") or self.query.get("ref", "")


class SmsGateway:
    """``script(seen, n)`` -> Reply, where n counts this ref's requests (1 for the first)."""

    def __init__(self, script: Callable[[Seen, int], Reply] | None = None):
        self.script = script or (lambda seen, n: Reply())
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_):
                pass

            def _any(self):
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                parts = urlsplit(self.path)
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    fields = json.loads(body)
                elif "form" in ctype:
                    fields = dict(parse_qsl(body.decode()))
                else:
                    fields = {}
                seen = Seen(self.command, parts.path, dict(parse_qsl(parts.query)), dict(self.headers), body, fields)
                with gateway.arrived:
                    gateway.seen.append(seen)
                    n = sum(1 for s in gateway.seen if s.ref == seen.ref)
                    gateway.arrived.notify_all()
                reply = gateway.script(seen, n)
                if reply.hold is not None:
                    reply.hold.wait(60)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                data = reply.body.encode()
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            do_POST = do_PUT = do_GET = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/sms/send"

    def __enter__(self) -> "SmsGateway":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def refs(self) -> Counter:
        with self.lock:
            return Counter(s.ref for s in self.seen)

    def wait_for(self, predicate: Callable[[list[Seen]], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not predicate(self.seen):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; the gateway saw {len(self.seen)} request(s)")
                self.arrived.wait(left)


# ---------------------------------------------------------------------------------------------
# gridpay notifier processes

STARTED = re.compile(r"gridpay notifier: name=(?P<name>\S+) sender=(?P<sender>\S+) "
                     r"metrics=http://[^:]+:(?P<port>\d+)/metrics")


def notifier_env(db_url: str, tmp_path, **notifier) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDPAY_")}
    env["GRIDPAY_DATABASE__URL"] = json.dumps(db_url)
    settings = {"metrics_port": 0, "poll_interval_s": 0.1, "sweep_interval_s": 1.0, "http_timeout_s": 5.0,
                "lease_s": 60.0, "backoff_jitter": 0.0, **notifier}
    for key, value in settings.items():
        env[f"GRIDPAY_NOTIFIER__{key.upper()}"] = json.dumps(value)
    return env


def gridpay(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridpay", *args]


class NotifierProcess:
    def __init__(self, env: dict[str, str], log_path, *args: str):
        self.env, self.log_path, self.args = env, log_path, args
        self.proc: subprocess.Popen | None = None
        self.name = ""
        self.port = 0

    def start(self, timeout: float = 60) -> "NotifierProcess":
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(gridpay("notifier", "--log-level", "DEBUG", *self.args), env=self.env,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            match = STARTED.search(line)
            if match:
                self.name, self.port = match["name"], int(match["port"])
                return self
            if time.monotonic() > deadline:
                break
        raise RuntimeError(f"notifier did not start (exit {self.proc.wait()}): {self.log_path.read_text()[-2000:]}")

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if hasattr(self, "log") and not self.log.closed:
            self.log.close()
