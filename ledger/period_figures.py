"""A billing period's billed and collected money, grouped by whatever the caller names: the one
pair of queries behind the receivables report (by customer type, ``ledger.finance_reports``) and the
collection rate (by district and channel, ``ledger.collection_rate``), so that both count alike.

- billed: the period's bills in force. A correction adds a reversing bill (kind R, negative
  amounts) and a replacement: summed, the corrected bill counts once, at its corrected amount.
- collected: the allocations to the period's bills. A reversal adds the negative twin of each
  allocation it undoes, and a correction the negative allocation that moves what the bill had been
  paid to prepaid: summed, what is left is what pays the bills now.
"""
from __future__ import annotations

from sqlalchemy import ColumnElement, FromClause, Select, case, func, select

from ledger.schema import allocations, bills, customers, debits, payments

BILLS_OF_CUSTOMERS = bills.join(customers, customers.c.customer_no == bills.c.customer_no)
ALLOCATIONS_TO_BILLS = allocations.join(BILLS_OF_CUSTOMERS, bills.c.bill_id == allocations.c.bill_id)
# and, for the channel, the payment an allocation is part of (none: prepaid applied or a correction's
# move) and that payment's debit (none: paid at a counter)
ALLOCATIONS_WITH_PAYMENTS = (ALLOCATIONS_TO_BILLS
                             .outerjoin(payments, payments.c.payment_id == allocations.c.payment_id)
                             .outerjoin(debits, debits.c.debit_id == payments.c.debit_id))


def check_period(period: str) -> str:
    if not (len(period) == 6 and period.isdigit() and 1 <= int(period[4:]) <= 12):
        raise ValueError(f"period {period!r} is not YYYYMM")
    return period


def billed_in_force(period: str, *keys: ColumnElement) -> Select:
    """Rows of ``keys``, bills in force (a reversing bill cancels one), principal, penalty."""
    return (select(*keys,
                   func.sum(case((bills.c.kind == "R", -1), else_=1)),
                   func.coalesce(func.sum(bills.c.principal), 0), func.coalesce(func.sum(bills.c.penalty), 0))
            .select_from(BILLS_OF_CUSTOMERS).where(bills.c.period == check_period(period)).group_by(*keys))


def collected_on(period: str, *keys: ColumnElement, source: FromClause = ALLOCATIONS_TO_BILLS,
                 also: tuple[ColumnElement, ...] = ()) -> Select:
    """Rows of ``keys``, the net of the allocations to the period's bills, then the ``also``
    aggregates; ``source`` is ``ALLOCATIONS_TO_BILLS`` or a join onto it."""
    return (select(*keys, func.coalesce(func.sum(allocations.c.amount), 0), *also)
            .select_from(source).where(bills.c.period == check_period(period)).group_by(*keys))
