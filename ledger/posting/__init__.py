"""The one place where money changes: every posting kind, applied by one batch on every path.

``apply_batch`` (in the caller's transaction) and ``ledger.synchronous_posting.post`` (its own, with
the group committer's retry rules) take any mix of the kinds in ``kinds``. Module map:

- ``kinds``: the public posting dataclasses and ``Outcome``;
- ``model``: a batch's in-memory bills, customers, payments and outcomes being built;
- ``queries``: its queries, the one open-bills query, the back office's reads;
- ``prefetch``: the batch's state and its prefetch;
- ``rules``: allocation (the two prepaid rules side by side) and reversal;
- ``bank_kinds``, ``office_kinds``, ``money_out_kinds``: deciding each kind;
- ``writes``: flush, and the one journal writer;
- ``batch``: ``apply_batch``, ``post_one``, ``apply_prepaid``.
"""
from ledger.posting.batch import apply_batch, apply_prepaid, post_one
from ledger.posting.kinds import (
    DEBIT_ACTOR, DEBIT_METHOD, METHODS, PAYMENT_CODE, BankFilePayment, BillCorrection, CounterPayment,
    DebitResult, Outcome, PaymentReversal, Posting, PrepaidApplication, PrepaidRefund, RedReversal, RefundPayout,
    Remittance, RemittanceReversal, system_error,
)
from ledger.posting.money_out_kinds import payout_entries, remitted_of
from ledger.posting.queries import lock_customers, open_bills_query, prepaid_balance, prepaid_balances

__all__ = [
    "apply_batch", "apply_prepaid", "post_one", "DEBIT_ACTOR", "DEBIT_METHOD", "METHODS", "PAYMENT_CODE",
    "BankFilePayment", "BillCorrection", "CounterPayment", "DebitResult", "Outcome", "PaymentReversal", "Posting",
    "PrepaidApplication", "PrepaidRefund", "RedReversal", "RefundPayout", "Remittance", "RemittanceReversal",
    "system_error", "payout_entries", "remitted_of", "lock_customers", "open_bills_query",
    "prepaid_balance", "prepaid_balances",
]
