"""Bill correction (冲红改单): a red reversal of a bill and a replacement bill.

A bill is never edited. Correcting bill X adds
- a reversing bill (kind R, ``reverses_bill_id`` = X) with X's amounts negated, which cancels X,
- a replacement bill (kind N, ``replaces_bill_id`` = X) with the corrected amounts,
each with its journal entry, and an audit row naming the operator and the reason.

When X had been paid (its allocations net to more than 0), the money moves by new records: a
negative allocation on X (``correction_bill_id`` = the reversing bill), a prepaid movement of kind
``correction`` putting the money into the customer's prepaid balance, and a journal entry
Dr receivable / Cr prepaid. The prepaid balance then pays the customer's unpaid bills by the usual
rule (``pay_whole_bills`` in ``ledger.posting.rules``: oldest first, whole bills only): a smaller
replacement is paid and leaves the rest prepaid; a larger one stays unpaid and the money stays
prepaid. The money's part is the posting kind ``BillCorrection`` (``ledger.posting``).

Refused: a bill that does not exist, a reversing bill, a bill already reversed, and a bill with a
direct debit still in flight (pending, sent or with an unknown outcome).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from ledger.audit import audit_row, write_audit
from config.clock import SYSTEM_CLOCK, Clock
from config.money import yuan
from ledger.errors import Refused
from ledger.imports import bill_notice_rows
from ledger.imports.formats import _BILL_ID
from ledger.money import fits
from ledger.posting import BillCorrection, apply_batch, lock_customers
from ledger.schema import allocations, bills, debit_bills, debits, outbox

# debit states after which a debit no longer moves money for its bills
SETTLED_DEBIT_STATES = ("approved", "declined", "reversed", "failed", "cancelled", "expired")


@dataclass
class CorrectionResult:
    original_bill_id: str
    reversing_bill_id: str
    new_bill_id: str
    moved_to_prepaid: int      # fen the original had been paid, now in the prepaid balance
    new_bill_paid: bool        # the replacement was paid from the prepaid balance
    prepaid_balance: int       # the customer's prepaid balance afterwards

    def summary(self) -> str:
        text = (f"bill {self.original_bill_id} reversed by {self.reversing_bill_id}, "
                f"replaced by {self.new_bill_id}")
        if self.moved_to_prepaid:
            text += f"; {yuan(self.moved_to_prepaid, grouped=False)} yuan paid on it moved to prepaid"
        if self.new_bill_paid:
            text += f"; {self.new_bill_id} paid from prepaid"
        return text + f"; prepaid balance {yuan(self.prepaid_balance, grouped=False)} yuan"


def _free_id(conn, candidates) -> str:
    for candidate in candidates:
        if len(candidate) <= 32 and conn.execute(
                select(bills.c.bill_id).where(bills.c.bill_id == candidate)).first() is None:
            return candidate
    raise Refused("no free bill id could be made; give --new-bill-id")


def _hashed(text: str, prefix: str) -> str:
    return prefix + hashlib.sha1(text.encode()).hexdigest().upper()[:32 - len(prefix)]


def correct_bill(engine: Engine, bill_id: str, *, principal: int, penalty: int, actor: str, reason: str,
                 due_date: date | None = None, new_bill_id: str | None = None,
                 clock: Clock = SYSTEM_CLOCK, now: datetime | None = None) -> CorrectionResult:
    """Reverse bill ``bill_id`` and replace it with a bill of the given amounts (same customer and
    period; the due date is the original's unless given). Raises ``Refused`` when it cannot."""
    try:
        with engine.begin() as conn:
            return correct_bill_in(conn, bill_id, principal=principal, penalty=penalty, actor=actor, reason=reason,
                                   due_date=due_date, new_bill_id=new_bill_id, clock=clock, now=now or clock.now())
    except IntegrityError as exc:  # a concurrent correction of the same bill, or a bill id just taken
        raise concurrent_correction(bill_id, exc) from None


def concurrent_correction(bill_id: str, exc: IntegrityError) -> Refused:
    return Refused(f"bill {bill_id} could not be corrected: changed by someone else at the same time "
                   f"({type(exc.orig).__name__})")


def correct_bill_in(conn, bill_id: str, *, principal: int, penalty: int, actor: str, reason: str,
                    due_date: date | None, new_bill_id: str | None, clock: Clock, now: datetime) -> CorrectionResult:
    """``correct_bill`` in the caller's transaction (the HTTP service stores its answer in it)."""
    if not actor or not actor.strip():
        raise Refused("a correction names the operator who makes it")
    if not reason or not reason.strip():
        raise Refused("a correction gives its reason (--reason)")
    for name, value, least in (("principal", principal, 1), ("penalty", penalty, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or not (least <= value and fits(value)):
            raise Refused(f"{name} must be whole fen, at least {least} and at most 12 digits, not {value!r}")
    if new_bill_id is not None and not _BILL_ID.fullmatch(new_bill_id):
        raise Refused(f"new bill id {new_bill_id!r} is not 1-32 ASCII letters or digits")
    return _correct(conn, bill_id, principal, penalty, actor, reason, due_date, new_bill_id, now, clock)


def _correct(conn, bill_id, principal, penalty, actor, reason, due_date, new_bill_id, at, clock):
    original = conn.execute(select(bills).where(bills.c.bill_id == bill_id)).first()
    if original is None:
        raise Refused(f"no bill {bill_id}")
    customer_no = original.customer_no
    lock_customers(conn, [customer_no])
    if original.kind == "R":
        raise Refused(f"bill {bill_id} is a reversing record; it cannot be corrected")
    reversed_by = conn.execute(select(bills.c.bill_id).where(bills.c.reverses_bill_id == bill_id)).scalar()
    if reversed_by is not None:
        raise Refused(f"bill {bill_id} was already reversed (by {reversed_by})")
    in_flight = conn.execute(
        select(debits.c.debit_id, debits.c.state).select_from(debit_bills.join(debits))
        .where(debit_bills.c.bill_id == bill_id, debits.c.state.not_in(SETTLED_DEBIT_STATES))).first()
    if in_flight is not None:
        raise Refused(f"bill {bill_id} has direct debit {in_flight.debit_id} in state {in_flight.state}; "
                      "correct it when the debit has settled")
    paid = int(conn.execute(select(func.coalesce(func.sum(allocations.c.amount), 0))
                            .where(allocations.c.bill_id == bill_id)).scalar_one())
    root = original.bill_id
    while True:  # the first bill of a chain of corrections names the new ids
        parent = conn.execute(select(bills.c.replaces_bill_id).where(bills.c.bill_id == root)).scalar()
        if parent is None:
            break
        root = parent
    reversing_id = _free_id(conn, [f"{bill_id}R", _hashed(bill_id, "R")])
    if new_bill_id is None:
        new_bill_id = _free_id(conn, [f"{root}N{k}" for k in range(1, 100)] + [_hashed(f"{bill_id}:{at}", "N")])
    elif conn.execute(select(bills.c.bill_id).where(bills.c.bill_id == new_bill_id)).first() is not None:
        raise Refused(f"bill id {new_bill_id} is already taken")
    reversing = {"bill_id": reversing_id, "customer_no": customer_no, "period": original.period,
                 "principal": -int(original.principal), "penalty": -int(original.penalty),
                 "due_date": original.due_date, "kind": "R", "reverses_bill_id": bill_id,
                 "replaces_bill_id": None, "import_id": None, "category": original.category, "created_at": at}
    new = {"bill_id": new_bill_id, "customer_no": customer_no, "period": original.period,
           "principal": principal, "penalty": penalty, "due_date": due_date or original.due_date,
           "kind": "N", "reverses_bill_id": None, "replaces_bill_id": bill_id, "import_id": None,
           "category": original.category, "created_at": at}
    conn.execute(insert(bills), [reversing, new])
    money = apply_batch(conn, [BillCorrection(bill_id, reversing, new, max(paid, 0), actor)],
                        clock, at)[0].fields
    new_paid = new_bill_id in money["paid_bills"]
    rows = bill_notice_rows(conn, [new], {new_bill_id} if new_paid else set(), at)
    if rows:
        conn.execute(insert(outbox), rows)
    balance = money["prepaid_balance"]
    write_audit(conn, [audit_row(
        at, actor, "bill.correct", "bill", bill_id, reason, customer_no=customer_no,
        reversing_bill_id=reversing_id, new_bill_id=new_bill_id,
        old={"principal": int(original.principal), "penalty": int(original.penalty),
             "due_date": original.due_date.isoformat()},
        new={"principal": principal, "penalty": penalty, "due_date": new["due_date"].isoformat()},
        moved_to_prepaid=paid if paid > 0 else 0, prepaid_paid=money["paid_bills"])])
    return CorrectionResult(bill_id, reversing_id, new_bill_id, paid if paid > 0 else 0, new_paid, balance)
