"""The engine's writer: debit results and reversal bookkeeping, many per transaction.

The reactor hands in operations (``Writer.submit(op, callback)``); they run in a worker process
of their own (``runtime.worker_process``), so the engine's reactor thread keeps the interpreter
lock. The worker takes whatever is queued (up to ``max_batch``; an idle one waits up to
``max_wait_s`` for company), runs it in ONE transaction - the ledger's ``apply_batch`` for every
``DebitResult`` among them, in order, then the engine's own rows, all sent at the end in one round
trip with the billing feed's numbered rows last - commits, and only then is each
callback called on the reactor thread with the op's result (an ``Outcome``) or an exception.
Nothing is acted on before it is durable: a reversal is sent only after its attempt is counted
in the database. Time comes from the engine (each op is stamped with its ``now()`` when
submitted), so an engine on an injected clock writes the times it lives in.

Retries: deadlock / serialization failure / SQLite busy → the batch again; any other failure of
a batch of several → its two halves, each the same way, so only a bad op fails alone and a
passing failure (a lock waited on past the statement timeout) costs two transactions, not one for
each op: under load, a thousand single transactions put the writer minutes behind its engine. A
worker process that dies is replaced and its batch is run again: every operation is idempotent (a debit result the ledger
has recorded is replayed, a reversal row that exists is reused, updates set the same values).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import select, update

from engines.store import ReverseItem, create_reversals
from engines.tables import debit_chunks, debit_reversals
from runtime.bulk_sql import Writes
from runtime.worker_process import BatchProcess
from config.clock import Clock
from ledger.group_commit import in_transaction
from ledger.posting import DebitResult, Outcome, apply_batch
from ledger.schema import debit_attempts

log = logging.getLogger("gridpay.debit.writer")


# --- operations ------------------------------------------------------------------------------

@dataclass
class Result:
    """The bank answered a 0200: approved or declined."""
    posting: DebitResult


@dataclass
class Unknown:
    """No answer: the debit becomes unknown and gets a reversal row (own identity), atomically."""
    posting: DebitResult
    bank_code: str
    original: dict
    owner: str
    lease_s: float


@dataclass
class ReversalBegun:
    """Counted before each 0420/0421 is written (store and forward survives restarts)."""
    debit_id: int
    attempt: int
    mti: str
    next_at: datetime
    actor: str


@dataclass
class ReversalAnswered:
    debit_id: int
    response_code: str
    actor: str

    @property
    def posting(self) -> DebitResult | None:
        return None


@dataclass
class ReversalUnanswered:
    debit_id: int
    attempts: int
    actor: str


@dataclass
class ChunkDone:
    chunk_id: int
    owner: str


@dataclass
class Note:
    """History only (a late answer): changes no state."""
    debit_id: int
    event: str
    mti: str | None
    response_code: str | None
    detail: str
    actor: str


def _posting_of(op, now: datetime) -> DebitResult | None:
    if isinstance(op, (Result, Unknown)):
        return op.posting
    if isinstance(op, ReversalAnswered) and op.response_code == "00":
        return DebitResult(op.debit_id, "reversed", now, "00", detail="debit reversal answered 00", actor=op.actor)
    return None


class Writer:
    """The engine's handle on its writer process: ``submit(op, callback)``; ``callback(result)``
    runs on the reactor thread after the commit (an exception instead when the op failed)."""

    def __init__(self, reactor, url: str, clock: Clock, max_batch: int = 1000, max_wait_s: float = 0.005, statement_timeout_s: float | None = None,
                 log_file: str = "", on_batch: Callable[[int, float], None] | None = None, name: str = "debit-writer",
                 backend_nice: int = 0):
        self.clock = clock
        config = {"url": url, "statement_timeout_s": statement_timeout_s, "timezone": clock.timezone,
                  "cutoff": clock.cutoff, "log_file": log_file, "backend_nice": backend_nice}
        self.process = BatchProcess(reactor, "engines.writer:WriterWorker", config, name=name, max_batch=max_batch,
                                    max_wait_s=max_wait_s, resend=True, on_batch=on_batch)

    def start(self):
        return self.process.start()

    def stop(self):
        return self.process.stop()

    def submit(self, op, callback: Callable) -> None:
        d = self.process.submit((self.clock.now(), op))
        d.addCallbacks(callback, lambda failure: callback(failure.value))
        d.addErrback(lambda failure: log.error("writer callback failed: %s", failure.getTraceback()))

    @property
    def batches(self) -> int:
        return self.process.batches

    @property
    def ops(self) -> int:
        return self.process.ops

    @property
    def busy_s(self) -> float:
        return self.process.busy_s


class WriterWorker:
    """The writer's transactions, in the worker process. ``config``: url, statement_timeout_s,
    timezone, cutoff, backend_nice."""

    def __init__(self, config: dict):
        from ledger.db import make_engine

        self.db = make_engine(config["url"], pool_size=1, statement_timeout_s=config.get("statement_timeout_s"),
                              pre_ping=False, backend_nice=config.get("backend_nice", 0))
        self.clock = Clock(config["timezone"], config["cutoff"])

    def close(self) -> None:
        self.db.dispose()

    def process(self, stamped: list) -> list:
        """stamped: (now, op) as the engine submitted them; the batch is written at the latest now."""
        return self._process([op for _, op in stamped], max(now for now, _ in stamped))

    def _process(self, ops: list, now: datetime) -> list:
        try:
            return self._transaction(ops, now)
        except Exception as exc:  # noqa: BLE001
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            if len(ops) == 1:
                log.error("debit write failed: %s: %s", type(exc).__name__, first_line)
                return [exc]
            log.warning("a batch of %d debit writes failed (%s: %s): writing it as two halves", len(ops),
                        type(exc).__name__, first_line[:200])
        half = len(ops) // 2
        return self._process(ops[:half], now) + self._process(ops[half:], now)

    def _transaction(self, ops: list, now: datetime) -> list:
        # every op is safe to run again whole (see the module docstring): a lost COMMIT is not settled
        return in_transaction(self.db, lambda conn: self._apply(conn, ops, now), 5, 0.01, len(ops),
                              settles_commit=False)

    def _apply(self, conn, ops: list, now: datetime) -> list:
        # The ledger's rows and the engine's go in one round trip at the end (``writes``), with the
        # COMMIT: the billing feed's counter, which every posting process shares, is locked for the
        # server's work on them only - not across this process's statements or while it reads
        # their answers, which may wait for the CPU (the batch side runs at a lower priority than
        # the gateways: config/systemd).
        results: list = [None] * len(ops)
        writes = Writes(conn)
        postings, where = [], []
        for i, op in enumerate(ops):
            p = _posting_of(op, now)
            if p is not None:
                postings.append(p)
                where.append(i)
        if postings:
            for i, outcome in zip(where, apply_batch(conn, postings, self.clock, now, writes)):
                results[i] = outcome
        self._schedule_reversals(conn, ops, results, now)
        history = []
        reversal_rows: dict[str, list[dict]] = {"begun": [], "answered": [], "unanswered": []}
        for i, op in enumerate(ops):
            if isinstance(op, ReversalBegun):
                reversal_rows["begun"].append({"debit_id": op.debit_id, "attempts": op.attempt,
                                               "next_at": op.next_at, "updated_at": now})
                history.append({"debit_id": op.debit_id, "event": "reversal_sent", "mti": op.mti,
                                "response_code": None, "detail": f"attempt {op.attempt}", "actor": op.actor, "at": now})
                results[i] = Outcome("00")
            elif isinstance(op, ReversalAnswered):
                outcome = results[i] or Outcome("00")
                state = "answered" if op.response_code == "00" else "refused"
                reversal_rows["answered"].append({
                    "debit_id": op.debit_id, "state": state, "response_code": op.response_code, "owner": None,
                    "lease_until": None, "updated_at": now})
                history.append({"debit_id": op.debit_id, "event": "reversal_answer", "mti": "0430",
                                "response_code": op.response_code,
                                "detail": "" if op.response_code == "00" else "reversal refused: open for reconciliation",
                                "actor": op.actor, "at": now})
                results[i] = outcome
            elif isinstance(op, ReversalUnanswered):
                reversal_rows["unanswered"].append({"debit_id": op.debit_id, "state": "unanswered",
                                                    "owner": None, "lease_until": None, "updated_at": now})
                history.append({"debit_id": op.debit_id, "event": "reversal_unanswered", "mti": None,
                                "response_code": None, "detail": f"no 0430 after {op.attempts} attempts: open for "
                                                                 f"reconciliation", "actor": op.actor, "at": now})
                results[i] = Outcome("00")
            elif isinstance(op, ChunkDone):
                c = debit_chunks.c
                conn.execute(update(debit_chunks).where(c.chunk_id == op.chunk_id, c.owner == op.owner).values(
                    state="done", lease_until=None, updated_at=now))
                results[i] = Outcome("00")
            elif isinstance(op, Note):
                history.append({"debit_id": op.debit_id, "event": op.event, "mti": op.mti,
                                "response_code": op.response_code, "detail": op.detail[:200], "actor": op.actor,
                                "at": now})
                results[i] = Outcome("00")
        # in this order: a reversal is sent, then answered or not; a debit's rows within a kind apply
        # in turn (the last wins), as Writes.update does on either database; locked in key order:
        # two engines' writers holding the same reversals after a takeover had deadlocked
        for rows in reversal_rows.values():
            writes.update(debit_reversals, "debit_id", rows, in_key_order=True)
        writes.insert(debit_attempts, history)
        writes.flush(commit=True)
        return results

    def _schedule_reversals(self, conn, ops: list, results: list, now: datetime) -> None:
        """Unknown outcomes the ledger took: each gets its reversal row (reused if a retried
        write had made it), its result the ``ReverseItem`` to send."""
        unknowns = [(i, op) for i, op in enumerate(ops) if isinstance(op, Unknown)]
        if not unknowns:
            return
        # a refused one keeps its Outcome: the debit has moved on (another engine took its chunk
        # over and settled it), which writing it again cannot change
        fine = [(i, op) for i, op in unknowns if results[i].ok or results[i].replayed]
        if not fine:
            return
        r = debit_reversals.c
        existing = {x.debit_id: x for x in conn.execute(select(debit_reversals).where(
            r.debit_id.in_([op.posting.debit_id for _, op in fine])))}
        for i, op in fine:   # already scheduled (a retried write that had committed): reuse it
            x = existing.get(op.posting.debit_id)
            if x is not None:
                results[i] = ReverseItem(x.debit_id, x.bank_code, op.original, x.transmitted, x.stan,
                                         x.attempts, x.next_at if x.next_at.tzinfo else
                                         x.next_at.replace(tzinfo=timezone.utc))
        fresh = [(i, op) for i, op in fine if op.posting.debit_id not in existing]
        if fresh:
            owner, lease_s = fresh[0][1].owner, fresh[0][1].lease_s
            items = create_reversals(conn, [(op.posting.debit_id, op.bank_code, op.original) for _, op in fresh],
                                     owner=owner, now=now, lease=now + timedelta(seconds=lease_s), clock=self.clock)
            for (i, _), item in zip(fresh, items):
                results[i] = item
