"""Child processes of the whole-system runs (scripts/e2e_day.py, scripts/bench/fullscale.py): each in a
process group of its own, its stdout and stderr in the run's log directory, restartable as it was."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gridpay(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridpay", *args]


class SchemaOfItsOwn:
    """Mixed into a whole-system run: its own PostgreSQL schema on the server ``args.pg_url`` (apart
    from other work there), its URL (``url``) and an engine on it (``db``), queried with ``q``."""

    def open_schema(self, name: str, create: bool = True) -> None:
        """Make the schema ``name`` (unless ``create`` is false: it exists) and open an engine on it."""
        from sqlalchemy import create_engine, text

        from ledger.db import make_engine

        self.schema = name
        if create:
            admin = create_engine(self.args.pg_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'create schema "{name}"'))
            admin.dispose()
        sep = "&" if "?" in self.args.pg_url else "?"
        self.url = f"{self.args.pg_url}{sep}options=-csearch_path%3D{name}"
        self.db = make_engine(self.url)

    def close_schema(self, keep: bool) -> None:
        """Close the engine; drop the schema and all in it unless ``keep``."""
        from sqlalchemy import create_engine, text

        self.db.dispose()
        if keep:
            log(f"schema {self.schema} kept")
            return
        admin = create_engine(self.args.pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'drop schema "{self.schema}" cascade'))
        admin.dispose()

    def q(self, sql: str, **params) -> list:
        """The rows of one statement, in a connection of its own."""
        from sqlalchemy import text

        with self.db.connect() as conn:
            return conn.execute(text(sql), params).all()


class Proc:
    """A child process, its command and environment kept so that it can be restarted as it was."""

    def __init__(self, name: str, args: list[str], env: dict, logs: Path, ready: str | None):
        self.name, self.args, self.env, self.logs, self.ready = name, args, env, logs, ready
        self.p: subprocess.Popen | None = None
        self.starts = 0
        self.kills = 0
        self.first_line = ""

    def start(self, timeout: float = 60, wait: bool = True) -> "Proc":
        self.launch()
        if wait:
            self.wait_ready(timeout)
        return self

    def launch(self) -> None:
        self.starts += 1
        out = self.logs / f"{self.name}.{self.starts}.out"
        err = self.logs / f"{self.name}.{self.starts}.err"
        self.out_path = out
        self.err_path = err
        self.p = subprocess.Popen(self.args, env=self.env, stdout=open(out, "w"), stderr=open(err, "w"),
                                  cwd=ROOT, start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> "Proc":
        out, err = self.out_path, self.err_path
        if self.ready:
            end = time.monotonic() + timeout
            while True:
                text = out.read_text()
                if re.search(self.ready, text):
                    self.first_line = text.splitlines()[0] if text else ""
                    break
                if self.p.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(f"{self.name} did not start (exit {self.p.poll()}): {err.read_text()[-2000:]}")
                time.sleep(0.05)
        return self

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def kill9(self) -> None:
        self.kills += 1
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(30)

    def stop(self, timeout: float = 60) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            return -999

    def kill_group(self) -> None:
        """SIGKILL to the process and whatever it started (a gateway's or an engine's workers): its
        group is its own (start_new_session), so nothing of it is left behind."""
        if self.p is None:
            return
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            pass

    def output(self) -> str:
        return self.out_path.read_text()


def drop_file(drop: Path, name: str, data: bytes) -> None:
    """A file into the watcher's incoming directory, whole (written aside, then renamed)."""
    part = drop / "incoming" / f".{name}.part"
    part.write_bytes(data)
    part.rename(drop / "incoming" / name)


def wait_dropped(drop: Path, names: list[str], timeout: float = 90) -> None:
    """Until the watcher has processed every one of ``names``; an error when it rejects one."""
    end = time.monotonic() + timeout
    while True:
        done = {n for n in names if (drop / "processed" / n).exists()}
        rejected = [n for n in names if any(p.name.startswith(n) for p in (drop / "rejected").iterdir())]
        if rejected:
            errs = "; ".join(p.read_text()[:1500] for p in (drop / "rejected").glob("*.error.txt"))
            raise RuntimeError(f"the watcher rejected {rejected}: {errs}")
        if len(done) == len(names) and not any((drop / "incoming" / n).exists() for n in names):
            return
        if time.monotonic() > end:
            raise RuntimeError(f"the watcher did not process {sorted(set(names) - done)} in {timeout:.0f} s")
        time.sleep(0.2)


def make_drop_dir(drop: Path) -> Path:
    for d in ("incoming", "outgoing", "processed", "rejected"):
        (drop / d).mkdir(parents=True, exist_ok=True)
    return drop
