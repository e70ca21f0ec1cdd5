"""The JSON shapes of a customer look-up. Amounts are integer fen (``*_fen``), never floats; times
are ISO 8601 in UTC; dates are business dates."""
from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

from api.json_types import UtcDateTime
from api.pagination import Page


def masked_mobile(mobile: str | None) -> str | None:
    """138****0000: enough to recognise a number, not to call it."""
    if not mobile:
        return mobile
    return mobile[:3] + "*" * max(0, len(mobile) - 7) + mobile[-4:] if len(mobile) > 7 else "*" * len(mobile)


class CustomerSummary(BaseModel):
    customer_no: str
    name: str
    customer_type: str = Field(description="R resident, N non-resident")
    status: str = Field(description="A active, S suspended, C closed")
    mobile: str | None = Field(description="masked in lists (138****0000)")
    district: str | None

    @classmethod
    def of(cls, row: dict) -> "CustomerSummary":
        return cls(customer_no=row["customer_no"], name=row["customer_name"], customer_type=row["customer_type"],
                   status=row["status"], mobile=masked_mobile(row["mobile"]), district=row["district"])


class BillCorrection(BaseModel):
    bill_id: str
    created_at: UtcDateTime


class BillOut(BaseModel):
    bill_id: str
    period: str
    category: str = Field(description="E electricity, V irregular use, F penalty for illegal use")
    kind: str = Field(description="O original, R reversing (red), N replacement")
    principal_fen: int
    penalty_fen: int
    allocated_fen: int = Field(description="paid on it so far (allocations, reversals netted)")
    due_date: date
    reverses_bill_id: str | None
    replaces_bill_id: str | None
    reversed_by: BillCorrection | None = Field(description="the red bill that reversed it, if any")
    replaced_by: str | None = Field(description="the bill that replaced it, if any")
    created_at: UtcDateTime

    @classmethod
    def of(cls, row: dict) -> "BillOut":
        return cls(bill_id=row["bill_id"], period=row["period"], category=row["category"], kind=row["kind"],
                   principal_fen=row["principal"], penalty_fen=row["penalty"], allocated_fen=row["allocated"],
                   due_date=row["due_date"], reverses_bill_id=row["reverses_bill_id"],
                   replaces_bill_id=row["replaces_bill_id"],
                   reversed_by=BillCorrection(**row["reversed_by"]) if row["reversed_by"] else None,
                   replaced_by=row["replaced_by"], created_at=row["created_at"])


class ReversalOut(BaseModel):
    reversal_id: int
    amount_fen: int
    business_date: date
    source: str = Field(description="B bank, R reconciliation, D debit outcome")
    reason: str
    created_at: UtcDateTime


class PaymentOut(BaseModel):
    payment_id: int
    channel: str = Field(description="C counter, D direct debit")
    bank_code: str
    amount_fen: int
    method: str
    business_date: date
    receipt_no: str
    rrn: str
    source: str = Field(description="B bank message, R reconciliation")
    created_at: UtcDateTime
    reversal: ReversalOut | None

    @classmethod
    def of(cls, row: dict) -> "PaymentOut":
        rev = row["reversal"]
        return cls(payment_id=row["payment_id"], channel=row["channel"], bank_code=row["bank_code"],
                   amount_fen=row["amount"], method=row["method"], business_date=row["business_date"],
                   receipt_no=row["receipt_no"], rrn=row["rrn"], source=row["source"], created_at=row["created_at"],
                   reversal=None if rev is None else ReversalOut(
                       reversal_id=rev["reversal_id"], amount_fen=rev["amount"], business_date=rev["business_date"],
                       source=rev["source"], reason=rev["reason"], created_at=rev["created_at"]))


class MovementOut(BaseModel):
    id: int
    amount_fen: int = Field(description="+ into the balance, - out of it")
    kind: str
    payment_id: int | None
    bill_id: str | None
    refund_id: int | None
    created_at: UtcDateTime

    @classmethod
    def of(cls, row: dict) -> "MovementOut":
        return cls(id=row["id"], amount_fen=row["amount"], kind=row["kind"], payment_id=row["payment_id"],
                   bill_id=row["bill_id"], refund_id=row["refund_id"], created_at=row["created_at"])


class AgreementOut(BaseModel):
    id: int
    bank_code: str
    account_no: str
    account_name: str
    status: str = Field(description="A active, C cancelled")
    debit_limit_fen: int = Field(description="0: no limit")
    updated_at: UtcDateTime

    @classmethod
    def of(cls, row: dict) -> "AgreementOut":
        return cls(id=row["id"], bank_code=row["bank_code"], account_no=row["account_no"],
                   account_name=row["account_name"], status=row["status"], debit_limit_fen=row["debit_limit"],
                   updated_at=row["updated_at"])


class AttemptOut(BaseModel):
    event: str
    mti: str | None
    response_code: str | None
    detail: str
    actor: str
    at: UtcDateTime


class DebitOut(BaseModel):
    debit_id: int
    batch_id: int | None
    bank_code: str
    account_no: str
    amount_fen: int
    channel: str = Field(description="who asked: batch, or a single debit's channel (call_centre, voice, "
                         "online_banking, district_office, counter)")
    state: str
    response_code: str | None
    business_date: date | None
    created_at: UtcDateTime
    updated_at: UtcDateTime
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, row: dict) -> "DebitOut":
        return cls(debit_id=row["debit_id"], batch_id=row["batch_id"], bank_code=row["bank_code"],
                   account_no=row["account_no"], amount_fen=row["amount"], channel=row["channel"],
                   state=row["state"],
                   response_code=row["response_code"], business_date=row["business_date"],
                   created_at=row["created_at"], updated_at=row["updated_at"],
                   attempts=[AttemptOut(**{k: a[k] for k in AttemptOut.model_fields}) for a in row["attempts"]])


class NoticeOut(BaseModel):
    id: int
    kind: str
    mobile: str = Field(description="masked (138****0000)")
    text: str
    ref: str
    state: str = Field(description="pending, sending, sent or dead")
    attempts: int
    created_at: UtcDateTime
    sent_at: UtcDateTime | None

    @classmethod
    def of(cls, row: dict) -> "NoticeOut":
        return cls(id=row["id"], kind=row["kind"], mobile=masked_mobile(row["mobile"]) or "", text=row["text"],
                   ref=row["ref"], state=row["state"], attempts=row["attempts"], created_at=row["created_at"],
                   sent_at=row["sent_at"])


class CustomerDetail(BaseModel):
    customer_no: str
    name: str
    customer_type: str = Field(description="R resident, N non-resident")
    status: str = Field(description="A active, S suspended, C closed")
    prepay_allowed: bool
    mobile: str | None = Field(description="in full: a look-up by number is how an operator confirms it")
    district: str | None
    collection_type: str | None = Field(description="C cash, B bank withholds, D debited; null: not given")
    updated_at: UtcDateTime
    prepaid_balance_fen: int
    agreements: list[AgreementOut]
    bills: Page[BillOut]
    payments: Page[PaymentOut]
    prepaid_movements: Page[MovementOut]
    debits: Page[DebitOut]
    notices: Page[NoticeOut]
