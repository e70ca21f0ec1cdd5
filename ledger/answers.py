"""Postings whose commit has an unknown outcome: settle them by looking up what they left behind.

A batch's COMMIT can be lost on the way (the connection breaks while it is in flight, or its
answer never comes) and a worker process can die between sending COMMIT and reporting it. The
transaction is atomic, so each posting then either landed whole or not at all; what landed left
its answer under the request's identity (fields 32, 7, 11 and the year) in ``bank_requests``,
the same answer a repeat of the request gets (docs/spec/INTERFACE.md §4.7). ``stored_answers``
reads it back: the stored answer if the posting landed, ``None`` if it did not.

Reading that is conclusive only once the lost transaction has ended. On PostgreSQL its backend
may still be running it (the server has not yet noticed the client is gone, or is still
committing). That transaction held its customers' rows ``FOR NO KEY UPDATE`` (and its debits') from its
first statement on, so the lookup first locks the same rows ``FOR SHARE``: it waits until the
lost transaction has committed or rolled back. When the lost backend is known it is terminated
first, so a backend that never got the COMMIT (idle in its transaction, waiting for a client that
is gone) rolls back now instead of when TCP keepalive notices. SQLite needs neither: a write
transaction ends with its connection, and a process's locks with the process.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from ledger.db import read_only
from ledger.ids import id_year
from ledger.posting import CounterPayment, DebitResult, Outcome, PaymentReversal
from ledger.schema import bank_requests, customers, debits

log = logging.getLogger("gridpay.ledger.answers")


@dataclass(frozen=True)
class UnknownOutcome(Outcome):
    """Whether the posting was applied could not be found out in time: there is no answer to give
    (docs/spec/INTERFACE.md §6). Never sent to a bank; ``ok`` is False."""
    response_code: str = ""


def identity(p) -> tuple:
    """A bank request's identity as ``bank_requests`` keeps it."""
    return (p.bank_code, id_year(p.transmitted, p.received_at), p.transmitted, p.stan)


TERMINATE_LOST = text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE pid = :pid AND pid <> pg_backend_pid() AND usename = current_user")


def stored_answers(engine, postings: Sequence, lost_backend: int | None = None,
                   wait_s: float | None = None) -> list[Outcome | None]:
    """For each posting, what it left in the ledger: its stored answer (it was applied), or None
    (it was not). ``lost_backend``: the PostgreSQL backend pid of the lost transaction, when
    known; ``wait_s`` bounds the wait for the lost transaction's locks (then a database error)."""
    with read_only(engine.connect()) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            if wait_s is not None:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, int(wait_s * 1000))}")
            if lost_backend is not None:
                try:
                    with conn.begin_nested():   # a help, not a condition: the locks below decide
                        conn.execute(TERMINATE_LOST, {"pid": lost_backend})
                except DBAPIError as exc:
                    log.warning("cannot terminate backend %d of the lost transaction: %s", lost_backend,
                                str(exc.orig).splitlines()[0])
        custs = sorted({p.customer_no for p in postings
                        if isinstance(p, (CounterPayment, PaymentReversal)) and p.customer_no})
        debit_ids = sorted({p.debit_id for p in postings if isinstance(p, DebitResult)})
        if custs:   # the lost transaction's locks: wait for it to end (a no-op on SQLite)
            conn.execute(select(customers.c.customer_no).where(customers.c.customer_no.in_(custs))
                         .order_by(customers.c.customer_no).with_for_update(read=True)).all()
        states = {}
        if debit_ids:
            states = dict(conn.execute(select(debits.c.debit_id, debits.c.state)
                                       .where(debits.c.debit_id.in_(debit_ids))
                                       .order_by(debits.c.debit_id).with_for_update(read=True)).all())
        requests = [p for p in postings if not isinstance(p, DebitResult)]
        stored = {}
        if requests:
            br = bank_requests.c
            rows = conn.execute(select(br.bank_code, br.id_year, br.transmitted, br.stan, br.content_digest,
                                       br.response_code, br.response_fields)
                                .where(br.stan.in_(sorted({p.stan for p in requests})),
                                       br.transmitted.in_(sorted({p.transmitted for p in requests})))).all()
            stored = {(r.bank_code, r.id_year, r.transmitted, r.stan): r for r in rows}
    out: list[Outcome | None] = []
    for p in postings:
        if isinstance(p, DebitResult):
            # the state a debit result sets is its trace; the same result again is "already recorded"
            state = states.get(p.debit_id)
            out.append(Outcome("00", {"state": state}, "already recorded", True) if state == p.result else None)
            continue
        row = stored.get(identity(p))
        if row is None or row.content_digest != p.digest:   # another request's identity: not ours
            out.append(None)
            continue
        fields = json.loads(row.response_fields)
        detail = fields.pop("ER", "")
        out.append(Outcome(row.response_code, fields, detail))
    return out
