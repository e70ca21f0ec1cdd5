"""The billing system's payment feed (docs/billing-feed.md; migration 0009).

- ``billing_feed``: one row per change that matters to billing (a payment, a reversal, a refund,
  prepaid paying a bill, a correction moving paid money to prepaid), numbered 1, 2, 3, ... with
  no gap, in commit order. Written by the posting module's write phase in the same transaction
  as the money movement (``ledger.posting.writes``). Each row carries what billing needs after
  the change: what the bill and the customer still owe, the prepaid balance, and the paid flag.
- ``billing_feed_counter``: one row, the last number given (``last_seq``). A posting batch takes it
  with ``UPDATE ... SET last_seq = last_seq + n`` as its last statement: the row lock, held to the
  commit, orders the batches' numbers as their commits. ``from_*_id``: the feed covers payments,
  reversals and prepaid movements with ids above these (the ledger's history before migration
  0009 is not in it; ``ledger verify`` checks the rest one to one).
"""
from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Date, Integer, String, Table

from ledger.schema import Id, Money, Ts, metadata

FEED_KINDS = ("payment", "debit_payment", "bank_file_payment", "reversal", "debit_reversal", "red_reversal",
              "refund", "correction", "prepaid_applied")

billing_feed = Table(
    "billing_feed", metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("at", Ts, nullable=False),                     # when the posting batch recorded it (UTC)
    Column("business_date", Date, nullable=False),        # of the money movement (a payment's, a reversal's)
    Column("kind", String(20), nullable=False),
    Column("customer_no", String(20), nullable=False),
    Column("bill_id", String(32), nullable=True),         # when the change concerns one bill
    Column("amount_fen", Money, nullable=False),          # signed: money in +, money given back or paid out -
    # what it refers to; no foreign keys: inserted by the same flush (`ledger verify` checks them)
    Column("payment_id", Id, nullable=True),
    Column("reversal_id", Id, nullable=True),
    Column("debit_id", Id, nullable=True),
    Column("refund_id", Id, nullable=True),
    Column("prepaid_movement_id", Id, nullable=True),
    Column("correction_bill_id", String(32), nullable=True),   # the reversing bill of a correction
    Column("bank_code", String(11), nullable=True),
    Column("channel", String(1), nullable=True),          # C counter, D direct debit
    # after the change
    Column("bill_owing_fen", Money, nullable=True),       # what bill_id still owes
    Column("bill_paid", String(1), nullable=True),        # Y: bill_id owes nothing any more
    Column("customer_owing_fen", Money, nullable=False),  # what the customer's bills still owe
    Column("prepaid_balance_fen", Money, nullable=False),
    Column("customer_due_fen", Money, nullable=False),    # owing - prepaid, never below 0 (an inquiry's total due)
    Column("customer_paid", String(1), nullable=False),   # Y: nothing due (the paid flag)
    CheckConstraint("kind in (" + ", ".join(f"'{k}'" for k in FEED_KINDS) + ")", name="kind"),
    CheckConstraint("customer_paid in ('Y','N')", name="customer_paid"),
    CheckConstraint("bill_paid in ('Y','N')", name="bill_paid"),
)

billing_feed_counter = Table(
    "billing_feed_counter", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("from_payment_id", BigInteger, nullable=False),
    Column("from_reversal_id", BigInteger, nullable=False),
    Column("from_movement_id", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="one_row"),
)
