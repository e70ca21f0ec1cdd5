"""Group commit: many postings, one durable transaction, outcomes only after the commit.

A durable commit costs a flush to disk (SQLite WAL, synchronous=FULL) or a WAL flush and a round
trip (PostgreSQL): a few thousand per second at best, whatever is in them, while rows inside one
commit are cheap. The posting worker (``PostingWorker``, run by ``runtime.worker_process`` in a
process of its own: the gateway's ``LedgerPort`` starts it) is handed whatever postings are queued
(up to ``max_batch``, waiting at most ``max_wait_s`` for company when the queue runs dry), decides
and writes them all in ONE transaction (``Poster``, ``ledger.posting.apply_batch``), commits, and
only then answers: nobody sees an outcome of a posting that is not durable.

Failures (``Poster.process``), by what they leave behind:
- nothing applied, for certain: the database cannot be reached, a statement fails (the transaction
  is rolled back), or the server answers the COMMIT with an error:
  - deadlock / serialization failure / SQLite busy: the whole batch is run again (a few times);
  - IntegrityError (another process took a request identity or an RRN between our read and our
    insert): the batch is run again one posting at a time, so the conflicting posting finds the
    other's row and gets its replay or 94 while the others succeed;
  - the database refuses one posting's data (a value the checks before it let through, such as
    a NUL byte PostgreSQL will not store): the batch is split in halves and each half run again,
    down to the posting at fault, which alone gets 96 - one bank's bad byte never fails its
    neighbours;
  - the database is unreachable or broken: every posting of the batch gets 96 and the committer
    carries on; the pool reconnects when the database is back;
  - a bug in deciding one posting: the batch is run again one at a time so only that one gets 96.
- unknown: the connection broke while the COMMIT was in flight, or the COMMIT's answer never came
  (any COMMIT failure but the server's own error answer). The transaction is atomic, so each
  posting either landed whole or not at all. ``Poster.settle`` finds out which: it reconnects,
  again and again until the posting's deadline (the bank's request timeout), and looks the
  posting up by its request identity (``ledger.answers``): found - its stored answer, the one a
  repeat gets too; not found - 96, nothing was applied. A posting whose deadline passes first
  gets an ``UnknownOutcome``: the gateway sends no answer, and the bank's timeout and its reversal
  or repeat settle it (docs/spec/INTERFACE.md §6, §4.7).
- resent: a posting the worker process is given again because the one before it died holding it
  may have been committed by that one. It is posted as a repeat is - under its customers' locks,
  so after the dead worker's transaction has ended: its stored answer if it had landed, else it is
  applied now. Should that fail too, it is settled as above, never answered 96 by the failure.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from config.clock import Clock
from ledger.answers import UnknownOutcome, stored_answers
from ledger.posting import Outcome, Posting, apply_batch, system_error
from runtime.bulk_sql import Writes
from runtime.ratelimit import Backoff

log = logging.getLogger("gridpay.ledger.group_commit")

RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available
SETTLE_S = 10.0  # how long an unknown outcome is worked on when the caller gave no deadline
NOT_APPLIED = "the commit did not happen: nothing was applied"
DATA_REFUSED = "the database refused this request's data: nothing was applied"


def _retryable(exc: DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES or getattr(orig, "pgcode", None) in RETRYABLE_SQLSTATES:
        return True
    text = str(orig).lower()
    return "database is locked" in text or "deadlock" in text or "ora-00060" in text or "ora-08177" in text


def refused_data(exc: SQLAlchemyError) -> bool:
    """The database (or the driver, binding parameters) refused a value: the fault of the posting
    that carried it, not of the database."""
    return isinstance(exc, DataError) or (isinstance(exc, StatementError) and not isinstance(exc, DBAPIError))


def commit_outcome_unknown(exc: DBAPIError) -> bool:
    """Whether a failed COMMIT may have committed. Only an error the server itself answered, on a
    connection still alive, says it did not: PostgreSQL rolls back a transaction whose COMMIT it
    refuses, and SQLite's busy leaves it open to be rolled back. A broken connection (EOF, reset,
    the backend terminated) or any other error (SQLite's disk I/O error after part of the WAL was
    written) leaves it unknown."""
    if exc.connection_invalidated:
        return True
    if isinstance(exc, IntegrityError) or _retryable(exc):
        return False
    return not getattr(exc.orig, "sqlstate", None)


class CommitUnknown(Exception):
    """The COMMIT was sent and its outcome is unknown (see ``commit_outcome_unknown``)."""

    def __init__(self, cause: BaseException, backend_pid: int | None):
        cause = getattr(cause, "orig", None) or cause
        super().__init__(str(cause).splitlines()[0] if str(cause) else type(cause).__name__)
        self.backend_pid = backend_pid


def _backend_pid(conn) -> int | None:
    """The PostgreSQL backend running this transaction (libpq knows it: no round trip)."""
    if conn.dialect.name != "postgresql":
        return None
    try:
        return conn.connection.driver_connection.info.backend_pid
    except Exception:  # noqa: BLE001 - only a help to settle an unknown commit faster
        return None


def in_transaction(engine, work: Callable, tries: int, pause_s: float, size: int, settles_commit: bool = True):
    """``work(conn)``'s result, in one transaction, run again on a deadlock, a serialization failure
    or SQLite busy (and once on a connection found broken), after ``pause_s`` x the try. An
    IntegrityError is raised at once: running the same batch again meets the same conflict. With
    ``settles_commit``, a COMMIT that may have landed raises ``CommitUnknown`` (to be settled by
    lookup); without, its error is raised as is (for work that is safe to run again whole)."""
    for attempt in range(tries):
        committing, pid = False, None
        try:
            with engine.begin() as conn:
                pid = _backend_pid(conn) if settles_commit else None
                result = work(conn)
                committing = settles_commit  # leaving the block sends the COMMIT
            return result
        except IntegrityError:
            raise
        except DBAPIError as exc:
            # work may have sent the COMMIT itself, with its last writes (runtime.bulk_sql.Writes)
            sent = committing or (settles_commit and getattr(exc, "commit_sent", False))
            if sent and commit_outcome_unknown(exc):
                raise CommitUnknown(exc, pid) from exc
            if attempt + 1 < tries and (_retryable(exc) or (exc.connection_invalidated and attempt == 0)):
                log.info("retrying a batch of %d after %s", size, type(exc.orig).__name__)
                time.sleep(pause_s * (attempt + 1))
                continue
            raise
        except Exception as exc:
            if committing:  # not even the driver's error: nothing says the COMMIT did not land
                raise CommitUnknown(exc, pid) from exc
            raise
    raise AssertionError("unreachable")


class Poster:
    """Runs batches of postings in transactions, with the rules above. Not thread-safe: one Poster
    per writer thread."""

    def __init__(self, engine, clock: Clock, retries: int = 3, settle_s: float = SETTLE_S):
        self.engine, self.clock, self.retries = engine, clock, retries
        self.settle_s = settle_s

    def _transaction(self, postings: Sequence[Posting]) -> list[Outcome]:
        return in_transaction(self.engine, lambda conn: self._apply(conn, postings), self.retries, 0.005,
                              len(postings))

    def _apply(self, conn, postings: Sequence[Posting]) -> list[Outcome]:
        # the COMMIT goes with the writes: the billing feed's counter, locked by their last
        # statement, is then held for the server's work only (runtime.bulk_sql.Writes.flush)
        writes = Writes(conn)
        outcomes = apply_batch(conn, postings, self.clock, self.clock.now(), writes)
        writes.flush(commit=True)
        return outcomes

    def process(self, postings: Sequence[Posting], deadlines: Sequence[float | None] | None = None,
                resent: Sequence[bool] | None = None) -> list[Outcome]:
        """One outcome per posting. ``deadlines``: per posting, the ``time.monotonic()`` by which an
        unknown outcome must be settled (None: ``settle_s`` from now). ``resent``: per posting, True
        when it was in a batch whose worker died before answering: it may have been applied."""
        if not postings:
            return []
        now = self.clock.monotonic()
        due = [now + self.settle_s if d is None else d for d in (deadlines or [None] * len(postings))]
        out = self._post(postings, due)
        if not resent or not any(resent):
            return out
        # a 96 says this attempt applied nothing; for a resent posting the dead worker's attempt may have
        # (unless the 96 is a lookup's finding already)
        failed = [i for i, r in enumerate(resent)
                  if r and out[i].response_code == "96" and out[i].detail != NOT_APPLIED]
        if failed:
            for i, outcome in zip(failed, self.settle([postings[i] for i in failed], [due[i] for i in failed])):
                out[i] = outcome
        return out

    def _post(self, postings: Sequence[Posting], due: Sequence[float]) -> list[Outcome]:
        if not postings:
            return []
        try:
            return self._transaction(postings)
        except CommitUnknown as exc:
            log.error("connection lost during the COMMIT of a batch of %d (%s): settling each posting by its "
                      "identity", len(postings), exc)
            return self.settle(postings, due, exc.backend_pid)
        except IntegrityError as exc:
            log.info("integrity conflict in a batch of %d (%s): posting one at a time", len(postings),
                     str(exc.orig).splitlines()[0])
        except SQLAlchemyError as exc:
            if refused_data(exc):
                return self._without_refused(postings, due, exc)
            log.error("database failure, %d postings answered 96: %s", len(postings), str(exc).splitlines()[0])
            return [system_error()] * len(postings)
        except Exception:  # noqa: BLE001 - a bug deciding some posting: find which, keep the others
            log.exception("unexpected error in a batch of %d: posting one at a time", len(postings))
        return self._singly(postings, due)

    def _without_refused(self, postings: Sequence[Posting], due: Sequence[float], exc: SQLAlchemyError,
                         ) -> list[Outcome]:
        """Halve the batch until the posting whose data was refused stands alone: it gets 96, the
        others are posted (log2 of the batch's size more transactions per bad posting)."""
        if len(postings) == 1:
            p = postings[0]
            log.warning("the database refused the data of %s request %s/%s: %s", getattr(p, "bank_code", "-"),
                        getattr(p, "transmitted", "-"), getattr(p, "stan", "-"), str(exc).splitlines()[0])
            return [system_error(DATA_REFUSED)]
        half = len(postings) // 2
        return self._post(postings[:half], due[:half]) + self._post(postings[half:], due[half:])

    def _singly(self, postings: Sequence[Posting], due: Sequence[float]) -> list[Outcome]:
        out: list[Outcome] = []
        broken = False
        for p, deadline in zip(postings, due):
            if broken:
                out.append(system_error())
                continue
            outcome = None
            for _ in range(self.retries):
                try:
                    outcome = self._transaction([p])[0]
                    break
                except CommitUnknown as exc:
                    log.error("connection lost during the COMMIT of %r (%s): settling it", p, exc)
                    outcome = self.settle([p], [deadline], exc.backend_pid)[0]
                    break
                except IntegrityError as exc:  # the other's row is committed now: the next try sees it
                    log.info("integrity conflict posting %r: %s", p, str(exc.orig).splitlines()[0])
                except SQLAlchemyError as exc:
                    if refused_data(exc):
                        outcome = self._without_refused([p], [deadline], exc)[0]
                        break
                    log.error("database failure posting singly: %s", str(exc).splitlines()[0])
                    broken = True
                    break
                except Exception:  # noqa: BLE001
                    log.exception("cannot post %r", p)
                    outcome = system_error("internal error: nothing was applied")
                    break
            out.append(outcome or system_error())
        return out

    def settle(self, postings: Sequence[Posting], due: Sequence[float], lost_backend: int | None = None,
               ) -> list[Outcome]:
        """Outcomes of postings that may or may not have been committed: once the database answers,
        each one's stored answer (it landed) or 96 (it did not); ``UnknownOutcome`` for each whose
        deadline (``time.monotonic()``) passes first."""
        out: list[Outcome | None] = [None] * len(postings)
        pending = list(range(len(postings)))
        pause = Backoff(0.02, 0.5, 2.0, jitter=0.0)   # ask again soon, then less and less often
        while True:
            now = self.clock.monotonic()
            for i in [i for i in pending if due[i] <= now]:
                out[i] = UnknownOutcome(detail="the database could not say in time whether it was applied")
                pending.remove(i)
            if not pending:
                break
            try:
                found = stored_answers(self.engine, [postings[i] for i in pending], lost_backend,
                                       wait_s=max(due[i] for i in pending) - now)
            except SQLAlchemyError as exc:
                log.warning("cannot settle %d postings yet: %s", len(pending), str(exc).splitlines()[0])
                time.sleep(max(0.0, min(pause.next(), min(due[i] for i in pending) - self.clock.monotonic())))
                continue
            for i, outcome in zip(pending, found):
                out[i] = outcome if outcome is not None else system_error(NOT_APPLIED)
            break
        unknown = sum(isinstance(o, UnknownOutcome) for o in out)
        not_applied = sum(o.response_code == "96" for o in out)   # a 96 is never stored: found ones are not
        log.warning("settled %d postings of an unknown commit: %d had landed, %d had not, %d still unknown",
                    len(out), len(out) - unknown - not_applied, not_applied, unknown)
        return out


class PostingWorker:
    """The group commit as a ``runtime.worker_process`` worker: each batch is one transaction of
    ``Poster.process``, in a child process of its own. ``config``: url, statement_timeout_s,
    timezone, cutoff."""

    def __init__(self, config: dict):
        from ledger.db import make_engine

        self.engine = make_engine(config["url"], pool_size=1, statement_timeout_s=config.get("statement_timeout_s"),
                                  pre_ping=False)
        self.poster = Poster(self.engine, Clock(config["timezone"], config["cutoff"]))

    takes_context = True  # runtime.worker_child hands in each posting's deadline and whether it is resent

    def process(self, postings: Sequence[Posting], deadlines=None, resent=None) -> list[Outcome]:
        return self.poster.process(postings, deadlines, resent)

    def close(self) -> None:
        self.engine.dispose()
