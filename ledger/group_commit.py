"""Group commit: many postings, one durable transaction, outcomes only after the commit.

A durable commit costs a flush to disk (SQLite WAL, synchronous=FULL) or a WAL flush and a round
trip (PostgreSQL): a few thousand per second at best, whatever is in them, while rows inside one
commit are cheap. ``GroupCommitter`` has one writer thread that takes whatever postings are
queued (up to ``max_batch``, waiting at most ``max_wait_s`` for company when the queue runs dry),
decides and writes them all in ONE transaction (``ledger.postings.apply_batch``), commits, and only
then resolves the futures: nobody sees an outcome of a posting that is not durable.

Failures (``Poster.process``):
- deadlock / serialization failure / SQLite busy: the whole batch is run again (a few times);
- IntegrityError (another process took a request identity or an RRN between our read and our
  insert): the batch is run again one posting at a time, so the conflicting posting finds the
  other's row and gets its replay or 94 while the others succeed;
- the database is unreachable or broken: every posting of the batch gets 96 (nothing applied) and
  the committer carries on; the pool reconnects when the database is back;
- a bug in deciding one posting: the batch is run again one at a time so only that one gets 96.
If the connection breaks during COMMIT itself the outcome is unknowable: the postings get 96, the
bank repeats them (docs/spec/INTERFACE.md §4.7), and a repeat of a request that did commit replays its stored answer.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from datetime import datetime
from typing import Callable, Sequence

from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from ledger.business_date import BusinessCalendar, utcnow
from ledger.postings import Outcome, Posting, apply_batch, system_error

log = logging.getLogger("gridpay.ledger.group_commit")

RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available


def _retryable(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES or getattr(orig, "pgcode", None) in RETRYABLE_SQLSTATES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "deadlock" in text or "ora-00060" in text or "ora-08177" in text


class Poster:
    """Runs batches of postings in transactions, with the retry rules above. Not thread-safe:
    one Poster per writer thread."""

    def __init__(self, engine, calendar: BusinessCalendar, clock: Callable[[], datetime] = utcnow,
                 retries: int = 3):
        self.engine, self.calendar, self.clock, self.retries = engine, calendar, clock, retries

    def _transaction(self, postings: Sequence[Posting]) -> list[Outcome]:
        for attempt in range(self.retries):
            try:
                with self.engine.begin() as conn:
                    return apply_batch(conn, postings, self.calendar, self.clock())
            except IntegrityError:
                raise
            except DBAPIError as exc:
                if attempt + 1 < self.retries and (_retryable(exc) or (exc.connection_invalidated and attempt == 0)):
                    log.info("retrying a batch of %d after %s", len(postings), type(exc.orig).__name__)
                    time.sleep(0.005 * (attempt + 1))
                    continue
                raise
        raise AssertionError("unreachable")

    def process(self, postings: Sequence[Posting]) -> list[Outcome]:
        if not postings:
            return []
        try:
            return self._transaction(postings)
        except IntegrityError as exc:
            log.info("integrity conflict in a batch of %d (%s): posting one at a time", len(postings),
                     str(exc.orig).splitlines()[0])
        except SQLAlchemyError as exc:
            log.error("database failure, %d postings answered 96: %s", len(postings), str(exc).splitlines()[0])
            return [system_error()] * len(postings)
        except Exception:  # noqa: BLE001 - a bug deciding some posting: find which, keep the others
            log.exception("unexpected error in a batch of %d: posting one at a time", len(postings))
        return self._singly(postings)

    def _singly(self, postings: Sequence[Posting]) -> list[Outcome]:
        out: list[Outcome] = []
        broken = False
        for p in postings:
            if broken:
                out.append(system_error())
                continue
            outcome = None
            for _ in range(self.retries):
                try:
                    outcome = self._transaction([p])[0]
                    break
                except IntegrityError as exc:  # the other's row is committed now: the next try sees it
                    log.info("integrity conflict posting %r: %s", p, str(exc.orig).splitlines()[0])
                except SQLAlchemyError as exc:
                    log.error("database failure posting singly: %s", str(exc).splitlines()[0])
                    broken = True
                    break
                except Exception:  # noqa: BLE001
                    log.exception("cannot post %r", p)
                    outcome = system_error("internal error: nothing was applied")
                    break
            out.append(outcome or system_error())
        return out


class PostingWorker:
    """The group commit as a ``ledger.batch_process`` worker: each batch is one transaction of
    ``Poster.process``, in a child process of its own. ``config``: url, statement_timeout_s,
    timezone, cutoff."""

    def __init__(self, config: dict):
        from ledger.db import make_engine

        self.engine = make_engine(config["url"], pool_size=1, statement_timeout_s=config.get("statement_timeout_s"),
                                  pre_ping=False)
        self.poster = Poster(self.engine, BusinessCalendar(config["timezone"], config["cutoff"]))

    def process(self, postings: Sequence[Posting]) -> list[Outcome]:
        return self.poster.process(postings)

    def close(self) -> None:
        self.engine.dispose()


_STOP = object()


class GroupCommitter:
    """Thread-safe front of a single writer thread; see the module docstring."""

    def __init__(self, engine, calendar: BusinessCalendar, max_batch: int = 256, max_wait_s: float = 0.001,
                 on_commit: Callable[[int, float], None] | None = None,
                 clock: Callable[[], datetime] | None = None, name: str = "ledger-committer"):
        assert max_batch >= 1
        self.engine = engine
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_commit = on_commit
        self.poster = Poster(engine, calendar, clock or utcnow)
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._abandon = False
        self.batches = 0
        self.postings = 0

    def start(self) -> "GroupCommitter":
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return self

    def submit(self, posting: Posting) -> "Future[Outcome]":
        fut: Future = Future()
        with self._lock:
            if self._stopping or self._thread is None:
                fut.set_running_or_notify_cancel()
                fut.set_result(system_error("ledger not running: nothing was applied"))
                return fut
            self._queue.put((posting, fut))
        return fut

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking postings; with drain, commit everything queued first, else answer it 96."""
        with self._lock:
            if self._stopping:
                thread = self._thread
            else:
                self._stopping = True
                self._abandon = not drain
                thread = self._thread
                self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------ the writer thread
    def _gather(self, first) -> tuple[list, bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                break
            batch, stop = self._gather(item)
            if self._abandon:
                self._answer_all(batch, system_error("ledger stopping: nothing was applied"))
                continue
            live = [(p, f) for p, f in batch if f.set_running_or_notify_cancel()]  # cancelled while queued: drop
            if not live:
                continue
            started = time.perf_counter()
            try:
                outcomes = self.poster.process([p for p, _ in live])
            except BaseException as exc:  # noqa: BLE001 - never leave a future unresolved
                log.exception("group commit failed")
                outcomes = [system_error(f"internal error: {type(exc).__name__}")] * len(live)
            elapsed = time.perf_counter() - started
            self.batches += 1
            self.postings += len(live)
            for (_, fut), outcome in zip(live, outcomes):
                fut.set_result(outcome)
            if self.on_commit is not None:
                try:
                    self.on_commit(len(live), elapsed)
                except Exception:  # noqa: BLE001 - a metrics hook must not stop the ledger
                    log.exception("on_commit hook failed")
        # anything left behind a non-draining stop
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._answer_all([item], system_error("ledger stopping: nothing was applied"))

    @staticmethod
    def _answer_all(batch, outcome: Outcome) -> None:
        for _, fut in batch:
            if fut.set_running_or_notify_cancel():
                fut.set_result(outcome)
