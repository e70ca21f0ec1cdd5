"""Direct-debit plans and the batches they make (``plan.manage``; batches ``batch.manage``): list
and add plans, pause, resume, run now (a batch at once), and each batch's progress (debits with an
outcome of all, chunks done, by state, the skipped customers). engines/plans.py and
engines/batch_progress.py decide and count."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Literal
from zoneinfo import ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from api.deps import ApiContext, context, require
from api.idempotency import Idempotent, idempotent
from api.json_types import json_row
from api.pagination import CURSOR, LIMIT, Page, page_of, page_request
from api.problems import Problem, problem_responses
from engines.batch_progress import batch_page, batch_progress
from engines.plans import PlanError, add_plan_in, get_plan, list_plans, run_now_in, set_status_in
from ledger.errors import Refused
from ledger.identity import Principal

router = APIRouter(tags=["debit plans and batches"], responses=problem_responses(400, 401, 403, 404, 409, 422))
DEBIT_READ, PLANS = require("debit.read"), require("plan.manage")
PLAN_NAME = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
STATUS_OF = {"pause": "P", "resume": "A"}


class PlanRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9._-]*$")
    bank_code: str = Field(pattern=r"^[0-9A-Za-z]{1,11}$")
    cron: str = Field(min_length=9, max_length=100, pattern=r"^[0-9A-Za-z*/,\- ]+$", description="in time_zone")
    due_days: int = Field(0, ge=0, le=366, strict=True)
    district: str | None = Field(None, pattern=r"^[A-Za-z0-9]{1,20}$")
    customers: list[str] | None = Field(None, max_length=10_000, description="only these customers")
    chunk_size: int = Field(1000, ge=1, le=100_000, strict=True)
    time_zone: str | None = Field(None, max_length=40, pattern=r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$",
                                  description="of the cron schedule; business.timezone if absent")
    paused: bool = False


def _plan(row: dict) -> dict:
    return json_row(row)


@contextmanager
def _refusals():
    """What engines/plans.py refuses (bad cron, unknown time zone, no such plan), and a name
    taken or a bank unknown, as the ledger's refusals: 422, nothing changed."""
    try:
        yield
    except (PlanError, ZoneInfoNotFoundError, ValueError) as exc:   # ValueError: ZoneInfo's malformed keys
        raise Refused(str(exc).strip("'\"")) from None
    except IntegrityError:
        raise Refused("a plan with this name exists already, or the bank is not known") from None


@router.get("/v1/plans", response_model=list[dict[str, Any]])
def plans(principal: Principal = Depends(DEBIT_READ), ctx: ApiContext = Depends(context)):
    """Every debit plan: bank, schedule, whom it debits, active (A) or paused (P), its last run."""
    return [_plan(p) for p in list_plans(ctx.engine)]


@router.post("/v1/plans", status_code=201, response_model=dict[str, Any])
def post_plan(body: PlanRequest, principal: Principal = Depends(PLANS), once: Idempotent = Depends(idempotent),
              ctx: ApiContext = Depends(context)):
    """Add a debit plan."""

    def change(conn, now):
        plan_id = add_plan_in(conn, name=body.name, bank_code=body.bank_code, cron=body.cron, now=now,
                              actor=principal.actor, due_days=body.due_days, district=body.district,
                              customers_only=body.customers, chunk_size=body.chunk_size,
                              time_zone=body.time_zone or ctx.settings.business.timezone,
                              paused=body.paused)
        return 201, _plan(get_plan(conn, plan_id))

    with _refusals():
        return once.run(change)


@router.post("/v1/plans/{name}/{action}", response_model=dict[str, Any])
def plan_action(action: Literal["pause", "resume", "run"], name: str = PLAN_NAME,
                principal: Principal = Depends(PLANS), once: Idempotent = Depends(idempotent),
                ctx: ApiContext = Depends(context)):
    """Pause or resume a plan (resuming starts from now: runs that fell in the pause are not made),
    or run it now: a batch at once, the schedule unchanged (the answer names the batch)."""

    def change(conn, now):
        if action == "run":
            made = run_now_in(conn, ctx.settings, name, now=now, actor=principal.actor, clock=ctx.clock)
            return 201, {"plan": name, "batch_id": made.batch_id, "bank_code": made.bank_code, "mode": made.mode,
                         "debits": made.debits, "total_fen": made.total, "chunks": made.chunks,
                         "skipped": len(made.skipped)}
        return 200, _plan(set_status_in(conn, name, STATUS_OF[action], now=now, actor=principal.actor))

    with _refusals():
        return once.run(change)


@router.get("/v1/batches", response_model=Page[dict[str, Any]])
def batches(cursor: str | None = CURSOR, limit: int | None = LIMIT, principal: Principal = Depends(DEBIT_READ),
            ctx: ApiContext = Depends(context)):
    """Debit batches, newest first, each with its bank and progress."""
    page = page_request(ctx.settings.api, cursor, limit, (int,))
    with ctx.engine.connect() as conn:
        return page_of(dict[str, Any], page, lambda after, n: batch_page(conn, after, n), lambda r: (r["batch"],), json_row)


@router.get("/v1/batches/{batch_id}", response_model=dict[str, Any])
def batch(batch_id: int = Path(ge=1, le=2**62), principal: Principal = Depends(DEBIT_READ),
          ctx: ApiContext = Depends(context)):
    """One batch: its bank, mode and state; debits by state (count and fen), how many have an
    outcome; chunks by state; the customers left out and why."""
    with ctx.engine.connect() as conn:
        found = batch_progress(conn, batch_id)
    if found is None:
        raise Problem("not-found", f"no batch {batch_id}")
    return json_row(found)
