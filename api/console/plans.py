"""Debit plans and batches (``debit.read`` to see; ``plan.manage`` to add a plan, pause, resume or
run one now): the API's own functions do each change (api/routes/plans.py: ``post_plan``,
``plan_action``), as the signed-in operator, audited by engines/plans.py, in the API's idempotency
store: each form carries its own key, so a second press of a button answers the first press's
change instead of making another. The batches list shows each batch's progress
(engines/batch_progress.py) and a sum per bank, and refreshes itself as the glance does."""
from __future__ import annotations

import json
import uuid
from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import Response

from api.console.menu import ITEMS
from api.console.render import bank_names, render
from api.console.viewer import Viewer, checked_form, context_of, page
from api.idempotency import Idempotent, IdempotentRequest, body_digest
from api.routes.plans import PLAN_NAME, PlanRequest, plan_action, post_plan
from engines.batch_progress import batch_page
from engines.plans import list_plans
from ledger.errors import Refused

router = APIRouter()
READ = page(*ITEMS["plans"].permissions)
MANAGE = page("plan.manage")
BATCHES_SHOWN = 50
REFRESH_S = 10


def by_bank(batches: list[dict]) -> list[dict]:
    """The listed batches' debits summed per bank: how many, how many with an outcome."""
    banks: dict[str, dict] = {}
    for b in batches:
        total = banks.setdefault(b["bank_code"], {"bank_code": b["bank_code"], "batches": 0, "debits": 0, "done": 0})
        total["batches"] += 1
        total["debits"] += b["debit_count"]
        total["done"] += b["debits_done"]
    return [banks[k] for k in sorted(banks)]


def recent_batches(ctx) -> list[dict]:
    with ctx.engine.connect() as conn:
        return batch_page(conn, None, BATCHES_SHOWN)


def plans_page(request: Request, viewer: Viewer, status: int = 200, **values) -> Response:
    ctx = context_of(request)
    batches = recent_batches(ctx)
    return render(request, "plans.html", viewer, status, plans=list_plans(ctx.engine), batches=batches,
                  banks=by_bank(batches), names=bank_names(ctx), bank_codes=sorted(ctx.settings.banks), may_manage=viewer.principal.may("plan.manage"),
                  form_key=uuid.uuid4().hex, refresh_s=REFRESH_S, **values)


@router.get("/plans")
def plans(request: Request, viewer: Viewer = Depends(READ)) -> Response:
    return plans_page(request, viewer)


@router.get("/batches/fragment")
def batches_fragment(request: Request, viewer: Viewer = Depends(READ)) -> Response:
    ctx = context_of(request)
    batches = recent_batches(ctx)
    return render(request, "batches_figures.html", viewer, batches=batches, banks=by_bank(batches),
                  names=bank_names(ctx))


def _once(request: Request, viewer: Viewer, form: FormData, body: bytes) -> Idempotent:
    key = str(form.get("idempotency_key", "")) or uuid.uuid4().hex
    return Idempotent(context_of(request), IdempotentRequest(viewer.principal.actor, key[:200], "POST",
                                                             request.url.path, body_digest(body)))


def _changed(request: Request, viewer: Viewer, change, **kept) -> Response:
    """Run the API's change; the page again with its answer (or why it was refused, 422, the form as sent)."""
    try:
        answer = json.loads(change().body)
    except Refused as exc:
        return plans_page(request, viewer, 422, refused=str(exc), **kept)
    return plans_page(request, viewer, done=answer)


@router.post("/plans")
async def add_plan(request: Request, viewer: Viewer = Depends(MANAGE), form: FormData = Depends(checked_form)) -> Response:
    ctx = context_of(request)
    fields = {k: str(form.get(k, "")).strip() for k in ("name", "bank_code", "cron", "due_days", "district", "chunk_size")}
    try:
        body = PlanRequest(name=fields["name"], bank_code=fields["bank_code"], cron=fields["cron"],
                           due_days=int(fields["due_days"] or 0), district=fields["district"] or None,
                           chunk_size=int(fields["chunk_size"] or 1000), paused=form.get("paused") == "1")
    except (ValidationError, ValueError) as exc:
        why = "; ".join(e["msg"] for e in exc.errors()) if isinstance(exc, ValidationError) else str(exc)
        return await run_in_threadpool(plans_page, request, viewer, 422, refused=why, asked=fields)
    once = _once(request, viewer, form, body.model_dump_json().encode())
    return await run_in_threadpool(_changed, request, viewer, lambda: post_plan(body, viewer.principal, once, ctx),
                                   asked=fields)


@router.post("/plans/{name}/{action}")
async def change_plan(request: Request, action: Literal["pause", "resume", "run"], name: str = PLAN_NAME,
                      viewer: Viewer = Depends(MANAGE), form: FormData = Depends(checked_form)) -> Response:
    ctx = context_of(request)
    once = _once(request, viewer, form, b"")
    return await run_in_threadpool(_changed, request, viewer,
                                   lambda: plan_action(action, name, viewer.principal, once, ctx))
