"""The gateway's door into the ledger: database work off the reactor, answers as Deferreds.

Inquiries and key persistence run on a thread pool; postings go to the ledger's group
committer. A request whose database work has not finished within the bank's timeout is
answered 96 only when nothing can have been applied: a read, or a posting still waiting in
the committer's queue (cancelled there). A posting already inside a commit is waited for.
"""
from __future__ import annotations

import logging

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from ledger.db import read_only
from ledger.inquiry import inquire
from ledger.postings import Outcome

log = logging.getLogger("gridpay.ledger_port")
UNAVAILABLE = "database unavailable: nothing was applied"


class SystemError96:
    response_code = "96"
    detail = UNAVAILABLE


class LedgerPort:
    def __init__(self, reactor, engine, committer, calendar, pool_size: int = 8):
        self.reactor = reactor
        self.engine = engine
        self.calendar = calendar
        self.committer = committer
        self.pool = ThreadPool(minthreads=1, maxthreads=pool_size, name="gridpay-db")

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self.pool.stop()

    def run(self, fn, *args) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self.pool, fn, *args)

    def inquire(self, customer_no: str, at, timeout_s: float = 10.0) -> defer.Deferred:
        d = self.run(self._inquire, customer_no, at)
        d.addTimeout(timeout_s, self.reactor)
        d.addErrback(self._read_failed)
        return d

    def _inquire(self, customer_no: str, at):
        with read_only(self.engine.connect()) as conn:
            if conn.dialect.name == "postgresql":  # bills and prepaid balance from one snapshot
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return inquire(conn, customer_no, at, self.calendar)

    def _read_failed(self, failure):
        log.warning("inquiry failed: %s", failure.getErrorMessage() or failure.type.__name__)
        return SystemError96()

    def post(self, posting, timeout_s: float = 10.0) -> defer.Deferred:
        future = self.committer.submit(posting)
        d = defer.Deferred()

        def resolved(fut):
            if fut.cancelled():
                outcome = Outcome("96", {}, "timed out waiting for the database: nothing was applied")
            elif fut.exception() is not None:
                log.error("posting failed: %r", fut.exception())
                outcome = Outcome("96", {}, UNAVAILABLE)
            else:
                outcome = fut.result()
            self.reactor.callFromThread(_fire, outcome)

        def _fire(outcome):
            if timer.active():
                timer.cancel()
            if not d.called:
                d.callback(outcome)

        timer = self.reactor.callLater(timeout_s, future.cancel)
        future.add_done_callback(resolved)
        return d
