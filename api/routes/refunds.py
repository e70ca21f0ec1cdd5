"""Refunds of prepaid balances: ask for one (``refund.request``), the two approvals of a large one
(``refund.approve.accounting`` or ``refund.approve.director``: the caller's permission chooses the
level), read them (``customer.read``), and record a paid refund's payout (``refund.payout``).
ledger/refunds.py decides; every changing POST takes an ``Idempotency-Key``."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from api.deps import ApiContext, context, require
from api.idempotency import Idempotent, idempotent
from api.json_types import UtcDateTime
from api.pagination import CURSOR, LIMIT, Page, page_of, page_request
from api.problems import Problem, problem_responses
from ledger.errors import Refused
from ledger.identity import Principal
from ledger.identity.approvals import PERMISSION
from ledger.refunds import (
    APPROVE, REJECT, STATUSES, Refund, decide_refund_in, load_refund, record_payout_in, refund_page, request_refund_in,
)

router = APIRouter(tags=["refunds"], responses=problem_responses(400, 401, 403, 404, 409, 422))

MAX_FEN = 10**12 - 1   # twelve digits, as every amount on the wire
TEXT = r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$"
REFUND_ID = Path(ge=1, le=2**62)
APPROVER = require(tuple(PERMISSION.values()))


class RefundRequest(BaseModel):
    customer_no: str = Field(min_length=1, max_length=20, pattern=r"^[^\x00-\x1f\x7f/]+$")
    amount_fen: int = Field(gt=0, le=MAX_FEN, strict=True, description="integer fen")
    reason: str = Field(min_length=1, max_length=200, pattern=TEXT)


class ApprovalRequest(BaseModel):
    decision: Literal["approve", "reject"]
    comment: str = Field("", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$",
                         description="kept with the decision; a rejection needs one")


class PayoutRequest(BaseModel):
    reference: str = Field(min_length=1, max_length=64, pattern=TEXT, description="the transfer's reference")


class DecisionOut(BaseModel):
    level: str = Field(description="accounting, director (or single: a decision from before two levels)")
    decision: str
    decided_by: str
    decided_at: UtcDateTime
    note: str


class RefundOut(BaseModel):
    refund_id: int
    customer_no: str
    amount_fen: int
    reason: str
    requested_by: str
    requested_at: UtcDateTime
    needs_approval: bool
    status: str = Field(description="paid, pending (waits for approval) or rejected")
    decisions: list[DecisionOut] = []
    paid_out_at: UtcDateTime | None = None
    paid_out_by: str | None = None
    payout_reference: str | None = None

    @classmethod
    def of(cls, refund: Refund) -> "RefundOut":
        return cls(refund_id=refund.refund_id, customer_no=refund.customer_no, amount_fen=refund.amount,
                   reason=refund.reason, requested_by=refund.requested_by, requested_at=refund.requested_at,
                   needs_approval=refund.needs_approval, status=refund.status,
                   decisions=[DecisionOut(**vars(d)) for d in refund.decisions], paid_out_at=refund.paid_out_at,
                   paid_out_by=refund.paid_out_by, payout_reference=refund.payout_reference)


def _answer(refund: Refund, status: int = 200) -> tuple[int, dict]:
    return status, RefundOut.of(refund).model_dump(mode="json")


def _existing(conn, refund_id: int) -> Refund:
    try:
        return load_refund(conn, refund_id)
    except Refused:
        raise Problem("not-found", f"no refund {refund_id}") from None


@router.post("/v1/refunds", status_code=201, response_model=RefundOut)
def post_refund(body: RefundRequest, principal: Principal = Depends(require("refund.request")),
                once: Idempotent = Depends(idempotent), ctx: ApiContext = Depends(context)):
    """Ask for a refund of a customer's prepaid balance (refused when the balance, less pending
    refunds, does not cover it)."""

    def change(conn, now):
        return _answer(request_refund_in(conn, body.customer_no, body.amount_fen, actor=principal.actor,
                                         reason=body.reason, business=ctx.settings.business, now=now), 201)

    return once.run(change)


@router.post("/v1/refunds/{refund_id}/approvals", response_model=RefundOut)
def post_approval(body: ApprovalRequest, refund_id: int = REFUND_ID, principal: Principal = Depends(APPROVER),
                  once: Idempotent = Depends(idempotent), ctx: ApiContext = Depends(context)):
    """Approve or reject a pending large refund at the caller's level (accounting centre or
    department director). Both levels, by two people, neither the requester; the second approval
    pays it; a rejection at either level ends it."""
    if body.decision == "reject" and not body.comment.strip():
        raise Problem("invalid-request", "a rejection gives its reason in comment")

    def change(conn, now):
        _existing(conn, refund_id)
        decision = APPROVE if body.decision == "approve" else REJECT
        return _answer(decide_refund_in(conn, refund_id, decision, body.comment or "approved",
                                        business=ctx.settings.business, now=now, approver=principal))

    try:
        return once.run(change)
    except IntegrityError:   # the same level decided by someone else at the same moment
        raise Refused(f"refund {refund_id} was decided by someone else at the same time") from None


@router.post("/v1/refunds/{refund_id}/payout", response_model=RefundOut)
def post_payout(body: PayoutRequest, refund_id: int = REFUND_ID,
                principal: Principal = Depends(require("refund.payout")),
                once: Idempotent = Depends(idempotent), ctx: ApiContext = Depends(context)):
    """Record that a paid refund was paid out to the customer (when, by whom, the transfer's
    reference): the amount leaves refunds payable for the collection account (a journal entry,
    once: a refund paid out already, by an operator or by the finance statement, is refused)."""

    def change(conn, now):
        _existing(conn, refund_id)
        return _answer(record_payout_in(conn, refund_id, actor=principal.actor, reference=body.reference, now=now,
                                        business=ctx.settings.business))

    return once.run(change)


@router.get("/v1/refunds", response_model=Page[RefundOut])
def list_refunds(status: Literal[STATUSES] | None = Query(None, description="pending, paid or rejected; all if absent"),
                 cursor: str | None = CURSOR, limit: int | None = LIMIT,
                 principal: Principal = Depends(require("customer.read")), ctx: ApiContext = Depends(context)):
    """Refunds, oldest first, each with its decisions."""
    page = page_request(ctx.settings.api, cursor, limit, (int,))
    with ctx.engine.connect() as conn:
        return page_of(RefundOut, page, lambda after, n: refund_page(conn, status, after, n), lambda r: (r.refund_id,),
                       RefundOut.of)


@router.get("/v1/refunds/{refund_id}", response_model=RefundOut)
def get_refund(refund_id: int = REFUND_ID, principal: Principal = Depends(require("customer.read")),
               ctx: ApiContext = Depends(context)):
    """One refund with its decisions (level, approve or reject, who, when) and its payout."""
    with ctx.engine.connect() as conn:
        return RefundOut.of(_existing(conn, refund_id))
