"""The ledger operations reconciliation's resolutions need, as posting kinds of ``ledger.posting``.

- ``settle_debit``: a debit left unknown gets the outcome the bank's file shows, as a
  ``DebitResult``: S → approved (the payment for its bills is posted), R → reversed (nothing
  posted), absent → declined (bills stay unpaid).
- ``post_bank_payment`` (补账): a ``BankFilePayment``, source 'R' on the file's business date.
- ``reverse_payment``: a ``RedReversal`` (source 'R'), allowed although the payment's day is closed.

The rows are the ledger's own (same locks, allocation rules, journal entries, SMS notices and
audit rows as a bank's posting); only the source ('R'), the business date and the actor (the
operator) differ. Every function works in the caller's transaction and raises ``Refused``
(nothing written) when the ledger's rules say no.
"""
from __future__ import annotations

from datetime import date, datetime

from config.clock import SYSTEM_CLOCK, Clock
from ledger.errors import Refused
from ledger.posting import BankFilePayment, DebitResult, Outcome, RedReversal, apply_batch


def _posted(conn, posting, clock: Clock | None, now: datetime) -> Outcome:
    outcome = apply_batch(conn, [posting], clock, now)[0]
    if not outcome.ok:
        raise Refused(outcome.detail)
    return outcome


def post_bank_payment(conn, *, bank_code: str, business_date: date, transmitted: str, stan: str, rrn: str,
                      customer_no: str, amount: int, actor: str, now: datetime, reason: str = "",
                      method: str = "01", cheque_no: str | None = None, terminal_id: str | None = None,
                      clock: Clock = SYSTEM_CLOCK) -> tuple[int, str]:
    """补账: post a counter payment the bank's file shows and the ledger lacks (``BankFilePayment``).
    ``transmitted`` is the file's YYYYMMDDhhmmss. Returns (payment_id, receipt_no)."""
    outcome = _posted(conn, BankFilePayment(bank_code, business_date, transmitted, stan, rrn, customer_no, amount,
                                            actor, reason, method, cheque_no, terminal_id), clock, now)
    return outcome.fields["payment_id"], outcome.fields["receipt_no"]


def reverse_payment(conn, payment_id: int, *, actor: str, now: datetime, reason: str,
                    clock: Clock = SYSTEM_CLOCK) -> int:
    """Red reversal (source 'R') of a payment, allowed although its business date is closed (this is
    reconciliation). The reversal's business date is today's. Returns the reversal id."""
    return _posted(conn, RedReversal(payment_id, actor, reason), clock, now).fields["reversal_id"]


SETTLE_RESULT = {"S": "approved", "R": "reversed", None: "declined"}


def settle_debit(conn, debit_id: int, bank_status: str | None, *, actor: str, now: datetime, reason: str = "",
                 clock: Clock = SYSTEM_CLOCK) -> dict:
    """Give an unknown debit the outcome the bank's file shows (S, R, or None when absent)."""
    result = SETTLE_RESULT[bank_status]
    detail = reason or {"approved": "reconciliation: the bank's file shows it succeeded",
                        "reversed": "reconciliation: the bank's file shows it reversed",
                        "declined": "reconciliation: not in the bank's file"}[result]
    outcome = apply_batch(conn, [DebitResult(debit_id, result, now, "00" if result == "approved" else None,
                                             detail=detail[:200], actor=actor)],
                          clock, now)[0]
    if not outcome.ok:
        raise Refused(f"the ledger refused the debit result {result}: {outcome.response_code} {outcome.detail}")
    return {"result": result, **outcome.fields}
