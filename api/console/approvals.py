"""Approvals: the large refunds waiting for a decision, each with what this operator may do about it
(ledger.identity.approvals decides: the level their permission gives, two different people, neither
the requester), and a form to approve or reject it with a comment (ledger/refunds.py decides it).
A refused decision is audited (``refund.decide.refused``) and shown with its reason.

Bill corrections need no approval in gridpay (ledger/corrections.py: made at once by an operator
with ``correction.request``, audited), so this page lists refunds only."""
from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from api.console.menu import ITEMS
from api.console.render import render
from api.console.viewer import Viewer, checked_form, context_of, page
from api.deps import ApiContext, source_of
from ledger.errors import Refused
from ledger.identity import Forbidden, Principal, check_approval
from ledger.identity.refusals import record_refusal
from ledger.refunds import APPROVE, PENDING, REJECT, Refund, decide_refund_in, level_for, list_refunds

router = APIRouter()
APPROVER = page(*ITEMS["approvals"].permissions)
MAX_ID = 2**62          # as the API's refund ids: a larger number is no refund (and no database error)


@dataclass(frozen=True)
class Waiting:
    refund: Refund
    level: str                 # the level this operator would decide at
    refused: str | None        # why they may not (a code of check_approval), None: they may


def waiting_for(engine, principal: Principal) -> list[Waiting]:
    out = []
    for refund in list_refunds(engine, PENDING):
        if not refund.needs_approval:
            continue
        given = refund.approvals()
        level = level_for(principal, given)
        try:
            check_approval(principal, level, refund.requested_by, given)
            refused = None
        except Forbidden as exc:
            refused = exc.code
        out.append(Waiting(refund, level, refused))
    return out


def approvals_page(request: Request, viewer: Viewer, status: int = 200, **message) -> Response:
    ctx = context_of(request)
    business = ctx.settings.business
    return render(request, "approvals.html", viewer, status, waiting=waiting_for(ctx.engine, viewer.principal),
                  resident=business.refund_approval_resident_fen, nonresident=business.refund_approval_nonresident_fen,
                  **message)


@router.get("/approvals")
def approvals(request: Request, viewer: Viewer = Depends(APPROVER)) -> Response:
    return approvals_page(request, viewer)


def decide(ctx: ApiContext, request: Request, principal: Principal, refund_id: int, decision: str,
           comment: str) -> tuple[Refund | None, dict]:
    """(the refund as decided, {}) or (None, why not: ``why_code``, a refusal of check_approval, or
    ``why_text``, the ledger's words)."""
    try:
        with ctx.engine.begin() as conn:
            return decide_refund_in(conn, refund_id, decision, comment or "approved", business=ctx.settings.business,
                                    now=ctx.now(), approver=principal), {}
    except Forbidden as exc:
        with ctx.engine.begin() as conn:
            record_refusal(conn, ctx.now(), principal.actor, "refund.decide.refused", exc.code, ctx.metrics.auth,
                           "refund", refund_id, source=source_of(request))
        return None, {"why_code": exc.code}
    except Refused as exc:
        return None, {"why_text": str(exc)}
    except IntegrityError:
        return None, {"why_text": f"refund {refund_id} was decided by someone else at the same time"}


@router.post("/approvals")
async def post_decision(request: Request, viewer: Viewer = Depends(APPROVER),
                        form: FormData = Depends(checked_form)) -> Response:
    decision = APPROVE if form.get("decision") == "approve" else REJECT
    comment = str(form.get("comment", "")).strip()[:200]
    given_id = str(form.get("refund_id", ""))
    refund_id = int(given_id) if given_id.isascii() and given_id.isdigit() and int(given_id) <= MAX_ID else 0
    if decision == REJECT and not comment:
        return await run_in_threadpool(approvals_page, request, viewer, 422, error_key="approvals.reject_needs_comment")
    refund, why = await run_in_threadpool(decide, context_of(request), request, viewer.principal, refund_id,
                                          decision, comment)
    if refund is None:
        return await run_in_threadpool(approvals_page, request, viewer, 403 if "why_code" in why else 422, **why)
    return await run_in_threadpool(approvals_page, request, viewer, decided=refund,
                                   decision="approve" if decision == APPROVE else "reject",
                                   level=refund.decisions[-1].level)
