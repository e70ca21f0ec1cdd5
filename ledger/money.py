"""Bounds on money the ledger keeps: what the bank contract's fields can carry.

Every amount and balance a bank is given travels in 12 digits of fen (docs/spec/INTERFACE.md §3
field 4, §5 BI and PB), so the ledger never takes an amount, or lets a prepaid balance grow, to
``AMOUNT_LIMIT`` or beyond: a payment that would is declined before anything is posted.
"""
from __future__ import annotations

AMOUNT_LIMIT = 10 ** 12   # exclusive: 999,999,999,999 fen is the largest amount there is


def fits(fen: int) -> bool:
    return 0 <= fen < AMOUNT_LIMIT
