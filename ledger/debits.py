"""Direct debits as the ledger sees them: create one, note its sending, record its result.

The debit engine (a later issue) creates a pending debit for chosen bills (``create_debit``),
gives it its identity before the first send (``mark_debit_sent``), and reports the bank's
answer as a ``DebitResult`` posting: through its writer process (``engines.writer``), or
synchronously with ``record_debit_result`` / the ``debit_*`` helpers below.

- approved: a payment (channel D, method 10) paying exactly the debit's bills (``debit_bills``);
  money for a bill that was meanwhile paid some other way goes to the prepaid balance (the bank
  has taken it; it cannot be refused). SMS ``debit_ok``.
- declined: bills stay unpaid; the response code is kept on the debit and in its history. SMS ``debit_failed``.
- unknown: nothing is posted; the debit waits for its reversal or reconciliation.
- reversed: a red reversal of the payment if it had been approved and posted, else nothing.
State moves forward only; reporting the state a debit is already in again changes nothing.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Iterable

from sqlalchemy import insert, select, update

from ledger.audit import audit_row, write_audit
from config.clock import SYSTEM_CLOCK, Clock
from ledger.posting import DEBIT_ACTOR, DebitResult, Outcome
from ledger.schema import bills, debit_attempts, debit_bills, debits
from ledger.synchronous_posting import post


def create_debit(conn, *, bank_code: str, customer_no: str, account_no: str, bills_to_pay: Iterable[tuple[str, int]],
                 at: datetime, batch_id: int | None = None, chunk_no: int | None = None,
                 actor: str = DEBIT_ACTOR) -> int:
    """Insert a pending debit for (bill_id, amount) pairs of one customer; returns its debit_id."""
    items = [(bill_id, int(amount)) for bill_id, amount in bills_to_pay]
    if not items or any(amount <= 0 for _, amount in items):
        raise ValueError("a debit needs bills, each with an amount > 0")
    owners = dict(conn.execute(select(bills.c.bill_id, bills.c.customer_no)
                               .where(bills.c.bill_id.in_([b for b, _ in items]))).all())
    wrong = [b for b, _ in items if owners.get(b) != customer_no]
    if wrong:
        raise ValueError(f"bills {wrong} are not bills of customer {customer_no}")
    debit_id = conn.execute(insert(debits).returning(debits.c.debit_id), {
        "batch_id": batch_id, "chunk_no": chunk_no, "bank_code": bank_code, "customer_no": customer_no,
        "account_no": account_no, "amount": sum(a for _, a in items), "state": "pending",
        "created_at": at, "updated_at": at}).scalar_one()
    conn.execute(insert(debit_bills), [{"debit_id": debit_id, "bill_id": b, "amount": a} for b, a in items])
    conn.execute(insert(debit_attempts), {"debit_id": debit_id, "event": "created", "detail": "", "actor": actor, "at": at})
    write_audit(conn, [audit_row(at, actor, "debit.create", "debit", debit_id, customer_no=customer_no,
                                 amount=sum(a for _, a in items), bills=[b for b, _ in items])])
    return debit_id


def mark_debit_sent(conn, debit_id: int, *, transmitted: str, stan: str, rrn: str, business_date: date,
                    at: datetime, mti: str = "0200", actor: str = DEBIT_ACTOR,
                    after_a0: tuple[str, str, str] | None = None) -> None:
    """Record a send of the debit. Its identity (7, 11, 37, business date) is given at the first
    send, and a resend carries the same one - with one exception: ``after_a0`` = the identity
    (7, 11, 37) the bank answered A0. A0 applied nothing (docs/spec/INTERFACE.md §4.2), and the
    debit goes again under a new identity, never as a different request under the old one (§4.7):
    new 7 and 11, and a new 37 too, since the bank counts the refused request's RRN as used (§4.7)
    and its day file names the debit by the RRN it applied (§7.1). The debit must still be
    ``sent`` under exactly that identity; the history keeps both (a ``mac_refused`` row for the
    old one, a ``sent`` row for the new one), and a reversal afterwards refers to the new one:
    the identity the bank saw last."""
    row = conn.execute(select(debits).where(debits.c.debit_id == debit_id).with_for_update()).mappings().first()
    if row is None:
        raise ValueError(f"no debit {debit_id}")
    current = (row["transmitted"], row["stan"], row["rrn"])
    detail = ""
    if after_a0 is not None:
        if row["state"] != "sent" or current != tuple(after_a0):
            raise ValueError(f"debit {debit_id} is {row['state']} as {'/'.join(map(str, current))}, not sent as "
                             f"{'/'.join(after_a0)}: it cannot be sent again after A0")
        if transmitted == after_a0[0] or rrn == after_a0[2]:
            raise ValueError(f"debit {debit_id}: a send after A0 needs a new field 7 (with a new 11) and a new 37")
        conn.execute(update(debits).where(debits.c.debit_id == debit_id).values(
            transmitted=transmitted, stan=stan, rrn=rrn, business_date=business_date, updated_at=at))
        conn.execute(insert(debit_attempts), {"debit_id": debit_id, "event": "mac_refused", "mti": "0210",
                                              "response_code": "A0", "actor": actor, "at": at,
                                              "detail": f"identity {'/'.join(after_a0)}: MAC not verified, "
                                                        f"nothing applied"})
        detail = f"identity {transmitted}/{stan}/{rrn}, new after A0 to {'/'.join(after_a0)}"
    elif row["transmitted"] is None:
        if row["state"] != "pending":
            raise ValueError(f"debit {debit_id} is {row['state']}")
        conn.execute(update(debits).where(debits.c.debit_id == debit_id).values(
            transmitted=transmitted, stan=stan, rrn=rrn, business_date=business_date, state="sent", updated_at=at))
    elif current != (transmitted, stan, rrn):
        raise ValueError(f"debit {debit_id} was sent as {row['transmitted']}/{row['stan']}/{row['rrn']}")
    conn.execute(insert(debit_attempts), {"debit_id": debit_id, "event": "sent", "mti": mti, "detail": detail,
                                          "actor": actor, "at": at})


def record_debit_result(engine, result: DebitResult, clock: Clock = SYSTEM_CLOCK) -> Outcome:
    return post(engine, [result], clock)[0]


def debit_approved(engine, debit_id: int, at: datetime, approval_code: str | None = None, **kw) -> Outcome:
    return record_debit_result(engine, DebitResult(debit_id, "approved", at, "00", approval_code), **kw)


def debit_declined(engine, debit_id: int, at: datetime, response_code: str, detail: str = "", **kw) -> Outcome:
    return record_debit_result(engine, DebitResult(debit_id, "declined", at, response_code, detail=detail), **kw)


def debit_unknown(engine, debit_id: int, at: datetime, detail: str = "no response within the timeout", **kw) -> Outcome:
    return record_debit_result(engine, DebitResult(debit_id, "unknown", at, detail=detail), **kw)


def debit_reversed(engine, debit_id: int, at: datetime, detail: str = "debit reversed", **kw) -> Outcome:
    return record_debit_result(engine, DebitResult(debit_id, "reversed", at, detail=detail), **kw)
