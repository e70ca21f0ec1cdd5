"""Reconciliation by hand: runs and open items (``recon.read``), an item's ranked candidates, a
match of many items (and payments, bank runs) to one, its undoing, and an item's resolution
(``recon.match``). The rules are ledger/recon/manual.py's and resolutions.py's."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from api.deps import ApiContext, context, require
from api.idempotency import Idempotent, idempotent
from api.json_types import json_row
from api.pagination import CURSOR, LIMIT, Page, page_of, page_request
from api.problems import Problem, problem_responses
from api.routes.refunds import TEXT
from ledger.errors import Refused
from ledger.identity import Principal
from ledger.recon.lists import ITEM_STATUSES, item_page, run_page
from ledger.recon.manual import match_items_in, show_item, unmatch_in
from ledger.recon.resolutions import ACTIONS, resolve_item_in

router = APIRouter(tags=["reconciliation"], responses=problem_responses(400, 401, 403, 404, 409, 422))
READ, MATCH = require("recon.read"), require("recon.match")
ITEM_ID, MATCH_ID = Path(ge=1, le=2**62), Path(ge=1, le=2**62)   # one per name: FastAPI names a Path by its use
IDS = Field(default_factory=list, max_length=1000)


class MatchRequest(BaseModel):
    item_ids: list[int] = Field(min_length=1, max_length=1000, description="the items (file and ledger side)")
    payment_ids: list[int] = IDS
    run_ids: list[int] = Field(default_factory=list, max_length=1000, description="bank runs (a remittance)")
    note: str = Field("", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")
    tolerance_fen: int = Field(0, ge=0, le=10_000, strict=True)


class UndoRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=200, pattern=TEXT)


class ResolutionRequest(BaseModel):
    action: Literal[ACTIONS]
    reason: str = Field(min_length=1, max_length=200, pattern=TEXT)
    method: str = Field("01", pattern=r"^[0-9]{2}$", description="payment method of a posted line")
    cheque_no: str | None = Field(None, max_length=20, pattern=r"^[A-Za-z0-9]+$")


@router.get("/v1/recon/runs", response_model=Page[dict[str, Any]])
def list_runs(cursor: str | None = CURSOR, limit: int | None = LIMIT, principal: Principal = Depends(READ),
              ctx: ApiContext = Depends(context)):
    """Reconciliation runs (bank day files, finance statements), newest first."""
    page = page_request(ctx.settings.api, cursor, limit, (int,))
    with ctx.engine.connect() as conn:
        return page_of(dict[str, Any], page, lambda after, n: run_page(conn, after, n), lambda r: (r["run_id"],), json_row)


@router.get("/v1/recon/items", response_model=Page[dict[str, Any]])
def list_items(status: Literal[ITEM_STATUSES] | None = Query("open"),
               bank: str | None = Query(None, pattern=r"^[0-9A-Za-z]{1,11}$"),
               cursor: str | None = CURSOR, limit: int | None = LIMIT, principal: Principal = Depends(READ),
               ctx: ApiContext = Depends(context)):
    """Reconciliation items (by default the open ones), of one bank or all, by item id."""
    page = page_request(ctx.settings.api, cursor, limit, (int,))
    with ctx.engine.connect() as conn:
        return page_of(dict[str, Any], page, lambda after, n: item_page(conn, status=status, bank=bank, after=after, limit=n),
                       lambda r: (r["item_id"],), json_row)


@router.get("/v1/recon/items/{item_id}/candidates", response_model=dict[str, Any])
def item_candidates(item_id: int = ITEM_ID, principal: Principal = Depends(READ), ctx: ApiContext = Depends(context)):
    """The item, its match if any, and what it could be matched with, best first (score and why)."""
    try:
        shown = show_item(ctx.engine, item_id)
    except Refused:
        raise Problem("not-found", f"no reconciliation item {item_id}") from None
    return {"item": json_row(shown["item"]), "match": shown["match"] and json_row(shown["match"]),
            "candidates": [json_row(c) for c in shown["candidates"]]}


@router.post("/v1/recon/matches", status_code=201, response_model=dict[str, Any])
def post_match(body: MatchRequest, principal: Principal = Depends(MATCH), once: Idempotent = Depends(idempotent),
               ctx: ApiContext = Depends(context)):
    """Match items (and payments, bank runs) many to one: the file side must equal the ledger side
    within ``tolerance_fen``; every item becomes matched."""

    def change(conn, now):
        match_id = match_items_in(conn, body.item_ids, actor=principal.actor, note=body.note,
                                  payment_ids=body.payment_ids, run_ids=body.run_ids, tolerance=body.tolerance_fen,
                                  now=now)
        return 201, {"match_id": match_id, "item_ids": body.item_ids, "payment_ids": body.payment_ids,
                     "run_ids": body.run_ids}

    return once.run(change)


@router.post("/v1/recon/matches/{match_id}/undo", response_model=dict[str, Any])
def undo_match(body: UndoRequest, match_id: int = MATCH_ID, principal: Principal = Depends(MATCH),
               once: Idempotent = Depends(idempotent), ctx: ApiContext = Depends(context)):
    """Undo a manual match, with the reason: its items are open again."""

    def change(conn, now):
        items = unmatch_in(conn, match_id, actor=principal.actor, reason=body.reason, now=now)
        return 200, {"match_id": match_id, "reopened_item_ids": items}

    return once.run(change)


@router.post("/v1/recon/items/{item_id}/resolution", response_model=dict[str, Any])
def resolve(body: ResolutionRequest, item_id: int = ITEM_ID, principal: Principal = Depends(MATCH),
            once: Idempotent = Depends(idempotent), ctx: ApiContext = Depends(context)):
    """Resolve an open item: post (a bank-only counter line), reverse, settle (a debit's unknown
    outcome) or accept (the difference as it is), with the reason."""

    def change(conn, now):
        return 200, resolve_item_in(conn, item_id, body.action, actor=principal.actor, reason=body.reason,
                                    method=body.method, cheque_no=body.cheque_no, now=now, clock=ctx.clock)

    return once.run(change)
