"""The gateway's door into the ledger: database work off the reactor, answers as Deferreds.

Postings go to the ledger's group commit and inquiries to a reader, each in a worker process of
its own (``ledger.batch_process``): the reactor thread keeps the interpreter lock to itself, and
each worker batches what arrives together (one commit for many postings, one read transaction
for many inquiries). Key persistence and health checks run on a small thread pool.

A request whose database work has not finished within the bank's timeout is answered 96 only
when nothing can have been applied: a read, or a posting still waiting in the worker's queue
(dropped there). A posting already inside a commit is waited for. Should the posting worker
die, the postings it had not answered go to its successor: one that had committed replays its
stored answer (the request's identity), the others are applied then.
"""
from __future__ import annotations

import logging

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from ledger.batch_process import BatchProcess, NotStarted
from ledger.postings import Outcome

log = logging.getLogger("gridpay.ledger_port")
UNAVAILABLE = "database unavailable: nothing was applied"


class SystemError96:
    response_code = "96"
    detail = UNAVAILABLE


class LedgerPort:
    def __init__(self, reactor, engine, settings, calendar, on_commit=None):
        self.reactor = reactor
        self.engine = engine
        self.calendar = calendar
        db = settings.database
        common = {"url": settings.database_url(), "statement_timeout_s": db.statement_timeout_s,
                  "timezone": calendar.timezone, "cutoff": calendar.cutoff}
        self.poster = BatchProcess(reactor, "ledger.group_commit:PostingWorker", common, name="ledger-committer",
                                   max_batch=db.group_commit_max, max_wait_s=db.group_commit_wait_ms / 1000,
                                   resend=True, on_batch=on_commit)
        self.reader = BatchProcess(reactor, "ledger.inquiry:InquiryWorker", common, name="ledger-reader",
                                   max_batch=db.group_commit_max, resend=True)
        self.pool = ThreadPool(minthreads=1, maxthreads=2, name="gridpay-db")

    def start(self) -> defer.Deferred:
        self.pool.start()
        return defer.gatherResults([w.start() for w in self.workers()], consumeErrors=True)

    def workers(self) -> list[BatchProcess]:
        return [self.poster, self.reader]

    @defer.inlineCallbacks
    def stop(self, timeout: float | None = None):
        """Answer everything the workers were sent, then let them and the thread pool go."""
        yield defer.gatherResults([w.stop(timeout=timeout) for w in self.workers()])
        # Joining the pool's threads blocks until their calls return: not on the reactor, which
        # may be what such a call waits for (a key read through a proxy in this process).
        yield threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.pool.stop)

    def abandon(self) -> None:
        for worker in self.workers():
            worker.stop(drain=False, timeout=5)
        if self.pool.started:
            self.pool.stop()

    def run(self, fn, *args) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self.pool, fn, *args)

    def inquire(self, customer_no: str, timeout_s: float = 10.0) -> defer.Deferred:
        # a read changes nothing: 96 whenever it is late, even while the reader is at it
        d = self.reader.submit(customer_no, cancel_after=timeout_s, abandon_late=True)
        d.addErrback(self._read_failed)
        return d

    @staticmethod
    def _read_failed(failure):
        log.warning("inquiry failed: %s", failure.getErrorMessage() or failure.type.__name__)
        return SystemError96()

    def post(self, posting, timeout_s: float = 10.0) -> defer.Deferred:
        d = self.poster.submit(posting, cancel_after=timeout_s)
        d.addErrback(self._post_failed)
        return d

    @staticmethod
    def _post_failed(failure):
        if failure.check(NotStarted):
            return Outcome("96", {}, failure.getErrorMessage())
        log.error("posting failed: %s", failure.getErrorMessage() or failure.type.__name__)
        return Outcome("96", {}, UNAVAILABLE)
