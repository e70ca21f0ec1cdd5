"""The gateway's door into the ledger: database work off the reactor, answers as Deferreds.

Inquiries and key persistence run on a thread pool; postings go to the ledger's group
committer. A request whose database work has not finished within the bank's timeout is
answered 96 only when nothing can have been applied: a read, or a posting still waiting in
the committer's queue (cancelled there). A posting already inside a commit is waited for.
"""
from __future__ import annotations

import logging
import threading

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from datetime import datetime, timezone

from ledger.db import read_only
from ledger.inquiry import inquire_many
from ledger.postings import Outcome

log = logging.getLogger("gridpay.ledger_port")
UNAVAILABLE = "database unavailable: nothing was applied"


class SystemError96:
    response_code = "96"
    detail = UNAVAILABLE


class LedgerPort:
    def __init__(self, reactor, engine, committer, calendar, pool_size: int = 4, max_batch: int = 256):
        self.reactor = reactor
        self.engine = engine
        self.calendar = calendar
        self.committer = committer
        # Python threads share one interpreter lock: a few threads doing batched work beat many doing single rows.
        self.pool = ThreadPool(minthreads=1, maxthreads=min(pool_size, 4), name="gridpay-db")
        self.reader = InquiryReader(self.run, self._read, max_batch=max_batch)
        self.outcomes = ToReactor(reactor, self._fire)

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self.pool.stop()

    def run(self, fn, *args) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self.pool, fn, *args)

    def inquire(self, customer_no: str, at, timeout_s: float = 10.0) -> defer.Deferred:
        d = self.reader.inquire(customer_no)
        d.addTimeout(timeout_s, self.reactor)
        d.addErrback(self._read_failed)
        return d

    def _read(self, customer_nos: list[str]) -> dict:
        with read_only(self.engine.connect()) as conn:
            if conn.dialect.name == "postgresql":  # bills and prepaid balances from one snapshot
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return inquire_many(conn, customer_nos, datetime.now(timezone.utc), self.calendar)

    def _read_failed(self, failure):
        log.warning("inquiry failed: %s", failure.getErrorMessage() or failure.type.__name__)
        return SystemError96()

    def post(self, posting, timeout_s: float = 10.0) -> defer.Deferred:
        future = self.committer.submit(posting)
        d = defer.Deferred()
        timer = self.reactor.callLater(timeout_s, future.cancel)
        future.add_done_callback(lambda fut: self.outcomes.deliver((fut, d, timer)))
        return d

    @staticmethod
    def _fire(fut, d: defer.Deferred, timer) -> None:
        if timer.active():
            timer.cancel()
        if fut.cancelled():
            outcome = Outcome("96", {}, "timed out waiting for the database: nothing was applied")
        elif fut.exception() is not None:
            log.error("posting failed: %r", fut.exception())
            outcome = Outcome("96", {}, UNAVAILABLE)
        else:
            outcome = fut.result()
        if not d.called:
            d.callback(outcome)


class ToReactor:
    """Hands items from other threads to the reactor thread, many per wake-up: a group commit
    resolves its postings together, and one reactor call answers them all."""

    def __init__(self, reactor, handle):
        self.reactor, self.handle = reactor, handle
        self._lock = threading.Lock()
        self._ready: list = []
        self._scheduled = False

    def deliver(self, item) -> None:
        with self._lock:
            self._ready.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        self.reactor.callFromThread(self._run)

    def _run(self) -> None:
        with self._lock:
            ready, self._ready, self._scheduled = self._ready, [], False
        for item in ready:
            self.handle(*item)


class InquiryReader:
    """Inquiries that arrive together are answered from one read transaction, as postings share a commit.

    At most ``max_concurrent`` reads run at once; what arrives meanwhile waits for the next one.
    """

    def __init__(self, run, read, max_batch: int = 256, max_concurrent: int = 2):
        self.run, self.read = run, read
        self.max_batch, self.max_concurrent = max_batch, max_concurrent
        self.waiting: list[tuple[str, defer.Deferred]] = []
        self.running = 0

    def inquire(self, customer_no: str) -> defer.Deferred:
        d = defer.Deferred()
        self.waiting.append((customer_no, d))
        if self.running < self.max_concurrent:
            self._start()
        return d

    def _start(self) -> None:
        batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch:]
        self.running += 1
        read = self.run(self.read, [customer for customer, _ in batch])
        read.addCallbacks(self._answer, self._fail, callbackArgs=(batch,), errbackArgs=(batch,))
        read.addBoth(self._finished)

    @staticmethod
    def _answer(results: dict, batch) -> None:
        for customer, d in batch:
            if not d.called:
                d.callback(results[customer])

    @staticmethod
    def _fail(failure, batch) -> None:
        for _, d in batch:
            if not d.called:
                d.errback(failure)

    def _finished(self, _) -> None:
        self.running -= 1
        if self.waiting and self.running < self.max_concurrent:
            self._start()
