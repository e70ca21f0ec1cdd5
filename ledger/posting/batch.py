"""A posting batch: deciding any mix of posting kinds in order, then writing them all at once.

``apply_batch(conn, postings, clock, now)`` decides and writes a whole batch in the caller's
transaction: a few IN-queries up front (``prefetch``), the decisions in Python against the
batch's in-memory state (postings for one customer see each other in order), and one
``executemany`` per table at the end (``writes.flush``). ``Poster`` (ledger.group_commit) runs it
in the posting worker's process, one transaction per batch; ``post`` runs it synchronously.
"""
from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterable, Sequence

from config.clock import SYSTEM_CLOCK, Clock
from ledger.posting.kinds import (
    BankFilePayment, BillCorrection, CounterPayment, DebitResult, Outcome, PaymentReversal, Posting,
    PrepaidApplication, PrepaidRefund, RedReversal, RefundPayout, Remittance, RemittanceReversal,
)
from ledger.posting.money_out_kinds import MoneyOutKinds
from ledger.posting.writes import flush


class Batch(MoneyOutKinds):
    """Every kind's decision (``bank_kinds``, ``office_kinds``, ``money_out_kinds``) on one batch state (``prefetch``)."""

    def flush(self, writes=None) -> None:
        flush(self, writes)


_DECIDE = {CounterPayment: Batch.counter_payment, PaymentReversal: Batch.payment_reversal,
           DebitResult: Batch.debit_result, BankFilePayment: Batch.bank_file_payment,
           RedReversal: Batch.red_reversal, PrepaidRefund: Batch.prepaid_refund,
           BillCorrection: Batch.bill_correction, PrepaidApplication: Batch.prepaid_application,
           Remittance: Batch.remittance, RemittanceReversal: Batch.remittance_reversal,
           RefundPayout: Batch.refund_payout}


def apply_batch(conn, postings: Sequence[Posting], clock: Clock, now: datetime, writes=None) -> list[Outcome]:
    """Decide and write postings in conn's transaction (the caller commits). Outcomes in order.
    ``writes`` (``runtime.bulk_sql.Writes``): the rows are added to it, for the caller to send with
    its own (``writes.flush()``) - the billing feed's counter is then locked by that one round trip
    and the COMMIT, not across the caller's statements in between."""
    batch = Batch(conn, clock, now)
    batch.prefetch(postings)
    decided = []
    for p in postings:
        decide = _DECIDE.get(type(p))
        if decide is None:
            raise TypeError(f"not a posting: {p!r}")
        decided.append(decide(batch, p))
    batch.flush(writes)
    return [Outcome(res.code, dict(res.final_fields()), res.detail, replayed) for res, replayed in decided]


def post_one(conn, posting: Posting, clock: Clock = SYSTEM_CLOCK, now: datetime | None = None) -> Outcome:
    """One posting in conn's transaction (the back office's kinds)."""
    return apply_batch(conn, [posting], clock, now or clock.now())[0]


def apply_prepaid(conn, customer_nos: Iterable[str], *, at: datetime, business_date, actor: str
                  ) -> list[tuple[str, str, int]]:
    """Pay the named customers' unpaid bills from their prepaid balances, whole bills only
    (``PrepaidApplication``). The caller holds the customers' locks. Returns (customer_no,
    bill_id, amount) of each bill paid."""
    application = PrepaidApplication(tuple(customer_nos), actor, business_date)
    return post_one(conn, application, now=at).fields["paid"]
