"""The gateway's door into the ledger: database work off the reactor, answers as Deferreds.

Postings go to the ledger's group commit and inquiries to a reader, each in a worker process of
its own (``runtime.worker_process``): the reactor thread keeps the interpreter lock to itself, and
each worker batches what arrives together (one commit for many postings, one read transaction
for many inquiries). Key persistence and health checks run on a small thread pool.

A request whose database work has not finished within the bank's timeout (its deadline) is
answered 96 only when nothing can have been applied: a read, or a posting still waiting in the
worker's queue (dropped there). A posting the worker has been given either gets its outcome by
the deadline or none at all (``UnknownOutcome``: the gateway sends no answer, docs/spec/INTERFACE.md
§6). The worker works its deadline out itself when a COMMIT's outcome is unknown
(``ledger.group_commit``). Should the posting worker die, the postings it had not answered go to
its successor marked as resent, which processes them as repeats: the stored answer of one that
had committed, the others applied then; never 96 unless a lookup says it had not landed.
"""
from __future__ import annotations

import logging

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from ledger.answers import UnknownOutcome
from ledger.posting import Outcome
from runtime.worker_process import BatchProcess, NotStarted, TimedOut, WorkerLost

log = logging.getLogger("gridpay.ledger_port")
UNAVAILABLE = "database unavailable: nothing was applied"


class SystemError96:
    response_code = "96"
    detail = UNAVAILABLE


class LedgerPort:
    POSTING_WORKER = "ledger.group_commit:PostingWorker"   # a test may run its own, faulty one

    def __init__(self, reactor, engine, settings, clock, on_commit=None):
        self.reactor = reactor
        self.engine = engine
        self.clock = clock
        db = settings.database
        common = {"url": settings.database_url(), "statement_timeout_s": db.statement_timeout_s,
                  "timezone": clock.timezone, "cutoff": clock.cutoff}
        self.poster = BatchProcess(reactor, self.POSTING_WORKER, common, name="ledger-committer",
                                   max_batch=db.group_commit_max, max_wait_s=db.group_commit_wait_ms / 1000,
                                   resend=True, on_batch=on_commit)
        self.reader = BatchProcess(reactor, "ledger.inquiry:InquiryWorker", common, name="ledger-reader",
                                   max_batch=db.group_commit_max, resend=True)
        self.pool = ThreadPool(minthreads=1, maxthreads=2, name="gridpay-db")
        # (reactor time, detail) of the latest posting answered 96 or not at all; a posting answered
        # otherwise clears it: readiness reports commits failing while the database still answers
        self.last_failure: tuple[float, str] | None = None

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
        """The posting's ``Outcome`` by ``timeout_s``, or an ``UnknownOutcome`` then."""
        d = self.poster.submit(posting, cancel_after=timeout_s, abandon_late=True)
        d.addErrback(self._post_failed)
        d.addCallback(self._note)
        return d

    def _note(self, outcome):
        if isinstance(outcome, UnknownOutcome) or outcome.response_code == "96":
            self.last_failure = (self.reactor.seconds(), outcome.detail or "96")
        else:
            self.last_failure = None
        return outcome

    @staticmethod
    def _post_failed(failure):
        if failure.check(NotStarted):
            return Outcome("96", {}, failure.getErrorMessage())
        if failure.check(TimedOut):
            return UnknownOutcome(detail="the database did not answer by the bank's timeout")
        # the worker died with it (WorkerLost), or failed it in a way that says nothing (WorkerError)
        if not failure.check(WorkerLost):
            log.error("posting failed: %s", failure.getErrorMessage() or failure.type.__name__)
        return UnknownOutcome(detail=f"{failure.type.__name__}: {failure.getErrorMessage()}"[:200])
