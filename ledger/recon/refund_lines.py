"""A finance statement's debit that pays a refund out (docs/reconciliation.md, "Refund payouts").

The reference rule: the transfer to the customer carries ``RFD`` and the refund's id as its
remittance information (``RFD1024``; letters in any case, leading zeros allowed), any of the
entry's references. ``RF`` and two check digits would be an ISO 11649 creditor reference, hence
the third letter. The debit must equal the refund's amount exactly, and the refund must be paid
(approved). Then, in the statement's transaction:
- a refund not paid out yet is paid out by this debit (``ledger.refunds.pay_out_in``: the refund
  marked paid out, ``RefundPayout`` posted on the booking date); the item is matched to it;
- a refund an operator paid out already is that payout: the item is matched to it, nothing posted;
- a refund already matched to another statement debit, or named twice in one statement, is not
  paid twice: the item stays open (kind ``refund``) and says so, as for a wrong amount, a refund
  that is not paid, or no such refund.
"""
from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import and_, select

from config.clock import SYSTEM_CLOCK
from ledger.refunds import PAID, Refund, load_refund, pay_out_in
from ledger.recon_tables import recon_match_members, recon_matches
from ledger.schema import refunds

REFUND_REFERENCE = re.compile(r"^RFD0*(\d{1,12})$", re.IGNORECASE)


def refund_named(references) -> int | None:
    """The refund id a debit's references name by the rule, or None."""
    return next((int(m.group(1)) for ref in references if (m := REFUND_REFERENCE.match(ref.strip()))), None)


def _matched_item(conn, refund_id: int) -> int | None:
    """The statement item a live match ties to the refund, if any."""
    mm, m, item = recon_match_members.c, recon_matches.c, recon_match_members.alias("item")
    return conn.execute(select(item.c.item_id).select_from(
        recon_match_members.join(recon_matches, and_(m.match_id == mm.match_id, m.undone_at.is_(None)))
        .join(item, and_(item.c.match_id == mm.match_id, item.c.item_id.is_not(None))))
        .where(mm.refund_id == refund_id)).scalar()


def _why_not(conn, refund: Refund, amount: int, used: set[int]) -> str:
    if refund.amount != amount:
        return f"refund {refund.refund_id} is {refund.amount} fen, the debit {amount}"
    if refund.status != PAID:
        return f"refund {refund.refund_id} is {refund.status}: not payable"
    if refund.refund_id in used:
        return f"refund {refund.refund_id} is named by another debit of this statement: not paid twice"
    if (other := _matched_item(conn, refund.refund_id)) is not None:
        return f"refund {refund.refund_id} was paid out by statement item {other} already: not paid twice"
    return ""


def match_refund_debits(conn, entries, items) -> tuple[list, list]:
    """Match the statement's open debits that name refunds. Returns (matches as ``new_match``
    members with their note, the refunds this statement pays out with their item rows)."""
    matches, payouts, used = [], [], set()
    for e, row in zip(entries, items):
        if row["status"] != "open" or e.direction != "D" or e.reversal:
            continue
        refund_id = refund_named(e.references)
        if refund_id is None:
            continue
        row["kind"] = "refund"
        if conn.execute(select(refunds.c.id).where(refunds.c.id == refund_id).with_for_update()).first() is None:
            row["detail"] = f"no refund {refund_id}"
            continue
        refund = load_refund(conn, refund_id)
        row.update(customer_no=refund.customer_no, ledger_amount=refund.amount)
        if problem := _why_not(conn, refund, e.amount, used):
            row["detail"] = problem
            continue
        used.add(refund_id)
        row["status"] = "matched"
        if refund.paid_out_at is not None:
            row["detail"] = (f"refund {refund_id}: the payout {refund.paid_out_by} recorded "
                             f"({refund.payout_reference}) already")
        else:
            row["detail"] = f"refund {refund_id} paid out by this debit"
            payouts.append((refund, row))
        matches.append((f"refund {refund_id}", [{"item_id": row["item_id"], "side": "file", "amount": -e.amount},
                                                {"refund_id": refund_id, "side": "ledger", "amount": -refund.amount}]))
    return matches, payouts


def pay_out(conn, payouts, actor: str, now: datetime) -> None:
    """Pay out the refunds the statement's debits pay (after the items are stored)."""
    for refund, row in payouts:
        pay_out_in(conn, refund, actor=actor, reference=f"statement item {row['item_id']}", now=now,
                   business_date=row["business_date"], clock=SYSTEM_CLOCK)
