"""The public posting kinds: every way money changes in the ledger, and the Outcome each gets.

From the banks (through the gateway) and the debit engine:
- ``CounterPayment``, ``PaymentReversal``: a counter payment (0200) and its reversal (0400/0420);
- ``DebitResult``: what became of a direct debit (approved posts its payment, reversed undoes it).
From the back office (reconciliation, refunds, corrections, imports):
- ``BankFilePayment`` (补账): a payment the bank's file shows and the ledger lacks;
- ``RedReversal``: an operator's reversal of a payment, allowed on a closed day;
- ``PrepaidRefund``: a refund paid out of the prepaid balance (into refunds payable);
- ``BillCorrection``: the money of a bill's correction (its bills' entries, what was paid on it
  moved to prepaid, then the prepaid balance applied to the customer's bills);
- ``PrepaidApplication``: prepaid balances paying new bills (whole bills only), after an import.
Money that leaves the ledger (reconciliation, refunds):
- ``Remittance``, ``RemittanceReversal``: a bank's remittance (a finance statement's credit) moving
  out of the bank's clearing account into the collection account, and its red reversal;
- ``RefundPayout``: a refund paid out of refunds payable from the collection account.

``ledger.posting.apply_batch`` decides and writes any mix of them in the caller's transaction.
Money in fen, datetimes aware (UTC).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Mapping, Union

PAYMENT_CODE = "500000"
METHODS = ("01", "02", "03")
DEBIT_METHOD = "10"
DEBIT_ACTOR = "system:debit-engine"


@dataclass(frozen=True)
class CounterPayment:
    """A 0200/500000 from a bank's counter. Money in fen, datetimes aware (UTC)."""
    bank_code: str
    transmitted: str            # field 7 MMDDhhmmss
    stan: str                   # field 11
    rrn: str                    # field 37
    customer_no: str
    amount: int
    method: str                 # PM 01 / 02 / 03
    cheque_no: str | None
    terminal_id: str
    branch_id: str
    digest: str                 # of the fields that define the request (the gateway computes it)
    received_at: datetime
    mti: str = "0200"


@dataclass(frozen=True)
class PaymentReversal:
    """A 0400/0420 (0401/0421 normalised by the caller) cancelling a counter payment."""
    bank_code: str
    transmitted: str
    stan: str
    orig_bank_code: str         # field 90's original field 32 (compared as a number)
    orig_transmitted: str
    orig_stan: str
    amount: int
    customer_no: str | None
    digest: str
    received_at: datetime
    mti: str = "0420"
    rrn: str = ""               # field 37; "" when not from a bank message (not checked)


@dataclass(frozen=True)
class DebitResult:
    """What became of a direct debit (the debit engine reports it)."""
    debit_id: int
    result: str                 # approved | declined | unknown | reversed
    at: datetime
    response_code: str | None = None   # the bank's field 39
    approval_code: str | None = None   # field 38 on approval
    detail: str = ""
    actor: str = DEBIT_ACTOR


@dataclass(frozen=True)
class BankFilePayment:
    """补账: a counter payment the bank's file shows and the ledger lacks, posted with source 'R'
    on the file's business date. ``transmitted`` is the file's YYYYMMDDhhmmss. Its outcome's
    fields name ``payment_id`` and ``receipt_no``."""
    bank_code: str
    business_date: date
    transmitted: str
    stan: str
    rrn: str
    customer_no: str
    amount: int
    actor: str
    reason: str = ""
    method: str = "01"
    cheque_no: str | None = None
    terminal_id: str | None = None


@dataclass(frozen=True)
class RedReversal:
    """An operator's reversal (source 'R') of a payment, allowed although its business date is
    closed; dated today. Its outcome's fields name ``reversal_id``."""
    payment_id: int
    actor: str
    reason: str


@dataclass(frozen=True)
class PrepaidRefund:
    """A refund paid from the customer's prepaid balance (Dr prepaid / Cr refunds payable). The
    caller has checked the balance under the customer's lock."""
    refund_id: int
    customer_no: str
    amount: int
    actor: str
    reason: str


@dataclass(frozen=True)
class BillCorrection:
    """The money of a bill correction whose reversing and replacement bills the caller has just
    inserted (rows as ``bills`` takes them): their journal entries, what had been ``paid`` on the
    original moved to prepaid, then the prepaid balance applied to the customer's bills. The
    outcome's fields: ``paid_bills`` (bill ids paid from prepaid) and ``prepaid_balance``."""
    original_bill_id: str
    reversing: Mapping
    replacement: Mapping
    paid: int
    actor: str


@dataclass(frozen=True)
class PrepaidApplication:
    """The named customers' prepaid balances pay their unpaid bills, whole bills only, oldest
    first (after an import). The caller holds the customers' locks. The outcome's field ``paid``
    lists (customer_no, bill_id, amount) of each bill paid."""
    customer_nos: tuple[str, ...]
    actor: str
    business_date: date


@dataclass(frozen=True)
class Remittance:
    """A finance statement's credit (reconciliation item ``item_id``) that is the bank's remittance:
    Dr collection / Cr bank_clearing:<bank>, on the credit's booking date. One per item: refused
    while the item's money is posted already (to any bank)."""
    item_id: int
    bank_code: str
    amount: int
    business_date: date
    actor: str
    reason: str = ""


@dataclass(frozen=True)
class RemittanceReversal:
    """The red reversal of an item's ``Remittance`` (the match that made it undone), dated today;
    refused unless exactly ``amount`` of the item is posted to that bank."""
    item_id: int
    bank_code: str
    amount: int
    actor: str
    reason: str = ""


@dataclass(frozen=True)
class RefundPayout:
    """A paid refund leaves the utility: Dr refunds_payable / Cr collection. Once per refund (refused
    when it has a payout entry already); the caller has marked the refund paid out under its lock."""
    refund_id: int
    customer_no: str
    amount: int
    business_date: date
    actor: str
    reference: str


Posting = Union[CounterPayment, PaymentReversal, DebitResult, BankFilePayment, RedReversal, PrepaidRefund,
                BillCorrection, PrepaidApplication, Remittance, RemittanceReversal, RefundPayout]


@dataclass(frozen=True)
class Outcome:
    response_code: str
    fields: dict = field(default_factory=dict)   # receipt_no, prepaid_balance, business_date, ...
    detail: str = ""                             # plain words, becomes field 48 ER
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.response_code == "00"


def system_error(detail: str = "database unavailable: nothing was applied") -> Outcome:
    return Outcome("96", {}, detail[:200])
