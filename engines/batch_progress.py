"""How far a debit batch has come: its debits by state, its chunks by state, who was skipped.
``gridpay debit batch`` (--watch) and the HTTP service's ``GET /v1/batches/{id}`` both read it here.

A debit has an outcome once it is no longer pending or sent (an unknown one has one: its reversal
follows), so ``done`` is every debit but those (as ``gridpay status`` counts a running batch)."""
from __future__ import annotations

from sqlalchemy import func, select

from engines.tables import debit_chunks, debit_skips, engine_batches
from ledger.schema import debit_batches, debits

OPEN_DEBIT_STATES = ("pending", "sent")


def debits_done(states: dict[str, int]) -> int:
    return sum(states.values()) - sum(states.get(state, 0) for state in OPEN_DEBIT_STATES)


def batch_state(conn, batch_id: int) -> dict | None:
    """The batch's debits and chunks by state and its skipped customers; None when there is no such batch."""
    if conn.execute(select(debit_batches.c.batch_id).where(debit_batches.c.batch_id == batch_id)).first() is None:
        return None
    states = dict(conn.execute(select(debits.c.state, func.count()).where(debits.c.batch_id == batch_id)
                               .group_by(debits.c.state)).all())
    chunks = dict(conn.execute(select(debit_chunks.c.state, func.count()).where(debit_chunks.c.batch_id == batch_id)
                               .group_by(debit_chunks.c.state)).all())
    skips = conn.execute(select(debit_skips.c.customer_no, debit_skips.c.amount, debit_skips.c.reason)
                         .where(debit_skips.c.batch_id == batch_id)).all()
    return {"batch": batch_id, "debits": states, "chunks": chunks,
            "skipped": [{"customer": c, "amount": a, "reason": r} for c, a, r in skips]}


def batch_progress(conn, batch_id: int) -> dict | None:
    """``batch_state`` with the batch's bank, mode and engine state, and its progress: debits with an
    outcome of all, their sums by state, chunks done of all."""
    shown = batch_state(conn, batch_id)
    if shown is None:
        return None
    b, eb = debit_batches.c, engine_batches.c
    head = conn.execute(select(b.bank_code, b.mode, b.plan_id, b.scheduled_for, eb.state, eb.kind, eb.created_at,
                               eb.updated_at).select_from(debit_batches.outerjoin(engine_batches,
                                                                                  eb.batch_id == b.batch_id))
                        .where(b.batch_id == batch_id)).mappings().one()
    sums = dict(conn.execute(select(debits.c.state, func.coalesce(func.sum(debits.c.amount), 0))
                             .where(debits.c.batch_id == batch_id).group_by(debits.c.state)).all())
    return {**shown, **dict(head), "debit_count": sum(shown["debits"].values()),
            "debits_done": debits_done(shown["debits"]), "amount_fen_by_state": {k: int(v) for k, v in sums.items()},
            "chunk_count": sum(shown["chunks"].values()), "chunks_done": shown["chunks"].get("done", 0)}


def batch_page(conn, before: int | None, limit: int) -> list[dict]:
    """Batches, newest first, below ``before``, each with its progress."""
    query = select(debit_batches.c.batch_id).order_by(debit_batches.c.batch_id.desc()).limit(limit)
    if before is not None:
        query = query.where(debit_batches.c.batch_id < before)
    return [batch_progress(conn, batch_id) for batch_id in conn.execute(query).scalars()]
