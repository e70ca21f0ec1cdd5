"""The collection rate (回收率) of a billing period: collected / billed, by district and by channel.

Billed and collected are counted as the receivables report counts them (``ledger.period_figures``):
the period's bills in force, and the allocations to them net of reversals and of corrections' moves.

The channel of a collected fen is where the money came in:

- ``counter``: a counter payment (payments.channel C);
- ``debit_batch``, ``debit_call_centre``, ``debit_voice``, ...: a direct debit (channel D), by who
  asked for it - a plan's batch, or the channel of a single real-time debit (debits.channel);
- ``prepaid``: the customer's prepaid balance applied to the bill (money that came in earlier, by
  any channel, as an overpayment or moved off a corrected bill);
- ``correction``: what a corrected bill had been paid, moved to prepaid by the correction (negative:
  it leaves the corrected bill; what pays the replacement shows under ``prepaid``).

Summed over channels the collected money is the period's collected money, so each channel's share
of the billed money adds up to the period's rate.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func

from config.clock import Clock
from ledger.period_figures import ALLOCATIONS_WITH_PAYMENTS, billed_in_force, collected_on
from ledger.schema import allocations, customers, debits, payments

NO_DISTRICT = "-"   # customers without a district


@dataclass(frozen=True)
class CollectionFigures:
    period: str
    billed: dict[str, int]        # district -> fen in force
    collected: dict[str, int]     # district -> fen
    by_channel: dict[str, int]    # channel -> fen

    @property
    def total_billed(self) -> int:
        return sum(self.billed.values())

    @property
    def total_collected(self) -> int:
        return sum(self.collected.values())

    def district_rates(self) -> dict[str, float]:
        """collected / billed of each district that has money billed."""
        return {d: self.collected.get(d, 0) / fen for d, fen in self.billed.items() if fen > 0}

    def channel_rates(self) -> dict[str, float]:
        """Each channel's collected money over the period's billed money (empty: nothing billed)."""
        total = self.total_billed
        return {c: fen / total for c, fen in self.by_channel.items()} if total > 0 else {}


def billing_period(clock: Clock, months_back: int = 0) -> str:
    """The billing period (YYYYMM) of the clock's business date, ``months_back`` months earlier."""
    today = clock.business_date()
    month = today.year * 12 + today.month - 1 - months_back
    return f"{month // 12:04d}{month % 12 + 1:02d}"


def channel_of(payment_channel: str | None, debit_channel: str | None) -> str:
    if payment_channel == "C":
        return "counter"
    return f"debit_{debit_channel or 'batch'}"


def collection_figures(conn, period: str) -> CollectionFigures:
    """Two set-based reads: the period's bills by district, and its allocations by district and
    by the payment's (and its debit's) channel, with the part that corrections moved."""
    district = customers.c.district
    billed: dict[str, int] = {}
    for name, _bills, principal, penalty in conn.execute(billed_in_force(period, district)):
        billed[name or NO_DISTRICT] = int(principal) + int(penalty)
    moved = case((allocations.c.correction_bill_id.is_not(None), allocations.c.amount), else_=0)
    query = collected_on(period, district, payments.c.channel, debits.c.channel, source=ALLOCATIONS_WITH_PAYMENTS,
                         also=(func.coalesce(func.sum(moved), 0),))
    collected: dict[str, int] = {}
    by_channel: dict[str, int] = {}
    for name, payment_channel, debit_channel, total, by_correction in conn.execute(query):
        name = name or NO_DISTRICT
        collected[name] = collected.get(name, 0) + int(total)
        if payment_channel is None:
            parts = {"prepaid": int(total) - int(by_correction)}
            if by_correction:
                parts["correction"] = int(by_correction)
        else:
            parts = {channel_of(payment_channel, debit_channel): int(total)}
        for channel, fen in parts.items():
            by_channel[channel] = by_channel.get(channel, 0) + fen
    return CollectionFigures(period, billed, collected, by_channel)
