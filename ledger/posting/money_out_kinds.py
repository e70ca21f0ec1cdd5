"""Deciding the kinds of money that leaves the ledger: a bank's remittance clearing its clearing
account into the collection account, its red reversal, and a refund's payout.

Each movement has one identity, TigerBeetle style, and is refused when the journal already
holds it: a remittance is the statement credit's reconciliation item (``ref_type`` ``recon_item``:
what the item has moved out of a clearing account, net of its reversals, is 0 or its amount), a
payout is the refund (``ref_type`` ``refund``, kind ``refund_payout``: at most one). The caller
holds the row that stands for the movement (the item, the refund) locked.
"""
from __future__ import annotations

from sqlalchemy import func, select

from ledger.journal import COLLECTION, REFUNDS_PAYABLE, bank_clearing
from ledger.posting.kinds import RefundPayout, Remittance, RemittanceReversal
from ledger.posting.model import Result
from ledger.posting.office_kinds import OfficeKinds, refused
from ledger.schema import journal_entries, journal_lines

ITEM = "recon_item"
CLEARING = "bank_clearing:"


def remitted_of(conn, item_id: int) -> dict[str, int]:
    """bank code -> fen the item's entries have moved out of that bank's clearing account (net, non-zero)."""
    je, jl = journal_entries.c, journal_lines.c
    rows = conn.execute(select(jl.account, func.sum(jl.amount))
                        .select_from(journal_lines.join(journal_entries, je.entry_id == jl.entry_id))
                        .where(je.ref_type == ITEM, je.ref_id == str(item_id), jl.account.like(f"{CLEARING}%"))
                        .group_by(jl.account)).all()
    return {account[len(CLEARING):]: -int(total) for account, total in rows if int(total)}


def payout_entries(conn, refund_id: int) -> int:
    je = journal_entries.c
    return conn.execute(select(func.count()).where(je.kind == "refund_payout", je.ref_type == "refund",
                                                   je.ref_id == str(refund_id))).scalar_one()


class MoneyOutKinds(OfficeKinds):
    def remittance(self, r: Remittance) -> tuple[Result, bool]:
        if r.amount <= 0:
            return refused("a remittance is greater than 0")
        if posted := remitted_of(self.conn, r.item_id):
            return refused(f"item {r.item_id} is posted already: {posted}")
        self.entry("remittance", ITEM, r.item_id, r.business_date, r.actor,
                   [(COLLECTION, r.amount, None), (bank_clearing(r.bank_code), -r.amount, None)])
        self.audit(r.actor, "remittance.post", ITEM, r.item_id, bank=r.bank_code, amount=r.amount, reason=r.reason)
        return Result("00", {}), False

    def remittance_reversal(self, r: RemittanceReversal) -> tuple[Result, bool]:
        posted = remitted_of(self.conn, r.item_id).get(r.bank_code, 0)
        if posted != r.amount:
            return refused(f"item {r.item_id} has {posted} fen posted to bank {r.bank_code}, not {r.amount}")
        self.entry("remittance_reversal", ITEM, r.item_id, self.clock.business_date(self.now), r.actor,
                   [(COLLECTION, -r.amount, None), (bank_clearing(r.bank_code), r.amount, None)])
        self.audit(r.actor, "remittance.reverse", ITEM, r.item_id, bank=r.bank_code, amount=r.amount,
                   reason=r.reason)
        return Result("00", {}), False

    def refund_payout(self, p: RefundPayout) -> tuple[Result, bool]:
        if payout_entries(self.conn, p.refund_id):
            return refused(f"refund {p.refund_id} was paid out already")
        self.entry("refund_payout", "refund", p.refund_id, p.business_date, p.actor,
                   [(REFUNDS_PAYABLE, p.amount, p.customer_no), (COLLECTION, -p.amount, None)])
        self.audit(p.actor, "refund.payout", "refund", p.refund_id, customer_no=p.customer_no, amount=p.amount,
                   reason=p.reference)
        return Result("00", {}), False
