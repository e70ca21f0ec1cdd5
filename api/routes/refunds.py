"""Refunds of prepaid balances: ``POST /v1/refunds`` (permission ``refund.request``, an
``Idempotency-Key``). Below the approval threshold it is paid at once; from it on it waits for the
two approvals docs/access.md describes (``gridpay ledger approve``). ledger/refunds.py decides."""
from __future__ import annotations


from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from api.deps import ApiContext, context, require
from api.idempotency import Idempotent, idempotent
from api.json_types import UtcDateTime
from api.problems import problem_responses
from ledger.identity import Principal
from ledger.refunds import Refund, request_refund_in

router = APIRouter(tags=["refunds"], responses=problem_responses(400, 401, 403, 409, 422))

MAX_FEN = 10**12 - 1   # twelve digits, as every amount on the wire


class RefundRequest(BaseModel):
    customer_no: str = Field(min_length=1, max_length=20, pattern=r"^[^\x00-\x1f\x7f/]+$")
    amount_fen: int = Field(gt=0, le=MAX_FEN, strict=True, description="integer fen")
    reason: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$")


class RefundOut(BaseModel):
    refund_id: int
    customer_no: str
    amount_fen: int
    reason: str
    requested_by: str
    requested_at: UtcDateTime
    needs_approval: bool
    status: str = Field(description="paid, pending (waits for approval) or rejected")

    @classmethod
    def of(cls, refund: Refund) -> "RefundOut":
        return cls(refund_id=refund.refund_id, customer_no=refund.customer_no, amount_fen=refund.amount,
                   reason=refund.reason, requested_by=refund.requested_by, requested_at=refund.requested_at,
                   needs_approval=refund.needs_approval, status=refund.status)


@router.post("/v1/refunds", status_code=201, response_model=RefundOut)
def post_refund(body: RefundRequest, principal: Principal = Depends(require("refund.request")),
                once: Idempotent = Depends(idempotent), ctx: ApiContext = Depends(context)):
    """Ask for a refund of a customer's prepaid balance (refused when the balance, less pending
    refunds, does not cover it)."""

    def change(conn, now):
        refund = request_refund_in(conn, body.customer_no, body.amount_fen, actor=principal.actor,
                                   reason=body.reason, business=ctx.settings.business, now=now)
        return 201, RefundOut.of(refund).model_dump(mode="json")

    return once.run(change)
