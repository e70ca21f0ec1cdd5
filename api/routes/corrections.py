"""Bill corrections (冲红改单): ``POST /v1/corrections`` (permission ``correction.request``, an
``Idempotency-Key``): a red reversal of the bill and a replacement with the corrected amounts;
what had been paid on it moves to prepaid and pays by the usual rule. ledger/corrections.py decides."""
from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from api.deps import ApiContext, context, require
from api.idempotency import Idempotent, idempotent
from api.problems import problem_responses
from api.routes.refunds import MAX_FEN, TEXT
from ledger.corrections import concurrent_correction, correct_bill_in
from ledger.identity import Principal

router = APIRouter(tags=["corrections"], responses=problem_responses(400, 401, 403, 409, 422))
BILL_ID = r"^[A-Za-z0-9]{1,32}$"


class CorrectionRequest(BaseModel):
    bill_id: str = Field(pattern=BILL_ID, description="the bill to correct")
    principal_fen: int = Field(ge=1, le=MAX_FEN, strict=True, description="the corrected principal, integer fen")
    penalty_fen: int = Field(0, ge=0, le=MAX_FEN, strict=True, description="the corrected penalty, integer fen")
    reason: str = Field(min_length=1, max_length=200, pattern=TEXT)
    due_date: date | None = Field(None, description="the replacement's due date; the original's if absent")
    new_bill_id: str | None = Field(None, pattern=BILL_ID, description="the replacement's id; made up if absent")


class CorrectionOut(BaseModel):
    original_bill_id: str
    reversing_bill_id: str
    new_bill_id: str
    moved_to_prepaid_fen: int = Field(description="what had been paid on the original, now prepaid")
    new_bill_paid: bool
    prepaid_balance_fen: int


@router.post("/v1/corrections", status_code=201, response_model=CorrectionOut)
def post_correction(body: CorrectionRequest, principal: Principal = Depends(require("correction.request")),
                    once: Idempotent = Depends(idempotent), ctx: ApiContext = Depends(context)):
    """Correct a bill: reverse it (a red bill) and replace it with the corrected amounts."""

    def change(conn, now):
        done = correct_bill_in(conn, body.bill_id, principal=body.principal_fen, penalty=body.penalty_fen,
                               actor=principal.actor, reason=body.reason, due_date=body.due_date,
                               new_bill_id=body.new_bill_id, clock=ctx.clock, now=now)
        return 201, CorrectionOut(original_bill_id=done.original_bill_id, reversing_bill_id=done.reversing_bill_id,
                                  new_bill_id=done.new_bill_id, moved_to_prepaid_fen=done.moved_to_prepaid,
                                  new_bill_paid=done.new_bill_paid,
                                  prepaid_balance_fen=done.prepaid_balance).model_dump(mode="json")

    try:
        return once.run(change)
    except IntegrityError as exc:   # a concurrent correction of the same bill, or a bill id just taken
        raise concurrent_correction(body.bill_id, exc) from None
